"""A wave's model call on a second thread while the poll thread scores the same wave.

A wave's scoring needs only the forecast remembered from each key's previous step, never this step's model
outputs, so the two are independent: onnxruntime releases the GIL for the whole call, and the poll thread
runs the scorer's numpy work meanwhile (on 2 cores a wave of 500 keys costs the longer of the two, not their
sum). Nothing else changes: the same inputs go into the same calls, the outputs are written back in the same
order after both finished (bit-identical results), and an exception in the model call is raised on the
poll thread by :meth:`Pending.result`.

Small waves run inline: handing a call to another thread costs tens of microseconds, more than it saves. So do
very large ones (a poll of new keys): their outputs are MBs, and a second thread allocating them takes them from
a glibc arena of its own (``consumer.malloc``), which then holds them: measured with 1,000,000 keys (waves of
20,000 new keys, confluent), peak RSS ~2.5 MB higher with them offloaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["OFFLOAD_MAX_KEYS", "OFFLOAD_MIN_KEYS", "Offload", "Pending"]

OFFLOAD_MIN_KEYS = 64  # keys in a wave from which its model call goes to the second thread ...
OFFLOAD_MAX_KEYS = 4096  # ... and up to which (1,000 keys of the bundled model: ~0.3 MB of outputs)
T = TypeVar("T")


class Pending(Generic[T]):
    """A call started by :meth:`Offload.start`: :meth:`result` waits for it (the seconds it took, its value)."""

    def __init__(self, result: Callable[[], tuple[float, T]]) -> None:
        self.result = result


def _timed(call: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


class Offload:
    """One worker thread, started at the first call large enough to use it (a runner that never sees a
    large wave, such as one scoring a single series, never starts it)."""

    def __init__(self, min_keys: int = OFFLOAD_MIN_KEYS, max_keys: int = OFFLOAD_MAX_KEYS) -> None:
        self.min_keys = min_keys
        self.max_keys = max_keys
        self._pool: ThreadPoolExecutor | None = None

    def start(self, keys: int, call: Callable[[], T]) -> Pending[T]:
        """Run ``call`` on the worker when the wave has ``min_keys`` to ``max_keys`` keys, else here and now."""
        if not self.min_keys <= keys <= self.max_keys:
            done = _timed(call)
            return Pending(lambda: done)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnwatch-model")
        return Pending(self._pool.submit(_timed, call).result)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

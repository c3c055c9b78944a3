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

import queue
import threading
import time
from collections.abc import Callable
from functools import partial
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
    large wave, such as one scoring a single series, never starts it).

    A call goes to the worker through one queue and its outcome comes back through another: a wave hands over
    and collects a call with two C-level queue operations, where an executor's ``submit``/``result`` built a
    future, a work item and a condition per wave (a poll of 1,000 keys is hundreds of waves). Calls run one at a
    time in the order started; the runner collects a wave's call before it starts the next wave's, and an
    outcome left uncollected (its caller raised first) is dropped when the next call starts, never taken for it.
    """

    def __init__(self, min_keys: int = OFFLOAD_MIN_KEYS, max_keys: int = OFFLOAD_MAX_KEYS) -> None:
        self.min_keys = min_keys
        self.max_keys = max_keys
        self._calls: queue.SimpleQueue[Callable[[], object] | None] | None = None
        self._done: queue.SimpleQueue[tuple[bool, object]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._uncollected = False  # the last call's outcome not collected (its caller raised before collecting)

    def start(self, keys: int, call: Callable[[], T]) -> Pending[T]:
        """Run ``call`` on the worker when the wave has ``min_keys`` to ``max_keys`` keys, else here and now."""
        if not self.min_keys <= keys <= self.max_keys:
            done = _timed(call)
            return Pending(lambda: done)
        if self._calls is None:
            self._calls = queue.SimpleQueue()
            self._thread = threading.Thread(target=_serve, args=(self._calls, self._done), daemon=True,
                                            name="rnnwatch-model")
            self._thread.start()
        if self._uncollected:  # an outcome nobody collected must not be taken for this call's
            self._done.get()
        self._calls.put(partial(_timed, call))
        self._uncollected = True
        return Pending(self._collect)  # type: ignore[arg-type]

    def _collect(self) -> object:
        ok, value = self._done.get()
        self._uncollected = False
        if not ok:
            raise value  # type: ignore[misc]  # the model call's own exception, on the caller's thread
        return value

    def close(self) -> None:
        if self._calls is not None and self._thread is not None:
            self._calls.put(None)
            self._thread.join()
            self._calls = self._thread = None


def _serve(calls: queue.SimpleQueue[Callable[[], object] | None], done: queue.SimpleQueue[tuple[bool, object]]) -> None:
    """The worker: run each call, hand back (True, its value) or (False, its exception); None stops it."""
    while (call := calls.get()) is not None:
        try:
            out: tuple[bool, object] = (True, call())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            out = (False, exc)
        done.put(out)
        del call, out  # drop the wave's arrays now, not when the next call arrives

"""Large transient buffers must not pin memory: a fixed glibc mmap threshold for the `rnnwatch run` process.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` with a mapping of its own (returned to the OS when freed)
and a smaller one from the heap. The threshold is dynamic by default: freeing a mapped block raises it to that
block's size, up to 32 MiB. After the first large free, every buffer under 32 MiB comes from the heap: the
clients' fetch responses (up to ``--max-partition-fetch-bytes``), a checkpoint chunk's snapshots; what they
leave between longer-lived blocks is never given back. Measured with 1,000,000 keys (kafka-python): peak RSS
545 MiB with the dynamic threshold, 491 MiB fixed at 4 MiB. Lower costs CPU: every per-wave temporary above the
threshold is a fresh mapping, zeroed page by page (128 KiB: +40% runner CPU with 20,000-key waves; 4 MiB holds a
wave of 500,000 float64 values). The state table maps its own arrays (``consumer.pages``) whatever the
threshold. glibc also gives each thread that contends for the heap an arena of its own (up to 8 per core);
librdkafka's threads then hold freed buffers in arenas of their own: at most ``ARENAS`` of them, measured with
1,000,000 keys (confluent): peak RSS 536 -> 515 MiB. Done by the CLI, not the library: a process's allocator
belongs to the program that owns it (`rnnwatch run`, before numpy's and the clients' threads exist).

What the threshold cannot help: a burst of small blocks (a large checkpoint's snapshots, copied into the
producer's queue, freed on delivery) leaves free pages between blocks still in use, and the heap only shrinks
from its top. :func:`trim` (``malloc_trim``) hands every free page of every arena back; a large checkpoint calls it
every few chunks. Measured with 1,000,000 keys (confluent): ~45 MiB free in the arenas during the final
checkpoint, a few ms per call.

Processing leaves the same kind of holes: librdkafka's prefetch queue (tens of thousands of messages, a few hundred
bytes of bookkeeping each) fills and drains around every poll, so the heap's size follows its fullest moment
while what is in use swings by ~25 MiB from poll to poll. Those free pages stay resident while the state table
grows beside them: with 1,000,000 keys (confluent) ~35 MiB of them at the end of processing, the process's peak.
:class:`HeapTrimmer` gives them back after a batch, at most every ``TRIM_INTERVAL_S``. Measured with 1,000,000 keys
(confluent, `make bench --only memory`, three interleaved pairs): peak RSS 471.9 -> 456.3 MiB (median), rate
unchanged within the noise (292k vs 291k rec/s). What it costs: a call takes ~1 ms and the pages it gives back
are faulted in again as the heap reuses them; with 1,000 keys, 2-3 trims and ~3,000 more page faults per
200,000 records, about 1% of the CPU. Trimming after every batch did little better than every 0.25 s.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ARENAS", "MMAP_THRESHOLD_BYTES", "TRIM_INTERVAL_S", "HeapTrimmer", "fix_mmap_threshold", "trim"]

MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
ARENAS = 2
TRIM_INTERVAL_S = 0.25  # processing time between two trims of the heap (see HeapTrimmer)
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt parameter numbers (malloc.h)


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES, arenas: int = ARENAS) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` and its arenas at ``arenas``; False where glibc is not there."""
    mallopt = _glibc("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, nbytes)) and bool(mallopt(_M_ARENA_MAX, arenas))


def trim() -> bool:
    """Give the free pages of malloc's arenas back to the OS (``malloc_trim(0)``); False where glibc is not there."""
    libc_trim = _glibc("malloc_trim", (ctypes.c_size_t,))
    if libc_trim is None:
        return False
    libc_trim(0)  # returns whether anything was released: either way the call did its job
    return True


@functools.cache
def _glibc(name: str, argtypes: tuple[Any, ...]) -> Callable[..., int] | None:
    """glibc's function ``name`` (returning int) with its argument types, or None off glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = list(argtypes), ctypes.c_int
    found: Callable[..., int] = fn
    return found


@dataclass
class HeapTrimmer:
    """Trims the heap after a batch when ``interval_s`` passed since the last trim (the module docstring says why)."""

    interval_s: float = TRIM_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    trim: Callable[[], bool] = trim
    _last: float = field(default=float("-inf"), init=False)

    def after_batch(self) -> bool:
        """Trim if the interval has passed; whether it did."""
        now = self.clock()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        self.trim()
        return True

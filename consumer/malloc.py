"""Freed state-table arrays must not pin memory: a fixed glibc mmap threshold for the `rnnwatch run` process.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` with a mapping of its own (returned to the OS when freed)
and a smaller one from the heap. The threshold is dynamic by default: freeing a mapped block raises it to that
block's size, up to 32 MiB. The state table doubles its arrays as keys arrive and frees the old ones, so after
the first growth every array under 32 MiB (a million keys' bookkeeping column is 8 MB) comes from the heap, and
the holes each later growth leaves there are never given back: about 55 bytes per key at a million keys
(measured with the bundled model, ~10% of the process). Setting the threshold fixes it (and turns the dynamic
adjustment off), so every array from ``MMAP_THRESHOLD_BYTES`` up lives in its own mapping. Done by the CLI, not
the library: a process's allocator belongs to the program that owns it.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MMAP_THRESHOLD_BYTES", "fix_mmap_threshold"]

MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default starting value: small objects stay on the fast heap
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``nbytes``; False where it cannot be set (no glibc: nothing to fix)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, nbytes))

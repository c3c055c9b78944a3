"""The fixed mmap threshold: after a large array was freed, a 1 MiB array still gets a mapping of its own."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import ctypes, sys
import numpy as np
from rnnwatch.consumer.malloc import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
big = np.ones(16 << 20, dtype=np.uint8)  # a growth's old array: freeing it raises a dynamic threshold to 16 MiB
del big
before = libc.mallinfo2().hblks
col = np.ones(1 << 20, dtype=np.uint8)
print(libc.mallinfo2().hblks - before)
"""


def _mapped_blocks_added(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def test_a_freed_large_array_does_not_move_later_arrays_onto_the_heap() -> None:
    assert _mapped_blocks_added("dynamic") == 0  # glibc's default: the 1 MiB array lands in the heap
    assert _mapped_blocks_added("fixed") == 1  # fixed threshold: its own mapping, returned to the OS when freed

"""The prelude of the allocator probes (tests/unit/test_malloc.py, test_pages.py): glibc's ``mallinfo2`` via ctypes.

The probes run in a fresh interpreter (``python -c PRELUDE + probe``): the allocator's state must not be the
test runner's, which has allocated and freed for many tests before.
"""

MALLINFO2_PRELUDE = """
import ctypes

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
"""

"""The state table's arrays are mapped on their own: growing to many keys leaves nothing in malloc's heap."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rnnwatch.consumer import pages
from tests.unit.mallinfo import MALLINFO2_PRELUDE

_PROBE = MALLINFO2_PRELUDE + """
import numpy as np
import pytest
from rnnwatch.consumer.state import Column, StateTable
table = StateTable([Column.filled("m.h", (8,), np.float32, 0.0), Column.filled("s.var", (), np.float64, 1.0)],
                   identity="probe")
before = libc.mallinfo2().arena
keys = [b"k%d" % i for i in range(300_000)]
for s in range(0, len(keys), 5_000):
    table.rows_for(0, keys[s:s + 5_000])
held = sum(a.nbytes for a in table.stored.values()) + table.steps.nbytes * 6
print(libc.mallinfo2().arena - before, held)
"""


def test_growing_the_table_leaves_its_old_arrays_out_of_the_heap() -> None:
    """glibc's dynamic mmap threshold would put every array under 32 MiB in the heap, where the arrays a growth
    frees stay as holes; mapped arrays are returned when freed, so the heap grows by temporaries only."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    heap_growth, held = map(int, done.stdout.split())
    assert held > 10_000_000
    assert heap_growth < held // 4


def test_mapped_arrays_behave_as_numpy_arrays() -> None:
    small, big = pages.full((4,), 7, np.int32), pages.full((100_000, 2), -1.5, np.float32)
    assert small.base is None and big.base is not None  # only a large array gets a mapping
    assert big.flags.writeable and big.shape == (100_000, 2) and (big == -1.5).all()
    more = pages.grown(big, 150_000, 0.0)
    assert more.shape == (150_000, 2) and (more[:100_000] == -1.5).all() and (more[100_000:] == 0).all()


_UNTOUCHED_PROBE = """
import numpy as np
import pytest
from rnnwatch.consumer.state import Column, StateTable

def resident(arr):  # bytes of arr's pages present in memory (/proc/self/pagemap: bit 63 of a page's entry)
    first, size = arr.__array_interface__["data"][0] // 4096, -(-arr.nbytes // 4096)
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = np.frombuffer(f.read(size * 8), dtype="<u8")
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum()) * 4096

table = StateTable([Column.filled("m.h", (1,), np.float32, 0.0)], identity="probe")
keys = [b"k%d" % i for i in range(530_000)]
for s in range(0, len(keys), 20_000):
    table.rows_for(0, keys[s:s + 20_000])
for name in ("last_event_ms", "last_offset", "changelog_offset"):  # the 8-byte ones
    arr = getattr(table, name)
    print(name, arr.nbytes, resident(arr))
"""


def test_rows_a_growth_adds_stay_untouched_until_keys_use_them() -> None:
    """530,000 keys in a table grown to 1,048,576 rows: each bookkeeping array holds ~4.2 MB of used rows in
    an 8.4 MB mapping, and only what is used is resident (the rest was filled with -1 or 0 before)."""
    done = subprocess.run([sys.executable, "-c", _UNTOUCHED_PROBE], capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        name, nbytes, resident = line.split()
        assert int(nbytes) == 8 * 1_048_576
        assert int(resident) < 0.55 * int(nbytes), name  # 4 KiB pages: ~the 4.2 MB of used rows


def _resident_bytes(arr: np.ndarray) -> int:
    """Bytes of ``arr``'s pages present in memory (/proc/self/pagemap: bit 63 of each 4 KiB page's entry)."""
    first, size = arr.__array_interface__["data"][0] // 4096, -(-arr.nbytes // 4096)
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = np.frombuffer(f.read(size * 8), dtype="<u8")
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum()) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/pagemap is Linux's")
def test_a_mapped_array_is_resident_only_where_rows_were_written() -> None:
    """A table array is written from row 0 up as keys arrive: what is resident must follow the rows written, not
    round each array up to a 2 MiB huge page (~45 arrays per table: up to 90 MB more at some key counts)."""
    arr = pages.empty((8 * 1024 * 1024,), np.uint8)  # 8 MiB: room for four huge pages
    arr[:100_000] = 1
    assert _resident_bytes(arr) <= 100_000 + 4096

"""The state table's arrays are mapped on their own: growing to many keys leaves nothing in malloc's heap."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from rnnwatch.consumer import pages
from tests.unit.mallinfo import MALLINFO2_PRELUDE

_PROBE = MALLINFO2_PRELUDE + """
import numpy as np
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

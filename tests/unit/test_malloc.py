"""The fixed mmap threshold: after a large buffer was freed, an 8 MiB buffer still gets a mapping of its own."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.unit.mallinfo import MALLINFO2_PRELUDE

cli_main = importlib.import_module("rnnwatch.consumer.cli.main")  # the module (the package exports its main())

_PROBE = MALLINFO2_PRELUDE + """
import sys
import numpy as np
from rnnwatch.consumer.malloc import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
big = np.ones(16 << 20, dtype=np.uint8)  # a large fetch response: freeing it raises a dynamic threshold to 16 MiB
del big
before = libc.mallinfo2().hblks
col = np.ones(8 << 20, dtype=np.uint8)
print(libc.mallinfo2().hblks - before)
"""


def _mapped_blocks_added(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def test_a_freed_large_array_does_not_move_later_arrays_onto_the_heap() -> None:
    assert _mapped_blocks_added("dynamic") == 0  # glibc's default: the 8 MiB buffer lands in the heap
    assert _mapped_blocks_added("fixed") == 1  # fixed threshold: its own mapping, returned to the OS when freed


def test_threads_share_at_most_two_arenas() -> None:
    """glibc's malloc_info lists one <heap> per arena: eight threads allocating at once make at most two."""
    probe = """
import ctypes, sys, threading
from rnnwatch.consumer.malloc import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(8)
def work():
    start.wait()
    blocks = [libc.malloc(4096) for _ in range(20_000)]
    for b in blocks:
        libc.free(b)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.fdopen.restype = ctypes.c_void_p
out = libc.fdopen(1, b"w")
libc.malloc_info(0, ctypes.c_void_p(out))
libc.fflush(ctypes.c_void_p(out))
"""
    counts = {}
    for mode in ("dynamic", "fixed"):
        done = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True)
        counts[mode] = done.stdout.count("<heap nr=")
    assert counts["fixed"] <= 2 < counts["dynamic"]


def test_rnnwatch_run_tunes_the_allocator_before_anything_else(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cli_main, "fix_mmap_threshold", lambda: calls.append("tuned") or True)
    for command in ("run", "check"):
        with pytest.raises(SystemExit):
            cli_main.main([command, "--help"])
    capsys.readouterr()
    assert calls == ["tuned"]  # `run` only: the other commands keep glibc's defaults


def test_trim_gives_back_the_free_pages_between_blocks_still_in_use() -> None:
    """A burst of small blocks (a checkpoint's snapshots in librdkafka's queue) freed all but a few: the heap
    cannot shrink from its top, its free pages stay resident until ``trim`` hands them back."""
    probe = """
import ctypes
from rnnwatch.consumer.malloc import fix_mmap_threshold, trim
fix_mmap_threshold()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def anon_kib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon"))
blocks = [libc.malloc(1024) for _ in range(100_000)]
for b in blocks:
    ctypes.memset(b, 1, 1024)
for i, b in enumerate(blocks):
    if i % 64:
        libc.free(b)
before = anon_kib()
assert trim()
print(before - anon_kib())
"""
    done = subprocess.run([sys.executable, "-c", probe, "trim"], capture_output=True, text=True, check=True)
    assert int(done.stdout) > 50_000  # of ~100 MB freed, at least half goes back


def test_processing_gives_the_heap_back_a_few_batches_apart() -> None:
    """The free pages a batch leaves in the heap (librdkafka's prefetch queue drains around every poll) are
    trimmed after a batch, at most every interval: the first batch trims, the next ones wait for the interval."""
    from rnnwatch.consumer.malloc import HeapTrimmer

    now, trims = [100.0], []
    trimmer = HeapTrimmer(0.25, clock=lambda: now[0], trim=lambda: trims.append(now[0]) is None)
    for _ in range(12):  # 12 batches, 0.1 s each
        trimmer.after_batch()
        now[0] += 0.1
    assert trims == pytest.approx([100.0, 100.3, 100.6, 100.9])

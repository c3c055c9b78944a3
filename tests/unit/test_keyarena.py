"""The packed key arena against a dict: same keys per row through puts, removals, compactions and growth."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rnnwatch.consumer import keyarena
from rnnwatch.consumer.keyarena import KEY_SLOT_BYTES, KeyArena, Packed


def test_keys_per_row_agree_with_a_dict_through_removals_compactions_and_growth() -> None:
    rng = np.random.default_rng(5)
    arena, model, capacity = KeyArena(4), {}, 4
    universe = [bytes(rng.integers(0, 256, size=int(rng.integers(0, 40)), dtype=np.uint8)) for _ in range(500)]
    universe += [b"", b"\x00", b"k1", b"k1\x00"]
    buffers, peak_live = set(), 0
    for _ in range(300):
        free = [r for r in range(capacity) if r not in model]
        n = int(rng.integers(1, 30))
        if len(free) < n:
            arena.grow(2 * capacity + n)
            free += list(range(capacity, 2 * capacity + n))
            capacity = 2 * capacity + n
        rows = np.array(rng.choice(free, size=n, replace=False), dtype=np.int64)
        keys = [universe[i] for i in rng.integers(0, len(universe), size=n)]
        arena.put(rows, keys)
        model.update(zip(rows.tolist(), keys, strict=True))
        peak_live = max(peak_live, sum(len(k) for k in model.values()))
        if rng.random() < 0.5:
            gone = np.array([r for r in model if rng.random() < 0.4], dtype=np.int64)
            arena.remove(gone)
            for r in gone.tolist():
                del model[r]
        buffers.add(arena.buffer_bytes)
        every = np.arange(capacity)
        assert arena.get(every) == [model.get(r) for r in range(capacity)]
        assert all(arena[r] == model.get(r) for r in range(capacity))
        assert arena.buffer_bytes <= max(1024, 4 * peak_live)  # compaction bounds the dead bytes
    assert len(buffers) > 2  # grew (and compacted) along the way


def test_equal_compares_rows_with_a_batch_bytewise() -> None:
    arena = KeyArena(6)
    stored = [b"abc", b"abd", b"", b"ab", b"\x00\x01", b"xyz"]
    arena.put(np.arange(6), stored)
    batch = [b"abc", b"abc", b"", b"abc", b"\x00\x01", b"xyz", b"xy"]
    packed = Packed.of(batch)
    rows = np.array([0, 1, 2, 3, 4, 5, 5])
    at = np.arange(7)
    expected = [s == batch[a] for s, a in zip([stored[r] for r in rows.tolist()], at.tolist(), strict=True)]
    assert arena.equal(rows, packed, at).tolist() == expected == [True, False, True, False, True, True, False]
    assert arena.equal(rows[:0], packed, at[:0]).tolist() == []


def test_equal_agrees_with_bytes_comparison_for_uniform_few_and_many_key_lengths() -> None:
    rng = np.random.default_rng(8)
    for max_len in (1, 3, 40):  # one length (and empty keys), a few lengths, more than are compared one by one
        stored = [bytes(rng.integers(0, 3, size=int(rng.integers(0, max_len + 1)), dtype=np.uint8))
                  for _ in range(200)]
        arena = KeyArena(200)
        arena.put(np.arange(200), stored)
        batch = [stored[i] if rng.random() < 0.5 else bytes(rng.integers(0, 3, size=len(stored[i]), dtype=np.uint8))
                 for i in rng.integers(0, 200, size=300)]
        rows = rng.integers(0, 200, size=300)
        got = arena.equal(rows, Packed.of(batch), np.arange(300)).tolist()
        assert got == [stored[r] == b for r, b in zip(rows.tolist(), batch, strict=True)]
        assert any(got) and not all(got)


def test_growing_and_compacting_the_buffer_copies_keys_without_a_temporary_per_key_byte() -> None:
    """The buffer is mapped (``consumer.pages``), so what tracemalloc sees during a put is its temporaries. A copy
    through an int64 position per key byte (8x the key bytes, twice) was the peak RSS of a million keys; the
    copy goes in row slices, so a put that moves every key costs little more than one that moves none."""
    n = 400_000
    keys = [b"S%07d" % i for i in range(n)]
    arena = KeyArena(n)
    peaks: dict[bool, list[int]] = {False: [], True: []}  # by: did the put copy the buffer?
    tracemalloc.start()
    try:
        for step in ("grow", "compact"):
            if step == "compact":  # three quarters dead: the next put that needs room compacts
                arena.remove(np.flatnonzero(np.arange(n) % 4 != 0))
            for s in range(0, n, 10_000):
                rows = np.arange(s, s + 10_000)
                if step == "compact":
                    rows = rows[rows % 4 != 0]
                batch, before = [keys[i] for i in rows.tolist()], arena._buf  # was it replaced?
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                arena.put(rows, batch)
                moved = arena._buf is not before
                peaks[moved].append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    assert arena.get(np.arange(0, n, 997)) == [keys[i] for i in range(0, n, 997)]
    assert arena.buffer_bytes >= 8 * n and len(peaks[True]) > 5  # the live keys (3.2 MB) are in it; it moved
    assert max(peaks[True]) - max(peaks[False]) < arena.buffer_bytes // 8


def test_a_row_costs_eight_bytes_and_starts_widen_past_the_narrow_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key's start is a uint32 while the buffer holds under 4 GiB (8 bytes per row with the length, was 12);
    a buffer that outgrows it (here a 4 KiB limit) widens the starts to int64 and every key stays right."""
    assert KEY_SLOT_BYTES == 8
    assert KeyArena(4).start.dtype == np.uint32
    monkeypatch.setattr(keyarena, "_NARROW_BUFFER", 4096)
    arena = KeyArena(2_000)
    keys = [b"key-%06d" % i for i in range(2_000)]
    for s in range(0, 2_000, 100):
        arena.put(np.arange(s, s + 100), keys[s:s + 100])
    assert arena.start.dtype == np.int64 and arena.buffer_bytes > 4096
    assert arena.get(np.arange(2_000)) == keys
    packed = Packed.of(keys[::-1])
    assert arena.equal(np.arange(2_000), packed, np.arange(2_000)[::-1]).all()

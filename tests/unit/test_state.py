"""State table: rows per (partition, key), gather/scatter, growth, eviction, snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from rnnwatch.consumer.errors import StateError
from rnnwatch.consumer.state import Column, StateTable


def _table(capacity: int = 2) -> StateTable:
    return StateTable([Column.filled("m.h", (3,), np.float32, 0.5), Column.filled("s.var", (), np.float64, 1.0)],
                      identity="model-a", capacity=capacity)


def test_rows_are_stable_and_grow_past_capacity() -> None:
    t = _table(capacity=2)
    rows, new = t.rows_for(0, [b"a", b"b", b"c", b"a"])
    assert new.tolist() == [True, True, True, False]
    assert rows[0] == rows[3]
    assert len(set(rows.tolist())) == 3
    assert len(t) == 3
    t.arrays["m.h"][rows[:3]] = np.arange(9, dtype=np.float32).reshape(3, 3)
    again, _ = t.rows_for(0, [b"c", b"a"])
    np.testing.assert_array_equal(t.arrays["m.h"][again], [[6, 7, 8], [0, 1, 2]])


def test_same_key_in_two_partitions_is_two_rows() -> None:
    t = _table()
    r0, _ = t.rows_for(0, [b"k"])
    r1, _ = t.rows_for(1, [b"k"])
    assert r0[0] != r1[0]


def test_drop_partition_frees_rows_and_new_rows_start_fresh() -> None:
    t = _table()
    rows, _ = t.rows_for(3, [b"a", b"b"])
    t.arrays["m.h"][rows] = 9.0
    assert t.drop_partition(3) == 2
    assert len(t) == 0
    rows, new = t.rows_for(3, [b"a"])
    assert new.all()
    np.testing.assert_array_equal(t.arrays["m.h"][rows[0]], [0.5, 0.5, 0.5])


def test_only_idle_clean_durable_rows_are_evictable() -> None:
    t = _table(capacity=4)
    rows, _ = t.rows_for(0, [b"old", b"dirty", b"fresh", b"unsaved"])
    t.last_seen_s[rows] = [0.0, 0.0, 100.0, 0.0]
    t.changelog_offset[rows] = [5, 6, 7, -1]  # "unsaved" has no acknowledged snapshot yet
    t.dirty[rows[1]] = True
    idle = t.idle_rows(now_s=101.0, ttl_s=10.0)
    assert idle.tolist() == [rows[0]]
    t.release_rows(idle.tolist())
    assert t.row_of(0, b"old") is None and t.row_of(0, b"dirty") is not None and len(t) == 3


def test_snapshot_round_trip_is_bit_exact() -> None:
    t = _table()
    rows, _ = t.rows_for(2, [b"k"])
    row = int(rows[0])
    t.arrays["m.h"][row] = [1.5, -2.25, 1e-30]
    t.arrays["s.var"][row] = 3.75
    t.steps[row], t.last_offset[row], t.last_event_ms[row] = 41, 1234, 99
    snap = t.decode(t.snapshot(row))
    other = _table()
    r = other.load(2, b"k", snap)
    np.testing.assert_array_equal(other.arrays["m.h"][r], t.arrays["m.h"][row])
    assert other.arrays["s.var"][r] == 3.75
    assert (other.steps[r], other.last_offset[r], other.last_event_ms[r]) == (41, 1234, 99)


def test_snapshot_of_another_model_has_no_values() -> None:
    t = _table()
    rows, _ = t.rows_for(0, [b"k"])
    foreign = StateTable([Column.filled("m.h", (3,), np.float32, 0.0), Column.filled("s.var", (), np.float64, 1.0)],
                         identity="model-b")
    snap = foreign.decode(t.snapshot(int(rows[0])))
    assert snap.values == {}


@pytest.mark.parametrize("blob", [b"", b"RNW1", b"XXXX\x00\x00" + b"\x00" * 24, b"RNW1\x07\x00model-a" + b"\x00" * 5])
def test_corrupt_snapshots_raise_state_error(blob: bytes) -> None:
    with pytest.raises(StateError):
        _table().decode(blob)


def test_reset_keeps_ordering_bookkeeping() -> None:
    t = _table()
    rows, _ = t.rows_for(0, [b"k"])
    t.arrays["m.h"][rows] = 7.0
    t.steps[rows], t.last_event_ms[rows], t.last_offset[rows] = 10, 500, 77
    t.reset(rows)
    assert t.steps[rows[0]] == 0 and t.last_event_ms[rows[0]] == 500 and t.last_offset[rows[0]] == 77
    np.testing.assert_array_equal(t.arrays["m.h"][rows[0]], [0.5, 0.5, 0.5])


def _reference_snapshot(t: StateTable, row: int) -> bytes:
    """The documented layout, one row at a time with struct: what every changelog on disk holds."""
    import struct

    ident = t.identity.encode()
    parts = [struct.pack("<4sH", b"RNW1", len(ident)), ident,
             struct.pack("<qqq", int(t.last_offset[row]), int(t.last_event_ms[row]), int(t.steps[row]))]
    parts.extend(t.stored[c.name][row].tobytes() for c in t.columns)
    return b"".join(parts)


def test_batched_snapshots_are_byte_identical_to_the_per_row_layout() -> None:
    t = StateTable([Column.filled("m.h", (2, 3), np.float32, 0.5), Column.filled("s.n", (), np.int64, 0),
                    Column.filled("s.flag", (), np.bool_, 0), Column.filled("s.var", (1,), np.float64, 1.0)],
                   identity="model-a", capacity=2)
    rows, _ = t.rows_for(1, [b"a", b"b", b"c", b"d", b"e"])  # grows past the capacity
    rng = np.random.default_rng(3)
    t.arrays["m.h"][rows] = rng.normal(size=(5, 2, 3))
    t.arrays["s.n"][rows] = [-1, 0, 2**30, 7, 3]
    t.arrays["s.flag"][rows] = [True, False, True, False, True]
    t.arrays["s.var"][rows] = rng.normal(size=(5, 1))
    t.steps[rows], t.last_offset[rows] = [1, 2, 3, 4, 5], [10, -1, 2**50, 0, 9]
    t.last_event_ms[rows] = [-(2**62), 0, 1_700_000_000_000, 5, 6]
    picked = rows[[4, 0, 2, 2]]
    blobs = t.snapshots(picked)
    assert blobs == [_reference_snapshot(t, int(r)) for r in picked.tolist()]
    assert all(len(b) == t.snapshot_bytes for b in blobs)
    assert t.snapshot(int(rows[1])) == _reference_snapshot(t, int(rows[1]))
    assert t.snapshots(np.array([], dtype=np.int64)) == []


def test_bytes_per_key_adds_up_to_the_arrays_the_table_holds() -> None:
    t = StateTable([Column.filled("m.h", (3,), np.float32, 0.5), Column.filled("s.var", (), np.float64, 1.0),
                    Column.filled("s.n", (), np.int64, 0, counter=True)], identity="model-a", capacity=8)
    parts = t.bytes_per_key()
    assert parts["model_state"] == 12 and parts["scorer_state"] == 8 and parts["keys"] == 8
    arrays = [*t.stored.values(), t.steps, t.last_event_ms, t.last_offset, t.last_seen_s.stored, t.changelog_offset,
              t.dirty, t.partition]
    assert parts["model_state"] + parts["scorer_state"] + parts["bookkeeping"] == sum(a.nbytes for a in arrays) // 8


def test_wide_dtypes_are_stored_at_half_width_and_read_back_widened() -> None:
    t = StateTable([Column.filled("s.var", (2,), np.float64, 1.0),
                    Column.filled("s.n", (), np.int64, 0, counter=True), Column.filled("s.at", (), np.int64, -1)],
                   identity="model-a", capacity=2)
    assert [t.stored[c].dtype for c in ("s.var", "s.n", "s.at")] == [np.float32, np.int32, np.int64]
    rows, _ = t.rows_for(0, [b"a", b"b", b"c"])  # grows: the views follow the new arrays
    t.arrays["s.var"][rows] = [[0.1, 2.0], [1e-30, -3.5], [np.nan, np.inf]]
    t.arrays["s.n"][rows] = [1, 2**31 - 1, -7]
    t.arrays["s.at"][rows] = [2**40, 0, -1]
    var, n, at = t.arrays["s.var"][rows], t.arrays["s.n"][rows], t.arrays["s.at"][rows]
    assert (var.dtype, n.dtype, at.dtype) == (np.float64, np.int64, np.int64)
    np.testing.assert_array_equal(var, np.array([[0.1, 2.0], [1e-30, -3.5], [np.nan, np.inf]], np.float32))
    assert n.tolist() == [1, 2**31 - 1, -7] and at.tolist() == [2**40, 0, -1]
    t.reset(rows[:1])
    assert t.arrays["s.var"][rows[0]].tolist() == [1.0, 1.0] and t.arrays["s.n"][rows[0]] == 0


def test_an_int64_column_keeps_every_bit_unless_it_is_declared_a_counter() -> None:
    """A position in time (an epoch-ms origin, an offset) must not wrap at 2^31 because nobody marked it wide."""
    t = StateTable([Column.filled("s.origin", (), np.int64, 0), Column.filled("s.n", (), np.int64, 0, counter=True)],
                   identity="model-a", capacity=2)
    rows, _ = t.rows_for(0, [b"a"])
    t.arrays["s.origin"][rows] = [1_700_000_000_000]
    assert t.arrays["s.origin"][rows].tolist() == [1_700_000_000_000]
    assert (t.stored["s.origin"].dtype, t.stored["s.n"].dtype) == (np.int64, np.int32)


def test_the_scorer_state_of_the_bundled_model_is_stored_at_half_width() -> None:
    """Every scorer value but the wide ones (incident positions) costs at most 4 bytes per key (`reversal`'s recent
    standardized residuals 2: float16)."""
    from rnnwatch.consumer.contract import load_signature
    from rnnwatch.consumer.runner import make_runner
    from rnnwatch.consumer.settings import bundled_model_path

    table = make_runner(load_signature(bundled_model_path())).table
    scorer = [c for c in table.columns if c.name.startswith("s.")]
    full = {c.name for c in scorer if c.stored.itemsize == 8}
    bound = sum(int(np.prod(c.shape)) * (8 if c.name in full else min(4, c.stored.itemsize)) for c in scorer)
    assert full <= {"s.incident.open", "s.incident.peak"}  # tail moments are clipped, incident.last is a step
    assert {c.name for c in scorer if c.stored.itemsize == 2} == {"s.reversal.u", "s.reversal.u2", "s.incident.high"}
    assert table.bytes_per_key()["scorer_state"] == bound
    assert bound < sum(int(np.prod(c.shape)) * c.dtype.itemsize for c in scorer) * 0.7


# A snapshot written by rnnwatch before storage was narrowed (commit 22cb895, every column at its declared
# dtype), for _OLD_COLUMNS below with identity "model-a": key b"k" on partition 2, input offset 1234, last event
# 99 ms, 41 steps, m.h = [1.5, -2.25, 1e-30], s.var = [0.1, 3.75], s.n = 2**30 + 3, s.at = 2**40 + 1.
_OLD_SNAPSHOT = bytes.fromhex(
    "524e573110006d6f64656c2d612f3838316439396635d204000000000000630000000000000029000000000000000000"
    "c03f000010c06042a20d9a9999999999b93f0000000000000e4003000040000000000100000000010000"
)


def _old_columns() -> list[Column]:
    return [Column.filled("m.h", (3,), np.float32, 0.5), Column.filled("s.var", (2,), np.float64, 1.0),
            Column.filled("s.n", (), np.int64, 0, counter=True), Column.filled("s.at", (), np.int64, -1)]


def test_a_snapshot_written_before_narrowing_is_restored_rounded() -> None:
    t = StateTable(_old_columns(), identity="model-a")
    snap = t.decode(_OLD_SNAPSHOT)
    assert snap.values, "an old snapshot of the same model must not count as another model's"
    assert (snap.input_offset, snap.last_event_ms, snap.steps) == (1234, 99, 41)
    row = t.load(2, b"k", snap)
    np.testing.assert_array_equal(t.arrays["m.h"][row], np.array([1.5, -2.25, 1e-30], np.float32))
    assert t.arrays["s.var"][row].tolist() == np.array([0.1, 3.75], np.float32).astype(np.float64).tolist()
    assert t.arrays["s.n"][row] == 2**30 + 3 and t.arrays["s.at"][row] == 2**40 + 1
    again = t.decode(t.snapshot(row))  # written anew in the narrow layout, read back exactly
    assert again.identity == t.identity and len(t.snapshot(row)) == t.snapshot_bytes < len(_OLD_SNAPSHOT)
    for c in t.columns:
        np.testing.assert_array_equal(again.values[c.name], t.stored[c.name][row])


def test_the_table_holds_no_reference_to_a_records_key_object() -> None:
    """Keys are copied into the packed key buffer: a record's ``bytes`` (56 bytes for a 7-byte key, with its
    pointer) is freed with its batch instead of living as long as the key's row."""
    import sys

    t = _table()
    key = b"".join([b"S", b"000123"])  # a fresh object, as a Kafka client hands it over
    before = sys.getrefcount(key)
    rows, _ = t.rows_for(0, [key])
    assert sys.getrefcount(key) == before
    assert t.keys[int(rows[0])] == key and t.items(0) == [(key, int(rows[0]))]


def test_a_batch_repeating_keys_gets_the_rows_and_new_marks_of_one_lookup_per_record() -> None:
    """Distinct keys are looked up once (keyindex.distinct); rows and first-record marks are as key by key."""
    keys = [b"a", b"b", b"a", b"c", b"b", b"d", b"c", b"a", b"e", b"e"]
    batched = _table(capacity=2)
    batched.rows_for(0, [b"b", b"x"])
    rows, new = batched.rows_for(0, keys)
    single = _table(capacity=2)
    single.rows_for(0, [b"b", b"x"])
    one_by_one = [single.rows_for(0, [k]) for k in keys]
    assert rows.tolist() == [int(r[0]) for r, _ in one_by_one]
    assert new.tolist() == [bool(n[0]) for _, n in one_by_one]
    assert new.tolist() == [True, False, False, True, False, True, False, False, True, False]


def test_no_per_row_array_is_left_out_of_bytes_per_key() -> None:
    """Every array with one entry per row of capacity is a part of ``bytes_per_key`` (the index's row hashes are
    4 of its 12 bytes): a stack of free rows, 8 bytes per row, was not, and rows never used need none."""
    t = StateTable([Column.filled("m.h", (3,), np.float32, 0.5), Column.filled("s.var", (), np.float64, 1.0)],
                   identity="model-a", capacity=4)
    rows, _ = t.rows_for(0, [b"k%d" % i for i in range(1000)])  # grown past its capacity several times
    t.release_rows(rows[10:20].tolist())
    capacity = t.steps.shape[0]
    per_row = [a for obj in (t, t.keys, t._index) for a in vars(obj).values()
               if isinstance(a, np.ndarray) and a.shape[:1] == (capacity,)]
    per_row.append(t.last_seen_s.stored)  # a consumer.seconds.Seconds: its array is stored inside
    per_row += list(t.stored.values())
    parts = t.bytes_per_key()
    counted = parts["model_state"] + parts["scorer_state"] + parts["bookkeeping"] + parts["keys"] + 4
    assert sum(a.nbytes for a in per_row) == counted * capacity
    again, new = t.rows_for(0, [b"x%d" % i for i in range(12)])  # freed rows first (lowest first), then new
    assert new.all() and again.tolist() == [*rows[10:20].tolist(), 1000, 1001]


def _array_bytes(t: StateTable) -> int:
    return sum(a.nbytes for obj in (t, t.keys, t._index) for a in vars(obj).values() if isinstance(a, np.ndarray))


def test_releasing_rows_takes_no_memory_and_the_lowest_released_rows_are_reused_first() -> None:
    """Revoking every partition (a rebalance, the shutdown) releases every row. A stack of released rows grew
    to 4 MB with a million keys (plus the old stack while it was copied), at the shutdown's peak RSS; a released
    row is found in the table itself (partition -1), so releasing allocates nothing."""
    t = _table(capacity=4)
    for p in range(4):
        t.rows_for(p, [b"k%d" % i for i in range(50_000)])
    before = _array_bytes(t)
    t.drop_partition(2)
    t.drop_partition(1)
    assert len(t) == 100_000 and _array_bytes(t) == before
    rows, new = t.rows_for(5, [b"a", b"b"])
    assert new.all() and rows.tolist() == [50_000, 50_001]
    rows, new = t.rows_for(5, [b"k%d" % i for i in range(99_998)] + [b"c", b"d"])
    assert new.all() and rows.tolist() == [*range(50_002, 150_000), 200_000, 200_001]
    for p in (0, 3, 5):
        t.drop_partition(p)
    assert len(t) == 0 and _array_bytes(t) == before
    rows, new = t.rows_for(0, [b"a", b"b"])
    assert new.all() and rows.tolist() == [0, 1]


def test_the_key_index_costs_twelve_bytes_per_key() -> None:
    """A 32-bit hash per row (slot positions and the filter before comparing keys need no more) and two int32
    slots; collisions of the shorter hash are resolved by the keys, as before (tests/unit/test_keyindex.py)."""
    t = _table()
    rows, _ = t.rows_for(0, [b"k%d" % i for i in range(5_000)])
    assert t.bytes_per_key()["key_index"] == 12
    assert t.rows_of(0, [b"k%d" % i for i in range(5_000)]).tolist() == rows.tolist()
    assert t.row_of(0, b"k4321") == rows[4321] and t.row_of(0, b"nope") is None


def test_dropping_a_partition_needs_little_more_than_the_list_of_its_rows() -> None:
    """A revoked partition (a rebalance, the shutdown) leaves the key index a slice of rows at a time: removing
    300,000 keys at once took ~12 MB of int64 temporaries on top of the table, at the end of a run its peak."""
    import tracemalloc

    t = _table()
    n = 300_000
    for p in range(2):
        t.rows_for(p, [b"k%d" % i for i in range(n)])
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        assert t.drop_partition(0) == n
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 8 * n * 7 // 4  # its rows (int64) and their key lengths (int32), little else
    assert t.row_of(0, b"k5") is None and t.row_of(1, b"k5") is not None and len(t) == n


def test_steps_are_a_count_stored_in_four_bytes_and_written_in_eight() -> None:
    """A key's step count is stored as int32 like the counters (2^31 steps), 35 bytes of bookkeeping per key;
    the snapshot keeps its 8-byte field, so snapshots read and write as before."""
    t = _table()
    assert t.steps.dtype == np.int32 and t.bytes_per_key()["bookkeeping"] == 35
    rows, _ = t.rows_for(0, [b"k"])
    t.steps[rows] = 2**31 - 1
    blob = t.snapshot(int(rows[0]))
    assert blob == _reference_snapshot(t, int(rows[0])) and t.decode(blob).steps == 2**31 - 1


def test_the_bundled_models_table_pays_back_the_reversal_detectors_bytes() -> None:
    """Issue 9's 1M-key memory target: the reversal detector's 40 bytes were paid back by narrower columns; the
    recent high the scores rank by (issue 12) costs 3 more (1M keys: 3 MB of the target's 500 MB RSS)."""
    from rnnwatch.consumer.contract import load_signature
    from rnnwatch.consumer.runner import make_runner
    from rnnwatch.consumer.settings import bundled_model_path

    parts = make_runner(load_signature(bundled_model_path())).table.bytes_per_key()
    assert parts["scorer_state"] <= 143 and parts["bookkeeping"] <= 35
    assert sum(parts.values()) <= 334


def test_a_partition_beyond_int16_is_refused_with_a_clear_error() -> None:
    """Partitions are stored as int16 (2 bytes per key): a larger one must fail loudly, never wrap."""
    t = StateTable([Column.filled("s.var", (), np.float64, 1.0)], identity="model-a", capacity=2)
    rows, _ = t.rows_for(32767, [b"a"])
    assert t.partition[rows].tolist() == [32767] and t.row_of(32767, b"a") == rows[0]
    with pytest.raises(StateError, match="32768"):
        t.rows_for(32768, [b"b"])


def test_last_seen_is_four_bytes_and_ttl_eviction_is_unchanged_after_months() -> None:
    """``last_seen_s`` is stored as float32 seconds from the first time written (4 bytes per key, not 8): a
    monotonic clock months into a process still evicts a key exactly when a float64 clock would, to the second."""
    t = _table(capacity=4)
    rows, _ = t.rows_for(0, [b"first", b"later", b"idle"])
    start = 2_000_000.0  # the monotonic clock of a machine up for 23 days
    t.last_seen_s[rows[0]] = start
    later = start + 120 * 86_400 + 0.25  # four months on
    t.last_seen_s[rows[1:]] = [later, later - 61.0]
    t.changelog_offset[rows] = [1, 2, 3]
    assert t.last_seen_s.itemsize == 4 and t.bytes_per_key()["bookkeeping"] == 35
    assert abs(t.last_seen_s[rows[1]] - later) <= 0.5 and t.last_seen_s[rows[0]] == start
    for now, want in ((later + 59.0, [rows[0], rows[2]]), (later + 61.0, list(rows))):
        assert t.idle_rows(now_s=now, ttl_s=60.0).tolist() == want


def test_last_seen_before_a_time_is_the_float64_comparison() -> None:
    from rnnwatch.consumer.seconds import Seconds

    rng = np.random.default_rng(5)
    s = Seconds(2000)
    s[:] = 7_000.0 + np.cumsum(rng.exponential(3_000.0, 2000))
    wide, origin = s.stored.astype(np.float64), s.origin or 0.0  # the stored offsets, exactly, and their origin
    edges = wide[::7] + origin
    for t in np.concatenate([edges, edges + 1e-3, edges - 1e-3, rng.uniform(edges[0], edges[-1], 300)]):
        assert (s.before(float(t)) == (wide < t - origin)).all()  # the threshold is not rounded to float32

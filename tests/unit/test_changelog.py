"""Changelog: restores read from the newest marker (bounded by the key count, not the uptime), idle keys
are carried forward, evicted and forgotten on time, and a marker without its commit is never trusted.

An ``Owner`` is one member's state table, store and checkpointer over the in-memory cluster (``fakes``),
stepping keys by hand; the verdict of a full read of the changelog (``read_snapshots``) is the reference
every bounded restore must reproduce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from rnnwatch.consumer import changelog
from rnnwatch.consumer.changelog import RestoreStats, StateStore
from rnnwatch.consumer.checkpoint import Checkpointer
from rnnwatch.consumer.metrics import Metrics
from rnnwatch.consumer.restore import FIRST_WINDOW, read_snapshots
from rnnwatch.consumer.sink import KafkaSink
from rnnwatch.consumer.state import Column, StateTable
from tests.unit.fakes import FakeCluster, FakeProducer, FakeReader, FakeSource

CL = "g.state"
HOUR_MS = 3600 * 1000


@dataclass
class Clock:
    wall_ms: int = 1_700_000_000_000
    mono: float = 5_000.0

    def advance(self, seconds: float) -> None:
        self.wall_ms += int(seconds * 1000)
        self.mono += seconds


class Owner:
    """One group member that owns input partition 0 (and its changelog partition)."""

    def __init__(self, cluster: FakeCluster, clock: Clock, *, ttl_ms: int = 0, retention_ms: int = 0) -> None:
        self.cluster, self.clock = cluster, clock
        self.table = StateTable([Column.filled("m.h", (2,), np.float32, 0.0)], identity="m")
        self.reader = FakeReader(cluster)
        self.store = StateStore(self.table, CL, self.reader, key_ttl_ms=ttl_ms, retention_ms=retention_ms,
                                wall_ms=lambda: clock.wall_ms, monotonic=lambda: clock.mono)
        self.sink = KafkaSink(producer=FakeProducer(cluster), output_topic="out", dead_letter_topic="dlq",
                              changelog_topic=CL)
        self.source = FakeSource(cluster, "in", "g", {0})
        self.checkpointer = Checkpointer(self.sink, self.store, self.source,
                                         Metrics(CollectorRegistry(), process_metrics=False))
        self.offset = 0

    def restore(self) -> RestoreStats:
        committed = self.source.committed(0)
        job = self.store.restore_job(warn_s=60)
        job.add(0, committed)
        done: list[RestoreStats] = []
        while not done:
            done = job.step(1.0)
        self.checkpointer.restored(0, committed)
        self.offset = committed or 0
        return done[0]

    def step(self, keys: list[bytes]) -> None:
        """One record per key, at the next input offsets: each changes its key's state."""
        rows, _ = self.table.rows_for(0, keys)
        for row in rows.tolist():
            self.table.arrays["m.h"][row] += 1.0
            self.table.steps[row] += 1
            self.table.last_offset[row] = self.offset
            self.table.last_seen_s[row] = self.clock.mono
            self.table.dirty[row] = True
            self.offset += 1
        self.checkpointer.advance(0, self.offset, len(keys))

    def checkpoint(self) -> None:
        self.checkpointer.run(rewrite=True)


def keys(n: int, prefix: str = "k") -> list[bytes]:
    return [f"{prefix}{i:05d}".encode() for i in range(n)]


def new_cluster() -> FakeCluster:
    c = FakeCluster()
    c.create(CL, 1)
    c.create("in", 1)
    c.create("out", 1)
    c.create("dlq", 1)
    return c


def full_read(c: FakeCluster) -> dict[bytes, tuple[int, int]]:
    """Per key (input offset, steps) by the changelog's full verdict."""
    latest, _ = read_snapshots(FakeReader(c), CL, [0])
    table = StateTable([Column.filled("m.h", (2,), np.float32, 0.0)], identity="m")
    return {k: (s.input_offset, table.decode(s.value).steps) for k, s in latest[0].items()}


def in_memory(owner: Owner) -> dict[bytes, tuple[int, int]]:
    out = {}
    for key, row in owner.table.items(0):
        out[key] = (int(owner.table.last_offset[row]), int(owner.table.steps[row]))
    return out


def test_a_restore_reads_from_the_newest_marker_not_the_whole_history() -> None:
    c, clock = new_cluster(), Clock()
    first = Owner(c, clock)
    first.restore()
    for _ in range(40):  # 40 checkpoints of 300 keys: 12,000 snapshots
        first.step(keys(300))
        first.checkpoint()
    assert len(c.topics[CL][0]) > 12_000
    second = Owner(c, clock)
    stats = second.restore()
    assert second.reader.records_read <= FIRST_WINDOW + 3 * 300, stats
    assert stats.why.startswith("from the marker")
    assert in_memory(second) == full_read(c)


def test_idle_keys_are_rewritten_so_the_restore_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "REWRITE_SLACK", 0)
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock)
    owner.restore()
    owner.step(keys(1000))
    owner.checkpoint()
    for _ in range(120):  # 50 hot keys, 950 idle ones pinning the low-water mark
        owner.step(keys(50))
        owner.checkpoint()
    history = len(c.topics[CL][0])
    assert history > 6_000
    again = Owner(c, clock)
    stats = again.restore()
    assert again.reader.records_read <= FIRST_WINDOW + 3 * 1000 < history, stats
    assert in_memory(again) == full_read(c)


def test_a_marker_is_trusted_only_when_its_position_is_the_committed_one() -> None:
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock)
    owner.restore()
    for _ in range(10):
        owner.step(keys(100))
        owner.checkpoint()
    # a zombie appends a marker for a position the group never committed, claiming nothing before the end
    owner.store.write_markers(owner.sink.send_snapshot, {0: 123_456})
    owner.sink.flush(1.0)
    again = Owner(c, clock)
    stats = again.restore()
    assert stats.start == 0 and again.reader.records_read == len(c.topics[CL][0])
    assert in_memory(again) == full_read(c)


def test_a_checkpoint_whose_commit_failed_leaves_an_untrusted_marker() -> None:
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock)
    owner.restore()
    owner.step(keys(100))
    owner.checkpoint()
    owner.step(keys(100))

    def refuse(positions: dict[int, int], *, blocking: bool = True) -> None:
        raise RuntimeError("commit failed")

    owner.source.commit = refuse  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        owner.checkpoint()  # snapshots and marker written, commit not
    again = Owner(c, clock)
    stats = again.restore()
    assert stats.start == 0  # the newest marker's position was never committed
    assert in_memory(again) == full_read(c)
    assert stats.committed == 100


def test_evicted_keys_are_carried_forward_and_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "REWRITE_SLACK", 0)
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock, ttl_ms=HOUR_MS, retention_ms=100 * HOUR_MS)
    owner.restore()
    idle, hot = keys(200, "idle"), keys(20, "hot")
    owner.step(idle)
    owner.step(idle)
    owner.checkpoint()
    clock.advance(2 * 3600)
    owner.step(hot)
    owner.checkpoint()
    assert owner.store.evict_idle(clock.mono, 3600) == 200
    for _ in range(80):  # the idle keys' snapshots fall far behind: rewrites copy them forward
        owner.step(hot)
        owner.checkpoint()
    start = min(e.changelog_offset for e in owner.store.evicted[0].values())
    assert start > 400  # copied, not left at their first offsets
    assert owner.store.revive(0, idle[:5]) == 5  # five idle keys have a record again
    assert all(in_memory(owner)[k][1] == 2 for k in idle[:5])  # two steps each, as before eviction
    owner.step(idle[:5])
    owner.checkpoint()
    later = Owner(c, clock, ttl_ms=HOUR_MS, retention_ms=100 * HOUR_MS)
    stats = later.restore()
    assert (stats.keys, stats.idle) == (20 + 5, 195)  # long-idle keys are indexed, not loaded
    assert later.store.tracked_keys() == 220


def test_keys_idle_past_the_retention_are_forgotten_and_bookkeeping_stays_bounded() -> None:
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock, ttl_ms=HOUR_MS, retention_ms=5 * HOUR_MS)
    owner.restore()
    peak = 0
    for hour in range(30):  # 50 new keys an hour, never seen again: 1,500 keys in all
        owner.step(keys(50, f"h{hour:02d}-"))
        owner.checkpoint()
        clock.advance(3600)
        owner.store.evict_idle(clock.mono, 3600)
        peak = max(peak, owner.store.tracked_keys())
    assert peak <= 7 * 50  # the keys of the last ~6 hours, not every key ever seen
    assert len(owner.table) <= 50  # in memory: only the last hour's keys
    later = Owner(c, clock, ttl_ms=HOUR_MS, retention_ms=5 * HOUR_MS)
    stats = later.restore()
    assert stats.keys + stats.idle <= 6 * 50
    assert len(full_read(c)) <= 6 * 50  # tombstones took the rest out of the changelog's verdict too


def test_a_late_write_just_before_the_marker_start_never_hides_the_owners_snapshot() -> None:
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock)
    owner.restore()
    owner.step(keys(10))
    owner.checkpoint()
    row = owner.table.row_of(0, b"k00003")
    assert row is not None
    # a zombie's late snapshot of one key, claiming an input offset the owner has not reached
    c.append(CL, 0, b"k00003", owner.table.snapshot(row), [("rnnwatch-offset", b"999")])
    owner.step(keys(10))
    owner.checkpoint()  # every key written again: the marker's low-water mark is after the zombie's record
    again = Owner(c, clock)
    stats = again.restore()
    assert stats.start > 0
    assert in_memory(again) == in_memory(owner)  # the owner's states, none hidden by the stale write


def test_a_partition_restored_again_by_the_same_member_is_read_to_its_current_end() -> None:
    """The restore consumer keeps a partition's last highwater while the partition stays assigned to it.

    A member restores partition 0 at start-up (the changelog still empty: its reader's last fetch saw end 0),
    the partition moves to another member, which steps every key and checkpoints, and comes back. The second
    restore must read those snapshots: one that took the stale end of 0 read nothing and every key restarted
    cold (the scale 1 -> 3 -> 1 chaos test's extra events).
    """
    c, clock = new_cluster(), Clock()
    member = Owner(c, clock)
    member.restore()
    other = Owner(c, clock)
    other.restore()
    other.step(keys(10))
    other.checkpoint()
    member.store.forget_partition(0)  # the member's revocation ...
    member.checkpointer.forget({0})
    stats = member.restore()  # ... and its assignment of the partition again
    assert stats.keys == 10
    assert in_memory(member) == in_memory(other) == full_read(c)


def test_a_checkpoint_of_many_keys_holds_at_most_one_chunk_of_snapshots_unacknowledged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "SNAPSHOT_CHUNK", 4)
    c = new_cluster()
    owner = Owner(c, Clock())
    producer = owner.sink._producer
    assert isinstance(producer, FakeProducer)
    most: list[int] = []
    send = producer.send

    def counting_send(*args: object, **kwargs: object) -> None:
        send(*args, **kwargs)  # type: ignore[arg-type]
        most.append(len(producer.pending))

    monkeypatch.setattr(producer, "send", counting_send)
    owner.step(keys(10))
    owner.checkpoint()
    snapshots = [r for r in c.all(CL) if r.key != changelog.MARKER_KEY]
    assert len(snapshots) == 10 and max(most) == 4
    assert full_read(c) == in_memory(owner) and not owner.table.dirty.any()


def test_a_rewrite_of_many_idle_keys_is_sent_in_chunks_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "REWRITE_SLACK", 0)
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock)
    owner.restore()
    owner.step(keys(40))
    owner.checkpoint()
    monkeypatch.setattr(changelog, "SNAPSHOT_CHUNK", 7)
    producer = owner.sink._producer
    assert isinstance(producer, FakeProducer)
    most: list[int] = []
    send = producer.send

    def counting_send(*args: object, **kwargs: object) -> None:
        send(*args, **kwargs)  # type: ignore[arg-type]
        most.append(len(producer.pending))

    monkeypatch.setattr(producer, "send", counting_send)
    rewritten = False
    for _ in range(40):  # 2 hot keys, 38 idle ones: their snapshots fall behind and are rewritten
        before = len(c.topics[CL][0])
        owner.step(keys(2))
        owner.checkpoint()
        rewritten = rewritten or len(c.topics[CL][0]) - before > 30
    assert rewritten and max(most) <= 7
    assert full_read(c) == in_memory(owner)


def test_a_checkpoint_of_many_keys_holds_no_array_over_every_changed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows to snapshot are found a slice of the table at a time: an int64 per changed row (8 MB with a
    million keys, held for the whole checkpoint) was part of the peak RSS; a chunk's snapshots are the rest."""
    import tracemalloc

    monkeypatch.setattr(changelog, "SNAPSHOT_CHUNK", 1_000)
    table = StateTable([Column.filled("m.h", (2,), np.float32, 0.0)], identity="m")
    n = 300_000
    rows, _ = table.rows_for(0, [b"k%d" % i for i in range(n)])
    table.dirty[rows] = True
    store = StateStore(table, CL, FakeReader(new_cluster()))
    store.ends[0] = 0
    landed = iter(range(n))

    def send(partition: int, key: bytes, value: bytes | None, headers: object,
             on_offset: Callable[[int], None]) -> None:
        on_offset(next(landed))  # acknowledged at once; applied at the flush after each chunk

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        written = store.write_snapshots(send, store.apply_acks)
        store.apply_acks()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert written == n and not table.dirty.any()
    assert sorted(table.changelog_offset[rows].tolist()) == list(range(n))  # every row, once
    assert peak < 8 * n // 2


def test_a_checkpoint_of_many_chunks_trims_the_heap_between_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chunk's snapshots are freed once delivered; the free pages they leave between live blocks go back to
    the OS every few chunks (``malloc.trim``). A checkpoint of one chunk (few keys) pays nothing."""
    from rnnwatch.consumer import checkpoint

    trims: list[int] = []

    def counting_trim() -> bool:
        trims.append(1)
        return True

    monkeypatch.setattr(checkpoint, "trim", counting_trim)
    monkeypatch.setattr(changelog, "SNAPSHOT_CHUNK", 4)
    monkeypatch.setattr(checkpoint, "TRIM_EVERY_CHUNKS", 2)
    owner = Owner(new_cluster(), Clock())
    owner.step(keys(3))
    owner.checkpoint()
    assert trims == []
    owner.step(keys(20))
    owner.checkpoint()
    assert len(trims) == 1 + 2  # one before the first chunk; five chunks, four flushes between: every second one


def test_the_restore_reader_holds_no_partition_once_the_restore_is_done() -> None:
    """librdkafka keeps fetching an assigned partition in the background whether anyone reads it or not: a
    reader left on the changelog after a restore buffered the snapshots the next checkpoints wrote there (up
    to its prefetch bound, +14 MiB peak RSS measured with 1,000,000 keys). So a finished restore gives its
    partition up; the next one assigns what it reads."""
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock)
    owner.restore()
    assert owner.reader.assignment() == set()
    owner.step(keys(10))
    owner.checkpoint()
    again = Owner(c, clock)
    assert again.restore().keys == 10 and again.reader.assignment() == set()


def test_a_restore_revoked_half_way_gives_its_partition_up() -> None:
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock)
    owner.restore()
    owner.step(keys(50))
    owner.checkpoint()
    again = Owner(c, clock)
    job = again.store.restore_job(warn_s=60)
    job.add(0, None)
    assert job.step(0.0) == []  # one fetch: the partition is assigned and half read
    assert again.reader.assignment()
    job.drop(0)
    assert again.reader.assignment() == set()


def test_revived_and_rewritten_evicted_keys_leave_the_reader_unassigned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "REWRITE_SLACK", 0)
    c, clock = new_cluster(), Clock()
    owner = Owner(c, clock, ttl_ms=HOUR_MS, retention_ms=100 * HOUR_MS)
    owner.restore()
    owner.reader.assign([])  # whatever the restore did: only the rewrites and the revive below read now
    idle = keys(20, "idle")
    owner.step(idle)
    owner.checkpoint()
    clock.advance(2 * 3600)
    owner.step(keys(2, "hot"))
    owner.checkpoint()
    assert owner.store.evict_idle(clock.mono, 3600) == 20
    rewrote = False
    for _ in range(40):  # the evicted keys' snapshots fall behind: a rewrite reads them back
        before = len(c.topics[CL][0])
        owner.step(keys(2, "hot"))
        owner.checkpoint()
        rewrote = rewrote or len(c.topics[CL][0]) - before > 10
        assert owner.reader.assignment() == set()
    assert rewrote
    assert owner.store.revive(0, idle[:3]) == 3
    assert owner.reader.assignment() == set()


def test_a_checkpoint_of_many_chunks_first_trims_what_processing_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processing leaves free pages in the heap (a poll's temporaries, the consumer's fetched records); a large
    checkpoint hands them back before its first chunk, then every ``TRIM_EVERY_CHUNKS`` chunks (the peak RSS
    with 1,000,000 keys came at the start of the final checkpoint, before the first trim). A checkpoint of one
    chunk (few keys) pays nothing."""
    from rnnwatch.consumer import checkpoint

    c = new_cluster()
    sent_at_trim: list[int] = []

    def counting_trim() -> bool:
        sent_at_trim.append(len([r for r in c.all(CL) if r.key != changelog.MARKER_KEY]))
        return True

    monkeypatch.setattr(checkpoint, "trim", counting_trim)
    monkeypatch.setattr(changelog, "SNAPSHOT_CHUNK", 4)
    owner = Owner(c, Clock())
    owner.step(keys(4))
    owner.checkpoint()
    assert sent_at_trim == []
    owner.step(keys(20, "more"))
    owner.checkpoint()
    assert sent_at_trim[0] == 4  # before the first snapshot of this checkpoint (4 are from the one before)
    assert sent_at_trim[1:] == [4 + 4 * checkpoint.TRIM_EVERY_CHUNKS * i for i in range(1, len(sent_at_trim))]
    assert len(sent_at_trim) == 1 + (5 - 1) // checkpoint.TRIM_EVERY_CHUNKS


def test_the_low_water_mark_of_many_keys_holds_no_array_over_the_partitions_rows() -> None:
    """A checkpoint ends with each partition's marker, whose low-water mark is the smallest acknowledged snapshot
    offset of its keys. Taken through an index array of the partition's rows, their offsets and a filtered copy
    (~20 bytes per key, 6 MB for 300,000 keys), it was the last step up of a million-key run's RSS; a slice of
    the table at a time gives the same mark."""
    import tracemalloc

    table = StateTable([Column.filled("m.h", (2,), np.float32, 0.0)], identity="m")
    n = 300_000
    rows, _ = table.rows_for(0, [b"k%d" % i for i in range(n)])
    other, _ = table.rows_for(1, [b"k%d" % i for i in range(1_000)])
    table.changelog_offset[rows] = 1_000 + np.arange(n)
    table.changelog_offset[rows[::7]] = -1  # never acknowledged: not part of the mark
    table.changelog_offset[other] = 5  # another partition's keys: not part of it either
    store = StateStore(table, CL, FakeReader(new_cluster()))
    store.ends[0] = 2_000_000
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        low = store.low_mark(0)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert low == 1_001  # row 0 (offset 1,000) was never acknowledged
    assert peak < n  # under a byte per key of the partition

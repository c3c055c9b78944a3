"""State durability (DESIGN §5): per-key snapshots in the changelog topic, restored on assignment.

Changelog: topic ``<group>.state`` (compacted on real Kafka), partition = the input partition, key = the
record key, value = :meth:`StateTable.snapshot` bytes, tagged with the input offset the snapshot reflects.

The restore rule that makes state exactly-once:
  1. a checkpoint writes snapshots of every key changed since the last one *before* committing offsets;
  2. on assignment, every snapshot of the partition is read to the end (highwater after a fetch, never
     ``end_offsets()``, which some brokers report short) and, per key, the one with the **highest input
     offset** wins (not the last written: a zombie's late, older snapshot must not win);
  3. while processing, a record whose offset is <= its key's snapshot offset is already in the state and
     is skipped.
So a record is never applied twice and never skipped, whatever point a crash or rebalance hit. A key that
was idle for a long time costs nothing: its state comes from its last snapshot, not from an input replay.

Idle keys evicted from memory (TTL) keep their snapshot; the store remembers its changelog offset, so a
returning key is read back with one fetch instead of starting cold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rnnwatch.consumer.errors import StateError
from rnnwatch.consumer.state import Snapshot, StateTable

__all__ = ["RestoreStats", "StateStore", "read_snapshots"]

log = logging.getLogger(__name__)


@dataclass
class RestoreStats:
    partition: int
    keys: int = 0
    records: int = 0  # distinct keys found in the changelog partition
    model_changed: int = 0
    corrupt: int = 0
    seconds: float = 0.0


@dataclass
class _Latest:
    offset: int  # input offset the snapshot reflects
    changelog_offset: int
    value: bytes


def read_snapshots(consumer: Any, topic: str, partitions: Sequence[int], *, timeout_s: float = 120.0,
                   only_offsets: dict[int, set[int]] | None = None) -> tuple[dict[int, dict[bytes, _Latest]], int]:
    """Read changelog partitions to their end (or just ``only_offsets``); per key keep the best snapshot.

    "The end" is the highwater a fetch response reports, not ``end_offsets()``: some Kafka-protocol brokers
    answer ListOffsets short of the true end.
    """
    from kafka import TopicPartition

    tps = {p: TopicPartition(topic, p) for p in partitions}
    consumer.assign(list(tps.values()))
    for p, tp in tps.items():
        if only_offsets is not None:
            consumer.seek(tp, min(only_offsets[p]))
        else:
            consumer.seek_to_beginning(tp)
    latest: dict[int, dict[bytes, _Latest]] = {p: {} for p in partitions}
    records = 0
    deadline = time.monotonic() + timeout_s
    while not _at_end(consumer, tps, only_offsets):
        for tp, batch in consumer.poll(timeout_ms=100).items():
            wanted = only_offsets.get(tp.partition) if only_offsets is not None else None
            for rec in batch:
                records += 1
                if rec.key is None or rec.value is None or (wanted is not None and rec.offset not in wanted):
                    continue
                offset = _header_int(rec.headers, "rnnwatch-offset")
                best = latest[tp.partition].get(rec.key)
                if best is None or offset >= best.offset:
                    latest[tp.partition][rec.key] = _Latest(offset, rec.offset, rec.value)
        if time.monotonic() > deadline:
            msg = f"restoring {topic} partitions {sorted(partitions)} did not finish within {timeout_s:.0f}s"
            raise StateError(msg)
    consumer.assign([])
    return latest, records


def _at_end(consumer: Any, tps: dict[int, Any], only_offsets: dict[int, set[int]] | None) -> bool:
    for p, tp in tps.items():
        position = consumer.position(tp)
        if only_offsets is not None and position > max(only_offsets[p]):
            continue
        highwater = consumer.highwater(tp)
        if highwater is None or position < highwater:
            return False
    return True


def _header_int(headers: Sequence[tuple[str, bytes]] | None, name: str) -> int:
    for key, value in headers or ():
        if key == name:
            try:
                return int(value)
            except ValueError:
                return -1
    return -1


@dataclass
class StateStore:
    """Restores partitions into the table, writes snapshots, and revives evicted keys."""

    table: StateTable
    topic: str
    restore_consumer: Any
    on_reset: Callable[[str, int], None] = lambda reason, n: None
    snapshot_offsets: dict[tuple[int, bytes], int] = field(default_factory=dict)  # (partition, key) -> offset
    evicted: dict[tuple[int, bytes], int] = field(default_factory=dict)

    def restore(self, partitions: Sequence[int]) -> list[RestoreStats]:
        """Load every key's best snapshot of ``partitions`` into the table (call before processing them)."""
        start = time.monotonic()
        latest, _ = read_snapshots(self.restore_consumer, self.topic, partitions)
        all_stats = []
        for partition in partitions:
            stats = RestoreStats(partition, records=len(latest[partition]))
            for key, snap in latest[partition].items():
                self.snapshot_offsets[(partition, key)] = snap.changelog_offset
                stats.keys += self._install(partition, key, snap, stats)
            stats.seconds = time.monotonic() - start
            all_stats.append(stats)
        return all_stats

    def revive(self, partition: int, keys: Sequence[bytes]) -> int:
        """Bring back evicted keys of this batch from their snapshots; returns how many came back."""
        offsets = {}
        for key in keys:
            offset = self.evicted.pop((partition, key), None)
            if offset is not None and self.table.row_of(partition, key) is None:
                offsets[key] = offset
        if not offsets:
            return 0
        latest, _ = read_snapshots(self.restore_consumer, self.topic, [partition],
                                   only_offsets={partition: set(offsets.values())})
        stats = RestoreStats(partition)
        found = latest[partition]
        return sum(self._install(partition, key, snap, stats) for key, snap in found.items() if key in offsets)

    def forget_partition(self, partition: int) -> int:
        for store in (self.snapshot_offsets, self.evicted):
            for k in [k for k in store if k[0] == partition]:
                del store[k]
        return self.table.drop_partition(partition)

    def evict_idle(self, now_s: float, ttl_s: float) -> int:
        evicted = self.table.evict_idle(now_s, ttl_s)
        for pk in evicted:
            offset = self.snapshot_offsets.get(pk)
            if offset is not None:
                self.evicted[pk] = offset
        return len(evicted)

    def write_snapshots(self, send: Callable[[int, bytes, bytes, list[tuple[str, bytes]],
                                               Callable[[int], None]], None]) -> int:
        """Send a snapshot of every dirty row; returns how many. The caller flushes afterwards."""
        model = self.table.identity.encode()
        n = 0
        for partition, key, row in self.table.dirty_rows():
            headers = [("rnnwatch-offset", str(int(self.table.last_offset[row])).encode()),
                       ("rnnwatch-model", model)]
            send(partition, key, self.table.snapshot(row), headers, self._offset_setter(partition, key))
            self.table.dirty[row] = False  # only now: a send that raised leaves this and later rows marked
            n += 1
        return n

    def _offset_setter(self, partition: int, key: bytes) -> Callable[[int], None]:
        def remember(offset: int) -> None:
            self.snapshot_offsets[(partition, key)] = offset
        return remember

    def _install(self, partition: int, key: bytes, snap: _Latest, stats: RestoreStats) -> int:
        try:
            decoded: Snapshot = self.table.decode(snap.value)
        except StateError as exc:
            log.error("corrupt state snapshot for key %r in %s[%d]@%d: %s; the key starts fresh",
                      key, self.topic, partition, snap.changelog_offset, exc)
            stats.corrupt += 1
            self.on_reset("corrupt_snapshot", 1)
            self._install_fresh(partition, key, -1)  # nothing in a corrupt record is trusted, not even its offset
            return 0
        if not decoded.values:
            stats.model_changed += 1
            self.on_reset("model_changed", 1)
            self._install_fresh(partition, key, decoded.input_offset)
            return 0
        self.table.load(partition, key, decoded)
        return 1

    def _install_fresh(self, partition: int, key: bytes, input_offset: int) -> None:
        """A key whose snapshot is unusable starts cold but still skips records the old state had seen.

        Skipping keeps the exactly-once promise for *records* (no double processing); the key re-warms from
        the next record on.
        """
        rows, _ = self.table.rows_for(partition, [key])
        self.table.last_offset[rows] = max(input_offset, -1)
        self.table.dirty[rows] = True

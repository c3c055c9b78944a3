"""State durability (DESIGN §5): per-key snapshots in the changelog topic, restored on assignment.

Changelog: topic ``<group>.state`` (compacted on real Kafka), partition = the input partition, key = the
record key, value = :meth:`StateTable.snapshot` bytes; headers: the input offset the snapshot reflects,
the state identity (model), and the wall-clock time the key last had a record.

The restore rule that makes state exactly-once:
  1. a checkpoint writes snapshots of every key changed since the last one *before* committing offsets;
  2. on assignment, a partition's snapshots are read and, per key, the one with the **highest input
     offset** wins (not the last written: a zombie's late, older snapshot must not win);
  3. while processing, a record whose offset is <= its key's snapshot offset is already in the state and
     is skipped.

Bounded restore (markers and rewrites). Reading a partition from its first record makes restart time grow
with uptime on a changelog that is not (yet) compacted — real Kafka never compacts the active segment, and
the test broker never compacts at all. So a restore reads only from a *start* offset that each checkpoint
records durably, in the changelog itself:
  * every key with state (in memory or evicted) has its current snapshot at or after the partition's
    *low-water mark*, the smallest changelog offset of any key's latest snapshot (tracked per row);
  * before committing a partition's offsets, the checkpoint appends a **marker** record (reserved key,
    ``rnnwatch-marker`` header) holding that low-water mark and the input position being committed;
  * when the changelog holds more than ``2 × keys + 10,000`` records past the low-water mark, the main
    loop's checkpoint **rewrites** the keys whose latest snapshot is older than the newest ``keys`` records
    (from memory; evicted keys are copied from the changelog), so the mark moves on even for idle keys;
  * a restore finds the newest marker with a backward search from the end and trusts it only if its
    position equals the group's committed offset — i.e. it belongs to the checkpoint the group resumes
    from, not to a zombie or to a checkpoint whose commit never happened; otherwise it reads everything.
So a restore reads at most about ``3 × keys + 10,000`` records plus the search window, whatever the
uptime, and compaction on real Kafka can still drop everything older. Why markers in the changelog and
not the commit's metadata string: the test broker (Tansu) drops commit metadata, and a marker is found
in the same read that restores the partition; the position check pairs marker and commit just as well.

Keys over time (memory is bounded by the keys seen recently, not by every key ever seen):
  * idle longer than ``key_ttl_ms``: the row leaves memory; an index entry (changelog offset, last-seen
    time, input offset) remains, and a returning key is read back with one short range read;
  * idle longer than ``state_retention_ms``: the key is forgotten — a tombstone is written (real Kafka's
    compaction then deletes it), the index entry goes, and a returning key starts cold (counted as
    ``rnnwatch_keys_expired_total``). A restore applies both rules to the snapshots it reads,
    from the last-seen time in their headers, so a restart neither loads long-idle keys into memory nor
    treats restored keys as freshly idle (nor evicts them at once on a host with a large monotonic clock).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from rnnwatch.consumer.errors import StateError
from rnnwatch.consumer.kafka.protocols import PartitionReader, TopicPartition
from rnnwatch.consumer.restore import (
    HEADER_MARKER,
    HEADER_MODEL,
    HEADER_OFFSET,
    HEADER_SEEN,
    MARKER_KEY,
    Best,
    Marker,
    RestoreJob,
    ScanResult,
    Snap,
    read_range,
    read_snapshots,
    release,
    run_to_end,
)
from rnnwatch.consumer.state import Snapshot, StateTable
from rnnwatch.consumer.types import ResetReason

__all__ = ["Evicted", "RestoreStats", "StateStore", "read_snapshots"]

log = logging.getLogger(__name__)

REWRITE_FACTOR = 2  # rewrite when the changelog holds more than this many records per key past the low mark
REWRITE_SLACK = 10_000  # ... plus this many (small partitions never churn)
SNAPSHOT_CHUNK = 10_000  # snapshots sent between two flushes of a checkpoint (~5 MB of records)
DIRTY_SCAN_ROWS = 16_384  # rows of the table searched for changed keys at once (see write_snapshots)
EXPIRY_EVERY_S = 60.0

# send(partition, key, value or None for a tombstone, headers, on_offset)
Send = Callable[[int, bytes, bytes | None, list[tuple[str, bytes]], Callable[[int], None]], None]


@dataclass
class RestoreStats:
    partition: int
    keys: int = 0  # loaded into memory
    idle: int = 0  # idle longer than the TTL: indexed, not loaded
    expired: int = 0  # idle longer than the retention: forgotten
    records: int = 0  # changelog records read
    model_changed: int = 0
    corrupt: int = 0
    seconds: float = 0.0
    start: int = 0  # changelog offset the read counted from
    why: str = ""
    committed: int | None = None  # the group's committed input offset when the restore began


@dataclass(frozen=True)
class Evicted:
    """What is kept of a key evicted from memory: where its snapshot is and how old it is."""

    changelog_offset: int
    seen_ms: int  # wall clock of the key's last record
    input_offset: int


def _acked(acks: Callable[[tuple[int, bytes | None, int, int]], None], partition: int, key: bytes, seq: int,
           offset: int) -> None:
    """A snapshot's delivery callback (producer thread): queue where it landed for :meth:`StateStore.apply_acks`."""
    acks((partition, key, seq, offset))


class StateStore:
    """Restores partitions into the table, writes snapshots and markers, evicts, revives and expires keys."""

    def __init__(self, table: StateTable, topic: str, reader: PartitionReader, *, key_ttl_ms: int = 0,
                 retention_ms: int = 0, on_reset: Callable[[ResetReason, int], None] = lambda reason, n: None,
                 on_expired: Callable[[int], None] = lambda n: None,
                 wall_ms: Callable[[], int] | None = None, monotonic: Callable[[], float] | None = None) -> None:
        self.table, self.topic, self.reader = table, topic, reader
        self.key_ttl_ms, self.retention_ms = key_ttl_ms, retention_ms
        self.on_reset, self.on_expired = on_reset, on_expired
        self.wall_ms: Callable[[], int] = wall_ms or (lambda: int(time.time() * 1000))
        self.monotonic: Callable[[], float] = monotonic or (lambda: time.monotonic())
        self.evicted: dict[int, dict[bytes, Evicted]] = {}
        self.ends: dict[int, int] = {}  # partition -> changelog offset after our last acknowledged write
        self._acks: deque[tuple[int, bytes | None, int, int]] = deque()  # filled by the producer's thread
        self._inflight: dict[tuple[int, bytes], int] = {}  # (partition, key) -> sequence of its newest send
        self._seq = itertools.count()
        self._evicted_low: dict[int, int | None] = {}  # cache of min(evicted offsets); None: recompute
        self._tombstones: list[tuple[int, bytes, int]] = []  # expired at restore: deleted at the next checkpoint
        self._next_expiry_s = 0.0

    # -- restore ----------------------------------------------------------------------------------------
    def restore_job(self, warn_s: float) -> RestoreJob:
        """A job that restores assigned partitions in slices (see ``restore.RestoreJob``)."""
        return RestoreJob(self.reader, self.topic, self._finish, warn_s)

    def _finish(self, partition: int, result: ScanResult, seconds: float) -> RestoreStats:
        stats = RestoreStats(partition, records=result.best.records, seconds=seconds, start=result.start,
                             why=result.why, committed=result.committed)
        now_ms, now_s = self.wall_ms(), self.monotonic()
        for key, snap in result.best.by_key.items():
            if snap.value is None:
                continue  # deleted (expired) key
            idle_ms = max(0, now_ms - snap.seen_ms) if snap.seen_ms >= 0 else 0
            if self.retention_ms and idle_ms > self.retention_ms:
                stats.expired += 1
                self._tombstones.append((partition, key, snap.input_offset))
            elif self.key_ttl_ms and idle_ms > self.key_ttl_ms:
                stats.idle += 1
                self._index(partition, key, Evicted(snap.changelog_offset, now_ms - idle_ms, snap.input_offset))
            else:
                stats.keys += self._install(partition, key, snap, stats, now_s - idle_ms / 1000)
        if stats.expired:
            self.on_expired(stats.expired)
        self.ends[partition] = max(self.ends.get(partition, 0), result.end)
        return stats

    def revive(self, partition: int, keys: Sequence[bytes]) -> int:
        """Bring back evicted keys of this batch from their snapshots; returns how many came back."""
        index = self.evicted.get(partition, {})
        wanted = {k: index.pop(k) for k in keys if k in index and self.table.row_of(partition, k) is None}
        if not wanted:
            return 0
        self._evicted_low[partition] = None
        best = Best(set(wanted))
        lo = min(e.changelog_offset for e in wanted.values())
        hi = max(e.changelog_offset for e in wanted.values()) + 1
        self._read(partition, lo, hi, best)
        stats, now_s, revived = RestoreStats(partition), self.monotonic(), 0
        for key, entry in wanted.items():
            snap = best.by_key.get(key)
            if snap is None or snap.value is None:
                log.error("the snapshot of evicted key %r is gone from %s[%d]@%d; the key starts cold",
                          key, self.topic, partition, entry.changelog_offset,
                          extra={"event": "state_reset", "topic": self.topic, "partition": partition,
                                 "offset": entry.changelog_offset, "key": key, "reason": "snapshot_missing"})
                self.on_reset("snapshot_missing", 1)
                self._install_fresh(partition, key, entry.input_offset, now_s)
                continue
            revived += self._install(partition, key, snap, stats, now_s)
        return revived

    def _read(self, partition: int, lo: int, hi: int, best: Best) -> None:
        """Changelog records [lo, hi) of ``partition`` into ``best``; the reader gives the partition up after."""
        try:
            run_to_end(read_range(self.reader, TopicPartition(self.topic, partition), lo, hi, best.add))
        finally:
            release(self.reader)

    def _install(self, partition: int, key: bytes, snap: Snap, stats: RestoreStats, last_seen_s: float) -> int:
        try:
            decoded: Snapshot = self.table.decode(snap.value or b"")
        except StateError as exc:
            log.error("corrupt state snapshot for key %r in %s[%d]@%d: %s; the key starts fresh",
                      key, self.topic, partition, snap.changelog_offset, exc,
                      extra={"event": "state_reset", "topic": self.topic, "partition": partition,
                             "offset": snap.changelog_offset, "key": key, "reason": "corrupt_snapshot"})
            stats.corrupt += 1
            self.on_reset("corrupt_snapshot", 1)
            self._install_fresh(partition, key, -1, last_seen_s)  # nothing in a corrupt record is trusted
            return 0
        if not decoded.values:
            stats.model_changed += 1
            self.on_reset("model_changed", 1)
            self._install_fresh(partition, key, decoded.input_offset, last_seen_s)
            return 0
        self.table.load(partition, key, decoded, last_seen_s=last_seen_s, changelog_offset=snap.changelog_offset)
        return 1

    def _install_fresh(self, partition: int, key: bytes, input_offset: int, last_seen_s: float) -> None:
        """A key whose snapshot is unusable starts cold but still skips records the old state had seen.

        Skipping keeps the exactly-once promise for *records* (no double processing); the key re-warms from
        the next record on.
        """
        rows, _ = self.table.rows_for(partition, [key])
        self.table.last_offset[rows] = max(input_offset, -1)
        self.table.last_seen_s[rows] = last_seen_s
        self.table.dirty[rows] = True

    # -- writing ----------------------------------------------------------------------------------------
    def changed_keys(self) -> int:
        """Keys changed since the last checkpoint: how many snapshots the next one writes."""
        return int(np.count_nonzero(self.table.dirty))

    def write_snapshots(self, send: Send, flush: Callable[[], None] = lambda: None) -> int:
        """Send a snapshot of every dirty row; returns how many. The caller flushes, then :meth:`apply_acks`.

        Sent in chunks of ``SNAPSHOT_CHUNK`` with ``flush`` (flush + apply acks) between them, so what waits
        for the broker (the producer's buffers, delivery callbacks, in-flight bookkeeping) stays bounded
        however many keys changed: a checkpoint of a million keys must not hold a million records at once.
        """
        n = 0
        for rows in self._dirty_chunks():
            if n:
                flush()
            n += self._send_rows(send, rows, clear_dirty=True)
        return n

    def _dirty_chunks(self) -> Iterator[np.ndarray]:
        """The dirty rows in chunks of ``SNAPSHOT_CHUNK``, found a slice of the table at a time: an index array
        of every dirty row would be 8 bytes per changed key for the whole checkpoint (8 MB with a million)."""
        dirty, parts, count = self.table.dirty, [], 0
        for first in range(0, dirty.size, DIRTY_SCAN_ROWS):
            rows = first + np.flatnonzero(dirty[first:first + DIRTY_SCAN_ROWS])
            while rows.size:
                take = rows[:SNAPSHOT_CHUNK - count]
                parts.append(take)
                count += take.size
                rows = rows[take.size:]
                if count == SNAPSHOT_CHUNK:
                    yield np.concatenate(parts)
                    parts, count = [], 0
        if count:
            yield np.concatenate(parts)

    def _send_chunked(self, send: Send, rows: np.ndarray, flush: Callable[[], None], *, clear_dirty: bool) -> int:
        n = 0
        for start in range(0, rows.size, SNAPSHOT_CHUNK):
            if start:
                flush()
            n += self._send_rows(send, rows[start:start + SNAPSHOT_CHUNK], clear_dirty=clear_dirty)
        return n

    def _send_rows(self, send: Send, rows: np.ndarray, *, clear_dirty: bool = False) -> int:
        """Snapshots of these rows (built at once), sent in row order; ``clear_dirty``: unmark each once sent."""
        table = self.table
        rows = rows[table.partition[rows] >= 0]
        if rows.size == 0:
            return 0
        blobs = table.snapshots(rows)
        ages_ms = ((self.monotonic() - table.last_seen_s[rows]) * 1000).astype(np.int64)  # int(): toward zero
        seen = (self.wall_ms() - ages_ms).tolist()
        model = table.identity.encode()
        row_list = rows.tolist()
        acks, inflight, seq = self._acks.append, self._inflight, self._seq
        sent: list[int] = []  # handed to the producer: unmarked even when a later send raises (it and later stay)
        try:
            for row, partition, blob, offset, seen_ms in zip(row_list, table.partition[rows].tolist(), blobs,
                                                             table.last_offset[rows].tolist(), seen, strict=True):
                key = table.keys[row]
                if key is not None:
                    n = next(seq)
                    send(partition, key, blob,
                         [(HEADER_OFFSET, b"%d" % offset), (HEADER_MODEL, model), (HEADER_SEEN, b"%d" % seen_ms)],
                         partial(_acked, acks, partition, key, n))
                    inflight[(partition, key)] = n
                    sent.append(row)
        finally:
            if clear_dirty:
                table.dirty[sent] = False
        return int(rows.size)

    def _send(self, send: Send, partition: int, key: bytes, value: bytes | None,
              headers: list[tuple[str, bytes]]) -> None:
        seq = next(self._seq)
        send(partition, key, value, headers, lambda offset: self._acks.append((partition, key, seq, offset)))
        self._inflight[(partition, key)] = seq

    def apply_acks(self) -> None:
        """Record where acknowledged snapshots landed (call after a flush, on the main thread).

        The rows of a partition's acknowledged keys are found in one vectorised lookup, not a probe per ack (a
        checkpoint of 100,000 keys acknowledges 100,000 snapshots); each key lands at most once per call, as
        only the newest send of a key is applied.
        """
        landed: dict[int, tuple[list[bytes], list[int]]] = {}
        while self._acks:
            partition, key, seq, offset = self._acks.popleft()
            if partition not in self.ends:
                continue  # no longer ours
            self.ends[partition] = max(self.ends[partition], offset + 1)
            if key is None or self._inflight.get((partition, key)) != seq:
                continue  # a marker, or an older send of a key sent again since
            del self._inflight[(partition, key)]
            keys, offsets = landed.setdefault(partition, ([], []))
            keys.append(key)
            offsets.append(offset)
        for partition, (keys, offsets) in landed.items():
            rows = self.table.rows_of(partition, keys)
            found = rows >= 0
            self.table.changelog_offset[rows[found]] = np.asarray(offsets, dtype=np.int64)[found]
            index = self.evicted.get(partition, {})
            for j in np.flatnonzero(~found).tolist():
                key = keys[j]
                if key in index:
                    index[key] = Evicted(offsets[j], index[key].seen_ms, index[key].input_offset)
                    self._evicted_low[partition] = None

    def low_mark(self, partition: int) -> int | None:
        """Smallest changelog offset of any key's latest snapshot (None while a snapshot is unacknowledged)."""
        if partition not in self.ends or any(p == partition for p, _ in self._inflight):
            return None
        candidates = [self.ends[partition]]
        if (lowest := self._lowest_acknowledged(partition)) is not None:
            candidates.append(lowest)
        if (evicted_low := self._evicted_min(partition)) is not None:
            candidates.append(evicted_low)
        return min(candidates)

    def _lowest_acknowledged(self, partition: int) -> int | None:
        """Smallest changelog offset of the partition's rows, None if none has one; a slice of the table at a
        time: an index array of the partition's rows and their offsets would be ~20 bytes per key at once, the
        last step up of a million-key checkpoint's RSS."""
        table, lowest = self.table, None
        for first in range(0, table.partition.size, DIRTY_SCAN_ROWS):
            offsets = table.changelog_offset[first:first + DIRTY_SCAN_ROWS]
            found = offsets[(table.partition[first:first + DIRTY_SCAN_ROWS] == partition) & (offsets >= 0)]
            if found.size:
                low = int(found.min())
                lowest = low if lowest is None else min(lowest, low)
        return lowest

    def write_markers(self, send: Send, positions: dict[int, int]) -> int:
        """Append a marker (low-water mark, input position about to be committed) per partition."""
        n = 0
        for partition, position in sorted(positions.items()):
            start = self.low_mark(partition)
            if start is None:
                log.debug("no marker for %s[%d]: a snapshot is unacknowledged", self.topic, partition)
                continue
            send(partition, MARKER_KEY, Marker.encode(start, position), [(HEADER_MARKER, b"1")],
                 self._marker_ack(partition))
            n += 1
        return n

    def _marker_ack(self, partition: int) -> Callable[[int], None]:
        def acked(offset: int) -> None:
            self._acks.append((partition, None, -1, offset))
        return acked

    def rewrite_old(self, send: Send, flush: Callable[[], None] = lambda: None) -> set[int]:
        """Rewrite keys whose snapshot is far behind the end (see the module docstring); expire old keys.

        Returns the partitions whose low-water mark moved (they deserve a marker).
        """
        moved = set()
        for partition in sorted(self.ends):
            keys = self.table.count(partition) + len(self.evicted.get(partition, {}))
            low, end = self.low_mark(partition), self.ends[partition]
            if low is None or end - low <= REWRITE_FACTOR * keys + REWRITE_SLACK:
                continue
            threshold = end - keys
            n = (self._rewrite_live(send, partition, threshold, flush)
                 + self._rewrite_evicted(send, partition, threshold))
            log.info("rewrote %d snapshots of %s[%d] older than offset %d (%d keys, %d records past the low mark)",
                     n, self.topic, partition, threshold, keys, end - low)
            moved.add(partition)
        return moved | self._expire(send)

    def _rewrite_live(self, send: Send, partition: int, threshold: int, flush: Callable[[], None]) -> int:
        rows = self.table.rows_of_partition(partition)
        old = rows[(self.table.changelog_offset[rows] >= 0) & (self.table.changelog_offset[rows] < threshold)]
        return self._send_chunked(send, old, flush, clear_dirty=False)

    def _rewrite_evicted(self, send: Send, partition: int, threshold: int) -> int:
        index = self.evicted.get(partition, {})
        old = {k: e for k, e in index.items() if e.changelog_offset < threshold}
        if not old:
            return 0
        best = Best(set(old))
        lo, hi = min(e.changelog_offset for e in old.values()), max(e.changelog_offset for e in old.values()) + 1
        self._read(partition, lo, hi, best)
        for key, entry in old.items():
            snap = best.by_key.get(key)
            if snap is None or snap.value is None:
                log.error("the snapshot of evicted key %r is gone from %s[%d]@%d; forgetting the key",
                          key, self.topic, partition, entry.changelog_offset,
                          extra={"event": "state_reset", "topic": self.topic, "partition": partition,
                                 "offset": entry.changelog_offset, "key": key, "reason": "snapshot_missing"})
                self.on_reset("snapshot_missing", 1)
                del index[key]
                continue
            headers = [(HEADER_OFFSET, str(snap.input_offset).encode()), (HEADER_SEEN, str(entry.seen_ms).encode())]
            self._send(send, partition, key, snap.value, headers)
        self._evicted_low[partition] = None
        return len(old)

    def _expire(self, send: Send) -> set[int]:
        """Tombstones for keys idle longer than the retention (at most once a minute)."""
        now_s = self.monotonic()
        if not self.retention_ms or now_s < self._next_expiry_s:
            return set()
        self._next_expiry_s = now_s + EXPIRY_EVERY_S
        cutoff = self.wall_ms() - self.retention_ms
        gone = list(self._tombstones)  # expired at restore (counted then)
        restored = len(gone)
        self._tombstones.clear()
        for partition, index in self.evicted.items():
            for key in [k for k, e in index.items() if e.seen_ms < cutoff]:
                gone.append((partition, key, index.pop(key).input_offset))
            self._evicted_low[partition] = None
        for partition, key, input_offset in gone:
            self._send(send, partition, key, None, [(HEADER_OFFSET, str(input_offset).encode())])
        if expired := len(gone) - restored:
            self.on_expired(expired)
            log.info("forgot %d keys idle for longer than %d ms", expired, self.retention_ms)
        return {p for p, _, _ in gone}

    # -- memory -----------------------------------------------------------------------------------------
    def evict_idle(self, now_s: float, ttl_s: float) -> int:
        """Move rows idle for ``ttl_s`` (monotonic clock) out of memory, keeping where their snapshot is."""
        rows = self.table.idle_rows(now_s, ttl_s).tolist()
        if self._inflight:
            rows = [r for r in rows if (int(self.table.partition[r]), self.table.keys[r]) not in self._inflight]
        now_ms = self.wall_ms()
        for row in rows:
            key = self.table.keys[row]
            if key is not None:
                seen_ms = now_ms - int((now_s - float(self.table.last_seen_s[row])) * 1000)
                self._index(int(self.table.partition[row]), key, Evicted(
                    int(self.table.changelog_offset[row]), seen_ms, int(self.table.last_offset[row])))
        self.table.release_rows(rows)
        return len(rows)

    def _index(self, partition: int, key: bytes, entry: Evicted) -> None:
        self.evicted.setdefault(partition, {})[key] = entry
        if (low := self._evicted_low.get(partition)) is not None:  # else recomputed when next needed
            self._evicted_low[partition] = min(low, entry.changelog_offset)

    def _evicted_min(self, partition: int) -> int | None:
        index = self.evicted.get(partition)
        if not index:
            return None
        if self._evicted_low.get(partition) is None:
            self._evicted_low[partition] = min(e.changelog_offset for e in index.values())
        return self._evicted_low[partition]

    def forget_partition(self, partition: int) -> int:
        """Drop everything about a partition that is no longer ours."""
        self.evicted.pop(partition, None)
        self._evicted_low.pop(partition, None)
        self.ends.pop(partition, None)
        self._tombstones = [t for t in self._tombstones if t[0] != partition]
        for pk in [pk for pk in self._inflight if pk[0] == partition]:
            del self._inflight[pk]
        return self.table.drop_partition(partition)

    def tracked_keys(self) -> int:
        """Keys the store keeps anything about: rows in memory plus evicted-key index entries."""
        return len(self.table) + sum(len(index) for index in self.evicted.values())

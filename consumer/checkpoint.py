"""The checkpoint protocol: the only place offsets are committed.

:meth:`Checkpointer.run` does, in this order:

1. flush the producer — every anomaly event and dead letter for the records processed so far is
   acknowledged by the broker (a failure raises and nothing below happens);
2. send a snapshot of every key changed since the last checkpoint to the changelog, tagged with the
   input offset it reflects (in chunks, with a flush between two chunks so memory stays bounded);
3. flush again — the snapshots are acknowledged, and where they landed is recorded;
4. (main loop only) rewrite the snapshots that lag far behind the changelog's end, and flush;
5. append a marker to the changelog partition of every input partition about to be committed (its
   low-water mark and the position of step 6, see ``changelog``), and flush;
6. commit the processed positions of the input partitions.

A crash between any two steps loses nothing: events are at-least-once (same ids on replay), and the
changelog restore rule (see ``changelog``) skips records a snapshot already reflects, so state stays
exactly-once even when step 6 never happens (a marker whose commit never happened is not trusted).

Poisoning. A snapshot may only reflect records whose events were handed to the producer in a batch that
completed, and an offset may only be committed past records whose events were delivered. So once a
delivery failed (``DeliveryError``) or a batch stopped half way (:meth:`Checkpointer.batch` saw an
exception after the model stepped), the checkpointer is *poisoned*: every later :meth:`Checkpointer.run`
raises ``DeliveryError`` before writing anything, and the process must end; a restart replays from the
last commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rnnwatch.consumer import changelog
from rnnwatch.consumer.changelog import StateStore
from rnnwatch.consumer.crashpoints import maybe_crash
from rnnwatch.consumer.errors import DeliveryError
from rnnwatch.consumer.kafka import GroupSource
from rnnwatch.consumer.malloc import trim
from rnnwatch.consumer.metrics import Metrics
from rnnwatch.consumer.sink import Sink

__all__ = ["CHEAP_SNAPSHOTS", "MAX_WAIT_INTERVALS", "SNAPSHOTS_PER_RECORD", "TRIM_EVERY_CHUNKS", "Checkpointer"]

log = logging.getLogger(__name__)

# The cadence with many keys (see ``Checkpointer.due``): a checkpoint writes one snapshot per changed key, and a
# snapshot costs several times what processing a record does (kafka-python: ~20 us CPU each). So a due
# checkpoint that would write more than CHEAP_SNAPSHOTS snapshots and more than SNAPSHOTS_PER_RECORD per
# record since the last one waits, for at most MAX_WAIT_INTERVALS checkpoint intervals.
CHEAP_SNAPSHOTS = 10_000  # about 0.2 s of producing on kafka-python: never worth a wait
SNAPSHOTS_PER_RECORD = 0.25
MAX_WAIT_INTERVALS = 6
TRIM_EVERY_CHUNKS = 2  # chunks of snapshots (changelog.SNAPSHOT_CHUNK each) between two malloc trims


@dataclass
class Checkpointer:
    sink: Sink
    store: StateStore
    source: GroupSource
    metrics: Metrics
    flush_timeout_s: float = 30.0
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset to process
    committed: dict[int, int] = field(default_factory=dict)
    last_run_s: float = field(default_factory=time.monotonic)
    records_since: int = 0
    poisoned: str | None = None  # why nothing may be checkpointed any more (see the module docstring)
    _deadline: float | None = None
    _chunks: int = 0  # chunk flushes so far (see _between_chunks)

    def poison(self, reason: str) -> None:
        if self.poisoned is None:
            self.poisoned = reason
            log.error("nothing will be checkpointed or committed any more: %s; the process must restart", reason,
                      extra={"event": "commit_failed", "reason": "delivery_failed"})

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Wrap the handling of one polled batch: an exception inside it poisons the checkpointer."""
        try:
            yield
        except BaseException as exc:
            self.poison(f"a batch stopped before it completed ({type(exc).__name__}: {exc})")
            raise

    def advance(self, partition: int, next_offset: int, records: int = 0) -> None:
        if next_offset > self.positions.get(partition, -1):
            self.positions[partition] = next_offset
        self.records_since += records

    def due(self, interval_s: float, max_records: int) -> bool:
        """Past the interval or the record count, unless the checkpoint would be mostly snapshots.

        With many keys and few records per key (100,000 keys, a few records each per interval) a checkpoint
        writes about one snapshot per record processed, and snapshotting, not the model, is where the time
        goes. Such a checkpoint waits until each snapshot covers 1 / SNAPSHOTS_PER_RECORD records, or
        MAX_WAIT_INTERVALS intervals passed: what it costs is a longer replay after a crash (bounded in
        time), never a guarantee. Checkpoints of up to CHEAP_SNAPSHOTS keys are not delayed at all.
        """
        elapsed = time.monotonic() - self.last_run_s
        if self.records_since < max_records and elapsed < interval_s:
            return False
        if elapsed >= interval_s * MAX_WAIT_INTERVALS:
            return True
        changed = self.store.changed_keys()
        return changed <= CHEAP_SNAPSHOTS or changed <= self.records_since * SNAPSHOTS_PER_RECORD

    def run(self, partitions: set[int] | None = None, *, blocking_commit: bool = True, rewrite: bool = False,
            budget_s: float | None = None) -> int:
        """Checkpoint (for ``partitions`` or all); returns snapshots written. See the module docstring.

        ``budget_s`` bounds all flushes together (a rebalance callback must not stall the group's heartbeats):
        past it the flush raises BrokerError and nothing is committed.
        """
        if self.poisoned is not None:
            msg = f"checkpoint refused: {self.poisoned}"
            raise DeliveryError(msg)
        start = time.monotonic()
        self._deadline = None if budget_s is None else start + budget_s
        self._flush()  # 1
        if self.store.changed_keys() > changelog.SNAPSHOT_CHUNK:
            trim()  # what processing left free in the heap, before a large checkpoint adds its own
        maybe_crash("checkpoint.before_snapshots")
        written = self.store.write_snapshots(self.sink.send_snapshot, self._between_chunks)  # 2
        self._flush()  # 3
        moved = self.store.rewrite_old(self.sink.send_snapshot, self._between_chunks) if rewrite else set()  # 4
        if moved:
            self._flush()
        wanted = self.positions if partitions is None else {p: o for p, o in self.positions.items() if p in partitions}
        todo = {p: o for p, o in wanted.items() if self.committed.get(p) != o}
        marked = {p: o for p, o in wanted.items() if p in todo or p in moved}
        if self.store.write_markers(self.sink.send_snapshot, marked):  # 5
            self._flush()
        maybe_crash("checkpoint.before_commit")
        self.metrics.snapshots_written.inc(written)
        self._commit(todo, blocking_commit)  # 6
        self.metrics.checkpoint_duration.observe(self.last_run_s - start)
        log.debug("checkpoint: %d snapshots, offsets %s", written, todo,
                  extra={"event": "commit", "offsets": todo, "count": written})
        return written

    def _commit(self, todo: dict[int, int], blocking: bool) -> None:
        start = time.monotonic()
        try:
            self.source.commit(todo, blocking=blocking)
        except Exception:
            self.metrics.commit_failures.inc()
            raise
        self.metrics.commit_duration.observe(time.monotonic() - start)
        self.committed.update(todo)
        self.last_run_s = time.monotonic()
        self.records_since = 0

    def restored(self, partition: int, committed: int | None) -> None:
        """A partition was restored: its committed offset is where processing resumes."""
        if committed is not None:
            self.positions[partition] = max(self.positions.get(partition, -1), committed)
            self.committed[partition] = committed

    def _flush(self) -> None:
        timeout = self.flush_timeout_s if self._deadline is None else max(0.05, self._deadline - time.monotonic())
        try:
            self.sink.flush(timeout)
        except DeliveryError as exc:
            self.poison(str(exc))
            raise
        self.store.apply_acks()

    def _between_chunks(self) -> None:
        """Flush a chunk of snapshots; every ``TRIM_EVERY_CHUNKS`` chunks, give the heap pages its delivered
        records held back (``malloc.trim``, a few ms: only checkpoints of more than one chunk pay it; with
        1,000,000 keys the first 10 chunks before the first trim were the peak RSS)."""
        self._flush()
        self._chunks += 1
        if self._chunks % TRIM_EVERY_CHUNKS == 0:
            trim()

    def forget(self, partitions: set[int]) -> None:
        for p in partitions:
            self.positions.pop(p, None)
            self.committed.pop(p, None)

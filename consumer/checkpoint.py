"""The checkpoint protocol: the only place offsets are committed.

:meth:`Checkpointer.run` does, in this order:

1. flush the producer — every anomaly event and dead letter for the records processed so far is
   acknowledged by the broker (a failure raises and nothing below happens);
2. send a snapshot of every key changed since the last checkpoint to the changelog, tagged with the
   input offset it reflects;
3. flush again — the snapshots are acknowledged;
4. commit the processed positions of the input partitions.

A crash between any two steps loses nothing: events are at-least-once (same ids on replay), and the
changelog restore rule (see ``changelog``) skips records a snapshot already reflects, so state stays
exactly-once even when step 4 never happens.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from rnnwatch.consumer.changelog import StateStore
from rnnwatch.consumer.faults import maybe_crash
from rnnwatch.consumer.metrics import Metrics
from rnnwatch.consumer.sink import Sink
from rnnwatch.consumer.source import KafkaSource

__all__ = ["Checkpointer"]

log = logging.getLogger(__name__)


@dataclass
class Checkpointer:
    sink: Sink
    store: StateStore
    source: KafkaSource
    metrics: Metrics
    flush_timeout_s: float = 30.0
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset to process
    committed: dict[int, int] = field(default_factory=dict)
    last_run_s: float = field(default_factory=time.monotonic)
    records_since: int = 0

    def advance(self, partition: int, next_offset: int, records: int = 0) -> None:
        if next_offset > self.positions.get(partition, -1):
            self.positions[partition] = next_offset
        self.records_since += records

    def due(self, interval_s: float, max_records: int) -> bool:
        return self.records_since >= max_records or time.monotonic() - self.last_run_s >= interval_s

    def run(self, partitions: set[int] | None = None, *, blocking_commit: bool = True) -> int:
        """Checkpoint (for ``partitions`` or all); returns snapshots written. See the module docstring."""
        start = time.monotonic()
        self.sink.flush(self.flush_timeout_s)  # 1
        maybe_crash("checkpoint.before_snapshots")
        written = self.store.write_snapshots(self.sink.send_snapshot)  # 2
        self.sink.flush(self.flush_timeout_s)  # 3
        maybe_crash("checkpoint.before_commit")
        self.metrics.snapshots_written.inc(written)
        wanted = self.positions if partitions is None else {p: o for p, o in self.positions.items() if p in partitions}
        todo = {p: o for p, o in wanted.items() if self.committed.get(p) != o}
        commit_start = time.monotonic()
        try:  # 4
            self.source.commit(todo, blocking=blocking_commit)
        except Exception:
            self.metrics.commit_failures.inc()
            raise
        self.metrics.commit_duration.observe(time.monotonic() - commit_start)
        self.committed.update(todo)
        self.last_run_s = time.monotonic()
        self.records_since = 0
        self.metrics.checkpoint_duration.observe(self.last_run_s - start)
        log.debug("checkpoint: %d snapshots, offsets %s", written, todo)
        return written

    def forget(self, partitions: set[int]) -> None:
        for p in partitions:
            self.positions.pop(p, None)
            self.committed.pop(p, None)

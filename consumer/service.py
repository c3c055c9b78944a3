"""`rnnwatch run`: the service lifecycle around the pipeline.

start-up (fail fast) -> loop { restore newly assigned partitions, poll, handle batch, checkpoint when due,
evict idle keys, update lag } -> shutdown (finish the batch, checkpoint, leave the group).

Threading: kafka-python runs rebalance callbacks on its IO thread while this loop is blocked in ``poll()``,
librdkafka runs them inside ``poll()`` on this thread; either way the loop and the callbacks never touch
the state table at the same time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from rnnwatch.consumer.backpressure import Backpressure
from rnnwatch.consumer.changelog import StateStore
from rnnwatch.consumer.checkpoint import Checkpointer
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.crashpoints import arm as arm_crash_point
from rnnwatch.consumer.decoder import TickDecoder
from rnnwatch.consumer.errors import BrokerError, DeliveryError, RebalancedError
from rnnwatch.consumer.events import AnomalyEvent
from rnnwatch.consumer.health import HealthState, OpsServer
from rnnwatch.consumer.kafka import GroupSource, KafkaConfig, PartitionReader, Transport, open_transport
from rnnwatch.consumer.limits import check_record_sizes
from rnnwatch.consumer.malloc import HeapTrimmer
from rnnwatch.consumer.metrics import Metrics
from rnnwatch.consumer.pipeline import BatchOutcome, Pipeline
from rnnwatch.consumer.restore import partition_end
from rnnwatch.consumer.runner import make_runner
from rnnwatch.consumer.settings import Settings
from rnnwatch.consumer.sink import KafkaSink, Sink
from rnnwatch.consumer.topics import ensure_topics

__all__ = ["RunSummary", "Service"]

log = logging.getLogger(__name__)
_POLL_MS = 200
_RESTORE_SLICE_S = 0.5  # restore work per loop iteration, between polls that keep the group membership alive
_HOUSEKEEPING_S = 1.0


@dataclass
class RunSummary:
    records: int = 0
    processed: int = 0
    anomalies: int = 0
    dead_lettered: int = 0
    first_record_s: float = 0.0
    last_record_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        seconds = max(self.last_record_s - self.first_record_s, 1e-9) if self.records else 0.0
        return {"records": self.records, "processed": self.processed, "anomalies": self.anomalies,
                "dead_lettered": self.dead_lettered, "seconds": round(seconds, 3),
                "records_per_second": round(self.records / seconds, 1) if seconds else 0.0}


class Service:
    """Build with settings (raises on any start-up problem; the object is complete or not made), then :meth:`run`.

    The Kafka clients come from ``transport`` (default: the one ``settings.transport`` names, see
    ``rnnwatch.consumer.kafka``); tests pass ``rnnwatch.consumer.testing.MemoryTransport``.

    ``on_anomaly`` is called on the poll thread for each event, after it was handed to the producer, and is
    part of its batch: if it raises, nothing after the last checkpoint is snapshotted or committed, ``run``
    raises that exception, and a restart calls it again for the replayed records (at-least-once, same
    event ids). ``on_batch`` is called after a batch completed (its positions count for the next commit).
    """

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None,
                 on_anomaly: Callable[[AnomalyEvent], None] | None = None,
                 on_batch: Callable[[BatchOutcome], None] | None = None,
                 transport: Transport | None = None) -> None:
        self.settings = settings
        # the Kafka clients' maker: the settings' transport, or one given (``testing.MemoryTransport``)
        self._transport = transport or open_transport(KafkaConfig.from_settings(settings))
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.health = HealthState(settings.liveness_timeout_ms / 1000)
        self.metrics.ready.set_function(lambda: 1.0 if self.health.ready()[0] else 0.0)
        self.summary = RunSummary()
        self._on_anomaly = on_anomaly
        self._on_batch = on_batch
        self._stop = threading.Event()
        self._next_group_check = 0.0
        self._joined = False  # between an assignment and the next revocation
        self._joining = False  # between the start of a group join (its revoke callback) and its assignment
        self._closing = False
        # kafka-python runs this callback on the consumer's IO thread: no heartbeat goes out meanwhile. A third
        # of the session timeout keeps the member alive; past it the new owner replays from the last commit.
        self._revoke_budget_s = settings.session_timeout_ms / 3000
        self.ops: OpsServer | None = None
        try:
            self._assemble()
        except BaseException:
            self._close_clients(leave=True)
            raise

    # -- start-up ---------------------------------------------------------------------------------------
    def start(self) -> Service:
        """The service is complete once constructed; kept so ``Service(settings).start().run()`` reads as before."""
        return self

    def _assemble(self) -> None:
        """Build every part, in the order that fails fastest: model, ops server, Kafka clients, pipeline."""
        s = self.settings
        arm_crash_point()  # the chaos suite's RNNWATCH_CRASH_*: a bad value is a ConfigError before anything starts
        self.signature = signature = load_signature(s.model)  # ModelError: refuse before touching Kafka
        self.metrics.set_model(signature.name, signature.version, signature.architecture, signature.sha256)
        self.health.model_loaded = True
        self.ops = OpsServer(s.metrics_host, s.metrics_port, self.registry, self.health,
                             request_timeout_s=s.metrics_request_timeout_ms / 1000,
                             max_connections=s.metrics_max_connections).start()
        log.info("model %s %s (%s, %d state bytes/key); metrics on http://%s:%d/metrics", signature.name,
                 signature.version, signature.architecture, signature.state_bytes_per_key, s.metrics_host,
                 self.ops.port)
        self._connect()
        runner = make_runner(signature, scoring=s.scoring_overrides(), threads=s.inference_threads, gap_ms=s.gap_ms,
                             reset_on_gap=s.gap_policy == "reset", input_topic=s.input_topic)
        check_record_sizes(signature, runner.table, s)
        self.store = StateStore(runner.table, s.changelog_topic, self._reader, key_ttl_ms=s.key_ttl_ms,
                                retention_ms=s.state_retention_ms, on_expired=self.metrics.keys_expired.inc,
                                on_reset=lambda reason, n: self.metrics.state_resets.labels(reason).inc(n))
        self._restorer = self.store.restore_job(s.restore_warn_ms / 1000)
        decoder = TickDecoder(signature.features, s.fields_for(signature.feature_names), key_field=s.key_field,
                              time_field=s.time_field, timestamp_unit=s.timestamp_unit,
                              max_message_bytes=s.max_message_bytes, max_future_ms=s.max_future_ms,
                              min_event_ms=s.min_event_time, max_key_bytes=s.max_key_bytes,
                              max_header_bytes=s.max_header_bytes)
        self.pipeline = Pipeline(signature=signature, runner=runner, decoder=decoder, sink=self.sink,
                                 metrics=self.metrics, topic=s.input_topic, store=self.store,
                                 source_uri=f"rnnwatch://{s.group_id}/{signature.name}", on_anomaly=self._on_anomaly)
        self.checkpointer = Checkpointer(self.sink, self.store, self.source, self.metrics,
                                         flush_timeout_s=max(5.0, s.shutdown_grace_ms / 2000))
        self._trimmer = HeapTrimmer()  # the free heap pages a batch leaves, given back (consumer.malloc)
        self.source.on_revoked = self._on_revoked
        self.source.on_assigned = self._on_assigned
        self.backpressure = Backpressure(s.max_in_flight_bytes, self.source.throttle,
                                         on_pause=self.metrics.backpressure_pauses.inc)
        self.metrics.producer_pending_bytes.set_function(lambda: self.sink.pending_bytes)
        self.metrics.consumption_paused.set_function(lambda: 1.0 if self.backpressure.paused else 0.0)

    def _connect(self) -> None:
        """The Kafka clients: group consumer (topics checked), producer sink, changelog reader.

        Each is kept as soon as it exists, so a failure after it still closes it (``_close_clients``).
        """
        s = self.settings
        self.source: GroupSource = self._transport.source(s.input_topic)
        admin = self._transport.admin()
        try:
            partitions = ensure_topics(s, admin)
        finally:
            admin.close()
        log.info("input %s has %d partitions (%s transport)", s.input_topic, partitions, self._transport.name)
        self.sink: Sink = KafkaSink(
            producer=self._transport.producer(), output_topic=s.output_topic, dead_letter_topic=s.dead_letter_topic,
            changelog_topic=s.changelog_topic, on_event_delivered=self.metrics.events_produced.inc,
            on_error=lambda kind: self.metrics.produce_errors.labels(kind).inc(),
        )
        self._reader: PartitionReader = self._transport.reader()

    @property
    def metrics_port(self) -> int:
        """The port /metrics is served on (the chosen one when settings asked for port 0)."""
        return self.ops.port if self.ops is not None else self.settings.metrics_port

    # -- loop -------------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Process until stopped (or caught up); raises DeliveryError when records were lost on the way.

        Whatever ends the loop, :meth:`shutdown` runs; an exception from the loop propagates unchanged, and
        a delivery failure found by the final checkpoint is raised after the clients are closed.
        """
        try:
            self._loop()
        except BaseException:
            self._shutdown()
            raise
        self.shutdown()
        return self.summary

    def _loop(self) -> None:
        s = self.settings
        next_housekeeping = 0.0
        while not self._stop.is_set():
            self.health.tick()
            self._restore_pending()
            self.backpressure.update(self.sink.pending_bytes)
            records = self.source.poll(0 if self.health.restoring else _POLL_MS, s.max_poll_records)
            if self.checkpointer.poisoned is not None:  # a delivery failed during a rebalance inside poll()
                msg = f"stopping: {self.checkpointer.poisoned}"
                raise DeliveryError(msg)
            if records:
                self._handle(records)
                self._trimmer.after_batch()
            if self.checkpointer.due(s.checkpoint_interval_ms / 1000, s.checkpoint_records):
                self._checkpoint()
            if time.monotonic() >= next_housekeeping:
                self._housekeeping()
                next_housekeeping = time.monotonic() + _HOUSEKEEPING_S
            if s.until_caught_up and self._caught_up():
                break

    def request_stop(self) -> None:
        """Finish the current batch, then checkpoint and leave (safe from a signal handler)."""
        self._stop.set()

    def _handle(self, records: Sequence[Any]) -> None:
        now = time.monotonic()
        if not self.summary.records:
            self.summary.first_record_s = now
        with self.checkpointer.batch():  # stepped but unfinished: no snapshot or commit may follow
            outcome = self.pipeline.handle(records)
        self.summary.last_record_s = time.monotonic()
        self.summary.records += outcome.records
        self.summary.processed += outcome.processed
        self.summary.anomalies += len(outcome.anomalies)
        self.summary.dead_lettered += outcome.dead_lettered
        for partition, offset in outcome.next_offsets.items():
            self.checkpointer.advance(partition, offset, outcome.counts[partition])
        if self._on_batch is not None:
            self._on_batch(outcome)

    def _checkpoint(self) -> None:
        """Survive what can be retried; let a lost record end the process so a restart replays it.

        * commit failed (a rebalance): snapshots are written, the next owner skips what they reflect;
        * flush timed out (broker unreachable): not ready, nothing committed, retried at the next checkpoint
          while the producer keeps retrying in the background;
        * delivery failed for good (DeliveryError, a BrokerError): raised, so offsets are never committed
          past a record whose event was lost.
        """
        try:
            self.checkpointer.run(rewrite=True)
        except RebalancedError as exc:
            log.warning("offset commit failed (%s); snapshots are in the changelog, so the next owner of these "
                        "partitions skips what they already reflect", exc,
                        extra={"event": "commit_failed", "topic": self.settings.input_topic, "reason": "rebalanced"})
            return
        except DeliveryError:
            raise
        except BrokerError as exc:
            self.health.broker_ok = False
            log.error("checkpoint postponed, broker unreachable: %s (retrying; nothing is committed)", exc,
                      extra={"event": "broker_unreachable", "reason": "checkpoint"})
            self.checkpointer.last_run_s = time.monotonic()  # back off one interval before the next attempt
            return
        if not self.health.broker_ok:
            log.info("broker reachable again: checkpoint completed", extra={"event": "broker_reachable"})
        self.health.broker_ok = True

    def _restore_pending(self) -> None:
        """Restore newly assigned partitions a slice at a time; each is resumed as soon as it is restored."""
        pending = self.source.assignment.to_restore
        for partition in sorted(pending - self._restorer.partitions):
            self._restorer.add(partition, self.source.committed(partition))
        if not pending:
            return
        self.health.restoring = True
        for stats in self._restorer.step(_RESTORE_SLICE_S):
            self.metrics.restore_duration.observe(stats.seconds)
            self.metrics.keys_restored.inc(stats.keys)
            log.info("restored %s[%d]: %d keys in memory, %d idle, %d expired, from %d records read in %.3fs "
                     "(%s; %d model changed, %d corrupt)", self.settings.changelog_topic, stats.partition,
                     stats.keys, stats.idle, stats.expired, stats.records, stats.seconds, stats.why,
                     stats.model_changed, stats.corrupt,
                     extra={"event": "restored", "topic": self.settings.changelog_topic, "partition": stats.partition,
                            "count": stats.keys, "seconds": round(stats.seconds, 3), "reason": stats.why})
            self.checkpointer.restored(stats.partition, stats.committed)
            pending.discard(stats.partition)
            self.source.resume({stats.partition})
        self.health.restoring = bool(pending)
        self.health.assigned = bool(self.source.assignment.assigned)

    def _housekeeping(self) -> None:
        s = self.settings
        if s.key_ttl_ms > 0:
            evicted = self.store.evict_idle(time.monotonic(), s.key_ttl_ms / 1000)
            if evicted:
                self.metrics.keys_evicted.inc(evicted)
        self.metrics.active_keys.set(len(self.store.table))
        for partition, lag in self.source.lag(self.checkpointer.positions).items():
            self.metrics.consumer_lag.labels(s.input_topic, str(partition)).set(lag)

    def _caught_up(self) -> bool:
        """Every partition of the input topic is processed to its end: ours by us, the others by the group.

        Owning every partition is not required (several members may run until caught up), but a member
        must not stop while a partition is held by a member that died: its committed offset shows it.
        """
        assigned = self.source.assignment.assigned
        if not self._joined or self.source.assignment.to_restore:
            return False  # the group's coordinator is busy with our join: no offset fetches meanwhile
        lag = self.source.lag(self.checkpointer.positions)
        if set(lag) != assigned or any(v > 0 for v in lag.values()):
            return False
        now = time.monotonic()
        if now < self._next_group_check:
            return False
        self._next_group_check = now + _HOUSEKEEPING_S
        try:
            for partition in sorted(self.source.partitions() - assigned):
                end = partition_end(self._reader, self.settings.input_topic, partition)
                if (self.source.committed(partition) or 0) < end:
                    return False
        except BrokerError as exc:
            log.warning("cannot tell whether the group caught up yet: %s", exc,
                        extra={"event": "broker_unreachable", "reason": "caught_up_check"})
            return False
        return True

    # -- rebalance callbacks (IO thread, main loop blocked in poll) ---------------------------------------
    def _on_assigned(self, partitions: set[int]) -> None:
        self._joined, self._joining = True, False
        self.metrics.rebalances.labels("assigned").inc()
        self.metrics.assigned_partitions.set(len(self.source.assignment.assigned))
        self.health.assigned = bool(self.source.assignment.assigned)
        log.info("assigned partitions %s of %s", sorted(partitions), self.settings.input_topic,
                 extra={"event": "assigned", "topic": self.settings.input_topic, "partitions": sorted(partitions)})

    def _on_revoked(self, partitions: set[int], lost: bool) -> None:
        self._joined, self._joining = False, not self._closing  # kafka-python revokes as a join begins
        self.metrics.rebalances.labels("lost" if lost else "revoked").inc()
        if not lost and partitions and self.checkpointer.poisoned is None:
            try:  # the new owner restores from the changelog: our snapshots should be there first
                self.checkpointer.run(partitions, blocking_commit=False, budget_s=self._revoke_budget_s)
            except DeliveryError:
                pass  # poisoned: the main loop raises it as soon as poll() returns
            except BrokerError:
                log.exception("checkpoint on revoke failed; the new owner replays from the last commit",
                              extra={"event": "commit_failed", "topic": self.settings.input_topic,
                                     "partitions": sorted(partitions), "reason": "broker"})
        for partition in partitions:
            self._restorer.drop(partition)
            self.store.forget_partition(partition)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(self.settings.input_topic, str(partition))
        self.checkpointer.forget(partitions)
        self.metrics.assigned_partitions.set(len(self.source.assignment.assigned))
        self.health.assigned = bool(self.source.assignment.assigned)
        log.info("%s partitions %s of %s", "lost" if lost else "revoked", sorted(partitions), self.settings.input_topic,
                 extra={"event": "lost" if lost else "revoked", "topic": self.settings.input_topic,
                        "partitions": sorted(partitions)})

    # -- shutdown ---------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Checkpoint what was processed, leave the group, stop the producer and the HTTP server.

        Raises DeliveryError (after closing everything) if records were lost: nothing was committed past them.
        """
        lost = self._shutdown()
        if lost is not None:
            raise lost

    def _finish_join(self) -> bool:
        """Let a group join we are in the middle of complete; False if it did not (then do not leave).

        Leaving while our own join is pending can leave the group without a leader that ever syncs: the test
        broker (Tansu) keeps a departed member as the leader of a forming group, and every later member
        then fails its SyncGroup forever. After the join completes the leave is clean; if it does not
        complete in time, the member closes without leaving and the broker drops it when its session
        expires. Nothing is processed here: a join that completes pauses its new partitions.
        """
        # long enough for a dead leader's session to expire and the join to finish, within half the grace
        limit_ms = min(2 * self.settings.session_timeout_ms, self.settings.shutdown_grace_ms / 2)
        deadline = time.monotonic() + limit_ms / 1000
        while self._joining and time.monotonic() < deadline:
            try:
                self.source.poll(100, 1)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.warning("could not finish the group join before leaving: %s", exc)
                break
        if self._joining:
            log.warning("stopping in the middle of a group join: not leaving the group (the broker drops this "
                        "member when its %d ms session expires)", self.settings.session_timeout_ms)
        return not self._joining

    def _shutdown(self) -> DeliveryError | None:
        lost: DeliveryError | None = None
        if self.ops is not None or not self._closing:
            try:
                self.checkpointer.run()
            except DeliveryError as exc:
                lost = exc
                log.error("no final checkpoint: %s; the next start replays from the last commit", exc)
            except Exception:
                log.exception("final checkpoint failed; the next start replays from the last commit")
            self._close_clients(leave=self._finish_join())
        return lost

    def _close_clients(self, *, leave: bool) -> None:
        """Close whatever Kafka clients and the ops server exist (also after a failed construction)."""
        self._closing = True
        closers: list[Callable[[], None]] = []
        if (source := getattr(self, "source", None)) is not None:
            closers.append(lambda: source.close(leave=leave))
        if (reader := getattr(self, "_reader", None)) is not None:
            closers.append(reader.close)
        if (sink := getattr(self, "sink", None)) is not None:
            closers.append(lambda: sink.close(timeout_s=5.0))
        for close in closers:
            try:  # a broker that is gone must not turn a clean stop into a crash
                close()
            except Exception as exc:  # noqa: BLE001 - clients raise assorted errors on close
                log.warning("closing a Kafka client failed: %s", exc)
        if self.ops is not None:
            self.ops.stop()
            self.ops = None

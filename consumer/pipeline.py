"""One polled batch through the whole path: decode -> dead-letter -> step + score -> events -> metrics.

Kept apart from the service loop so it can be driven with any records and any :class:`Sink` (see
``rnnwatch.consumer.testing``). Per-record Python work is limited to decoding and to the rare records that
become events or dead letters; everything else is per batch or per wave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnwatch.consumer.changelog import StateStore
from rnnwatch.consumer.contract import StepSignature
from rnnwatch.consumer.crashpoints import maybe_crash
from rnnwatch.consumer.decoder import Rejected, SourceRecord, TickDecoder
from rnnwatch.consumer.events import AnomalyEvent, DeadLetter, event_id
from rnnwatch.consumer.kafka.polled import Polled
from rnnwatch.consumer.logs import RateLimitedLog
from rnnwatch.consumer.metrics import Metrics
from rnnwatch.consumer.refusals import RefusalReport
from rnnwatch.consumer.runner import StepResults, StepRunner
from rnnwatch.consumer.sink import Sink
from rnnwatch.consumer.types import PROCESSED, STATUS, TickBatch

__all__ = ["BatchOutcome", "Pipeline"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BatchOutcome:
    records: int
    processed: int
    anomalies: list[AnomalyEvent]
    dead_lettered: int
    next_offsets: dict[int, int]  # partition -> offset after the last record of the batch
    counts: dict[int, int]  # partition -> records of the batch


class Pipeline:
    def __init__(self, *, signature: StepSignature, runner: StepRunner, decoder: TickDecoder, sink: Sink,
                 metrics: Metrics, topic: str, source_uri: str, store: StateStore | None = None,
                 on_anomaly: Callable[[AnomalyEvent], None] | None = None) -> None:
        self.signature = signature
        self.runner = runner
        self.decoder = decoder
        self.sink = sink
        self.metrics = metrics
        self.topic = topic
        self.source_uri = source_uri
        self.store = store
        self.on_anomaly = on_anomaly
        self._model = {"name": signature.name, "version": signature.version, "sha256": signature.sha256}
        self._model_labels = (signature.name, signature.version)
        self._reset_log = RateLimitedLog(log)
        self._refusals = RefusalReport(topic, decoder.fields)

    def handle(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        """One poll (best as a transport's :class:`Polled` columns; any record lookalikes are turned into them)."""
        start = time.perf_counter()
        now_s = time.time()
        polled = Polled.of(records, self.topic)
        n = len(polled)
        self.metrics.records_consumed.inc(n)
        batch, kept, rejected = self.decoder.decode(polled, int(now_s * 1000))
        for rej in rejected:
            self._dead_letter(polled[rej.index], rej)
        self._refusals.report(polled, rejected)
        if self.store is not None and len(batch):
            self._revive(batch.partition, batch.keys)
        results = self.runner.process(batch)
        maybe_crash("batch.before_events")
        events = self._anomalies(batch, results)
        maybe_crash("batch.after_events")
        self._observe(polled, kept, results, start, now_s)
        next_offsets, counts = polled.positions()
        processed = int((results.status == PROCESSED).sum())
        return BatchOutcome(n, processed, events, len(rejected), next_offsets, counts)

    def _revive(self, partitions: np.ndarray, keys: list[bytes]) -> None:
        if self.store is None or not self.store.evicted:
            return
        table = self.store.table
        for p in np.unique(partitions).tolist():
            mine = [k for k, kp in zip(keys, partitions.tolist(), strict=True) if kp == p]
            unknown = {k for k, row in zip(mine, table.rows_of(p, mine).tolist(), strict=True) if row < 0}
            if unknown:
                self.store.revive(p, sorted(unknown))

    def _dead_letter(self, rec: SourceRecord, rej: Rejected) -> None:
        headers = list(getattr(rec, "headers", None) or [])  # the letter copies what fits (events.DLQ_*_BYTES)
        self.sink.send_dead_letter(DeadLetter(self.topic, rec.partition, rec.offset, rec.timestamp, rec.key,
                                              rec.value, headers, rej.reason, rej.detail))
        self.metrics.records_failed.labels(rej.reason).inc()
        self.metrics.records_dead_lettered.inc()

    def _anomalies(self, batch: TickBatch, results: StepResults) -> list[AnomalyEvent]:
        """One event per incident opening (an anomaly) and per incident update; none for the rest of it."""
        hits = np.flatnonzero(results.is_anomaly | results.is_update)
        if hits.size == 0:
            return []
        scorer = self.runner.scorer
        severities = scorer.severity(results.tail[hits])
        features = self.signature.feature_names
        threshold, threshold_surprise = scorer.config.score_threshold, scorer.threshold_surprise
        events = []
        for j, severity in zip(hits.tolist(), severities, strict=True):
            partition = int(batch.partition[j])
            update = bool(results.is_update[j])
            event = AnomalyEvent(
                source=self.source_uri, key=batch.keys[j], event_ms=int(batch.event_ms[j]),
                score=round(float(results.score[j]), 9), threshold=threshold, severity=severity,
                features=features, actual=_floats(batch.x[j]), expected=_floats(results.expected[j]),
                residual=_floats(results.residual[j]), model=self._model, topic=self.topic,
                partition=partition, offset=int(batch.offset[j]), timestamp_ms=int(batch.timestamp_ms[j]),
                surprise=round(float(results.surprise[j]), 6), threshold_surprise=round(threshold_surprise, 6),
                incident=event_id(self.topic, partition, int(results.incident[j])), incident_update=update,
            )
            self.sink.send_event(event)
            if not update:  # an incident counts once, not once per update event
                self.metrics.anomalies.labels(severity, *self._model_labels).inc()
            if self.on_anomaly is not None:
                self.on_anomaly(event)
            events.append(event)
        return events

    def _observe(self, records: Polled, kept: np.ndarray, results: StepResults, start: float,
                 now_s: float) -> None:
        m = self.metrics
        status = results.status
        processed = int((status == PROCESSED).sum())
        m.records_processed.inc(processed)
        for code, name in STATUS.items():
            if code != PROCESSED:
                count = int((status == code).sum())
                if count:
                    m.records_skipped.labels(name).inc(count)
        scored = results.surprise[status == PROCESSED]
        m.surprise.observe_many(scored[np.isfinite(scored)])
        alarms = int(results.alarm.sum())
        if alarms:
            m.alarms.inc(alarms)
        gaps = int(results.gap.sum())
        if gaps:
            m.gaps.inc(gaps)
        if results.reset.any():
            self._report_resets(records, kept, results.reset)
        m.step_duration.observe_many(np.asarray(results.step_seconds))
        m.step_batch_keys.observe_many(np.asarray(results.wave_keys, dtype=np.float64))
        m.record_processing.observe(time.perf_counter() - start, count=len(records))
        if len(records):
            m.record_age.observe_many(np.maximum(now_s - records.timestamp / 1000.0, 0.0))
        m.active_keys.set(len(self.runner.table))


    def _report_resets(self, records: Sequence[SourceRecord], kept: np.ndarray, reset: np.ndarray) -> None:
        where = [records[int(kept[j])] for j in np.flatnonzero(reset).tolist()]
        self.metrics.state_resets.labels("non_finite").inc(len(where))
        self._reset_log.warning(
            "the model's output was non-finite (NaN or inf) for %d key(s), e.g. %r at %s[%d]@%d: their state "
            "was reset and they re-warm; check the model for overflow on such inputs", len(where), where[0].key,
            self.topic, where[0].partition, where[0].offset,
            extra={"event": "state_reset", "topic": self.topic,
                   "partition": where[0].partition, "offset": where[0].offset,
                   "key": where[0].key, "reason": "non_finite", "count": len(where)})


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).tolist()]

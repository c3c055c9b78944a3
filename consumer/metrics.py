"""Prometheus metrics (DESIGN §6), all created on a registry passed in: tests use a fresh one.

Names carry the ``rnnwatch_`` prefix and base units; counters end in ``_total``; no label ever holds a
message key. Per-record latencies are observed in bulk (:class:`BulkHistogram`) because a Python call
per record per histogram would cost more than the model step itself at 100k records/s.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from rnnwatch.consumer.types import PROCESSED, PRODUCE_ERROR_KINDS, REASONS, REBALANCE_KINDS, RESET_REASONS, STATUS

__all__ = ["LATENCY_BUCKETS_S", "AGE_BUCKETS_S", "BulkHistogram", "Metrics"]

LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
AGE_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
KEYS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
SURPRISE_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 50.0)  # -log10(tail)


class BulkHistogram(Collector):
    """A label-less histogram that takes a whole numpy array per call (one searchsorted, one bincount)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self._name = name
        self._doc = documentation
        self._upper = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        idx = np.searchsorted(self._upper, values, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def observe(self, value: float, count: int = 1) -> None:
        """Add ``count`` observations of the same value (e.g. one batch latency for each of its records)."""
        idx = int(np.searchsorted(self._upper, value, side="left"))
        with self._lock:
            self._counts[idx] += count
            self._sum += value * count

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(_fmt(b), int(c)) for b, c in zip(self._upper, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", int(cumulative[-1])))
        yield HistogramMetricFamily(self._name, self._doc, buckets=buckets, sum_value=total)

    def describe(self) -> Iterable[Metric]:
        yield HistogramMetricFamily(self._name, self._doc, buckets=[("+Inf", 0)], sum_value=0.0)


def _fmt(bound: float) -> str:
    return repr(float(bound))


class Metrics:
    """Every metric rnnwatch exports; one instance per process (or per test) on the given registry."""

    def __init__(self, registry: CollectorRegistry, *, process_metrics: bool = True) -> None:
        r = registry
        self.registry = registry
        if process_metrics:
            ProcessCollector(registry=r)
        self.records_consumed = Counter(
            "rnnwatch_records_consumed", "Records fetched from the input topic.", registry=r
        )
        self.records_processed = Counter(
            "rnnwatch_records_processed", "Records stepped through the model and scored.", registry=r
        )
        self.records_failed = Counter(
            "rnnwatch_records_failed", "Records that could not be used, by reason.", ["reason"], registry=r
        )
        self.records_dead_lettered = Counter(
            "rnnwatch_records_dead_lettered", "Records written to the dead-letter topic.", registry=r
        )
        self.records_skipped = Counter(
            "rnnwatch_records_skipped",
            "Valid records not applied: duplicate or out-of-order event time, or already in restored state.",
            ["reason"],
            registry=r,
        )
        self.gaps = Counter(
            "rnnwatch_gaps", "Event-time gaps longer than the configured gap, per key step.", registry=r
        )
        self.anomalies = Counter(
            "rnnwatch_anomalies", "Incidents opened (one per incident, update events not counted), by severity "
            "and model (labelled like rnnwatch_model_info).",
            ["severity", "name", "version"], registry=r
        )
        self.surprise = BulkHistogram(
            "rnnwatch_score_surprise", "Surprise of every scored record, -log10 of its tail probability (6 = 1e-6): "
            "a record continuing an incident reports only what beats its peak, so the rate above the threshold is the "
            "rate of incidents and new peaks (rnnwatch_alarms_total counts every alarm row); below the threshold a "
            "record reports 0 unless it is its key's high of the incident gap's last steps.", SURPRISE_BUCKETS, r,
        )
        self.alarms = Counter(
            "rnnwatch_alarms", "Records over the threshold (every point of an incident; anomalies count incidents).",
            registry=r,
        )
        self.events_produced = Counter(
            "rnnwatch_events_produced", "Anomaly events acknowledged by the broker.", registry=r
        )
        self.produce_errors = Counter(
            "rnnwatch_produce_errors", "Records the producer failed to deliver, by topic kind.", ["kind"], registry=r
        )
        self.step_duration = BulkHistogram(
            "rnnwatch_step_duration_seconds", "Duration of one onnxruntime step call (one wave of keys).",
            LATENCY_BUCKETS_S, r,
        )
        self.step_batch_keys = BulkHistogram(
            "rnnwatch_step_batch_keys", "Keys stepped together in one onnxruntime call.", KEYS_BUCKETS, r
        )
        self.record_processing = BulkHistogram(
            "rnnwatch_record_processing_seconds",
            "Time a record spends in rnnwatch, from the poll that returned it to its scoring being done.",
            LATENCY_BUCKETS_S, r,
        )
        self.record_age = BulkHistogram(
            "rnnwatch_record_age_seconds", "Wall-clock now minus the record's Kafka timestamp, at scoring.",
            AGE_BUCKETS_S, r,
        )
        self.consumer_lag = Gauge(
            "rnnwatch_consumer_lag_records", "Highwater minus position, per assigned input partition.",
            ["topic", "partition"], registry=r,
        )
        self.commit_duration = Histogram(
            "rnnwatch_commit_duration_seconds", "Duration of an offset commit.", buckets=LATENCY_BUCKETS_S, registry=r
        )
        self.commit_failures = Counter("rnnwatch_commit_failures", "Offset commits that failed.", registry=r)
        self.checkpoint_duration = Histogram(
            "rnnwatch_checkpoint_duration_seconds",
            "Duration of a checkpoint: flush events, write snapshots, flush, commit.",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.snapshots_written = Counter(
            "rnnwatch_state_snapshots_written", "Per-key state snapshots written to the changelog.", registry=r
        )
        self.restore_duration = Histogram(
            "rnnwatch_restore_duration_seconds", "Duration of restoring one partition's state from the changelog.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r,
        )
        self.keys_restored = Counter("rnnwatch_state_keys_restored", "Keys restored from the changelog.", registry=r)
        self.rebalances = Counter(
            "rnnwatch_rebalances", "Consumer-group rebalance callbacks, by kind.", ["kind"], registry=r
        )
        self.assigned_partitions = Gauge(
            "rnnwatch_assigned_partitions", "Input partitions currently assigned to this process.", registry=r
        )
        self.active_keys = Gauge("rnnwatch_active_keys", "Keys with state held in memory.", registry=r)
        self.state_resets = Counter(
            "rnnwatch_state_resets",
            "Keys whose state was reset, by reason (model_changed: another model, state layout or input topic; "
            "corrupt_snapshot; non_finite: the model's output for the key was NaN or infinite).",
            ["reason"], registry=r
        )
        self.keys_evicted = Counter("rnnwatch_keys_evicted", "Idle keys evicted from memory (TTL).", registry=r)
        self.producer_pending_bytes = Gauge(
            "rnnwatch_producer_pending_bytes", "Bytes sent to the broker and not yet acknowledged.", registry=r
        )
        self.consumption_paused = Gauge(
            "rnnwatch_consumption_paused", "1 while input is paused because too much output is unacknowledged.",
            registry=r,
        )
        self.backpressure_pauses = Counter(
            "rnnwatch_backpressure_pauses", "Times input was paused for unacknowledged output.", registry=r
        )
        self.keys_expired = Counter(
            "rnnwatch_keys_expired", "Idle keys forgotten, their snapshot deleted (state retention).", registry=r
        )
        self.ready = Gauge("rnnwatch_ready", "1 when the model is loaded and partitions are assigned.", registry=r)
        self.model_info = Gauge(
            "rnnwatch_model_info", "The loaded step model (value is always 1).",
            ["name", "version", "architecture", "sha256"], registry=r,
        )
        self.build_info = Gauge(
            "rnnwatch_build_info", "rnnwatch build (value is always 1).",
            ["version", "python", "onnxruntime"], registry=r,
        )
        self.build_info.labels(_own_version(), platform.python_version(), _ort_version()).set(1)
        self._initialise_children()

    def _initialise_children(self) -> None:
        """Expose every known label value at 0 from the start, so rates and alerts see a series, not a gap."""
        for reason in REASONS:
            self.records_failed.labels(reason)
        for code, name in STATUS.items():
            if code != PROCESSED:
                self.records_skipped.labels(name)
        for reset in RESET_REASONS:
            self.state_resets.labels(reset)
        for kind in REBALANCE_KINDS:
            self.rebalances.labels(kind)
        for error in PRODUCE_ERROR_KINDS:
            self.produce_errors.labels(error)

    def set_model(self, name: str, version: str, architecture: str, sha256: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, architecture, sha256[:12]).set(1)
        from rnnwatch.consumer.scoring import SEVERITIES

        for severity in SEVERITIES:
            self.anomalies.labels(severity, name, version)


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnnwatch")
    except PackageNotFoundError:
        return "unknown"


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)

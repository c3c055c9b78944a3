"""`run`'s terminal status line, computed from the service's own metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from rnnwatch.consumer.cli.status_line import snapshot, status_line
from rnnwatch.consumer.metrics import Metrics


def test_status_line_reads_rate_lag_keys_anomalies_and_dead_letters() -> None:
    m = Metrics(CollectorRegistry(), process_metrics=False)
    m.set_model("m", "1", "gru", "ab" * 32)
    before = snapshot(m.registry, 100.0)
    m.records_processed.inc(2000)
    m.consumer_lag.labels("t", "0").set(40)
    m.consumer_lag.labels("t", "1").set(2)
    m.active_keys.set(512)
    m.anomalies.labels("major", "m", "1").inc(3)
    m.records_dead_lettered.inc(7)
    line = status_line(before, snapshot(m.registry, 110.0))
    assert line == "200 rec/s  lag 42  keys 512  anomalies 3 (+3)  dead letters 7"

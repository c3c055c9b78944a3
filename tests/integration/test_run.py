"""`rnnwatch run` against a real Kafka-protocol broker: events, dead letters, metrics, restarts, SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rnnwatch.consumer.demo.broker import EmbeddedBroker, free_port
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import load_settings
from tests.integration.helpers import committed, price_feed, produce, read_all

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "rnnwatch.consumer.cli"]
MALFORMED: list[tuple[bytes | None, bytes]] = [
    (b"S001", b"{not json"),
    (b"S002", orjson.dumps({"symbol": "S002", "ts": 1_600_000_000, "price": -3.0})),
    (b"S003", orjson.dumps({"symbol": "S003", "ts": 1_600_000_000})),
]


def _run_args(broker: EmbeddedBroker, topic: str, group: str, model: Path, *extra: str) -> list[str]:
    return [*CLI, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", topic, "--group-id", group,
            "--auto-offset-reset", "earliest",
            "--model", str(model), "--metrics-port", "0", "--session-timeout-ms", "6000", *extra]


def test_until_caught_up_events_dead_letters_and_restart(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                                         bundled_model: Path, transport: str) -> None:
    topic = topic_factory(partitions=3)
    feed = price_feed(20, 120, shock=(7, 90))
    produce(broker.bootstrap_servers, topic, feed[:1200] + MALFORMED + feed[1200:])
    group = f"{topic}-g1"  # its own changelog: runs of this test (one per transport) must not share state
    out = subprocess.run(_run_args(broker, topic, group, bundled_model, "--until-caught-up", "--transport", transport),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["records"] == len(feed) + 3
    assert summary["dead_lettered"] == 3
    assert summary["processed"] == len(feed)

    events = read_all(broker.bootstrap_servers, f"{topic}.anomalies")
    assert len(events) == summary["anomalies"] >= 1
    shock = [e for e in events if e.key == b"S007" and orjson.loads(e.value)["event_time"].startswith("2020-09-13T13:")]
    assert shock, [orjson.loads(e.value) for e in events]
    body = orjson.loads(shock[0].value)
    headers = dict(shock[0].headers)
    assert headers["ce_id"].decode() == f"{topic}-{body['input']['partition']}-{body['input']['offset']}"
    assert headers["ce_type"] == b"io.rnnwatch.anomaly.v1"
    assert body["actual"]["price"] > body["expected"]["price"] * 1.2
    assert body["severity"] in {"minor", "major", "critical"}
    assert body["model"]["name"] == "prices-gru"

    letters = read_all(broker.bootstrap_servers, f"{topic}.dlq")
    reasons = {dict(r.headers)["rnnwatch-reason"]: r for r in letters}
    assert set(reasons) == {b"invalid_json", b"out_of_domain", b"missing_field"}
    assert reasons[b"invalid_json"].value == b"{not json"
    assert dict(reasons[b"invalid_json"].headers)["rnnwatch-original-topic"] == topic.encode()

    offsets = committed(broker.bootstrap_servers, group, topic)
    assert sum(v or 0 for v in offsets.values()) == len(feed) + 3

    again = subprocess.run(_run_args(broker, topic, group, bundled_model, "--until-caught-up", "--transport",
                                     transport),
                           capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["records"] == 0
    restored = sum(int(n) for n in re.findall(r"restored \S+\[\d+\]: (\d+) keys", again.stderr))
    assert restored == 20


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


def _scrape(port: int) -> dict[str, float]:
    text = _get(port, "/metrics")[1]
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{label}}}"] = sample.value
    return values


def test_metrics_health_and_restored_state(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                           bundled_model: Path) -> None:
    topic = topic_factory(partitions=2)
    feed = price_feed(10, 60, shock=(3, 50), seed=1)
    produce(broker.bootstrap_servers, topic, feed + MALFORMED)
    settings = load_settings({"bootstrap_servers": broker.bootstrap_servers, "input_topic": topic,
                              "auto_offset_reset": "earliest", "group_id": "gm",
                              "model": str(bundled_model), "metrics_port": "0",
                              "metrics_host": "127.0.0.1", "session_timeout_ms": "6000"}, env={})
    service = Service(settings).start()
    port = service.metrics_port
    assert _get(port, "/healthz")[0] == 200
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and service.summary.records < len(feed) + 3:
        time.sleep(0.2)
    assert _get(port, "/readyz") == (200, "ok\n")
    m = _scrape(port)
    service.request_stop()
    thread.join(timeout=30)
    events = read_all(broker.bootstrap_servers, f"{topic}.anomalies")
    assert m["rnnwatch_records_consumed_total{}"] == len(feed) + 3
    assert m["rnnwatch_records_processed_total{}"] == len(feed)
    assert m["rnnwatch_records_dead_lettered_total{}"] == 3
    assert m["rnnwatch_records_failed_total{reason=invalid_json}"] == 1
    anomalies = sum(v for k, v in m.items() if k.startswith("rnnwatch_anomalies_total"))
    assert anomalies == len(events) >= 1
    assert m["rnnwatch_assigned_partitions{}"] == 2
    assert m["rnnwatch_active_keys{}"] == 10
    assert m["rnnwatch_ready{}"] == 1
    assert m["rnnwatch_step_duration_seconds_count{}"] >= 60
    assert any(k.startswith("rnnwatch_model_info{") and "name=prices-gru" in k for k in m)
    assert "process_resident_memory_bytes{}" in m


def test_sigterm_finishes_checkpoints_and_exits_cleanly(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                                       bundled_model: Path) -> None:
    topic = topic_factory(partitions=2)
    feed = price_feed(5, 40, seed=2)
    produce(broker.bootstrap_servers, topic, feed)
    port = free_port()
    args = _run_args(broker, topic, "gs", bundled_model, "--checkpoint-interval-ms", "600000")
    args[args.index("--metrics-port") + 1] = str(port)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    consumed = 0.0
    while time.monotonic() < deadline and consumed < len(feed):
        time.sleep(0.5)
        try:
            consumed = _scrape(port).get("rnnwatch_records_consumed_total{}", 0.0)
        except OSError:
            continue
    assert consumed == len(feed)
    assert sum(v or 0 for v in committed(broker.bootstrap_servers, "gs", topic).values()) == 0  # interval not hit
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err
    assert sum(v or 0 for v in committed(broker.bootstrap_servers, "gs", topic).values()) == len(feed)



def test_sigterm_past_the_grace_period_exits_non_zero_without_committing(ewma_path: Path) -> None:
    """The broker stops answering (frozen with SIGSTOP) after the records were processed: the final checkpoint
    cannot finish, so past --shutdown-grace-ms the process exits 1 and nothing was committed."""
    with EmbeddedBroker() as own:  # this test freezes its broker: not the shared one
        own.create_topics(["ticks"], partitions=1)
        feed = price_feed(3, 20, seed=4)
        produce(own.bootstrap_servers, "ticks", feed)
        port = free_port()
        args = _run_args(own, "ticks", "gg", ewma_path, "--checkpoint-interval-ms", "600000",
                         "--shutdown-grace-ms", "1500")
        args[args.index("--metrics-port") + 1] = str(port)
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            consumed = 0.0
            while time.monotonic() < deadline and consumed < len(feed):
                time.sleep(0.3)
                try:
                    consumed = _scrape(port).get("rnnwatch_records_consumed_total{}", 0.0)
                except OSError:
                    continue
            assert consumed == len(feed)
            own.send_signal(signal.SIGSTOP)
            try:
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=60)
            finally:
                own.send_signal(signal.SIGCONT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 1, err[-2000:]
        assert "did not finish within the 1.5s grace period" in err
        assert sum(v or 0 for v in committed(own.bootstrap_servers, "gg", "ticks").values()) == 0


def test_until_caught_up_ends_on_partitions_with_nothing_to_read(broker: EmbeddedBroker,
                                                                  topic_factory: Callable[..., str],
                                                                  bundled_model: Path, transport: str) -> None:
    """A backfill over a topic whose partitions are empty (or some of them) ends instead of waiting forever."""
    topic = topic_factory(partitions=3)
    produce(broker.bootstrap_servers, topic, price_feed(1, 30))  # one key: one partition holds it all
    out = subprocess.run(_run_args(broker, topic, f"{topic}-g", bundled_model, "--until-caught-up", "--transport",
                                   transport), capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["records"] == 30
    empty = topic_factory(partitions=2)
    out = subprocess.run(_run_args(broker, empty, f"{empty}-g", bundled_model, "--until-caught-up", "--transport",
                                   transport), capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["records"] == 0

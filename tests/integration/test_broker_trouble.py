"""The broker goes away mid-run: checkpoints are postponed (nothing committed), /readyz says so, no crash.

Tansu keeps its data only in memory, so "the broker comes back with the data" can only be shown on real
Kafka; what is checked here is the detector's side: it notices, reports not-ready, and keeps retrying.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.errors import DeliveryError
from rnnwatch.consumer.kafka import (
    Admin,
    Delivered,
    GroupSource,
    Headers,
    KafkaConfig,
    PartitionReader,
    Producer,
    open_transport,
)
from rnnwatch.consumer.logs import _JsonFormatter
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import Settings, load_settings
from tests.integration.helpers import committed, price_feed, produce, read_all

pytestmark = pytest.mark.integration


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_broker_lost_mid_run_makes_the_detector_unready_not_dead(ewma_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with EmbeddedBroker() as own:  # this test stops its broker: not the shared one
        own.create_topics(["ticks"], partitions=1)
        produce(own.bootstrap_servers, "ticks", price_feed(3, 30))
        service = Service(load_settings({
            "bootstrap_servers": own.bootstrap_servers, "input_topic": "ticks",
            "auto_offset_reset": "earliest", "group_id": "g",
            "model": str(ewma_path), "metrics_port": "0", "metrics_host": "127.0.0.1", "session_timeout_ms": "6000",
            "checkpoint_interval_ms": "12000", "shutdown_grace_ms": "6000"}, env={})).start()
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (service.summary.processed == 90 and _readyz(
                service.metrics_port)[0] == 200):
            time.sleep(0.2)
        assert service.summary.processed == 90
        produce(own.bootstrap_servers, "ticks", price_feed(3, 35)[90:])  # state changes not yet checkpointed
        while time.monotonic() < deadline and service.summary.processed < 105:
            time.sleep(0.1)
        own.stop()
        while time.monotonic() < deadline and _readyz(service.metrics_port)[0] == 200:
            time.sleep(0.5)
        status, detail = _readyz(service.metrics_port)
        assert (status, detail.strip()) == (503, "broker unreachable: checkpoints are postponed")
        trouble = [json.loads(_JsonFormatter().format(r)) for r in caplog.records
                   if getattr(r, "event", None) == "broker_unreachable"]
        assert trouble and trouble[0]["reason"] == "checkpoint" and trouble[0]["level"] == "ERROR"  # JSON fields
        assert thread.is_alive()  # still running, retrying
        live = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/healthz", timeout=5)
        assert live.status == 200
        live.close()
        service.request_stop()
        thread.join(timeout=90)


class _FailingEvents:
    """The real producer, except that every anomaly event fails as an expired batch does."""

    def __init__(self, producer: Producer, output_topic: str) -> None:
        self.producer, self.output_topic = producer, output_topic

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int | None,
             on_delivery: Delivered) -> None:
        if topic != self.output_topic:
            self.producer.send(topic, key, value, headers, partition, on_delivery)
            return
        on_delivery(None, TimeoutError(f"Expiring 1 record(s) for {topic}: 120000 ms has passed"))

    def serve(self) -> None:
        self.producer.serve()

    def flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout_s)

    def close(self, timeout_s: float) -> None:
        self.producer.close(timeout_s)


class _LossyTransport:
    """The settings' transport, with a producer that loses every anomaly event."""

    def __init__(self, settings: Settings) -> None:
        self.real = open_transport(KafkaConfig.from_settings(settings))
        self.name, self.output_topic = self.real.name, settings.output_topic

    def source(self, topic: str) -> GroupSource:
        return self.real.source(topic)

    def producer(self) -> Producer:
        return _FailingEvents(self.real.producer(), self.output_topic)

    def reader(self) -> PartitionReader:
        return self.real.reader()

    def admin(self) -> Admin:
        return self.real.admin()


def test_a_delivery_failure_stops_the_commit(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                             ewma_path: Path, transport: str) -> None:
    """Events the producer gives up on: the run ends with DeliveryError, nothing is committed or snapshotted
    (not even by the shutdown), and a restart produces every event an uninterrupted run produces."""
    topic, ref_topic = topic_factory(partitions=2), topic_factory(partitions=2)
    feed = price_feed(6, 40, shock=(2, 30), seed=12)
    for t in (topic, ref_topic):
        produce(broker.bootstrap_servers, t, feed)

    def settings(t: str) -> Settings:
        return load_settings({"bootstrap_servers": broker.bootstrap_servers, "input_topic": t,
                              "auto_offset_reset": "earliest", "group_id": f"{t}-g",
                              "model": str(ewma_path), "metrics_port": "0", "metrics_host": "127.0.0.1",
                              "session_timeout_ms": "6000", "until_caught_up": True, "transport": transport},
                             env={})

    with pytest.raises(DeliveryError):
        Service(settings(topic), transport=_LossyTransport(settings(topic))).start().run()
    assert sum(v or 0 for v in committed(broker.bootstrap_servers, f"{topic}-g", topic).values()) == 0
    assert read_all(broker.bootstrap_servers, f"{topic}-g.state") == []
    Service(settings(topic)).start().run()
    Service(settings(ref_topic)).start().run()
    got = {(r.key, orjson.loads(r.value)["input"]["offset"]) for r in read_all(broker.bootstrap_servers,
                                                                               f"{topic}.anomalies")}
    want = {(r.key, orjson.loads(r.value)["input"]["offset"]) for r in read_all(broker.bootstrap_servers,
                                                                                f"{ref_topic}.anomalies")}
    assert got == want and want

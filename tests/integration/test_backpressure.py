"""A stalled output: consumption pauses while too much is unacknowledged, memory stays flat, and everything
is delivered once the output moves again.

A real broker cannot be told to stall one topic's partitions, so the producer is wrapped: while its gate is
shut, sends are held (as a stalled partition holds them in the producer's buffer) and flush() times out.
Before: the service kept consuming, and the producer's buffer grew with every batch's events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.errors import BrokerError
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
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import Settings, load_settings
from tests.integration.helpers import price_feed, produce, read_all

pytestmark = pytest.mark.integration

WAIT_S = 120.0
MAX_IN_FLIGHT = 20_000
POLL_RECORDS = 50


class GatedProducer:
    """A transport's real producer behind a gate: while shut, sends are held and their bytes counted."""

    def __init__(self, real: Producer) -> None:
        self.real = real
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.held: list[tuple[Any, ...]] = []
        self.held_bytes = 0
        self.max_held_bytes = 0

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int | None,
             on_delivery: Delivered) -> None:
        with self.lock:
            if not self.open.is_set():
                self.held.append((topic, key, value, headers, partition, on_delivery))
                self.held_bytes += len(value or b"") + len(key or b"")
                self.max_held_bytes = max(self.max_held_bytes, self.held_bytes)
                return
        self.real.send(topic, key, value, headers, partition, on_delivery)

    def serve(self) -> None:
        self.real.serve()

    def release(self) -> None:
        with self.lock:
            self.open.set()
            held, self.held = self.held, []
        for args in held:
            self.real.send(*args)

    def flush(self, timeout_s: float) -> None:
        if not self.open.wait(timeout_s):
            msg = "gate shut: nothing acknowledged"
            raise BrokerError(msg)
        self.real.flush(timeout_s)

    def close(self, timeout_s: float) -> None:
        self.release()
        self.real.close(timeout_s)


class GatedTransport:
    """The settings' transport, its producer gated."""

    def __init__(self, settings: Settings) -> None:
        self.real = open_transport(KafkaConfig.from_settings(settings))
        self.name = self.real.name
        self.gates: list[GatedProducer] = []

    def source(self, topic: str) -> GroupSource:
        return self.real.source(topic)

    def producer(self) -> GatedProducer:
        self.gates.append(GatedProducer(self.real.producer()))
        return self.gates[-1]

    def reader(self) -> PartitionReader:
        return self.real.reader()

    def admin(self) -> Admin:
        return self.real.admin()


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_stalled_output_pauses_consumption_and_memory_stays_flat(
        broker: EmbeddedBroker, topic_factory: Callable[..., str], ewma_path: Path, transport: str) -> None:
    topic = topic_factory(partitions=2)
    feed = price_feed(4, 300, seed=11)
    produce(broker.bootstrap_servers, topic, feed)
    settings = load_settings({
        "bootstrap_servers": broker.bootstrap_servers, "input_topic": topic,
        "auto_offset_reset": "earliest", "group_id": f"{topic}-g",
        "model": str(ewma_path), "metrics_port": "0", "session_timeout_ms": "6000", "until_caught_up": True,
        "threshold": "0.0001", "warmup_steps": "0",  # every scored tick is an anomaly: one event per record
        "incident_gap_steps": "0",  # (no incident grouping)
        "max_poll_records": str(POLL_RECORDS), "max_in_flight_bytes": str(MAX_IN_FLIGHT),
        "checkpoint_interval_ms": "600000", "checkpoint_records": "1000000", "shutdown_grace_ms": "10000",
        "transport": transport,
    }, env={})
    gated = GatedTransport(settings)
    gates = gated.gates
    service = Service(settings, transport=gated).start()
    polls_while_paused = [0]
    real_poll = service.source.poll

    def counting_poll(timeout_ms: int, max_records: int) -> list[Any]:
        records = real_poll(timeout_ms, max_records)
        if service.backpressure.paused:
            polls_while_paused[0] += 1
        return records

    service.source.poll = counting_poll  # type: ignore[method-assign]
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        sample = service.registry.get_sample_value
        _wait_for(lambda: sample("rnnwatch_consumption_paused") == 1, "consumption to pause")
        consumed_at_pause = sample("rnnwatch_records_consumed_total")
        _wait_for(lambda: polls_while_paused[0] >= 10, "ten polls while paused")
        assert sample("rnnwatch_records_consumed_total") == consumed_at_pause < len(feed)
        # at most one batch of events beyond the limit: sent after the last check, before the pause
        bound = MAX_IN_FLIGHT + POLL_RECORDS * 1024
        assert gates[0].max_held_bytes <= bound
        assert sample("rnnwatch_producer_pending_bytes") is not None
        assert 0 < sample("rnnwatch_producer_pending_bytes") <= bound + POLL_RECORDS * 512
        gates[0].release()
        runner.join(WAIT_S)
        assert not runner.is_alive()
    finally:
        gates[0].release()
        service.request_stop()
        runner.join(WAIT_S)
    assert service.summary.records == len(feed)
    assert sample("rnnwatch_backpressure_pauses_total") >= 1
    assert sample("rnnwatch_consumption_paused") == 0
    events = read_all(broker.bootstrap_servers, f"{topic}.anomalies")
    assert len({dict(e.headers)["ce_id"] for e in events}) == service.summary.anomalies > 0

"""Oversized keys and header sets through a real run: dead-lettered with their reason, the dead letter itself
small enough for any broker, and the consumer goes on (before: a 2 MB key was copied into every event and
snapshot of its series, past the broker's message limit, and the failed delivery stopped the service)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import load_settings
from tests.integration.helpers import price_feed, read_all

pytestmark = pytest.mark.integration

TWO_MB = 2 * 1024 * 1024


def test_two_megabyte_keys_and_headers_are_dead_lettered_small_and_processing_goes_on(
        broker: EmbeddedBroker, topic_factory: Callable[..., str], ewma_path: Path) -> None:
    topic = topic_factory(partitions=1)
    feed = price_feed(2, 20, seed=3)
    tick = orjson.dumps({"symbol": "S000", "ts": 1_600_000_000 + 60 * 20, "price": 100.0})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=16 * TWO_MB)
    for key, value in feed[:20]:
        producer.send(topic, key=key, value=value)
    producer.send(topic, key=b"K" * TWO_MB, value=tick)  # oversized Kafka key
    producer.send(topic, key=None, value=orjson.dumps({"symbol": "J" * TWO_MB, "ts": 1_600_000_000, "price": 1.0}))
    producer.send(topic, key=b"S000", value=tick, headers=[(f"h{i}", b"x" * 100_000) for i in range(21)])
    for key, value in feed[20:]:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    settings = load_settings({"bootstrap_servers": broker.bootstrap_servers, "input_topic": topic,
                              "auto_offset_reset": "earliest", "group_id": f"{topic}-g", "model": str(ewma_path),
                              "metrics_port": "0",
                              "session_timeout_ms": "6000", "max_message_bytes": str(8 * TWO_MB),
                              "until_caught_up": True}, env={})
    service = Service(settings).start()
    summary = service.run()
    assert summary.processed == len(feed)
    assert summary.dead_lettered == 3
    sample = service.registry.get_sample_value
    assert sample("rnnwatch_records_failed_total", {"reason": "oversized_key"}) == 2
    assert sample("rnnwatch_records_failed_total", {"reason": "oversized_headers"}) == 1
    letters = read_all(broker.bootstrap_servers, f"{topic}.dlq")
    assert sorted(dict(r.headers)["rnnwatch-reason"] for r in letters) == [
        b"oversized_headers", b"oversized_key", b"oversized_key"]
    for letter in letters:
        size = len(letter.key or b"") + len(letter.value or b"") + sum(len(k) + len(v) for k, v in letter.headers)
        assert size < 512 * 1024  # far under Kafka's default 1 MiB message limit
    by_reason = {dict(r.headers)["rnnwatch-reason"]: dict(r.headers) for r in letters}
    assert by_reason[b"oversized_headers"]["rnnwatch-headers-dropped"] != b"0"
    assert any(dict(r.headers).get("rnnwatch-original-key-bytes") == str(TWO_MB).encode() for r in letters)

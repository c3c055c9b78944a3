"""Bounded memory: idle keys leave memory after the TTL, and a returning key is restored, not reset."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rnnwatch.consumer.changelog import read_snapshots
from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import load_settings
from tests.integration.helpers import changelog_reader, price_feed, produce

pytestmark = pytest.mark.integration


def test_evicted_key_returns_with_its_state(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                            ewma_path: Path) -> None:
    topic = topic_factory(partitions=1)
    feed = price_feed(4, 40, seed=8)
    produce(broker.bootstrap_servers, topic, feed[:80])  # 20 steps of each of the 4 keys
    service = Service(load_settings({
        "bootstrap_servers": broker.bootstrap_servers, "input_topic": topic,
        "auto_offset_reset": "earliest", "group_id": f"{topic}-g",
        "model": str(ewma_path), "metrics_port": "0", "metrics_host": "127.0.0.1", "session_timeout_ms": "6000",
        "key_ttl_ms": "1500", "checkpoint_interval_ms": "300"}, env={})).start()
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    sample = service.registry.get_sample_value
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (sample("rnnwatch_keys_evicted_total", {}) or 0) < 4:
        time.sleep(0.2)
    assert sample("rnnwatch_keys_evicted_total", {}) == 4
    assert sample("rnnwatch_active_keys", {}) == 0  # memory is bounded by the active keys
    produce(broker.bootstrap_servers, topic, feed[80:])  # the same keys come back
    while time.monotonic() < deadline and (sample("rnnwatch_records_processed_total", {}) or 0) < len(feed):
        time.sleep(0.2)
    service.request_stop()
    runner.join(timeout=30)
    assert sample("rnnwatch_records_processed_total", {}) == len(feed)
    assert (sample("rnnwatch_state_resets_total", {"reason": "corrupt_snapshot"}) or 0) == 0
    consumer = changelog_reader(broker.bootstrap_servers)
    latest, _ = read_snapshots(consumer, f"{topic}-g.state", [0])
    consumer.close()
    steps = sorted(service.store.table.decode(s.value).steps for s in latest[0].values())
    assert steps == [40] * 4  # continued from the evicted snapshot: 20 + 20, not a cold 20

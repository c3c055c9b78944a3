"""Bad state and model changes on restore: corrupt changelog records and snapshots of another model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import price_feed, produce
from kafka import KafkaConsumer, KafkaProducer
from onnx_builders import ewma_model

from rnnwatch.consumer.broker import EmbeddedBroker
from rnnwatch.consumer.changelog import read_snapshots
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import load_settings

pytestmark = pytest.mark.integration


def _service(broker: EmbeddedBroker, topic: str, group: str, model: Path) -> Service:
    return Service(load_settings({"bootstrap_servers": broker.bootstrap_servers, "input_topic": topic,
                                  "group_id": group, "model": str(model), "metrics_port": "0",
                                  "metrics_host": "127.0.0.1", "session_timeout_ms": "6000",
                                  "until_caught_up": True}, env={}))


def _value(service: Service, name: str, **labels: str) -> float:
    value = service.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_corrupt_changelog_record_resets_only_that_key(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                                      ewma_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    topic = topic_factory(partitions=1)
    group = f"{topic}-g"
    produce(broker.bootstrap_servers, topic, price_feed(3, 20))
    first = _service(broker, topic, group, ewma_path).start()
    first.run()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    producer.send(f"{group}.state", key=b"S001", value=b"RNW1\x05\x00garbage!!", partition=0,
                  headers=[("rnnwatch-offset", b"999999")])
    producer.flush()
    producer.close()
    produce(broker.bootstrap_servers, topic, price_feed(3, 25)[60:])
    second = _service(broker, topic, group, ewma_path).start()
    summary = second.run()
    assert summary.processed == 15
    assert _value(second, "rnnwatch_state_resets_total", reason="corrupt_snapshot") == 1
    assert _value(second, "rnnwatch_state_keys_restored_total") == 2
    assert any("corrupt state snapshot for key b'S001'" in r.getMessage() for r in caplog.records)


def test_snapshots_of_another_model_are_discarded_and_counted(broker: EmbeddedBroker,
                                                              topic_factory: Callable[..., str], ewma_path: Path,
                                                              tmp_path: Path) -> None:
    topic = topic_factory(partitions=2)
    group = f"{topic}-g"
    produce(broker.bootstrap_servers, topic, price_feed(4, 30))
    _service(broker, topic, group, ewma_path).start().run()
    produce(broker.bootstrap_servers, topic, price_feed(4, 40)[120:])
    other = ewma_model(tmp_path / "v2.onnx", scale=2.0)  # a new model version: other bytes, other sha256
    second = _service(broker, topic, group, other).start()
    summary = second.run()
    assert _value(second, "rnnwatch_state_resets_total", reason="model_changed") == 4
    assert _value(second, "rnnwatch_state_keys_restored_total") == 0
    assert summary.processed == 40  # only the new records: the old ones stay skipped, none re-applied
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, fetch_max_wait_ms=50)
    latest, _ = read_snapshots(consumer, f"{group}.state", [0, 1])
    consumer.close()
    table = second.store.table
    steps = sorted(table.decode(s.value).steps for keys in latest.values() for s in keys.values())
    assert steps == [10] * 4  # every key re-warmed from its first new record under the new model

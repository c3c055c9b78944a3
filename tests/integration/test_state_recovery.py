"""Bad state and model changes on restore: corrupt changelog records and snapshots of another model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from rnnwatch.consumer.changelog import read_snapshots
from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.restore import run_to_end, scan_partition
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import load_settings
from tests.integration.helpers import changelog_reader, price_feed, produce, read_all
from tests.unit.onnx_builders import ewma_model

pytestmark = pytest.mark.integration


def _service(broker: EmbeddedBroker, topic: str, group: str, model: Path) -> Service:
    return Service(load_settings({"bootstrap_servers": broker.bootstrap_servers, "input_topic": topic,
                                  "auto_offset_reset": "earliest", "group_id": group,
                                  "model": str(model), "metrics_port": "0",
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
    consumer = changelog_reader(broker.bootstrap_servers)
    latest, _ = read_snapshots(consumer, f"{group}.state", [0, 1])
    consumer.close()
    table = second.store.table
    steps = sorted(table.decode(s.value).steps for keys in latest.values() for s in keys.values())
    assert steps == [10] * 4  # every key re-warmed from its first new record under the new model


def _events(broker: EmbeddedBroker, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_all(broker.bootstrap_servers, f"{topic}.anomalies")]


def _state(broker: EmbeddedBroker, group: str, service: Service) -> dict[bytes, tuple[int, int]]:
    consumer = changelog_reader(broker.bootstrap_servers)
    latest, _ = read_snapshots(consumer, f"{group}.state", [0])
    consumer.close()
    table = service.store.table
    return {k: (table.decode(s.value).steps, s.input_offset) for k, s in latest[0].items()}


def test_the_snapshot_with_the_highest_input_offset_wins_over_a_later_written_one(
        broker: EmbeddedBroker, topic_factory: Callable[..., str], ewma_path: Path) -> None:
    topic = topic_factory(partitions=1)
    group = f"{topic}-g"
    feed = price_feed(3, 25, seed=6)
    produce(broker.bootstrap_servers, topic, feed[:30])
    _service(broker, topic, group, ewma_path).start().run()
    consumer = changelog_reader(broker.bootstrap_servers)
    older = next(r for r in read_all(broker.bootstrap_servers, f"{group}.state") if r.key == b"S001")
    consumer.close()
    produce(broker.bootstrap_servers, topic, feed[30:60])
    _service(broker, topic, group, ewma_path).start().run()
    # a zombie's late write: the state of S001 as of the first run, written after the newer one
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    producer.send(f"{group}.state", key=older.key, value=older.value, headers=older.headers, partition=0)
    producer.flush()
    producer.close()
    produce(broker.bootstrap_servers, topic, feed[60:])
    last = _service(broker, topic, group, ewma_path).start()
    assert last.run().processed == 15
    assert _state(broker, group, last)[b"S001"][0] == 25  # every record applied once, none lost to the stale write
    ref_topic = topic_factory(partitions=1)
    produce(broker.bootstrap_servers, ref_topic, feed)
    ref = _service(broker, ref_topic, f"{ref_topic}-g", ewma_path).start()
    ref.run()
    assert _state(broker, group, last) == _state(broker, f"{ref_topic}-g", ref)
    assert _events(broker, topic) == [e | {"input": e["input"] | {"topic": topic}} for e in _events(broker, ref_topic)]


def test_no_events_during_warm_up_after_a_model_change(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                                       ewma_path: Path, tmp_path: Path) -> None:
    topic = topic_factory(partitions=1)
    group = f"{topic}-g"
    feed = price_feed(4, 30, seed=9)
    produce(broker.bootstrap_servers, topic, feed)
    _service(broker, topic, group, ewma_path).start().run()
    before = len(_events(broker, topic))
    after_switch = price_feed(4, 40, seed=9)[120:]  # 10 more steps of each key
    for step in (1, 7):  # a 30 % jump of S001 inside the new model's warm-up (3 steps), and one after it
        key, value = after_switch[4 * step + 1]
        doc = orjson.loads(value)
        after_switch[4 * step + 1] = (key, orjson.dumps(doc | {"price": doc["price"] * 1.3}))
    produce(broker.bootstrap_servers, topic, after_switch)
    second = _service(broker, topic, group, ewma_model(tmp_path / "v2.onnx", scale=2.0)).start()
    second.run()
    new = _events(broker, topic)[before:]
    steps_of_s001 = [e["input"]["offset"] for e in new if e["key"] == "S001"]
    warm_up = {120 + 4 * step + 1 for step in range(3)}
    assert not warm_up & set(steps_of_s001)  # no event while the key re-warms under the new model ...
    assert 120 + 4 * 7 + 1 in steps_of_s001  # ... and the jump after it is flagged


def test_a_partition_read_again_by_the_same_reader_is_read_to_its_current_end(
        broker: EmbeddedBroker, topic_factory: Callable[..., str]) -> None:
    """kafka-python keeps a partition's last highwater while the partition stays assigned to a consumer.

    The restore consumer last read this partition when it was empty (a member's start-up restore); a restore
    of the same partition after it grew (handed back by a rebalance) must read what was written since, not
    stop at the end it saw then.
    """
    topic = topic_factory(partitions=1)
    reader = changelog_reader(broker.bootstrap_servers)
    try:
        first = run_to_end(scan_partition(reader, topic, 0, None))
        assert (first.end, first.best.records) == (0, 0)
        produce(broker.bootstrap_servers, topic, price_feed(3, 5))
        again = run_to_end(scan_partition(reader, topic, 0, None))
        assert (again.end, again.best.records, len(again.best.by_key)) == (15, 15, 3)
    finally:
        reader.close()

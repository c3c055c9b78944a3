"""ColumnRecords against kafka-python's own parse on fetches from a real broker.

The topic holds what producers really send: plain and gzip batches, headers, null keys and values, idempotent
batches, transactions with their control batches (committed and aborted). Every fetch a stock consumer
receives is recorded and replayed through both parsers in several take patterns; then a consumer with
ColumnRecords installed reads the topic and must return the same records and end at the same positions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.record.memory_records import MemoryRecords

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.kafka import columnar
from rnnwatch.consumer.kafka.columnar import ColumnRecords
from tests.unit.test_kafka_columnar import STEPS, run

pytestmark = pytest.mark.integration
PARTITIONS = 2


def _fill(bootstrap: str, topic: str) -> int:
    """Write the mix; returns how many records read_uncommitted sees."""
    sent = 0
    plain = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=4096)
    zipped = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, compression_type="gzip")
    for i in range(600):
        producer = zipped if i % 3 == 0 else plain
        key = None if i % 11 == 0 and i % 13 else b"sym-%d" % (i % 17)  # never both null: kafka-python refuses
        value = None if i % 13 == 0 else b'{"price": %d.5, "pad": "%s"}' % (i, b"y" * (i % 200))
        headers = [("trace", b"t%d" % i), ("empty", b"")] if i % 5 == 0 else None
        producer.send(topic, key=key, value=value, headers=headers, partition=i % PARTITIONS)
        sent += 1
    for producer in (plain, zipped):
        producer.flush()
        producer.close()
    txn = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{topic}")
    txn.init_transactions()
    for commit in (True, False, True):
        txn.begin_transaction()
        for i in range(40):
            txn.send(topic, key=b"tx-%d" % i, value=b"%s %d" % (b"c" if commit else b"a", i), partition=i % PARTITIONS)
            sent += 1
        txn.flush()
        if commit:
            txn.commit_transaction()
        else:
            txn.abort_transaction()
    txn.close()
    return sent


def _consumer(bootstrap: str, topic: str, **config: Any) -> tuple[KafkaConsumer, list[TopicPartition]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50,
                             isolation_level="read_committed", **config)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    return consumer, tps


def _drain(consumer: KafkaConsumer, tps: list[TopicPartition], gather: Callable[[dict[Any, Any]], list[Any]]) -> (
        tuple[list[Any], dict[int, int]]):
    records: list[Any] = []
    for _ in range(400):
        records.extend(gather(consumer.poll(timeout_ms=100)))
        if all((hw := consumer.highwater(tp)) is not None and consumer.position(tp) >= hw for tp in tps):
            break
    return records, {tp.partition: consumer.position(tp) for tp in tps}


def _stock(polled: dict[Any, Any]) -> list[Any]:
    return [(r.partition, r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers])
            for records in polled.values() for r in records]


@pytest.mark.parametrize("max_poll_records", [20000, 7])
def test_columns_equal_kafka_pythons_records_on_real_fetches(broker: EmbeddedBroker,
                                                             topic_factory: Callable[..., str],
                                                             max_poll_records: int) -> None:
    topic = topic_factory(PARTITIONS)
    sent = _fill(broker.bootstrap_servers, topic)
    fetches: list[tuple[int, Any, bytes, Any]] = []

    class Recorder(Fetcher.PartitionRecords):  # type: ignore[misc]
        def __init__(self, fetch_offset: int, tp: Any, records: Any, **kw: Any) -> None:
            fetches.append((fetch_offset, tp, bytes(records._buffer), kw.get("aborted_transactions")))
            super().__init__(fetch_offset, tp, records, **kw)

    stock, tps = _consumer(broker.bootstrap_servers, topic, max_poll_records=max_poll_records)
    stock._fetcher.PartitionRecords = Recorder
    try:
        expected, expected_positions = _drain(stock, tps, _stock)
    finally:
        stock.close()
    assert sent - 40 <= len(expected) <= sent  # an aborted transaction is filtered only if the broker reports it
    assert any(h for *_, h in expected) and any(r[3] is None for r in expected) and any(r[4] is None for r in expected)

    for fetch_offset, _tp, data, aborted in fetches:
        for steps in STEPS:
            theirs = run(Fetcher.PartitionRecords, data, steps, fetch_offset=fetch_offset, aborted=aborted)
            assert run(ColumnRecords, data, steps, fetch_offset=fetch_offset, aborted=aborted) == theirs
    kinds = {(b.magic, b.compression_type, b.is_control_batch, b.is_transactional) for b in _batches(fetches)}
    assert {(2, 1, False, False), (2, 0, False, False), (2, 0, True, True), (2, 0, False, True)} <= kinds

    ours, tps = _consumer(broker.bootstrap_servers, topic, max_poll_records=max_poll_records)
    columnar.install(ours)
    try:
        got, positions = _drain(ours, tps, lambda polled: _stock_of(columnar.polled(topic, polled)))
    finally:
        ours.close()
    key = lambda r: (r[0], r[1])  # noqa: E731 - partitions interleave differently from poll to poll
    assert sorted(got, key=key) == sorted(expected, key=key)
    assert positions == expected_positions


def _batches(fetches: list[tuple[int, Any, bytes, Any]]) -> list[Any]:
    out = []
    for *_, data, _ in fetches:
        records = MemoryRecords(data)
        while (batch := records.next_batch()) is not None:
            out.append(batch)
    return out


def _stock_of(polled: Any) -> list[Any]:
    return [(r.partition, r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers]) for r in polled]

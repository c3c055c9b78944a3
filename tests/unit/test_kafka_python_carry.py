"""Polls of the kafka-python source that span every partition, without a broker.

kafka-python drains its fetched records a partition at a time (``Fetcher.fetched_records`` finishes one
partition's fetch before it starts the next), so a poll of ``max_records`` taken as it comes holds one or two
partitions and its waves only their keys. The source takes up to 1.5 polls' worth, hands out an even share of
each partition and carries the rest (``kafka.carry``), as the librdkafka source does. What delivery relies on:
per partition, offset order and each record exactly once; nothing carried once revoked or lost; carried
records counted as lag.
"""

from __future__ import annotations

import argparse
from collections import deque

import numpy as np
from kafka import TopicPartition as KTP
from kafka.consumer.fetcher import ConsumerRecord

from rnnwatch.consumer.kafka.config import PYTHON_PARTITION_FETCH_BYTES, KafkaConfig
from rnnwatch.consumer.kafka.polled import Polled
from rnnwatch.consumer.kafka.python import PythonSource
from rnnwatch.consumer.settings import Settings, add_arguments, load_settings

TOPIC = "t"


class _DrainingConsumer:
    """kafka-python's fetcher as the source sees it: fetched partitions in turn, each drained before the next."""

    def __init__(self, runs: list[tuple[int, int, int]]) -> None:
        self.fetched: deque[tuple[int, deque[int]]] = deque((p, deque(range(o, o + n))) for p, o, n in runs)
        self.high = {p: o + n for p, o, n in runs}
        self.timeouts: list[int] = []

    def poll(self, timeout_ms: int, max_records: int) -> dict[KTP, list[ConsumerRecord]]:
        self.timeouts.append(timeout_ms)
        out: dict[KTP, list[ConsumerRecord]] = {}
        while max_records and self.fetched:
            partition, offsets = self.fetched[0]
            while max_records and offsets:
                o = offsets.popleft()
                out.setdefault(KTP(TOPIC, partition), []).append(
                    ConsumerRecord(TOPIC, partition, 0, o, o, 0, f"k{o % 7}".encode(), b"{}", [], None, 2, 2, -1))
                max_records -= 1
            if not offsets:
                self.fetched.popleft()
        return out

    def highwater(self, tp: KTP) -> int:
        return self.high[tp.partition]

    def position(self, tp: KTP, timeout_ms: int | None = None) -> int:  # the fetch position: past what it gave
        left = [offsets[0] for p, offsets in self.fetched if p == tp.partition and offsets]
        return left[0] if left else self.high[tp.partition]


def _source(runs: list[tuple[int, int, int]]) -> tuple[PythonSource, _DrainingConsumer]:
    consumer = _DrainingConsumer(runs)
    source = PythonSource(consumer, TOPIC)
    source.assignment.assigned = {p for p, _, _ in runs}
    return source, consumer


def _pairs(polled: Polled) -> list[tuple[int, int]]:
    return list(zip(polled.partition.tolist(), polled.offset.tolist(), strict=True))


def test_a_kafka_python_poll_spans_every_partition_though_the_client_drains_them_in_turn() -> None:
    runs = [(p, o, 1500) for o in (0, 1500, 3000) for p in range(4)]  # three fetches of each partition, in turn
    source, _ = _source(runs)
    polls = [source.poll(100, 4000) for _ in range(4)]
    # as the client hands them out, the first poll would hold 1,500 of 0 and 1, 1,000 of 2 and none of 3
    assert np.bincount(polls[0].partition).tolist() == [1000, 1000, 1000, 1000]
    for polled in polls:
        assert sorted(set(polled.partition.tolist())) == [0, 1, 2, 3]
    handed = [pair for polled in polls for pair in _pairs(polled)]
    handed += _pairs(source.poll(100, 4000))
    assert sorted(handed) == [(p, o) for p in range(4) for o in range(4500)]
    assert len(source.poll(100, 4000)) == 0


def test_every_record_once_in_partition_order_whatever_the_polls() -> None:
    rng = np.random.default_rng(1)
    runs = [(int(p), 0, 0) for p in range(3)]
    next_offset = dict.fromkeys(range(3), 0)
    for p in rng.integers(0, 3, 40).tolist():  # fetches of random partitions and sizes
        n = int(rng.integers(1, 300))
        runs.append((p, next_offset[p], n))
        next_offset[p] += n
    source, _ = _source([r for r in runs if r[2]])
    handed: list[tuple[int, int]] = []
    while polled := source.poll(100, int(rng.integers(50, 500))):
        handed += _pairs(polled)
    for p in range(3):
        assert [o for q, o in handed if q == p] == list(range(next_offset[p]))


def test_with_records_carried_the_poll_does_not_wait_for_the_broker() -> None:
    source, consumer = _source([(0, 0, 200), (1, 0, 200)])
    source.poll(100, 300)  # takes all 400, hands out 300, carries 100
    source.poll(100, 300)
    assert consumer.timeouts == [100, 0]


def test_while_throttled_a_poll_still_waits_though_records_are_carried() -> None:
    """Nothing can be handed out then: a poll that did not wait would spin the service loop at full CPU."""
    source, consumer = _source([(0, 0, 200), (1, 0, 200)])
    source.poll(100, 300)
    source.throttled = True
    assert len(source.poll(100, 300)) == 0
    assert consumer.timeouts == [100, 100]


def test_carried_records_count_as_lag_until_handed_out() -> None:
    source, _ = _source([(0, 0, 200), (1, 0, 200)])
    polled = source.poll(100, 300)  # takes all 400 from the client, hands out 150 of each
    positions = {p: int(polled.offset[polled.partition == p].max()) + 1 for p in (0, 1)}
    assert positions == {0: 150, 1: 150}
    assert source.lag(positions) == {0: 50, 1: 50}
    assert source.lag({0: 150}) == {0: 50, 1: 50}  # nothing of 1 processed: its first carried record counts


def test_a_revoke_drops_the_carried_records_of_its_partitions() -> None:
    source, _ = _source([(0, 0, 200), (1, 0, 200)])
    source.poll(100, 300)
    source.handle_revoked({1}, lost=False)
    rest = source.poll(100, 1000)
    assert _pairs(rest) == [(0, o) for o in range(150, 200)]
    source, _ = _source([(0, 0, 200), (1, 0, 200)])
    source.poll(100, 300)
    source.handle_revoked({0}, lost=True)
    assert _pairs(source.poll(100, 1000)) == [(1, o) for o in range(150, 200)]


def test_nothing_is_handed_out_while_throttled_and_order_holds_after() -> None:
    source, _ = _source([(0, 0, 300), (1, 0, 300)])
    source.throttled = True
    assert len(source.poll(100, 200)) == 0
    source.throttled = False
    handed = _pairs(source.poll(100, 200)) + _pairs(source.poll(100, 1000))
    for p in (0, 1):
        assert [o for q, o in handed if q == p] == list(range(300))


def _settings(*flags: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_settings(parser.parse_args(["--input-topic", "t", "--group-id", "g", *flags]), env={})


def test_the_kafka_python_group_consumer_fetches_a_partition_in_short_runs() -> None:
    """A fetch of 16 MiB per partition is one partition's whole backlog: polls of one partition, and the next fetch
    goes out only once it is drained (the poll then waits for the broker). The changelog reader keeps the setting."""
    config = KafkaConfig.from_settings(_settings())
    default = config.settings.max_partition_fetch_bytes
    assert default > PYTHON_PARTITION_FETCH_BYTES
    assert config.python_consumer(group=True)["max_partition_fetch_bytes"] == PYTHON_PARTITION_FETCH_BYTES
    assert config.python_consumer(group=False)["max_partition_fetch_bytes"] == default
    small = KafkaConfig.from_settings(_settings("--max-partition-fetch-bytes", "65536"))  # a smaller one is kept
    assert small.python_consumer(group=True)["max_partition_fetch_bytes"] == 65536
    passed = KafkaConfig.from_settings(_settings("--kafka-config", "max.partition.fetch.bytes=8388608"))
    assert passed.python_consumer(group=True)["max_partition_fetch_bytes"] == 8388608  # the user's word wins

"""Polls of both transports' sources that span every partition, without a broker.

Both clients hand out a partition's records in runs: kafka-python drains one partition's fetch before the next
(``Fetcher.fetched_records``), librdkafka's queue holds runs of each partition. Either way a poll taken as it
comes holds one or two partitions and its waves only their keys, so each source takes up to 1.5 polls' worth,
hands out an even share of every partition and carries the rest (``kafka.carry``). What delivery relies on, for
both: per partition, offset order and each record exactly once; nothing carried once revoked or lost; carried
records counted as lag; with records carried a poll does not wait for the broker, except while throttled
(nothing can be handed out then: a poll that did not wait would spin the service loop at full CPU).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from kafka import TopicPartition as KTP
from kafka.consumer.fetcher import ConsumerRecord

from rnnwatch.consumer.kafka.polled import Polled
from rnnwatch.consumer.kafka.python import PythonSource

confluent_kafka = pytest.importorskip("confluent_kafka", reason="the [fast] extra is installed by make install-dev")
from confluent_kafka import Message  # noqa: E402
from confluent_kafka import TopicPartition as CTP  # noqa: E402

from rnnwatch.consumer.kafka.confluent import ConfluentSource  # noqa: E402

TOPIC = "t"
Runs = list[tuple[int, int, int]]  # (partition, first offset, count), in the order the client hands them out


class _DrainingConsumer:
    """kafka-python's fetcher as the source sees it: fetched partitions in turn, each drained before the next."""

    def __init__(self, runs: Runs) -> None:
        self.fetched: deque[tuple[int, deque[int]]] = deque((p, deque(range(o, o + n))) for p, o, n in runs)
        self.high = {p: o + n for p, o, n in runs}
        self.waits_ms: list[float] = []

    def poll(self, timeout_ms: int, max_records: int) -> dict[KTP, list[ConsumerRecord]]:
        self.waits_ms.append(timeout_ms)
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


class _QueueConsumer:
    """librdkafka's consumer queue: messages in the order fetched, partitions in runs; watermarks per partition."""

    def __init__(self, runs: Runs) -> None:
        self.queue: deque[Message] = deque(
            Message(topic=TOPIC, partition=p, offset=o + i, key=f"k{p}".encode(), value=b"{}", timestamp=(1, o + i))
            for p, o, n in runs for i in range(n))
        self.high = {p: o + n for p, o, n in runs}
        self.callbacks: dict[str, Any] = {}
        self.waits_ms: list[float] = []

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def poll(self, timeout: float) -> Message | None:
        self.waits_ms.append(timeout * 1000)
        return self.queue.popleft() if self.queue else None

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self.waits_ms.append(timeout * 1000)
        return [self.queue.popleft() for _ in range(min(num_messages, len(self.queue)))]

    def get_watermark_offsets(self, tp: CTP, cached: bool = False, timeout: float = 0) -> tuple[int, int]:
        return 0, self.high.get(tp.partition, 0)

    def position(self, tps: list[CTP]) -> list[CTP]:  # librdkafka: last consumed + 1 (what the queue gave us)
        return [CTP(TOPIC, tp.partition, self.high[tp.partition] if not self.queue else -1001) for tp in tps]

    def pause(self, tps: list[CTP]) -> None:
        pass

    def unassign(self) -> None:
        pass


@dataclass
class _Harness:
    """A source over a fake client, and the client's side of a rebalance."""

    source: PythonSource | ConfluentSource
    waits_ms: list[float]  # how long the source let the client wait, call by call
    revoke: Callable[[set[int], bool], None]  # (partitions, lost) as the client's rebalance callback delivers it


def _python(runs: Runs) -> _Harness:
    consumer = _DrainingConsumer(runs)
    source = PythonSource(consumer, TOPIC)  # type: ignore[arg-type]
    return _Harness(source, consumer.waits_ms, lambda parts, lost: source.handle_revoked(parts, lost=lost))


def _confluent(runs: Runs) -> _Harness:
    consumer = _QueueConsumer(runs)
    source = ConfluentSource(consumer, TOPIC)  # type: ignore[arg-type]

    def revoke(parts: set[int], lost: bool) -> None:
        consumer.callbacks["on_lost" if lost else "on_revoke"](consumer, [CTP(TOPIC, p) for p in sorted(parts)])

    return _Harness(source, consumer.waits_ms, revoke)


@pytest.fixture(params=["kafka-python", "confluent"])
def make(request: pytest.FixtureRequest) -> Callable[[Runs], _Harness]:
    build = _python if request.param == "kafka-python" else _confluent

    def harness(runs: Runs) -> _Harness:
        h = build(runs)
        h.source.assignment.assigned = {p for p, _, _ in runs}
        return h

    return harness


def _pairs(polled: Polled) -> list[tuple[int, int]]:
    return list(zip(polled.partition.tolist(), polled.offset.tolist(), strict=True))


def test_a_poll_spans_every_partition_though_the_client_hands_them_out_in_runs(make: Any) -> None:
    source = make([(p, o, 1500) for o in (0, 1500, 3000) for p in range(4)]).source  # 3 runs of each, in turn
    polls = [source.poll(100, 4000) for _ in range(4)]
    # as the client hands them out, the first poll would hold 1,500 of 0 and 1, 1,000 of 2 and none of 3
    assert np.bincount(polls[0].partition).tolist() == [1000, 1000, 1000, 1000]
    for polled in polls:
        assert sorted(set(polled.partition.tolist())) == [0, 1, 2, 3]
    handed = [pair for polled in polls for pair in _pairs(polled)]
    handed += _pairs(source.poll(100, 4000))
    assert sorted(handed) == [(p, o) for p in range(4) for o in range(4500)]
    assert len(source.poll(100, 4000)) == 0


def test_every_record_once_in_partition_order_whatever_the_polls(make: Any) -> None:
    rng = np.random.default_rng(1)
    runs, next_offset = [], dict.fromkeys(range(3), 0)
    for p in rng.integers(0, 3, 40).tolist():  # runs of random partitions and sizes
        n = int(rng.integers(1, 300))
        runs.append((p, next_offset[p], n))
        next_offset[p] += n
    source = make(runs).source
    handed: list[tuple[int, int]] = []
    while polled := source.poll(100, int(rng.integers(50, 500))):
        handed += _pairs(polled)
    for p in range(3):
        assert [o for q, o in handed if q == p] == list(range(next_offset[p]))


def test_with_records_carried_the_poll_does_not_wait_for_the_broker(make: Any) -> None:
    h = make([(0, 0, 200), (1, 0, 200)])
    h.source.poll(100, 300)  # takes all 400, hands out 300, carries 100
    assert max(h.waits_ms) == 100
    before = len(h.waits_ms)
    assert len(h.source.poll(100, 300)) == 100
    assert h.waits_ms[before:] and max(h.waits_ms[before:]) == 0


def test_while_throttled_a_poll_waits_though_records_are_carried(make: Any) -> None:
    h = make([(0, 0, 200), (1, 0, 200)])
    h.source.poll(100, 300)
    h.source.throttled = True
    before = len(h.waits_ms)
    assert len(h.source.poll(100, 300)) == 0
    assert max(h.waits_ms[before:]) == 100


def test_carried_records_count_as_lag_until_handed_out(make: Any) -> None:
    source = make([(0, 0, 200), (1, 0, 200)]).source
    polled = source.poll(100, 300)  # takes all 400 from the client, hands out 150 of each
    positions = {p: int(polled.offset[polled.partition == p].max()) + 1 for p in (0, 1)}
    assert positions == {0: 150, 1: 150}
    assert source.lag(positions) == {0: 50, 1: 50}
    assert source.lag({0: 150}) == {0: 50, 1: 50}  # nothing of 1 processed: its first carried record counts


@pytest.mark.parametrize("lost", [False, True])
def test_a_revoke_drops_the_carried_records_of_its_partitions(make: Any, lost: bool) -> None:
    h = make([(0, 0, 200), (1, 0, 200)])
    h.source.poll(100, 300)
    h.revoke({1}, lost)
    assert _pairs(h.source.poll(100, 1000)) == [(0, o) for o in range(150, 200)]


def test_nothing_is_handed_out_while_throttled_and_order_holds_after(make: Any) -> None:
    source = make([(0, 0, 300), (1, 0, 300)]).source
    source.throttled = True
    assert len(source.poll(100, 200)) == 0
    source.throttled = False
    handed = _pairs(source.poll(100, 200)) + _pairs(source.poll(100, 1000))
    for p in (0, 1):
        assert [o for q, o in handed if q == p] == list(range(300))

"""Polls that span every partition (``kafka.carry`` and the librdkafka source's poll), without a broker.

librdkafka hands out a partition's records in runs; the source takes up to 1.5 polls' worth, hands out an even
share of each partition and carries the rest. What delivery relies on: per partition, offset order and each
record exactly once; nothing carried once revoked; carried records counted as lag.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pytest

from rnnwatch.consumer.kafka.carry import MAX_RUNS, Carry, even_share
from rnnwatch.consumer.kafka.polled import Polled

confluent_kafka = pytest.importorskip("confluent_kafka", reason="the [fast] extra is installed by make install-dev")
from confluent_kafka import Message  # noqa: E402
from confluent_kafka import TopicPartition as CTP  # noqa: E402

from rnnwatch.consumer.kafka.confluent import ConfluentSource  # noqa: E402

TOPIC = "t"


def _runs(*runs: tuple[int, int, int]) -> Polled:
    """Columns of runs of (partition, first offset, count), in that order."""
    parts = [p for p, _, n in runs for _ in range(n)]
    offsets = [o + i for _, o, n in runs for i in range(n)]
    keys = [f"k{p}-{o % 7}".encode() for p, o in zip(parts, offsets, strict=True)]
    return Polled.columns(TOPIC, parts, offsets, offsets, keys, [b"{}"] * len(parts), None)


def _pairs(polled: Polled) -> list[tuple[int, int]]:
    return list(zip(polled.partition.tolist(), polled.offset.tolist(), strict=True))


def test_even_share_is_as_equal_as_the_counts_allow() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = {p: int(c) for p, c in enumerate(rng.integers(1, 50, rng.integers(1, 8)))}
        budget = int(rng.integers(1, 200))
        quota = even_share(counts, budget)
        assert sum(quota.values()) == min(budget, sum(counts.values()))
        assert all(0 <= quota[p] <= counts[p] for p in counts)
        room = [quota[p] for p in counts if quota[p] < counts[p]]  # partitions that could have given more
        assert not room or max(room) - min(room) <= 1
        assert not room or all(counts[p] <= max(room) for p in counts if quota[p] == counts[p])


def test_a_poll_takes_an_even_share_of_every_partition_at_hand() -> None:
    carry = Carry()
    first = carry.take(_runs((0, 0, 600), (1, 0, 600), (2, 0, 600), (3, 0, 600)), 800)
    assert sorted(set(first.partition.tolist())) == [0, 1, 2, 3]
    assert np.bincount(first.partition).tolist() == [200, 200, 200, 200]
    assert len(carry) == 1600
    assert carry.first_offsets() == {0: 200, 1: 200, 2: 200, 3: 200}


def test_nothing_is_carried_when_everything_fits_in_a_poll() -> None:
    carry = Carry()
    fresh = _runs((0, 0, 10), (1, 0, 10))
    assert carry.take(fresh, 20) is fresh
    assert len(carry) == 0 and carry.first_offsets() == {}


def test_every_record_once_in_partition_order_whatever_the_polls() -> None:
    rng = np.random.default_rng(1)
    carry, next_offset, handed = Carry(), [0, 0, 0], []
    for _ in range(60):
        runs = []
        for _ in range(int(rng.integers(0, 4))):
            p, n = int(rng.integers(0, 3)), int(rng.integers(1, 40))
            runs.append((p, next_offset[p], n))
            next_offset[p] += n
        out = carry.take(_runs(*runs), int(rng.integers(1, 60)))
        handed += _pairs(out)
    while len(carry):
        handed += _pairs(carry.take(_runs(), 50))
    assert len(handed) == len(set(handed)) == sum(next_offset)
    for p in range(3):
        assert [o for q, o in handed if q == p] == list(range(next_offset[p]))


def test_revoked_partitions_are_never_handed_out_again() -> None:
    carry = Carry()
    carry.take(_runs((0, 0, 50), (1, 0, 50)), 40)
    carry.drop({1})
    assert set(carry.first_offsets()) == {0}
    rest = carry.take(_runs((0, 50, 5)), 1000)
    assert _pairs(rest) == [(0, o) for o in range(20, 55)]


def test_finely_interleaved_records_are_taken_oldest_first() -> None:
    runs = [(i % 2, i // 2, 1) for i in range(2 * MAX_RUNS)]
    carry = Carry()
    out = carry.take(_runs(*runs), 10)
    assert _pairs(out) == [(i % 2, i // 2) for i in range(10)]


class _QueueConsumer:
    """librdkafka's consumer queue: messages in the order fetched, partitions in runs; watermarks per partition."""

    def __init__(self, runs: list[tuple[int, int, int]]) -> None:
        self.queue: deque[Message] = deque(
            Message(topic=TOPIC, partition=p, offset=o + i, key=f"k{p}".encode(), value=b"{}", timestamp=(1, o + i))
            for p, o, n in runs for i in range(n))
        self.high = {p: o + n for p, o, n in runs}
        self.on_revoke: Any = None
        self.waits: list[float] = []  # the timeout of every poll() (consume() is only ever asked not to wait)

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.on_revoke = callbacks["on_revoke"]

    def poll(self, timeout: float) -> Message | None:
        self.waits.append(timeout)
        return self.queue.popleft() if self.queue else None

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        return [self.queue.popleft() for _ in range(min(num_messages, len(self.queue)))]

    def get_watermark_offsets(self, tp: CTP, cached: bool = False, timeout: float = 0) -> tuple[int, int]:
        return 0, self.high.get(tp.partition, 0)

    def position(self, tps: list[CTP]) -> list[CTP]:  # librdkafka: last consumed + 1 (what the queue gave us)
        return [CTP(TOPIC, tp.partition, self.high[tp.partition] if not self.queue else -1001) for tp in tps]

    def pause(self, tps: list[CTP]) -> None:
        pass

    def unassign(self) -> None:
        pass


def _source(runs: list[tuple[int, int, int]]) -> tuple[ConfluentSource, _QueueConsumer]:
    consumer = _QueueConsumer(runs)
    source = ConfluentSource(consumer, TOPIC)  # type: ignore[arg-type]
    source.assignment.assigned = {p for p, _, _ in runs}
    return source, consumer


def test_a_confluent_poll_spans_every_partition_though_the_queue_holds_runs() -> None:
    runs = [(p, o, 1000) for o in (0, 1000, 2000) for p in range(4)]  # three fetches of each partition, in turn
    source, _ = _source(runs)
    polls = [source.poll(100, 4000) for _ in range(3)]
    for polled in polls:  # a poll taken from the head of the queue would hold all of 0's and 1's, none of 2's
        assert np.bincount(polled.partition).tolist() == [1000, 1000, 1000, 1000]
    handed = [pair for polled in polls for pair in _pairs(polled)]
    assert sorted(handed) == [(p, o) for p in range(4) for o in range(3000)]
    assert len(source.poll(100, 4000)) == 0


def test_carried_records_count_as_lag_until_handed_out() -> None:
    source, _ = _source([(0, 0, 200), (1, 0, 200)])
    polled = source.poll(100, 300)  # takes all 400 from the client, hands out 150 of each
    positions = {p: int(polled.offset[polled.partition == p].max()) + 1 for p in (0, 1)}
    assert positions == {0: 150, 1: 150}
    assert source.lag(positions) == {0: 50, 1: 50}
    assert source.lag({0: 150}) == {0: 50, 1: 50}  # nothing of 1 processed: its first carried record counts


def test_a_revoke_drops_the_carried_records_of_its_partitions() -> None:
    source, consumer = _source([(0, 0, 200), (1, 0, 200)])
    source.poll(100, 300)
    consumer.on_revoke(consumer, [CTP(TOPIC, 1)])
    rest = source.poll(100, 1000)
    assert _pairs(rest) == [(0, o) for o in range(150, 200)]


def test_nothing_is_handed_out_while_throttled_and_order_holds_after() -> None:
    source, _ = _source([(0, 0, 300), (1, 0, 300)])
    source.throttled = True
    assert len(source.poll(100, 200)) == 0
    source.throttled = False
    handed = _pairs(source.poll(100, 200)) + _pairs(source.poll(100, 1000))
    for p in (0, 1):
        assert [o for q, o in handed if q == p] == list(range(300))


def test_while_throttled_a_confluent_poll_waits_though_records_are_carried() -> None:
    """Nothing can be handed out then, and the paused partitions bring nothing new: a poll that only drained the
    queue (``consume(n, 0)``) would return at once and spin the service loop at full CPU under backpressure."""
    source, consumer = _source([(0, 0, 200), (1, 0, 200)])
    source.poll(100, 300)  # takes all 400, hands out 300, carries 100
    source.throttled = True
    assert len(source.poll(100, 300)) == 0
    assert consumer.waits == [0.1, 0.1]

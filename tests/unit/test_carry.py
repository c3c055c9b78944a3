"""``kafka.carry``: the records a source took from its client and has not handed out yet, an even share of every
partition per poll (the sources' polls over it: test_source_carry.py). What delivery relies on: per partition,
offset order and each record exactly once; nothing carried once revoked.
"""

from __future__ import annotations

import numpy as np

from rnnwatch.consumer.kafka.carry import MAX_RUNS, Carry, even_share
from rnnwatch.consumer.kafka.polled import Polled

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

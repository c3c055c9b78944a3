"""Polls whose waves span every partition: records at hand beyond one poll are carried, and a poll takes an
even share of each partition.

A client hands out records in the order its fetches arrived, a partition's records in runs (librdkafka: a
fetched batch per partition at a time). A poll of ``max_records`` taken from the head of that queue holds one or
two partitions, so its waves hold only their keys, and the poll has as many waves as its busiest key has records
(with 4 partitions and a backlog: ~280 keys a wave instead of 1,000, three to four times the waves and each wave
costs a fixed ~0.35 ms). With :class:`Carry` a source takes more than a poll from the client and hands out a
poll with an even share of every partition at hand; what is left waits for the next poll.

Invariants (what delivery relies on):

* per partition, records are handed out in offset order, each exactly once: a poll takes the *oldest* records
  of each partition (a prefix of what is at hand), so no partition starves;
* nothing is carried when everything at hand fits in one poll: at rates below a poll per poll interval no
  record waits longer than it would have (latency unchanged);
* carried records are not processed, so no checkpoint covers them; a revoked or lost partition's carried
  records are dropped (:meth:`Carry.drop`: the next owner reads them from the committed offset), and the
  first carried offset of a partition is its real position (:meth:`Carry.first_offsets`, for the lag).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnwatch.consumer.kafka.polled import Polled

__all__ = ["MAX_RUNS", "Carry", "even_share"]


MAX_RUNS = 512  # runs of one partition at hand above which a poll simply takes the oldest records


class Carry:
    """Records taken from the client and not handed out yet, as :class:`Polled` columns (no client objects)."""

    def __init__(self) -> None:
        self._held: Polled | None = None

    def __len__(self) -> int:
        return 0 if self._held is None else len(self._held)

    def take(self, fresh: Polled, max_records: int) -> Polled:
        """A poll of at most ``max_records`` from the carried records and ``fresh`` (those first, per partition)."""
        held, self._held = self._held, None
        if held is None:
            if len(fresh) <= max_records:
                return fresh  # the common case below a poll's worth of records: nothing is copied
            sources = [fresh]
        else:
            sources = [held, fresh] if len(fresh) else [held]
        runs = [(i, lo, hi, part) for i, src in enumerate(sources) for lo, hi, part in _runs(src.partition)]
        chosen, rest = _choose(runs, max_records)
        if rest:
            self._held = _gather(sources, rest)
        return _gather(sources, chosen) if chosen else _gather(sources, [(0, 0, 0, 0)])

    def drop(self, partitions: set[int]) -> None:
        """Forget the carried records of ``partitions`` (revoked or lost: their next owner reads them again)."""
        if self._held is None or not partitions:
            return
        kept = [(0, lo, hi, part) for lo, hi, part in _runs(self._held.partition) if part not in partitions]
        self._held = _gather([self._held], kept) if kept else None

    def first_offsets(self) -> dict[int, int]:
        """Partition -> offset of its first carried record: the partition's records from there are unprocessed."""
        if self._held is None:
            return {}
        first: dict[int, int] = {}
        for lo, _hi, part in _runs(self._held.partition):
            first.setdefault(part, int(self._held.offset[lo]))
        return first


Run = tuple[int, int, int, int]  # (source, start, stop, partition): records start..stop-1 of a source


def _runs(partition: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, partition) of each run of consecutive records of one partition."""
    if not partition.size:
        return []
    edges = [0, *(np.flatnonzero(partition[1:] != partition[:-1]) + 1).tolist(), partition.size]
    parts = partition[edges[:-1]].tolist()
    return list(zip(edges[:-1], edges[1:], parts, strict=True))


def _choose(runs: list[Run], budget: int) -> tuple[list[Run], list[Run]]:
    """(runs a poll of ``budget`` takes, runs left): each partition's oldest records, an even share of each."""
    counts: dict[int, int] = {}
    for _src, lo, hi, part in runs:
        counts[part] = counts.get(part, 0) + hi - lo
    # finely interleaved already (more than MAX_RUNS runs): the oldest records, whatever their partition
    quota = dict.fromkeys(counts, budget) if len(runs) > MAX_RUNS else even_share(counts, budget)
    chosen, rest, left = [], [], budget
    for src, lo, hi, part in runs:
        k = min(quota[part], hi - lo, left)
        quota[part] -= k
        left -= k
        if k:
            chosen.append((src, lo, lo + k, part))
        if lo + k < hi:
            rest.append((src, lo + k, hi, part))
    return chosen, rest


def even_share(counts: dict[int, int], budget: int) -> dict[int, int]:
    """Per-partition quotas summing to ``min(budget, total)``, as equal as the partitions' counts allow: each
    min(count, level), the level raised until they sum to the budget (water filling); what rounding leaves
    goes one record each to the partitions with the most records left.

    >>> even_share({0: 4, 1: 2, 2: 1}, 4)
    {2: 1, 1: 1, 0: 2}
    >>> even_share({0: 10, 1: 10, 2: 10}, 20)
    {0: 6, 1: 7, 2: 7}
    """
    quota: dict[int, int] = {}
    left = budget
    order = sorted(counts, key=counts.__getitem__)  # smallest first: they take all they have
    for i, part in enumerate(order):
        quota[part] = min(counts[part], left // (len(order) - i))
        left -= quota[part]
    room = [q for q in order if quota[q] < counts[q]]
    for part in sorted(room, key=lambda q: quota[q] - counts[q])[:left]:  # rounding: those with most left
        quota[part] += 1
    return quota


def _gather(sources: list[Polled], runs: list[Run]) -> Polled:
    """The records of ``runs`` as one Polled, in run order (slices: a few C-level copies, no per-record work)."""
    def cat(column: str) -> np.ndarray:
        return np.concatenate([getattr(sources[s], column)[lo:hi] for s, lo, hi, _ in runs])

    def lists(column: str) -> list[Any]:
        out: list[Any] = []
        for s, lo, hi, _ in runs:
            items: Sequence[Any] | None = getattr(sources[s], column)
            out += [None] * (hi - lo) if items is None else items[lo:hi]
        return out

    headers = None if all(src.headers is None for src in sources) else lists("headers")
    return Polled(sources[0].topic, cat("partition"), cat("offset"), cat("timestamp"), lists("keys"), lists("values"),
                  headers)

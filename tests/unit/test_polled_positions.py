"""``Polled.positions``: run by run for a client's poll (partitions in runs), the same answer as one sort."""

from __future__ import annotations

import numpy as np

from rnnwatch.consumer.kafka.polled import Polled


def _sorted_positions(partition: np.ndarray, offset: np.ndarray) -> tuple[dict[int, int], dict[int, int]]:
    parts = sorted(set(partition.tolist()))
    return ({p: int(offset[partition == p].max()) + 1 for p in parts},
            {p: int((partition == p).sum()) for p in parts})


def test_positions_in_runs_or_interleaved_match_a_sort_of_the_poll() -> None:
    rng = np.random.default_rng(3)
    for runs in (1, 3, 40, 64, 65, 500):
        sizes = rng.integers(1, 30, runs)
        partition = np.repeat(rng.integers(0, 6, runs), sizes).astype(np.int32)
        offset = rng.permutation(partition.size).astype(np.int64)  # any order: the top offset, not the last
        n = partition.size
        polled = Polled.columns("t", partition.tolist(), offset.tolist(), [0] * n, [b"k"] * n, [b"{}"] * n, None)
        assert polled.positions() == _sorted_positions(partition, offset)

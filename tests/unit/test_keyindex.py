"""The state table's numpy key index against a dict model: same rows for the same keys, whatever the hashes."""

from __future__ import annotations

import numpy as np
import pytest

from rnnwatch.consumer import keyindex
from rnnwatch.consumer.state import Column, StateTable


def _table() -> StateTable:
    return StateTable([Column.filled("m.h", (2,), np.float32, 0.0)], identity="m", capacity=4)


def _check(t: StateTable, model: dict[tuple[int, bytes], int]) -> None:
    assert len(t) == len(model)
    for (p, key), row in model.items():
        assert t.row_of(p, key) == row and t.keys[row] == key and t.partition[row] == p
    for p in {p for p, _ in model}:
        assert sorted(t.items(p)) == sorted((k, r) for (q, k), r in model.items() if q == p)
    assert len(set(model.values())) == len(model)
    assert int((t._index._slots >= 0).sum()) == len(model)  # one slot per key: no stale duplicates


@pytest.mark.parametrize("hashing", ["python", "two_values", "all_collide"])
def test_lookups_inserts_and_removals_agree_with_a_dict(hashing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if hashing == "two_values":
        monkeypatch.setattr(keyindex, "hash", lambda k: len(k) % 2, raising=False)
    elif hashing == "all_collide":
        monkeypatch.setattr(keyindex, "hash", lambda k: -7, raising=False)
    rng = np.random.default_rng(11)
    universe = [f"k{i}".encode() for i in range(300)] + [b"", b"\x00", b"k1\x00"]
    t, model = _table(), {}
    for _ in range(60):
        p = int(rng.integers(0, 3))
        batch = [universe[i] for i in rng.integers(0, len(universe), size=int(rng.integers(1, 40)))]
        rows, new = t.rows_for(p, batch)
        seen: set[bytes] = set()
        for key, row, is_new in zip(batch, rows.tolist(), new.tolist(), strict=True):
            if (p, key) in model:
                assert row == model[(p, key)] and not is_new
            else:
                assert is_new and key not in seen
                model[(p, key)] = row
            seen.add(key)
        assert t.rows_of(p, [*batch, b"never"]).tolist() == [*rows.tolist(), -1]
        action = rng.integers(0, 4)
        if action == 0 and model:  # evict some rows
            gone = [pk for pk in model if rng.random() < 0.3]
            t.release_rows([model.pop(pk) for pk in gone])
        elif action == 1:
            t.drop_partition(p)
            model = {pk: r for pk, r in model.items() if pk[0] != p}
        _check(t, model)
    assert t.row_of(0, b"never") is None


def test_a_key_repeated_in_a_batch_gets_one_row_and_only_its_first_record_is_new() -> None:
    t = _table()
    rows, new = t.rows_for(0, [b"a", b"b", b"a", b"c", b"b"])
    assert rows[0] == rows[2] and rows[1] == rows[4] and len(set(rows.tolist())) == 3
    assert new.tolist() == [True, True, False, True, False]


def test_equal_length_keys_stay_bytes() -> None:
    t = _table()
    t.rows_for(0, [b"ab", b"cd"])
    assert sorted(k for k, _ in t.items(0)) == [b"ab", b"cd"]


def test_distinct_keys_in_first_seen_order_and_where_each_record_points() -> None:
    assert keyindex.distinct([b"a", b"b", b"c"]) is None
    once = keyindex.distinct([b"b", b"a", b"b", b"c", b"a"])
    assert once is not None
    unique, where = once
    assert unique == [b"b", b"a", b"c"]
    assert where.tolist() == [0, 1, 0, 2, 1]

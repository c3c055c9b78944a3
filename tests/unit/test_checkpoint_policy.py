"""When a checkpoint is due: on the interval or record count, but a checkpoint that would write many snapshots
per record processed since the last one waits (bounded), so many keys do not spend their time snapshotting.
"""

from __future__ import annotations

import time

from rnnwatch.consumer import checkpoint
from tests.unit.test_changelog import Clock, Owner, keys, new_cluster

INTERVAL_S, MAX_RECORDS = 5.0, 200_000


def owner_after(records_per_key: int, n_keys: int) -> Owner:
    owner = Owner(new_cluster(), Clock())
    for _ in range(records_per_key):
        owner.step(keys(n_keys))
    return owner


def elapsed(owner: Owner, seconds: float) -> None:
    owner.checkpointer.last_run_s = time.monotonic() - seconds


def test_many_changed_keys_with_few_records_each_wait_past_the_interval() -> None:
    n = 2 * checkpoint.CHEAP_SNAPSHOTS
    owner = owner_after(1, n)  # one record per changed key: a checkpoint now writes a snapshot per record
    elapsed(owner, INTERVAL_S + 1)
    assert not owner.checkpointer.due(INTERVAL_S, MAX_RECORDS)
    assert not owner.checkpointer.due(INTERVAL_S, n)  # the record count alone does not force it either


def test_the_wait_ends_once_enough_records_share_each_snapshot() -> None:
    n = 2 * checkpoint.CHEAP_SNAPSHOTS
    per_key = round(1 / checkpoint.SNAPSHOTS_PER_RECORD)
    owner = owner_after(per_key, n)
    elapsed(owner, INTERVAL_S + 1)
    assert owner.checkpointer.due(INTERVAL_S, MAX_RECORDS)


def test_the_wait_is_bounded_in_time() -> None:
    owner = owner_after(1, 2 * checkpoint.CHEAP_SNAPSHOTS)
    elapsed(owner, INTERVAL_S * checkpoint.MAX_WAIT_INTERVALS - 0.5)
    assert not owner.checkpointer.due(INTERVAL_S, MAX_RECORDS)
    elapsed(owner, INTERVAL_S * checkpoint.MAX_WAIT_INTERVALS + 0.5)
    assert owner.checkpointer.due(INTERVAL_S, MAX_RECORDS)


def test_a_cheap_checkpoint_is_due_on_the_interval_and_the_record_count_as_before() -> None:
    owner = owner_after(1, checkpoint.CHEAP_SNAPSHOTS)  # one record per key, but few keys
    elapsed(owner, INTERVAL_S - 1)
    assert not owner.checkpointer.due(INTERVAL_S, MAX_RECORDS)
    assert owner.checkpointer.due(INTERVAL_S, checkpoint.CHEAP_SNAPSHOTS)
    elapsed(owner, INTERVAL_S + 1)
    assert owner.checkpointer.due(INTERVAL_S, MAX_RECORDS)


def test_a_checkpoint_clears_the_changed_keys() -> None:
    owner = owner_after(1, 2 * checkpoint.CHEAP_SNAPSHOTS)
    owner.checkpoint()
    assert owner.store.changed_keys() == 0

"""Nothing is committed or snapshotted past a record whose event was lost (faults a broker cannot stage).

The real service runs over in-memory Kafka clients (``fakes``): deliveries that fail, sends that raise,
an ``on_anomaly`` callback that raises, a rebalance in the middle. After each fault the committed offsets
and the changelog are checked, and a restart must produce every event an uninterrupted run produces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka.errors import KafkaTimeoutError

from rnnwatch.consumer.changelog import read_snapshots
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.errors import DeliveryError
from rnnwatch.consumer.events import AnomalyEvent
from rnnwatch.consumer.runner import make_runner
from rnnwatch.consumer.settings import Settings, load_settings
from rnnwatch.consumer.sink import KafkaSink
from tests.integration.helpers import price_feed
from tests.unit.fakes import FakeCluster, FakeProducer, FakeReader, FakeService, FakeSource

TOPIC = "ticks"
FEED = price_feed(6, 40, shock=(2, 30), seed=3)


def settings(model: Path, **overrides: str) -> Settings:
    values = {"bootstrap_servers": "fake:9092", "input_topic": TOPIC, "group_id": "g", "model": str(model),
              "metrics_port": "0", "metrics_host": "127.0.0.1", "until_caught_up": True,
              "checkpoint_interval_ms": "600000", **overrides}
    return load_settings(values, env={})


def cluster(feed: list[tuple[bytes | None, bytes]] = FEED, partitions: int = 2) -> FakeCluster:
    c = FakeCluster()
    c.create(TOPIC, partitions)
    c.produce(TOPIC, feed)
    return c


def run(c: FakeCluster, model: Path, **kwargs: Any) -> FakeService:
    overrides = kwargs.pop("overrides", {})
    service = FakeService(settings(model, **overrides), cluster=c, **kwargs).start()
    service.run()
    return service


def events(c: FakeCluster) -> dict[str, dict[str, Any]]:
    return {dict(r.headers)["ce_id"].decode(): orjson.loads(r.value) for r in c.all(f"{TOPIC}.anomalies")}


def final_state(c: FakeCluster, model: Path) -> dict[tuple[int, bytes], Any]:
    table = make_runner(load_signature(model), input_topic=TOPIC).table
    latest, _ = read_snapshots(FakeReader(c), "g.state", list(range(len(c.topics[TOPIC]))))
    return {(p, k): table.decode(s.value) for p, keys in latest.items() for k, s in keys.items()}


def committed(c: FakeCluster) -> dict[int, int]:
    return {p: o for (_, topic, p), o in c.committed.items() if topic == TOPIC}


@pytest.fixture(scope="module")
def reference(ewma_path: Path) -> dict[str, Any]:
    c = cluster()
    run(c, ewma_path)
    got = events(c)
    assert len(got) >= 1
    return {"events": got, "state": final_state(c, ewma_path), "committed": committed(c)}


def assert_same_as_reference(c: FakeCluster, model: Path, reference: dict[str, Any]) -> None:
    assert events(c) == reference["events"]
    state = final_state(c, model)
    assert state.keys() == reference["state"].keys()
    for pk, snap in reference["state"].items():
        assert (state[pk].steps, state[pk].input_offset) == (snap.steps, snap.input_offset), pk
        for name, value in snap.values.items():
            np.testing.assert_array_equal(state[pk].values[name], value)


def fail_first_event(exc: BaseException) -> Any:
    seen = {"n": 0}

    def fault(topic: str, key: bytes | None, value: bytes | None) -> BaseException | None:
        if topic.endswith(".anomalies"):
            seen["n"] += 1
            return exc if seen["n"] == 1 else None
        return None
    return fault


def test_a_failed_delivery_fails_every_later_flush() -> None:
    c = FakeCluster()
    c.create("state", 1)
    producer = FakeProducer(c, fail=lambda topic, key, value: KafkaTimeoutError("Expiring 1 record(s)"))
    sink = KafkaSink(producer=producer, output_topic="out", dead_letter_topic="dlq", changelog_topic="state")
    sink.send_snapshot(0, b"k", b"v", [], lambda offset: None)
    with pytest.raises(DeliveryError):
        sink.flush(1.0)
    producer.fail = None
    with pytest.raises(DeliveryError):  # the loss is remembered: no later flush may look clean
        sink.flush(1.0)


def test_a_delivery_failure_stops_the_service_with_nothing_committed_after_it(ewma_path: Path,
                                                                             reference: dict[str, Any]) -> None:
    c = cluster()
    producer = FakeProducer(c, fail=fail_first_event(KafkaTimeoutError("Expiring 1 record(s)")))
    with pytest.raises(DeliveryError):
        run(c, ewma_path, producer=producer)
    assert committed(c) == {}  # not even by the shutdown's checkpoint
    assert c.all("g.state") == []  # no snapshot reflects the records whose event was lost
    run(c, ewma_path)  # the restart replays them
    assert_same_as_reference(c, ewma_path, reference)


def revoke_and_reassign_at(poll: int) -> Any:
    def script(source: FakeSource, n: int) -> None:
        if n == poll:
            owned = set(source.assignment.assigned)
            source.revoke(owned)
            source.assign(owned)
    return script


def test_a_delivery_failure_seen_on_revoke_stops_the_service(ewma_path: Path, reference: dict[str, Any]) -> None:
    c = cluster()
    producer = FakeProducer(c, fail=fail_first_event(KafkaTimeoutError("Expiring 1 record(s)")))
    revoked_at: list[int] = []

    def rebalance_once_an_event_is_pending(source: FakeSource, n: int) -> None:
        if not revoked_at and any(topic.endswith(".anomalies") for topic, *_ in producer.pending):
            revoked_at.append(n)
            revoke_and_reassign_at(n)(source, n)  # its checkpoint flushes the doomed event

    with pytest.raises(DeliveryError):  # the revoke's checkpoint saw the loss: the process must end
        run(c, ewma_path, producer=producer, script=rebalance_once_an_event_is_pending,
            overrides={"max_poll_records": "50"})
    assert revoked_at
    assert committed(c) == {}
    run(c, ewma_path)
    assert_same_as_reference(c, ewma_path, reference)


class CallbackFailed(RuntimeError):
    pass


def test_on_anomaly_raising_stops_without_snapshotting_and_a_restart_replays_its_events(
        ewma_path: Path, reference: dict[str, Any]) -> None:
    def on_anomaly(event: AnomalyEvent) -> None:
        raise CallbackFailed(event.key)

    c = cluster()
    with pytest.raises(CallbackFailed):
        run(c, ewma_path, on_anomaly=on_anomaly)
    assert committed(c) == {}
    assert c.all("g.state") == []  # the stepped rows of the unfinished batch were never snapshotted
    run(c, ewma_path)
    assert_same_as_reference(c, ewma_path, reference)


def test_an_event_send_that_raises_mid_batch_loses_nothing_after_restart(ewma_path: Path,
                                                                        reference: dict[str, Any]) -> None:
    c = cluster()
    producer = FakeProducer(c, raise_on_send=fail_first_event(KafkaTimeoutError("metadata not available")))
    with pytest.raises(KafkaTimeoutError):
        run(c, ewma_path, producer=producer)
    assert committed(c) == {}
    assert c.all("g.state") == []
    run(c, ewma_path)
    assert_same_as_reference(c, ewma_path, reference)


def test_a_snapshot_send_that_raises_keeps_the_unsent_rows_dirty(ewma_path: Path,
                                                                 reference: dict[str, Any]) -> None:
    sends = {"n": 0}

    def second_snapshot_raises(topic: str, key: bytes | None, value: bytes | None) -> BaseException | None:
        if topic == "g.state":
            sends["n"] += 1
            if sends["n"] == 2:
                return KafkaTimeoutError("metadata for g.state not available")
        return None

    c = cluster()
    run(c, ewma_path, producer=FakeProducer(c, raise_on_send=second_snapshot_raises))
    assert committed(c) == reference["committed"]
    assert_same_as_reference(c, ewma_path, reference)  # every key's last state reached the changelog


def test_until_caught_up_waits_for_partitions_held_by_a_dead_member(ewma_path: Path,
                                                                    reference: dict[str, Any]) -> None:
    """The member owns partition 0; partition 1 is held by a member that died (the broker hands it over
    only once that member's session expires, simulated at the 30th poll). Stopping when partition 0 is
    caught up would leave partition 1's records unprocessed, their events never produced."""
    def dead_member_expires(source: FakeSource, n: int) -> None:
        if n == 30:
            source.assign({1})

    c = cluster()
    run(c, ewma_path, owned={0}, script=dead_member_expires)
    assert_same_as_reference(c, ewma_path, reference)


def test_a_stop_during_a_group_join_lets_the_join_complete_before_leaving(ewma_path: Path) -> None:
    """SIGTERM while the member is joining: it must not leave the group before the join completed (the test
    broker would keep the departed member as the group's leader and no later member could ever sync)."""
    c = cluster()
    service = FakeService(settings(ewma_path, until_caught_up="false"), cluster=c, join_polls=5)
    service.start()
    service.source.script = lambda source, n: service.request_stop() if n == 1 else None
    service.run()
    events = service.source.events
    assert events.index("assigned") < events.index("closed"), events


def test_the_revoke_checkpoint_never_waits_longer_than_a_third_of_the_session_timeout(ewma_path: Path) -> None:
    """kafka-python runs the revoke callback on the consumer's IO thread, where no heartbeat goes out: its
    flushes must fit well inside the session timeout, or the member is expelled while it checkpoints."""
    c = cluster()
    producer = FakeProducer(c)
    during_revoke: list[float | None] = []

    def revoke(source: FakeSource, n: int) -> None:
        if n == 3:
            before = len(producer.flush_timeouts)
            revoke_and_reassign_at(3)(source, n)
            during_revoke.extend(producer.flush_timeouts[before:])

    run(c, ewma_path, producer=producer, script=revoke,
        overrides={"session_timeout_ms": "9000", "max_poll_records": "50"})
    assert during_revoke and all(t is not None and t <= 3.0 for t in during_revoke), during_revoke


def test_a_join_that_does_not_complete_in_time_is_not_left(ewma_path: Path) -> None:
    """A stop during a join that never completes (within half the grace period): close without LeaveGroup,
    so the broker drops the member when its session expires instead of keeping it as a departed leader."""
    c = cluster()
    service = FakeService(settings(ewma_path, until_caught_up="false", shutdown_grace_ms="1000"), cluster=c,
                          join_polls=10**9)
    service.start()
    service.source.script = lambda source, n: service.request_stop() if n == 1 else None
    service.run()
    assert service.source.events[-1] == "closed without leaving", service.source.events


def test_a_partition_that_comes_back_to_a_member_brings_its_state(ewma_path: Path,
                                                                  reference: dict[str, Any]) -> None:
    """Partition 1 is the last one the member restored at start-up; a rebalance gives it back alone (after the
    revoke's checkpoint wrote its keys' snapshots), partition 0 follows later. Both must continue from their
    snapshots: a restore that read nothing left partition 1's keys cold, with events and state unlike an
    uninterrupted run's."""
    def rebalance(source: FakeSource, n: int) -> None:
        if n == 8:  # partition 0 is done, partition 1 half way (30 records a poll, 0 first)
            source.revoke({0, 1})
            source.assign({1})
        if n == 10:
            source.assign({0})

    c = cluster()
    run(c, ewma_path, script=rebalance, overrides={"max_poll_records": "30"})
    assert committed(c) == reference["committed"]
    assert_same_as_reference(c, ewma_path, reference)


def test_a_commit_refused_by_a_rebalance_is_survived_and_the_next_checkpoint_commits(
        ewma_path: Path, reference: dict[str, Any]) -> None:
    """A RebalancedError from the commit (whichever client said it) is logged, not fatal: the snapshots are in
    the changelog, and the next checkpoint commits the positions."""
    from rnnwatch.consumer.errors import RebalancedError

    refused: list[dict[int, int]] = []

    def refuse_the_first_commit(source: FakeSource, n: int) -> None:
        if n == 1:
            real = source.commit

            def commit(positions: dict[int, int], *, blocking: bool = True) -> None:
                if positions and not refused:
                    refused.append(dict(positions))
                    raise RebalancedError("offset commit refused, the group is rebalancing")
                real(positions, blocking=blocking)
            source.commit = commit  # type: ignore[method-assign]

    c = cluster()
    run(c, ewma_path, script=refuse_the_first_commit,
        overrides={"max_poll_records": "60", "checkpoint_records": "60"})
    assert refused
    assert committed(c) == reference["committed"]
    assert_same_as_reference(c, ewma_path, reference)


def test_an_event_names_its_input_records_partition_offset_and_kafka_timestamp(ewma_path: Path) -> None:
    c = FakeCluster()
    c.create(TOPIC, 2)
    for i, (key, value) in enumerate(FEED):  # every record its own Kafka timestamp, some polls with refusals
        c.append(TOPIC, sum(key or b"") % 2, key, value if i % 7 else b"{not json", timestamp=1_700_000_000_000 + i)
    run(c, ewma_path)
    got = list(events(c).values())
    assert got
    by_position = {(r.partition, r.offset): r for r in c.all(TOPIC)}
    for body in got:
        source = by_position[(body["input"]["partition"], body["input"]["offset"])]
        assert body["input"]["timestamp"] == source.timestamp
        assert orjson.loads(source.value)["symbol"] == body["key"]

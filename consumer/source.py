"""The consumer side: a kafka-python group consumer, its rebalance listener, positions and lag.

kafka-python 3 runs rebalance callbacks on its IO thread while the main thread is inside ``poll()``; a sync
callback must not call blocking consumer APIs. So the listener only *records* what happened and pauses newly
assigned partitions; the service restores their state in its own loop and resumes them. Revocation is the
exception: the state of revoked partitions must be checkpointed before the new owner restores it, so the
revoke hook (given by the service) flushes the producer and commits asynchronously, all without calling a
blocking consumer API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from rnnwatch.consumer.errors import BrokerError
from rnnwatch.consumer.settings import Settings

__all__ = ["Assignment", "KafkaSource", "consumer_config"]

log = logging.getLogger(__name__)


def consumer_config(settings: Settings, *, group: bool = True) -> dict[str, Any]:
    config: dict[str, Any] = dict(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        client_id=settings.client_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
        max_poll_records=settings.max_poll_records,
        isolation_level="read_committed",
        **settings.kafka_security(),
    )
    if group:
        heartbeat = settings.heartbeat_interval_ms or max(100, settings.session_timeout_ms // 4)
        config.update(group_id=settings.group_id, session_timeout_ms=settings.session_timeout_ms,
                      heartbeat_interval_ms=heartbeat, max_poll_interval_ms=settings.max_poll_interval_ms)
    return config


@dataclass
class Assignment:
    """What the listener saw since the service last looked (touched only inside poll and by the service)."""

    to_restore: set[int] = field(default_factory=set)
    assigned: set[int] = field(default_factory=set)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.source.handle_revoked({tp.partition for tp in revoked if tp.topic == self.source.topic}, lost=False)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.source.handle_revoked({tp.partition for tp in lost if tp.topic == self.source.topic}, lost=True)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in assigned if tp.topic == self.source.topic}
        self.source.assignment.assigned |= parts
        self.source.assignment.to_restore |= parts
        if assigned:
            self.source.consumer.pause(*assigned)
        self.source.on_assigned(parts)


class KafkaSource:
    """Owns the group consumer; reports assignment changes through callbacks set by the service."""

    def __init__(self, consumer: KafkaConsumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self.assignment = Assignment()
        self.on_revoked: Callable[[set[int], bool], None] = lambda parts, lost: None
        self.on_assigned: Callable[[set[int]], None] = lambda parts: None
        self.throttled = False  # paused by backpressure: restored partitions wait for throttle(False)

    @classmethod
    def connect(cls, settings: Settings) -> KafkaSource:
        consumer = _wait_for_broker(lambda: KafkaConsumer(**consumer_config(settings)), settings)
        source = cls(consumer, settings.input_topic)
        consumer.subscribe([settings.input_topic], listener=_Listener(source))
        return source

    def handle_revoked(self, partitions: set[int], *, lost: bool) -> None:
        self.assignment.assigned -= partitions
        self.assignment.to_restore -= partitions
        self.on_revoked(partitions, lost)

    def poll(self, timeout_ms: int, max_records: int) -> list[Any]:
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        if len(polled) == 1:
            return list(next(iter(polled.values())))
        return [rec for records in polled.values() for rec in records]

    def resume(self, partitions: set[int]) -> None:
        if not self.throttled:
            self.consumer.resume(*(TopicPartition(self.topic, p) for p in partitions))

    def throttle(self, on: bool) -> None:
        """Pause every assigned partition (backpressure), or resume those whose state is restored."""
        self.throttled = on
        mine = [tp for tp in self.consumer.assignment() if tp.topic == self.topic]
        if on:
            self.consumer.pause(*mine)
        else:
            self.consumer.resume(*(tp for tp in mine if tp.partition not in self.assignment.to_restore))

    def commit(self, positions: dict[int, int], *, blocking: bool = True) -> None:
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()}
        if not offsets:
            return
        if blocking:
            self.consumer.commit(offsets)
        else:
            self.consumer.commit_async(offsets)

    def partitions(self) -> set[int]:
        """Every partition of the input topic (from metadata)."""
        return set(self.consumer.partitions_for_topic(self.topic) or ())

    def committed(self, partition: int) -> int | None:
        """The group's committed offset of an input partition (a blocking call: main thread only)."""
        offset = self.consumer.committed(TopicPartition(self.topic, partition))
        return None if offset is None else int(offset)

    def lag(self, positions: dict[int, int]) -> dict[int, int]:
        """Highwater minus our processed position, for partitions whose highwater is known."""
        out = {}
        for p in self.assignment.assigned:
            try:
                hw = self.consumer.highwater(TopicPartition(self.topic, p))
            except Exception:  # noqa: BLE001 - partition moved between the callback and this call
                log.debug("no highwater for %s[%d]", self.topic, p)
                continue
            if hw is not None:
                out[p] = max(0, hw - positions.get(p, self._position(p)))
        return out

    def _position(self, partition: int) -> int:
        try:
            return int(self.consumer.position(TopicPartition(self.topic, partition), timeout_ms=1000))
        except Exception:  # noqa: BLE001
            return 0

    def close(self, *, leave: bool = True) -> None:
        """Close the consumer; ``leave=False`` skips the LeaveGroup (the session then expires on its own).

        Used when stopping in the middle of a join that does not complete: leaving a group that is still
        forming wedges some brokers (see ``Service._finish_join``). kafka-python sends no LeaveGroup for a
        member whose generation was reset, so that is how it is skipped.
        """
        if not leave:
            coordinator = getattr(self.consumer, "_coordinator", None)
            if coordinator is not None and hasattr(coordinator, "reset_generation"):
                coordinator.reset_generation()
        self.consumer.close(autocommit=False)


def _wait_for_broker(make: Callable[[], Any], settings: Settings) -> Any:
    """Build a client, retrying with backoff until broker_wait_ms; then fail with a clear error."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + settings.broker_wait_ms / 1000
    delay = 0.2
    while True:
        try:
            return make()
        except KafkaError as exc:
            if time.monotonic() + delay > deadline:
                msg = (f"cannot reach Kafka at {settings.bootstrap_servers} after {settings.broker_wait_ms} ms "
                       f"({type(exc).__name__}: {exc}); check --bootstrap-servers and that the broker is up")
                raise BrokerError(msg) from exc
            log.warning("broker not reachable yet (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

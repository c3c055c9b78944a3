"""The small protocols every Kafka client of rnnwatch hides behind, and the plain types they exchange.

Four roles, one per way rnnwatch talks to Kafka:

* :class:`GroupSource` — the group member that reads the input (subscribe, poll, pause/resume, commit,
  rebalance callbacks);
* :class:`Producer` — sends records with a per-record delivery callback, flushes, serves callbacks;
* :class:`PartitionReader` — a consumer outside the group that assigns one partition, seeks and reads it
  up to its highwater (changelog restore, revive, ends of other members' partitions);
* :class:`Admin` — topic metadata, creation and configs.

A :class:`Transport` makes all four from one :class:`~rnnwatch.consumer.kafka.config.KafkaConfig`:
kafka-python (default), librdkafka through confluent-kafka (``[fast]`` extra), or the in-memory cluster of
``rnnwatch.consumer.testing``. Nothing outside ``consumer/kafka`` imports a Kafka client, and every client
error leaves this package as an rnnwatch error (``BrokerError``, ``RebalancedError``, ``ConfigError``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

__all__ = ["Admin", "Assignment", "Delivered", "GroupSource", "Headers", "PartitionReader", "Producer", "Record",
           "TopicPartition", "Transport"]

Headers = list[tuple[str, bytes]]
# Delivery callback: (offset, None) once the broker acknowledged the record, (None, error) when it gave up.
Delivered = Callable[[int | None, BaseException | None], None]


class TopicPartition(NamedTuple):
    """A partition of a topic (equal to kafka-python's namedtuple of the same fields)."""

    topic: str
    partition: int


@dataclass(slots=True)
class Record:
    """A consumed record as rnnwatch reads it, whichever client fetched it (``timestamp`` in ms)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Sequence[tuple[str, bytes | None]] = ()


@dataclass
class Assignment:
    """What the rebalance callbacks saw since the service last looked (touched inside poll and by the service)."""

    to_restore: set[int] = field(default_factory=set)
    assigned: set[int] = field(default_factory=set)


class GroupSource(Protocol):
    """The group member reading the input topic.

    Rebalance callbacks run inside :meth:`poll` (on the poll thread for librdkafka and the in-memory
    transport, on kafka-python's IO thread while the poll thread waits): ``on_assigned`` after newly
    assigned partitions were paused (the service restores their state, then :meth:`resume`s them),
    ``on_revoked(partitions, lost)`` before they go.
    """

    assignment: Assignment
    on_revoked: Callable[[set[int], bool], None]
    on_assigned: Callable[[set[int]], None]

    def poll(self, timeout_ms: int, max_records: int) -> Sequence[Any]:
        """Up to ``max_records`` records (each with the fields of :class:`Record`), waiting up to ``timeout_ms``."""
    def resume(self, partitions: set[int]) -> None: ...
    def throttle(self, on: bool) -> None: ...
    def commit(self, positions: dict[int, int], *, blocking: bool = True) -> None: ...
    def partitions(self) -> set[int]: ...
    def committed(self, partition: int) -> int | None: ...
    def lag(self, positions: dict[int, int]) -> dict[int, int]: ...
    def close(self, *, leave: bool = True) -> None: ...


class Producer(Protocol):
    """Asynchronous sends; ``on_delivery`` runs on a client thread or inside :meth:`serve`/:meth:`flush`."""

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int | None,
             on_delivery: Delivered) -> None: ...
    def serve(self) -> None:
        """Run delivery callbacks that are due (clients that only call them from the caller's thread)."""
    def flush(self, timeout_s: float) -> None:
        """Wait for every send so far; raise BrokerError if some are still unacknowledged after ``timeout_s``."""
    def close(self, timeout_s: float) -> None: ...


class PartitionReader(Protocol):
    """A consumer outside any group reading one partition at a time (the kafka-python calls restore used)."""

    def assign(self, tps: list[TopicPartition]) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...
    def seek_to_end(self, tp: TopicPartition) -> None: ...
    def position(self, tp: TopicPartition) -> int: ...
    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end as the last fetch reported it (None before any fetch)."""
    def read(self, timeout_ms: int, max_records: int) -> Sequence[Any]: ...
    def close(self) -> None: ...


class Admin(Protocol):
    def partition_count(self, topic: str) -> int | None:
        """Partitions of ``topic`` from metadata; None if it does not exist."""
    def create_topic(self, topic: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> bool:
        """Create ``topic``; False if it already existed. ConfigError/BrokerError when refused."""
    def cleanup_policy(self, topic: str) -> str | None:
        """The topic's ``cleanup.policy`` (None when the broker does not report it)."""
    def close(self) -> None: ...


class Transport(Protocol):
    """Makes the clients of one service from one configuration (no network call until a client is made)."""

    name: str

    def source(self, topic: str) -> GroupSource: ...
    def producer(self) -> Producer: ...
    def reader(self) -> PartitionReader: ...
    def admin(self) -> Admin: ...

"""An in-memory Kafka for tests: the real :class:`~rnnwatch.consumer.service.Service` over fake clients.

:class:`MemoryCluster` holds topics (lists of records per partition) and committed offsets.
:class:`MemoryTransport` makes the four clients of ``rnnwatch.consumer.kafka`` over it, so the pipeline, the
checkpoint protocol, restore and the lifecycle run unchanged and fast, with faults a real broker cannot be
made to produce on demand:

* :class:`MemoryProducer` — buffers sends and delivers them at ``flush()``, in order; ``fail`` decides
  per record whether the delivery fails, ``raise_on_send`` makes ``send()`` itself raise;
* :class:`MemoryReader` — the partition reader the changelog restore uses, counting what it reads;
* :class:`MemorySource` — a group member with scripted rebalances (``script(source, poll_number)``), like
  kafka-python's eager protocol: the first poll starts a join with an empty revocation and the assignment
  follows ``join_polls`` polls later; ``events`` records revocations, assignments and the close;
* :class:`MemoryAdmin` — topic metadata and creation.

Example::

    cluster = MemoryCluster()
    cluster.create("ticks", 2)
    cluster.produce("ticks", [(b"EURUSD", b'{"ts": 1700000000, "price": 1.08}')])
    service = Service(settings, transport=MemoryTransport(cluster, group=settings.group_id)).start()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rnnwatch.consumer.kafka.protocols import Assignment, Delivered, Headers, Record, TopicPartition

__all__ = ["Fault", "MemoryAdmin", "MemoryCluster", "MemoryProducer", "MemoryReader", "MemorySource",
           "MemoryTransport", "Script"]

_TS = 1_700_000_000_000


@dataclass
class MemoryCluster:
    topics: dict[str, list[list[Record]]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, p) -> offset

    def create(self, topic: str, partitions: int) -> None:
        self.topics.setdefault(topic, [[] for _ in range(partitions)])

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               headers: Headers | None = None, timestamp: int = _TS) -> int:
        log = self.topics[topic][partition]
        log.append(Record(topic, partition, len(log), key, value, timestamp, list(headers or [])))
        return len(log) - 1

    def produce(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Keyed records land in a partition chosen by key, like the default partitioner (stable per key)."""
        n = len(self.topics[topic])
        for key, value in records:
            self.append(topic, sum(key or b"") % n, key, value)

    def all(self, topic: str) -> list[Record]:
        return [r for part in self.topics.get(topic, []) for r in part]


# (topic, key, value) -> an exception to fail the delivery (or the send) with, or None
Fault = Callable[[str, bytes | None, bytes | None], BaseException | None]
# Called inside poll() before records are returned: (source, poll number) -> None
Script = Callable[["MemorySource", int], None]


class MemoryProducer:
    """Buffers sends; ``flush()`` delivers them in order (or fails those ``fail`` picks)."""

    def __init__(self, cluster: MemoryCluster, fail: Fault | None = None, raise_on_send: Fault | None = None) -> None:
        self.cluster = cluster
        self.fail = fail
        self.raise_on_send = raise_on_send
        self.pending: list[tuple[str, int | None, bytes | None, bytes | None, Headers, Delivered]] = []
        self.flush_timeouts: list[float] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int | None,
             on_delivery: Delivered) -> None:
        if self.raise_on_send is not None and (exc := self.raise_on_send(topic, key, value)) is not None:
            raise exc
        self.pending.append((topic, partition, key, value, list(headers), on_delivery))

    def serve(self) -> None:
        """Deliveries happen at flush()."""

    def flush(self, timeout_s: float) -> None:
        self.flush_timeouts.append(timeout_s)
        pending, self.pending = self.pending, []
        for topic, partition, key, value, headers, on_delivery in pending:
            exc = self.fail(topic, key, value) if self.fail is not None else None
            if exc is not None:
                on_delivery(None, exc)
                continue
            p = partition if partition is not None else sum(key or b"") % len(self.cluster.topics[topic])
            on_delivery(self.cluster.append(topic, p, key, value, headers), None)

    def close(self, timeout_s: float) -> None:
        self.flush(timeout_s)


class MemoryReader:
    """Reads partitions of the cluster ``batch`` records per read; ``records_read`` counts them.

    Like kafka-python, a partition's highwater is the one its last read reported (None before any), kept
    while the partition stays assigned however far the partition has grown since.
    """

    def __init__(self, cluster: MemoryCluster, batch: int = 500) -> None:
        self.cluster = cluster
        self.batch = batch
        self.records_read = 0
        self._positions: dict[TopicPartition, int] = {}
        self._highwater: dict[TopicPartition, int] = {}

    def assign(self, tps: list[TopicPartition]) -> None:
        self._positions = {tp: self._positions.get(tp, 0) for tp in tps}
        self._highwater = {tp: hw for tp, hw in self._highwater.items() if tp in self._positions}

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    def seek_to_end(self, tp: TopicPartition) -> None:
        self._positions[tp] = self._end(tp)

    def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._highwater.get(tp)

    def _end(self, tp: TopicPartition) -> int:
        return len(self.cluster.topics[tp.topic][tp.partition])

    def read(self, timeout_ms: int, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp, pos in self._positions.items():
            self._highwater[tp] = self._end(tp)  # every fetch response carries the partition's end
            records = self.cluster.topics[tp.topic][tp.partition][pos:pos + min(max_records, self.batch)]
            self._positions[tp] = pos + len(records)
            self.records_read += len(records)
            out.extend(records)
        return out

    def close(self) -> None:
        self._positions = {}
        self._highwater = {}


class MemorySource:
    """A group member that owns ``partitions`` from its first join; ``script`` can revoke and reassign."""

    def __init__(self, cluster: MemoryCluster, topic: str, group: str, partitions: set[int],
                 script: Script | None = None, join_polls: int = 0) -> None:
        self.cluster, self.topic, self.group = cluster, topic, group
        self.assignment = Assignment()
        self.on_revoked: Callable[[set[int], bool], None] = lambda parts, lost: None
        self.on_assigned: Callable[[set[int]], None] = lambda parts: None
        self.script = script
        self.join_polls = join_polls
        self.events: list[str] = []
        self.polls = 0
        self._initial = set(partitions)
        self._positions: dict[int, int] = {}
        self._paused: set[int] = set()
        self.throttled = False

    def assign(self, partitions: set[int]) -> None:
        self.events.append("assigned")
        self.assignment.assigned |= partitions
        self.assignment.to_restore |= partitions
        self._paused |= partitions
        for p in partitions:
            self._positions[p] = self.cluster.committed.get((self.group, self.topic, p), 0)
        self.on_assigned(partitions)

    def revoke(self, partitions: set[int], *, lost: bool = False) -> None:
        self.events.append("revoked")
        self.assignment.assigned -= partitions
        self.assignment.to_restore -= partitions
        self.on_revoked(partitions, lost)

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        self.polls += 1
        if self.polls == 1:
            self.revoke(set())  # a join begins
        if self.polls == 1 + self.join_polls:
            self.assign(self._initial)
        if self.script is not None:
            self.script(self, self.polls)
        out: list[Record] = []
        for p in [] if self.throttled else sorted(self.assignment.assigned - self._paused):
            log = self.cluster.topics[self.topic][p]
            records = log[self._positions[p]:self._positions[p] + max_records - len(out)]
            self._positions[p] += len(records)
            out.extend(records)
        return out

    def resume(self, partitions: set[int]) -> None:
        self._paused -= partitions

    def throttle(self, on: bool) -> None:
        """Backpressure: while on, polls return nothing (every partition paused)."""
        self.throttled = on

    def commit(self, positions: dict[int, int], *, blocking: bool = True) -> None:
        for p, offset in positions.items():
            self.cluster.committed[(self.group, self.topic, p)] = offset

    def partitions(self) -> set[int]:
        return set(range(len(self.cluster.topics[self.topic])))

    def committed(self, partition: int) -> int | None:
        return self.cluster.committed.get((self.group, self.topic, partition))

    def lag(self, positions: dict[int, int]) -> dict[int, int]:
        return {p: len(self.cluster.topics[self.topic][p]) - positions.get(p, self._positions[p])
                for p in self.assignment.assigned}

    def close(self, *, leave: bool = True) -> None:
        if self.assignment.assigned:
            self.revoke(set(self.assignment.assigned))
        self.events.append("closed" if leave else "closed without leaving")


class MemoryAdmin:
    def __init__(self, cluster: MemoryCluster) -> None:
        self.cluster = cluster
        self.created: list[tuple[str, int, int, dict[str, str]]] = []

    def partition_count(self, topic: str) -> int | None:
        return len(self.cluster.topics[topic]) if topic in self.cluster.topics else None

    def create_topic(self, topic: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> bool:
        if topic in self.cluster.topics:
            return False
        self.created.append((topic, partitions, replication_factor, dict(configs)))
        self.cluster.create(topic, partitions)
        return True

    def cleanup_policy(self, topic: str) -> str | None:
        return None  # like the test broker: not reported

    def close(self) -> None:
        """Nothing to close."""


class MemoryTransport:
    """The clients of one service over a :class:`MemoryCluster` (the ones made are kept for inspection)."""

    name = "memory"

    def __init__(self, cluster: MemoryCluster, *, group: str, producer: MemoryProducer | None = None,
                 owned: set[int] | None = None, script: Script | None = None, join_polls: int = 0) -> None:
        self.cluster, self.group = cluster, group
        self.the_producer = producer or MemoryProducer(cluster)
        self.the_reader = MemoryReader(cluster)
        self.owned, self.script, self.join_polls = owned, script, join_polls
        self.sources: list[MemorySource] = []

    def source(self, topic: str) -> MemorySource:
        owned = set(range(len(self.cluster.topics[topic]))) if self.owned is None else self.owned
        source = MemorySource(self.cluster, topic, self.group, owned, self.script, self.join_polls)
        self.sources.append(source)
        return source

    def producer(self) -> MemoryProducer:
        return self.the_producer

    def reader(self) -> MemoryReader:
        return self.the_reader

    def admin(self) -> MemoryAdmin:
        return MemoryAdmin(self.cluster)

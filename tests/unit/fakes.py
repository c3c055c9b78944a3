"""In-memory stand-ins for the Kafka clients, for faults a real broker cannot be made to produce on demand.

A :class:`FakeCluster` holds topics (lists of records per partition) and committed offsets. Around it:
``FakeProducer`` (the kafka-python producer surface the real ``KafkaSink`` uses, with injectable delivery
failures), ``FakeReader`` (the consumer surface the changelog restore uses, counting what it reads) and
``FakeSource`` (what the service needs of ``KafkaSource``: poll, pause/resume through the assignment,
commits, lag, scripted rebalances). ``FakeService`` is the real ``Service`` wired to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from rnnwatch.consumer.service import Service
from rnnwatch.consumer.sink import KafkaSink
from rnnwatch.consumer.source import Assignment


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int = 1_700_000_000_000


@dataclass(frozen=True)
class Metadata:
    offset: int


@dataclass
class FakeCluster:
    topics: dict[str, list[list[FakeRecord]]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, p) -> offset

    def create(self, topic: str, partitions: int) -> None:
        self.topics.setdefault(topic, [[] for _ in range(partitions)])

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, bytes]] | None = None, timestamp: int = 1_700_000_000_000) -> int:
        log = self.topics[topic][partition]
        log.append(FakeRecord(topic, partition, len(log), key, value, list(headers or []), timestamp))
        return len(log) - 1

    def produce(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        """Keyed records land in a partition chosen by key, like the default partitioner (stable per key)."""
        n = len(self.topics[topic])
        for key, value in records:
            self.append(topic, sum(key or b"") % n, key, value)

    def all(self, topic: str) -> list[FakeRecord]:
        return [r for part in self.topics.get(topic, []) for r in part]


class FakeFuture:
    def __init__(self) -> None:
        self._callbacks: list[Callable[[Any], None]] = []
        self._errbacks: list[Callable[[BaseException], None]] = []

    def add_callback(self, f: Callable[[Any], None]) -> FakeFuture:
        self._callbacks.append(f)
        return self

    def add_errback(self, f: Callable[[BaseException], None]) -> FakeFuture:
        self._errbacks.append(f)
        return self

    def succeed(self, value: Any) -> None:
        for f in self._callbacks:
            f(value)

    def fail(self, exc: BaseException) -> None:
        for f in self._errbacks:
            f(exc)


Headers = list[tuple[str, bytes]]
# (topic, key, value) -> an exception to fail the delivery with, or None to deliver
Fault = Callable[[str, bytes | None, bytes | None], BaseException | None]


class FakeProducer:
    """Buffers sends and delivers them at flush(), in order; ``fail`` decides per record, ``raise_on_send``
    makes send() itself raise (as kafka-python does for a metadata timeout or an oversized record)."""

    def __init__(self, cluster: FakeCluster, fail: Fault | None = None, raise_on_send: Fault | None = None) -> None:
        self.cluster = cluster
        self.fail = fail
        self.raise_on_send = raise_on_send
        self._pending: list[tuple[str, int | None, bytes | None, bytes | None, Headers, FakeFuture]] = []
        self.flush_timeouts: list[float | None] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> FakeFuture:
        if self.raise_on_send is not None and (exc := self.raise_on_send(topic, key, value)) is not None:
            raise exc
        future = FakeFuture()
        self._pending.append((topic, partition, key, value, list(headers or []), future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flush_timeouts.append(timeout)
        pending, self._pending = self._pending, []
        for topic, partition, key, value, headers, future in pending:
            exc = self.fail(topic, key, value) if self.fail is not None else None
            if exc is not None:
                future.fail(exc)
                continue
            n = len(self.cluster.topics[topic])
            p = partition if partition is not None else sum(key or b"") % n
            future.succeed(Metadata(self.cluster.append(topic, p, key, value, headers)))

    def close(self, timeout: float | None = None) -> None:
        self.flush()


class FakeReader:
    """The consumer calls the changelog restore makes (assign/seek/poll/position/highwater), over a cluster.

    Like kafka-python, a partition's highwater is the one its last fetch (poll) reported, None before any; and
    ``assign()`` keeps the state of a partition that stays assigned, that highwater included, however far the
    partition has grown since: only a fetch made now tells its end.
    """

    def __init__(self, cluster: FakeCluster, batch: int = 500) -> None:
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

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self._positions[tp] = 0

    def seek_to_end(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self._positions[tp] = self._end(tp)

    def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._highwater.get(tp)

    def _end(self, tp: TopicPartition) -> int:
        return len(self.cluster.topics[tp.topic][tp.partition])

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[FakeRecord]]:
        out = {}
        for tp, pos in self._positions.items():
            records = self.cluster.topics[tp.topic][tp.partition][pos:pos + (max_records or self.batch)]
            self._highwater[tp] = self._end(tp)  # every fetch response carries the partition's end
            if records:
                out[tp] = records
                self._positions[tp] = pos + len(records)
                self.records_read += len(records)
        return out

    def close(self) -> None:
        self._positions = {}
        self._highwater = {}


# Called inside poll() before records are returned: (source, poll number) -> None
Script = Callable[["FakeSource", int], None]


class FakeSource:
    """A group member that owns ``partitions`` from its first poll; ``script`` can revoke and reassign.

    Like kafka-python's eager protocol, the first poll starts a join with an (empty) revocation; the
    assignment follows ``join_polls`` polls later. ``events`` records revocations, assignments and close.
    """

    def __init__(self, cluster: FakeCluster, topic: str, group: str, partitions: set[int],
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

    def poll(self, timeout_ms: int, max_records: int) -> list[FakeRecord]:
        self.polls += 1
        if self.polls == 1:
            self.revoke(set())  # a join begins
        if self.polls == 1 + self.join_polls:
            self.assign(self._initial)
        if self.script is not None:
            self.script(self, self.polls)
        out: list[FakeRecord] = []
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


class FakeService(Service):
    """The real service (pipeline, checkpoint, changelog, lifecycle) over fake Kafka clients."""

    def __init__(self, *args: Any, cluster: FakeCluster, producer: FakeProducer | None = None,
                 script: Script | None = None, owned: set[int] | None = None, join_polls: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster = cluster
        self.producer = producer or FakeProducer(cluster)
        self.script = script
        self.owned = owned
        self.join_polls = join_polls
        self.reader = FakeReader(cluster)

    def _connect(self) -> tuple[Any, Any, Any]:
        s = self.settings
        n = len(self.cluster.topics[s.input_topic])
        for topic in (s.output_topic, s.dead_letter_topic, s.changelog_topic):
            self.cluster.create(topic, n)
        owned = set(range(n)) if self.owned is None else self.owned
        source = FakeSource(self.cluster, s.input_topic, s.group_id, owned, self.script, self.join_polls)
        sink = KafkaSink(producer=self.producer, output_topic=s.output_topic, dead_letter_topic=s.dead_letter_topic,
                         changelog_topic=s.changelog_topic, on_event_delivered=self.metrics.events_produced.inc,
                         on_error=lambda kind: self.metrics.produce_errors.labels(kind).inc())
        return source, sink, self.reader

"""The librdkafka transport (confluent-kafka, the ``[fast]`` extra): same roles as kafka-python's, faster.

librdkafka's own rules, and how this module follows them:

* rebalance callbacks (``on_assign``/``on_revoke``/``on_lost``) run inside ``poll``/``consume`` on the
  poll thread, and heartbeats go out from librdkafka's own thread meanwhile, so a revoke may checkpoint
  synchronously (commits here are always synchronous). ``on_assign`` assigns explicitly, then pauses the
  new partitions until their state is restored (a pause before the assignment would not stick);
* offsets are never stored or committed automatically (``enable.auto.commit=false``,
  ``enable.auto.offset.store=false``): only the checkpoint commits, explicit offsets it decided;
* the first record is waited for with ``poll(timeout)``, the rest of a batch taken with
  ``consume(n, 0)`` (``consume(n, timeout)`` would wait for all ``n``);
* librdkafka hands out a partition's records in runs (a fetched batch at a time), so a poll taken from the head
  of its queue holds one or two partitions and its waves a fraction of the keys: the source takes up to
  ``LOOKAHEAD_POLLS`` polls' worth and hands out an even share of every partition, carrying the rest
  (``kafka.carry``: per-partition order kept, carried records dropped on revoke and counted in the lag); and
  fetches ask for at most ``RDKAFKA_PARTITION_FETCH_BYTES`` per partition (``kafka.config``), so the runs are
  short enough for a poll to span every partition;
* ``fetch.queue.backoff.ms=10`` (default 1 s stalls a consumer that drains the prefetch queue quickly);
* client constructors do not connect: start-up checks the broker with a metadata request bounded by
  ``broker_wait_ms``; configuration errors (a ``--kafka-config`` name librdkafka does not know) become
  ``ConfigError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import Producer as RdProducer
from confluent_kafka import TopicPartition as CTP
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from rnnwatch.consumer.errors import BrokerError, ConfigError, RebalancedError
from rnnwatch.consumer.kafka.carry import Carry
from rnnwatch.consumer.kafka.config import MAX_REQUEST_BYTES, KafkaConfig
from rnnwatch.consumer.kafka.polled import Polled
from rnnwatch.consumer.kafka.protocols import Assignment, Delivered, Headers, Record, TopicPartition

__all__ = ["ConfluentAdmin", "ConfluentProducer", "ConfluentReader", "ConfluentSource", "ConfluentTransport"]

log = logging.getLogger(__name__)
_second = itemgetter(1)  # of a (timestamp type, timestamp) pair
_UNASSIGNED = -1  # RD_KAFKA_PARTITION_UA
# Records a poll takes from librdkafka, in polls: what its even share of each partition is chosen from. Waves of
# a 4-partition backlog of 1,000 keys, 200,000 records: 723 without; 434 (1.25), 409 (1.5), 364 (2). At most
# (LOOKAHEAD_POLLS - 1) polls are carried: 1.5 keeps half a poll (~2 MB with 20,000 small records).
LOOKAHEAD_POLLS = 1.5

_REBALANCED = {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID}


def _build(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except (KafkaException, ValueError, TypeError) as exc:
        msg = f"librdkafka refused the client configuration: {exc} (check --kafka-config names and values)"
        raise ConfigError(msg) from exc


def _wait_for_broker(client: Any, config: KafkaConfig) -> None:
    """One metadata request bounded by broker_wait_ms: fail fast, with the same message as kafka-python's."""
    try:
        client.list_topics(timeout=config.broker_wait_ms / 1000)
    except KafkaException as exc:
        msg = (f"cannot reach Kafka at {config.bootstrap} after {config.broker_wait_ms} ms ({exc}); check "
               "--bootstrap-servers and that the broker is up")
        raise BrokerError(msg) from exc


class ConfluentTransport:
    name = "confluent"

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config

    def source(self, topic: str) -> ConfluentSource:
        consumer = _build(lambda: Consumer(self.config.rdkafka_consumer(group=True), logger=log))
        _wait_for_broker(consumer, self.config)
        return ConfluentSource(consumer, topic, self.config.settings.auto_offset_reset)

    def producer(self) -> ConfluentProducer:
        config = self.config.rdkafka_producer(**{
            "acks": "all", "linger.ms": 5, "message.max.bytes": MAX_REQUEST_BYTES, "message.timeout.ms": 120_000})
        return ConfluentProducer(_build(lambda: RdProducer(config, logger=log)))

    def reader(self) -> ConfluentReader:
        return ConfluentReader(_build(lambda: Consumer(self.config.rdkafka_consumer(group=False), logger=log)),
                               self.config.broker_wait_ms / 1000)

    def admin(self) -> ConfluentAdmin:
        return ConfluentAdmin(_build(lambda: AdminClient(
            {**self.config.rdkafka_admin(), "allow.auto.create.topics": False}, logger=log)))


def _records(msgs: Sequence[Message], topic: str, where: str) -> Polled:
    """Messages of ``topic`` as columns (the hot path: one C-level pass per field); error events logged or raised."""
    if any(map(Message.error, msgs)):
        msgs = _without_errors(msgs, where)
    return Polled.columns(topic, list(map(Message.partition, msgs)), list(map(Message.offset, msgs)),
                          list(map(_second, map(Message.timestamp, msgs))), list(map(Message.key, msgs)),
                          list(map(Message.value, msgs)), list(map(Message.headers, msgs)))


def _record_list(msgs: Sequence[Message], topic: str, where: str) -> list[Record]:
    """Messages of ``topic`` as Record objects (the changelog reader: its records are used one by one)."""
    if any(map(Message.error, msgs)):
        msgs = _without_errors(msgs, where)
    return [Record(topic, m.partition(), m.offset(), m.key(), m.value(),  # type: ignore[arg-type]
                   m.timestamp()[1], m.headers() or ())  # type: ignore[arg-type]
            for m in msgs]


def _without_errors(msgs: Sequence[Message], where: str) -> list[Message]:
    """The messages that are records; a fatal error raises, the others (events such as EOF, transport) are logged."""
    for m in msgs:
        if (err := m.error()) is None:
            continue
        if err.fatal():
            msg = f"{where}: fatal client error {err}"
            raise BrokerError(msg)
        log.warning("%s: %s", where, err, extra={"event": "broker_error", "reason": err.name()})
    return [m for m in msgs if m.error() is None]


def _batch(consumer: Consumer, timeout_ms: int, max_records: int) -> list[Message]:
    first = consumer.poll(timeout_ms / 1000)
    if first is None:
        return []
    if max_records <= 1:
        return [first]
    return [first, *consumer.consume(max_records - 1, 0)]


class ConfluentSource:
    """The group member on librdkafka; callbacks (set by the service) run inside :meth:`poll`."""

    def __init__(self, consumer: Consumer, topic: str, offset_reset: str = "latest") -> None:
        self.consumer = consumer
        self.topic = topic
        self.offset_reset = offset_reset
        self._starts: dict[int, int] = {}  # partition -> where the reset policy starts it (see _start)
        self.assignment = Assignment()
        self.on_revoked: Callable[[set[int], bool], None] = lambda parts, lost: None
        self.on_assigned: Callable[[set[int]], None] = lambda parts: None
        self.throttled = False
        self._carry = Carry()  # taken from librdkafka, not handed out yet (see kafka.carry)
        consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)

    def _assigned(self, consumer: Consumer, partitions: list[CTP]) -> None:
        consumer.assign(partitions)
        if partitions:
            consumer.pause(partitions)
        parts = {tp.partition for tp in partitions if tp.topic == self.topic}
        self._forget_starts(parts)
        self.assignment.assigned |= parts
        self.assignment.to_restore |= parts
        self.on_assigned(parts)

    def _revoked(self, consumer: Consumer, partitions: list[CTP]) -> None:
        self._gone(partitions, lost=False)
        consumer.unassign()

    def _lost(self, consumer: Consumer, partitions: list[CTP]) -> None:
        self._gone(partitions, lost=True)
        consumer.unassign()

    def _gone(self, partitions: list[CTP], *, lost: bool) -> None:
        parts = {tp.partition for tp in partitions if tp.topic == self.topic}
        self._forget_starts(parts)
        self._carry.drop(parts)  # their next owner reads them from the committed offset
        self.assignment.assigned -= parts
        self.assignment.to_restore -= parts
        self.on_revoked(parts, lost)

    def poll(self, timeout_ms: int, max_records: int) -> Polled:
        """Up to ``max_records``: an even share of each partition among the records carried and taken now.

        With records carried the queue is only drained (``consume(n, 0)``): they are handed out at once. While
        throttled (backpressure) nothing is handed out, and the client is waited for as usual (callbacks are
        still served; a poll that returned at once would spin the service loop).
        """
        carried = len(self._carry)
        want = max(1, int(LOOKAHEAD_POLLS * max_records) - carried)
        try:
            drain = carried and not self.throttled
            msgs = self.consumer.consume(want, 0) if drain else _batch(self.consumer, timeout_ms, want)
            fresh = _records(msgs, self.topic, "poll")
        except KafkaException as exc:
            raise _translate(exc, "poll") from exc
        return self._carry.take(fresh, 0 if self.throttled else max_records)

    def _tps(self, partitions: set[int]) -> list[CTP]:
        return [CTP(self.topic, p) for p in sorted(partitions)]

    def resume(self, partitions: set[int]) -> None:
        if not self.throttled and partitions:
            self.consumer.resume(self._tps(partitions))

    def throttle(self, on: bool) -> None:
        """Pause every assigned partition (backpressure), or resume those whose state is restored."""
        self.throttled = on
        mine = self.assignment.assigned
        if on and mine:
            self.consumer.pause(self._tps(mine))
        elif not on and (ready := mine - self.assignment.to_restore):
            self.consumer.resume(self._tps(ready))

    def commit(self, positions: dict[int, int], *, blocking: bool = True) -> None:
        """Synchronous whatever ``blocking`` says: librdkafka heartbeats from its own thread meanwhile."""
        if not positions:
            return
        offsets = [CTP(self.topic, p, o) for p, o in sorted(positions.items())]
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._NO_OFFSET:
                return
            raise _translate(exc, "offset commit") from exc
        for tp in result or ():
            if tp.error is not None:
                raise _translate(KafkaException(tp.error), f"offset commit of {self.topic}[{tp.partition}]")

    def partitions(self) -> set[int]:
        md = self.consumer.list_topics(self.topic, timeout=10)
        topic = md.topics.get(self.topic)
        return set(topic.partitions) if topic is not None and topic.error is None else set()

    def committed(self, partition: int) -> int | None:
        try:
            (tp,) = self.consumer.committed([CTP(self.topic, partition)], timeout=10)
        except KafkaException as exc:
            raise _translate(exc, "committed offset fetch") from exc
        return None if tp.offset < 0 else int(tp.offset)

    def lag(self, positions: dict[int, int]) -> dict[int, int]:
        """Highwater (as the last fetch reported it) minus our processed position (carried records are not)."""
        out = {}
        carried = self._carry.first_offsets()
        for p in self.assignment.assigned:
            _lo, hi = self.consumer.get_watermark_offsets(CTP(self.topic, p), cached=True)
            if hi is None or hi < 0:
                continue
            position = positions[p] if p in positions else carried.get(p, self._position(p))
            if position is not None:
                out[p] = max(0, hi - position)
        return out

    def _position(self, partition: int) -> int | None:
        """The client's position, else where the partition starts; None while neither is known."""
        (tp,) = self.consumer.position([CTP(self.topic, partition)])
        return tp.offset if tp.offset >= 0 else self._start(partition)

    def _start(self, partition: int) -> int | None:
        """Where the reset policy starts a partition nothing was consumed from and the group never committed.

        librdkafka's ``position()`` is the last consumed message's offset + 1 and stays OFFSET_INVALID until a
        message arrives (kafka-python resolves its fetch position instead): an empty partition would never show
        lag 0, and `--until-caught-up` would wait forever. A committed offset is already in the checkpointer's
        positions, so what is left is the policy: the log start (``earliest``) or its end (``latest``). Asked once
        per assignment (a broker round trip).
        """
        if partition not in self._starts:
            try:
                low, high = self.consumer.get_watermark_offsets(CTP(self.topic, partition), timeout=5, cached=False)
            except KafkaException as exc:
                log.debug("no watermarks for %s[%d] yet: %s", self.topic, partition, exc)
                return None
            self._starts[partition] = int(low if self.offset_reset == "earliest" else high)
        return self._starts[partition]

    def _forget_starts(self, partitions: set[int]) -> None:
        for p in partitions:
            self._starts.pop(p, None)

    def close(self, *, leave: bool = True) -> None:
        """Close (librdkafka always leaves the group on close; ``leave`` is kafka-python's concern)."""
        self.consumer.close()


class ConfluentProducer:
    """librdkafka producer; delivery callbacks run inside :meth:`serve` and :meth:`flush`."""

    def __init__(self, producer: RdProducer) -> None:
        self._producer = producer

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int | None,
             on_delivery: Delivered) -> None:
        def done(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                on_delivery(msg.offset(), None)
            else:
                on_delivery(None, KafkaException(err))
        part = _UNASSIGNED if partition is None else partition  # -1: librdkafka's partitioner picks
        for _ in range(600):  # the local queue is full: serve callbacks until there is room (a minute at most)
            try:
                self._producer.produce(topic, value, key, partition=part, on_delivery=done,
                                       headers=headers)  # type: ignore[arg-type]  # list is invariant: ours is narrower
                return
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise _translate(exc, f"send to {topic}") from exc
        msg = f"send to {topic}: the producer queue stayed full for a minute"
        raise BrokerError(msg)

    def serve(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout_s: float) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            msg = f"producer flush did not complete within {timeout_s:.0f}s: {left} records unacknowledged"
            raise BrokerError(msg)

    def close(self, timeout_s: float) -> None:
        self._producer.flush(timeout_s)


class ConfluentReader:
    """A group-less librdkafka consumer reading one partition at a time.

    Seeks re-assign at an explicit offset. The highwater is the larger of what ListOffsets said at
    ``seek_to_end`` and what fetches reported since (librdkafka's cached watermark), so a cached value left
    from an earlier read of the partition never makes the end look earlier than it is. librdkafka fetches an
    assigned partition in the background, read or not: callers give it up when a read is done
    (``restore.release``), or it buffers what the checkpoints write to the changelog.
    """

    def __init__(self, consumer: Consumer, timeout_s: float) -> None:
        self._consumer = consumer
        self._timeout_s = timeout_s
        self._tps: set[TopicPartition] = set()
        self._pos: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}

    def assign(self, tps: list[TopicPartition]) -> None:
        """Take ``tps`` (fetching starts at the next :meth:`seek`; nothing of the old assignment is read)."""
        if set(tps) != self._tps:
            self._consumer.unassign()
        self._tps = set(tps)
        self._pos = {tp: p for tp, p in self._pos.items() if tp in self._tps}

    def assignment(self) -> set[TopicPartition]:
        return set(self._tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._tps.add(tp)
        self._consumer.assign([CTP(tp.topic, tp.partition, offset)])
        self._pos[tp] = offset

    def seek_to_end(self, tp: TopicPartition) -> None:
        try:
            _lo, hi = self._consumer.get_watermark_offsets(CTP(tp.topic, tp.partition), timeout=self._timeout_s)
        except KafkaException as exc:
            raise _translate(exc, f"end of {tp.topic}[{tp.partition}]") from exc
        self._ends[tp] = max(self._ends.get(tp, 0), int(hi))
        self.seek(tp, max(0, int(hi)))

    def position(self, tp: TopicPartition) -> int:
        return self._pos.get(tp, 0)

    def highwater(self, tp: TopicPartition) -> int | None:
        _lo, hi = self._consumer.get_watermark_offsets(CTP(tp.topic, tp.partition), cached=True)
        known = self._ends.get(tp)
        if hi is None or hi < 0:
            return known
        self._ends[tp] = max(known or 0, int(hi))
        return self._ends[tp]

    def read(self, timeout_ms: int, max_records: int) -> list[Record]:
        if len(self._tps) != 1:
            return []
        (tp,) = self._tps
        try:
            records = _record_list(_batch(self._consumer, timeout_ms, max_records), tp.topic, "changelog read")
        except KafkaException as exc:
            raise _translate(exc, "changelog read") from exc
        if records:
            self._pos[tp] = max(self._pos.get(tp, 0), records[-1].offset + 1)
        return records

    def close(self) -> None:
        self._consumer.close()


class ConfluentAdmin:
    def __init__(self, admin: AdminClient) -> None:
        self._admin = admin

    def partition_count(self, topic: str) -> int | None:
        try:  # every topic: a metadata request naming one may create it on brokers that auto-create
            md = self._admin.list_topics(timeout=10)
        except KafkaException as exc:
            raise _translate(exc, "metadata request") from exc
        found = md.topics.get(topic)
        return len(found.partitions) if found is not None and found.error is None and found.partitions else None

    def create_topic(self, topic: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> bool:
        new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=configs)
        try:
            self._admin.create_topics([new])[topic].result(timeout=30)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return False
            msg = f"cannot create topic {topic!r}: {exc}; create it yourself or grant CreateTopics"
            raise BrokerError(msg) from exc
        return True

    def cleanup_policy(self, topic: str) -> str | None:
        resource = ConfigResource("topic", topic)
        try:
            entries = self._admin.describe_configs([resource])[resource].result(timeout=10)
        except KafkaException as exc:
            log.warning("cannot read the configs of %s (%s)", topic, exc)
            return None
        entry = entries.get("cleanup.policy")
        value = getattr(entry, "value", None)
        return value if isinstance(value, str) else None

    def close(self) -> None:
        """AdminClient has nothing to close."""


def _translate(exc: KafkaException, what: str) -> BrokerError:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if err is not None and err.code() in _REBALANCED:
        return RebalancedError(f"{what} refused, the group is rebalancing: {err}")
    return BrokerError(f"{what} failed: {exc}")

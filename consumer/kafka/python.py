"""The kafka-python transport (the default): group source, producer, partition reader and admin.

kafka-python 3 runs rebalance callbacks on its IO thread while the main thread is inside ``poll()``; a sync
callback must not call blocking consumer APIs. So the listener only *records* what happened and pauses newly
assigned partitions; the service restores their state in its own loop and resumes them. Revocation is the
exception: the state of revoked partitions must be checkpointed before the new owner restores it, so the
revoke hook (given by the service) flushes the producer and commits asynchronously, all without calling a
blocking consumer API.

kafka-python drains what it fetched a partition at a time (one partition's fetch before the next), so a poll
taken as it comes holds one or two partitions and its waves only their keys (1,000 keys over 4 partitions:
~720 waves of ~280 keys per 200,000 records instead of ~250 of ~800). As the librdkafka source does, the source
takes up to ``LOOKAHEAD_POLLS`` polls' worth and hands out an even share of every partition at hand, carrying
the rest (``kafka.carry``: per-partition order kept; carried records are dropped when their partition is
revoked or lost, from the callback, which runs while the main thread is inside ``poll()``, and count in the
lag); with records carried, a poll does not wait for the broker. The group consumer fetches at most
``PYTHON_PARTITION_FETCH_BYTES`` per partition (``kafka.config``), so a fetch holds a short run of every
partition, not one partition's whole backlog, and the next fetch goes out while the last one's records are
processed instead of after a whole backlog is drained.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain
from operator import itemgetter
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IncompatibleBrokerVersion,
    KafkaError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata

from rnnwatch.consumer.errors import BrokerError, ConfigError, RebalancedError
from rnnwatch.consumer.kafka import columnar
from rnnwatch.consumer.kafka.carry import Carry
from rnnwatch.consumer.kafka.config import MAX_REQUEST_BYTES, KafkaConfig
from rnnwatch.consumer.kafka.polled import Polled
from rnnwatch.consumer.kafka.protocols import Assignment, Delivered, Headers, TopicPartition
from rnnwatch.consumer.kafka.quiet import install as install_shutdown_noise_filter

__all__ = ["PythonAdmin", "PythonProducer", "PythonReader", "PythonSource", "PythonTransport"]

log = logging.getLogger(__name__)
install_shutdown_noise_filter()  # a closed transport's read error is shutdown noise (kafka.quiet)

_FIELDS = tuple(itemgetter(ConsumerRecord._fields.index(name))  # Polled.columns' order
                for name in ("partition", "offset", "timestamp", "key", "value", "headers"))
# Records a poll takes from kafka-python, in polls (as the librdkafka source's): what the even share of each
# partition is chosen from; at most half a poll is carried.
LOOKAHEAD_POLLS = 1.5
_REBALANCED = (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError)


def connect(make: Callable[[], Any], config: KafkaConfig) -> Any:
    """Build a client, retrying with backoff until ``broker_wait_ms``; then fail with a clear error.

    Each attempt is itself bounded by the time left (``bootstrap_timeout_ms``), so the wait is what it says.
    """
    deadline = time.monotonic() + config.broker_wait_ms / 1000
    delay = 0.2
    while True:
        try:
            return make()
        except KafkaError as exc:
            if time.monotonic() + delay > deadline:
                msg = (f"cannot reach Kafka at {config.bootstrap} after {config.broker_wait_ms} ms "
                       f"({type(exc).__name__}: {exc}); check --bootstrap-servers and that the broker is up")
                raise BrokerError(msg) from exc
            log.warning("broker not reachable yet (%s); retrying in %.1fs", exc, delay,
                        extra={"event": "broker_unreachable", "reason": type(exc).__name__})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class PythonTransport:
    name = "kafka-python"

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config

    def source(self, topic: str) -> PythonSource:
        consumer = connect(lambda: KafkaConsumer(**self.config.python_consumer(group=True)), self.config)
        # its polls return blocks of columns, not a ConsumerRecord per message (if proven on this kafka-python)
        source = PythonSource(consumer, topic, columns=columnar.install(consumer))
        consumer.subscribe([topic], listener=_Listener(source))
        return source

    def producer(self) -> PythonProducer:
        config = {"acks": "all", "linger_ms": 5, "batch_size": 256 * 1024, "retries": 2**31 - 1,
                  "delivery_timeout_ms": 120_000, "max_request_size": MAX_REQUEST_BYTES,
                  **self.config.python_common("producer")}
        return PythonProducer(connect(lambda: KafkaProducer(**config), self.config))

    def reader(self) -> PythonReader:
        return PythonReader(connect(lambda: KafkaConsumer(**self.config.python_consumer(group=False)), self.config))

    def admin(self) -> PythonAdmin:
        return PythonAdmin(self.config)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: PythonSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: set[KTP]) -> None:
        self.source.handle_revoked({tp.partition for tp in revoked if tp.topic == self.source.topic}, lost=False)

    def on_partitions_lost(self, lost: set[KTP]) -> None:
        self.source.handle_revoked({tp.partition for tp in lost if tp.topic == self.source.topic}, lost=True)

    def on_partitions_assigned(self, assigned: set[KTP]) -> None:
        parts = {tp.partition for tp in assigned if tp.topic == self.source.topic}
        self.source.assignment.assigned |= parts
        self.source.assignment.to_restore |= parts
        if assigned:
            self.source.consumer.pause(*assigned)
        self.source.on_assigned(parts)


class PythonSource:
    """Owns the group consumer; reports assignment changes through callbacks set by the service."""

    def __init__(self, consumer: KafkaConsumer, topic: str, *, columns: bool = False) -> None:
        """``columns``: the consumer has :func:`columnar.install` (polls give Rows blocks, not ConsumerRecords)."""
        self.consumer = consumer
        self.topic = topic
        self.columns = columns
        self.assignment = Assignment()
        self.on_revoked: Callable[[set[int], bool], None] = lambda parts, lost: None
        self.on_assigned: Callable[[set[int]], None] = lambda parts: None
        self.throttled = False  # paused by backpressure: restored partitions wait for throttle(False)
        self._carry = Carry()  # taken from kafka-python, not handed out yet (see kafka.carry)

    def handle_revoked(self, partitions: set[int], *, lost: bool) -> None:
        self._carry.drop(partitions)  # their next owner reads them from the committed offset
        self.assignment.assigned -= partitions
        self.assignment.to_restore -= partitions
        self.on_revoked(partitions, lost)

    def poll(self, timeout_ms: int, max_records: int) -> Polled:
        """Up to ``max_records``: an even share of each partition among the records carried and taken now.

        With records carried the client is not waited for (they are handed out at once). While throttled
        (backpressure) nothing is handed out, and the client is waited for as usual (the loop must not spin).
        """
        carried = len(self._carry)
        want = max(1, int(LOOKAHEAD_POLLS * max_records) - carried)
        wait = 0 if carried and not self.throttled else timeout_ms
        try:
            polled = self.consumer.poll(timeout_ms=wait, max_records=want)
        except KafkaError as exc:
            raise _translate(exc, "poll") from exc
        if self.columns:
            fresh = columnar.polled(self.topic, polled)
        else:
            fresh = _columns(self.topic, list(chain.from_iterable(polled.values())))
        return self._carry.take(fresh, 0 if self.throttled else max_records)

    def resume(self, partitions: set[int]) -> None:
        if not self.throttled:
            self.consumer.resume(*(KTP(self.topic, p) for p in partitions))

    def throttle(self, on: bool) -> None:
        """Pause every assigned partition (backpressure), or resume those whose state is restored."""
        self.throttled = on
        mine = [tp for tp in self.consumer.assignment() if tp.topic == self.topic]
        if on:
            self.consumer.pause(*mine)
        else:
            self.consumer.resume(*(tp for tp in mine if tp.partition not in self.assignment.to_restore))

    def commit(self, positions: dict[int, int], *, blocking: bool = True) -> None:
        offsets = {KTP(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()}
        if not offsets:
            return
        try:
            if blocking:
                self.consumer.commit(offsets)
            else:
                self.consumer.commit_async(offsets)
        except KafkaError as exc:
            raise _translate(exc, "offset commit") from exc

    def partitions(self) -> set[int]:
        """Every partition of the input topic (from metadata)."""
        return set(self.consumer.partitions_for_topic(self.topic) or ())

    def committed(self, partition: int) -> int | None:
        """The group's committed offset of an input partition (a blocking call: main thread only)."""
        try:
            offset = self.consumer.committed(KTP(self.topic, partition))
        except KafkaError as exc:
            raise _translate(exc, "committed offset fetch") from exc
        return None if offset is None else int(offset)

    def lag(self, positions: dict[int, int]) -> dict[int, int]:
        """Highwater minus our processed position (carried records are not), for partitions whose highwater is known."""
        out = {}
        carried = self._carry.first_offsets()
        for p in self.assignment.assigned:
            tp = KTP(self.topic, p)
            try:
                hw = self.consumer.highwater(tp)
                # Nothing processed yet: the first carried record, else the client's fetch position (None until
                # it has one: lag unknown).
                position = (positions[p] if p in positions else carried[p] if p in carried
                            else self.consumer.position(tp, timeout_ms=1000))
            except KafkaError as exc:  # IllegalStateError: the partition moved between the callback and this call
                log.debug("no lag for %s[%d]: %s", self.topic, p, exc)
                continue
            if hw is not None and position is not None:
                out[p] = max(0, hw - int(position))
        return out

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


def _columns(topic: str, records: list[ConsumerRecord]) -> Polled:
    """kafka-python's records (namedtuples) as columns: one C-level pass per field, no Python step per record."""
    return Polled.columns(topic, *(list(map(get, records)) for get in _FIELDS))


class PythonProducer:
    """KafkaProducer behind the :class:`Producer` protocol (callbacks run on its IO thread)."""

    def __init__(self, producer: KafkaProducer) -> None:
        self._producer = producer

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int | None,
             on_delivery: Delivered) -> None:
        try:
            future = self._producer.send(topic, key=key, value=value, headers=headers, partition=partition)
        except KafkaError as exc:
            raise _translate(exc, f"send to {topic}") from exc
        future.add_both(partial(_delivered, on_delivery))  # one callable for both outcomes: one partial per record

    def serve(self) -> None:
        """Nothing to do: kafka-python calls back from its IO thread."""

    def flush(self, timeout_s: float) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:  # KafkaTimeoutError and friends
            msg = f"producer flush did not complete within {timeout_s:.0f}s: {exc}"
            raise BrokerError(msg) from exc

    def close(self, timeout_s: float) -> None:
        self._producer.close(timeout=timeout_s)


def _delivered(on_delivery: Delivered, outcome: Any) -> None:
    """A send's future resolved: RecordMetadata, or the exception it failed with."""
    if isinstance(outcome, BaseException):
        on_delivery(None, outcome)
    else:
        on_delivery(outcome.offset, None)


class PythonReader:
    """A group-less KafkaConsumer reading one partition at a time (the changelog)."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    def assign(self, tps: list[TopicPartition]) -> None:
        self._consumer.assign([KTP(*tp) for tp in tps])

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(KTP(*tp), offset)

    def seek_to_end(self, tp: TopicPartition) -> None:
        self._consumer.seek_to_end(KTP(*tp))

    def position(self, tp: TopicPartition) -> int:
        return int(self._consumer.position(KTP(*tp)))

    def highwater(self, tp: TopicPartition) -> int | None:
        hw = self._consumer.highwater(KTP(*tp))
        return None if hw is None else int(hw)

    def read(self, timeout_ms: int, max_records: int) -> Sequence[Any]:
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise _translate(exc, "changelog read") from exc
        return [rec for records in polled.values() for rec in records]

    def close(self) -> None:
        self._consumer.close()


class PythonAdmin:
    """Metadata through a group-less consumer, topic creation and configs through KafkaAdminClient."""

    def __init__(self, config: KafkaConfig, *, metadata: Any = None, client: Any = None) -> None:
        """``metadata`` (partitions_for_topic) and ``client`` (KafkaAdminClient) are made when first needed."""
        self.config = config
        self._meta: Any = metadata
        self._admin: Any = client

    def _metadata(self) -> Any:
        if self._meta is None:
            self._meta = connect(lambda: KafkaConsumer(**self.config.python_consumer(group=False)), self.config)
        return self._meta

    def _client(self) -> Any:
        from kafka.admin import KafkaAdminClient

        if self._admin is None:
            self._admin = connect(lambda: KafkaAdminClient(**self.config.python_common("admin")), self.config)
        return self._admin

    def partition_count(self, topic: str) -> int | None:
        parts = self._metadata().partitions_for_topic(topic)
        return len(parts) if parts else None

    def create_topic(self, topic: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> bool:
        spec = {"num_partitions": partitions, "replication_factor": replication_factor, "configs": configs}
        try:
            self._client().create_topics({topic: spec})
        except TopicAlreadyExistsError:
            return False
        except IncompatibleBrokerVersion as exc:
            msg = (f"cannot create topic {topic!r}: {exc}; brokers before Kafka 2.4 need an explicit "
                   "replication factor: set --replication-factor (RNNWATCH_REPLICATION_FACTOR)")
            raise ConfigError(msg) from exc
        except KafkaError as exc:
            msg = f"cannot create topic {topic!r}: {exc}; create it yourself or grant CreateTopics"
            raise BrokerError(msg) from exc
        return True

    def cleanup_policy(self, topic: str) -> str | None:
        from kafka.admin import ConfigResource, ConfigResourceType

        try:
            # every config (not only the modified ones): a policy left at the broker's default must show too
            configs = self._client().describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                                      config_filter="all")
        except KafkaError as exc:
            log.warning("cannot read the configs of %s (%s)", topic, exc)
            return None
        entry = configs.get("topic", {}).get(topic, {}).get("cleanup.policy")
        value = entry.get("value") if isinstance(entry, dict) else None
        return value if isinstance(value, str) else None

    def close(self) -> None:
        for client in (self._meta, self._admin):
            if client is not None:
                client.close()
        self._meta = self._admin = None


def _translate(exc: KafkaError, what: str) -> BrokerError:
    if isinstance(exc, _REBALANCED):
        return RebalancedError(f"{what} refused, the group is rebalancing: {exc}")
    return BrokerError(f"{what} failed: {type(exc).__name__}: {exc}")

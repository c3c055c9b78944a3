"""Client errors leave the Kafka layer as rnnwatch's own, whichever transport raised them (no broker)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError

from rnnwatch.consumer.errors import BrokerError, RebalancedError
from rnnwatch.consumer.kafka.python import PythonSource

confluent_kafka = pytest.importorskip("confluent_kafka", reason="the [fast] extra is installed by make install-dev")
from confluent_kafka import KafkaError, KafkaException, Message  # noqa: E402

from rnnwatch.consumer.kafka.confluent import ConfluentSource, _records  # noqa: E402


class _RaisingConsumer:
    """Just enough of a consumer for a source to be built; commit raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        pass

    def commit(self, *args: Any, **kwargs: Any) -> None:
        raise self.error

    def commit_async(self, *args: Any, **kwargs: Any) -> None:
        raise self.error


@pytest.mark.parametrize(("error", "expected"), [
    (CommitFailedError("the group rebalanced"), RebalancedError),
    (KafkaConnectionError("connection reset"), BrokerError),
])
def test_kafka_python_commit_errors_are_translated(error: Exception, expected: type[BrokerError]) -> None:
    source = PythonSource(_RaisingConsumer(error), "t")  # type: ignore[arg-type]
    with pytest.raises(expected) as info:
        source.commit({0: 5})
    assert type(info.value) is expected


class _LagConsumer:
    """A kafka-python consumer's highwater/position for partition 0 (1 is assigned to us but not to the client)."""

    def __init__(self, position: int | None, error: Exception | None = None) -> None:
        self._position, self.error, self.position_calls = position, error, 0

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        pass

    def highwater(self, tp: TopicPartition) -> int | None:
        if tp.partition != 0:
            raise IllegalStateError("Partition is not assigned")
        return 100

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        self.position_calls += 1
        if self.error is not None:
            raise self.error
        return self._position


def test_kafka_python_lag_uses_the_processed_position_and_asks_the_client_only_without_one() -> None:
    consumer = _LagConsumer(position=40)
    source = PythonSource(consumer, "t")  # type: ignore[arg-type]
    source.assignment.assigned = {0, 1}  # 1 moved away between the callback and this call: no lag for it
    assert source.lag({0: 90}) == {0: 10}
    assert consumer.position_calls == 0
    assert source.lag({}) == {0: 60}


def test_kafka_python_lag_of_a_partition_without_a_position_is_unknown_not_the_whole_topic() -> None:
    source = PythonSource(_LagConsumer(position=None), "t")  # type: ignore[arg-type]
    source.assignment.assigned = {0}
    assert source.lag({}) == {}


def test_kafka_python_lag_lets_a_programming_error_through() -> None:
    source = PythonSource(_LagConsumer(position=0, error=TypeError("partition must be a TopicPartition")), "t")  # type: ignore[arg-type]
    source.assignment.assigned = {0}
    with pytest.raises(TypeError):
        source.lag({})


class _RdLagConsumer:
    """librdkafka's cached watermarks and position for partition 0; ``offset`` < 0 is OFFSET_INVALID."""

    def __init__(self, offset: int) -> None:
        self.offset, self.position_calls = offset, 0

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        pass

    def get_watermark_offsets(self, tp: Any, timeout: float | None = None, cached: bool = False) -> tuple[int, int]:
        return 0, 100

    def position(self, tps: list[Any]) -> list[Any]:
        self.position_calls += 1
        return [confluent_kafka.TopicPartition(tps[0].topic, tps[0].partition, self.offset)]


@pytest.mark.parametrize(("offset", "reset", "processed", "expected"), [
    (40, "latest", {0: 90}, {0: 10}),  # what rnnwatch processed wins
    (40, "latest", {}, {0: 60}),  # nothing processed yet: the client's position
    # nothing consumed, nothing committed (librdkafka has no position): where the reset policy starts it
    (confluent_kafka.OFFSET_INVALID, "latest", {}, {0: 0}),
    (confluent_kafka.OFFSET_INVALID, "earliest", {}, {0: 100}),
])
def test_librdkafka_lag(offset: int, reset: str, processed: dict[int, int], expected: dict[int, int]) -> None:
    consumer = _RdLagConsumer(offset)
    source = ConfluentSource(consumer, "t", reset)  # type: ignore[arg-type]
    source.assignment.assigned = {0}
    assert source.lag(processed) == expected
    assert consumer.position_calls == (0 if processed else 1)


@pytest.mark.parametrize(("code", "expected"), [
    (KafkaError.REBALANCE_IN_PROGRESS, RebalancedError),
    (KafkaError.ILLEGAL_GENERATION, RebalancedError),
    (KafkaError._TRANSPORT, BrokerError),
])
def test_librdkafka_commit_errors_are_translated(code: int, expected: type[BrokerError]) -> None:
    source = ConfluentSource(_RaisingConsumer(KafkaException(KafkaError(code))), "t")  # type: ignore[arg-type]
    with pytest.raises(expected) as info:
        source.commit({0: 5})
    assert type(info.value) is expected


def _message(offset: int, error: KafkaError | None = None) -> Message:
    """A librdkafka message as a poll returns it (confluent-kafka's test constructor: the real type)."""
    return Message(topic="t", partition=2, offset=offset, key=b"k", value=b"{}", error=error,
                   timestamp=(1, 1_700_000_000_000))


def test_librdkafka_error_events_are_skipped_and_fatal_ones_raise() -> None:
    transient = KafkaError(KafkaError._TRANSPORT)
    got = _records([_message(7), _message(-1, transient), _message(8)], "t", "poll")
    assert [(r.topic, r.partition, r.offset, r.key, r.timestamp, tuple(r.headers)) for r in got] == [
        ("t", 2, 7, b"k", 1_700_000_000_000, ()), ("t", 2, 8, b"k", 1_700_000_000_000, ())]
    assert got.offset.tolist() == [7, 8] and got.headers is None
    fatal = KafkaError(KafkaError._FATAL, fatal=True)
    with pytest.raises(BrokerError, match="fatal"):
        _records([_message(7), _message(-1, fatal)], "t", "poll")

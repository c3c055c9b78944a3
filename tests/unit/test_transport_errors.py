"""Client errors leave the Kafka layer as rnnwatch's own, whichever transport raised them (no broker)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import CommitFailedError, KafkaConnectionError

from rnnwatch.consumer.errors import BrokerError, RebalancedError
from rnnwatch.consumer.kafka.python import PythonSource

confluent_kafka = pytest.importorskip("confluent_kafka", reason="the [fast] extra is installed by make install-dev")
from confluent_kafka import KafkaError, KafkaException  # noqa: E402

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


class _Message:
    def __init__(self, offset: int, error: KafkaError | None = None) -> None:
        self._offset, self._error = offset, error

    def error(self) -> KafkaError | None:
        return self._error

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"{}"

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def headers(self) -> None:
        return None


def test_librdkafka_error_events_are_skipped_and_fatal_ones_raise() -> None:
    transient = KafkaError(KafkaError._TRANSPORT)
    got = _records([_Message(7), _Message(-1, transient), _Message(8)], "t", "poll")  # type: ignore[list-item]
    assert [(r.topic, r.partition, r.offset, r.key, r.timestamp, tuple(r.headers)) for r in got] == [
        ("t", 2, 7, b"k", 1_700_000_000_000, ()), ("t", 2, 8, b"k", 1_700_000_000_000, ())]
    fatal = KafkaError(KafkaError._FATAL, fatal=True)
    with pytest.raises(BrokerError, match="fatal"):
        _records([_Message(7), _Message(-1, fatal)], "t", "poll")  # type: ignore[list-item]

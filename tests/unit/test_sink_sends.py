"""The per-record send path (one per changed key at a checkpoint): bytes accounting and delivery outcomes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from rnnwatch.consumer.errors import DeliveryError
from rnnwatch.consumer.kafka.protocols import Delivered, Headers
from rnnwatch.consumer.kafka.python import PythonProducer
from rnnwatch.consumer.sink import KafkaSink


class _HeldProducer:
    """Keeps every send's delivery callback until the test resolves it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Headers, int | None, Delivered]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int | None,
             on_delivery: Delivered) -> None:
        self.sent.append((topic, key, value, headers, partition, on_delivery))

    def serve(self) -> None:
        pass

    def flush(self, timeout_s: float) -> None:
        pass

    def close(self, timeout_s: float) -> None:
        pass


def _sink(producer: _HeldProducer) -> KafkaSink:
    return KafkaSink(producer=producer, output_topic="out", dead_letter_topic="dlq", changelog_topic="state")


def test_pending_bytes_count_key_value_and_headers_until_each_delivery() -> None:
    producer = _HeldProducer()
    sink = _sink(producer)
    offsets: list[int] = []
    sink.send_snapshot(3, b"key", b"value", [("h1", b"abc"), ("h22", b"")], offsets.append)
    sink.send_snapshot(1, b"k", None, [], offsets.append)
    first = 3 + 5 + (2 + 3) + (3 + 0) + 64
    assert sink.pending_bytes == first + 1 + 64
    assert [(t, p) for t, _, _, _, p, _ in producer.sent] == [("state", 3), ("state", 1)]
    producer.sent[1][5](41, None)
    assert sink.pending_bytes == first and offsets == [41]
    producer.sent[0][5](None, KafkaTimeoutError("expired"))
    assert sink.pending_bytes == 0 and offsets == [41]
    with pytest.raises(DeliveryError, match="expired"):
        sink.flush(1.0)


def test_a_send_that_raises_leaves_no_pending_bytes() -> None:
    class _Refusing(_HeldProducer):
        def send(self, *args: Any) -> None:
            raise BufferError

    sink = _sink(_Refusing())
    with pytest.raises(BufferError):
        sink.send_snapshot(0, b"k", b"v", [("h", b"x")], lambda offset: None)
    assert sink.pending_bytes == 0


class _FutureSends:
    """kafka-python's KafkaProducer.send as far as PythonProducer uses it: a Future per send."""

    def __init__(self) -> None:
        self.futures: list[Future] = []

    def send(self, topic: str, **kwargs: Any) -> Future:
        self.futures.append(Future())
        return self.futures[-1]


def test_kafka_python_futures_reach_the_delivery_callback_once_whatever_the_outcome() -> None:
    client = _FutureSends()
    producer = PythonProducer(client)
    got: list[tuple[int | None, BaseException | None]] = []
    for _ in range(3):
        producer.send("t", b"k", b"v", [], None, lambda offset, error: got.append((offset, error)))
    error = KafkaTimeoutError("expired")
    client.futures[1].failure(error)
    client.futures[0].success(SimpleNamespace(offset=7))
    assert got == [(None, error), (7, None)]
    done = Future().success(SimpleNamespace(offset=9))  # resolved before the callback is attached
    client.send = lambda topic, **kwargs: done  # type: ignore[method-assign]
    producer.send("t", b"k", b"v", [], None, lambda offset, error: got.append((offset, error)))
    assert got == [(None, error), (7, None), (9, None)]
    client.futures[2].success(SimpleNamespace(offset=8))
    assert got[-1] == (8, None) and len(got) == 4

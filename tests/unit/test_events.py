"""Anomaly events are CloudEvents (binary mode) with deterministic ids and content; dead letters keep bytes."""

from __future__ import annotations

import orjson

from rnnwatch.consumer.events import AnomalyEvent, DeadLetter


def _event() -> AnomalyEvent:
    return AnomalyEvent(source="rnnwatch://g/prices-gru", key=b"AAPL", event_ms=1_551_657_600_000, score=0.9999991,
                        threshold=0.9993, severity="major", features=["price"], actual=[160.21], expected=[172.5],
                        residual=[-12.29], model={"name": "prices-gru", "version": "1", "sha256": "ab" * 32},
                        topic="prices", partition=2, offset=18231, timestamp_ms=1_551_657_600_123)


def test_cloudevents_headers_and_key() -> None:
    key, _value, headers = _event().to_kafka()
    h = dict(headers)
    assert key == b"AAPL"
    assert h["ce_specversion"] == b"1.0"
    assert h["ce_id"] == b"prices-2-18231"
    assert h["ce_source"] == b"rnnwatch://g/prices-gru"
    assert h["ce_type"] == b"io.rnnwatch.anomaly.v1"
    assert h["ce_time"] == b"2019-03-04T00:00:00.000Z"
    assert h["ce_subject"] == b"AAPL"
    assert h["content-type"] == b"application/json"


def test_body_fields() -> None:
    body = orjson.loads(_event().to_kafka()[1])
    assert body == {
        "key": "AAPL", "event_time": "2019-03-04T00:00:00.000Z", "score": 0.9999991, "threshold": 0.9993,
        "severity": "major", "actual": {"price": 160.21}, "expected": {"price": 172.5},
        "residual": {"price": -12.29}, "model": {"name": "prices-gru", "version": "1", "sha256": "ab" * 32},
        "input": {"topic": "prices", "partition": 2, "offset": 18231, "timestamp": 1_551_657_600_123},
    }


def test_same_input_same_bytes() -> None:
    assert _event().to_kafka() == _event().to_kafka()


def test_dead_letter_keeps_original_bytes_and_says_why() -> None:
    letter = DeadLetter("prices", 1, 7, 99, b"K", b"\xff\xfe garbage", [("trace", b"t1")], "invalid_json",
                        "unexpected character")
    key, value, headers = letter.to_kafka()
    h = dict(headers)
    assert (key, value) == (b"K", b"\xff\xfe garbage")
    assert h["rnnwatch-reason"] == b"invalid_json"
    assert h["rnnwatch-error"] == b"unexpected character"
    assert (h["rnnwatch-original-topic"], h["rnnwatch-original-partition"], h["rnnwatch-original-offset"]) == (
        b"prices", b"1", b"7")
    assert h["trace"] == b"t1"

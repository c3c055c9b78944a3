"""Anomaly events are CloudEvents (binary mode) with deterministic ids and content; dead letters keep bytes."""

from __future__ import annotations

import re

import orjson

from rnnwatch.consumer.events import DEAD_LETTER_MAX_BYTES, DLQ_KEY_BYTES, DLQ_VALUE_BYTES, AnomalyEvent, DeadLetter


def _event() -> AnomalyEvent:
    return AnomalyEvent(source="rnnwatch://g/prices-gru", key=b"AAPL", event_ms=1_551_657_600_000, score=0.9999991,
                        threshold=0.9993, severity="major", features=["price"], actual=[160.21], expected=[172.5],
                        residual=[-12.29], model={"name": "prices-gru", "version": "1", "sha256": "ab" * 32},
                        topic="prices", partition=2, offset=18231, timestamp_ms=1_551_657_600_123,
                        surprise=6.045757, threshold_surprise=3.154902, incident="prices-2-18229")


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
    assert h["ce_partitionkey"] == b"AAPL"
    assert h["ce_rnnwatchseverity"] == b"major"
    # CloudEvents 1.0: attribute names are lowercase ASCII letters and digits; binary Kafka mode prefixes ce_
    attributes = [name for name, _ in headers if name != "content-type"]
    assert all(re.fullmatch(r"ce_[a-z0-9]{1,20}", name) for name in attributes), attributes


def test_body_fields() -> None:
    body = orjson.loads(_event().to_kafka()[1])
    assert body == {
        "key": "AAPL", "event_time": "2019-03-04T00:00:00.000Z", "score": 0.9999991, "threshold": 0.9993,
        "surprise": 6.045757, "threshold_surprise": 3.154902, "incident": {"id": "prices-2-18229", "update": False},
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


def _record_bytes(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k.encode()) + len(v) for k, v in headers)


def test_a_dead_letter_stays_under_its_size_bound_and_says_what_it_cut() -> None:
    """A 2 MB key, value and header set must not make the dead letter itself undeliverable."""
    huge = [(f"h{i}", b"x" * 10_000) for i in range(20)]
    letter = DeadLetter("prices", 0, 1, 2, b"K" * 2_000_000, b"v" * 2_000_000, huge, "oversized_key", "e" * 100_000)
    key, value, headers = letter.to_kafka()
    assert _record_bytes(key, value, headers) <= DEAD_LETTER_MAX_BYTES < 1_000_000  # Kafka's default message limit
    h = dict(headers)
    assert (key, value) == (b"K" * DLQ_KEY_BYTES, b"v" * DLQ_VALUE_BYTES)
    assert h["rnnwatch-original-key-bytes"] == b"2000000"
    assert h["rnnwatch-original-value-bytes"] == b"2000000"
    kept = [k for k, _ in headers if k.startswith("h")]
    assert kept == [f"h{i}" for i in range(len(kept))] and 0 < len(kept) < 20
    assert h["rnnwatch-headers-dropped"] == str(20 - len(kept)).encode()
    assert h["rnnwatch-error"].endswith(b"(truncated)")


def test_a_small_dead_letter_is_copied_whole_without_notes() -> None:
    letter = DeadLetter("prices", 0, 1, 2, b"K", b"v", [("trace", b"t")], "invalid_json", "bad")
    names = [k for k, _ in letter.to_kafka()[2]]
    assert not any(n in names for n in ("rnnwatch-original-key-bytes", "rnnwatch-original-value-bytes",
                                        "rnnwatch-headers-dropped"))


def test_null_header_values_can_be_dead_lettered() -> None:
    """Kafka allows a null header value and kafka-python reads it as None, but its producer only sends bytes."""
    letter = DeadLetter("prices", 0, 1, 2, b"K", b"{", [("a", None), ("b", b"1")], "invalid_json", "bad")
    headers = letter.to_kafka()[2]
    assert ("a", b"") in headers and ("b", b"1") in headers
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)


def test_dead_letter_headers_follow_one_convention() -> None:
    letter = DeadLetter("prices", 1, 7, 99, b"K" * (DLQ_KEY_BYTES + 1), b"v", [("trace", b"t1")], "invalid_json", "e")
    ours = [name for name, _ in letter.to_kafka()[2] if name != "trace"]
    assert ours and all(re.fullmatch(r"rnnwatch-[a-z]+(-[a-z]+)*", name) for name in ours), ours


def test_anomalies_are_labelled_like_model_info() -> None:
    from prometheus_client import CollectorRegistry

    from rnnwatch.consumer.metrics import Metrics

    m = Metrics(CollectorRegistry(), process_metrics=False)
    m.set_model("prices-gru", "1", "gru", "ab" * 32)
    labels = {"severity": "minor", "name": "prices-gru", "version": "1"}
    assert m.registry.get_sample_value("rnnwatch_anomalies_total", labels) == 0
    info = {"name": "prices-gru", "version": "1", "architecture": "gru", "sha256": "ab" * 6}
    assert m.registry.get_sample_value("rnnwatch_model_info", info) == 1

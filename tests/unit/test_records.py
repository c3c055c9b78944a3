"""Decoding and validation of input records; every refusal reason; fast and careful paths agree."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest

from rnnwatch.consumer.contract import FeatureSpec
from rnnwatch.consumer.decoder import TickDecoder, parse_event_time

NOW_MS = 1_750_000_000_000


@dataclass(frozen=True)
class Rec:
    """A kafka-python ConsumerRecord lookalike."""

    value: bytes | None
    key: bytes | None = b"AAPL"
    partition: int = 0
    offset: int = 0
    timestamp: int = NOW_MS
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def _decoder(**kw: object) -> TickDecoder:
    params: dict[str, object] = {"key_field": "symbol", "time_field": "ts", "max_message_bytes": 200}
    params.update(kw)
    return TickDecoder([FeatureSpec("price", "positive")], ["price"], **params)  # type: ignore[arg-type]


def _tick(**fields: object) -> bytes:
    doc = {"symbol": "AAPL", "ts": "2024-01-02T00:00:00Z", "price": 187.2}
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b"", b"A", "empty"),
        (b"x" * 300, b"A", "oversized"),
        (b"{not json", b"A", "invalid_json"),
        (b"[1, 2]", b"A", "not_an_object"),
        (_tick(symbol=...), None, "missing_key"),
        (_tick(price=...), b"A", "missing_field"),
        (_tick(price="abc"), b"A", "non_numeric"),
        (b'{"symbol": "A", "ts": 1, "price": NaN}', b"A", "invalid_json"),
        (_tick(price=1e300 * 10), b"A", "non_finite"),
        (_tick(price=1e300), b"A", "non_finite"),
        (_tick(price=-5), b"A", "out_of_domain"),
        (_tick(price=0), b"A", "out_of_domain"),
        (_tick(ts=...), b"A", "missing_timestamp"),
        (_tick(ts="yesterday"), b"A", "bad_timestamp"),
        (_tick(ts="2999-01-01T00:00:00Z"), b"A", "timestamp_future"),
        (_tick(ts="1066-10-14T00:00:00Z"), b"A", "timestamp_past"),
    ],
)
def test_each_refusal_reason(value: bytes, key: bytes | None, reason: str) -> None:
    good = Rec(_tick(), offset=0)
    bad = Rec(value, key=key, offset=1)
    batch, kept, rejected = _decoder().decode([good, bad], NOW_MS)
    assert [r.reason for r in rejected] == [reason]
    assert rejected[0].index == 1
    assert kept.tolist() == [0] and len(batch) == 1


def test_unknown_extra_field_is_ignored_and_key_can_come_from_json() -> None:
    recs = [Rec(_tick(venue="XNAS", extra={"a": 1}), key=None), Rec(_tick(symbol="MSFT", price=2), key=None)]
    batch, _, rejected = _decoder().decode(recs, NOW_MS)
    assert rejected == []
    assert batch.keys == [b"AAPL", b"MSFT"]
    np.testing.assert_allclose(batch.x[:, 0], [187.2, 2.0])


@pytest.mark.parametrize(
    ("raw", "unit", "ms"),
    [
        ("2024-01-02T00:00:00Z", "auto", 1_704_153_600_000),
        ("2024-01-02T01:00:00+01:00", "auto", 1_704_153_600_000),
        ("2024-01-02", "auto", 1_704_153_600_000),
        (1_704_153_600, "auto", 1_704_153_600_000),
        (1_704_153_600_000, "auto", 1_704_153_600_000),
        (1_704_153_600_000_000, "auto", 1_704_153_600_000),
        (1_704_153_600.5, "s", 1_704_153_600_500),
    ],
)
def test_event_time_formats(raw: object, unit: str, ms: int) -> None:
    assert parse_event_time(raw, unit) == ms


def test_fast_and_careful_paths_agree() -> None:
    good = [Rec(_tick(price=100 + i, ts=1_704_153_600 + i), key=b"K%d" % (i % 3), offset=i) for i in range(50)]
    poisoned = [*good, Rec(b"{broken", offset=50)]
    fast, fast_kept, _ = _decoder().decode(good, NOW_MS)
    slow, slow_kept, rejected = _decoder().decode(poisoned, NOW_MS)
    assert [r.reason for r in rejected] == ["invalid_json"]
    assert fast.keys == slow.keys and fast_kept.tolist() == slow_kept.tolist()
    np.testing.assert_array_equal(fast.x, slow.x)
    np.testing.assert_array_equal(fast.event_ms, slow.event_ms)


def test_kafka_timestamp_when_no_time_field() -> None:
    batch, _, _ = _decoder(time_field="").decode([Rec(_tick(ts=...), timestamp=123_456)], NOW_MS)
    assert batch.event_ms.tolist() == [123_456]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "careful-path"])
def test_the_batch_carries_each_kept_records_kafka_timestamp(fast: bool) -> None:
    """Events name the input's Kafka timestamp: the batch carries it, aligned with offsets (refused rows dropped)."""
    good = [Rec(_tick(price=float(i + 1)), offset=i, timestamp=NOW_MS - 1000 * i) for i in range(4)]
    bad = Rec(b"{not json", offset=9, timestamp=1)
    records = good if fast else [good[0], bad, *good[1:]]
    batch, kept, rejected = _decoder().decode(records, NOW_MS)
    assert len(rejected) == (0 if fast else 1)
    assert batch.offset.tolist() == [0, 1, 2, 3]
    assert batch.timestamp_ms.dtype == np.int64
    assert batch.timestamp_ms.tolist() == [records[int(i)].timestamp for i in kept.tolist()]
    assert batch.timestamp_ms.tolist() == [NOW_MS - 1000 * i for i in range(4)]

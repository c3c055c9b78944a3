"""Hostile input for the decoder: spliced neighbours, absurd timestamps, oversized keys and headers, nesting
bombs, and a fuzzer over keys, values, headers and timestamps.

The promise under test: whatever arrives, every record of a poll ends either as a tick (finite values, an
event time that can be formatted, a bounded key) or as a refusal with a stable reason from ``REASONS``, and
a record's outcome does not depend on its neighbours in the poll. Never an exception.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnwatch.consumer.contract import FeatureSpec
from rnnwatch.consumer.decoder import MAX_EVENT_MS, MIN_EVENT_MS, TickDecoder, parse_event_time
from rnnwatch.consumer.types import REASONS
from tests.unit.test_records import NOW_MS, Rec


def _decoder(**kw: Any) -> TickDecoder:
    params: dict[str, Any] = {"key_field": "symbol", "time_field": "ts", "max_message_bytes": 4096,
                              "max_key_bytes": 64, "max_header_bytes": 256}
    params.update(kw)
    return TickDecoder([FeatureSpec("price", "positive")], ["price"], **params)


def _tick(**fields: object) -> bytes:
    doc: dict[str, object] = {"symbol": "AAPL", "ts": 1_700_000_000, "price": 187.2}
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def _outcome(decoder: TickDecoder, records: list[Rec]) -> list[str | tuple[bytes, int, float]]:
    """Per record: its refusal reason, or (key, event ms, value) of the tick it became."""
    batch, kept, rejected = decoder.decode(records, NOW_MS)
    out: list[str | tuple[bytes, int, float]] = [""] * len(records)
    for rej in rejected:
        assert out[rej.index] == "", f"record {rej.index} refused twice"
        out[rej.index] = rej.reason
    for j, i in enumerate(kept.tolist()):
        assert out[i] == "", f"record {i} both kept and refused"
        out[i] = (batch.keys[j], int(batch.event_ms[j]), float(batch.x[j, 0]))
    assert all(o != "" for o in out), "a record was neither kept nor refused"
    return out


# -- item 8: each record is parsed on its own ---------------------------------------------------------------
def test_neighbouring_records_are_never_spliced_into_one_document() -> None:
    head = b'{"symbol":"AAPL","ts":1700000000,"price":1,"z":"'  # an unterminated string ...
    tail = b'"}'  # ... and the end of one, in the next record
    two = _tick(symbol="MSFT") + b"," + _tick(symbol="IBM")  # one value holding two objects
    records = [Rec(head, offset=0), Rec(tail, offset=1), Rec(two, offset=2)]
    assert _outcome(_decoder(), records) == ["invalid_json", "invalid_json", "invalid_json"]


def test_a_value_holding_two_objects_is_not_two_records() -> None:
    two = _tick(price=1.0) + b"," + _tick(price=2.0)
    records = [Rec(_tick(), offset=0), Rec(two, offset=1)]
    assert _outcome(_decoder(), records)[1] == "invalid_json"


def test_the_kafka_key_wins_over_the_json_field_in_a_mixed_poll() -> None:
    """Found by the fuzzer: the fast path read every key from JSON once one record lacked a Kafka key."""
    records = [Rec(_tick(symbol="AAPL"), key=None, offset=0), Rec(_tick(symbol="AAPL"), key=b"MSFT", offset=1)]
    assert [o[0] for o in _outcome(_decoder(), records)] == [b"AAPL", b"MSFT"]


def test_a_positive_value_that_float32_rounds_to_zero_is_out_of_domain() -> None:
    """Found by the fuzzer: 1e-300 > 0 in float64, but the model sees float32 0.0 (log -> -inf)."""
    assert _outcome(_decoder(), [Rec(_tick(price=1e-300))]) == ["out_of_domain"]


# -- item 9: absurd timestamps are refused as bad_timestamp, never raise -----------------------------------
@pytest.mark.parametrize(
    ("ts", "unit", "reason"),
    [(1e300, "auto", "bad_timestamp"), (-1e300, "auto", "bad_timestamp"), (1.7e308, "s", "bad_timestamp"),
     (2**63, "s", "bad_timestamp"), (2**64 - 1, "ms", "bad_timestamp"), (-(2**63), "us", "bad_timestamp"),
     ("99999-01-01", "auto", "bad_timestamp"), ("0000-01-01", "auto", "bad_timestamp"),
     ("0001-01-01T00:00:00+14:00", "auto", "bad_timestamp"), (True, "auto", "bad_timestamp"),
     (False, "s", "bad_timestamp"), ({"s": 1}, "auto", "bad_timestamp"), ([1], "auto", "bad_timestamp"),
     ("", "auto", "bad_timestamp"), ("NaN", "auto", "bad_timestamp"),
     # representable, just implausible: the range checks name them
     (2**63, "auto", "timestamp_future"), (1e19, "auto", "timestamp_future"), (-(2**63), "auto", "timestamp_past"),
     ("9999-12-31T23:59:59.999Z", "auto", "timestamp_future"), ("0001-01-01T00:00:00Z", "auto", "timestamp_past")],
)
def test_absurd_timestamps_are_refused_alone_and_in_company(ts: object, unit: str, reason: str) -> None:
    decoder = _decoder(timestamp_unit=unit)
    bad = Rec(_tick(ts=ts), offset=1)
    alone = _outcome(decoder, [bad])
    with_good = _outcome(decoder, [Rec(_tick(ts=1_700_000_000 if unit in ("auto", "s") else 1), offset=0), bad])
    with_broken = _outcome(decoder, [Rec(b"{", offset=0), bad])  # forces the per-record path
    assert alone == [with_good[1]] == [with_broken[1]] == [reason]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns", "auto"])
def test_parse_event_time_refuses_what_cannot_be_a_date(unit: str) -> None:
    for value in (1e300, -1e300, float("inf"), float("nan"), 10**400):
        with pytest.raises(ValueError, match="timestamp"):
            parse_event_time(value, unit)
    assert MIN_EVENT_MS <= parse_event_time(0, unit) <= MAX_EVENT_MS


def test_kafka_timestamps_outside_the_calendar_are_bad_timestamp() -> None:
    decoder = _decoder(time_field="")
    out = _outcome(decoder, [Rec(_tick(ts=...), timestamp=2**62), Rec(_tick(ts=...), timestamp=NOW_MS)])
    assert out[0] == "bad_timestamp"
    assert out[1] == (b"AAPL", NOW_MS, pytest.approx(187.2))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"symbol":"AAPL","ts":1700000000,"price":NaN}', "invalid_json"),
        (b'{"symbol":"AAPL","ts":1700000000,"price":Infinity}', "invalid_json"),
        (b'{"symbol":"AAPL","ts":1700000000,"price":1e400}', "invalid_json"),
        (b'{"symbol":"AAPL","ts":NaN,"price":1}', "invalid_json"),
        (b'{"symbol":"AAPL","ts":1700000000,"price":1\xff}', "invalid_json"),
        (b'{"symbol":"\xc3\x28","ts":1700000000,"price":1}', "invalid_json"),
        (b'{"symbol":"AAPL","ts":1700000000,"price":true}', "non_numeric"),
        (b'{"symbol":"AAPL","ts":1700000000,"price":{"v":1}}', "non_numeric"),
        (b'{"symbol":"AAPL","ts":1700000000,"price":[1]}', "non_numeric"),
        (b'{"symbol":{"n":"AAPL"},"ts":1700000000,"price":1}', "bad_key"),
        (b'{"symbol":true,"ts":1700000000,"price":1}', "bad_key"),
    ],
)
def test_literals_and_types_json_does_not_allow(raw: bytes, reason: str) -> None:
    for key in (b"AAPL", None):
        if reason == "bad_key" and key is not None:
            continue  # the Kafka key wins; the JSON field is not read
        out = _outcome(_decoder(), [Rec(_tick(), offset=0), Rec(raw, key=key, offset=1)])
        assert out[1] == reason, (raw, key)
        assert out[0] != reason


def test_duplicate_json_keys_take_the_last_value_on_both_paths() -> None:
    dup = b'{"symbol":"AAPL","ts":1700000000,"price":1.0,"price":2.0}'
    fast = _outcome(_decoder(), [Rec(dup)])
    careful = _outcome(_decoder(), [Rec(dup), Rec(b"{")])
    assert fast[0] == careful[0] == (b"AAPL", 1_700_000_000_000, 2.0)


def test_a_nesting_bomb_is_invalid_json_not_a_crash() -> None:
    """CVE-2024-27454: orjson < 3.9.15 crashed on deeply nested input; it now refuses it (limit 1024)."""
    depth = 100_000
    bomb = b'{"symbol":"AAPL","ts":1700000000,"price":1,"x":' + b"[" * depth + b"]" * depth + b"}"
    decoder = _decoder(max_message_bytes=len(bomb))
    assert _outcome(decoder, [Rec(_tick()), Rec(bomb, offset=1)])[1] == "invalid_json"
    assert _outcome(decoder, [Rec(bomb)]) == ["invalid_json"]


def test_orjson_floor_excludes_the_nesting_crash() -> None:
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    (spec,) = [Requirement(d) for d in pyproject["project"]["dependencies"] if d.startswith("orjson")]
    assert not spec.specifier.contains(Version("3.9.14")), "orjson < 3.9.15 crashes on deeply nested JSON"
    assert spec.specifier.contains(Version("3.9.15"))


# -- item 10: key and header limits ---------------------------------------------------------------------------
def test_oversized_kafka_key_json_key_and_headers_are_refused_with_their_reason() -> None:
    big_key = b"K" * 65
    records = [
        Rec(_tick(), offset=0),
        Rec(_tick(), key=big_key, offset=1),
        Rec(_tick(symbol="J" * 65), key=None, offset=2),
        Rec(_tick(), headers=[("trace", b"x" * 300)], offset=3),
        Rec(_tick(), headers=[("a", b"x" * 100), ("b", b"y" * 100), ("c", None), ("d", b"z" * 100)], offset=4),
        Rec(_tick(), key=b"K" * 64, headers=[("ok", b"x" * 200)], offset=5),
    ]
    out = _outcome(_decoder(), records)
    assert out[1:5] == ["oversized_key", "oversized_key", "oversized_headers", "oversized_headers"]
    assert isinstance(out[0], tuple) and isinstance(out[5], tuple)  # at the limit is fine


def test_every_reason_is_a_stable_label() -> None:
    assert len(set(REASONS)) == len(REASONS)
    assert all(r.isidentifier() and r == r.lower() for r in REASONS)
    for reason in ("oversized_key", "oversized_headers", "bad_key", "bad_timestamp"):
        assert reason in REASONS


# -- item 9: the fuzzer --------------------------------------------------------------------------------------
_SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.none(), st.text(max_size=12),
    st.sampled_from(["2024-01-02T00:00:00Z", "2024-01-02", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00",
                     "1066-10-14", "2999-01-01T00:00:00Z", "2024-13-01", "2024-01-02T25:00:00", "1e300"]),
)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=8)
_HOSTILE = st.sampled_from([1e300, -1e300, 1.7e308, 2**63, 2**64 - 1, -(2**63), 1e-300, 0, -1.0, True, "", "NaN"])
# Mostly plausible fields, so that one hostile field at a time reaches the checks behind the JSON parse.
_FIELDS = {
    "symbol": st.sampled_from(["AAPL", "MSFT", "X" * 70, 42]),
    "ts": st.one_of(st.integers(1_600_000_000, 1_800_000_000), st.sampled_from(["2024-01-02T00:00:00Z", 1.7e12])),
    "price": st.floats(min_value=1e-3, max_value=1e6),
}


@st.composite
def _values(draw: st.DrawFn) -> bytes | None:
    doc = {name: draw(st.one_of(valid, valid, valid, st.just(...), _HOSTILE, _JSON)) for name, valid in _FIELDS.items()}
    if draw(st.booleans()):
        doc["extra"] = draw(_JSON)
    text = orjson.dumps({k: v for k, v in doc.items() if v is not ...})
    mutation = draw(st.sampled_from(["none", "none", "none", "dup", "nan", "cut", "bytes", "two", "raw", "null"]))
    if mutation == "dup":
        text = text[:-1] + b',"price":' + orjson.dumps(draw(_SCALARS)) + b"}"
    elif mutation == "nan":
        text = text[:-1] + b',"price":' + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"])) + b"}"
    elif mutation == "cut":
        text = text[:draw(st.integers(0, len(text)))]
    elif mutation == "bytes":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=4)) + text[at:]
    elif mutation == "two":
        text = text + b"," + text
    elif mutation == "raw":
        text = draw(st.binary(max_size=40))
    elif mutation == "null":
        return None
    return text


_RECORDS = st.builds(
    Rec,
    value=_values(),
    key=st.one_of(st.none(), st.just(b""), st.binary(max_size=80), st.just(b"AAPL")),
    timestamp=st.one_of(st.just(NOW_MS), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    headers=st.lists(st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=120))), max_size=4),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_RECORDS, min_size=1, max_size=8), use_kafka_time=st.booleans())
def test_fuzz_every_record_ends_as_a_tick_or_a_refusal_independent_of_its_neighbours(
        records: list[Rec], use_kafka_time: bool) -> None:
    decoder = _decoder(time_field="" if use_kafka_time else "ts")
    together = _outcome(decoder, records)
    for rec, outcome in zip(records, together, strict=True):
        assert _outcome(decoder, [rec]) == [outcome], rec  # no splicing, fast and careful paths agree
        if isinstance(outcome, str):
            assert outcome in REASONS
            continue
        key, event_ms, value = outcome
        assert 0 < len(key) <= 64
        assert MIN_EVENT_MS <= event_ms <= NOW_MS + decoder.max_future_ms
        assert np.isfinite(np.float32(value)) and value > 0


def test_a_record_that_breaks_the_decoder_is_dead_lettered_not_fatal(monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A bug the fuzzer missed must cost one record (counted as decode_error, logged), not a crash loop."""
    from rnnwatch.consumer import decoder

    real = decoder.parse_event_time

    def buggy(value: Any, unit: str = "auto") -> int:
        if value == "2024-02-29T00:00:00Z":
            msg = "a decoder bug"
            raise ZeroDivisionError(msg)
        return real(value, unit)

    monkeypatch.setattr(decoder, "parse_event_time", buggy)
    recs = [Rec(_tick(ts="2024-02-28T00:00:00Z"), offset=0), Rec(_tick(ts="2024-02-29T00:00:00Z"), offset=1),
            Rec(_tick(ts="2024-03-01T00:00:00Z"), offset=2)]
    out = _outcome(_decoder(), recs)
    assert out[1] == "decode_error" and "decode_error" in REASONS
    assert isinstance(out[0], tuple) and isinstance(out[2], tuple)
    assert any("a decoder bug" in r.getMessage() or r.exc_info for r in caplog.records)

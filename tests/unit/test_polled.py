"""A poll as columns (``Polled``): what each transport gathers in bulk decodes exactly as its records one by one."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from rnnwatch.consumer import decoder as decoder_module
from rnnwatch.consumer.contract import FeatureSpec
from rnnwatch.consumer.decoder import TickDecoder
from rnnwatch.consumer.kafka.polled import Polled
from rnnwatch.consumer.kafka.protocols import Record
from rnnwatch.consumer.kafka.python import _columns

NOW_MS = 1_750_000_000_000


def _decoder(**kw: object) -> TickDecoder:
    params: dict[str, object] = {"key_field": "symbol", "time_field": "ts", "max_message_bytes": 200,
                                 "max_header_bytes": 64}
    params.update(kw)
    return TickDecoder([FeatureSpec("price", "positive")], ["price"], **params)  # type: ignore[arg-type]


def _tick(symbol: str = "AAPL", ts: object = "2024-01-02T00:00:00Z", price: object = 187.2) -> bytes:
    return orjson.dumps({"symbol": symbol, "ts": ts, "price": price})


def _mixed() -> list[Record]:
    """Good ticks of three keys on two partitions, interleaved with one record per kind of refusal."""
    values: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
        (b"A", _tick(price=1.0), []),
        (b"B", _tick(ts="2024-01-02T00:01:00Z", price=2.0), [("trace", b"x")]),
        (b"A", b"{not json", []),
        (None, _tick(symbol="C", price=3.0), []),
        (b"A", _tick(price="abc"), []),
        (b"B", _tick(ts="yesterday"), []),
        (b"B", _tick(price=4.0), [("big", b"y" * 100)]),
        (b"A", b"", []),
        (b"C", _tick(price=-1.0), []),
        (b"C", _tick(ts="2999-01-01T00:00:00Z"), []),
        (b"A", _tick(ts="2024-01-02T00:02:00Z", price=5.0), [("trace", None)]),
        (b"B", b"[1, 2]", []),
    ]
    return [Record("in", i % 2, 100 + i, key, value, NOW_MS - i, headers)
            for i, (key, value, headers) in enumerate(values)]


def _decoded(records: Any, **kw: object) -> tuple[Any, ...]:
    batch, kept, rejected = _decoder(**kw).decode(records, NOW_MS)
    return (batch.partition.tolist(), batch.offset.tolist(), batch.keys, batch.event_ms.tolist(),
            batch.x.tolist(), batch.timestamp_ms.tolist(), kept.tolist(),
            [(r.index, r.reason, r.detail) for r in rejected])


def test_a_record_of_the_columns_is_the_record_they_were_made_of() -> None:
    records = _mixed()
    polled = Polled.of(records)
    assert len(polled) == len(records) and polled.topic == "in"
    assert [polled[i] for i in range(len(polled))] == [
        Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, r.headers or ()) for r in records]
    assert list(polled) == polled[:]
    assert polled.partition.dtype == np.int32 and polled.offset.dtype == np.int64
    assert Polled.of(polled) is polled


def test_headers_are_kept_only_when_some_record_has_them() -> None:
    plain = [Record("in", 0, i, b"k", _tick(), 1) for i in range(3)]
    assert Polled.of(plain).headers is None
    assert Polled.of(_mixed()).headers is not None


def test_positions_per_partition_in_any_interleaving() -> None:
    polled = Polled.of([Record("in", p, o, b"k", b"{}", 0) for p, o in [(3, 7), (1, 2), (3, 8), (1, 3), (3, 9)]])
    assert polled.positions() == ({1: 4, 3: 10}, {1: 2, 3: 3})
    assert Polled.of([]).positions() == ({}, {})


@pytest.mark.parametrize("time_field", ["ts", ""])
def test_a_poll_mixing_good_and_bad_records_decodes_the_same_as_columns(time_field: str) -> None:
    """Same ticks, same rows, same dead letters (index, reason, detail) from columns as from record objects."""
    records = _mixed()
    expected = _decoded(records, time_field=time_field)
    assert _decoded(Polled.of(records), time_field=time_field) == expected
    assert [reason for _, reason, _ in expected[-1]] == (
        ["invalid_json", "non_numeric", "bad_timestamp", "oversized_headers", "empty", "out_of_domain",
         "timestamp_future", "not_an_object"] if time_field else
        ["invalid_json", "non_numeric", "oversized_headers", "empty", "out_of_domain", "not_an_object"])


def test_a_clean_poll_takes_the_fast_path_and_agrees_with_the_careful_one() -> None:
    good = [r for r in _mixed() if r.offset in (100, 101, 103, 110)]
    decoder = _decoder()
    assert decoder._fast_parse(Polled.of(good)) is not None
    fast = _decoded(Polled.of(good))
    careful = _decoded([*good, Record("in", 0, 999, b"A", b"{bad", NOW_MS, [])])
    assert careful[:7] == fast[:7]
    assert fast[3] == [1_704_153_600_000, 1_704_153_660_000, 1_704_153_600_000, 1_704_153_720_000]


def test_iso_times_are_cached_and_a_bad_one_sends_the_poll_to_the_careful_path() -> None:
    decoder = _decoder()
    texts = ["2024-01-02T00:00:00Z", "2024-01-02T00:01:00Z", "2024-01-02T00:00:00Z"]
    times = decoder._iso_times(texts)
    assert times is not None
    assert times.tolist() == [1_704_153_600_000, 1_704_153_660_000, 1_704_153_600_000]
    assert set(decoder._time_cache) == set(texts)
    assert decoder._iso_times([*texts, "yesterday"]) is None


def test_kafka_python_records_become_the_same_columns() -> None:
    records = [ConsumerRecord(r.topic, r.partition, 0, r.offset, r.timestamp, 0, r.key, r.value, list(r.headers),
                              None, 1, 1, -1) for r in _mixed()]
    polled = _columns("in", records)
    expected = Polled.of(_mixed())
    assert list(polled) == list(expected)
    assert _decoded(polled) == _decoded(_mixed())
    assert len(_columns("in", [])) == 0


@pytest.mark.parametrize("ids", [[7, 12, 7, 3], [1.5, 2.0, 1.5, 1e20], ["a", 12, "a", 3.25]])
def test_series_ids_that_are_json_numbers_take_the_fast_path_with_the_careful_paths_keys(ids: list[Any]) -> None:
    """No Kafka key, ``{"symbol": 7, ...}``: a feed keyed by numeric ids is not decoded record by record."""
    records = [Record("in", 0, i, None, orjson.dumps({"symbol": s, "ts": 1_704_153_600 + i, "price": 1.0 + i}),
                      NOW_MS, []) for i, s in enumerate(ids)]
    assert _decoder()._fast_parse(Polled.of(records)) is not None
    careful = _decoded([*records, Record("in", 0, 99, None, b"{bad", NOW_MS, [])])
    fast = _decoded(records)
    assert fast[:7] == careful[:7]
    assert fast[2] == [str(s).encode() for s in ids]


@pytest.mark.parametrize("chunk", [4, 5, 1024])
def test_a_bad_record_sends_only_its_chunk_down_the_careful_path_with_the_same_outcome(
        chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunked decoding of a poll (fast where a chunk allows it) equals decoding each record on its own."""
    monkeypatch.setattr(decoder_module, "CAREFUL_CHUNK", chunk)
    good = [Record("in", i % 3, i, b"K%d" % (i % 4), _tick(ts=1_704_153_600 + i, price=1.0 + i), NOW_MS - i, [])
            for i in range(23)]
    records = list(good)
    for at, record in [(2, b"{oops"), (9, _tick(price="x")), (10, b""), (22, _tick(price=-2.0))]:
        records[at] = Record("in", 0, at, b"K0", record, NOW_MS, [])
    decoder = _decoder()
    careful_calls: list[int] = []
    parse_one = decoder._parse_guarded

    def careful(rec: Record) -> Any:
        careful_calls.append(rec.offset)
        return parse_one(rec)

    monkeypatch.setattr(decoder, "_parse_guarded", careful)
    got = _decoded_with(decoder, records)
    alone = [_decoded([r]) for r in records]
    assert got[2] == [k for one in alone for k in one[2]]
    assert got[3] == [t for one in alone for t in one[3]] and got[4] == [v for one in alone for v in one[4]]
    assert got[6] == [i for i, one in enumerate(alone) if one[6] == [0]]
    assert got[7] == [(i, reason, detail) for i, one in enumerate(alone) for _, reason, detail in one[7]]
    if chunk < len(records):  # only the chunks holding a bad record went record by record
        assert set(careful_calls) == {i for i in range(len(records)) if any(i // chunk == b // chunk
                                                                            for b in (2, 9, 10, 22))}


def _decoded_with(decoder: TickDecoder, records: list[Record]) -> tuple[Any, ...]:
    batch, kept, rejected = decoder.decode(records, NOW_MS)
    return (batch.partition.tolist(), batch.offset.tolist(), batch.keys, batch.event_ms.tolist(),
            batch.x.tolist(), batch.timestamp_ms.tolist(), kept.tolist(),
            [(r.index, r.reason, r.detail) for r in rejected])

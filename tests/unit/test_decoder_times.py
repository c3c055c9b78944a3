"""Event times on the decoder's fast path: strings through the cache (new ones parsed into it), anything else
through the per-kind checks, with the same results as parsing every record on its own."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from rnnwatch.consumer.contract import FeatureSpec
from rnnwatch.consumer.decoder import TickDecoder, parse_event_time
from rnnwatch.consumer.kafka.polled import Polled

NOW_MS = 1_750_000_000_000


def _decoder() -> TickDecoder:
    return TickDecoder([FeatureSpec("price", "positive")], ["price"], key_field="symbol", time_field="ts")


def _poll(times: list[object], start: int = 0) -> Polled:
    values = [orjson.dumps({"symbol": "A", "ts": t, "price": 1.0 + i}) for i, t in enumerate(times)]
    n = len(values)
    return Polled.columns("t", [0] * n, list(range(start, start + n)), [NOW_MS] * n, [b"A"] * n, values, None)


def _iso(i: int) -> str:
    return f"2024-01-02T00:{i // 60:02d}:{i % 60:02d}Z"


def test_cached_new_and_repeated_strings_give_each_records_own_time() -> None:
    decoder = _decoder()
    first = [_iso(i // 3) for i in range(30)]  # repeats within the poll
    second = [_iso(5 + i // 2) for i in range(30)]  # half seen in the first poll, half new
    for times in (first, second, second):
        batch, _, rejected = decoder.decode(_poll(times), NOW_MS)
        assert not rejected
        assert batch.event_ms.tolist() == [parse_event_time(t) for t in times]


@pytest.mark.parametrize(("odd", "reason"), [
    ("not a time", "bad_timestamp"),
    (None, "missing_timestamp"),
    ([1, 2], "bad_timestamp"),
    ({"a": 1}, "bad_timestamp"),
])
def test_one_bad_time_among_cached_strings_refuses_that_record_only(odd: object, reason: str) -> None:
    decoder = _decoder()
    times: list[object] = [_iso(i) for i in range(10)]
    decoder.decode(_poll(times), NOW_MS)  # every string is cached now
    times[4] = odd
    batch, kept, rejected = decoder.decode(_poll(times, 10), NOW_MS)
    assert [(r.index, r.reason) for r in rejected] == [(4, reason)]
    assert kept.tolist() == [i for i in range(10) if i != 4]
    assert batch.event_ms.tolist() == [parse_event_time(t) for i, t in enumerate(times) if i != 4]


def test_epoch_numbers_never_take_the_string_cache() -> None:
    decoder = _decoder()
    decoder.decode(_poll([_iso(i) for i in range(5)]), NOW_MS)
    seconds = [1_704_153_600 + i for i in range(5)]
    batch, _, rejected = decoder.decode(_poll(seconds), NOW_MS)
    assert not rejected
    assert batch.event_ms.tolist() == [s * 1000 for s in seconds]


def test_the_cache_is_bounded() -> None:
    decoder = _decoder()
    base = np.datetime64("2024-01-01T00:00:00")
    for start in range(0, 120_000, 20_000):
        times = [f"{base + np.timedelta64(start + i, 's')}Z" for i in range(20_000)]
        batch, _, rejected = decoder.decode(_poll(times), NOW_MS)
        assert not rejected and batch.event_ms[-1] == parse_event_time(times[-1])
        assert len(decoder._time_cache) <= 100_000

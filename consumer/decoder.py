"""Decode and validate input records into a :class:`~rnnwatch.consumer.types.TickBatch`.

Errors are values on this path: a record that cannot be used becomes a :class:`Rejected` with a short,
stable ``reason`` (it labels the ``rnnwatch_records_failed_total`` counter and the dead-letter header) and a
human ``detail``. The per-record loop does only what must be per record (JSON parse, field access);
range checks (finite, domain, timestamp bounds) run vectorised over the batch.

Every record is parsed on its own (``orjson.loads`` per value, never one document spliced from several):
a record's outcome never depends on its neighbours in the poll. Whatever arrives ends as a tick or as a
refusal, checked in this order (the first that applies names the refusal):

  empty, oversized (value), oversized_headers, oversized_key (Kafka key), invalid_json (including non-UTF-8
  bytes, ``NaN``/``Infinity`` literals, numbers beyond float range and nesting deeper than orjson's 1024
  levels), not_an_object, missing_key / bad_key / oversized_key (key from the JSON field), missing_field /
  non_numeric (per feature, in model order), missing_timestamp / bad_timestamp (not ISO 8601 or epoch, or
  outside the years 1-9999), then the vectorised non_finite, out_of_domain, timestamp_future, timestamp_past.

A record that makes the decoder itself fail (a bug, by definition: the fuzzer in the tests looks for them)
is refused as ``decode_error`` and logged with its traceback, so it costs one dead letter, never the service.

Duplicate JSON object keys are not refused: the last value wins, as in orjson, Python's ``json`` and most
parsers (RFC 8259 leaves it to the implementation); both decoding paths agree on it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, Protocol

import numpy as np
import orjson

from rnnwatch.consumer.contract import FeatureSpec
from rnnwatch.consumer.kafka.polled import Polled
from rnnwatch.consumer.logs import RateLimitedLog
from rnnwatch.consumer.types import Reason, TickBatch

__all__ = ["CAREFUL_CHUNK", "MAX_EVENT_MS", "MIN_EVENT_MS", "Rejected", "SourceRecord", "TickDecoder", "headers_size",
           "parse_event_time"]

# Event times must be dates an event can carry (RFC 3339, years 1-9999): 0001-01-01T00:00:00.000Z ...
MIN_EVENT_MS = -62_135_596_800_000
MAX_EVENT_MS = 253_402_300_799_999  # ... 9999-12-31T23:59:59.999Z
CAREFUL_CHUNK = 1024  # records tried on the fast path together once a poll as a whole cannot be
log = logging.getLogger(__name__)
_UNIT_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_NUMBER_TYPES = {int, float}
_KEY_TYPES = {bytes, str, int, float}  # a Kafka key, or the key field (bool is not int here: type() is exact)


class SourceRecord(Protocol):
    """What the decoder reads from a kafka-python ConsumerRecord (tests may pass any lookalike)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...
    # kafka-python records also carry ``headers`` (list of (str, bytes | None)); lookalikes may omit them.


@dataclass(frozen=True)
class Rejected:
    index: int  # position in the polled list
    reason: Reason
    detail: str


def _auto_unit(v: float) -> str:
    """Epoch unit by magnitude: seconds until 5138 AD, then ms, us, ns."""
    a = abs(v)
    return "ns" if a >= 1e17 else "us" if a >= 1e14 else "ms" if a >= 1e11 else "s"


def parse_event_time(value: Any, unit: str = "auto") -> int:
    """Event time in ms since the epoch from an ISO 8601 string or an epoch number; ValueError otherwise."""
    if isinstance(value, bool):
        msg = f"timestamp {value!r} is a boolean"
        raise ValueError(msg)
    if isinstance(value, (int, float)):
        try:
            v = float(value)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v):
            msg = f"timestamp {value!r} is not finite"
            raise ValueError(msg)
        if unit == "auto":
            unit = _auto_unit(v)
        return _in_calendar(v * _UNIT_MS[unit], value)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return _in_calendar(dt.timestamp() * 1000, value)
    msg = f"timestamp {value!r} is neither an ISO 8601 string nor an epoch number"
    raise ValueError(msg)


def _in_calendar(ms: float, value: Any) -> int:
    if not MIN_EVENT_MS <= ms <= MAX_EVENT_MS:  # also refuses inf and NaN
        msg = f"timestamp {value!r} is outside the years 1-9999"
        raise ValueError(msg)
    return round(ms)


def headers_size(headers: Sequence[tuple[str | bytes, bytes | None]] | None) -> int:
    """Bytes of a record's header keys and values, as the broker counts them (give or take varints)."""
    return sum(len(k.encode() if isinstance(k, str) else k) + len(v or b"") for k, v in headers or ())


class TickDecoder:
    """Turns raw Kafka records into a TickBatch plus rejections, per the model's features.

    Size limits (bytes): ``max_message_bytes`` for a value, ``max_key_bytes`` for a key (Kafka's, or the one
    read from ``key_field``), ``max_header_bytes`` for all header keys and values of a record. A key is
    copied into every event, dead letter and snapshot of its series, so it must stay far below the
    broker's message size limit.
    """

    def __init__(self, features: Sequence[FeatureSpec], fields: Sequence[str], *, key_field: str,
                 time_field: str, timestamp_unit: str = "auto", max_message_bytes: int = 1 << 20,
                 max_future_ms: int = 86_400_000, min_event_ms: int = -2_208_988_800_000,
                 max_key_bytes: int = 4096, max_header_bytes: int = 64 * 1024) -> None:
        self.features = tuple(features)
        self.fields = tuple(fields)
        self.key_field = key_field
        self.time_field = time_field
        self.timestamp_unit = timestamp_unit
        self.max_message_bytes = max_message_bytes
        self.max_future_ms = max_future_ms
        self.min_event_ms = min_event_ms
        self.max_key_bytes = max_key_bytes
        self.max_header_bytes = max_header_bytes
        self._positive = np.array([f.domain == "positive" for f in self.features])
        self._nonnegative = np.array([f.domain == "nonnegative" for f in self.features])
        self._time_cache: dict[str, int] = {}  # ticks of many keys share timestamps
        self._bug_log = RateLimitedLog(log)

    def decode(self, records: Sequence[SourceRecord], now_ms: int) -> tuple[TickBatch, np.ndarray, list[Rejected]]:
        """(valid ticks, their indices into ``records``, rejections) for one poll (best as :class:`Polled` columns)."""
        polled = Polled.of(records)
        rejected: list[Rejected] = []
        kept, keys, event_ms, x = self._parse(polled, rejected)
        ok = self._range_check(x, event_ms, now_ms, kept, rejected)
        # the fast path keeps range(n): numpy converts a range element by element (~50 ns each)
        at = np.arange(len(kept), dtype=np.int64) if isinstance(kept, range) else np.asarray(kept, dtype=np.int64)
        idx = at[ok]
        batch = TickBatch(
            partition=polled.partition[idx], offset=polled.offset[idx],
            keys=[keys[j] for j in np.flatnonzero(ok).tolist()] if not ok.all() else keys,
            event_ms=event_ms[ok], x=x[ok].astype(np.float32), timestamp_ms=polled.timestamp[idx],
        )
        rejected.sort(key=lambda r: r.index)
        return batch, idx, rejected

    def decode_docs(self, docs: Sequence[dict[str, Any]], keys: Sequence[bytes | None],
                    now_ms: int) -> tuple[TickBatch, np.ndarray, list[Rejected]]:
        """Already-parsed objects (a CSV row each: ``rnnwatch score``) through the same checks as :meth:`decode`.

        Row ``i`` stands for partition 0, offset ``i``; ``keys[i]`` plays the Kafka key (None: the key field
        of the object). Everything after JSON parsing is shared with the Kafka path, so a row is refused
        offline for exactly the reason its record would be dead-lettered online.
        """
        rejected: list[Rejected] = []
        parsed = (self._from_doc(doc, key, 0) for doc, key in zip(docs, keys, strict=True))
        kept, tick_keys, event_ms, x = self._collect(parsed, rejected)
        ok = self._range_check(x, event_ms, now_ms, kept, rejected)
        idx = np.asarray(kept, dtype=np.int64)[ok]
        batch = TickBatch(partition=np.zeros(idx.size, dtype=np.int32), offset=idx.copy(),
                          keys=[tick_keys[j] for j in np.flatnonzero(ok).tolist()], event_ms=event_ms[ok],
                          x=x[ok].astype(np.float32), timestamp_ms=np.zeros(idx.size, dtype=np.int64))
        rejected.sort(key=lambda r: r.index)
        return batch, idx, rejected

    def _parse(self, polled: Polled, rejected: list[Rejected]) -> tuple[Sequence[int], list[bytes], np.ndarray,
                                                                         np.ndarray]:
        """(kept indices, keys, event times, values) before the range checks; refusals go to ``rejected``.

        The whole poll on the fast path when every record allows it; else chunk by chunk, so a bad record sends
        only its chunk of :data:`CAREFUL_CHUNK` records down the careful path, not the whole poll (which costs
        about four times as much per record). Records are independent, so the split changes no outcome.
        """
        fast = self._fast_or_none(polled)
        if fast is not None:
            return range(len(polled)), *fast
        n = len(polled)
        if n <= CAREFUL_CHUNK:
            return self._collect(map(self._parse_guarded, polled), rejected)
        kept: list[Sequence[int]] = []
        keys: list[bytes] = []
        times: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        for start in range(0, n, CAREFUL_CHUNK):
            chunk = polled.take(start, min(n, start + CAREFUL_CHUNK))
            fast = self._fast_or_none(chunk)
            if fast is not None:
                kept.append(range(start, start + len(chunk)))
                part_keys, part_times, part_x = fast
            else:
                part_kept, part_keys, part_times, part_x = self._collect(map(self._parse_guarded, chunk), rejected,
                                                                         start)
                kept.append(part_kept)
            keys += part_keys
            times.append(part_times)
            rows.append(part_x)
        return [i for part in kept for i in part], keys, np.concatenate(times), np.concatenate(rows)

    def _fast_or_none(self, polled: Polled) -> tuple[list[bytes], np.ndarray, np.ndarray] | None:
        try:
            return self._fast_parse(polled)
        except Exception:  # noqa: BLE001 - a decoder bug: the careful path finds and refuses the record
            return None

    def _collect(self, parsed: Iterable[tuple[bytes, int, list[float]] | Rejected], rejected: list[Rejected],
                 start: int = 0) -> tuple[list[int], list[bytes], np.ndarray, np.ndarray]:
        """(kept indices, keys, event times, values) of per-row parse results; refusals go to ``rejected``.

        Row ``i`` of ``parsed`` is record ``start + i`` of the poll.
        """
        kept: list[int] = []
        keys: list[bytes] = []
        times: list[int] = []
        rows: list[list[float]] = []
        for i, one in enumerate(parsed, start):
            if isinstance(one, Rejected):
                rejected.append(Rejected(i, one.reason, one.detail))
                continue
            kept.append(i)
            keys.append(one[0])
            times.append(one[1])
            rows.append(one[2])
        x = np.array(rows, dtype=np.float64).reshape(len(rows), len(self.features))
        return kept, keys, np.array(times, dtype=np.int64), x

    def check_values(self, x: np.ndarray, event_ms: np.ndarray, now_ms: int) -> tuple[np.ndarray, list[Rejected]]:
        """(ok mask, rejections) of already-numeric rows (``score_array``): the range checks of :meth:`decode`."""
        rejected: list[Rejected] = []
        ok = self._range_check(np.asarray(x, dtype=np.float64), event_ms, now_ms, list(range(len(x))), rejected)
        rejected.sort(key=lambda r: r.index)
        return ok, rejected

    def _fast_parse(self, polled: Polled) -> tuple[list[bytes], np.ndarray, np.ndarray] | None:
        """The whole batch in a few C-level passes; None if any record needs the careful per-record path.

        Each value is parsed by its own ``orjson.loads`` call: joining the values into one array document
        would let a record's unterminated string swallow its neighbour, or one value holding two objects
        count as two records.
        """
        values = polled.values
        if not all(values) or max(map(len, values)) > self.max_message_bytes:  # type: ignore[arg-type]
            return None
        if polled.headers is not None and max(map(headers_size, polled.headers)) > self.max_header_bytes:
            return None
        try:
            docs = list(map(orjson.loads, values))  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            return None
        if set(map(type, docs)) != {dict}:
            return None
        keys: list[Any] = list(polled.keys)
        if not all(keys):  # the JSON field only where a record has no Kafka key
            keys = [k or d.get(self.key_field) for k, d in zip(keys, docs, strict=True)]
            if not set(map(type, keys)) <= _KEY_TYPES or not all(keys):  # "", 0, None: the careful path names them
                return None
            keys = [k if type(k) is bytes else str(k).encode() for k in keys]  # as _key_from: numbers by str()
        if max(map(len, keys)) > self.max_key_bytes:
            return None
        columns = [list(map(dict.get, docs, repeat(name))) for name in self.fields]
        if any(not set(map(type, col)) <= _NUMBER_TYPES for col in columns):
            return None
        event_ms = self._fast_times(docs, polled)
        if event_ms is None:
            return None
        x = np.array(columns, dtype=np.float64).T.reshape(len(docs), len(self.fields))
        return keys, event_ms, x

    def _fast_times(self, docs: list[dict[str, Any]], polled: Polled) -> np.ndarray | None:
        if not self.time_field:
            return polled.timestamp.copy()
        raw: list[Any] = list(map(dict.get, docs, repeat(self.time_field)))
        known = self._cached_times(raw)
        if known is not None:
            return known
        kinds = set(map(type, raw))
        if kinds <= _NUMBER_TYPES:
            seconds = np.asarray(raw, dtype=np.float64)
            unit = self.timestamp_unit
            if unit == "auto":
                with np.errstate(invalid="ignore"):
                    units = {_auto_unit(float(v)) for v in (np.abs(seconds).min(), np.abs(seconds).max())}
                if len(units) != 1:
                    return None
                unit = units.pop()
            with np.errstate(invalid="ignore", over="ignore"):
                scaled = seconds * _UNIT_MS[unit]
                if not ((scaled >= MIN_EVENT_MS) & (scaled <= MAX_EVENT_MS)).all():  # the careful path names it
                    return None
            return np.round(scaled).astype(np.int64)
        if kinds == {str}:
            return self._iso_times(raw)
        return None

    def _cached_times(self, raw: list[Any]) -> np.ndarray | None:
        """ms of ``raw`` when every one is an ISO string that parses (new ones are parsed into the cache); None
        when one is not a string (numbers, a missing field: :meth:`_fast_times` sorts them out) or does not parse.

        The common case in one C-level pass: the cache's keys are strings, so a value found is a string.
        """
        cache = self._time_cache
        n = len(raw)
        try:
            return np.fromiter(map(cache.__getitem__, raw), dtype=np.int64, count=n)
        except (KeyError, TypeError):  # a string not seen yet, or not a string at all
            pass
        try:
            new = set(raw).difference(cache)
        except TypeError:  # unhashable: an object or a list
            return None
        if not set(map(type, new)) <= {str}:
            return None
        if len(cache) + len(new) > 100_000:
            cache.clear()
            new = set(raw)
        try:
            for text in new:
                cache[text] = parse_event_time(text)
        except ValueError:
            return None
        return np.fromiter(map(cache.__getitem__, raw), dtype=np.int64, count=n)

    def _iso_times(self, texts: list[str]) -> np.ndarray | None:
        """ms of ISO 8601 strings through the cache (ticks of many keys share timestamps); None if one is bad."""
        cache = self._time_cache
        if len(cache) > 100_000:
            cache.clear()
        known = list(map(cache.get, texts))
        if None in known:
            try:
                for text in {t for t, ms in zip(texts, known, strict=True) if ms is None}:
                    cache[text] = parse_event_time(text)
            except ValueError:
                return None
            known = list(map(cache.__getitem__, texts))
        return np.array(known, dtype=np.int64)

    def _parse_guarded(self, rec: SourceRecord) -> tuple[bytes, int, list[float]] | Rejected:
        try:
            return self._parse_one(rec)
        except Exception as exc:  # noqa: BLE001 - one record that breaks the decoder is refused, never fatal
            self._bug_log.warning("the decoder failed on partition %d offset %d (a bug: please report it); the "
                                  "record is dead-lettered as decode_error", rec.partition, rec.offset, exc_info=True)
            return Rejected(-1, "decode_error", _short(f"{type(exc).__name__}: {exc}", 300))

    def _parse_one(self, rec: SourceRecord) -> tuple[bytes, int, list[float]] | Rejected:
        value = rec.value
        if not value:
            return Rejected(-1, "empty", "record has no value")
        if len(value) > self.max_message_bytes:
            return Rejected(-1, "oversized", f"{len(value)} bytes > max_message_bytes {self.max_message_bytes}")
        size = headers_size(getattr(rec, "headers", None))
        if size > self.max_header_bytes:
            return Rejected(-1, "oversized_headers", f"headers are {size} bytes > max_header_bytes "
                                                     f"{self.max_header_bytes}")
        if rec.key and len(rec.key) > self.max_key_bytes:
            return Rejected(-1, "oversized_key", f"key is {len(rec.key)} bytes > max_key_bytes {self.max_key_bytes}")
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return Rejected(-1, "invalid_json", str(exc))
        if not isinstance(doc, dict):
            return Rejected(-1, "not_an_object", f"JSON value is a {type(doc).__name__}, expected an object")
        return self._from_doc(doc, rec.key, rec.timestamp)

    def _from_doc(self, doc: dict[str, Any], kafka_key: bytes | None,
                  kafka_ts: int) -> tuple[bytes, int, list[float]] | Rejected:
        """Key, event time and feature values of one parsed object (the checks after JSON parsing)."""
        key = kafka_key or self._key_from(doc)
        if isinstance(key, Rejected):
            return key
        values: list[float] = []
        for name in self.fields:
            v = doc.get(name)
            if v is None:
                return Rejected(-1, "missing_field", f"field {name!r} is missing or null")
            if type(v) is not float and type(v) is not int:
                return Rejected(-1, "non_numeric", f"field {name!r} is {_short(v)}, expected a number")
            values.append(v)
        if not self.time_field:
            return key, kafka_ts, values
        raw_ts = doc.get(self.time_field)
        if raw_ts is None:
            return Rejected(-1, "missing_timestamp", f"field {self.time_field!r} is missing")
        try:
            ts = parse_event_time(raw_ts, self.timestamp_unit)
        except (ValueError, OverflowError) as exc:
            return Rejected(-1, "bad_timestamp", _short(str(exc), 300))
        return key, ts, values

    def _key_from(self, doc: dict[str, Any]) -> bytes | Rejected:
        """The series key from the JSON field (no Kafka key): a non-empty string or number, bounded."""
        raw = doc.get(self.key_field)
        if raw is None or raw == "":
            return Rejected(-1, "missing_key", f"no Kafka key and no {self.key_field!r} field")
        if type(raw) not in (str, int, float):
            return Rejected(-1, "bad_key", f"field {self.key_field!r} is {_short(raw)}, expected a string or number")
        key = str(raw).encode()
        if len(key) > self.max_key_bytes:
            return Rejected(-1, "oversized_key", f"key field {self.key_field!r} is {len(key)} bytes > "
                                                 f"max_key_bytes {self.max_key_bytes}")
        return key

    def _range_check(self, x: np.ndarray, event_ms: np.ndarray, now_ms: int, kept: Sequence[int],
                     rejected: list[Rejected]) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            x32 = x.astype(np.float32)  # what the model sees: checked on float64, 1e-50 > 0 would become 0
            checks: tuple[tuple[Reason, Any, str], ...] = (
                ("bad_timestamp", (event_ms < MIN_EVENT_MS) | (event_ms > MAX_EVENT_MS),
                 "event time outside the years 1-9999"),
                ("non_finite", ~np.isfinite(x).all(axis=1), "feature value is NaN or infinite (or overflows float32)"),
                ("non_finite", ~np.isfinite(x32).all(axis=1), "value overflows float32"),
                ("out_of_domain", (x32[:, self._positive] <= 0).any(axis=1), "value must be > 0 for this model"),
                ("out_of_domain", (x32[:, self._nonnegative] < 0).any(axis=1), "value must be >= 0 for this model"),
                ("timestamp_future", event_ms > now_ms + self.max_future_ms,
                 f"event time more than {self.max_future_ms} ms ahead of the wall clock"),
                ("timestamp_past", event_ms < self.min_event_ms, "event time before min_event_time"),
            )
        ok = np.ones(len(kept), dtype=bool)
        for reason, bad, detail in checks:
            new_bad = bad & ok
            for j in np.flatnonzero(new_bad).tolist():
                rejected.append(Rejected(kept[j], reason, f"{detail}: {x[j].tolist()} @ {int(event_ms[j])}"))
            ok &= ~bad
        return ok


def _short(value: Any, limit: int = 100) -> str:
    """A value for an error message, cut so a huge field cannot blow up the dead letter's error header."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"

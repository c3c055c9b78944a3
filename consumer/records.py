"""Decode and validate input records into a :class:`~rnnwatch.consumer.runner.TickBatch`.

Errors are values on this path: a record that cannot be used becomes a :class:`Rejected` with a short,
stable ``reason`` (it labels the ``rnnwatch_records_failed_total`` counter and the dead-letter header) and a
human ``detail``. The per-record loop does only what must be per record (JSON parse, field access);
range checks (finite, domain, timestamp bounds) run vectorised over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import orjson

from rnnwatch.consumer.contract import FeatureSpec
from rnnwatch.consumer.runner import TickBatch

__all__ = ["REASONS", "Rejected", "SourceRecord", "TickDecoder", "parse_event_time"]

# Every reason a record can be refused; the dead-letter `rnnwatch-reason` header holds one of these.
REASONS = (
    "empty", "oversized", "invalid_json", "not_an_object", "missing_key", "missing_field", "non_numeric",
    "non_finite", "out_of_domain", "missing_timestamp", "bad_timestamp", "timestamp_future", "timestamp_past",
)
_UNIT_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_NUMBER_TYPES = {int, float}


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


@dataclass(frozen=True)
class Rejected:
    index: int  # position in the polled list
    reason: str
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
        v = float(value)
        if not math.isfinite(v):
            msg = f"timestamp {value!r} is not finite"
            raise ValueError(msg)
        if unit == "auto":
            unit = _auto_unit(v)
        return round(v * _UNIT_MS[unit])
    if isinstance(value, str):
        dt = datetime.fromisoformat(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return round(dt.timestamp() * 1000)
    msg = f"timestamp {value!r} is neither an ISO 8601 string nor an epoch number"
    raise ValueError(msg)


class TickDecoder:
    """Turns raw Kafka records into a TickBatch plus rejections, per the model's features."""

    def __init__(self, features: Sequence[FeatureSpec], fields: Sequence[str], *, key_field: str,
                 time_field: str, timestamp_unit: str = "auto", max_message_bytes: int = 1 << 20,
                 max_future_ms: int = 86_400_000, min_event_ms: int = -2_208_988_800_000) -> None:
        self.features = tuple(features)
        self.fields = tuple(fields)
        self.key_field = key_field
        self.time_field = time_field
        self.timestamp_unit = timestamp_unit
        self.max_message_bytes = max_message_bytes
        self.max_future_ms = max_future_ms
        self.min_event_ms = min_event_ms
        self._positive = np.array([f.domain == "positive" for f in self.features])
        self._nonnegative = np.array([f.domain == "nonnegative" for f in self.features])
        self._time_cache: dict[str, int] = {}  # ticks of many keys share timestamps

    def decode(self, records: Sequence[SourceRecord], now_ms: int) -> tuple[TickBatch, np.ndarray, list[Rejected]]:
        """(valid ticks, their indices into ``records``, rejections) for one poll."""
        rejected: list[Rejected] = []
        fast = self._fast_parse(records)
        if fast is not None:
            keys, event_ms, x = fast
            kept = list(range(len(records)))
        else:
            kept, keys, times, rows = [], [], [], []
            for i, rec in enumerate(records):
                parsed = self._parse_one(rec)
                if isinstance(parsed, Rejected):
                    rejected.append(Rejected(i, parsed.reason, parsed.detail))
                    continue
                kept.append(i)
                keys.append(parsed[0])
                times.append(parsed[1])
                rows.append(parsed[2])
            x = np.array(rows, dtype=np.float64).reshape(len(rows), len(self.features))
            event_ms = np.array(times, dtype=np.int64)
        ok = self._range_check(x, event_ms, now_ms, kept, rejected)
        idx = np.asarray(kept, dtype=np.int64)[ok]
        batch = TickBatch(
            partition=np.fromiter((records[i].partition for i in idx.tolist()), dtype=np.int32, count=idx.size),
            offset=np.fromiter((records[i].offset for i in idx.tolist()), dtype=np.int64, count=idx.size),
            keys=[keys[j] for j in np.flatnonzero(ok).tolist()] if not ok.all() else keys,
            event_ms=event_ms[ok],
            x=x[ok].astype(np.float32),
        )
        rejected.sort(key=lambda r: r.index)
        return batch, idx, rejected

    def _fast_parse(self, records: Sequence[SourceRecord]) -> tuple[list[bytes], np.ndarray, np.ndarray] | None:
        """The whole batch in a few C-level passes; None if any record needs the careful per-record path."""
        values = [r.value for r in records]
        if not all(values) or max(map(len, values)) > self.max_message_bytes:  # type: ignore[arg-type]
            return None
        try:
            docs = orjson.loads(b"[" + b",".join(values) + b"]")  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            return None
        if len(docs) != len(records) or set(map(type, docs)) != {dict}:
            return None
        keys = [r.key for r in records]
        if not all(keys):
            from_doc = [d.get(self.key_field) for d in docs]
            if set(map(type, from_doc)) != {str} or not all(from_doc):
                return None
            keys = [k.encode() for k in from_doc]
        columns = [[d.get(name) for d in docs] for name in self.fields]
        if any(not set(map(type, col)) <= _NUMBER_TYPES for col in columns):
            return None
        event_ms = self._fast_times(docs, records)
        if event_ms is None:
            return None
        x = np.array(columns, dtype=np.float64).T.reshape(len(records), len(self.fields))
        return keys, event_ms, x  # type: ignore[return-value]

    def _fast_times(self, docs: list[dict[str, Any]], records: Sequence[SourceRecord]) -> np.ndarray | None:
        if not self.time_field:
            return np.fromiter((r.timestamp for r in records), dtype=np.int64, count=len(records))
        raw: list[Any] = [d.get(self.time_field) for d in docs]
        kinds = set(map(type, raw))
        if kinds <= _NUMBER_TYPES:
            seconds = np.asarray(raw, dtype=np.float64)
            if not np.isfinite(seconds).all():
                return None
            unit = self.timestamp_unit
            if unit == "auto":
                units = {_auto_unit(float(v)) for v in (np.abs(seconds).min(), np.abs(seconds).max())}
                if len(units) != 1:
                    return None
                unit = units.pop()
            return np.round(seconds * _UNIT_MS[unit]).astype(np.int64)
        if kinds == {str}:
            cache = self._time_cache
            if len(cache) > 100_000:
                cache.clear()
            out = np.empty(len(raw), dtype=np.int64)
            try:
                for i, text in enumerate(raw):
                    ms = cache.get(text)
                    if ms is None:
                        ms = cache[text] = parse_event_time(text)
                    out[i] = ms
            except ValueError:
                return None
            return out
        return None

    def _parse_one(self, rec: SourceRecord) -> tuple[bytes, int, list[float]] | Rejected:
        value = rec.value
        if not value:
            return Rejected(-1, "empty", "record has no value")
        if len(value) > self.max_message_bytes:
            return Rejected(-1, "oversized", f"{len(value)} bytes > max_message_bytes {self.max_message_bytes}")
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return Rejected(-1, "invalid_json", str(exc))
        if not isinstance(doc, dict):
            return Rejected(-1, "not_an_object", f"JSON value is a {type(doc).__name__}, expected an object")
        key = rec.key
        if not key:
            raw_key = doc.get(self.key_field)
            if raw_key is None or raw_key == "":
                return Rejected(-1, "missing_key", f"no Kafka key and no {self.key_field!r} field")
            key = str(raw_key).encode()
        values: list[float] = []
        for name in self.fields:
            v = doc.get(name)
            if v is None:
                return Rejected(-1, "missing_field", f"field {name!r} is missing or null")
            if type(v) is not float and type(v) is not int:
                return Rejected(-1, "non_numeric", f"field {name!r} is {v!r}, expected a number")
            values.append(v)
        if self.time_field:
            raw_ts = doc.get(self.time_field)
            if raw_ts is None:
                return Rejected(-1, "missing_timestamp", f"field {self.time_field!r} is missing")
            try:
                ts = parse_event_time(raw_ts, self.timestamp_unit)
            except (ValueError, OverflowError) as exc:
                return Rejected(-1, "bad_timestamp", str(exc))
        else:
            ts = rec.timestamp
        return key, ts, values

    def _range_check(self, x: np.ndarray, event_ms: np.ndarray, now_ms: int, kept: list[int],
                     rejected: list[Rejected]) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            checks = (
                ("non_finite", ~np.isfinite(x).all(axis=1), "feature value is NaN or infinite (or overflows float32)"),
                ("non_finite", ~np.isfinite(x.astype(np.float32)).all(axis=1), "value overflows float32"),
                ("out_of_domain", (x[:, self._positive] <= 0).any(axis=1), "value must be > 0 for this model"),
                ("out_of_domain", (x[:, self._nonnegative] < 0).any(axis=1), "value must be >= 0 for this model"),
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

"""Telling the operator about dead letters: by reason at a bounded rate, loudly when a whole batch is refused.

The metric ``rnnwatch_records_failed_total{reason}`` counts every refusal; the log says what is wrong. A
batch in which *every* record is refused almost always means a configuration mismatch (the message field is
``px``, the model wants ``price``), so it gets its own warning naming the field and the fields seen.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from rnnwatch.consumer.decoder import Rejected, SourceRecord
from rnnwatch.consumer.logs import RateLimitedLog

__all__ = ["RefusalReport"]

log = logging.getLogger("rnnwatch.consumer.dead_letters")
_SEEN_FIELDS = 12  # field names listed in the whole-batch warning


class RefusalReport:
    """Logs one poll's refusals; ``interval_s`` bounds each kind of line (per-reason summary, whole batch)."""

    def __init__(self, topic: str, fields: Sequence[str], interval_s: float = 30.0) -> None:
        self.topic = topic
        self.fields = tuple(fields)
        self._summary = RateLimitedLog(log, interval_s)
        self._whole = RateLimitedLog(log, interval_s)

    def report(self, records: Sequence[SourceRecord], rejected: Sequence[Rejected]) -> None:
        if not rejected:
            return
        counts = Counter(r.reason for r in rejected)
        reason, count = counts.most_common(1)[0]
        first = next(r for r in rejected if r.reason == reason)
        rec = records[first.index]
        where = {"event": "dead_letter", "topic": self.topic, "partition": rec.partition, "offset": rec.offset,
                 "key": rec.key, "reason": reason, "count": len(rejected)}
        if len(rejected) == len(records):
            self._whole.warning("%s; every record of the batch was dead-lettered: check the message fields "
                                "(--field-map, --key-field, --time-field) against the model's features %s",
                                self._what(reason, count, len(records), rec, first.detail), list(self.fields),
                                extra=where)
            return
        by_reason = ", ".join(f"{n} {r}" for r, n in counts.most_common())
        self._summary.warning("dead-lettered %d of %d records (%s), e.g. %s[%d]@%d: %s", len(rejected), len(records),
                              by_reason, self.topic, rec.partition, rec.offset, first.detail, extra=where)

    def _what(self, reason: str, count: int, total: int, rec: SourceRecord, detail: str) -> str:
        doc = _doc(rec.value)
        seen = ", ".join(list(doc)[:_SEEN_FIELDS]) if doc is not None else "(not a JSON object)"
        if reason == "missing_field" and doc is not None:
            missing = next((f for f in self.fields if doc.get(f) is None), "?")
            return f"field {missing!r} missing in {count}/{total} records; fields seen: {seen}"
        return f"{count}/{total} records refused as {reason} ({detail}); fields seen: {seen}"


def _doc(value: bytes | None) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None

"""Anomaly events (CloudEvents 1.0, Kafka binary mode) and dead-letter records (DESIGN §6).

An event is a pure function of the input record and the state it was scored with: its id is
``<topic>-<partition>-<offset>`` and its body holds no wall-clock value, so a replay after a crash repeats an
event only with the same id and the same content, and downstream consumers can dedupe exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["DEAD_LETTER_MAX_BYTES", "DLQ_KEY_BYTES", "DLQ_VALUE_BYTES", "EVENT_TYPE", "AnomalyEvent", "DeadLetter",
           "event_id", "format_time"]

EVENT_TYPE = "io.rnnwatch.anomaly.v1"
Headers = list[tuple[str, bytes]]

# What a dead letter copies from its record, at most (bytes). A record refused for its size must still be
# deliverable as a dead letter: the whole letter stays well under Kafka's default 1 MiB message limit.
DLQ_KEY_BYTES = 64 * 1024  # = the largest max_key_bytes settings accept: an accepted key is never cut
DLQ_VALUE_BYTES = 64 * 1024
DLQ_HEADER_BYTES = 64 * 1024
DLQ_ERROR_BYTES = 4096
DEAD_LETTER_MAX_BYTES = DLQ_KEY_BYTES + DLQ_VALUE_BYTES + DLQ_HEADER_BYTES + DLQ_ERROR_BYTES + 4096


def event_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}-{partition}-{offset}"


def format_time(ms: int) -> str:
    """RFC 3339 UTC with millisecond precision."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AnomalyEvent:
    """One anomaly; ``to_kafka`` gives (key, value, headers) in CloudEvents binary content mode."""

    source: str
    key: bytes
    event_ms: int
    score: float
    threshold: float
    severity: str
    features: Sequence[str]
    actual: Sequence[float]
    expected: Sequence[float]
    residual: Sequence[float]
    model: dict[str, str]
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    surprise: float = 0.0  # -log10(tail): keeps its resolution where score rounds to 1.0
    threshold_surprise: float = 0.0
    incident: str = ""  # id of the opening event of the incident this point belongs to ("" = its own id)
    incident_update: bool = False  # a new peak of an already open incident, not a new anomaly

    @property
    def id(self) -> str:
        return event_id(self.topic, self.partition, self.offset)

    def body(self) -> dict[str, Any]:
        return {
            "key": self.key.decode(errors="replace"),
            "event_time": format_time(self.event_ms),
            "score": self.score,
            "threshold": self.threshold,
            "surprise": self.surprise,
            "threshold_surprise": self.threshold_surprise,
            "severity": self.severity,
            "incident": {"id": self.incident or self.id, "update": self.incident_update},
            "actual": dict(zip(self.features, self.actual, strict=True)),
            "expected": dict(zip(self.features, self.expected, strict=True)),
            "residual": dict(zip(self.features, self.residual, strict=True)),
            "model": self.model,
            "input": {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                      "timestamp": self.timestamp_ms},
        }

    def to_kafka(self) -> tuple[bytes, bytes, Headers]:
        headers: Headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", EVENT_TYPE.encode()),
            ("ce_time", format_time(self.event_ms).encode()),
            ("ce_subject", self.key),
            ("content-type", b"application/json"),
            # extensions: names are lowercase letters and digits (CloudEvents 1.0), ce_-prefixed in Kafka binary mode
            ("ce_partitionkey", self.key),
            ("ce_rnnwatchseverity", self.severity.encode()),
        ]
        return self.key, orjson.dumps(self.body()), headers


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be used: the original bytes plus where it came from and why.

    Header convention: every header rnnwatch adds to a Kafka record that is not a CloudEvents attribute is
    ``rnnwatch-<kebab-case-name>`` (dead letters here, ``rnnwatch-offset`` on changelog snapshots); anomaly
    events carry CloudEvents attributes only (``ce_<lowercase alphanumeric>``, extensions included).

    ``to_kafka`` copies the key, value and headers up to the ``DLQ_*_BYTES`` budgets; what it cuts is said
    in ``rnnwatch-original-key-bytes`` / ``rnnwatch-original-value-bytes`` (the original sizes) and
    ``rnnwatch-headers-dropped`` (how many trailing headers were left out). A null header value (legal in
    Kafka, not sendable by kafka-python) is copied as empty bytes.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    reason: str
    error: str

    def to_kafka(self) -> tuple[bytes | None, bytes | None, Headers]:
        error = self.error.encode(errors="replace")
        if len(error) > DLQ_ERROR_BYTES:
            error = error[:DLQ_ERROR_BYTES - 12] + b"(truncated)"
        headers: Headers = [
            ("rnnwatch-reason", self.reason.encode()),
            ("rnnwatch-error", error),
            ("rnnwatch-original-topic", self.topic.encode()),
            ("rnnwatch-original-partition", str(self.partition).encode()),
            ("rnnwatch-original-offset", str(self.offset).encode()),
            ("rnnwatch-original-timestamp", str(self.timestamp_ms).encode()),
        ]
        key = _cut(self.key, DLQ_KEY_BYTES, "rnnwatch-original-key-bytes", headers)
        value = _cut(self.value, DLQ_VALUE_BYTES, "rnnwatch-original-value-bytes", headers)
        budget, dropped = DLQ_HEADER_BYTES, 0
        copied: Headers = []
        for k, v in self.headers:
            if k.startswith("rnnwatch-"):
                continue
            size = len(k.encode()) + len(v or b"")
            if dropped or size > budget:
                dropped += 1
                continue
            budget -= size
            copied.append((k, v or b""))
        if dropped:
            headers.append(("rnnwatch-headers-dropped", str(dropped).encode()))
        return key, value, headers + copied


def _cut(data: bytes | None, limit: int, note: str, headers: Headers) -> bytes | None:
    if data is None or len(data) <= limit:
        return data
    headers.append((note, str(len(data)).encode()))
    return data[:limit]

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

__all__ = ["EVENT_TYPE", "AnomalyEvent", "DeadLetter", "event_id", "format_time"]

EVENT_TYPE = "io.rnnwatch.anomaly.v1"
Headers = list[tuple[str, bytes]]


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

    @property
    def id(self) -> str:
        return event_id(self.topic, self.partition, self.offset)

    def body(self) -> dict[str, Any]:
        return {
            "key": self.key.decode(errors="replace"),
            "event_time": format_time(self.event_ms),
            "score": self.score,
            "threshold": self.threshold,
            "severity": self.severity,
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
            ("rnnwatch_severity", self.severity.encode()),
        ]
        return self.key, orjson.dumps(self.body()), headers


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be used: the original bytes plus where it came from and why."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    reason: str
    error: str

    def to_kafka(self) -> tuple[bytes | None, bytes | None, Headers]:
        headers: Headers = [
            ("rnnwatch-reason", self.reason.encode()),
            ("rnnwatch-error", self.error.encode()[:4096]),
            ("rnnwatch-original-topic", self.topic.encode()),
            ("rnnwatch-original-partition", str(self.partition).encode()),
            ("rnnwatch-original-offset", str(self.offset).encode()),
            ("rnnwatch-original-timestamp", str(self.timestamp_ms).encode()),
        ]
        headers.extend((k, v) for k, v in self.headers if not k.startswith("rnnwatch-"))
        return self.key, self.value, headers

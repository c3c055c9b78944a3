"""Record size bounds: computed from a worst case at start-up, they hold for real records and refuse
configurations whose records Kafka could not take."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.events import AnomalyEvent
from rnnwatch.consumer.limits import KAFKA_DEFAULT_MESSAGE_BYTES, check_record_sizes
from rnnwatch.consumer.runner import make_runner
from rnnwatch.consumer.settings import load_settings
from rnnwatch.consumer.state import Column, StateTable
from rnnwatch.consumer.types import TickBatch


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k.encode()) + len(v) for k, v in headers)


@pytest.mark.parametrize("max_key_bytes", [16, 4096, 65536])
def test_real_events_and_snapshots_stay_within_the_bounds(bundled_model: Path, max_key_bytes: int,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    sig = load_signature(bundled_model)
    settings = load_settings({"input_topic": "ticks", "group_id": "rnnwatch", "max_key_bytes": str(max_key_bytes)},
                             env={})
    runner = make_runner(sig, input_topic="ticks")
    with caplog.at_level(logging.WARNING):
        sizes = check_record_sizes(sig, runner.table, settings)
    assert sizes.largest < KAFKA_DEFAULT_MESSAGE_BYTES and not caplog.records
    key = bytes(range(256)) * (max_key_bytes // 256) + b"\x01" * (max_key_bytes % 256)  # every byte, escapes too
    batch = TickBatch(np.zeros(1, np.int32), np.zeros(1, np.int64), [key], np.ones(1, np.int64),
                      np.full((1, 1), 123.456, np.float32), np.zeros(1, np.int64))
    runner.process(batch)
    row = runner.table.row_of(0, key)
    assert row is not None
    assert len(key) + len(runner.table.snapshot(row)) < sizes.snapshot
    event = AnomalyEvent(source=f"rnnwatch://{settings.group_id}/{sig.name}", key=key, event_ms=1_700_000_000_000,
                         score=0.99999999123, threshold=sig.scoring.threshold, severity="critical",
                         features=sig.feature_names, actual=[123.456], expected=[-1.2345678901234e-10],
                         residual=[1e300], model={"name": sig.name, "version": sig.version, "sha256": sig.sha256},
                         topic="ticks", partition=11, offset=123_456_789_012, timestamp_ms=1_700_000_000_123)
    assert _size(*event.to_kafka()) < sizes.event


def test_a_model_whose_snapshots_cannot_be_sent_is_refused_at_start_up(bundled_model: Path) -> None:
    sig = load_signature(bundled_model)
    huge = StateTable([Column.filled("m.window", (3_000_000,), np.float32, 0.0)], identity="x", capacity=1)
    with pytest.raises(ConfigError, match="over the producer's limit"):
        check_record_sizes(sig, huge, load_settings({"input_topic": "ticks", "group_id": "rnnwatch"}, env={}))


def test_records_above_kafkas_default_limit_are_warned_about(bundled_model: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    sig = load_signature(bundled_model)
    big = StateTable([Column.filled("m.window", (400_000,), np.float32, 0.0)], identity="x", capacity=1)
    with caplog.at_level(logging.WARNING, logger="rnnwatch.consumer.limits"):
        check_record_sizes(sig, big, load_settings({"input_topic": "ticks", "group_id": "rnnwatch"}, env={}))
    assert any("max.message.bytes" in r.getMessage() for r in caplog.records)

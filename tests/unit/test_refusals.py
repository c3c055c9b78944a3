"""Dead letters are not silent: a per-reason line at a bounded rate, a loud one when a whole batch is refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.decoder import TickDecoder
from rnnwatch.consumer.events import AnomalyEvent, DeadLetter
from rnnwatch.consumer.logs import _JsonFormatter
from rnnwatch.consumer.metrics import Metrics
from rnnwatch.consumer.pipeline import Pipeline
from rnnwatch.consumer.runner import make_runner

LOGGER = "rnnwatch.consumer.dead_letters"


class _Sink:
    def __init__(self) -> None:
        self.dead: list[DeadLetter] = []

    def send_event(self, event: AnomalyEvent) -> None:
        pass

    def send_dead_letter(self, letter: DeadLetter) -> None:
        self.dead.append(letter)


class _Rec:
    def __init__(self, offset: int, doc: dict[str, object]) -> None:
        self.partition, self.offset, self.key, self.timestamp = 3, offset, b"AAPL", 1_700_000_000_000
        self.value = orjson.dumps(doc)
        self.headers: list[tuple[str, bytes]] = []


def _pipeline(model: Path) -> Pipeline:
    sig = load_signature(model)
    return Pipeline(signature=sig, runner=make_runner(sig), sink=_Sink(),  # type: ignore[arg-type]
                    decoder=TickDecoder(sig.features, ["price"], key_field="symbol", time_field="ts"),
                    metrics=Metrics(CollectorRegistry(), process_metrics=False), topic="ticks",
                    source_uri="rnnwatch://test")


def test_a_wholly_refused_batch_names_the_missing_field_and_the_fields_seen(
        ewma_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pipeline = _pipeline(ewma_path)
    batch = [_Rec(i, {"symbol": "AAPL", "ts": 1_700_000_000 + i, "px": 1.0 + i}) for i in range(50)]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        outcome = pipeline.handle(batch)
        pipeline.handle(batch)  # moments later: counted by the metric, not logged again
    assert outcome.dead_lettered == 50
    lines = [r for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1
    message = lines[0].getMessage()
    assert "field 'price' missing in 50/50 records; fields seen: symbol, ts, px" in message
    doc = json.loads(_JsonFormatter().format(lines[0]))
    assert (doc["topic"], doc["partition"], doc["offset"], doc["key"], doc["reason"], doc["count"]) == (
        "ticks", 3, 0, "AAPL", "missing_field", 50)


def test_some_refusals_are_summarised_by_reason(ewma_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pipeline = _pipeline(ewma_path)
    good = [_Rec(i, {"ts": 1_700_000_000 + i, "price": 1.0 + i}) for i in range(8)]
    bad = [_Rec(8, {"ts": 1_700_000_008, "price": -1.0}), _Rec(9, {"ts": 1_700_000_009, "price": "x"})]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        pipeline.handle(good + bad)
    [line] = [r for r in caplog.records if r.name == LOGGER]
    assert "dead-lettered 2 of 10 records (1 out_of_domain, 1 non_numeric)" in line.getMessage()
    assert "ticks[3]@8" in line.getMessage()

"""A model whose output goes NaN/inf for a key: the key is reset and re-warms, counted and logged, never an event.

Before: the key's state stayed inf forever, every later score was 0 (the residual against an inf forecast is
not finite) and nothing said so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from rnnwatch.consumer.contract import FeatureSpec, load_signature
from rnnwatch.consumer.decoder import TickDecoder
from rnnwatch.consumer.events import AnomalyEvent, DeadLetter
from rnnwatch.consumer.metrics import Metrics
from rnnwatch.consumer.pipeline import Pipeline
from rnnwatch.consumer.runner import make_runner
from rnnwatch.consumer.types import TickBatch
from tests.unit.onnx_builders import exploding_model

BLOW_UP = [1e20, 1e20]  # m = 1e20, then 1e40 = inf in float32
CALM = [1.0] * 12


def _batch(values: list[float], key: bytes = b"A", first_offset: int = 0) -> TickBatch:
    n = len(values)
    return TickBatch(np.zeros(n, dtype=np.int32), np.arange(first_offset, first_offset + n, dtype=np.int64),
                     [key] * n, np.arange(first_offset + 1, first_offset + n + 1, dtype=np.int64),
                     np.asarray(values, dtype=np.float32).reshape(n, 1), np.zeros(n, dtype=np.int64))


@pytest.fixture(scope="module")
def exploding(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exploding_model(tmp_path_factory.mktemp("models") / "exploding.onnx")


def test_a_key_whose_state_goes_non_finite_is_reset_and_scores_again(exploding: Path) -> None:
    runner = make_runner(load_signature(exploding))
    blown = runner.process(_batch(BLOW_UP))
    assert blown.reset.tolist() == [False, True]
    row = runner.table.row_of(0, b"A")
    assert row is not None
    assert np.isfinite(runner.table.arrays["m.m"][row]).all()
    assert runner.table.steps[row] == 0  # re-warms: no decision until warm-up has passed again
    later = runner.process(_batch(CALM, first_offset=len(BLOW_UP)))
    assert not later.reset.any()
    assert np.isfinite(later.expected[1:]).all()
    # not "score 0 forever" (at [1] the forecast is exactly right): a row reports 0 only inside the incident its
    # re-warmed key opened (it reports what beats the incident's peak) or below the key's high of the last 4
    # steps, so of every 5 rows after the first two at least one scores
    scored = (later.score[2:] > 0) | later.alarm[2:]
    assert all(scored[i:i + 5].any() for i in range(len(scored) - 4)), later.score
    assert (later.score[-5:] > 0).any()
    assert not later.is_anomaly[:runner.scorer.config.warmup_steps].any()


def test_other_keys_in_the_same_waves_are_untouched(exploding: Path) -> None:
    sig = load_signature(exploding)
    alone = make_runner(sig).process(_batch([1.0, 2.0], key=b"B"))
    runner = make_runner(sig)
    mixed = TickBatch(np.zeros(4, dtype=np.int32), np.arange(4, dtype=np.int64), [b"A", b"B", b"A", b"B"],
                      np.array([1, 1, 2, 2], dtype=np.int64), np.array([[1e20], [1.0], [1e20], [2.0]], np.float32),
                      np.zeros(4, dtype=np.int64))
    res = runner.process(mixed)
    assert res.reset.tolist() == [False, False, True, False]
    np.testing.assert_array_equal(res.expected[[1, 3]], alone.expected)


class _ListSink:
    def __init__(self) -> None:
        self.events: list[AnomalyEvent] = []
        self.letters: list[DeadLetter] = []

    def send_event(self, event: AnomalyEvent) -> None:
        self.events.append(event)

    def send_dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


def test_the_pipeline_counts_and_logs_resets_and_sends_no_event(exploding: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    sig = load_signature(exploding)
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    assert metrics.registry.get_sample_value("rnnwatch_state_resets_total", {"reason": "non_finite"}) == 0
    sink = _ListSink()
    pipeline = Pipeline(signature=sig, runner=make_runner(sig, threshold=0.5, warmup_steps=0), sink=sink,  # type: ignore[arg-type]
                        decoder=TickDecoder([FeatureSpec("price")], ["price"], key_field="symbol", time_field="ts"),
                        metrics=metrics, topic="ticks", source_uri="rnnwatch://test")

    class Rec:
        def __init__(self, offset: int, price: float) -> None:
            self.partition, self.offset, self.key, self.timestamp = 0, offset, b"A", 1_700_000_000_000
            self.value = orjson.dumps({"ts": 1_700_000_000 + offset, "price": price})

    prices = [1.0, *BLOW_UP, *BLOW_UP, 1.0]
    with caplog.at_level(logging.WARNING, logger="rnnwatch.consumer.pipeline"):
        for offset, price in enumerate(prices):
            pipeline.handle([Rec(offset, price)])
    resets = metrics.registry.get_sample_value("rnnwatch_state_resets_total", {"reason": "non_finite"})
    assert resets == 2
    warnings = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: the second reset, moments later, is counted, not logged
    assert "b'A'" in warnings[0].getMessage()
    assert all(np.isfinite(e.expected).all() for e in sink.events)

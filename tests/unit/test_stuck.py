"""The `stuck` scorer: a frozen value is one incident early in the run, a lasting freeze ends, routine repeats
are ordinary, and its surprise is not tail-calibrated again."""

from __future__ import annotations

import numpy as np

from rnnwatch.consumer.scoring import ResidualScorer, ScorerConfig
from tests.unit.test_detectors import _run, _walk

# Documented in consumer/stuck.py: the surprise of a lasting freeze falls below 3 within about 3.5 half-lives
# (70 steps at the default half-life of 20).
FREEZE_END_STEPS = 80


def test_a_frozen_price_opens_one_incident_at_the_start_of_the_run() -> None:
    values = _walk(3, 1500)
    values[900:915] = values[900]  # 15 days at the onset's price (values[900] itself is not a repeat)
    for spec in ("stuck", "gaussian+volatility+stuck"):
        run = _run(spec, values, threshold_surprise=3.0)
        assert run.opens[901:904].any(), (spec, run.surprise[899:916])
        assert run.opens[901:916].sum() == 1, spec
    alone = _run("stuck", values, threshold_surprise=3.0)
    assert not alone.alarm[:901].any() and not alone.alarm[916:].any()


def test_a_lasting_freeze_stops_alarming_within_the_documented_steps() -> None:
    values = _walk(4, 1500)
    values[700:] = values[700]  # the feed never moves again
    run = _run("stuck", values, threshold_surprise=3.0)
    assert run.alarm[701:710].any()
    assert not run.alarm[700 + FREEZE_END_STEPS:].any(), np.flatnonzero(run.alarm)


def test_routine_repeats_are_ordinary() -> None:
    rng = np.random.default_rng(5)
    values = 100.0 + np.cumsum(rng.choice([-1.0, 0.0, 0.0, 1.0], size=3000))  # repeats half of the time
    run = _run("stuck", values, threshold_surprise=3.0, domain="real")
    assert run.alarm.mean() < 0.005, run.alarm.sum()


def test_stuck_surprise_is_not_tail_calibrated_again() -> None:
    cfg = ScorerConfig(threshold=0.999, warmup_steps=20, halflife_steps=100.0, residual_std=np.array([1.0]),
                       uses_model_scale=False, spec="gaussian+stuck")
    names = {c.name for c in ResidualScorer(cfg, 1).columns()}
    assert "s.gaussian.tail.u" in names and "s.stuck.stats" in names
    assert not any(n.startswith("s.stuck.tail") for n in names)

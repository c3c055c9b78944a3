"""Scorers (consumer.detectors + tail calibration + incidents): regime changes end, one incident per shock,
surprises keep their resolution, bad specs and options are refused by name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.scoring import ResidualScorer, ScorerConfig
from rnnwatch.consumer.scoring_config import ScoringOverrides
from rnnwatch.consumer.state import StateTable
from rnnwatch.consumer.tails import chi2_surprise, gaussian_surprise, gaussian_tail, score_of, upper_surprise

SPECS = ["gaussian", "likelihood", "novelty", "volatility", "telemanom", "stuck", "gaussian+volatility+stuck",
         "gaussian+likelihood",
         "gaussian+likelihood+volatility", "novelty+likelihood"]
# Documented bound (README, "Regime changes end"): a key stops alarming within this many steps of a lasting
# level shift or a lasting tripling of its volatility.
REGIME_END_STEPS = 300


@dataclass
class Run:
    surprise: np.ndarray
    alarm: np.ndarray
    opens: np.ndarray
    incident: np.ndarray


def _run(spec: str, values: np.ndarray, threshold_surprise: float = 5.0, domain: str = "positive") -> Run:
    """One key through the scorer with a naive forecaster (forecast = last value), offsets = row numbers."""
    cfg = ScorerConfig(threshold=0.999, warmup_steps=20, halflife_steps=100.0, residual_std=np.array([1.0]),
                       uses_model_scale=False, spec=spec, threshold_surprise=threshold_surprise, domain=domain)
    scorer = ResidualScorer(cfg, 1)
    table = StateTable(scorer.columns(), identity="t")
    rows, _ = table.rows_for(0, [b"k"])
    out = Run(np.zeros(len(values)), np.zeros(len(values), bool), np.zeros(len(values), bool),
              np.full(len(values), -1))
    for t, v in enumerate(values):
        x = np.array([[v]], dtype=np.float32)
        res = scorer.score(table, rows, x, np.array([t]), np.array([t]))
        scorer.remember(table, rows, x, None)
        out.surprise[t], out.alarm[t], out.opens[t], out.incident[t] = (
            res.surprise[0], res.alarm[0], res.is_anomaly[0], res.incident[0])
    return out


def _walk(seed: int, n: int, vol: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))


@pytest.mark.parametrize("spec", SPECS)
def test_a_level_shift_stops_alarming_within_the_documented_steps(spec: str) -> None:
    values = _walk(1, 2000)
    values[1000:] *= 1.5  # a lasting new level
    run = _run(spec, values)
    assert not run.alarm[1000 + REGIME_END_STEPS:].any(), np.flatnonzero(run.alarm)


@pytest.mark.parametrize("spec", SPECS)
def test_a_lasting_volatility_change_stops_alarming_within_the_documented_steps(spec: str) -> None:
    rng = np.random.default_rng(2)
    returns = rng.normal(0, 0.01, 3000)
    returns[1000:] *= 3.0  # a lasting new regime
    values = 100 * np.exp(np.cumsum(returns))
    run = _run(spec, values)
    assert not run.alarm[1000 + REGIME_END_STEPS:].any(), np.flatnonzero(run.alarm[1000:]) + 1000


@pytest.mark.parametrize("spec", ["gaussian", "volatility", "gaussian+likelihood+volatility"])
def test_a_shock_and_its_reversal_are_one_incident(spec: str) -> None:
    values = _walk(3, 800)
    values[600] *= 1.25  # one-day spike: the next point reverts
    run = _run(spec, values)
    assert run.opens[600]
    assert run.incident[600] == 600
    assert run.incident[601] in (-1, 600)  # the reversal, if over the threshold, belongs to the same incident
    assert run.opens[590:620].sum() == 1


def test_surprise_keeps_resolution_where_the_score_saturates() -> None:
    z = np.array([5.0, 8.0, 12.0, 40.0])
    s = gaussian_surprise(z)
    assert np.all(np.diff(s) > 0) and np.all(np.isfinite(s))
    assert s[0] == pytest.approx(-np.log10(gaussian_tail(z[:1])[0]), rel=1e-6)
    assert score_of(s[2:]).tolist() == [1.0, 1.0]  # the [0, 1] score cannot tell these apart; the surprise can
    assert chi2_surprise(np.array([3.841459]), 1)[0] == pytest.approx(-np.log10(0.05), rel=1e-5)


def test_tail_calibration_makes_a_recurring_misfit_ordinary() -> None:
    """A square wave the forecaster misses at every edge: parametrically 1e-100 each time, calibrated not rare."""
    rng = np.random.default_rng(4)
    n = 3000
    values = 100 + np.where((np.arange(n) // 50) % 2 == 0, 10.0, -10.0) + rng.normal(0, 0.1, n)
    raw = _run("gaussian", values, domain="real")
    assert raw.surprise[2000:].max() < 8  # after learning the key's own tail (the first edges exceed 30)
    assert raw.surprise[:200].max() > 30
    assert raw.opens[2000:].sum() <= 2


def test_the_default_options_alarm_rarely_on_a_plain_random_walk() -> None:
    for spec in ("gaussian+likelihood", "gaussian+likelihood+volatility"):
        run = _run(spec, _walk(5, 5000), threshold_surprise=3.0)
        assert run.alarm[500:].mean() < 0.005, spec


@pytest.mark.parametrize(("spec", "options", "message"), [
    ("gaussian+nope", {}, "nope"),
    ("likelihood", {"likelihood": {"window": 3}}, "window"),
    ("gaussian", {"volatility": {"halflife": 3}}, "volatility"),
    ("volatility", {"method": "arch"}, "method"),
])
def test_bad_specs_and_options_are_refused_by_name(spec: str, options: dict[str, object], message: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=message):
        cfg = ScorerConfig(threshold=0.999, warmup_steps=0, halflife_steps=10.0, residual_std=np.array([1.0]),
                           uses_model_scale=False, spec=spec, options=options)
        ScoringOverrides(scorer=spec, scorer_options=options)
        ResidualScorer(cfg, 1)


def test_threshold_surprise_overrides_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="threshold_surprise"):
        ScoringOverrides(threshold_surprise=0.0)


def test_telemanom_flags_a_burst_once_and_prunes_the_ordinary_top() -> None:
    rng = np.random.default_rng(6)
    returns = rng.normal(0, 0.01, 1500)
    returns[1000:1020] *= 6.0  # a burst of large errors
    run = _run("telemanom", 100 * np.exp(np.cumsum(returns)), threshold_surprise=3.0)
    assert run.opens[1000:1030].sum() == 1
    assert run.alarm[200:1000].mean() < 0.005  # the window's ordinary top is pruned, not flagged


@pytest.mark.parametrize("spec", ["gaussian", "gaussian+volatility", "gaussian+likelihood+volatility"])
def test_a_shock_during_warm_up_does_not_mute_the_key(spec: str) -> None:
    """The tail calibration learns from points scored after warm-up only: a later shock is still flagged."""
    values = _walk(8, 300)
    values[5] *= 1.3  # a shock while the key warms up (20 steps)
    values[60] *= 1.3
    run = _run(spec, values, threshold_surprise=3.0)
    assert not run.alarm[:20].any()
    assert run.opens[60]


def test_one_sided_tails_of_a_block_equal_the_tails_of_its_rows() -> None:
    """A [steps, keys] block of z (some below 0, some NaN) gets the same surprise as each row alone."""
    z = np.array([[-1.5, 0.3, 2.0], [4.0, -0.2, np.nan], [-3.0, -7.0, 0.0]])
    rows = np.stack([upper_surprise(row) for row in z])
    np.testing.assert_array_equal(upper_surprise(z), rows)

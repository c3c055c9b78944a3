"""Residual scorer: calibrated tail probabilities, warm-up, no learning from anomalies, severity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnwatch.consumer.scoring import ResidualScorer, ScorerConfig, chi2_tail, gaussian_tail, severity_of
from rnnwatch.consumer.state import StateTable


def _scorer(threshold: float = 0.999, warmup: int = 0) -> tuple[ResidualScorer, StateTable, np.ndarray]:
    """The Gaussian residual scorer alone (per-key tail calibration off: these tests pin the normaliser)."""
    cfg = ScorerConfig(threshold=threshold, warmup_steps=warmup, halflife_steps=20.0,
                       residual_std=np.array([1.0], dtype=np.float32), uses_model_scale=False,
                       options={"tail": {"off": 1}})
    scorer = ResidualScorer(cfg, 1)
    table = StateTable(scorer.columns(), identity="t")
    rows, _ = table.rows_for(0, [b"a", b"b", b"c"])
    scorer.remember(table, rows, np.zeros((3, 1), np.float32), None)
    return scorer, table, rows


def test_gaussian_tail_matches_math_erfc() -> None:
    z = np.linspace(0, 8, 161)
    ours = gaussian_tail(z)
    exact = np.array([math.erfc(v / math.sqrt(2)) for v in z])
    np.testing.assert_allclose(ours, exact, rtol=2e-7, atol=1e-300)


def test_chi2_tail_one_feature_is_exact_and_several_are_close() -> None:
    assert chi2_tail(np.array([3.841459]), 1)[0] == pytest.approx(0.05, rel=1e-5)
    assert chi2_tail(np.array([5.991465]), 2)[0] == pytest.approx(0.05, rel=0.05)


def test_an_exact_forecast_scores_zero_not_slightly_below() -> None:
    scorer, table, rows = _scorer()
    exact = scorer.score(table, rows, np.zeros((3, 1), np.float32), np.full(3, 100))
    assert (exact.score == 0).all() and (exact.tail == 1).all()


def test_score_is_in_unit_interval_and_monotone_in_residual() -> None:
    scorer, table, rows = _scorer()
    x = np.array([[0.5], [2.0], [6.0]], dtype=np.float32)
    res = scorer.score(table, rows, x, np.full(3, 100))
    assert ((res.score >= 0) & (res.score <= 1)).all()
    assert res.score[0] < res.score[1] < res.score[2]
    assert res.is_anomaly.tolist() == [False, False, True]


def test_warmup_suppresses_anomalies() -> None:
    scorer, table, rows = _scorer(warmup=10)
    x = np.full((3, 1), 9.0, dtype=np.float32)
    res = scorer.score(table, rows, x, np.array([0, 9, 10]))
    assert res.is_anomaly.tolist() == [False, False, True]
    assert (res.score > 0.999).all()


def test_an_anomaly_teaches_the_normaliser_only_a_clipped_amount() -> None:
    """The normaliser learns from every point (so regime changes end), but one shock moves it at most as
    much as a residual of 5 of its own sigmas would (clip 25 on z^2)."""
    scorer, table, rows = _scorer()
    table.arrays["s.n"][rows] = 1000  # past the running-mean start: the EWMA rate applies
    before = table.arrays["s.var"][rows].copy()
    res = scorer.score(table, rows, np.array([[0.0], [0.5], [50.0]], dtype=np.float32), np.full(3, 100))
    after = table.arrays["s.var"][rows]
    assert res.is_anomaly.tolist() == [False, False, True]
    alpha = 1 - 0.5 ** (1 / 20)
    assert after[2] == pytest.approx(before[2] + alpha * (25.0 - 1.0) * before[2])
    assert after[0] < after[1] < before[0] < after[2]


def test_normaliser_adapts_to_a_volatile_key() -> None:
    scorer, table, rows = _scorer(threshold=0.9999)
    rng = np.random.default_rng(0)
    for _ in range(300):  # key c is 3x as volatile as the model's scale says
        x = (rng.normal(0, 1, (3, 1)) * np.array([[1.0], [1.0], [3.0]])).astype(np.float32)
        scorer.score(table, rows, x, np.full(3, 1000))
        scorer.remember(table, rows, np.zeros((3, 1), np.float32), None)
    assert table.arrays["s.var"][rows[2]] == pytest.approx(9.0, rel=0.35)
    res = scorer.score(table, rows, np.array([[4.0], [4.0], [4.0]], dtype=np.float32), np.full(3, 1000))
    assert res.alarm[0] and not res.alarm[2]


def test_severity_levels() -> None:
    assert severity_of(1e-3, 1e-3) == "minor"
    assert severity_of(1e-5, 1e-3) == "major"
    assert severity_of(1e-7, 1e-3) == "critical"


def _burst_run(gap: int, updates: int = 0) -> list:
    """One key through a quiet stretch and a burst of four alarming residuals (the second below the first's
    surprise, the third above it); the scorer groups alarms ``gap`` steps apart into one incident."""
    cfg = ScorerConfig(threshold=0.999, warmup_steps=0, halflife_steps=20.0,
                       residual_std=np.array([1.0], dtype=np.float32), uses_model_scale=False,
                       options={"tail": {"off": 1}}, incident_gap_steps=gap, incident_updates=updates)
    scorer = ResidualScorer(cfg, 1)
    table = StateTable(scorer.columns(), identity="t")
    rows, _ = table.rows_for(0, [b"a"])
    table.arrays["s.n"][rows] = 1000  # past the running-mean start: the normaliser moves slowly
    out = []
    for step, r in enumerate([0.1, -0.2, 0.3, 4.0, 4.0, 9.0, 8.0, 0.2]):
        scorer.remember(table, rows, np.zeros((1, 1), np.float32), None)
        out.append(scorer.score(table, rows, np.array([[r]], dtype=np.float32), np.array([100 + step])))
    return out


def test_a_row_continuing_an_incident_reports_only_what_it_adds_to_the_incidents_peak() -> None:
    """The product alerts once per incident, so a row that continues an open incident reports the surprise by
    which it beats the incident's peak so far (0 when it does not): a ranking of the scores ranks incidents,
    not every row of one. The alarm, the incident and what every detector learns are those of the raw surprise."""
    raw = [b.surprise[0] for b in _burst_run(gap=0)]  # no grouping: every alarm is its own incident
    grouped = _burst_run(gap=4)
    reported = [b.surprise[0] for b in grouped]
    assert [b.alarm[0] for b in grouped] == [False, False, False, True, True, True, True, False]
    assert [b.is_anomaly[0] for b in grouped] == [False, False, False, True, False, False, False, False]
    assert raw[4] < raw[3] < raw[5] and raw[6] < raw[5]
    assert reported[:4] == raw[:4]
    assert reported[4] == 0.0 and reported[6] == 0.0
    assert reported[7] == 0.0  # below the incident's peak two steps earlier: the key already told it
    assert reported[5] == pytest.approx(raw[5] - raw[3])
    assert [b.score[0] for b in grouped] == pytest.approx([1 - 10 ** -s for s in reported])


def _quiet_run(residuals: list[float], gap: int = 4) -> tuple[list[float], list[float]]:
    """The raw surprises (no grouping) and the reported ones (grouping ``gap``) of one key that never alarms."""
    out = []
    for g in (0, gap):
        cfg = ScorerConfig(threshold=1 - 1e-12, warmup_steps=0, halflife_steps=20.0,
                           residual_std=np.array([1.0], dtype=np.float32), uses_model_scale=False,
                           options={"tail": {"off": 1}}, incident_gap_steps=g)
        scorer = ResidualScorer(cfg, 1)
        table = StateTable(scorer.columns(), identity="t")
        rows, _ = table.rows_for(0, [b"a"])
        table.arrays["s.n"][rows] = 1000
        reported = []
        for step, r in enumerate(residuals):
            scorer.remember(table, rows, np.zeros((1, 1), np.float32), None)
            res = scorer.score(table, rows, np.array([[r]], dtype=np.float32), np.array([100 + step]))
            assert not res.alarm[0]
            reported.append(float(res.surprise[0]))
        out.append(reported)
    return out[0], out[1]


def test_a_row_below_the_threshold_reports_its_surprise_only_as_the_keys_recent_high() -> None:
    """Below the alarm threshold too, the scores rank what is news: a row reports its surprise when it is the
    highest of its key's last ``gap`` steps (the incident gap), else 0. A turbulent stretch or the aftermath
    of a shock then shows once in a ranking of the scores, as an incident does, not once per row."""
    raw, reported = _quiet_run([0.1, 2.5, 2.0, 2.4, 0.1, 0.1, 0.1, 0.1, 2.0, 2.2])
    assert raw[2] > 0.5 and raw[3] > 0.5 and raw[8] > 0.5
    assert reported[:2] == raw[:2]
    assert reported[2] == 0.0 and reported[3] == 0.0  # within 4 steps of a higher row
    assert reported[8] == raw[8] and reported[9] == raw[9]  # the 2.5 is 7 steps back; 2.2 beats 2.0
    assert reported[5] == 0.0 and reported[6] == raw[6]  # 2.5 (step 1) held as the recent high for 4 steps


def test_an_update_event_reports_its_full_surprise() -> None:
    """A new peak the product emits an update event for is news: it keeps its full surprise."""
    raw = [b.surprise[0] for b in _burst_run(gap=0)]
    grouped = _burst_run(gap=4, updates=1)
    assert grouped[5].is_update[0]
    assert grouped[5].surprise[0] == raw[5] and grouped[4].surprise[0] == 0.0


def test_the_tail_calibration_leaves_an_already_calibrated_surprise_close_to_itself() -> None:
    """A key whose raw surprise is already calibrated (P(S > s) = 10^-s: exponential exceedances, Pareto shape
    0) should get it back. The moment-fitted shape is clipped at 0 from below, so its estimation noise only
    ever makes the fitted tail heavier and mutes the key's next shock: with a memory of 100 exceedances a raw
    5 scored 4.26 or less on a tenth of the keys, with the default 200 4.45 (the noise's variance halves)."""
    from rnnwatch.consumer.tailcal import TailCalibrator

    tc = TailCalibrator("s.t")
    table = StateTable(tc.columns(), identity="t")
    rows, _ = table.rows_for(0, [f"k{i}".encode() for i in range(200)])
    rng = np.random.default_rng(1)
    learn = np.ones(200, dtype=bool)
    for _ in range(20_000):
        tc.calibrate(table, rows, -np.log10(rng.uniform(size=200)), learn)
    out = tc.calibrate(table, rows, np.full(200, 5.0), ~learn)
    assert float(np.quantile(out, 0.1)) > 4.35


@pytest.mark.parametrize("n_keys", [5, 100])  # key by key in Python floats, and step by step in numpy
def test_a_block_keeps_the_recent_highs_exactly_as_steps_do(n_keys: int) -> None:
    from rnnwatch.consumer.incidents import Incidents

    rng = np.random.default_rng(3)
    T = 300
    surprise = rng.exponential(1.0, (T, n_keys)) * 1.0
    surprise[rng.random((T, n_keys)) < 0.01] = 1e6  # beyond float16's range
    alarm = surprise > 3.0
    news = np.where(rng.random((T, n_keys)) < 0.5, surprise, 0.0)
    incidents = Incidents(4, 0)
    tables = [StateTable(Incidents.columns(), identity="t") for _ in range(2)]
    rows = [t.rows_for(0, [f"k{i}".encode() for i in range(n_keys)])[0] for t in tables]
    stepped = np.stack([incidents.recent_high(tables[0], rows[0], alarm[t], surprise[t], news[t]) for t in range(T)])
    block = incidents.recent_high_block(tables[1], rows[1], alarm, surprise, news)
    np.testing.assert_array_equal(block, stepped)
    for name in ("s.incident.high", "s.incident.high_age"):
        np.testing.assert_array_equal(tables[1].arrays[name][rows[1]], tables[0].arrays[name][rows[0]])
    assert (block == 0).mean() > 0.3 and (block == news).mean() > 0.5  # both branches of the rule ran

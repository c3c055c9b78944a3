"""The seasonal stage (consumer.seasonal) and the trainer's period finder (export.period): a forecaster's
misfit that repeats every period stops alarming, a real shock at that phase still alarms, a new daily shape is
learnt, and only series that repeat get a period."""

from __future__ import annotations

import numpy as np
import pytest

from rnnwatch.consumer.scoring import ResidualScorer, ScorerConfig
from rnnwatch.consumer.state import StateTable
from rnnwatch.export.period import find_period, series_season

PERIOD = 144  # a misfit once or twice a period: rarer than the tail calibration's 5 % level absorbs on its own


def _alarms(values: np.ndarray, period: int = 0, spec: str = "gaussian+likelihood",
            event_ms: np.ndarray | None = None) -> np.ndarray:
    """Alarm per step of one key scored against a naive forecaster (forecast = last value), which misses
    every edge of a pulse wave: a misfit at the same phases every period, its size varying from period to
    period (as a trained forecaster's does)."""
    options = {"season": {"period": period, "step_ms": 1000}} if period else {}
    cfg = ScorerConfig(threshold=0.999, warmup_steps=20, halflife_steps=250.0, residual_std=np.array([1.0]),
                       uses_model_scale=False, spec=spec, options=options, threshold_surprise=3.0, domain="real")
    scorer = ResidualScorer(cfg, 1)
    table = StateTable(scorer.columns(), identity="t")
    rows, _ = table.rows_for(0, [b"k"])
    out = np.zeros(len(values), dtype=bool)
    for t, v in enumerate(values):
        x = np.array([[v]], dtype=np.float32)
        ts = None if event_ms is None else event_ms[t:t + 1]
        out[t] = scorer.score(table, rows, x, table.steps[rows], np.array([t]), ts).alarm[0]
        scorer.remember(table, rows, x, None)
        table.steps[rows] += 1  # as the runner counts a key's steps and remembers its last event time
        if ts is not None:
            table.last_event_ms[rows] = ts
    return out


WIDTH = 6  # the pulse: high for WIDTH steps from phase 0


def _square(periods: int, seed: int = 0, high: float = 10.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    phase = np.arange(periods * PERIOD) % PERIOD
    heights = high * np.repeat(rng.lognormal(0.0, 0.5, periods), PERIOD)
    return np.where(phase < WIDTH, heights, 0.0) + rng.normal(0, 0.3, periods * PERIOD)


def test_a_periodic_misfit_alarms_every_period_without_the_season_and_stops_with_it() -> None:
    values = _square(40)
    late = slice(8 * PERIOD, None)  # after a few periods of learning: 4,608 steps, 4.6 alarms at 1e-3
    assert _alarms(values)[late].sum() >= 12  # the plain scorer: the same edges, period after period
    assert _alarms(values, PERIOD)[late].sum() <= 5  # the calibrated rate


def test_a_real_shock_at_the_misfit_phase_still_alarms() -> None:
    values = _square(40)
    edge = 30 * PERIOD + WIDTH  # the falling edge, where the forecaster always misses
    values[edge] += 40.0  # the edge falls about 10 every period; today it rises 30
    spike = 28 * PERIOD + 50  # and, earlier, a shock at a quiet phase: 17 noise deviations
    values[spike] += 5.0
    alarms = _alarms(values, PERIOD)
    assert alarms[edge] and alarms[spike]


# not `volatility`: it scores raw differences, which the season does not touch (export.calibrate drops it)
@pytest.mark.parametrize("spec", ["gaussian", "gaussian+likelihood", "gaussian+phase", "gaussian+likelihood+phase"])
def test_a_new_daily_shape_stops_alarming_within_a_few_half_lives(spec: str) -> None:
    values = _square(50)
    values[30 * PERIOD:] = _square(20, seed=1, high=-25.0)  # the daily shape flips and grows from period 30
    alarms = _alarms(values, PERIOD, spec)
    assert alarms[30 * PERIOD:31 * PERIOD].any()  # the change is news
    assert alarms[40 * PERIOD:].sum() <= 3  # documented: learnt within a few `halflife` (3) periods


def test_season_options_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match="no option"):
        ResidualScorer(ScorerConfig(
            threshold=0.999, warmup_steps=0, halflife_steps=1.0, residual_std=np.ones(1), uses_model_scale=False,
            spec="gaussian", options={"season": {"period": 24, "phase": 3}}), 1)
    with pytest.raises(ValueError, match="integer period"):
        ResidualScorer(ScorerConfig(threshold=0.999, warmup_steps=0, halflife_steps=1.0, residual_std=np.ones(1),
                                    uses_model_scale=False, spec="gaussian", options={"season": {"period": 2.5}}), 1)


FIVE_MINUTES_MS = 300_000


def test_the_period_is_a_calendar_season_the_training_rows_repeat() -> None:
    t = np.arange(700) * FIVE_MINUTES_MS
    rng = np.random.default_rng(0)
    daily = 5 * np.sin(2 * np.pi * np.arange(700) / 288) + rng.normal(0, 1, 700)
    assert find_period(daily, t) == 288
    assert find_period(rng.normal(size=700), t) == 0  # noise
    assert find_period(np.cumsum(rng.normal(size=700)), t) == 0  # a random walk correlates at every lag
    assert find_period(np.full(700, 3.0), t) == 0  # a constant
    assert find_period(daily[:500], t[:500]) == 0  # fewer than two cycles
    hourly = np.arange(400) * 3_600_000
    days = np.sin(2 * np.pi * np.arange(400) / 24)
    assert find_period(days + rng.normal(0, 0.1, 400), hourly) == 24
    weekend = (np.arange(400) // 24) % 7 >= 5
    assert find_period(np.where(weekend, 0.3, 1.0) * days + rng.normal(0, 0.1, 400), hourly) == 168  # weeks differ
    minutes = np.arange(3000) * 60_000  # a day is 1440 rows, a week too many rows of state: only the day counts
    assert find_period(np.sin(2 * np.pi * np.arange(3000) / 1440), minutes) == 1440
    seconds = np.arange(200_000) * 1000  # a day of 1-second rows: 86,400 rows of state per key, refused
    assert find_period(np.sin(2 * np.pi * np.arange(200_000) / 86_400), seconds) == 0
    kept = np.r_[0:150, 190:400]  # a gap of 40 hours: the rows after it keep their phase by their event times
    assert find_period(days[kept], hourly[kept]) == 24


def test_one_model_gets_the_season_most_of_its_keys_share() -> None:
    t = np.arange(700) * FIVE_MINUTES_MS
    rng = np.random.default_rng(1)
    daily = [(np.sin(2 * np.pi * np.arange(700) / 288) + rng.normal(0, 0.2, 700), t) for _ in range(3)]
    noise = [(rng.normal(size=700), t) for _ in range(3)]
    assert series_season(daily) == {"period": 288, "step_ms": FIVE_MINUTES_MS}
    assert series_season(daily[:2] + noise[:1]) == {"period": 288, "step_ms": FIVE_MINUTES_MS}
    assert series_season(daily[:1] + noise[:2]) == {}
    assert series_season([(daily[0][0], None)]) == {}  # no timestamps, no calendar



def test_a_day_of_unusual_shape_that_the_forecaster_follows_alarms_on_phase_only() -> None:
    """A plateau twice as high for one period, reached by a slow ramp: each step is close to the last, so
    the one-step residual never stands out; against the same phase of earlier periods it does."""
    rng = np.random.default_rng(3)
    t = np.arange(30 * PERIOD)
    values = 10 + 5 * np.sin(2 * np.pi * t / PERIOD) + rng.normal(0, 0.2, t.size)
    day = slice(20 * PERIOD, 21 * PERIOD)
    values[day] += 8 * np.sin(np.pi * np.arange(PERIOD) / PERIOD)  # a smooth bump over one period
    assert not _alarms(values, PERIOD, "gaussian+likelihood")[day].any()
    alarms = _alarms(values, PERIOD, "gaussian+likelihood+phase")
    assert alarms[day].any()
    assert alarms[day].sum() >= PERIOD // 10  # the whole bump, not one point
    # elsewhere (3,888 steps) about the calibrated rate (1e-3), and no echo of the bump one period later
    assert alarms[8 * PERIOD:20 * PERIOD].sum() + alarms[21 * PERIOD:].sum() <= 5
    assert not alarms[21 * PERIOD:22 * PERIOD].any()


def test_phase_without_a_season_is_refused_saying_why() -> None:
    with pytest.raises(ValueError, match="needs a season"):
        ResidualScorer(ScorerConfig(threshold=0.999, warmup_steps=0, halflife_steps=1.0, residual_std=np.ones(1),
                                    uses_model_scale=False, spec="gaussian+phase"), 1)


def test_a_gap_in_the_feed_keeps_the_phase_by_event_time() -> None:
    """Rows of one-second spacing (``step_ms`` 1000) with a gap of a third of a period: by event time the key
    stays in phase and its misfits stay absorbed; counting rows would shift every phase by the gap."""
    values = _square(40)
    seconds = np.arange(values.size) * 1000
    kept = np.r_[0:20 * PERIOD, 20 * PERIOD + PERIOD // 3:values.size]
    after = slice(20 * PERIOD, 21 * PERIOD)  # the period after the gap
    assert _alarms(values[kept], PERIOD, event_ms=seconds[kept])[after].sum() <= 1
    assert _alarms(values[kept], PERIOD)[after].sum() >= 4  # counting rows: every edge lands on a calm phase

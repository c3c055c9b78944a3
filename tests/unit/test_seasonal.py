"""The seasonal stage (consumer.seasonal) and the trainer's period finder (export.period): a forecaster's
misfit that repeats every period stops alarming, a real shock at that phase still alarms, a new daily shape is
learnt, and only series that repeat get a period."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.offline import check_scorer, score_array
from rnnwatch.consumer.runner import StepResults, StepRunner, make_runner
from rnnwatch.consumer.scoring import ResidualScorer, ScorerConfig
from rnnwatch.consumer.seasonal import SeasonalNormaliser
from rnnwatch.consumer.state import StateTable
from rnnwatch.consumer.types import DUPLICATE, OUT_OF_ORDER, PROCESSED, TickBatch
from rnnwatch.export.period import find_period, series_season
from tests.unit.onnx_builders import ewma_model

PERIOD = 144  # a misfit once or twice a period: rarer than the tail calibration's 5 % level absorbs on its own


def _alarms(values: np.ndarray, period: int = 0, spec: str = "gaussian+likelihood",
            event_ms: np.ndarray | None = None, **season: float) -> np.ndarray:
    """Alarm per step of one key scored against a naive forecaster (forecast = last value), which misses
    every edge of a pulse wave: a misfit at the same phases every period, its size varying from period to
    period (as a trained forecaster's does)."""
    options = {"season": {"period": period, "step_ms": 1000, **season}} if period else {}
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
    with pytest.raises(ValueError, match="tolerance_ms >= 0"):
        ResidualScorer(ScorerConfig(threshold=0.999, warmup_steps=0, halflife_steps=1.0, residual_std=np.ones(1),
                                    uses_model_scale=False, spec="gaussian",
                                    options={"season": {"period": 24, "tolerance_ms": -1}}), 1)


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
    edges = np.isin(kept % PERIOD, [0, WIDTH])[after]  # where the forecaster misses, by event time
    by_time = _alarms(values[kept], PERIOD, event_ms=seconds[kept])[after]
    assert not by_time[edges].any() and by_time.sum() <= 2  # at most one noise incident (two adjacent rows)
    assert _alarms(values[kept], PERIOD)[after].sum() >= 4  # counting rows: every edge lands on a calm phase


# --- robustness of the season clock on feeds the NAB series do not show: hourly and 1-minute rows, jittered,
# duplicated and late event times, no meaningful timestamps, keys starting mid-period, a season that ends,
# and a restore across a gap. Through the runner (consumer.runner): the path `run`, `score` and `evaluate` share.

HOUR_MS = 3_600_000


def _pulses(periods: int, period: int, seed: int = 0, width: int = WIDTH) -> np.ndarray:
    """``_square`` at any period, positive (the EWMA test model's domain)."""
    rng = np.random.default_rng(seed)
    phase = np.arange(periods * period) % period
    heights = 10.0 * np.repeat(rng.lognormal(0.0, 0.5, periods), period)
    return 50.0 + np.where(phase < width, heights, 0.0) + rng.normal(0, 0.3, periods * period)


def _runner(tmp_path: Path, period: int = PERIOD, step_ms: int = 1000, spec: str = "gaussian") -> StepRunner:
    """A runner of the EWMA test model (its forecast lags every edge of a pulse: a misfit at the same phases)."""
    signature = load_signature(ewma_model(tmp_path / "ewma.onnx"))
    return make_runner(signature, scoring=check_scorer(spec, {"season": {"period": period, "step_ms": step_ms}}))


def _feed(runner: StepRunner, values: np.ndarray, event_ms: np.ndarray, keys: list[bytes] | None = None,
          first_offset: int = 0) -> StepResults:
    """The records through ``runner`` in order, one poll each (as a live consumer sees a slow feed)."""
    n = len(values)
    keys = keys if keys is not None else [b"k"] * n
    merged = StepResults.empty(n, 1)
    for i in range(n):
        part = runner.process(TickBatch(
            partition=np.zeros(1, dtype=np.int32), offset=np.array([first_offset + i], dtype=np.int64), keys=[keys[i]],
            event_ms=np.asarray(event_ms[i:i + 1], dtype=np.int64),
            x=np.asarray(values[i:i + 1], dtype=np.float32).reshape(1, 1), timestamp_ms=np.zeros(1, dtype=np.int64)))
        for name in ("status", "alarm", "surprise"):
            getattr(merged, name)[i] = getattr(part, name)[0]
    return merged


def _clock(runner: StepRunner, key: bytes = b"k") -> int:
    row = runner.table.row_of(0, key)
    assert row is not None
    return int(runner.table.arrays["s.season.clock"][row])


def test_hourly_rows_with_a_weekly_season(tmp_path: Path) -> None:
    """Hourly rows (a day is 24 rows, a week 168): a weekday pulse that weekends lack repeats every 168 rows."""
    week = 168
    weekday = (np.arange(30 * week) // 24) % 7 < 5
    values = np.where(weekday | (np.arange(30 * week) % 24 >= WIDTH), _pulses(30 * 7, 24), 50.0)
    hours = np.arange(values.size, dtype=np.int64) * HOUR_MS + 1_700_000_000_000
    alarms = _feed(_runner(tmp_path, week, HOUR_MS), values, hours).alarm
    assert alarms[8 * week:].sum() <= 5
    assert find_period(values[:750], hours[:750]) == week  # NAB's probationary rows of hourly data: 4 weeks


def test_one_minute_rows_find_no_day_in_too_few_rows_and_a_day_with_enough() -> None:
    """1-minute rows: a day is 1,440 rows, a week over the state cap. NAB's probationary rows (at most 750) hold
    half a day: no season (guessing one from half a cycle would relabel phases); two days do."""
    minutes = np.arange(3000, dtype=np.int64) * 60_000
    daily = 5 * np.sin(2 * np.pi * np.arange(3000) / 1440) + np.random.default_rng(2).normal(0, 0.5, 3000)
    assert find_period(daily[:750], minutes[:750]) == 0
    assert find_period(daily[:2880], minutes[:2880]) == 1440


def test_jittered_duplicated_and_late_event_times_keep_the_clock(tmp_path: Path) -> None:
    """Rows of 1 s spacing jittered by up to +-0.4 s, with a redelivered record (same event time) every 50 rows and
    a late record (10 s old) every 70: the runner refuses the duplicates and late records, and the clock counts
    exactly the slots by event time; the misfits stay absorbed."""
    rng = np.random.default_rng(4)
    values = _pulses(30, PERIOD)
    t = np.arange(values.size) * 1000 + rng.integers(-400, 401, values.size) + 1_700_000_000_000
    order, extra_dup, extra_late = [], [], []
    for i in range(values.size):
        order.append(i)
        if i % 50 == 49:
            order.append(i)
            extra_dup.append(len(order) - 1)
        if i % 70 == 69:
            order.append(i - 10)
            extra_late.append(len(order) - 1)
    idx = np.array(order)
    runner = _runner(tmp_path)
    res = _feed(runner, values[idx], t[idx])
    assert (res.status[extra_dup] == DUPLICATE).all()
    assert (res.status[extra_late] == OUT_OF_ORDER).all()
    assert _clock(runner) == values.size - 1
    kept = res.status == PROCESSED
    assert res.alarm[kept][8 * PERIOD:].sum() <= 5


@pytest.mark.parametrize("spacing_ms", [1, 3], ids=["csv-row-numbers", "replay-at-ingest-time"])
def test_records_without_meaningful_event_times_count_rows(tmp_path: Path, spacing_ms: int) -> None:
    """A CSV without a time column (``score`` numbers its rows 1 ms apart) or a replay whose Kafka timestamps are
    the ingest time: the clock advances one row per record, so a feed in its natural order keeps its phases."""
    values = _pulses(30, PERIOD)
    runner = _runner(tmp_path)
    res = _feed(runner, values, np.arange(values.size, dtype=np.int64) * spacing_ms)
    assert _clock(runner) == values.size - 1
    assert res.alarm[8 * PERIOD:].sum() <= 5
    # score (a CSV without a time column) takes the same path
    offline = score_array(ewma_model(tmp_path / "m.onnx"), values, scorer="gaussian",
                          scorer_options=json.dumps({"season": {"period": PERIOD, "step_ms": 1000}}))
    assert offline.alarm[8 * PERIOD:].sum() <= 5


@pytest.mark.parametrize("spec", ["gaussian", "gaussian+likelihood+phase"])
def test_a_season_that_ends_stops_alarming(tmp_path: Path, spec: str) -> None:
    """The pulses stop at period 20 (a machine switched to a flat load): the phases that expected a misfit see
    none; the alarms this causes end within a few half-lives (3 periods)."""
    values = _pulses(40, PERIOD)
    values[20 * PERIOD:] = 50.0 + np.random.default_rng(5).normal(0, 0.3, 20 * PERIOD)
    res = _feed(_runner(tmp_path, spec=spec), values, np.arange(values.size, dtype=np.int64) * 1000)
    assert res.alarm[28 * PERIOD:].sum() <= 3


def test_keys_starting_mid_period_keep_their_own_phases(tmp_path: Path) -> None:
    """Two keys of the same daily shape, one starting a third of a period later (a host added at noon): each key's
    phases count from its own first record, and neither alarms at its misfits."""
    values = _pulses(30, PERIOD)
    t = np.arange(values.size, dtype=np.int64) * 1000
    late = PERIOD // 3
    keys = [b"a"] * values.size + [b"b"] * (values.size - late)
    both_t = np.r_[t, t[late:]]
    order = np.argsort(both_t, kind="stable")
    runner = _runner(tmp_path)
    res = _feed(runner, np.r_[values, values[late:]][order], both_t[order], [keys[i] for i in order])
    key_of = np.array(keys)[order]
    for key in (b"a", b"b"):
        assert res.alarm[key_of == key][8 * PERIOD:].sum() <= 5
    assert _clock(runner, b"a") - _clock(runner, b"b") == late


def test_a_restore_across_a_gap_keeps_the_phase(tmp_path: Path) -> None:
    """Snapshots of the keys after 20 periods, restored into a new runner (a restart), then the feed resumes after
    a gap of a third of a period: the same alarms as a runner that never stopped, and the misfits stay absorbed."""
    values = _pulses(30, PERIOD)
    t = np.arange(values.size, dtype=np.int64) * 1000
    kept = np.r_[0:20 * PERIOD, 20 * PERIOD + PERIOD // 3:values.size]
    v, tk = values[kept], t[kept]
    cut = 20 * PERIOD
    whole = _feed(_runner(tmp_path), v, tk)
    first = _runner(tmp_path)
    _feed(first, v[:cut], tk[:cut])
    row = first.table.row_of(0, b"k")
    assert row is not None
    blob = first.table.snapshot(row)
    second = _runner(tmp_path)
    second.table.load(0, b"k", second.table.decode(blob))
    resumed = _feed(second, v[cut:], tk[cut:], first_offset=cut)
    assert (resumed.alarm == whole.alarm[cut:]).all()
    assert _clock(second) == _clock(first) + (values.size - 1 - (20 * PERIOD - 1))
    assert resumed.alarm[:PERIOD].sum() <= 1


def test_the_trainer_finds_the_season_in_jittered_and_duplicated_rows() -> None:
    """The trainer places rows in the same slots as the scorer's clock: jitter of up to 0.4 rows, a row recorded
    twice and a few missing rows do not hide an hourly series' day."""
    rng = np.random.default_rng(6)
    n = 400
    hours = np.arange(n) * HOUR_MS + rng.integers(-int(0.4 * HOUR_MS), int(0.4 * HOUR_MS), n)
    days = np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 0.1, n)
    idx = np.sort(np.r_[np.arange(n)[np.arange(n) % 37 != 5], np.arange(0, n, 29)])  # holes and duplicates
    assert find_period(days[idx], hours[idx]) == 24


@pytest.mark.parametrize("spec", ["gaussian+phase", "gaussian+likelihood+phase"])
def test_an_exact_repeat_keeps_every_score_finite_and_a_later_shock_alarms(tmp_path: Path, spec: str) -> None:
    """A series that repeats exactly (a synthetic or quantised signal: every phase's spread is 0, and so is the
    key's spread around its phase means): no 0/0 reaches the scores or the detectors' state, and a shock after
    twenty identical periods still alarms."""
    values = np.tile(np.where(np.arange(PERIOD) < WIDTH, 60.0, 50.0), 30)
    shock = 25 * PERIOD + 70
    values[shock] += 5.0
    runner = _runner(tmp_path, spec=spec)
    res = _feed(runner, values, np.arange(values.size, dtype=np.int64) * 1000)
    assert res.alarm[shock]
    assert np.isfinite(res.surprise).all()
    for name in runner.table.arrays:
        if name.startswith(("s.season", "s.phase")):
            assert np.isfinite(runner.table.arrays[name][:len(runner.table)]).all(), name


def test_a_misfit_that_repeats_exactly_is_not_news_once_a_period() -> None:
    """A residual of 10 at one phase every period, exactly 0 elsewhere (a noiseless series whose forecaster misses
    one edge the same way each period): the key's spread around its phase means collapses towards 0. The part of
    the phase's misfit the young phase's shrinkage withholds (``m (1 - w)``) is uncertainty, not a deviation:
    without counting it in the scale, the edge scores about sqrt(P) deviations every period."""
    norm = SeasonalNormaliser({"period": PERIOD}, 1)
    table = StateTable(norm.columns(), identity="t")
    rows, _ = table.rows_for(0, [b"k"])
    out = []
    for step in range(20 * PERIOD):
        z = np.array([[10.0 if step % PERIOD == 0 else 0.0]])
        out.append(float(norm.normalise(table, rows, np.array([step]), z, np.array([True]))[0, 0]))
    edge = np.array(out)[2 * PERIOD::PERIOD]
    assert np.isfinite(out).all() and (np.abs(edge) <= 1.001).all()


def test_a_daily_job_that_starts_a_few_minutes_early_or_late_stops_alarming() -> None:
    """A daily job (a backup, a batch) lifts a metric for one 5-minute row, but not at the same minute every day:
    NAB's ec2_cpu_utilization_24ae8d spikes to 10 times its baseline between 03:05 and 03:35, moving up to three
    rows from one day to the next. Its season is found, yet the spike never sits in the same phase twice, so
    it alarmed once a day; within the season's ``tolerance_ms`` (15 minutes) a value is scored against the
    phase that fits it best, so the job is learnt, and a spike at another hour still alarms."""
    period, days, step_ms = 288, 30, 300_000  # 5-minute rows, a daily season
    rng = np.random.default_rng(7)
    values = 1.0 + rng.normal(0, 0.05, period * days)
    slots = 36 + rng.integers(-3, 4, days)  # 03:00 +- 15 minutes
    values[np.arange(days) * period + slots] += 10.0
    stray = 25 * period + 150  # 12:30 on day 25: the same spike where no job runs
    values[stray] += 10.0
    event_ms = np.arange(len(values), dtype=np.int64) * step_ms
    job = np.zeros(len(values), dtype=bool)
    job[10 * period:] = True  # days 10-29, once the season is learnt
    job[stray:stray + 2] = False  # the stray spike and its fall
    strict = _alarms(values, period, "gaussian+phase", event_ms, step_ms=step_ms, tolerance_ms=0)
    assert strict[job].sum() >= 5 and strict[stray]  # without the tolerance: the job, every few days
    tolerant = _alarms(values, period, "gaussian+phase", event_ms, step_ms=step_ms)  # the default, 15 minutes
    assert tolerant[job].sum() <= 1 and tolerant[stray]

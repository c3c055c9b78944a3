"""Calibration holds out of sample: the surprise threshold fitted on held-out training rows gives at most the
target false-alarm rate on later rows it never saw, across many series with different scales and tails,
with one configuration (no per-series tuning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnwatch.consumer.offline import score_array
from rnnwatch.export.calibrate import calibrate, fit_tail_threshold

TARGET = 1e-3
SPECS = ["gaussian+likelihood+volatility"]  # the default scorer


def _series(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random walk with Student-t returns: each series its own volatility and tail weight."""
    vol = rng.uniform(0.003, 0.03)
    df = rng.uniform(3.0, 30.0)
    returns = vol * rng.standard_t(df, n) / np.sqrt(df / (df - 2))
    return 100 * np.exp(np.cumsum(returns))


@pytest.mark.parametrize("spec", SPECS)
def test_threshold_fitted_on_held_out_rows_holds_on_unseen_rows(ewma_path: Path, spec: str) -> None:
    rng = np.random.default_rng(11)
    series = [_series(rng, 2000) for _ in range(12)]
    train = [s[:1000] for s in series]
    threshold = calibrate(ewma_path, train, warmup=3, scorer=spec, target_rate=TARGET)
    unseen = np.concatenate([score_array(ewma_path, s, scorer=spec).surprise[1000:] for s in series])
    rate = float((unseen >= threshold).mean())
    # The documented rate holds as a bound on rows never seen; held-out rows come from a key's younger tail
    # calibration, so the fit errs on the quiet side, but within 1.5 decades of the calibrated -log10(target).
    assert rate <= TARGET * 3, (threshold, rate)
    assert -np.log10(TARGET) <= threshold <= -np.log10(TARGET) + 1.5, threshold


def test_the_tail_fit_extrapolates_beyond_the_rows_it_has() -> None:
    """400 rows cannot show a 1e-4 quantile; the exponential tail fit still finds it (calibrated surprise: 4)."""
    rng = np.random.default_rng(3)
    fits = [fit_tail_threshold(-np.log10(rng.uniform(size=400)), 1e-4) for _ in range(50)]
    assert 3.5 < float(np.median(fits)) < 4.6
    heavy = [fit_tail_threshold(-2 * np.log10(rng.uniform(size=400)), 1e-4) for _ in range(50)]
    assert 7.0 < float(np.median(heavy)) < 9.2  # twice the surprise for the same rarity: twice the threshold


def test_held_out_rows_raise_the_threshold_only_when_they_prove_a_heavier_tail() -> None:
    from rnnwatch.export.calibrate import held_out_threshold

    rng = np.random.default_rng(5)
    calibrated = -np.log10(rng.uniform(size=3000))
    assert held_out_threshold(calibrated, TARGET) == pytest.approx(3.0)
    assert held_out_threshold(4 * calibrated, TARGET) > 8.0  # 4x the surprise for the same rarity


def _kind(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """One synthetic series of ``kind``: each with its own scale, tail weight, memory or period."""
    if kind == "student_t_walk":
        return _series(rng, n)
    if kind == "garch_walk":  # volatility clustering, as in real returns
        r, v = np.zeros(n), 1e-4
        for i in range(n):
            r[i] = np.sqrt(v) * rng.standard_normal()
            v = 1e-6 + 0.08 * r[i] ** 2 + 0.9 * v
        return 100 * np.exp(np.cumsum(r))
    if kind == "ar1_level":
        x, phi = np.zeros(n), rng.uniform(0.5, 0.98)
        for i in range(1, n):
            x[i] = phi * x[i - 1] + rng.standard_normal()
        return 10 + x
    if kind == "seasonal_level":
        t = np.arange(n)
        return 50 + 10 * np.sin(2 * np.pi * t / rng.integers(24, 100)) + rng.normal(0, rng.uniform(0.5, 3), n)
    return rng.poisson(rng.uniform(2, 30), n).astype(np.float64)  # counts, zeros included


@pytest.fixture(scope="module")
def level_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The EWMA step model with a real-valued feature (levels, counts): the trainer's other default scorer."""
    import json

    from rnnwatch.consumer import contract as c
    from tests.unit.onnx_builders import default_metadata, ewma_model

    meta = default_metadata(**{c.META_FEATURES: json.dumps([{"name": "price", "domain": "real"}])})
    return ewma_model(tmp_path_factory.mktemp("level") / "level.onnx", metadata=meta)


@pytest.mark.parametrize("kind", ["student_t_walk", "garch_walk", "ar1_level", "seasonal_level", "counts"])
def test_the_written_threshold_gives_the_documented_rate_on_unseen_rows_of_every_kind(
        ewma_path: Path, level_model: Path, kind: str) -> None:
    """Issue 12 item 7: the trainer's threshold, with the default scorer it writes for the series' domain,
    calibrated on the first 1000 rows of each series (their last 20 % held out), gives at most the documented
    rate of alarm rows on the 1500 rows after them, for every kind, with one configuration. (Each
    series is scored once from a fresh state: its first 1000 rows' surprises are exactly what `calibrate`
    computes.) Measured (seed 7): 1.1e-4 to 7.8e-4; level scorers err on the quiet side (the Bonferroni
    log10(3) of three members that rarely fire together; ar1: held-out rows of a young key raise it to 3.88)."""
    from rnnwatch.export.calibrate import default_scorer, held_out_threshold, holdout_start

    positive = kind.endswith("walk")
    model, scorer = (ewma_path, default_scorer("positive")) if positive else (level_model, default_scorer("real"))
    rng = np.random.default_rng(7)
    scored = [score_array(model, _kind(rng, kind, 2500), scorer=scorer).surprise for _ in range(6)]
    held = [s[max(4, holdout_start(1000)):1000] for s in scored]
    threshold = held_out_threshold(held, TARGET)
    unseen = np.concatenate([s[1000:] for s in scored])
    rate = float((unseen >= threshold).mean())
    assert rate <= 2 * TARGET, (kind, threshold, rate)
    # and not by muting the keys: their held-out rows prove no heavier tail than the runtime calibrates (ar1's
    # 7 alarm rows in 3 bursts raised it to 3.88 and 1.1e-4 on the unseen rows when rows were counted)
    assert threshold == pytest.approx(-np.log10(TARGET)), (kind, threshold, rate)


def test_a_burst_of_alarm_rows_is_one_piece_of_evidence_of_a_heavier_tail() -> None:
    """Alarm rows cluster (an event spans several rows; the runtime makes it one incident), so the held-out
    check counts clusters, which are Poisson under a calibrated tail: one burst does not raise the threshold,
    bursts more frequent than the rate allows do."""
    from rnnwatch.export.calibrate import held_out_threshold

    rng = np.random.default_rng(5)
    keys = [-np.log10(rng.uniform(size=400)) for _ in range(3)]
    keys[1][200:206] = 3.5  # one event: six alarm rows in a row
    assert held_out_threshold(keys, TARGET) == pytest.approx(3.0)
    for k in keys:
        k[50:350:60] = 3.5  # five separate events per key: fifteen where 1.2 are expected
    assert held_out_threshold(keys, TARGET) > 3.0


def test_train_help_states_the_default_false_alarm_rate_the_trainer_uses(capsys: pytest.CaptureFixture[str]) -> None:
    from rnnwatch.export.calibrate import TARGET_FALSE_ALARM_RATE
    from rnnwatch.export.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {TARGET_FALSE_ALARM_RATE:g})" in text  # the help said 10^-2.5 while the trainer used 10^-3


def test_held_out_rows_of_a_seasonal_model_are_scored_at_their_event_times(tmp_path: Path) -> None:
    """Offline equals online for calibration too: a model with a season scores its held-out rows as `run` does,
    each placed in the season by its event time. Hourly rows with a daily pulse and half a day missing from
    the training rows: counted by rows, every phase after the gap was shifted by 12 hours, and the held-out
    surprises the threshold is fitted on were not those `run` computes for the same rows (their top 1.03,
    flattened by misplaced phases, against 2.03 at the event times and 1.97 for the rows without the gap)."""
    import json

    from rnnwatch.consumer import contract as c
    from rnnwatch.consumer.contract import load_signature
    from rnnwatch.consumer.offline import score_rows
    from rnnwatch.export.calibrate import held_out_surprise, holdout_start
    from tests.unit.onnx_builders import default_metadata, ewma_model

    hour, period, spec = 3_600_000, 24, "gaussian+phase"
    scoring = {"warmup_steps": 3, "threshold": 0.999, "halflife_steps": 50, "residual_std": [1.0],
               "scorer": spec, "scorer_options": {"season": {"period": period, "step_ms": hour}}}
    model = ewma_model(tmp_path / "seasonal.onnx", metadata=default_metadata(**{c.META_SCORING: json.dumps(scoring)}))
    t = np.arange(40 * period)
    values = 50.0 + np.where(t % period < 6, 10.0, 0.0) + np.random.default_rng(0).normal(0, 0.3, t.size)
    kept = np.ones(t.size, dtype=bool)
    kept[len(t) // 3:len(t) // 3 + period // 2] = False  # half a day missing from the training rows
    x, event_ms = values[kept], t[kept] * hour
    held = held_out_surprise(model, [x], 3, spec, [event_ms])[0]
    runtime = score_rows(load_signature(model), [b"k"] * len(x), event_ms, x.reshape(-1, 1).astype(np.float32),
                         scorer=spec, scorer_options={"incident_gap_steps": 0}).surprise  # raw, as calibrated
    np.testing.assert_array_equal(held, runtime[holdout_start(len(x)):])
    no_gap = held_out_surprise(model, [values], 3, spec, [t * hour])[0]
    assert abs(held.max() - no_gap.max()) < 0.2, (held.max(), no_gap.max())  # the gap leaves the phases alone


def test_held_out_rows_are_calibrated_on_the_surprise_the_alarm_is_decided_on(ewma_path: Path) -> None:
    """The threshold is calibrated on the raw surprise every alarm compares with the threshold, not on the
    surprise a row reports (a row continuing an incident reports only what beats its peak, ``consumer.incidents``):
    otherwise the rows of one burst reported low would split it into several and pass for a heavier tail."""
    from rnnwatch.export.calibrate import held_out_surprise, holdout_start

    rng = np.random.default_rng(2)
    values = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 1000)))
    values[900:904] *= np.array([1.3, 1.5, 1.8, 1.5])  # a four-row shock in the held-out rows
    spec = SPECS[0]
    held = held_out_surprise(ewma_path, [values], 3, spec)[0]
    start = holdout_start(len(values))
    raw = score_array(ewma_path, values, scorer=spec, incident_gap_steps=0).surprise[start:]
    reported = score_array(ewma_path, values, scorer=spec).surprise[start:]
    np.testing.assert_array_equal(held, raw)
    assert (reported < raw).any()  # the shock's later rows report less than they alarm on


def _returns_walk(rng: np.random.Generator, tails: str, n: int) -> np.ndarray:
    """A price walk whose daily returns have Gaussian, GARCH(1,1)-Gaussian or Student-t (3-6 df) tails."""
    if tails == "garch":
        r, v = np.zeros(n), 1e-4
        for i in range(n):
            r[i] = np.sqrt(v) * rng.standard_normal()
            v = 1e-6 + 0.08 * r[i] ** 2 + 0.9 * v
        return 100 * np.exp(np.cumsum(r))
    vol = rng.uniform(0.005, 0.03)
    if tails == "gaussian":
        return 100 * np.exp(np.cumsum(vol * rng.standard_normal(n)))
    df = rng.uniform(3.0, 6.0)
    return 100 * np.exp(np.cumsum(vol * rng.standard_t(df, n) / np.sqrt(df / (df - 2))))


@pytest.mark.parametrize(("tails", "bound"), [("gaussian", 1.0), ("garch", 1.0), ("student_t", 2.0)])
def test_the_rate_on_long_unseen_stretches_is_the_documented_one_for_gaussian_tails_and_at_most_twice_for_heavy(
        ewma_path: Path, tails: str, bound: float) -> None:
    """What README's "false-alarm budget" says the rate means, measured where `evaluate` measures it: a model
    fitted on a key's first 750 rows (the last 20 % of them held out) and the key scored on, 85,000 rows never
    seen per kind (20 keys x 4,250), the default scorer of prices. Keys whose returns have Gaussian tails
    (GARCH volatility clusters included) get at most the documented rate (measured, rng seeds 17 / 1 / 2 / 3:
    0.4-0.7e-3 with this forecaster, 0.7-0.9e-3 with `evaluate`'s trained GRU); keys with heavy tails
    (Student-t returns, as real daily returns have) up to twice it (1.2-1.6e-3 here, 1.6-1.8e-3 with the
    GRU, the price corpus' real prices 1.2-1.5e-3): each key's tail is extrapolated from its top 5 % with a
    Pareto shape capped at 0.25 (``consumer.tailcal``), which under-prices a heavy tail's far end (a larger cap
    meets the rate and costs detection, measured in ``consumer.tailcal``)."""
    from rnnwatch.export.calibrate import default_scorer, held_out_threshold, holdout_start

    train, n, keys = 750, 5000, 20
    rng = np.random.default_rng(17)
    raw = [score_array(ewma_path, _returns_walk(rng, tails, n), scorer=default_scorer("positive"),
                       incident_gap_steps=0).surprise for _ in range(keys)]  # gap 0: every row its raw surprise
    threshold = held_out_threshold([s[holdout_start(train):train] for s in raw], TARGET)
    unseen = np.concatenate([s[train:] for s in raw])
    rate = float(np.mean(unseen >= threshold))
    assert threshold == pytest.approx(-np.log10(TARGET)), (tails, threshold)
    assert rate <= bound * TARGET, (tails, rate)

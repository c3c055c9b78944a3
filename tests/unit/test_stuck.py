"""The `stuck` scorer: a frozen value is one incident early in the run, a lasting freeze ends, routine repeats
are ordinary, and its surprise is not tail-calibrated again."""

from __future__ import annotations

import numpy as np

from rnnwatch.consumer.scoring import ResidualScorer, ScorerConfig
from tests.unit.test_detectors import _run, _walk

# Documented in consumer/stuck.py: a lasting freeze is no news once the key's EWMA repeat rate, which counts the
# run, reaches 1/2: about one half-life (20 steps at the default) into the run of a key that rarely repeats.
FREEZE_END_STEPS = 22


def test_a_frozen_price_opens_one_incident_at_the_start_of_the_run() -> None:
    values = _walk(3, 1500)
    values[900:915] = values[900]  # 15 days at the onset's price (values[900] itself is not a repeat)
    for spec in ("stuck", "gaussian+volatility+stuck"):
        run = _run(spec, values, threshold_surprise=3.0)
        assert run.opens[901:904].any(), (spec, run.surprise[899:916])
        assert run.opens[901:916].sum() == 1, spec
    alone = _run("stuck", values, threshold_surprise=3.0)
    assert not alone.alarm[:901].any() and not alone.alarm[916:].any()


def test_each_repeat_of_a_run_adds_to_its_surprise() -> None:
    # a key that has never repeated in 900 steps: the run's probability is p**r, so every repeat adds the same
    # -log10(p) (about 3.3); the run's own repeats must not explain the run away (two repeats less surprising
    # than one, as when the rate learnt from the run itself priced it)
    values = _walk(6, 1000)
    values[900:908] = values[900]
    surprise = _run("stuck", values, threshold_surprise=1e9).surprise[901:906]  # no incident: raw surprises
    first = -np.log10(0.5 / 902)
    np.testing.assert_allclose(surprise, first * np.arange(1, 6), rtol=1e-6)


def test_a_run_is_priced_at_the_repeat_rate_the_key_had_before_it() -> None:
    rng = np.random.default_rng(8)
    values = 100.0 + np.cumsum(rng.normal(0, 1, 3000))
    values[rng.random(3000) < 0.03] = np.nan  # marks: the next value repeats the previous one
    for t in np.flatnonzero(np.isnan(values)):
        values[t] = values[t - 1] if t else 100.0
    values[2500:2504] = values[2500]  # a run of three repeats
    rate = float(np.mean(values[1:2500] == values[:2499]))
    surprise = _run("stuck", values, threshold_surprise=1e9, domain="real").surprise[2501:2504]
    assert np.all(np.diff(surprise) > 0), surprise
    np.testing.assert_allclose(surprise[2], 3 * -np.log10(rate), rtol=0.35)


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

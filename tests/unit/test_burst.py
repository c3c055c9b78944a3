"""The `burst` scorer (variance ratio): its surprise is the documented false-alarm rate on white noise, it flags
a burst within a few steps, and a lasting rise of the variance stops alarming (issue 12 item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnwatch.consumer.burst import Burst
from tests.unit.detector_drive import drive, first_at
from tests.unit.test_detectors import REGIME_END_STEPS, _run

KEYS, STEPS, ONSET = 200, 1200, 300


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((STEPS, KEYS))


def test_on_white_noise_a_surprise_of_s_comes_about_once_in_10_to_the_s_steps(noise: np.ndarray) -> None:
    s = drive(Burst({}, 1, "real"), noise)[100:]
    for level in (2.0, 3.0):
        assert 0.5 * 10**-level < (s >= level).mean() < 1.5 * 10**-level, (level, (s >= level).mean())


@pytest.mark.parametrize(("factor", "within"), [(2.0, 26), (3.0, 8)])
def test_a_burst_is_flagged_within_the_documented_steps(noise: np.ndarray, factor: float, within: int) -> None:
    z = noise.copy()
    z[ONSET:] *= factor  # the standard deviation doubles (the variance x4) or triples
    first = first_at(drive(Burst({}, 1, "real"), z)[ONSET:], 3.0)
    assert np.percentile(first, 90) <= within, np.percentile(first, 90)


def test_a_lasting_rise_of_the_variance_ends_its_alarm(noise: np.ndarray) -> None:
    z = noise.copy()
    z[ONSET:] *= 3.0  # a lasting new regime
    s = drive(Burst({}, 1, "real"), z)
    late = s[ONSET + REGIME_END_STEPS:]
    assert (late >= 3.0).mean() < 2e-3, (late >= 3.0).mean()  # back to the white-noise rate
    assert (s[ONSET:ONSET + 20] >= 3.0).any(axis=0).mean() > 0.9  # while it did alarm at the change


def test_the_full_scorer_stops_alarming_after_a_tripled_volatility() -> None:
    rng = np.random.default_rng(2)
    returns = rng.normal(0, 0.01, 3000)
    returns[1000:] *= 3.0
    run = _run("gaussian+burst", 100 * np.exp(np.cumsum(returns)))
    assert run.alarm[1000:1030].any()
    assert not run.alarm[1000 + REGIME_END_STEPS:].any(), np.flatnonzero(run.alarm[1000:]) + 1000


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="window >= 2"):
        Burst({"window": 1}, 1, "real")

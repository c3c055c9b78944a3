"""The `cusum` scorer (Page's two-sided CUSUM): its documented in-control run length on white noise, the delay
to a mean shift, and a lasting shift stops alarming (the reset rule and the learning mean; issue 12 item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnwatch.consumer.cusum import Cusum, arl0_surprise
from tests.unit.detector_drive import drive, first_at

KEYS, STEPS, ONSET = 200, 2000, 300
# Documented in consumer/cusum.py: with the defaults a lasting shift of up to 3 sigma stops alarming within 1,000 steps.
SHIFT_END_STEPS = 1000


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((STEPS, KEYS))


def test_the_surprise_is_log10_of_the_average_run_length() -> None:
    assert arl0_surprise(np.array([0.0]), 0.25)[0] == 0.0
    # Siegmund: h = 10 at k = 0.25 is a one-sided ARL0 of about 2,070 steps, two-sided 1,035
    assert 3.0 < arl0_surprise(np.array([10.0]), 0.25)[0] < 3.03


def test_on_white_noise_the_reset_level_comes_about_once_per_documented_run_length(noise: np.ndarray) -> None:
    s = drive(Cusum({}, 1, "real"), noise)[100:]
    assert 0.5e-3 < (s >= 3.0).mean() < 2e-3, (s >= 3.0).mean()


@pytest.mark.parametrize(("shift", "within"), [(1.0, 20), (2.0, 8)])
def test_a_mean_shift_is_flagged_within_the_documented_steps(noise: np.ndarray, shift: float, within: int) -> None:
    z = noise.copy()
    z[ONSET:] += shift
    first = first_at(drive(Cusum({}, 1, "real"), z)[ONSET:], 3.0)
    assert np.percentile(first, 90) <= within, np.percentile(first, 90)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_a_lasting_shift_stops_alarming(noise: np.ndarray, shift: float) -> None:
    z = noise.copy()
    z[ONSET:] += shift
    late = drive(Cusum({}, 1, "real"), z)[ONSET + SHIFT_END_STEPS:]
    assert (late >= 3.0).mean() < 2e-3, (late >= 3.0).mean()  # back to the white-noise rate

"""The trainer's forecast-skill gate (export.skill): the Mincer-Zarnowitz t statistic and its decision, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnwatch.export.skill import DEFAULT_GATE, forecast_skill, skill_t

# Two features, four held-out rows (normalised units): predictions p and targets y.
P = np.array([[1.0, 1.0], [2.0, 1.0], [-1.0, 1.0], [-2.0, 1.0]])
Y = np.array([[2.0, 1.0], [3.0, -1.0], [-1.0, 2.0], [-3.0, 0.0]])


def test_t_is_the_slope_over_its_hc0_standard_error() -> None:
    """Feature 0: sum p^2 = 10, sum p*y = 15, slope 1.5, residuals (0.5, 0, 0.5, 0), sum p^2 r^2 = 0.5,
    se = sqrt(0.5) / 10, t = 15 sqrt 2 (the classical se, sqrt(sum r^2 / (n - 1) / sum p^2), would give 11.6).
    Feature 1: a constant forecast 1: slope 2 / 4 = 0.5, residuals (0.5, -1.5, 1.5, -0.5), sum p^2 r^2 = 5,
    se = sqrt(5) / 4, t = 2 / sqrt 5."""
    t = skill_t(P, Y)
    assert t == pytest.approx([15 * math.sqrt(2), 2 / math.sqrt(5)], rel=1e-12)


def test_the_gate_keeps_a_forecast_with_t_at_or_above_it() -> None:
    skill = forecast_skill(P.astype(np.float32), Y.astype(np.float32), DEFAULT_GATE)
    assert DEFAULT_GATE == 3.0
    assert skill.weight.tolist() == [1.0, 0.0] and skill.weight.dtype == np.float32
    assert skill.rows == 4 and skill.gate == 3.0
    assert forecast_skill(P, Y, 2 / math.sqrt(5)).weight.tolist() == [1.0, 1.0]  # t >= gate, inclusive
    assert forecast_skill(P, Y, 0.9).weight.tolist() == [1.0, 0.0]


def test_gate_zero_keeps_every_forecast_even_one_that_points_the_wrong_way() -> None:
    wrong = forecast_skill(P, -Y, 0.0)
    assert wrong.t[0] == pytest.approx(-15 * math.sqrt(2))
    assert wrong.weight.tolist() == [1.0, 1.0]
    assert forecast_skill(P, -Y, 3.0).weight.tolist() == [0.0, 0.0]  # a negative slope is no skill


@pytest.mark.parametrize(("pred", "target", "t", "weight"), [
    ([0.0, 0.0, 0.0], [1.0, -1.0, 2.0], None, 0.0),  # never leaves the mean: sum p^2 = 0, no evidence
    ([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], math.inf, 1.0),  # perfect: residuals all 0, se = 0, slope 2 > 0
    ([1.0, 2.0, 3.0], [-2.0, -4.0, -6.0], -math.inf, 0.0),  # perfectly wrong
    ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], None, 0.0),  # slope 0, se 0: 0 / 0
    ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], None, 0.0),  # not finite
    ([1.0, 0.0, 0.0], [2.0, 5.0, -1.0], None, 0.0),  # one row that moves: its residual is 0 by construction
])
def test_degenerate_cases(pred: list[float], target: list[float], t: float | None, weight: float) -> None:
    skill = forecast_skill(np.array(pred)[:, None], np.array(target)[:, None], 3.0)
    if t is None:
        assert math.isnan(skill.t[0])
    else:
        assert skill.t[0] == t
    assert skill.weight.tolist() == [weight]


def test_provenance_is_plain_json() -> None:
    """What the model's metadata records: the gate, the rows, t (null where it is not finite), the weights."""
    skill = forecast_skill(np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]),
                           np.array([[2.0, 1.0], [4.0, 1.0], [6.0, 1.0]]), 3.0)
    assert skill.provenance() == {"gate": 3.0, "rows": 3, "t": [None, None], "weight": [1.0, 0.0]}
    assert forecast_skill(P, Y, 3.0).provenance()["t"] == [21.213, 0.894]

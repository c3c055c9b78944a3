"""Forecast-skill gate: keep a feature's forecast only if the held-out rows show it carries information.

A one-step forecaster of daily returns has no real skill (returns are unpredictable), and its forecast then only
adds noise to the residual the scorers see. Per feature, on the trainer's held-out rows in normalised units
(prediction ``p``, target ``y``; 0 is the transform's no-change forecast: the training mean return, difference or
level), a Mincer-Zarnowitz regression of the outcome on the forecast, through the origin, with a
heteroskedasticity-robust (HC0) standard error, since returns are heavy-tailed and heteroskedastic::

    w  = sum(p y) / sum(p^2)            slope
    r  = y - w p                        residuals
    se = sqrt(sum(p^2 r^2)) / sum(p^2)  HC0 standard error of w
    t  = w / se

The forecast's weight is 1 when ``t >= gate``, else 0 (the graph then forecasts no change: ``Transform.weight``).
Degenerate cases are no evidence of skill (weight 0, t NaN): a prediction that never leaves 0 (sum p^2 = 0),
non-finite values, fewer than two rows where the prediction moves (one row's residual is 0 by construction), a
zero slope. A perfect forecaster (every residual 0, so se = 0, with w > 0) has t = +inf and keeps its forecast.
A gate of 0 keeps every forecast (t is still measured and recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_GATE", "ForecastSkill", "forecast_skill", "skill_t"]

# Three robust standard errors: at 2, chance passes on unforecastable price series cost 0.5 points (price corpus).
DEFAULT_GATE = 3.0


@dataclass(frozen=True)
class ForecastSkill:
    """The gate's decision per feature: ``t`` (float64 [F]), ``weight`` (float32 [F], 1 keep / 0 no change)."""

    gate: float
    rows: int  # held-out rows the statistic was measured on
    t: np.ndarray
    weight: np.ndarray

    @property
    def dropped(self) -> list[int]:
        """Features whose forecast is replaced by the no-change forecast."""
        return [i for i, w in enumerate(self.weight.tolist()) if w == 0.0]

    def provenance(self) -> dict[str, Any]:
        """For the model's metadata (plain JSON: a t that is not finite is null; the weight says which it was)."""
        t = [round(v, 3) if np.isfinite(v) else None for v in self.t.tolist()]
        return {"gate": self.gate, "rows": self.rows, "t": t, "weight": self.weight.tolist()}


def skill_t(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per column of ``pred`` / ``target`` ([N, F]): the HC0 t statistic of the slope of target on prediction."""
    p, y = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        spp = (p * p).sum(axis=0)
        w = (p * y).sum(axis=0) / spp
        r = y - w * p
        t = w / (np.sqrt((p * p * r * r).sum(axis=0)) / spp)
    moving = (p != 0).sum(axis=0)
    undefined = (moving < 2) | ~np.isfinite(p).all(axis=0) | ~np.isfinite(y).all(axis=0)
    return np.where(undefined, np.nan, t)


def forecast_skill(pred: np.ndarray, target: np.ndarray, gate: float) -> ForecastSkill:
    """The gate on held-out predictions and targets ([N, F], normalised units); ``gate`` 0 keeps every forecast."""
    t = skill_t(pred, target)
    with np.errstate(invalid="ignore"):
        keep = np.ones_like(t, dtype=bool) if gate <= 0 else t >= gate
    return ForecastSkill(gate=float(gate), rows=int(np.shape(pred)[0]), t=t, weight=keep.astype(np.float32))

"""Residual scoring (DESIGN §4): forecast residual -> calibrated anomaly score in [0, 1] -> decision.

For a key at step t with input x_t and the forecast f_{t-1} (and scale s_{t-1}) made one step earlier::

    r_t  = x_t - f_{t-1}                       residual, message units
    z_t  = r_t / s_{t-1}                       s = the model's forecast_scale, else its residual_std
    v    = EWMA of mean(z^2) per key           half-life `halflife_steps`; starts as a running mean
    zn_t = z_t / sqrt(v)                       adapts the model's scale to each key's own volatility
    p_t  = P(|N(0,1)| >= |zn_t|)               two-sided Gaussian tail (chi-square for several features)
    score_t = 1 - p_t                          in [0, 1]; high means anomalous (river's convention)

Scoring is kept apart from deciding (:meth:`ResidualScorer.classify`): an anomaly is ``score >=
threshold`` once the key has seen ``warmup_steps`` steps. After warm-up the normaliser does not learn from
points it flags (a shock must not teach the detector that shocks are normal).

Per-key scorer state lives in the state table (columns ``s.*``) and is checkpointed with the model state.

>>> import numpy as np
>>> round(float(gaussian_tail(np.array([1.959964]))[0]), 4)
0.05
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnwatch.consumer.state import Column, StateTable

__all__ = ["SEVERITIES", "ResidualScorer", "ScoreBatch", "ScorerConfig", "gaussian_tail", "severity_of"]

SEVERITIES = ("minor", "major", "critical")
_Z2_CLIP = 25.0  # one point moves the normaliser at most as much as a 5-sigma residual (of its own scale) would


@dataclass(frozen=True)
class ScorerConfig:
    threshold: float
    warmup_steps: int
    halflife_steps: float
    residual_std: np.ndarray  # [n_features], used when the model has no forecast_scale output
    uses_model_scale: bool


@dataclass(frozen=True)
class ScoreBatch:
    """Scores for one wave (one record per key), aligned with the rows passed in."""

    score: np.ndarray  # float64 [n]
    tail: np.ndarray  # float64 [n], 1 - score (kept for severity without cancellation)
    is_anomaly: np.ndarray  # bool [n]
    expected: np.ndarray  # float32 [n, F], NaN at a key's first step
    residual: np.ndarray  # float32 [n, F]


class ResidualScorer:
    """Vectorised residual scorer over state-table rows."""

    def __init__(self, config: ScorerConfig, n_features: int) -> None:
        self.config = config
        self.n_features = n_features
        self._alpha = 1.0 - 0.5 ** (1.0 / config.halflife_steps)

    def columns(self) -> list[Column]:
        f = (self.n_features,)
        return [
            Column.filled("s.forecast", f, np.float32, np.nan),
            Column.filled("s.scale", f, np.float32, np.nan),
            Column.filled("s.var", (), np.float64, 1.0),
            Column.filled("s.n", (), np.int64, 0),
        ]

    def score(self, table: StateTable, rows: np.ndarray, x: np.ndarray, steps: np.ndarray) -> ScoreBatch:
        """Score x (one row per key) against the forecasts remembered for ``rows``; update normalisers."""
        a = table.arrays
        expected = a["s.forecast"][rows]
        residual = x - expected
        scale = a["s.scale"][rows] if self.config.uses_model_scale else np.broadcast_to(
            self.config.residual_std, residual.shape)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, self.config.residual_std)
        z = (residual / scale).astype(np.float64)
        valid = np.isfinite(z).all(axis=1)
        z = np.where(valid[:, None], z, 0.0)
        var = a["s.var"][rows]
        zn2 = (z * z) / var[:, None]
        # the erfc approximation gives 1 + 3e-8 at z = 0: clipped, so a score is never below 0
        tail = np.clip(np.where(valid, chi2_tail(zn2.sum(axis=1), self.n_features), 1.0), 0.0, 1.0)
        score = 1.0 - tail
        is_anomaly = self.classify(score) & valid & (steps >= self.config.warmup_steps)
        self._learn(table, rows, z, valid & ~is_anomaly)
        return ScoreBatch(score, tail, is_anomaly, expected, residual.astype(np.float32))

    def classify(self, score: np.ndarray) -> np.ndarray:
        return score >= self.config.threshold

    def remember(self, table: StateTable, rows: np.ndarray, forecast: np.ndarray, scale: np.ndarray | None) -> None:
        """Store this step's forecast (and scale) to score the key's next point against."""
        table.arrays["s.forecast"][rows] = forecast
        if scale is not None:
            table.arrays["s.scale"][rows] = scale

    def _learn(self, table: StateTable, rows: np.ndarray, z: np.ndarray, learn: np.ndarray) -> None:
        rows, z = rows[learn], z[learn]
        if rows.size == 0:
            return
        n = table.arrays["s.n"][rows] + 1
        alpha = np.maximum(self._alpha, 1.0 / n)  # running mean first, EWMA once n > 1/alpha
        var = table.arrays["s.var"][rows]
        z2 = np.minimum((z * z).mean(axis=1), _Z2_CLIP * var)
        table.arrays["s.var"][rows] = np.maximum(var + alpha * (z2 - var), 1e-6)
        table.arrays["s.n"][rows] = n

    def severity(self, tail: np.ndarray) -> list[str]:
        return [severity_of(t, 1.0 - self.config.threshold) for t in tail.tolist()]


def severity_of(tail: float, tail_at_threshold: float) -> str:
    """minor at the threshold, major 100x rarer, critical 10,000x rarer than the threshold's tail."""
    if tail <= tail_at_threshold * 1e-4:
        return "critical"
    if tail <= tail_at_threshold * 1e-2:
        return "major"
    return "minor"


def gaussian_tail(z: np.ndarray) -> np.ndarray:
    """P(|N(0,1)| >= |z|) = erfc(|z|/sqrt 2), to ~1e-7 relative error, vectorised (no scipy at run time)."""
    return _erfc(np.abs(np.asarray(z, dtype=np.float64)) / np.sqrt(2.0))


def chi2_tail(d2: np.ndarray, k: int) -> np.ndarray:
    """P(chi2_k >= d2): exact for k=1, Wilson-Hilferty normal approximation for k > 1."""
    if k == 1:
        return gaussian_tail(np.sqrt(d2))
    c = 2.0 / (9.0 * k)
    wh = (np.cbrt(d2 / k) - (1.0 - c)) / np.sqrt(c)
    return 0.5 * _erfc(wh / np.sqrt(2.0))


def _erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function (Numerical Recipes erfcc, fractional error < 1.2e-7 everywhere)."""
    ax = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * ax)
    poly = -ax * ax - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    with np.errstate(under="ignore"):
        ans = t * np.exp(poly)
    return np.asarray(np.where(x >= 0, ans, 2.0 - ans))

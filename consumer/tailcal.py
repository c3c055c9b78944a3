"""Per-key tail calibration of a raw surprise: streaming peaks-over-threshold (SPOT).

Source: Siffer, Fouque, Termier, Largouet 2017, "Anomaly detection in streams with extreme value theory"
(KDD): the exceedances of a score over a high quantile ``u`` follow a generalised Pareto law, fitted on the
stream itself, so "how rare is this value *for this key*" needs no assumption about the score's body.

Here the raw score is already a surprise (``-log10`` of a parametric tail: Gaussian, chi-square ...), and the
law's parameters are tracked in O(1) state per key:

- ``u``: the key's ``1 - level`` quantile of the raw surprise, by stochastic approximation
  (``u += eta * beta * (1{raw > u} - level)``);
- ``m1``, ``m2``: EWMAs of the exceedances ``raw - u`` and of their squares, giving the Pareto shape and
  scale by the method of moments: ``xi = (1 - m1^2 / v) / 2``, ``sigma = m1 (1 + m1^2 / v) / 2`` with
  ``v = m2 - m1^2``; xi is kept in [0, max_shape] (0: exponential, exact for a calibrated surprise).
  ``max_shape`` is 0.25: the moment estimator needs finite fourth moments (xi < 1/4) for its error to be
  of the usual size, and is recommended for xi < 0.2 only (Hosking & Wallis 1987, *Parameter and quantile
  estimation for the generalized Pareto distribution*, Technometrics); a larger fitted shape comes from a
  few huge exceedances and would mute the key's next shocks (measured: NAB standard 43.1 -> 45.0 swept,
  35.3 -> 46.3 shipped; price corpus 71.6 -> 73.5 swept, 54.5 -> 59.1 shipped, with the cap at 0.25
  instead of 0.5).

The calibrated surprise above ``u`` is ``-log10(level) + log10(1 + xi x / sigma) / xi`` (``x / (sigma ln 10)``
at xi = 0), and ``raw * (-log10(level)) / u`` below it. The prior (``u = -log10(level)``, exponential
exceedances of mean ``1 / ln 10``) is the identity: a key starts from the parametric surprise and moves to
its own tail as it learns. Why it matters:
a forecaster's residuals are rarely Gaussian (periodic misfits at a square wave's edges, heavy tails of
returns), and a parametric tail then says 1e-60 every day for the same harmless pattern. Calibrated per key,
"1e-4" means "once in 10,000 of this key's points", comparable across keys and series, and one threshold
fits all. The prior counts as ``prior`` exceedances (a running mean until the ``halflife`` EWMA takes over),
so a young key is not thrown by its first few exceedances. It learns from every point scored after the key's
warm-up (a shock during warm-up does not teach it), unclipped: heavy tails (a forecaster's periodic misfits)
must be learnt fast. The price: one huge shock makes the key's tail heavier, so a second shock soon after
scores lower, for about ``halflife`` exceedances. A lasting change
raises ``u`` and the tail's scale within about ``halflife`` exceedances (``halflife / level`` points), so
the alarm of a regime change ends.
"""

from __future__ import annotations

import math

import numpy as np

from rnnwatch.consumer.state import Column, StateTable

__all__ = ["TailCalibrator"]

_LN10 = math.log(10.0)


class TailCalibrator:
    def __init__(self, prefix: str, level: float = 0.05, halflife: float = 100.0, eta: float = 0.05,
                 prior: float = 10.0, max_shape: float = 0.25) -> None:
        if not 0.0 < level < 0.5 or halflife <= 0 or eta <= 0:
            msg = f"tail calibration needs 0 < level < 0.5, halflife > 0, eta > 0; got {level}, {halflife}, {eta}"
            raise ValueError(msg)
        self.prefix, self.level, self.eta = prefix, level, eta
        self.u0 = -math.log10(level)
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.max_shape = max_shape  # heavier fitted tails are capped: a few early exceedances must not mute a key
        self.prior = prior  # the prior tail counts as this many exceedances (running mean until halflife takes over)

    def columns(self) -> list[Column]:
        m1 = 1.0 / _LN10
        return [Column.filled(f"{self.prefix}.u", (), np.float64, self.u0),
                Column.filled(f"{self.prefix}.m1", (), np.float64, m1, wide=True),  # moments of an unbounded
                Column.filled(f"{self.prefix}.m2", (), np.float64, 2.0 * m1 * m1, wide=True),  # excess: not float32
                Column.filled(f"{self.prefix}.k", (), np.float64, 0.0)]

    def calibrate(self, table: StateTable, rows: np.ndarray, raw: np.ndarray, learn: np.ndarray) -> np.ndarray:
        """Calibrated surprise of ``raw`` per key; the keys where ``learn`` is set update their tail."""
        a = table.arrays
        pu, p1, p2, pk = f"{self.prefix}.u", f"{self.prefix}.m1", f"{self.prefix}.m2", f"{self.prefix}.k"
        u, m1, m2, k = a[pu][rows], a[p1][rows], a[p2][rows], a[pk][rows]
        excess = raw - u
        above = excess > 0
        x = np.maximum(excess, 0.0)
        out = raw * (self.u0 / np.maximum(u, 1e-9))
        hits = np.flatnonzero(above)  # few: the Pareto tail is evaluated where it is used only (same numbers)
        if hits.size:
            out[hits] = self.u0 + self._pareto(m1[hits], m2[hits], x[hits])
        step = np.maximum(self.alpha, 1.0 / (k + 1.0 + self.prior)) * above
        new_m1, new_m2 = m1 + step * (x - m1), m2 + step * (x * x - m2)
        new_u = np.maximum(u + self.eta * m1 * (above - self.level), 1e-6)
        if learn.all():  # the common case: no masking needed
            a[pu][rows], a[p1][rows], a[p2][rows], a[pk][rows] = new_u, new_m1, new_m2, k + above
        else:
            a[pu][rows] = np.where(learn, new_u, u)
            a[p1][rows] = np.where(learn, new_m1, m1)
            a[p2][rows] = np.where(learn, new_m2, m2)
            a[pk][rows] = np.where(learn, k + above, k)
        return np.asarray(np.maximum(out, 0.0))

    def _pareto(self, m1: np.ndarray, m2: np.ndarray, x: np.ndarray) -> np.ndarray:
        """log10 tail of exceedances x under the moment-fitted generalised Pareto law (m1, m2)."""
        r = m1 * m1 / np.maximum(m2 - m1 * m1, 1e-12)
        xi = np.clip(0.5 * (1.0 - r), 0.0, self.max_shape)
        sigma = np.maximum(0.5 * m1 * (1.0 + r), 1e-9)
        safe_xi = np.maximum(xi, 1e-6)
        return np.asarray(np.where(xi > 1e-6, np.log10(1.0 + safe_xi * x / sigma) / safe_xi, x / (sigma * _LN10)))

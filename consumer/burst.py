"""A volatility burst: the key's last few residuals, together, far more variable than its history before them.

One-step detectors see a burst late: returns three to five times their usual size are, one at a time, often
ordinary (|3 x N(0, 1)| is below 3 half of the time), so a per-point test waits for the one large enough, and
an EWMA volatility (RiskMetrics) absorbs the burst while it waits. A *variance ratio* pools the evidence of
several steps: the squared standardized residuals of the last ``window`` steps, summed, against the key's
long-run residual variance ``v`` (an EWMA, half-life ``long_halflife``, of the squared residuals that have
*left* the window, so the window is never compared with itself). Under the null (residuals with the variance
``v``) the sum over ``v`` is a chi-square with ``window x features`` degrees of freedom, whose tail is the
surprise: on white noise a surprise of s comes once in 10**s steps (``tests/unit/test_burst.py``), and a
doubled standard deviation (4x the variance) is flagged at surprise 3 within 12 steps in 9 keys of 10, where a
one-step chi-square test at the same rate needs about twice as long.

A single shock stays in the window for ``window`` steps: those steps score high too, and the incident grouping
(``consumer.incidents``) makes them one incident with the shock, as it does a shock's reversal.

Regime changes end: ``v`` learns from every residual once it leaves the window (its influence clipped at
``clip`` times ``v``, as the Gaussian scorer clips), so after a lasting rise of the variance the ratio returns
to 1 as ``v`` catches up (``tests/unit/test_burst.py``: a tripled volatility stops alarming within 300 steps at
the default half-life of 60).

State per key (columns ``s.burst.*``): the window's squared residuals (oldest first), the long-run variance,
the steps seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnwatch.consumer.detector_protocol import Wave, alpha_of_halflife, detector_options
from rnnwatch.consumer.state import Column, StateTable
from rnnwatch.consumer.tails import chi2_surprise
from rnnwatch.consumer.waveops import row_sum

__all__ = ["Burst"]


class Burst:
    name: ClassVar[str] = "burst"
    DEFAULTS: ClassVar[dict[str, Any]] = {"window": 4.0, "long_halflife": 60.0, "clip": 25.0, "min_steps": 30.0}

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        o = detector_options(self.name, options, self.DEFAULTS)
        self.window = int(o["window"])
        if self.window < 2 or not float(o["long_halflife"]) > 0 or not float(o["clip"]) > 1:
            msg = f"scorer 'burst' needs window >= 2, long_halflife > 0 and clip > 1, got {dict(o)}"
            raise ValueError(msg)
        self.alpha, self.clip = alpha_of_halflife(float(o["long_halflife"])), float(o["clip"])
        self.min_steps, self.f = int(o["min_steps"]), n_features
        self.dof = self.window * n_features

    def columns(self) -> list[Column]:
        return [Column.filled("s.burst.ring", (self.window,), np.float64, 0.0),
                Column.filled("s.burst.var", (), np.float64, 1.0),
                Column.filled("s.burst.n", (), np.int64, 0, counter=True)]

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Wave) -> np.ndarray:
        a = table.arrays
        ring, var, n = a["s.burst.ring"].take(rows, axis=0), a["s.burst.var"][rows], a["s.burst.n"][rows]
        valid = wave.valid
        new_ring = np.concatenate([ring[:, 1:], row_sum(wave.z * wave.z)[:, None]], axis=1)
        n1 = n + valid
        ready = valid & (n1 >= max(self.min_steps, self.window + 1))
        out = np.where(ready, chi2_surprise(row_sum(new_ring) / var, self.dof), 0.0)
        # the step leaving the window teaches the long-run variance (not before: the window is not its own baseline)
        leaving = ring[:, 0] / self.f
        alpha = np.maximum(self.alpha, 1.0 / np.maximum(n1 - self.window, 1))  # running mean first, then EWMA
        cap = np.where(alpha > self.alpha, np.inf, self.clip * var)  # clipped once the mean is an EWMA
        new_var = np.maximum(var + alpha * (np.minimum(leaving, cap) - var), 1e-6)
        a["s.burst.var"][rows] = np.where(valid & (n >= self.window), new_var, var)
        a["s.burst.ring"][rows] = np.where(valid[:, None], new_ring, ring)
        a["s.burst.n"][rows] = n1
        return np.asarray(out)

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
  The price of the cap: a heavy tail's far end is under-priced. The surprise of a Student-t residual with
  d degrees of freedom has a Pareto tail of shape 2/d (0.33-0.67 for d = 3-6, as daily returns have), and
  the moment estimator cannot exceed 1/2 anyway (v > 0) and falls short of the truth on a few hundred
  exceedances, so such a key alarms at up to twice the rate its surprise says (label-free price walks, 40
  keys x 4,250 rows never seen, the price default scorer at 3: Gaussian returns 0.71e-3 alarm rows per row,
  Student-t 1.58e-3; README "Scorers"). Even an ideal batch maximum-likelihood fit on a key's own 750 /
  2,000 / 5,000 rows misses: 1.6e-3 / 1.35e-3 / 1.1-1.2e-3 at a fitted 1e-3 (Student-t, d = 3 and 6; the rate
  of an estimated quantile is convex in its error). Measured with the cap at 0.5 (a larger cap is the same:
  the estimate stays below 1/2): the price corpus' false alarms 1.16-1.53e-3 -> 0.73-0.79e-3 (seeds 0-2), but
  NAB swept 77.9 -> 71.6, prices 74.4 / 73.1 / 73.7 -> 74.4 / 71.5 / 70.3; so the cap stays, and README says
  what the rate is for heavy tails.

The calibrated surprise above ``u`` is ``-log10(level) + log10(1 + xi x / sigma) / xi`` (``x / (sigma ln 10)``
at xi = 0), and ``raw * (-log10(level)) / u`` below it. The prior (``u = -log10(level)``, exponential
exceedances of mean ``1 / ln 10``) is the identity: a key starts from the parametric surprise and moves to
its own tail as it learns. The moments are stored at half width (float32), so the exceedance they learn is
clipped to ``MAX_EXCESS`` (1e15 decades, far beyond any finite surprise) and its square stays finite. Why it
matters:
a forecaster's residuals are rarely Gaussian (periodic misfits at a square wave's edges, heavy tails of
returns), and a parametric tail then says 1e-60 every day for the same harmless pattern. Calibrated per key,
"1e-4" means "once in 10,000 of this key's points" (for a heavy-tailed key up to twice as often at 1e-3,
a single detector's up to five times at 1e-4, above), comparable across keys and series, and one threshold
fits all. The prior counts as ``prior`` exceedances (a running mean until the ``halflife`` EWMA takes over),
so a young key is not thrown by its first few exceedances. It learns from every point scored after the key's
warm-up (a shock during warm-up does not teach it), unclipped: heavy tails (a forecaster's periodic misfits)
must be learnt fast. The price: one huge shock makes the key's tail heavier, so a second shock soon after
scores lower, for about ``halflife`` exceedances. A lasting change
raises ``u`` and the tail's scale within about ``halflife`` exceedances (``halflife / level`` points), so
the alarm of a regime change ends.

``halflife`` is 200 exceedances (4,000 points at the default level), not 100: the fitted shape is clipped at 0
from below, so the moments' estimation noise only ever makes a key's tail heavier and mutes its next shock;
a longer memory halves that noise's variance (an already calibrated stream scores a raw 5 at 4.45 or more on
nine keys in ten, 4.26 with 100; ``tests/unit/test_scoring.py``). NAB, 18 series, trainer seeds 0 / 1 / 2,
swept standard / low FP / low FN 75.5 / 65.4 / 82.3, 74.2 / 63.2 / 81.5, 73.8 / 61.1 / 81.2 ->
79.7 / 71.5 / 85.2, 79.3 / 70.6 / 84.9, 75.5 / 66.2 / 82.3 (150 to 400 all within a point of 200; 50: 58 low FP);
the price-shock corpus: swept unchanged (its keys mostly are in the prior's running mean either way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from rnnwatch.consumer.state import Column, Narrowed, StateTable
from rnnwatch.consumer.waveops import every

__all__ = ["MAX_EXCESS", "TailCalibrator", "calibrate_all"]

_LN10 = math.log(10.0)
# The largest exceedance (in decades of surprise) the moments learn. m1, m2 are stored as float32 (4 bytes per
# key each instead of 8), whose range ends at 3.4e38: a clipped excess keeps m2 (its square's EWMA) finite. No
# real surprise comes near it (a float64 tail ends at 1e-308, a surprise of 308); only an overflowing residual
# (an infinite surprise) is clipped, and it then still teaches the key "far above u".
MAX_EXCESS = 1e15


class TailCalibrator:
    def __init__(self, prefix: str, level: float = 0.05, halflife: float = 200.0, eta: float = 0.05,
                 prior: float = 10.0, max_shape: float = 0.25) -> None:
        if not 0.0 < level < 0.5 or halflife <= 0 or eta <= 0:
            msg = f"tail calibration needs 0 < level < 0.5, halflife > 0, eta > 0; got {level}, {halflife}, {eta}"
            raise ValueError(msg)
        self.prefix, self.level, self.eta = prefix, level, eta
        self.u0 = -math.log10(level)
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.max_shape = max_shape  # heavier fitted tails are capped: a few early exceedances must not mute a key
        self.prior = prior  # the prior tail counts as this many exceedances (running mean until halflife takes over)
        self._names = (f"{prefix}.u", f"{prefix}.m1", f"{prefix}.m2", f"{prefix}.k")
        self.params = (self.level, self.eta, self.u0, self.alpha, self.max_shape, self.prior)  # calibrate_all

    def columns(self) -> list[Column]:
        m1 = 1.0 / _LN10
        return [Column.filled(f"{self.prefix}.u", (), np.float64, self.u0),
                Column.filled(f"{self.prefix}.m1", (), np.float64, m1),  # float32: the excess they learn is
                Column.filled(f"{self.prefix}.m2", (), np.float64, 2.0 * m1 * m1),  # clipped to MAX_EXCESS
                Column.filled(f"{self.prefix}.k", (), np.float64, 0.0)]

    def calibrate(self, table: StateTable, rows: np.ndarray, raw: np.ndarray, learn: np.ndarray) -> np.ndarray:
        """Calibrated surprise of ``raw`` per key; the keys where ``learn`` is set update their tail.

        One detector's; the scorer calibrates a wave's detectors together (:func:`calibrate_all`, the one
        implementation). Written for few numpy calls: the Pareto tail and the moment updates are computed for the
        keys above ``u`` only (about ``level`` of them). For the others the
        step is zero and m1, m2, k stay as they are, the same numbers as updating every key with a zero step
        (a NaN raw surprise, which no detector returns, would have made m1 and m2 NaN; it now leaves them).
        """
        return calibrate_all([self], table, rows, [raw], learn)[0]

    def _pareto(self, m1: np.ndarray, m2: np.ndarray, x: np.ndarray) -> np.ndarray:
        """log10 tail of exceedances x under the moment-fitted generalised Pareto law (m1, m2)."""
        m1_sq = m1 * m1
        r = m1_sq / np.maximum(m2 - m1_sq, 1e-12)
        xi = np.minimum(self.max_shape, np.maximum(0.0, 0.5 * (1.0 - r)))  # np.clip's bits (-0.0 too), half its cost
        sigma = np.maximum(0.5 * m1 * (1.0 + r), 1e-9)
        safe_xi = np.maximum(xi, 1e-6)
        return np.asarray(np.where(xi > 1e-6, np.log10(1.0 + safe_xi * x / sigma) / safe_xi, x / (sigma * _LN10)))


def calibrate_all(calibrators: Sequence[TailCalibrator], table: StateTable, rows: np.ndarray,
                  raws: Sequence[np.ndarray], learn: np.ndarray) -> list[np.ndarray]:
    """``[c.calibrate(table, rows, raw, learn) for c, raw in ...]`` for several detectors' surprises of one wave.

    A wave calibrates every detector's surprise (three with the default scorer), and each call is a few dozen
    numpy operations whose fixed cost, not their work, is most of a wave of a few hundred keys. Calibrators with
    the same options are calibrated together: their state is gathered into [detector, key] arrays, the arithmetic
    runs once over them, and the state is scattered back per detector. Each element goes through the same
    operations as for one calibrator alone, so the numbers are the same, bit for bit. Calibrators with different
    options get a pass each.
    """
    if not calibrators:  # a scorer none of whose detectors has a tail
        return []
    if len({c.params for c in calibrators}) > 1:
        return [calibrate_all([c], table, rows, [raw], learn)[0] for c, raw in zip(calibrators, raws, strict=True)]
    c = calibrators[0]
    a = table.arrays
    cols = [[a[name] for name in cal._names] for cal in calibrators]
    u = np.stack([col[0].take(rows) for col in cols])
    m1 = np.stack([col[1].take(rows) for col in cols])
    raw = np.stack(raws)
    excess = raw - u
    out = raw * (c.u0 / np.maximum(u, 1e-9))
    new_u = u + (c.eta * m1) * -c.level
    det, key = (excess > 0).nonzero()  # row-major: each detector's hits are one run of ``det``
    if det.size:
        _exceed_all(c, cols, rows, det, key, excess, m1, u, learn, out, new_u)
    new_u = np.maximum(new_u, 1e-6)
    all_learn = every(learn)
    for j, col in enumerate(cols):
        col[0][rows] = new_u[j] if all_learn else np.where(learn, new_u[j], u[j])
    return list(np.maximum(out, 0.0))


def _exceed_all(c: TailCalibrator, cols: list[list[np.ndarray | Narrowed]], rows: np.ndarray, det: np.ndarray,
                key: np.ndarray, excess: np.ndarray, m1: np.ndarray, u: np.ndarray, learn: np.ndarray,
                out: np.ndarray, new_u: np.ndarray) -> None:
    """Keys whose raw surprise exceeds u (``det``, ``key``: the detector and the wave's key of each): their Pareto
    surprise into ``out``, their u up, and their moments learn."""
    hit_rows = rows[key]
    bounds = np.searchsorted(det, np.arange(len(cols) + 1)).tolist()
    spans = [(j, lo, hi) for j, (lo, hi) in enumerate(pairwise(bounds)) if hi > lo]
    m2 = np.concatenate([cols[j][2][hit_rows[lo:hi]] for j, lo, hi in spans])
    k = np.concatenate([cols[j][3][hit_rows[lo:hi]] for j, lo, hi in spans])
    x, m1h, uh = excess[det, key], m1[det, key], u[det, key]
    out[det, key] = c.u0 + c._pareto(m1h, m2, x)
    new_u[det, key] = uh + (c.eta * m1h) * (1.0 - c.level)
    step = np.maximum(c.alpha, 1.0 / (k + 1.0 + c.prior))
    learn_h = learn[key]
    all_learn = every(learn_h)
    x = np.minimum(x, MAX_EXCESS)
    for i, new, old in ((1, m1h + step * (x - m1h), m1h), (2, m2 + step * (x * x - m2), m2), (3, k + 1.0, k)):
        value = new if all_learn else np.where(learn_h, new, old)
        for j, lo, hi in spans:
            cols[j][i][hit_rows[lo:hi]] = value[lo:hi]

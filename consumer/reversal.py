"""A shock undone at once: a large move and a large move back, each over one step or two (a spike, a bad tick,
a flash crash).

A one-step detector prices a large residual against the key's own fat tail, where a 7-sigma day of a stock is
not rare enough to alarm on. What is rare is the *pair*: a large move followed at once by a large move back.
Under the null the standardized residuals ``u`` of two steps are independent, so both exceeding ``m`` in size
with opposite signs has probability ``P(|N| > m)^2 / 2``: the surprise of the pair is twice the Gaussian
surprise of the smaller of the two sizes, plus ``log10 2``. A spike and its return score at the return (two
8-sigma moves: about 1e-30); a level shift (a move that stays) scores only as its next step's own size back (a
2-sigma step back is a pair of 2-sigma moves, surprise ~3, which the incident of the shift takes in); a
volatility cluster's alternation of mid-sized moves is priced by ``v``. On white noise a surprise of s comes
about once in 10**s steps (1 to 2.5 times that: ``v`` is an estimate; ``tests/unit/test_reversal.py``), and the
scorer calibrates it to the key's own tail like every detector.

A move made, or undone, over two steps pairs too: the sum of two steps' ``u`` over sqrt(2) is a standard normal
under the null, as one step's ``u`` is, so each step tests three pairs, (u[t-1], u[t]) (1-1), ((u[t-2] + u[t-1]) /
sqrt 2, u[t]) (2-1) and (u[t-2], (u[t-1] + u[t]) / sqrt 2) (1-2), and their largest pays ``log10 3`` (Bonferroni).
A flash crash made in two days of 4-6 sigma each and recovered over the next days, which no one-step pair sees
(the variance has learnt the fall by the time the recovery comes), scores as its two-step sums
(``tests/unit/test_reversal.py``). Price-shock corpus, swept standard, seeds 0 / 1 / 2 of ``make price-corpus``:
72.2 / 72.9 / 72.7 with the 1-1 pair only, 74.4 / 73.0 / 73.4 with the three (mean 72.6 -> 73.6; also 2-2:
73.6, 1-1 and 2-1: 71.8, 1-1 and 1-2: 73.8); NAB's 18 series: 72.8 / 60.2 / 80.5 -> 73.0 / 59.4 / 80.7.

Why it is in the log-return default (``export.calibrate``): on the price-shock corpus it lifts spikes, flash
crashes and volatility bursts (whose days alternate in sign) far above the fat tail a one-step test must
accept, so the shipped decisions score 71.2 instead of 59.1 (swept 72.2 vs 72.6), and on NAB's 18 series
(5 of them log-return series) the swept standard score rises from 71.1 to 72.8 (see the README's evaluation;
both numbers with the 1-1 pair only).

``u = z / sqrt(v)``: ``v`` an EWMA of z^2 (half-life ``halflife``, 11 steps as RiskMetrics' daily lambda 0.94)
learnt one step late, so a shock does not shrink its own reversal's size; its influence is clipped at
``clip`` times ``v``. It learns from every point, so regime changes end as the volatility scorer's do.
Several features: each feature's pair, the largest less ``log10(features)`` (Bonferroni).

State per key (columns ``s.reversal.*``): per feature the previous two steps' ``u`` (float16, 2 bytes each: a pair's
surprise moves by about 0.02 at 5 sigma; clipped to +-1e4, far beyond any finite pair's doubt), the previous step's
``z^2`` and ``v``; the steps seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnwatch.consumer.detector_protocol import Wave, alpha_of_halflife, detector_options
from rnnwatch.consumer.state import Column, StateTable
from rnnwatch.consumer.tails import gaussian_surprise

__all__ = ["Reversal", "pair_surprise"]

_LOG10_2 = float(np.log10(2.0))
_LOG10_PAIRS = float(np.log10(3.0))  # Bonferroni over the three pairs a step completes
_SQRT_HALF = float(np.sqrt(0.5))
_U_MAX = 1e4


def _half(u: np.ndarray) -> np.ndarray:
    """u as stored: float16, clipped to +-``_U_MAX`` (within float16's range; a pair that large is certain anyway)."""
    return np.asarray(np.clip(u, -_U_MAX, _U_MAX).astype(np.float16))


def _wide(u: np.ndarray) -> np.ndarray:
    return np.asarray(u.astype(np.float64))


def pair_surprise(u2: np.ndarray, u1: np.ndarray, u0: np.ndarray) -> np.ndarray:
    """The largest pair surprise of a move and its return, each over one step or two (u2, u1, u0: the standardized
    residuals two steps ago, one step ago and now, [..., F]), the features' largest; before any Bonferroni.

    A move over two steps is their sum over sqrt(2) (a standard normal under the null, as one step's u is): a
    flash crash made in two days, or undone in two, pairs as a spike does in one. Three pairs are tested (1-1,
    2-1, 1-2), so their largest pays ``log10 3``.
    """
    s01 = (u1 + u0) * _SQRT_HALF
    s12 = (u2 + u1) * _SQRT_HALF
    # the three pairs stacked on a leading axis: one pass of each operation (the Gaussian tail is most of the work)
    # instead of three; every element goes through the same operations, so the numbers are those pair by pair
    before, after = np.stack((u1, s12, u2)), np.stack((u0, u0, s01))
    size = np.minimum(np.abs(before), np.abs(after))
    pairs = np.where((before * after) < 0, 2.0 * gaussian_surprise(size) + _LOG10_2, 0.0)
    best = np.maximum(np.maximum(np.maximum(np.zeros(np.shape(u0)), pairs[0]), pairs[1]), pairs[2])
    return np.asarray(best.max(axis=-1) - _LOG10_PAIRS)


class Reversal:
    name: ClassVar[str] = "reversal"
    DEFAULTS: ClassVar[dict[str, Any]] = {"halflife": 11.0, "clip": 25.0, "min_steps": 30.0}

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        o = detector_options(self.name, options, self.DEFAULTS)
        if not float(o["halflife"]) > 0 or not float(o["clip"]) > 1:
            msg = f"scorer 'reversal' needs halflife > 0 and clip > 1, got {o['halflife']}, {o['clip']}"
            raise ValueError(msg)
        self.alpha, self.clip = alpha_of_halflife(float(o["halflife"])), float(o["clip"])
        self.min_steps, self.f = int(o["min_steps"]), n_features
        self.bonferroni = float(np.log10(n_features))

    def block_kernel(self) -> ReversalKernel:
        """Its form for a block of waves (``consumer.blockscore``)."""
        return ReversalKernel(self)

    def columns(self) -> list[Column]:
        f = (self.f,)
        # u one and two steps back at half precision (float16: 4 B for both, as one float32 before them)
        return [Column.filled("s.reversal.u", f, np.float16, 0.0),
                Column.filled("s.reversal.u2", f, np.float16, 0.0),
                Column.filled("s.reversal.z2", f, np.float64, 0.0),
                Column.filled("s.reversal.var", f, np.float64, 1.0),
                Column.filled("s.reversal.n", (), np.int64, 0, counter=True)]

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Wave) -> np.ndarray:
        a = table.arrays
        prev_u, prev_z2 = _wide(a["s.reversal.u"].take(rows, axis=0)), a["s.reversal.z2"].take(rows, axis=0)
        prev_u2 = _wide(a["s.reversal.u2"].take(rows, axis=0))
        var, n = a["s.reversal.var"].take(rows, axis=0), a["s.reversal.n"][rows]
        valid = wave.valid
        z = wave.z
        u = z / np.sqrt(var)  # v has learnt up to the step before the previous one
        pair = pair_surprise(prev_u2, prev_u, u) - self.bonferroni
        ready = valid & (n >= self.min_steps)
        out = np.where(ready, np.maximum(pair, 0.0), 0.0)
        # the previous step's z^2 teaches v now (one step late: a shock does not shrink its own reversal)
        n1 = n + valid
        alpha = np.maximum(self.alpha, 1.0 / np.maximum(n, 1))[:, None]  # running mean first, then EWMA
        cap = np.where(alpha > self.alpha, np.inf, self.clip * var)
        new_var = np.maximum(var + alpha * (np.minimum(prev_z2, cap) - var), 1e-12)
        learn = (valid & (n >= 1))[:, None]
        keep = valid[:, None]
        a["s.reversal.var"][rows] = np.where(learn, new_var, var)
        a["s.reversal.u2"][rows] = np.where(keep, prev_u, prev_u2)
        a["s.reversal.u"][rows] = np.where(keep, _half(u), prev_u)
        a["s.reversal.z2"][rows] = np.where(keep, z * z, prev_z2)
        a["s.reversal.n"][rows] = n1
        return np.asarray(out)


class ReversalKernel:
    """The block form of :class:`Reversal` (``consumer.blockscore``): the variance recursion per key and feature in
    Python floats, rounded to the stored float32 after every step as the state table rounds it between waves; the
    pair surprises over the whole block at once. Bit for bit the wave path's numbers (``tests/unit/test_blocks.py``)."""

    def __init__(self, d: Reversal) -> None:
        self.d = d

    def prepare(self, table: StateTable, rows: np.ndarray, b: Any) -> Any:
        return True

    def run(self, table: StateTable, rows: np.ndarray, b: Any) -> np.ndarray:
        from array import array

        d, a = self.d, table.arrays
        z = b.z  # [T, K, F]
        T, K, F = z.shape
        buf = array("f", [0.0])
        n0 = a["s.reversal.n"][rows]
        var0 = a["s.reversal.var"].take(rows, axis=0).reshape(K * F).tolist()
        z2prev0 = a["s.reversal.z2"].take(rows, axis=0).reshape(K * F).tolist()
        z2 = (z * z).reshape(T, K * F)
        z2s = z2.astype(np.float32).astype(np.float64)  # z^2 as stored between waves
        var_used = np.empty((K * F, T))
        final_var = []
        alpha0, clip = d.alpha, d.clip
        n0l = n0.tolist()
        for c in range(K * F):
            var, prev, n, vu = var0[c], z2prev0[c], n0l[c // F], var_used[c]
            z2c = z2s[:, c].tolist()
            for t in range(T):
                vu[t] = var
                if n >= 1:
                    inv = 1.0 / (n if n > 1 else 1)
                    alpha = inv if inv > alpha0 else alpha0
                    cap = math.inf if alpha > alpha0 else clip * var
                    v = var + alpha * ((prev if prev < cap else cap) - var)
                    buf[0] = v if v > 1e-12 else 1e-12
                    var = buf[0]
                prev = z2c[t]
                n += 1
            final_var.append(var)
        u = z / np.sqrt(var_used.reshape(K, F, T).transpose(2, 0, 1))
        u_prev = np.concatenate([_wide(a["s.reversal.u"].take(rows, axis=0))[None],
                                 _wide(_half(u[:-1]))])  # as stored between waves
        u_prev2 = np.concatenate([_wide(a["s.reversal.u2"].take(rows, axis=0))[None], u_prev[:-1]])
        pair = pair_surprise(u_prev2, u_prev, u) - d.bonferroni
        ready = (n0[None, :] + np.arange(T)[:, None]) >= d.min_steps
        out = np.where(ready, np.maximum(pair, 0.0), 0.0)
        a["s.reversal.var"][rows] = np.array(final_var).reshape(K, F)
        a["s.reversal.u2"][rows] = u_prev[-1]
        a["s.reversal.u"][rows] = _half(u[-1])
        a["s.reversal.z2"][rows] = z2[-1].reshape(K, F)
        a["s.reversal.n"][rows] = n0 + T
        return np.asarray(out)

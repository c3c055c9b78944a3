"""A persistent small shift of the residual's mean: Page's two-sided CUSUM on the standardized residual.

A drift or a shift of half a sigma is invisible to a one-step test (each residual is ordinary) but adds up:
Page's cumulative sums ``S+ <- max(0, S+ + u - k)``, ``S- <- max(0, S- - u - k)`` of ``u = (z - m) / sqrt(v)``
(m, v: the key's long-run EWMA mean and variance of the residual, half-life ``long_halflife``; ``k`` the
reference value, half the shift to detect, ``shift / 2``) grow by about ``|shift| - k`` per step under a shift
and hover near 0 without one.

Surprise = ``log10`` of the in-control *average run length* to reach S (Siegmund's approximation for Gaussian
steps, two sides: ``ARL0(h) = (exp(2 k b) - 2 k b - 1) / (2 k^2) / 2`` with ``b = h + 1.166``; Siegmund 1985,
*Sequential Analysis*, and Montgomery, *Introduction to Statistical Quality Control*, §9.1): a CUSUM at h is
as rare as a point once in ARL0(h) steps, the same "1 in N rows" every detector's surprise means.
**Reset rule** (Page 1954): a side whose surprise reaches ``reset`` (default 3: an in-control false-alarm run
length of 1,000 steps) restarts from 0 at the next step, so a lasting shift alarms once per climb, not
every step; the long-run mean keeps learning from every point, so after a lasting shift ``m`` follows it and the
sums stop climbing once the shift left is below ``k``: the alarms end within about
``long_halflife * log2(|shift| / k)`` steps (with the defaults a lasting shift of up to 3 sigma stops alarming
within 1,000 steps, ``tests/unit/test_cusum.py``). On white noise the reset level is reached about once per
1,000 steps, as documented (the estimated mean and variance add little), and a shift of 1 (2) sigma is flagged
within 20 (8) steps in 9 keys of 10.
It is not in a default: on daily prices the drifts it is for (about 0.2 sigma a day for 40-60 days) are
buried in the random walk's own noise, and on NAB and the price-shock corpus it adds false alarms
(see the README's evaluation).

State per key (columns ``s.cusum.*``): the two sums, the long-run mean and variance, the steps seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnwatch.consumer.detector_protocol import Wave, alpha_of_halflife, detector_options
from rnnwatch.consumer.state import Column, StateTable
from rnnwatch.consumer.waveops import row_sum

__all__ = ["Cusum", "arl0_surprise"]

_SIEGMUND = 1.166  # Siegmund's correction of the boundary for the overshoot of a Gaussian random walk
_Z2_CLIP = 25.0  # as the Gaussian scorer: one point moves the variance at most as a 5-sigma point would
_U_CLIP = 5.0  # a single point moves a sum at most 5 sigmas: a shock is the one-step detectors' news


def arl0_surprise(h: np.ndarray, k: float) -> np.ndarray:
    """log10 of the two-sided CUSUM's in-control average run length to reach h (Siegmund), >= 0."""
    b = 2.0 * k * (np.maximum(h, 0.0) + _SIEGMUND)
    arl = (np.expm1(np.minimum(b, 700.0)) - b) / (2.0 * k * k) / 2.0
    return np.asarray(np.maximum(np.log10(np.maximum(arl, 1.0)), 0.0))


class Cusum:
    name: ClassVar[str] = "cusum"
    DEFAULTS: ClassVar[dict[str, Any]] = {"shift": 0.5, "long_halflife": 250.0, "reset": 3.0, "min_steps": 30.0}

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        o = detector_options(self.name, options, self.DEFAULTS)
        if not float(o["shift"]) > 0 or not float(o["long_halflife"]) > 0 or not float(o["reset"]) > 0:
            msg = f"scorer 'cusum' needs shift, long_halflife and reset > 0, got {o}"
            raise ValueError(msg)
        self.k = float(o["shift"]) / 2.0
        self.alpha, self.reset = alpha_of_halflife(float(o["long_halflife"])), float(o["reset"])
        self.min_steps, self.f = int(o["min_steps"]), n_features

    def columns(self) -> list[Column]:
        # S+ and S-; the long-run mean and variance of the residual (1: the model's scale, until learnt)
        return [Column.filled("s.cusum.sums", (2,), np.float64, 0.0),
                Column.filled("s.cusum.mean", (), np.float64, 0.0),
                Column.filled("s.cusum.var", (), np.float64, 1.0),
                Column.filled("s.cusum.n", (), np.int64, 0, counter=True)]

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Wave) -> np.ndarray:
        a = table.arrays
        sums, n = a["s.cusum.sums"].take(rows, axis=0), a["s.cusum.n"][rows]
        up, down, mean, var = sums[:, 0], sums[:, 1], a["s.cusum.mean"][rows], a["s.cusum.var"][rows]
        valid = wave.valid
        y = row_sum(wave.z) / np.sqrt(self.f)  # the features' mean residual, in units of one feature's scale
        warm = n >= self.min_steps
        sd = np.sqrt(np.maximum(var, 1e-12))
        u = np.clip((y - mean) / sd, -_U_CLIP, _U_CLIP)
        # a side that reached the reset level last step restarts (Page): one alarm per climb
        up = np.where(arl0_surprise(up, self.k) >= self.reset, 0.0, up)
        down = np.where(arl0_surprise(down, self.k) >= self.reset, 0.0, down)
        new_up = np.where(warm, np.maximum(up + u - self.k, 0.0), 0.0)
        new_down = np.where(warm, np.maximum(down - u - self.k, 0.0), 0.0)
        out = np.where(valid & warm, arl0_surprise(np.maximum(new_up, new_down), self.k), 0.0)
        n1 = n + valid
        alpha = np.maximum(self.alpha, 1.0 / np.maximum(n1, 1))  # running moments first, EWMA once n > 1/alpha
        d = y - mean
        new_mean = mean + alpha * np.clip(d, -_U_CLIP * sd, _U_CLIP * sd)
        new_var = np.maximum((1.0 - alpha) * (var + alpha * np.minimum(d * d, _Z2_CLIP * var)), 1e-12)
        a["s.cusum.sums"][rows] = np.where(valid[:, None], np.stack([new_up, new_down], axis=1), sums)
        a["s.cusum.mean"][rows] = np.where(valid, new_mean, mean)
        a["s.cusum.var"][rows] = np.where(valid, new_var, var)
        a["s.cusum.n"][rows] = n1
        return np.asarray(out)

"""Telemanom's nonparametric dynamic threshold, per key, vectorised over a wave.

Source: Hundman, Constantinou, Laporte, Colwell, Soderstrom 2018, "Detecting Spacecraft Anomalies Using
LSTMs and Nonparametric Dynamic Thresholding" (KDD). Over a window of the key's last ``window`` smoothed
errors ``e`` (EWMA of |z|, ``smoothing`` half-life), the threshold ``eps = mean + k std`` takes the k in
``2.5 .. 10`` that best separates the window: it maximises ``(dmean/mean + dstd/std) / (n_above +
n_sequences^2)``, the relative drop of the window's mean and std when the points above eps are removed,
per point (and squared run) removed. *Pruning*: a point above eps is kept only if it exceeds the largest
error below eps by at least ``prune`` (0.13) of itself, so the ordinary top of the distribution is not
flagged. The surprise of a kept point is the one-sided Gaussian tail of ``(e - mean) / std``; else 0.

State per key: the window (a ring of ``window`` floats), its write position, the smoothed error. It learns
from every point (the window slides), so after a regime change the window holds only the new regime
after ``window`` steps: the alarm ends within ``window`` steps. Cost grows with the window: O(window x 16)
per key per step, heavier than the other scorers (not in any default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnwatch.consumer.detector_protocol import alpha_of_halflife, detector_options
from rnnwatch.consumer.state import Column, StateTable
from rnnwatch.consumer.tails import upper_surprise

__all__ = ["Telemanom"]

_KS = np.arange(2.5, 10.01, 0.5)


class Telemanom:
    name: ClassVar[str] = "telemanom"
    DEFAULTS: ClassVar[dict[str, Any]] = {"window": 100.0, "smoothing": 5.0, "prune": 0.13, "min_steps": 30.0}

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        o = detector_options(self.name, options, self.DEFAULTS)
        self.window, self.prune, self.min_steps = int(o["window"]), float(o["prune"]), int(o["min_steps"])
        if self.window < 10:
            msg = f"scorer 'telemanom' window must be >= 10, got {self.window}"
            raise ValueError(msg)
        self.alpha = alpha_of_halflife(float(o["smoothing"]))

    def columns(self) -> list[Column]:
        return [Column.filled("s.telemanom.errors", (self.window,), np.float64, np.nan),
                Column.filled("s.telemanom.smooth", (), np.float64, np.nan),
                Column.filled("s.telemanom.n", (), np.int64, 0, counter=True)]

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Any) -> np.ndarray:
        a = table.arrays
        win, smooth, n = a["s.telemanom.errors"][rows], a["s.telemanom.smooth"][rows], a["s.telemanom.n"][rows]
        err = np.sqrt((wave.z * wave.z).mean(axis=1))
        e = np.where(np.isnan(smooth), err, smooth + self.alpha * (err - smooth))
        e = np.where(wave.valid, e, smooth)
        pos = n % self.window
        idx = np.arange(len(rows))
        win[idx, pos] = np.where(wave.valid, e, win[idx, pos])
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self._score(win, e) * (wave.valid & (n >= self.min_steps))
        a["s.telemanom.errors"][rows] = win
        a["s.telemanom.smooth"][rows] = e
        a["s.telemanom.n"][rows] = n + wave.valid
        return np.asarray(np.nan_to_num(out, nan=0.0))

    def _score(self, win: np.ndarray, e: np.ndarray) -> np.ndarray:
        filled = np.isfinite(win)
        w = np.where(filled, win, 0.0)
        cnt = np.maximum(filled.sum(axis=1), 1)
        mean = w.sum(axis=1) / cnt
        std = np.sqrt(np.maximum((np.where(filled, (w - mean[:, None]) ** 2, 0.0)).sum(axis=1) / cnt, 1e-18))
        eps = mean[:, None] + _KS[None, :] * std[:, None]  # [n, K]
        above = filled[:, None, :] & (w[:, None, :] > eps[:, :, None])  # [n, K, W]
        below = filled[:, None, :] & ~above
        nb = np.maximum(below.sum(axis=2), 1)
        mb = np.where(below, w[:, None, :], 0.0).sum(axis=2) / nb
        sb = np.sqrt(np.maximum(np.where(below, (w[:, None, :] - mb[:, :, None]) ** 2, 0.0).sum(axis=2) / nb, 0.0))
        n_above = above.sum(axis=2)
        runs = (above[:, :, 1:] & ~above[:, :, :-1]).sum(axis=2) + above[:, :, 0]
        gain = ((mean[:, None] - mb) / np.maximum(mean[:, None], 1e-12) + (std[:, None] - sb) / std[:, None])
        objective = np.where(n_above > 0, gain / (n_above + runs * runs), -np.inf)
        best = np.argmax(objective, axis=1)
        rows = np.arange(len(e))
        threshold = np.where(np.isfinite(objective[rows, best]), eps[rows, best], np.inf)
        top_below = np.where(below[rows, best], w, -np.inf).max(axis=1)
        kept = (e > threshold) & ((e - top_below) >= self.prune * e)
        return np.where(kept, upper_surprise((e - mean) / std), 0.0)

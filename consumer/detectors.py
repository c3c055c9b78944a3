"""The scorers a :class:`~rnnwatch.consumer.scoring.ResidualScorer` combines (DESIGN §4).

Each detector turns one *wave* (at most one record per key, see the runner) into a surprise per key,
``-log10`` of a tail probability, and updates its per-key state, which lives in state-table columns named
``s.<detector>.*`` so it is checkpointed and restored with the model's state. All of them are vectorised over
the wave (no Python loop per key) and **keep learning from every point**, flagged or not, so a regime change
(a new level, a lasting volatility change) ends an alarm in a bounded number of steps (documented per
detector) instead of freezing a key in alarm.

============  ======================================================  =================================================
name          catches                                                 source
============  ======================================================  =================================================
gaussian      a forecast residual far outside the key's own residual  the classic z-score of a forecaster's residual
              scale (spikes, dips, sudden breaks)                     (per-key EWMA variance normaliser)
likelihood    a run of residuals larger than the key's recent norm    Ahmad, Lavin, Purdy, Agha 2017, "Unsupervised
              (sustained change of behaviour)                         real-time anomaly detection for streaming data"
                                                                      (Numenta anomaly likelihood), O(1) EWMA form
novelty       a value outside everything the key has seen recently    record/extreme-value surprise: a new extreme is
              (new level, new extreme) that a forecaster adapts to    as surprising as the key's own rate of records
volatility    a return far outside its EWMA (RiskMetrics) or          J.P. Morgan/Reuters 1996, RiskMetrics Technical
              GARCH(1,1) volatility (price shocks, flash crashes)     Document; Bollerslev 1986 (GARCH)
telemanom     a smoothed residual above a nonparametric dynamic       Hundman et al. 2018, "Detecting spacecraft
              threshold, pruned against the next largest errors       anomalies using LSTMs and nonparametric dynamic
                                                                      thresholding" (KDD)
stuck         a value that stops moving: a run of exact repeats,      run-length test: a run of r repeats has
              unlikely at the key's own repeat rate (frozen feed)     probability p**r (``consumer.stuck``)
phase         a value unlike the key's values at the same phase of    seasonal-naive check: per-phase EWMA mean and
              its season (a day of unusual shape, which a one-step    spread of the value (``consumer.seasonal``);
              forecaster follows); needs the model's season           seasonal naive forecasting (Hyndman &
                                                                      Athanasopoulos, *Forecasting: Principles and
                                                                      Practice*, 3rd ed., §5.2)
============  ======================================================  =================================================

A model with a season (``{"season": {"period": P}}``, found by the trainer) also has its residual deseasoned
per phase before any detector sees it (``consumer.seasonal``), so a forecaster's misfit that repeats every
period is scored against that phase's own misfit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnwatch.consumer.burst import Burst
from rnnwatch.consumer.cusum import Cusum
from rnnwatch.consumer.detector_protocol import Wave, alpha_of_halflife, detector_options
from rnnwatch.consumer.reversal import Reversal
from rnnwatch.consumer.seasonal import Phase
from rnnwatch.consumer.state import Column, StateTable
from rnnwatch.consumer.stuck import Stuck
from rnnwatch.consumer.tails import chi2_surprise, upper_surprise
from rnnwatch.consumer.telemanom import Telemanom
from rnnwatch.consumer.waveops import every, row_all, row_sum

__all__ = ["DETECTORS"]

_Z2_CLIP = 25.0  # one point moves a variance at most as much as a 5-sigma point (of its current scale) would


class Gaussian:
    """Per-key z-score of the model's residual: ``zn = z / sqrt(v)``, v an EWMA of z^2, chi-square tail.

    ``z`` is the residual in units of the model's ``forecast_scale`` (or its calibrated residual std), so
    ``v`` adapts that scale to each key's own volatility. v learns from every point with its influence
    clipped at ``clip`` times v, so after a lasting rise of the residual variance by a factor c, v grows by
    at least a factor ``1 + alpha (min(c, clip) - 1)`` per step: the alarm ends within about
    ``halflife * log2(c) / (min(c, clip) - 1) * ...`` steps, in practice within one or two half-lives.
    """

    name: ClassVar[str] = "gaussian"
    DEFAULTS: ClassVar[dict[str, Any]] = {"halflife": 250.0, "clip": _Z2_CLIP}

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        o = detector_options(self.name, options, self.DEFAULTS)
        self.alpha, self.clip, self.k = alpha_of_halflife(float(o["halflife"])), float(o["clip"]), n_features

    def columns(self) -> list[Column]:
        return [Column.filled("s.var", (), np.float64, 1.0), Column.filled("s.n", (), np.int64, 0, counter=True)]

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Wave) -> np.ndarray:
        a = table.arrays
        var, n = a["s.var"][rows], a["s.n"][rows] + wave.valid
        z2 = row_sum(wave.z * wave.z)
        out = chi2_surprise(z2 / var, self.k)
        alpha = np.maximum(self.alpha, 1.0 / np.maximum(n, 1))  # running mean first, EWMA once n > 1/alpha
        step = np.minimum(z2 / self.k, self.clip * var) - var
        new_var = np.maximum(var + alpha * step, 1e-6)
        if not wave.all_valid:
            out, new_var = np.where(wave.valid, out, 0.0), np.where(wave.valid, new_var, var)
        a["s.var"][rows] = new_var
        a["s.n"][rows] = n
        return out


class Likelihood:
    """Numenta's anomaly likelihood (Ahmad et al. 2017) in O(1) state per key.

    The raw score is ``a = log(1 + mean(z^2))`` (bounded influence of a single huge residual). Its long-run
    distribution is an EWMA mean and variance (half-life ``long_halflife``), its recent level an EWMA over
    about ``short_window`` points. The surprise is the one-sided Gaussian tail of the recent level against
    the long-run distribution, the standard error scaled for the short window's effective size. Both keep
    learning: a lasting change of the residual level is absorbed by the long-run mean and variance, and the
    recent level falls back within a few ``short_window`` once residuals return to normal.
    """

    name: ClassVar[str] = "likelihood"
    DEFAULTS: ClassVar[dict[str, Any]] = {"long_halflife": 1000.0, "short_window": 10.0, "min_steps": 20.0}

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        o = detector_options(self.name, options, self.DEFAULTS)
        self.alpha = alpha_of_halflife(float(o["long_halflife"]))
        self.short = 2.0 / (float(o["short_window"]) + 1.0)
        self.se = float(np.sqrt(self.short / (2.0 - self.short)))
        self.min_steps = int(o["min_steps"])

    def columns(self) -> list[Column]:
        return [Column.filled("s.likelihood.mean", (), np.float64, 0.0),
                Column.filled("s.likelihood.var", (), np.float64, 0.0),
                Column.filled("s.likelihood.recent", (), np.float64, 0.0),
                Column.filled("s.likelihood.n", (), np.int64, 0, counter=True)]

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Wave) -> np.ndarray:
        a = table.arrays
        mean, var = a["s.likelihood.mean"][rows], a["s.likelihood.var"][rows]
        n = a["s.likelihood.n"][rows]
        raw = np.log1p(row_sum(wave.z * wave.z) / wave.n_features)  # = mean(axis=1): numpy divides the sum
        before = a["s.likelihood.recent"][rows]
        recent = np.where(n == 0, raw, before + self.short * (raw - before))
        sd = np.sqrt(np.maximum(var, 1e-12)) * self.se
        ready = wave.valid & (n >= self.min_steps)
        out = np.where(ready, upper_surprise((recent - mean) / sd), 0.0)
        n1 = n + wave.valid
        alpha = np.maximum(self.alpha, 1.0 / np.maximum(n1, 1))
        d = raw - mean
        new_mean = mean + alpha * d
        new_var = (1.0 - alpha) * (var + alpha * d * d)
        v = wave.valid
        if not wave.all_valid:
            new_mean, new_var, recent = np.where(v, new_mean, mean), np.where(v, new_var, var), np.where(
                v, recent, before)
        a["s.likelihood.mean"][rows] = new_mean
        a["s.likelihood.var"][rows] = new_var
        a["s.likelihood.recent"][rows] = recent
        a["s.likelihood.n"][rows] = n1
        return out


class Novelty:
    """A value outside the key's recent range [lo, hi] (per feature): a new level or a new extreme.

    The surprise of a new extreme is ``-log10(rate)``, ``rate`` being the key's own EWMA rate of new
    extremes (at least 1 / steps seen): for a stationary series records get rarer (1/n), so a new one is
    news; a trending series (prices) sets records all the time, so a record alone says little. On top,
    each ``decade`` (a fraction of the range's width) the value lies beyond the range adds 1. The range
    contracts by ``1/contract_halflife`` of its width per step (old extremes expire) and always extends to
    include the current value: after a level shift the new level is inside the range at the next step, so
    the alarm ends at once unless the value keeps moving away.
    """

    name: ClassVar[str] = "novelty"
    DEFAULTS: ClassVar[dict[str, Any]] = {"contract_halflife": 2000.0, "rate_halflife": 200.0, "decade": 0.25,
                                          "min_steps": 30.0}

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        o = detector_options(self.name, options, self.DEFAULTS)
        self.contract = alpha_of_halflife(float(o["contract_halflife"]))
        self.rate_alpha = alpha_of_halflife(float(o["rate_halflife"]))
        self.decade, self.min_steps, self.f = float(o["decade"]), int(o["min_steps"]), n_features

    def columns(self) -> list[Column]:
        f = (self.f,)
        return [Column.filled("s.novelty.lo", f, np.float64, np.inf),
                Column.filled("s.novelty.hi", f, np.float64, -np.inf),
                Column.filled("s.novelty.rate", (), np.float64, 1.0),
                Column.filled("s.novelty.n", (), np.int64, 0, counter=True)]

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Wave) -> np.ndarray:
        a = table.arrays
        lo, hi = a["s.novelty.lo"][rows], a["s.novelty.hi"][rows]
        rate, n = a["s.novelty.rate"][rows], a["s.novelty.n"][rows]
        x = wave.x
        finite = np.isfinite(x).all(axis=1)
        width = hi - lo
        scale = np.where(np.isfinite(width) & (width > 0), width, np.inf)
        with np.errstate(invalid="ignore"):
            beyond = np.maximum(np.maximum(x - hi, lo - x), 0.0) / scale
        beyond = np.where(np.isfinite(beyond), beyond, 0.0).max(axis=1)
        record = (beyond > 0) & finite & (n >= 2)
        eff = np.maximum(rate, 1.0 / np.maximum(n, 1))
        ready = record & (n >= self.min_steps)
        out = np.where(ready, -np.log10(eff) + beyond / self.decade, 0.0)
        shrink = np.where(np.isfinite(width), self.contract * width, 0.0) * 0.5  # [n, F]
        new_lo = np.where(finite[:, None], np.minimum(lo + shrink, x), lo)
        new_hi = np.where(finite[:, None], np.maximum(hi - shrink, x), hi)
        a["s.novelty.lo"][rows], a["s.novelty.hi"][rows] = new_lo, new_hi
        n1 = n + finite
        alpha = np.maximum(self.rate_alpha, 1.0 / np.maximum(n1, 1))
        a["s.novelty.rate"][rows] = np.where(finite & (n >= 2), rate + alpha * (record - rate), rate)
        a["s.novelty.n"][rows] = n1
        return out


class Volatility:
    """A return (log-return for positive features, else a difference) far outside its own volatility.

    ``method = "ewma"``: RiskMetrics, variance ``v <- lam v + (1 - lam) r^2`` (``halflife`` 11 steps is
    lambda 0.94, the daily RiskMetrics value). ``method = "garch"``: GARCH(1,1) ``v <- w + a r^2 + b v`` with
    the long-run variance ``w / (1 - a - b)`` targeted to a slow EWMA of r^2 (half-life ``long_halflife``).
    The surprise is the chi-square tail of sum(r^2 / v). Both learn from every return, unclipped: after a
    lasting rise of volatility the variance catches up within a few ``halflife`` steps.
    """

    name: ClassVar[str] = "volatility"
    DEFAULTS: ClassVar[dict[str, Any]] = {"method": "ewma", "halflife": 11.0, "long_halflife": 250.0,
                                          "garch_alpha": 0.08, "garch_beta": 0.9, "min_steps": 20.0}

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        o = detector_options(self.name, options, self.DEFAULTS)
        if o["method"] not in ("ewma", "garch"):
            msg = f"scorer 'volatility' method must be 'ewma' or 'garch', got {o['method']!r}"
            raise ValueError(msg)
        self.garch = o["method"] == "garch"
        self.alpha = alpha_of_halflife(float(o["halflife"]))
        self.long_alpha = alpha_of_halflife(float(o["long_halflife"]))
        self.ga, self.gb = float(o["garch_alpha"]), float(o["garch_beta"])
        self.log_returns, self.min_steps, self.f = domain == "positive", int(o["min_steps"]), n_features

    def columns(self) -> list[Column]:
        f = (self.f,)
        return [Column.filled("s.volatility.prev", f, np.float64, np.nan),
                Column.filled("s.volatility.var", f, np.float64, 0.0),
                Column.filled("s.volatility.long", f, np.float64, 0.0),
                Column.filled("s.volatility.n", (), np.int64, 0, counter=True)]

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Wave) -> np.ndarray:
        a = table.arrays
        prev, var = a["s.volatility.prev"].take(rows, axis=0), a["s.volatility.var"].take(rows, axis=0)
        long, n = a["s.volatility.long"].take(rows, axis=0), a["s.volatility.n"][rows]
        x = wave.x
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.log(x / prev) if self.log_returns else x - prev
        ok = row_all(np.isfinite(r))
        all_ok = every(ok)
        if not all_ok:
            r = np.where(ok[:, None], r, 0.0)
        floor = np.maximum(long * 1e-4, 1e-18)
        r2 = r * r
        d2 = row_sum(r2 / np.maximum(var, floor))
        ready = ok & (n >= self.min_steps)
        out = chi2_surprise(d2, self.f) if every(ready) else np.where(ready, chi2_surprise(d2, self.f), 0.0)
        n1 = n + ok
        inv_n1 = 1.0 / np.maximum(n1, 1)  # running means first, EWMAs once n > 1/alpha
        first = np.maximum(self.long_alpha, inv_n1)[:, None]
        new_long = long + first * (r2 - long)
        if self.garch:
            w = (1.0 - self.ga - self.gb) * new_long
            new_var = np.where(n1[:, None] > 1.0 / self.alpha, w + self.ga * r * r + self.gb * var, new_long)
        else:
            alpha = np.maximum(self.alpha, inv_n1)[:, None]
            new_var = var + alpha * (r2 - var)
        if not all_ok:
            keep = ok[:, None]
            new_var, new_long = np.where(keep, new_var, var), np.where(keep, new_long, long)
        a["s.volatility.var"][rows] = new_var
        a["s.volatility.long"][rows] = new_long
        a["s.volatility.prev"][rows] = x if wave.x_finite else np.where(np.isfinite(x), x, prev)
        a["s.volatility.n"][rows] = n1
        return out


DETECTORS: dict[str, Any] = {d.name: d for d in (Gaussian, Likelihood, Novelty, Volatility, Telemanom, Stuck, Phase,
                                                    Burst, Cusum, Reversal)}
"""name -> class(options, n_features, domain)"""

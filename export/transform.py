"""Data transforms baked into the step graph, so the runtime feeds raw message values.

``log-return`` (prices; domain positive): u_t = (log(x_t / x_{t-1}) - mean) / std, with the previous x as
state (a key's first step has no previous value: its return counts as 0); forecast = x_t·exp(mean + std·w·û).
``diff`` (domain real): u_t = (x_t - x_{t-1} - mean) / std; forecast = x_t + mean + std·w·û.
``level`` (domain real): u_t = (x_t - mean) / std; forecast = mean + std·w·û.
``sqrt`` (counts; domain nonnegative): y_t = 2·sqrt(x_t + 3/8) (Anscombe 1948: a Poisson count's variance becomes
about 1 at every level), u_t = (y_t - mean) / std; forecast = (ŷ/2)² - 3/8 with ŷ = mean + std·w·û (at least the
y of a 0 count), its scale (ŷ/2)·std·resid_std (the delta method: dx = (y/2) dy).

``w`` (``weight``, per feature, default 1) is the trainer's forecast-skill gate (``rnnwatch.export.skill``): 0 drops
the model's forecast of a feature for the transform's *no-change* forecast (û = 0: the training mean return,
difference or level). The graph computes ``(std·w)·û``, so the exporter folds ``std·w`` into one constant (no
node per step for the weight), and weight 1 computes bit for bit what the graph computed before weights existed.

``forecast_scale`` is the predicted std of the next x in message units: the held-out std of the normalised
one-step residuals of the weighted forecast, u - w·û (``resid_std``), carried back through the transform.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.export.signature import DOMAIN, TRANSFORMS

__all__ = ["ANSCOMBE", "DOMAIN", "MEAN_REVERTING", "OVERDISPERSED", "STATELESS", "TRANSFORMS", "Transform",
           "choose_transform", "differences_autocorrelation", "overdispersed_counts", "transform_series"]


MEAN_REVERTING = -0.25  # the lag-1 autocorrelation of a series' differences below which auto keeps its levels
OVERDISPERSED = 1.0  # var(differences) / 2 / mean of a count at and above which auto models its square root
ANSCOMBE = 0.375  # 2 sqrt(x + 3/8): the shift that makes a Poisson count's variance closest to 1
STATELESS = ("level", "sqrt")  # transforms of x alone; the others need the key's previous x (state)


def choose_transform(requested: str, series: Sequence[np.ndarray]) -> str:
    """``auto``: the square root of an over-dispersed count, log-returns for strictly positive data that wanders
    like a price, else levels.

    Returns suit a series whose changes are the news (a price: a random walk, its differences uncorrelated);
    a metric that reverts to its level (a CPU's utilisation, a request count, a sensor around its set point)
    is *over-differenced* by them: its differences are negatively correlated (white noise around a level:
    -0.5; a level AR(1) with coefficient phi: -(1 - phi) / 2), a forecaster of returns then only relearns the
    level, and a value's distance from its usual level, which is the anomaly, is scored as one big step and
    its equal and opposite return. So ``auto`` keeps the levels when any feature's differences have a lag-1
    autocorrelation below ``MEAN_REVERTING`` (-0.25: the level keeps less than half of a deviation from one
    step to the next), pooled over the keys' training rows (``series``: one [T, F] array per key).

    A count (tweets per 5 minutes, requests per minute) is first: its noise grows with its level (Poisson: the
    variance is the mean), so one scale fits neither its quiet nor its busy hours, and it reaches 0, which
    log-returns refuse. Whole numbers >= 0 whose differences vary at least as much as a Poisson count's
    (``var(diff) / 2 >= mean``) get ``sqrt`` (NAB, 57 series, trainer seeds 0-2, swept / shipped standard:
    56.0 / 54.7 -> 56.1 / 55.6; the 18 in ../shared 75.8 / 74.6 -> 76.2 / 75.1; the ten tweets 42.8 -> 44.6
    swept; a speed in whole miles per hour varies far less than a count and keeps its levels).
    """
    if requested != "auto":
        return requested
    if overdispersed_counts(series):
        return "sqrt"
    if not all(bool(np.all(np.asarray(s) > 0)) for s in series):
        return "level"
    return "level" if bool(np.any(differences_autocorrelation(series) < MEAN_REVERTING)) else "log-return"


def overdispersed_counts(series: Sequence[np.ndarray]) -> bool:
    """Every key's training values are whole numbers >= 0 (not all 0 or 1) and their differences, pooled, vary
    at least as a Poisson count's do: var(diff) / 2 >= the mean (``OVERDISPERSED``)."""
    xs = [np.asarray(s, dtype=np.float64) for s in series]
    if not xs or not all(len(x) > 2 and np.all(x >= 0) and np.all(x == np.round(x)) for x in xs):
        return False
    if max(float(x.max()) for x in xs) <= 1:
        return False
    d = np.concatenate([np.diff(x, axis=0).ravel() for x in xs])
    m = float(np.mean(np.concatenate([x.ravel() for x in xs])))
    return bool(m > 0 and np.var(d) / 2.0 / m >= OVERDISPERSED)


def differences_autocorrelation(series: Sequence[np.ndarray]) -> np.ndarray:
    """The lag-1 autocorrelation of each feature's first differences, pooled over keys (float [F]; 0 when a
    feature never changes). Differences of levels, not of logs: the question is how the values move."""
    num: np.ndarray | float = 0.0
    den: np.ndarray | float = 0.0
    for s in series:
        x = np.asarray(s, dtype=np.float64)
        d = np.diff(x.reshape(len(x), -1), axis=0)
        if len(d) >= 2:
            d = d - d.mean(axis=0)
            num, den = num + (d[:-1] * d[1:]).sum(axis=0), den + (d * d).sum(axis=0)
    num, den = np.atleast_1d(np.asarray(num, dtype=np.float64)), np.atleast_1d(np.asarray(den, dtype=np.float64))
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def transform_series(kind: str, x: np.ndarray) -> np.ndarray:
    """Un-normalised transformed series of one key, [T, F] -> [T, F], exactly as the graph computes it."""
    if kind == "level":
        return x.astype(np.float64)
    if kind == "sqrt":
        return 2.0 * np.sqrt(np.maximum(x.astype(np.float64), 0.0) + ANSCOMBE)
    prev = np.vstack([x[:1], x[:-1]]).astype(np.float64)
    if kind == "log-return":
        return np.log(x.astype(np.float64) / prev)
    return x.astype(np.float64) - prev


class Transform(nn.Module):
    """Normalises raw x into the model's input and maps its output back to message units."""

    def __init__(self, kind: str, mean: np.ndarray, std: np.ndarray, resid_std: np.ndarray,
                 weight: np.ndarray | None = None) -> None:
        """``weight``: float [F], the forecast's weight per feature (default ones: the model's forecast)."""
        super().__init__()
        if kind not in TRANSFORMS:
            msg = f"unknown transform {kind!r}; use one of {TRANSFORMS}"
            raise ConfigError(msg)
        w = np.ones(np.shape(mean)) if weight is None else np.asarray(weight, dtype=np.float64)
        if w.shape != np.shape(mean) or not np.all(np.isfinite(w)):
            msg = f"forecast weight must be {np.shape(mean)} finite values (one per feature), got {w.tolist()}"
            raise ConfigError(msg)
        self.kind = kind
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.maximum(std, 1e-12), dtype=torch.float32))
        self.register_buffer("resid_std", torch.as_tensor(resid_std, dtype=torch.float32))
        self.register_buffer("weight", torch.as_tensor(w, dtype=torch.float32))

    @property
    def stateful(self) -> bool:
        return self.kind not in STATELESS

    @property
    def domain(self) -> str:
        return DOMAIN[self.kind]

    def encode(self, x: Tensor, prev: Tensor | None, seen: Tensor | None) -> Tensor:
        """``prev``/``seen``: the state (previous x, and 1 once the key has a previous x)."""
        if self.kind == "sqrt":
            z = 2.0 * torch.sqrt(torch.clamp(x, min=0.0) + ANSCOMBE)
        elif self.kind == "level" or prev is None or seen is None:
            z = x
        else:
            seen = seen > 0
            if self.kind == "log-return":
                z = torch.log(x / torch.where(seen, prev, x))
            else:
                z = x - torch.where(seen, prev, x)
        return (z - self.mean) / self.std

    def encode_sequence(self, xs: Tensor) -> Tensor:
        """[B, T, F] raw -> normalised, the vectorised twin of stepping encode() (the parity reference)."""
        if self.kind == "level":
            return (xs - self.mean) / self.std
        if self.kind == "sqrt":
            return (2.0 * torch.sqrt(torch.clamp(xs, min=0.0) + ANSCOMBE) - self.mean) / self.std
        prev = torch.cat([xs[:, :1], xs[:, :-1]], dim=1)
        z = torch.log(xs / prev) if self.kind == "log-return" else xs - prev
        return (z - self.mean) / self.std

    def decode(self, u_hat: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """(forecast of the next x, its predicted std), both in message units."""
        step = self.mean + (self.std * self.weight) * u_hat  # std·w: one constant in the exported graph
        spread = self.std * self.resid_std
        if self.kind == "log-return":
            forecast = x * torch.exp(step)
            return forecast, forecast * spread
        if self.kind == "diff":
            return x + step, spread.expand_as(x)
        if self.kind == "sqrt":
            half = torch.clamp(step, min=2.0 * ANSCOMBE ** 0.5) / 2.0  # no forecast below a 0 count
            return half * half - ANSCOMBE, half * spread
        return step, spread.expand_as(x)

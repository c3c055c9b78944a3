"""Tail probabilities on a log scale, vectorised, without scipy (the runtime keeps its dependencies small).

A *surprise* is ``-log10(tail)``: 2 means "1 in 100", 6 "1 in a million". It keeps its resolution where a
``[0, 1]`` score (``1 - tail``) saturates at 1.0, so thresholds like 1e-9 are representable and rankable.
The log tails are computed from the logarithm of the erfc approximation itself, so they never underflow
(a 40-sigma residual has a finite surprise of about 349, not infinity).

>>> import numpy as np
>>> round(float(gaussian_tail(np.array([1.959964]))[0]), 4)
0.05
>>> round(float(gaussian_surprise(np.array([40.0]))[0]), 1)  # two-sided
349.1
>>> round(float(upper_surprise(np.array([40.0]))[0]), 1)  # one-sided: log10(2) more
349.4
"""

from __future__ import annotations

import numpy as np

__all__ = ["chi2_surprise", "chi2_tail", "gaussian_surprise", "gaussian_tail", "score_of", "tail_of",
           "upper_surprise"]

_LN10 = np.array(np.log(10.0))  # 0-d arrays, not floats: see _C below
_SQRT2 = np.array(np.sqrt(2.0))
_LN_HALF = np.array(np.log(0.5))
_ZERO = np.array(0.0)
_ERFC_COEFFS = (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368)
# The same constants as 0-d arrays: an array operand skips numpy's per-call conversion of a Python float (about
# a third of the cost of one operation on a 10-key wave); the values, hence the results, are the same.
_C = tuple(np.array(c) for c in _ERFC_COEFFS)
_C_LAST, _C0, _HALF, _ONE = np.array(0.17087277), np.array(1.26551223), np.array(0.5), np.array(1.0)


def gaussian_tail(z: np.ndarray) -> np.ndarray:
    """P(|N(0,1)| >= |z|) = erfc(|z|/sqrt 2), to ~1e-7 relative error."""
    return _erfc(np.abs(np.asarray(z, dtype=np.float64)) / _SQRT2)


def chi2_tail(d2: np.ndarray, k: int) -> np.ndarray:
    """P(chi2_k >= d2): exact for k=1, Wilson-Hilferty normal approximation for k > 1."""
    return np.asarray(10.0 ** -chi2_surprise(d2, k))


def gaussian_surprise(z: np.ndarray) -> np.ndarray:
    """-log10 P(|N(0,1)| >= |z|), two-sided, >= 0."""
    return np.asarray(np.maximum(-_log_erfc(np.abs(np.asarray(z, dtype=np.float64)) / _SQRT2) / _LN10, _ZERO))


def upper_surprise(z: np.ndarray) -> np.ndarray:
    """-log10 P(N(0,1) >= z), one-sided (a z below 0 gives at most log10(2))."""
    x = np.asarray(z, dtype=np.float64) / _SQRT2
    return np.asarray(np.maximum(-(_LN_HALF + _log_erfc(x)) / _LN10, _ZERO))


def chi2_surprise(d2: np.ndarray, k: int) -> np.ndarray:
    """-log10 P(chi2_k >= d2)."""
    d2 = np.maximum(np.asarray(d2, dtype=np.float64), _ZERO)
    if k == 1:
        return gaussian_surprise(np.sqrt(d2))
    c = 2.0 / (9.0 * k)
    return upper_surprise((np.cbrt(d2 / np.array(float(k))) - np.array(1.0 - c)) / np.array(np.sqrt(c)))


def tail_of(surprise: np.ndarray) -> np.ndarray:
    """10 ** -surprise (0 for a surprise beyond float range)."""
    with np.errstate(under="ignore"):
        return np.asarray(np.power(10.0, -np.asarray(surprise, dtype=np.float64)))


def score_of(surprise: np.ndarray) -> np.ndarray:
    """The [0, 1] score 1 - 10**-surprise, computed without cancellation near 0."""
    return np.asarray(-np.expm1(-np.asarray(surprise, dtype=np.float64) * _LN10))


def _erfc_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numerical Recipes erfcc for |x|: erfc(|x|) = t * exp(poly) (fractional error < 1.2e-7 everywhere)."""
    ax = np.abs(x)
    if ax.ndim == 0:
        t = 1.0 / (1.0 + 0.5 * ax)
        poly = -ax * ax - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
            -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
                -0.82215223 + t * 0.17087277))))))))
        return t, poly
    # The same Horner scheme, operation for operation (the same numbers), in place where that is cheaper: per wave.
    t = _ONE / (ax * _HALF + _ONE)
    p = t * _C_LAST
    for c in _C:
        p += c
        p *= t
    poly = -ax
    poly *= ax
    poly -= _C0
    poly += p
    return t, poly


def _erfc(x: np.ndarray) -> np.ndarray:
    t, poly = _erfc_parts(x)
    with np.errstate(under="ignore"):
        ans = t * np.exp(poly)
    return np.asarray(np.where(x >= 0, ans, 2.0 - ans))


def _log_erfc(x: np.ndarray) -> np.ndarray:
    """ln erfc(x) without underflow for large positive x.

    The branch for x < 0 is evaluated at those points only (elementwise, so the same numbers as evaluating
    it everywhere and selecting): a chi-square or |z| argument is never negative, and this runs per wave.
    """
    x = np.asarray(x, dtype=np.float64)
    t, poly = _erfc_parts(x)
    if x.ndim == 0:
        with np.errstate(under="ignore"):
            return np.asarray(np.where(x >= 0, np.log(t) + poly, np.log(2.0 - t * np.exp(poly))))
    out = np.log(t) + poly
    neg = ~(x >= _ZERO)  # NaN included, as np.where(x >= 0, ...) did; a mask indexes blocks of any shape
    if neg.any():
        with np.errstate(under="ignore"):
            out[neg] = np.log(2.0 - t[neg] * np.exp(poly[neg]))
    return np.asarray(out)

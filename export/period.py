"""A series' season, found label-free from the training rows (the scorer's seasonal stage, ``consumer.seasonal``).

Candidates are calendar periods read from the timestamps (a day, a week: the rhythms of machines, people
and traffic), in rows at the series' median spacing, kept only when the training rows hold at least
``MIN_CYCLES`` of them and the series, detrended, correlates with itself one period later at least
``MIN_AUTOCORRELATION`` (the unbiased autocorrelation; 1 for an exact repeat, about 0 for noise) *and* that
correlation is a peak: it exceeds the correlation at half the period by at least ``MIN_CONTRAST`` (a cycle
is out of phase half a period later; a random walk or a slow trend correlates at every lag, more at the
shorter one, and has no season). Calendar candidates rather than the autocorrelation's highest peak: a few
hundred rows of a smooth series correlate strongly at every short lag, and a spurious period would
relabel the key's phases.

>>> import numpy as np
>>> t = np.arange(1000) * 300_000                                   # 5-minute rows
>>> x = np.sin(2 * np.pi * np.arange(1000) / 288)                   # one cycle a day
>>> walk = np.cumsum(np.random.default_rng(0).normal(size=1000))   # correlates at every lag: no season
>>> find_period(x, t), find_period(np.random.default_rng(0).normal(size=1000), t), find_period(walk, t)
(288, 0, 0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["CALENDAR_MS", "MIN_AUTOCORRELATION", "MIN_CONTRAST", "MIN_CYCLES", "autocorrelation", "find_period",
           "series_period"]

CALENDAR_MS = (86_400_000, 7 * 86_400_000)  # a day, a week
MIN_CYCLES = 2.0
MIN_AUTOCORRELATION = 0.5
MIN_CONTRAST = 0.5


def autocorrelation(x: np.ndarray, lag: int) -> float:
    """Unbiased autocorrelation of ``x`` (linear trend removed) at ``lag``; 0 for a constant series."""
    y = np.asarray(x, dtype=np.float64)
    idx = np.arange(y.size, dtype=np.float64)
    y = y - np.polyval(np.polyfit(idx, y, 1), idx)
    var = float(np.mean(y * y))
    if not 0 < lag < y.size or var <= 1e-12 * max(1.0, float(np.mean(np.abs(x))) ** 2):
        return 0.0
    return float(np.mean(y[:-lag] * y[lag:]) / var)


def find_period(x: np.ndarray, event_ms: np.ndarray) -> int:
    """The season of ``x`` in rows (0: none found): of the calendar periods that repeat in the rows, the one
    that correlates most (a week when weekdays differ from weekends: it holds the daily cycle too)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(event_ms), -1)
    ok = np.isfinite(x).all(axis=1)
    x, t = x[ok], np.asarray(event_ms, dtype=np.int64)[ok]
    if t.size < 3:
        return 0
    step = float(np.median(np.diff(t)))
    if step <= 0:
        return 0
    found = []
    for calendar in CALENDAR_MS:
        period = round(calendar / step)
        if period < 2 or abs(period * step - calendar) > 0.01 * calendar or t.size < MIN_CYCLES * period:
            continue
        if all(_is_season(x[:, f], period) for f in range(x.shape[1])):
            found.append((min(autocorrelation(x[:, f], period) for f in range(x.shape[1])), int(period)))
    return max(found)[1] if found else 0


def _is_season(x: np.ndarray, period: int) -> bool:
    at = autocorrelation(x, period)
    return at >= MIN_AUTOCORRELATION and at - autocorrelation(x, period // 2) >= MIN_CONTRAST


def series_period(series: list[tuple[np.ndarray, np.ndarray | None]]) -> int:
    """The season shared by most training series (values, event times or None), 0 if there is no majority.

    One model serves every key, and its scorer options hold one period: a season only some keys show is
    none (each key's phase statistics would relabel the others' noise).
    """
    found = [find_period(values, times) if times is not None else 0 for values, times in series]
    best = max(set(found), key=found.count) if found else 0
    return best if best and 2 * found.count(best) > len(found) else 0

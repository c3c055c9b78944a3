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

__all__ = ["CALENDAR_MS", "MAX_PERIOD", "MIN_AUTOCORRELATION", "MIN_CONTRAST", "MIN_CYCLES", "autocorrelation",
           "find_period", "series_season", "step_ms"]

CALENDAR_MS = (86_400_000, 7 * 86_400_000)  # a day, a week
MIN_CYCLES = 2.0
MIN_AUTOCORRELATION = 0.5
MIN_CONTRAST = 0.5
# The scorer keeps 2 x 2 x period x features float64 per key for a season (consumer.seasonal): a day of 1-second
# rows would be 2.8 MB per key. A longer period than a week of 5-minute rows (2016 rows, 65 kB per key) is not used.
MAX_PERIOD = 2016


def autocorrelation(x: np.ndarray, lag: int) -> float:
    """Unbiased autocorrelation of ``x`` (linear trend removed; NaN = a missing row) at ``lag``; 0 for a constant.

    >>> x = np.tile([1.0, 2.0], 20)
    >>> x[7] = np.nan
    >>> round(autocorrelation(x, 2), 2), round(autocorrelation(x, 1), 2)
    (0.99, -1.0)
    """
    y = np.asarray(x, dtype=np.float64)
    idx = np.arange(y.size, dtype=np.float64)
    ok = np.isfinite(y)
    if ok.sum() < 3 or not 0 < lag < y.size:
        return 0.0
    y = y - np.polyval(np.polyfit(idx[ok], y[ok], 1), idx)
    var = float(np.nanmean(y * y))
    if var <= 1e-12 * max(1.0, float(np.nanmean(np.abs(x))) ** 2):
        return 0.0
    pairs = y[:-lag] * y[lag:]
    return float(np.nanmean(pairs) / var) if np.isfinite(pairs).any() else 0.0


def find_period(x: np.ndarray, event_ms: np.ndarray) -> int:
    """The season of ``x`` in rows (0: none found): of the calendar periods that repeat in the rows, the one
    that correlates most (a week when weekdays differ from weekends: it holds the daily cycle too).

    Rows are placed on a grid of the median spacing by their event times, so a gap does not shift the
    lags (a missing slot takes no part in the correlation).
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(event_ms), -1)
    ok = np.isfinite(x).all(axis=1)
    x, t = x[ok], np.asarray(event_ms, dtype=np.int64)[ok]
    step = step_ms(t)
    if step <= 0:
        return 0
    slot = np.rint((t - t[0]) / step).astype(np.int64)
    if slot[-1] > 4 * len(t):  # mostly holes: no grid to correlate on
        return 0
    grid = np.full((int(slot[-1]) + 1, x.shape[1]), np.nan)
    grid[slot] = x
    found = []
    for calendar in CALENDAR_MS:
        period = round(calendar / step)
        if (period < 2 or period > MAX_PERIOD or abs(period * step - calendar) > 0.01 * calendar
                or len(grid) < MIN_CYCLES * period):
            continue
        if all(_is_season(grid[:, f], period) for f in range(x.shape[1])):
            found.append((min(autocorrelation(grid[:, f], period) for f in range(x.shape[1])), int(period)))
    return max(found)[1] if found else 0


def step_ms(event_ms: np.ndarray) -> int:
    """The median spacing of event times, ms (0 with fewer than 3 rows)."""
    t = np.asarray(event_ms, dtype=np.int64)
    return int(np.median(np.diff(t))) if t.size >= 3 else 0


def _is_season(x: np.ndarray, period: int) -> bool:
    at = autocorrelation(x, period)
    return at >= MIN_AUTOCORRELATION and at - autocorrelation(x, period // 2) >= MIN_CONTRAST


def series_season(series: list[tuple[np.ndarray, np.ndarray | None]]) -> dict[str, int]:
    """The season most training series share, as the scorer's ``season`` options ({} if there is no majority).

    One model serves every key, and its scorer options hold one period: a season only some keys show is
    none (each key's phase statistics would relabel the others' noise).
    """
    found = [(find_period(values, times), step_ms(times)) if times is not None else (0, 0) for values, times in series]
    best = max(set(found), key=found.count) if found else (0, 0)
    if not best[0] or 2 * found.count(best) <= len(found):
        return {}
    return {"period": best[0], "step_ms": best[1]}

"""Seasons: a forecaster's misfit that repeats every period is not news, a day unlike the others is.

A one-step forecaster trained on a few days of a daily-periodic series misses the same edges every day
(a square wave's steps, a daily ramp's turn): its residual at those phases is large, but the same each
period. Scored against the key's overall residual scale, it alarms once a period, forever. This stage
sits between the residual and the detectors (``consumer.detectors``): with a ``period`` P (found label-free
by the trainer, ``export.period``), the residual ``z`` at phase ``p = step mod P`` is replaced by::

    z' = (z - m_p w) / sqrt(v_eff),   w = n_p / (n_p + 1),
    v_eff = max((n_p v_p + K g) / (n_p + K), g, (m_p (1 - w))^2, 1e-12)

``m_p``, ``v_p``: EWMAs (half-life ``halflife`` periods, a running mean over the first visits) of the
residual and of its squared deviation at phase p; ``n_p`` the periods the key's season clock has completed
(no state of its own); ``g`` the key's EWMA variance of the deseasoned residual over every phase (half-life
``halflife`` periods in steps), the prior a young phase borrows (``K = 2`` visits' weight). So a phase
seen once barely moves the residual, a phase seen every period with the same misfit is scored against
that misfit and its own spread, and every other phase against the key's overall scale. The part of the
phase's mean the shrinkage withholds, ``m_p (1 - w)``, counts as uncertainty: a misfit that repeats exactly
(a noiseless series, whose overall scale collapses) is not news once a period.

It keeps learning from every point (the influence of one point on ``m_p`` and ``v_p`` clipped at
``clip`` standard deviations): a real shock at a misfit's phase still stands out against the phase's own
spread, it echoes at most ``alpha * clip`` of a standard deviation at that phase one period later, and a
regime change (a new daily shape) is learnt within a few ``halflife`` periods, after which it stops
alarming. State: ``2 P F + 1`` values (stored as float32, ``consumer.state``) and the clock (two int64) per key
(P = 288 at 5-minute data with a daily period: 2.3 kB); the stage exists only for a model whose trainer found a
period, so other models pay nothing.
The phase is the key's season clock modulo P: the slot of ``step_ms`` (the training rows' median spacing)
its event time falls in, counted from the key's first event time, and at least one more per record (one per
record without event times). So a gap in a feed does not shift the key's phases, nor does jitter (a row 0.4
steps late is in its own slot, where adding rounded spacings would count 1.8 steps and 0.2 as 1 and drift
ahead); and records without meaningful event times (a CSV's row numbers, a replay stamped at ingest time)
count rows (``s.season.clock`` and ``s.season.origin``, two int64 per key). The
``phase`` detector (:class:`Phase`) uses the same normaliser on the value itself: what the forecaster
follows (a day of an unusual shape), the same phase of earlier periods does not.

A daily job (a backup, a batch) does not start at the same minute every day: NAB's ec2_cpu_utilization_24ae8d
spikes at 03:05-03:35, moving up to three 5-minute rows from one day to the next, so its spike never sits in
the same phase twice and alarmed once a day although the season was found. Both forms therefore score a
record against the best-fitting phase (smallest sum of squares over features) within ``tolerance_ms`` of its
own (default 15 minutes, in whole rows of ``step_ms``: 5-minute rows +-3 phases, 30-minute and hourly rows
none; at most an eighth of the period and 16 rows), and only its own phase learns. A tolerance in time, not in
rows, because a weekly season of hourly rows would take three rows as three hours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnwatch.consumer.detector_protocol import Wave
from rnnwatch.consumer.state import NO_TIME, Column, Narrowed, StateTable
from rnnwatch.consumer.tails import chi2_surprise

__all__ = ["SEASON_OPTIONS", "Phase", "SeasonalNormaliser"]

SEASON_OPTIONS = "season"  # scorer options: {"season": {"period": P, "step_ms": ms, "halflife": periods, "clip": sd,
#                                                        "tolerance_ms": ms}}
_PRIOR_VISITS = 2.0
_MAX_TOLERANCE = 16  # rows either side of its own phase a record may be matched within (season option tolerance_ms)
_MIN_VAR = 1e-12  # the narrowest scale (squared) a phase is scored against, as the level form's first spread


class SeasonalNormaliser:
    DEFAULTS: ClassVar[dict[str, float]] = {"period": 0.0, "step_ms": 0.0, "halflife": 3.0, "clip": 5.0,
                                            "tolerance_ms": 900_000.0}

    def __init__(self, options: Mapping[str, Any], n_features: int, prefix: str = "s.season",
                 level: bool = False) -> None:
        self.prefix, self.level = prefix, level
        unknown = sorted(set(options) - set(self.DEFAULTS))
        if unknown:
            msg = f"scorer option {SEASON_OPTIONS!r} has no option(s) {unknown}; it takes {sorted(self.DEFAULTS)}"
            raise ValueError(msg)
        o = {**self.DEFAULTS, **{k: float(v) for k, v in options.items()}}
        self.period = int(o["period"])
        if (self.period < 2 or self.period != o["period"] or o["halflife"] <= 0 or o["clip"] <= 0
                or o["step_ms"] < 0 or not 0 <= o["tolerance_ms"] < math.inf):
            msg = (f"season needs an integer period >= 2, step_ms >= 0, halflife > 0, clip > 0, tolerance_ms >= 0; "
                   f"got {dict(options)}")
            raise ValueError(msg)
        self.alpha = 1.0 - 0.5 ** (1.0 / o["halflife"])
        self.g_alpha = 1.0 - 0.5 ** (1.0 / (o["halflife"] * self.period))
        self.clip2 = o["clip"] ** 2
        self.step_ms = o["step_ms"]
        # whole rows of the tolerance (see normalise): at most an eighth of the period, and at most _MAX_TOLERANCE
        # rows (each is one more phase to read per record); none without a row spacing to measure it in
        rows = int(o["tolerance_ms"] // self.step_ms) if self.step_ms > 0 else 0
        self.tolerance = min(rows, self.period // 8, _MAX_TOLERANCE)
        shifts = np.arange(-self.tolerance, self.tolerance + 1)
        self._shifts = shifts[shifts != 0]
        self.f = n_features

    def columns(self) -> list[Column]:
        shape = (self.period, self.f)
        return [Column.filled(f"{self.prefix}.mean", shape, np.float64, 0.0),
                Column.filled(f"{self.prefix}.var", shape, np.float64, 0.0),
                Column.filled(f"{self.prefix}.g", (), np.float64, math.nan)]

    def clock_columns(self) -> list[Column]:
        return [Column.filled("s.season.clock", (), np.int64, 0),  # positions in time: int64 keeps every bit
                Column.filled("s.season.origin", (), np.int64, NO_TIME)]

    def clock(self, table: StateTable, rows: np.ndarray, steps: np.ndarray, event_ms: np.ndarray | None) -> np.ndarray:
        """The key's position in its season, in rows of ``step_ms`` since its first step (int64 [n]).

        The slot of ``step_ms`` the event time falls in, counted from the key's first event time (a gap of a day
        moves it a day's rows), and at least one more than the last record's; one per record without event
        times or ``step_ms``.
        """
        a = table.arrays
        now = np.where(steps > 0, a["s.season.clock"][rows] + 1, 0)
        if event_ms is not None and self.step_ms > 0:
            t = np.asarray(event_ms, dtype=np.int64)
            origin = a["s.season.origin"][rows]
            # the key's first event time, or (its earlier records had none) the time its clock would have started
            unset = (steps <= 0) | (origin == NO_TIME)
            origin = np.where(unset, t - np.rint(now * self.step_ms).astype(np.int64), origin)
            a["s.season.origin"][rows] = origin
            slot = np.rint((t - origin) / self.step_ms)
            now = np.maximum(now, np.minimum(slot, 2.0 ** 62)).astype(np.int64)
        a["s.season.clock"][rows] = now
        return np.asarray(now)

    def normalise(self, table: StateTable, rows: np.ndarray, steps: np.ndarray, z: np.ndarray,
                  valid: np.ndarray) -> np.ndarray:
        """The deseasoned ``z`` of ``rows`` at their season clock ``steps`` (float64 [n, F]); learns where ``valid``.

        ``level`` (a value, not a residual): the phase's mean is used in full from its first visit (a level has
        no prior mean to shrink towards) and the key's overall scale is learnt from the second period on.
        """
        a = table.arrays
        phase = np.asarray(steps % self.period, dtype=np.int64)
        visits = (np.asarray(steps, dtype=np.int64) // self.period).astype(np.float64)[:, None]  # earlier visits
        mean_all, var_all = a[f"{self.prefix}.mean"], a[f"{self.prefix}.var"]
        m, v = mean_all[rows, phase], var_all[rows, phase]
        g = a[f"{self.prefix}.g"][rows][:, None]
        w = np.minimum(visits, 1.0) if self.level else visits / (visits + 1.0)
        dev = z - m * w
        first = np.maximum(dev * dev, 1e-12) if self.level else np.maximum(dev * dev, 1.0)
        g_prior = np.where(np.isfinite(g), g, first)
        # a phase is never scored against a scale narrower than the key's overall one: a few visits cannot
        # estimate a variance well, and a phase that looked calm twice must not turn ordinary noise into alarms;
        # nor narrower than the part of its mean the shrinkage ``w`` withholds (uncertainty about the misfit, not
        # news: a misfit that repeats exactly, spread 0, would otherwise alarm once a period); and never 0 (a
        # series that repeats exactly would put 0/0 = NaN into the detectors' state)
        v_eff = _effective_var(m, v, w, visits, g_prior)
        out = dev / np.sqrt(v_eff)
        if self.tolerance:
            out = self._nearest_fit(mean_all, var_all, rows, phase, z, w, visits, g_prior, out)
        # learning: influence clipped at clip standard deviations of the phase's current scale (not at the
        # phase's first visit, which sets its mean)
        bound = np.where(visits > 0, np.sqrt(self.clip2 * v_eff), np.inf)
        d = np.clip(z - m, -bound, bound)
        alpha = np.maximum(self.alpha, 1.0 / (visits + 1.0))
        new_m = m + alpha * d
        new_v = (1.0 - alpha) * (v + alpha * d * d)
        dev2 = np.minimum(dev * dev, self.clip2 * g_prior)
        seen = np.maximum(np.asarray(steps, dtype=np.float64)[:, None] - (self.period if self.level else 0), 0.0)
        ga = np.maximum(self.g_alpha, 1.0 / (seen + 1.0))
        new_g = (g_prior + ga * (dev2 - g_prior)).mean(axis=1)
        learn_g = valid & (visits[:, 0] > 0) if self.level else valid
        keep = valid[:, None]
        mean_all[rows, phase] = np.where(keep, new_m, m)
        var_all[rows, phase] = np.where(keep, new_v, v)
        a[f"{self.prefix}.g"][rows] = np.where(learn_g, new_g, a[f"{self.prefix}.g"][rows])
        return np.asarray(np.where(keep, out, z))

    def _nearest_fit(self, mean_all: np.ndarray | Narrowed, var_all: np.ndarray | Narrowed, rows: np.ndarray,
                     phase: np.ndarray, z: np.ndarray, w: np.ndarray, visits: np.ndarray, g_prior: np.ndarray,
                     out: np.ndarray) -> np.ndarray:
        """``out``, or ``z`` (a residual, or a value in level form) deseasoned by a phase within ``tolerance``
        rows where that one fits it better (the smallest sum of squares over features): a daily job that starts a
        few minutes early or late is the same job. Only the row's own phase learns."""
        q = (phase[:, None] + self._shifts[None, :]) % self.period  # [n, S] the neighbouring phases
        m, v = mean_all[rows[:, None], q], var_all[rows[:, None], q]  # [n, S, F]
        w3, visits3, g3 = w[:, None, :], visits[:, None, :], g_prior[:, None, :]
        other = (z[:, None, :] - m * w3) / np.sqrt(_effective_var(m, v, w3, visits3, g3))
        fit = (other * other).sum(axis=2)  # [n, S]
        nearest = fit.argmin(axis=1)
        pick = np.arange(len(rows))
        better = fit[pick, nearest] < (out * out).sum(axis=1)
        return np.asarray(np.where(better[:, None], other[pick, nearest], out))


def _effective_var(m: np.ndarray, v: np.ndarray, w: np.ndarray, visits: np.ndarray, g_prior: np.ndarray) -> np.ndarray:
    """The variance a phase scores against (module docstring): its own spread shrunk towards the key's overall
    one, never narrower than that, than the part of its mean the shrinkage withholds, or 0."""
    held = m * (1.0 - w)
    return np.asarray(np.maximum((visits * v + _PRIOR_VISITS * g_prior) / (visits + _PRIOR_VISITS),
                                 np.maximum(np.maximum(g_prior, held * held), _MIN_VAR)))


class Phase:
    """The value against the key's own values at the same phase of its season (a seasonal-naive check).

    A one-step forecaster follows a day that has an unusual shape (a missing peak, a higher plateau, a
    holiday's traffic): each step is close to the last, so its residual stays small. Against the same phase
    of earlier periods the day stands out at every step. ``x`` is normalised by
    :class:`SeasonalNormaliser` in ``level`` form (per-phase EWMA mean and spread of the value, half-life
    ``halflife`` periods, never a narrower scale than the key's overall spread around its phase means), and
    the surprise is the chi-square tail of the normalised value; nothing during the first period (no phase
    seen yet). It needs the model's season (``{"season": {"period": P}}``, the trainer writes it when it finds
    one), whose period it takes unless given its own. A new daily shape is learnt within a few ``halflife``
    periods and stops alarming. State: ``2 P F + 1`` float64 per key.
    """

    name: ClassVar[str] = "phase"

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        if not options.get("period"):
            msg = ("scorer 'phase' needs a season: the model has none (its trainer found no period); "
                   "give one as {\"phase\": {\"period\": P}} or leave 'phase' out")
            raise ValueError(msg)
        self.norm = SeasonalNormaliser(options, n_features, "s.phase", level=True)
        self.f = n_features

    def columns(self) -> list[Column]:
        return self.norm.columns()

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Wave) -> np.ndarray:
        if wave.clock is None:
            msg = "scorer 'phase' needs the model's season (the scorer's seasonal stage sets the clock)"
            raise ValueError(msg)
        steps = wave.clock
        finite = np.isfinite(wave.x).all(axis=1)
        x = wave.x if wave.x_finite else np.where(finite[:, None], wave.x, 0.0)
        out = self.norm.normalise(table, rows, steps, x, finite)
        return np.asarray(np.where(finite & (steps >= self.norm.period),
                                   chi2_surprise((out * out).sum(axis=1), self.f), 0.0))

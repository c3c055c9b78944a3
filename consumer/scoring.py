"""Residual scoring (DESIGN §4): forecast residual -> surprise -> [0, 1] score -> decision -> incident.

For a key at step t with input x_t and the forecast f_{t-1} (and scale s_{t-1}) made one step earlier::

    r_t  = x_t - f_{t-1}                       residual, message units
    z_t  = r_t / s_{t-1}                       s = the model's forecast_scale, else its residual_std
    S_t  = max over the configured detectors   surprise = -log10(tail probability), >= 0
    score_t = 1 - 10**-S_t                     in [0, 1]; high means anomalous (river's convention)
    alarm_t = S_t >= threshold_surprise        once the key has seen ``warmup_steps`` steps

The detectors (``consumer.detectors``: gaussian, likelihood, novelty, volatility, telemanom, stuck) are
chosen by a *spec*, ``"a+b"``; a combination alarms when any member is surprised enough, i.e. on the max of their
surprises (the threshold is calibrated on that max, so the multiple testing is priced in). Alarms are
grouped into incidents (``consumer.incidents``): only the opening point of an incident is an anomaly, and a
point that continues an incident without an event reports (``surprise``, ``score``, ``tail``) only what beats
the incident's peak, and a point below the threshold only a surprise that is its key's recent high; the alarm is
decided on the raw surprise.
Each detector's raw surprise is first calibrated to the key's own tail (``consumer.tailcal``, streaming
peaks-over-threshold; not ``stuck``, whose surprise is already the key's own probability), and the max of
k calibrated surprises is reduced by log10(k) (Bonferroni: the max of k p-values is k times likelier to be
small).
Every detector keeps learning from every point, so regime changes end (see each detector's docstring).
A model whose trainer found a season (scorer options ``{"season": {"period": P}}``, ``export.period``) has its
residual ``z`` deseasoned per phase before the detectors see it (``consumer.seasonal``): a forecaster's misfit
that repeats every period is scored against that phase's own misfit, not as news once a period.

Scoring is kept apart from deciding (:meth:`ResidualScorer.classify`). Per-key scorer state lives in the
state table (columns ``s.*``) and is checkpointed with the model state.

>>> import numpy as np
>>> round(float(gaussian_tail(np.array([1.959964]))[0]), 4)
0.05
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from rnnwatch.consumer.blockscore import Block, calibrate_block, kernel_of
from rnnwatch.consumer.detector_protocol import Detector, Wave
from rnnwatch.consumer.detectors import DETECTORS
from rnnwatch.consumer.incidents import Incidents
from rnnwatch.consumer.seasonal import SEASON_OPTIONS, SeasonalNormaliser
from rnnwatch.consumer.state import Column, StateTable
from rnnwatch.consumer.tailcal import TailCalibrator, calibrate_all
from rnnwatch.consumer.tails import chi2_tail, gaussian_tail, score_of, tail_of
from rnnwatch.consumer.waveops import every, row_all

__all__ = ["DEFAULT_INCIDENT_GAP_STEPS", "SCORE_FIELDS", "SEVERITIES", "STAGE_OPTIONS", "TAIL_OPTIONS",
           "ResidualScorer", "ScoreBatch", "ScorerConfig", "chi2_tail", "gaussian_tail", "parse_options", "parse_spec",
           "severity_of", "surprise_of_threshold"]

SEVERITIES = ("minor", "major", "critical")
DEFAULT_INCIDENT_GAP_STEPS = 4  # alarms up to 3 quiet steps apart are one incident
TAIL_OPTIONS = "tail"  # options of the tail calibration (consumer.tailcal): level, halflife, eta, prior; off=1
STAGE_OPTIONS = (TAIL_OPTIONS, SEASON_OPTIONS)  # option keys of the scorer's stages (not detectors)


def surprise_of_threshold(threshold: float) -> float:
    """The surprise a [0, 1] score threshold stands for: -log10(1 - threshold)."""
    return -math.log10(1.0 - threshold)


def parse_spec(spec: str) -> tuple[str, ...]:
    """``"novelty+likelihood"`` -> ("novelty", "likelihood"); raises ValueError naming the known scorers."""
    names = tuple(p.strip() for p in spec.split("+") if p.strip())
    unknown = [n for n in names if n not in DETECTORS]
    if not names or unknown or len(set(names)) != len(names):
        what = f"unknown scorer {unknown[0]!r}" if unknown else f"scorer spec {spec!r}"
        msg = f"{what}: use one or more of {sorted(DETECTORS)} joined by '+', each at most once"
        raise ValueError(msg)
    return names


def parse_options(text: str | Mapping[str, Any] | None, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Scorer options as JSON: ``{"<scorer>": {"<option>": value}}`` (flat ``{option: value}`` for one scorer)."""
    raw: Any = json.loads(text) if isinstance(text, str) and text.strip() else (text or {})
    if not isinstance(raw, Mapping):
        msg = f"scorer options must be a JSON object, got {raw!r}"
        raise ValueError(msg)
    if len(names) == 1 and raw and not all(isinstance(v, Mapping) for v in raw.values()):
        raw = {names[0]: raw}
    stray = sorted(set(raw) - set(names) - set(STAGE_OPTIONS))
    if stray or not all(isinstance(v, Mapping) for v in raw.values()):
        msg = f"scorer options {dict(raw)!r}: expected {{scorer: {{option: value}}}} for scorers {list(names)}"
        raise ValueError(msg)
    return {k: dict(v) for k, v in raw.items()}


@dataclass(frozen=True)
class ScorerConfig:
    threshold: float  # the [0, 1] score threshold (used when threshold_surprise is None)
    warmup_steps: int
    halflife_steps: float
    residual_std: np.ndarray  # [n_features], used when the model has no forecast_scale output
    uses_model_scale: bool
    spec: str = "gaussian"
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    threshold_surprise: float | None = None
    incident_gap_steps: int = DEFAULT_INCIDENT_GAP_STEPS
    incident_updates: int = 0
    domain: str = "real"  # the model's feature domain: "positive" features get log-returns in `volatility`

    @property
    def surprise_threshold(self) -> float:
        if self.threshold_surprise is not None:
            return self.threshold_surprise
        return surprise_of_threshold(self.threshold)

    @property
    def score_threshold(self) -> float:
        return float(score_of(np.array(self.surprise_threshold)))


@dataclass(frozen=True)
class ScoreBatch:
    """Scores for one wave (one record per key), aligned with the rows passed in."""

    score: np.ndarray  # float64 [n], 1 - 10**-surprise
    tail: np.ndarray  # float64 [n], 10**-surprise (kept for severity without cancellation)
    surprise: np.ndarray  # float64 [n], -log10(tail) >= 0
    alarm: np.ndarray  # bool [n]: surprise over the threshold after warm-up (any point of an incident)
    is_anomaly: np.ndarray  # bool [n]: the point opens an incident
    is_update: np.ndarray  # bool [n]: the point updates its open incident (an update event)
    incident: np.ndarray  # int64 [n]: input offset of the incident's opening record, -1 where no alarm
    expected: np.ndarray  # float32 [n, F], NaN at a key's first step
    residual: np.ndarray  # float32 [n, F]


SCORE_FIELDS = tuple(f.name for f in fields(ScoreBatch))  # every per-record field scoring fills


class ResidualScorer:
    """Vectorised scorer over state-table rows: the configured detectors, the decision and the incidents."""

    def __init__(self, config: ScorerConfig, n_features: int) -> None:
        self.config = config
        self.n_features = n_features
        names = parse_spec(config.spec)
        options = parse_options(dict(config.options), names)
        season = options.get(SEASON_OPTIONS, {})
        defaults: dict[str, dict[str, Any]] = {"gaussian": {"halflife": config.halflife_steps}}
        if season.get("period"):
            # the season's period, and its row spacing, in which the season's phase tolerance is counted
            defaults["phase"] = {k: season[k] for k in ("period", "step_ms", "tolerance_ms") if k in season}
        self.detectors: list[Detector] = [
            DETECTORS[n]({**defaults.get(n, {}), **options.get(n, {})}, n_features, config.domain) for n in names]
        tail = options.get(TAIL_OPTIONS, {})
        # a detector whose surprise is already the key's own probability (``self_calibrated``) is not recalibrated
        self.calibrators: list[TailCalibrator | None] | None = None if tail.get("off") else [
            None if getattr(d, "self_calibrated", False) else
            TailCalibrator(f"s.{n}.tail", **{k: float(v) for k, v in tail.items() if k != "off"})
            for n, d in zip(names, self.detectors, strict=True)]
        season = options.get(SEASON_OPTIONS, {})
        self.season = SeasonalNormaliser(season, n_features) if season.get("period") else None
        self.bonferroni = math.log10(len(names))
        self.incidents = Incidents(config.incident_gap_steps, config.incident_updates)
        self.threshold_surprise = config.surprise_threshold
        kernels = [kernel_of(d) for d in self.detectors]
        # a block runs through the kernels only when every detector has one and no season deseasons z
        blockable = self.season is None and all(k is not None for k in kernels)
        self._kernels: list[Any] | None = kernels if blockable else None

    def columns(self) -> list[Column]:
        f = (self.n_features,)
        cols = [Column.filled("s.forecast", f, np.float32, np.nan), Column.filled("s.scale", f, np.float32, np.nan)]
        for d in self.detectors:
            cols.extend(d.columns())
        cols.extend([*self.season.columns(), *self.season.clock_columns()] if self.season is not None else [])
        for c in self.calibrators or []:
            cols.extend(c.columns() if c is not None else [])
        return [*cols, *Incidents.columns()]

    def score(self, table: StateTable, rows: np.ndarray, x: np.ndarray, steps: np.ndarray,
              offsets: np.ndarray | None = None, event_ms: np.ndarray | None = None) -> ScoreBatch:
        """Score x (one row per key) against the forecasts remembered for ``rows``; every detector learns."""
        a = table.arrays
        expected = a["s.forecast"].take(rows, axis=0)
        residual = x - expected
        scale = a["s.scale"].take(rows, axis=0) if self.config.uses_model_scale else np.broadcast_to(
            self.config.residual_std, residual.shape)
        usable = np.isfinite(scale) & (scale > 0)
        if not every(usable):  # the common case skips this: the model's scales are finite and positive
            scale = np.where(usable, scale, self.config.residual_std)
        z = (residual / scale).astype(np.float64)
        valid = row_all(np.isfinite(z))
        all_valid = every(valid)  # the common case: no masking anywhere (same numbers, fewer operations)
        xf = np.asarray(x, dtype=np.float64)
        z = z if all_valid else np.where(valid[:, None], z, 0.0)
        clock = None
        if self.season is not None:  # event times (``event_ms``) place a key in its season across gaps
            clock = self.season.clock(table, rows, steps, event_ms)
            z = self.season.normalise(table, rows, clock, z, valid)
        wave = Wave(xf, z, valid, self.n_features, all_valid=all_valid, x_finite=every(np.isfinite(xf)), clock=clock)
        surprise = np.zeros(len(rows))
        warm = valid & (steps >= self.config.warmup_steps)  # the tail learns from scored points only
        raws = [d.surprise(table, rows, wave) for d in self.detectors]
        if self.calibrators is not None:  # every detector's tail at once (detectors and tails keep apart columns)
            tailed = [i for i, c in enumerate(self.calibrators) if c is not None]
            done = calibrate_all([self.calibrators[i] for i in tailed], table, rows,  # type: ignore[misc]
                                 [raws[i] for i in tailed], warm)
            for i, calibrated in zip(tailed, done, strict=True):
                raws[i] = calibrated
        for raw in raws:  # in the detectors' order, as each max is taken
            surprise = np.maximum(surprise, raw)
        surprise = np.maximum(surprise - self.bonferroni, 0.0)
        if not all_valid:
            surprise = np.where(valid, surprise, 0.0)
        alarm = self.classify_surprise(surprise) & warm
        offs = steps if offsets is None else offsets  # any per-key increasing number identifies an incident
        marks = self.incidents.mark(table, rows, alarm, steps, offs, surprise)
        # a row continuing an incident reports only what beats its peak, a quiet row only a recent high
        news = self.incidents.recent_high(table, rows, alarm, surprise, marks.news)
        return ScoreBatch(score_of(news), tail_of(news), news, alarm, marks.opens, marks.updates,
                          marks.incident, expected, residual.astype(np.float32, copy=False))

    def score_block(self, table: StateTable, rows: np.ndarray, x: np.ndarray, forecast: np.ndarray,
                    scale: np.ndarray | None, steps: np.ndarray, offsets: np.ndarray,
                    event_ms: np.ndarray) -> ScoreBatch:
        """Score T consecutive steps of the same keys (x, forecast, scale, offsets, event_ms: [T, K, ...]; steps:
        the keys' steps before the first) and remember the last forecast: the same results and state as T times
        :meth:`score` then :meth:`remember`, flattened step-major (``consumer.blockscore`` says how).

        Runs of steps where every value and residual is finite go through the detectors' block kernels; the
        other steps (a key's first step has no forecast yet, a NaN value) go through :meth:`score` one by one.
        """
        a = table.arrays
        T = x.shape[0]
        expected = np.concatenate([a["s.forecast"].take(rows, axis=0)[None], forecast[:-1]])
        steps_t = steps[None, :] + np.arange(T)[:, None]
        sc = self._scales(table, rows, x.shape, scale) if self._kernels is not None else None
        runs = _finite_runs(x, expected) if sc is not None else []
        parts: list[ScoreBatch] = []
        done = 0
        for lo, hi in [*runs, (T, T)]:
            for t in range(done, lo):  # the steps before the run, one by one
                parts.append(self.score(table, rows, x[t], steps_t[t], offsets[t], event_ms[t]))
                self.remember(table, rows, forecast[t], None if scale is None else scale[t])
            fast = None
            if hi > lo and sc is not None:
                fast = self._fast_block(table, rows, x[lo:hi], expected[lo:hi], sc[lo:hi], steps_t[lo:hi],
                                        offsets[lo:hi])
            if fast is not None:
                self.remember(table, rows, forecast[hi - 1], None if scale is None else scale[hi - 1])
                parts.append(fast)
            done = lo if fast is None else hi  # a run the kernels refused goes one by one with the next steps
        return parts[0] if len(parts) == 1 else ScoreBatch(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in SCORE_FIELDS))

    def _scales(self, table: StateTable, rows: np.ndarray, shape: tuple[int, ...],
                scale: np.ndarray | None) -> np.ndarray:
        """The scale each step's residual is divided by: the previous step's forecast_scale, or residual_std."""
        if self.config.uses_model_scale:
            first = table.arrays["s.scale"].take(rows, axis=0)[None]
            sc = np.concatenate([first, scale[:-1]]) if scale is not None else np.broadcast_to(first, shape)
        else:
            sc = np.broadcast_to(self.config.residual_std, shape)
        usable = np.isfinite(sc) & (sc > 0)
        return sc if every(usable) else np.where(usable, sc, self.config.residual_std)

    def _fast_block(self, table: StateTable, rows: np.ndarray, x: np.ndarray, expected: np.ndarray,
                    sc: np.ndarray, steps: np.ndarray, offsets: np.ndarray) -> ScoreBatch | None:
        """Steps of :meth:`score_block` through the detectors' block kernels; None (nothing changed) when a
        z-score or a detector's input is not finite (the step-by-step path handles those)."""
        T, K, F = x.shape
        residual = x - expected
        z = (residual / sc).astype(np.float64)
        xf = np.asarray(x, dtype=np.float64)
        if not every(np.isfinite(z)):
            return None
        block = Block(xf, z, self.n_features)
        kernels = self._kernels or []
        prepared = [k.prepare(table, rows, block) for k in kernels]
        if any(p is None for p in prepared):
            return None
        warm = steps >= self.config.warmup_steps
        surprise = np.zeros((T, K))
        for i, (k, p) in enumerate(zip(kernels, prepared, strict=True)):
            raw = k.run(table, rows, block) if p is True else k.run(table, rows, block, p)
            calibrator = self.calibrators[i] if self.calibrators is not None else None
            if calibrator is not None:
                raw = calibrate_block(calibrator, table, rows, raw, warm)
            surprise = np.maximum(surprise, raw)
        surprise = np.maximum(surprise - self.bonferroni, 0.0)
        alarm = self.classify_surprise(surprise) & warm
        opens, updates = np.zeros((T, K), dtype=bool), np.zeros((T, K), dtype=bool)
        incident = np.full((T, K), -1, dtype=np.int64)
        raw = surprise.copy()
        for t in np.flatnonzero(alarm.any(axis=1)).tolist():  # incidents step by step, only where a key alarms
            marks = self.incidents.mark(table, rows, alarm[t], steps[t], offsets[t], surprise[t])
            opens[t], updates[t], incident[t], surprise[t] = marks.opens, marks.updates, marks.incident, marks.news
        surprise = self.incidents.recent_high_block(table, rows, alarm, raw, surprise)  # as :meth:`score` keeps it
        s = surprise.reshape(T * K)
        return ScoreBatch(score_of(s), tail_of(s), s, alarm.reshape(-1), opens.reshape(-1), updates.reshape(-1),
                          incident.reshape(-1), expected.reshape(T * K, F),
                          residual.astype(np.float32, copy=False).reshape(T * K, F))

    def classify(self, score: np.ndarray) -> np.ndarray:
        """Decision on [0, 1] scores (the threshold's score equivalent)."""
        return np.asarray(score >= self.config.score_threshold)

    def classify_surprise(self, surprise: np.ndarray) -> np.ndarray:
        return np.asarray(surprise >= self.threshold_surprise)

    def remember(self, table: StateTable, rows: np.ndarray, forecast: np.ndarray, scale: np.ndarray | None) -> None:
        """Store this step's forecast (and scale) to score the key's next point against."""
        table.arrays["s.forecast"][rows] = forecast
        if scale is not None:
            table.arrays["s.scale"][rows] = scale

    def severity(self, tail: np.ndarray) -> list[str]:
        return [severity_of(t, 10.0 ** -self.threshold_surprise) for t in tail.tolist()]


def _finite_runs(x: np.ndarray, expected: np.ndarray) -> list[tuple[int, int]]:
    """(lo, hi) of the runs of at least two steps where every key's value and residual are finite."""
    T = x.shape[0]
    ok = np.isfinite(x - expected).reshape(T, -1).all(axis=1) & np.isfinite(x).reshape(T, -1).all(axis=1)
    if every(ok):
        return [(0, T)]
    edges = np.flatnonzero(np.diff(np.r_[0, ok.astype(np.int8), 0]))
    return [(lo, hi) for lo, hi in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True) if hi - lo > 1]


def severity_of(tail: float, tail_at_threshold: float) -> str:
    """minor at the threshold, major 100x rarer, critical 10,000x rarer than the threshold's tail."""
    if tail <= tail_at_threshold * 1e-4:
        return "critical"
    if tail <= tail_at_threshold * 1e-2:
        return "major"
    return "minor"

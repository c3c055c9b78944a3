"""NAB v1.1 scoring (Lavin & Ahmad 2015; numenta/NAB ``nab/sweeper.py``), ported so `evaluate` is comparable
with the published scoreboard.

Per data file, every row gets a *sweep score*: inside a label window the scaled sigmoid of its position
(earlier is better, the window's first row earns ``A_TP``); outside, a false-positive cost ``A_FP``, scaled
down just after a window and full before the first one. Rows of the probationary period (the first
``min(floor(0.15 n), 750)``) are never scored. For a threshold, the detections are the rows whose anomaly
score is ``>= threshold``; a window counts its best (= earliest) detection, or ``-A_FN`` without one; false
positives add up. The corpus-wide threshold is the one that maximises the summed raw score over all files
(NAB's optimiser sweeps every distinct score), and a raw score is normalised as
``100 * (raw - null) / (perfect - null)`` with ``null = -A_FN * windows`` (a detector that flags nothing)
and ``perfect = A_TP * windows``.

>>> round(scaled_sigmoid(-1.0), 5), round(scaled_sigmoid(0.0), 5), scaled_sigmoid(3.0)
(0.98661, 0.0, -1.0)
>>> probation_rows(4032), probation_rows(22695)
(604, 750)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "PROBATION_FRACTION", "PROFILES", "AnomalyPoint", "CostMatrix", "LabeledSeries", "ThresholdScore",
    "calc_score_by_threshold", "calc_sweep_score", "incident_openers", "normalised", "optimise_incident_threshold",
    "optimise_threshold", "probation_rows",
    "scaled_sigmoid", "score_at_threshold",
]

PROBATION_FRACTION = 0.15
_PROBATION_CAP_ROWS = 5000  # NAB caps the probationary period at fraction * 5000 rows (750 at 15 %)


@dataclass(frozen=True)
class CostMatrix:
    tp: float
    fp: float
    fn: float


# NAB v1.1 config/profiles.json (tnWeight is unused by the scorer).
PROFILES: dict[str, CostMatrix] = {
    "standard": CostMatrix(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": CostMatrix(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": CostMatrix(tp=1.0, fp=0.11, fn=2.0),
}


class AnomalyPoint(NamedTuple):
    """One scored row: its detector score, its sweep score and its window (None outside; 'probationary')."""

    timestamp: object
    anomaly_score: float
    sweep_score: float
    window: str | None


class ThresholdScore(NamedTuple):
    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    total: int


@dataclass(frozen=True)
class LabeledSeries:
    """A data file as the scorer sees it: row timestamps, anomaly scores, window limits (inclusive)."""

    name: str
    timestamps: Sequence[object]
    scores: np.ndarray
    windows: Sequence[tuple[object, object]]


def scaled_sigmoid(relative_position: float) -> float:
    """2 / (1 + e^(5 y)) - 1: 0.987 at a window's left edge (y = -1), 0 at its right edge, -1 from y >= 3."""
    if relative_position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * relative_position)) - 1.0


def probation_rows(n_rows: int, fraction: float = PROBATION_FRACTION) -> int:
    """Rows at the head of a file that are learnt from but never scored: min(floor(f n), f * 5000)."""
    return int(min(math.floor(fraction * n_rows), fraction * _PROBATION_CAP_ROWS))


def calc_sweep_score(timestamps: Sequence[object], scores: Sequence[float], windows: Sequence[tuple[object, object]],
                     name: str, cost: CostMatrix, fraction: float = PROBATION_FRACTION) -> list[AnomalyPoint]:
    """Per row, the score it earns if detected (NAB ``Sweeper.calcSweepScore``).

    Window limits are timestamps of rows of the file, in time order; window names are ``name|start``.
    """
    if len(timestamps) != len(scores):
        msg = f"{name}: {len(timestamps)} timestamps but {len(scores)} scores"
        raise ValueError(msg)
    index = {t: i for i, t in enumerate(timestamps)}
    pending = list(windows)
    max_tp = scaled_sigmoid(-1.0)
    probation = probation_rows(len(timestamps), fraction)
    out: list[AnomalyPoint] = []
    cur: tuple[object, object] | None = None
    cur_name: str | None = None
    cur_right = cur_width = 0
    prev_right: int | None = None
    prev_width = 0
    for i, (t, s) in enumerate(zip(timestamps, scores, strict=True)):
        if pending and t == pending[0][0]:
            cur = pending.pop(0)
            cur_name = f"{name}|{cur[0]}"
            cur_right = index[cur[1]]
            cur_width = cur_right - index[cur[0]] + 1
        if cur is not None:
            weighted = scaled_sigmoid(-(cur_right - i + 1) / cur_width) * cost.tp / max_tp
        else:
            past = 3.0 if prev_right is None else abs(prev_right - i) / (prev_width - 1)
            weighted = scaled_sigmoid(past) * cost.fp
        out.append(AnomalyPoint(t, float(s), weighted, cur_name if i >= probation else "probationary"))
        if cur is not None and t == cur[1]:
            prev_right, prev_width = i, cur_width
            cur, cur_name = None, None
    return out


def calc_score_by_threshold(points: Sequence[AnomalyPoint], fn_weight: float) -> list[ThresholdScore]:
    """Raw score at every distinct threshold, highest first (NAB ``Sweeper.calcScoreByThreshold``).

    The first entry detects nothing (threshold 1.1 as in NAB for scores in [0, 1]; infinity for unbounded
    scores such as a log-scale surprise); each later entry detects every row whose score is at least its
    threshold.
    """
    scorable = sorted((p for p in points if p.window != "probationary"), key=lambda p: p.anomaly_score, reverse=True)
    parts: dict[str | None, float] = {None: 0.0}
    for p in scorable:
        if p.window is not None:
            parts[p.window] = -fn_weight
    tn = sum(1 for p in scorable if p.window is None)
    fn = len(scorable) - tn
    tp = fp = 0
    out: list[ThresholdScore] = []
    threshold = 1.1 if not scorable or scorable[0].anomaly_score <= 1.0 else math.inf
    for p in scorable:
        if p.anomaly_score != threshold:
            out.append(ThresholdScore(threshold, sum(parts.values()), tp, tn, fp, fn, tp + tn + fp + fn))
            threshold = p.anomaly_score
        if p.window is None:
            fp, tn = fp + 1, tn - 1
            parts[None] += p.sweep_score
        else:
            tp, fn = tp + 1, fn - 1
            parts[p.window] = max(parts[p.window], p.sweep_score)
    out.append(ThresholdScore(threshold, sum(parts.values()), tp, tn, fp, fn, tp + tn + fp + fn))
    return out


def _points(corpus: Sequence[LabeledSeries], cost: CostMatrix, fraction: float) -> list[AnomalyPoint]:
    points: list[AnomalyPoint] = []
    for s in corpus:
        points.extend(calc_sweep_score(s.timestamps, s.scores.tolist(), s.windows, s.name, cost, fraction))
    return points


def optimise_threshold(corpus: Sequence[LabeledSeries], cost: CostMatrix,
                       fraction: float = PROBATION_FRACTION) -> ThresholdScore:
    """The corpus-wide threshold with the best summed raw score (NAB v1.1 ``optimizeThreshold``).

    Ties go to the highest threshold (the fewest detections), as a stable sort of NAB's list does.
    """
    table = calc_score_by_threshold(_points(corpus, cost, fraction), cost.fn)
    return max(table, key=lambda r: r.score)


def score_at_threshold(corpus: Sequence[LabeledSeries], cost: CostMatrix, threshold: float,
                       fraction: float = PROBATION_FRACTION) -> ThresholdScore:
    """Raw score when every row scoring ``>= threshold`` is a detection (NAB ``scoreDataSet``, summed)."""
    points = [p if p.anomaly_score >= threshold else p._replace(anomaly_score=-math.inf)
              for p in _points(corpus, cost, fraction)]
    detected = [p._replace(anomaly_score=1.0) for p in points if p.anomaly_score != -math.inf]
    rest = [p._replace(anomaly_score=0.0) for p in points if p.anomaly_score == -math.inf]
    table = calc_score_by_threshold([*detected, *rest], cost.fn)
    row = next((r for r in table if r.threshold == 1.0), table[0])
    return row._replace(threshold=threshold)


def normalised(raw: float, n_windows: int, cost: CostMatrix) -> float | None:
    """100 (raw - null) / (perfect - null); None for a corpus without windows (nothing to normalise by)."""
    if n_windows == 0:
        return None
    null, perfect = -cost.fn * n_windows, cost.tp * n_windows
    return 100.0 * (raw - null) / (perfect - null)


def incident_openers(scores: np.ndarray, threshold: float, gap_steps: int) -> np.ndarray:
    """The rows the product flags at ``threshold``: alarms that open an incident (``consumer.incidents``).

    An alarm continues its key's incident when the previous alarm was at most ``gap_steps`` rows earlier, so
    a row opens one exactly when it alarms and none of the ``gap_steps`` rows before it did.
    """
    alarm = np.asarray(scores) >= threshold
    before = np.zeros_like(alarm)
    for k in range(1, gap_steps + 1):
        before[k:] |= alarm[:-k]
    return np.asarray(alarm & ~before)


def optimise_incident_threshold(corpus: Sequence[LabeledSeries], cost: CostMatrix, gap_steps: int,
                                fraction: float = PROBATION_FRACTION, candidates: int = 3000) -> ThresholdScore:
    """The corpus-wide threshold whose incident-opening rows (:func:`incident_openers`) score best.

    NAB's optimiser counts every row over the threshold; the product alerts once per incident, so this is the
    score of the decisions it would ship at the best threshold. A row opens an incident for the thresholds in
    ``(max of the gap_steps scores before it, its score]``, not a set that grows as the threshold falls, so
    the highest ``candidates`` distinct scores are each tried (vectorised; same numbers as
    :func:`score_at_threshold` on the openers; lower thresholds alarm on most rows and never win). Ties go to
    the highest threshold.
    """
    weights, scores, before, window = [], [], [], []
    n_windows = 0
    for s in corpus:
        points = calc_sweep_score(s.timestamps, s.scores.tolist(), s.windows, s.name, cost, fraction)
        values = np.asarray(s.scores, dtype=np.float64)
        prev = np.full(len(values), -np.inf)
        for k in range(1, gap_steps + 1):
            prev[k:] = np.maximum(prev[k:], values[:-k])
        ids: dict[str, int] = {}
        win = np.array([-2 if p.window == "probationary" else -1 if p.window is None
                        else n_windows + ids.setdefault(p.window, len(ids)) for p in points], dtype=np.int64)
        n_windows += len(s.windows)
        keep = win != -2
        weights.append(np.array([p.sweep_score for p in points])[keep])
        scores.append(values[keep])
        before.append(prev[keep])
        window.append(win[keep])
    w, v, m = (np.concatenate(a) if a else np.zeros(0) for a in (weights, scores, before))
    win = np.concatenate(window).astype(np.int64) if window else np.zeros(0, dtype=np.int64)
    inside = win >= 0
    rows_inside = int(inside.sum())
    start = 1.1 if not len(v) or v.max() <= 1.0 else math.inf
    best = ThresholdScore(start, -cost.fn * n_windows, 0, len(v) - rows_inside, 0, rows_inside, len(v))
    for t in np.unique(v)[::-1][:candidates]:
        opens = (v >= t) & (m < t)
        fp_rows, tp_rows = opens & ~inside, opens & inside
        parts = np.full(n_windows, -cost.fn)
        np.maximum.at(parts, win[tp_rows], w[tp_rows])
        total = float(w[fp_rows].sum() + parts.sum())
        if total > best.score:
            tp, fp = int(tp_rows.sum()), int(fp_rows.sum())
            best = ThresholdScore(float(t), total, tp, len(v) - rows_inside - fp, fp, rows_inside - tp, len(v))
    return best

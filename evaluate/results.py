"""NAB numbers for a corpus run: per scorer and profile, (a) at the best corpus-wide threshold over the
anomaly score (NAB's optimiser) and (b) for the decisions as shipped (``is_anomaly``); per category too.
Also (``swept_surprise``) the best threshold over the surprise ``-log10(tail)``: the same ranking as the
score wherever the score has not saturated at 1.0, so the gap between the two shows what saturation costs.
And (``swept_incidents``) the best threshold over the surprise when, as the product does, only the row that
opens an incident is a detection (``consumer.incidents``, the default gap): NAB's optimiser charges every row
of an alarm burst outside a window as a false positive, the product alerts once.

Rows the runtime skipped (NaN score) are never detections. The null and perfect detectors that normalise a
score are those of the (sub)corpus being reported, so a category's score is comparable across detectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnwatch.consumer.scoring import DEFAULT_INCIDENT_GAP_STEPS
from rnnwatch.evaluate.corpus import label_windows
from rnnwatch.evaluate.false_alarms import false_alarms
from rnnwatch.evaluate.harness import SeriesRun
from rnnwatch.evaluate.nab import (
    PROFILES,
    LabeledSeries,
    ThresholdScore,
    incident_openers,
    normalised,
    optimise_incident_threshold,
    optimise_threshold,
    score_at_threshold,
)

__all__ = ["corpus_scores"]


def _labeled(runs: Sequence[SeriesRun], label: str, column: str) -> list[LabeledSeries]:
    out = []
    for r in runs:
        scored = r.runs[label]
        if column == "is_anomaly":
            values = scored.is_anomaly.astype(np.float64)
        else:  # a skipped row (NaN) is never a detection
            values = np.nan_to_num(getattr(scored, column), nan=-1.0, posinf=np.finfo(np.float64).max)
        times = r.event_ms.tolist()
        out.append(LabeledSeries(r.series.name, times, values, label_windows(times, r.series.windows_ms)))
    return out


def _entry(row: ThresholdScore, n_windows: int, profile: str) -> dict[str, Any]:
    return {"score": _round(normalised(row.score, n_windows, PROFILES[profile])), "raw": round(row.score, 4),
            "threshold": row.threshold if math.isfinite(row.threshold) else None,
            "tp_rows": row.tp, "fp_rows": row.fp, "fn_rows": row.fn}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _scores(columns: dict[str, list[LabeledSeries]], thresholds: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    n_windows = sum(len(s.windows) for s in columns["score"])
    out: dict[str, Any] = {"windows": n_windows}
    for key, column in (("swept", "score"), ("shipped", "is_anomaly"), ("swept_surprise", "surprise")):
        block = {}
        for name, cost in PROFILES.items():
            if column == "is_anomaly":
                row = score_at_threshold(columns[column], cost, 1.0)
            elif thresholds is not None:
                row = score_at_threshold(columns[column], cost, thresholds[key][name])
            else:
                row = optimise_threshold(columns[column], cost)
            block[name] = _entry(row, n_windows, name)
        out[key] = block
    block = {}
    for name, cost in PROFILES.items():
        if thresholds is None:
            row = optimise_incident_threshold(columns["surprise"], cost, DEFAULT_INCIDENT_GAP_STEPS)
        else:
            t = thresholds["swept_incidents"][name]
            opens = [LabeledSeries(s.name, s.timestamps,
                                   incident_openers(s.scores, t, DEFAULT_INCIDENT_GAP_STEPS).astype(np.float64),
                                   s.windows) for s in columns["surprise"]]
            row = score_at_threshold(opens, cost, 1.0)._replace(threshold=t)
        block[name] = _entry(row, n_windows, name)
    out["swept_incidents"] = block
    return out


def corpus_scores(runs: Sequence[SeriesRun], label: str) -> dict[str, Any]:
    """The JSON block for one scorer: corpus scores, per category (at the corpus thresholds), per series."""
    columns = {c: _labeled(runs, label, c) for c in ("score", "is_anomaly", "surprise")}
    total = _scores(columns, None)
    thresholds = {key: {name: math.inf if (t := total[key][name]["threshold"]) is None else float(t)
                        for name in PROFILES} for key in ("swept", "swept_surprise", "swept_incidents")}
    categories = {}
    for cat in sorted({r.series.category for r in runs}):
        idx = [i for i, r in enumerate(runs) if r.series.category == cat]
        categories[cat] = _scores({c: [v[i] for i in idx] for c, v in columns.items()}, thresholds)
    series = []
    for r, lab in zip(runs, columns["score"], strict=True):
        flags = r.runs[label].is_anomaly
        series.append({"name": r.series.name, "rows": r.rows, "scored": r.rows - sum(r.refused.values()),
                       "refused": r.refused, "probation": r.probation,
                       "windows": len(lab.windows), "flagged": int(flags.sum()),
                       "flagged_fraction": round(float(flags[r.probation:].mean()) if len(flags) > r.probation
                                                 else 0.0, 5),
                       "model_threshold": r.threshold, "forecast_weight": list(r.forecast_weight) or None,
                       "train_seconds": round(r.train_seconds, 2),
                       "score_seconds": round(r.score_seconds, 2)})
    return {**total, "categories": categories, "series": series, "false_alarms": false_alarms(runs, label)}

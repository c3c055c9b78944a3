"""NAB numbers for a corpus run: per scorer and profile, (a) at the best corpus-wide threshold over the
anomaly score (NAB's optimiser) and (b) for the decisions as shipped (``is_anomaly``); per category too.

Rows the runtime skipped (NaN score) are never detections. The null and perfect detectors that normalise a
score are those of the (sub)corpus being reported, so a category's score is comparable across detectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnwatch.evaluate.corpus import label_windows
from rnnwatch.evaluate.harness import SeriesRun
from rnnwatch.evaluate.nab import (
    PROFILES,
    LabeledSeries,
    ThresholdScore,
    normalised,
    optimise_threshold,
    score_at_threshold,
)

__all__ = ["corpus_scores"]


def _labeled(runs: Sequence[SeriesRun], label: str, decisions: bool) -> list[LabeledSeries]:
    out = []
    for r in runs:
        scored = r.runs[label]
        values = scored.is_anomaly.astype(np.float64) if decisions else np.nan_to_num(scored.score, nan=-1.0)
        times = r.event_ms.tolist()
        out.append(LabeledSeries(r.series.name, times, values, label_windows(times, r.series.windows_ms)))
    return out


def _entry(row: ThresholdScore, n_windows: int, profile: str) -> dict[str, Any]:
    return {"score": _round(normalised(row.score, n_windows, PROFILES[profile])), "raw": round(row.score, 4),
            "threshold": row.threshold, "tp_rows": row.tp, "fp_rows": row.fp, "fn_rows": row.fn}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _scores(corpus: list[LabeledSeries], decisions: list[LabeledSeries],
            thresholds: dict[str, float] | None) -> dict[str, Any]:
    n_windows = sum(len(s.windows) for s in corpus)
    swept, shipped = {}, {}
    for name, cost in PROFILES.items():
        best = (score_at_threshold(corpus, cost, thresholds[name]) if thresholds is not None
                else optimise_threshold(corpus, cost))
        swept[name] = _entry(best, n_windows, name)
        shipped[name] = _entry(score_at_threshold(decisions, cost, 1.0), n_windows, name)
    return {"windows": n_windows, "swept": swept, "shipped": shipped}


def corpus_scores(runs: Sequence[SeriesRun], label: str) -> dict[str, Any]:
    """The JSON block for one scorer: corpus scores, per category (at the corpus thresholds), per series."""
    corpus, decisions = _labeled(runs, label, False), _labeled(runs, label, True)
    total = _scores(corpus, decisions, None)
    thresholds = {name: float(total["swept"][name]["threshold"]) for name in PROFILES}
    categories = {}
    for cat in sorted({r.series.category for r in runs}):
        idx = [i for i, r in enumerate(runs) if r.series.category == cat]
        categories[cat] = _scores([corpus[i] for i in idx], [decisions[i] for i in idx], thresholds)
    series = []
    for r, lab in zip(runs, corpus, strict=True):
        flags = r.runs[label].is_anomaly
        series.append({"name": r.series.name, "rows": len(r.event_ms), "probation": r.probation,
                       "windows": len(lab.windows), "flagged": int(flags.sum()),
                       "flagged_fraction": round(float(flags[r.probation:].mean()) if len(flags) > r.probation
                                                 else 0.0, 5),
                       "model_threshold": r.threshold, "train_seconds": round(r.train_seconds, 2),
                       "score_seconds": round(r.score_seconds, 2)})
    return {**total, "categories": categories, "series": series}

"""Out-of-sample false alarms of the shipped decisions (issue 12 item 7), and the label density that sets NAB's
best threshold.

The trainer writes a threshold whose documented meaning is a false-alarm rate: ``10**-threshold_surprise`` alarm
rows per row (``rnnwatch.export.calibrate``). `evaluate` checks it on rows no model was fitted on: after the
probationary (training) rows and outside every label window, the rows over the threshold (``alarm``) and the rows
that open an incident (``is_anomaly``, what the product alerts on) per scored row, pooled over the corpus and per
series, beside the documented rate.

It also reports ``windows_per_row``, the corpus' anomaly density. NAB's cost model makes the best threshold of a
calibrated surprise depend on it: lowering the threshold by ds adds about ``ln(10) 10**-s ds`` false positives
per row (cost ``A_FP`` each) and catches anomalies at ``density * f(s) ds`` per row (worth about ``A_TP + A_FN``
each, ``f`` the density of their peak surprise), so the optimum sits near ``s* = log10(A_FP ln 10 /
((A_TP + A_FN) f(s*) density))``: ten times denser labels move it down by one decade of surprise, whatever the
calibration. A label-free threshold cannot know the density, which is why one documented false-alarm rate cannot
be NAB-optimal on two corpora whose densities differ (measured: NAB's 18 series 2.4e-4 windows per row, best
surprise 3.0; the price corpus 1.9e-3, best 2.1: log10 of the density ratio is 0.90; their false-alarm rates:
NAB 0.56e-3, the price corpus 1.16e-3 / 1.47e-3 / 1.53e-3 on seeds 0 / 1 / 2, single rows on real market days of
keys with heavy-tailed returns, whose tail calibration under-prices their far tail: README "Scorers").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnwatch.evaluate.harness import SeriesRun

__all__ = ["false_alarms", "unlabeled_rows"]


def unlabeled_rows(run: SeriesRun, label: str) -> np.ndarray:
    """bool [T]: the rows after the probationary period, scored, and outside every label window."""
    t = run.event_ms
    keep = np.isfinite(run.runs[label].surprise)
    keep[: min(run.probation, len(keep))] = False
    for start, end in run.series.windows_ms:
        keep &= ~((t >= start) & (t <= end))
    return np.asarray(keep)


def _rates(counts: np.ndarray, documented: float) -> dict[str, Any]:
    rows, alarms, incidents, windows, scored = (int(c) for c in counts)
    return {"rows": rows, "alarm_rows": alarms, "incidents": incidents,
            "alarm_rate": round(alarms / rows, 6) if rows else None,
            "incident_rate": round(incidents / rows, 6) if rows else None,
            "documented_rate": float(f"{documented:.4g}"),
            "windows_per_row": float(f"{windows / scored:.4g}") if scored else None}


def false_alarms(runs: Sequence[SeriesRun], label: str) -> dict[str, Any]:
    """Pooled and per-series false-alarm rates on unlabeled, unfitted rows, beside the documented rate.

    The corpus' documented rate is the mean of its models' (each ``1 - threshold``: ``10**-threshold_surprise``).
    """
    per = []
    total = np.zeros(5, dtype=np.int64)  # rows, alarm rows, incidents, windows, rows after probation
    for r in runs:
        scored = r.runs[label]
        mask = unlabeled_rows(r, label)
        alarm = scored.alarm if scored.alarm is not None else np.zeros_like(mask)
        counts = np.array([mask.sum(), (alarm & mask).sum(), (scored.is_anomaly & mask).sum(),
                           len(r.series.windows_ms), max(0, len(mask) - r.probation)], dtype=np.int64)
        total += counts
        per.append({"name": r.series.name, **_rates(counts, 1.0 - r.threshold)})
    documented = float(np.mean([1.0 - r.threshold for r in runs])) if runs else 0.0
    return {**_rates(total, documented), "series": per}

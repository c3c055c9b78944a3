"""The terminal view of an `evaluate` report: per scorer, one row per category and one for the corpus.

Scores are NAB-normalised (0 = flag nothing, 100 = perfect): swept (best corpus threshold over the anomaly
score), shipped (the decisions), surprise (best threshold over -log10 tail), incidents (best threshold over
the surprise, one detection per incident, as the product alerts); a category without label windows
shows its raw score (the cost of its false positives, ``r``) instead.

>>> print(render_table({"scorers": [{"scorer": "model", "options": {}, "windows": 2,
...     "swept": {p: {"score": 50.0, "raw": 0.5} for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")},
...     "shipped": {p: {"score": None, "raw": -2.0} for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")},
...     "categories": {}, "series": []}]}).splitlines()[-1])
all                              2   50.0   50.0   50.0 |  -2.0r  -2.0r  -2.0r
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rnnwatch.consumer.html_report import SeriesPlot, render_report

if TYPE_CHECKING:
    from rnnwatch.evaluate.harness import SeriesRun

__all__ = ["render_html", "render_table"]

_PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def _cells(block: dict[str, Any]) -> str:
    def num(entry: dict[str, Any]) -> str:
        # a category without windows has no normalised score: its raw score (false-positive cost) instead
        return f"{entry['score']:6.1f}" if entry["score"] is not None else f"{entry['raw']:5.1f}r"

    swept = " ".join(num(block["swept"][p]) for p in _PROFILES)
    shipped = " ".join(num(block["shipped"][p]) for p in _PROFILES)
    surprise = " ".join(num(block["swept_surprise"][p]) for p in _PROFILES) if "swept_surprise" in block else ""
    incidents = " ".join(num(block["swept_incidents"][p]) for p in _PROFILES) if "swept_incidents" in block else ""
    return f"{block['windows']:3d} {swept} | {shipped} | {surprise} | {incidents}".rstrip(" |")


def render_table(report: dict[str, Any]) -> str:
    lines = []
    for s in report["scorers"]:
        lines.append(f"scorer {s['scorer']} {s['options'] or ''}".rstrip())
        lines.append(f"{'category':<30} win  swept: std  lowFP  lowFN | shipped: std lowFP lowFN"
                     " | surprise: std lowFP lowFN | incidents: std lowFP lowFN")
        for cat, block in s["categories"].items():
            lines.append(f"{cat:<30} {_cells(block)}")
        lines.append(f"{'all':<30} {_cells(s)}")
        if "false_alarms" in s:
            fa = s["false_alarms"]
            lines.append(f"false alarms on unfitted, unlabeled rows: {fa['alarm_rate']} alarm rows and "
                         f"{fa['incident_rate']} incidents per row (documented {fa['documented_rate']} alarm rows); "
                         f"label density {fa['windows_per_row']} windows per row")
    for spread in report.get("seed_spread", []):
        lines.append(_spread_line(spread))
    return "\n".join(lines)


def _spread_line(spread: dict[str, Any]) -> str:
    """``seed spread of SCORER over N seeds: swept std 71.0 ± 0.2 [70.8, 71.1] ... | shipped ...``."""
    short = {"standard": "std", "reward_low_FP_rate": "lowFP", "reward_low_FN_rate": "lowFN"}
    parts = []
    for block in ("swept", "shipped"):
        cells = [f"{short[p]} {e['mean']:.1f} ± {e['sd']:.1f} [{e['min']:.1f}, {e['max']:.1f}]"
                 for p, e in spread[block].items()]
        parts.append(f"{block} " + ", ".join(cells))
    return f"seed spread of {spread['scorer']} over {len(spread['seeds'])} seeds: " + " | ".join(parts)


def render_html(report: dict[str, Any], runs: Sequence[SeriesRun], labels: Sequence[str]) -> str:
    """The HTML report (the renderer `score --report` uses): corpus scores, then a plot per series with its
    label windows and each scorer's flags."""
    summary = [("corpus", str(report["corpus"])), ("series", str(report["series"])),
               ("train", ", ".join(f"{k}={v}" for k, v in report["train"].items() if v not in (None, [])))]
    for s in report["scorers"]:
        name = f"{s['scorer']} {s['options'] or ''}".rstrip()
        for kind in ("swept", "shipped"):
            cells = ", ".join(f"{p} {_text(s[kind][p])}" for p in _PROFILES)
            summary.append((f"{name}: {kind}", cells))
        cells = ", ".join(f"{p} {_text(s['swept_surprise'][p])}" for p in _PROFILES)
        summary.append((f"{name}: swept over surprise", cells))
    plots = []
    for run in runs:
        per = {lab: run.runs[lab] for lab in labels}
        notes = [f"{len(run.event_ms)} rows, probation {run.probation},",
                 *(f"{lab}: {int(r.is_anomaly.sum())} flagged;" for lab, r in per.items())]
        plots.append(SeriesPlot(run.series.name, run.event_ms, run.values, expected=run.expected,
                                flags=[(lab, r.is_anomaly) for lab, r in per.items()],
                                windows_ms=run.series.windows_ms, notes=notes,
                                probation_end_ms=_probation_end(run)))
    return render_report(f"rnnwatch evaluate: {report['corpus']}", plots, summary=summary)


def _text(entry: dict[str, Any]) -> str:
    return f"{entry['score']:.1f}" if entry["score"] is not None else f"raw {entry['raw']:.2f}"


def _probation_end(run: SeriesRun) -> int | None:
    """Event time of the last probationary row still in the run (refused rows are not in ``event_ms``)."""
    last = min(run.probation, len(run.event_ms)) - 1
    return int(run.event_ms[last]) if last >= 0 else None

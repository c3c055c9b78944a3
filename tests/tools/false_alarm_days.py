"""List the false alarms `evaluate` counts: every alarm row on a corpus' unfitted, unlabeled rows, with its day.

    .venv/bin/python -m tests.tools.false_alarm_days --corpus build/price-corpus-0 [--jobs 2]

Trains and scores exactly as `rnnwatch evaluate` does (``rnnwatch.evaluate.harness``: the model's own scorer,
its shipped threshold) and prints, per alarm row the `false alarms` line counts (``evaluate.false_alarms``): the
series, the row's time, its log-return, that return in units of the previous 60 returns' standard deviation,
how many rows away the nearest label window is (an injected shock's aftermath sits close to one), and the
members of the models' scorer (``--members``, default that of prices) whose own calibrated surprise, each run
alone, reaches the threshold plus the combination's Bonferroni log10(k) (a row continuing a member's own
incident reports only what beats its peak, so a member can fire unlisted). So whether a corpus' excess over
the documented rate is real market days, a few keys or the aftermath of labeled shocks can be read off
(README "Scorers", heavy tails).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnwatch.consumer.scoring import parse_spec
from rnnwatch.evaluate.corpus import find_series
from rnnwatch.evaluate.false_alarms import unlabeled_rows
from rnnwatch.evaluate.harness import ScorerSpec, SeriesRun, TrainConfig, run_corpus
from rnnwatch.export.calibrate import DEFAULT_SCORERS

_LOOKBACK = 60  # the price corpus sizes its shocks in this many returns' standard deviation


def alarm_days(run: SeriesRun, members: Sequence[str]) -> list[str]:
    """One line per alarm row on the series' unlabeled rows (``members``: the default scorer's, run alone)."""
    label = ScorerSpec().label
    mask = unlabeled_rows(run, label)
    alarm = run.runs[label].alarm
    rows = np.flatnonzero(mask & alarm) if alarm is not None else np.zeros(0, dtype=np.int64)
    x = run.values.astype(np.float64)
    ret = np.r_[np.nan, np.diff(np.log(x))] if (x > 0).all() else np.r_[np.nan, np.diff(x)]
    labeled = np.flatnonzero(~mask & (np.arange(len(mask)) >= run.probation) & np.isfinite(run.runs[label].surprise))
    bar = -math.log10(1.0 - run.threshold) + math.log10(len(members))
    out = []
    for i in rows.tolist():
        past = ret[max(1, i - _LOOKBACK):i]
        sd = float(np.std(past)) if past.size > 1 else float("nan")
        near = int(np.min(np.abs(labeled - i))) if labeled.size else -1
        fired = [f"{m}={run.runs[m].surprise[i]:.1f}" for m in members if run.runs[m].surprise[i] >= bar]
        day = str(np.datetime64(int(run.event_ms[i]), "ms"))[:10]
        out.append(f"{run.series.name:24s} {day}  return {ret[i]:+.4f} ({ret[i] / sd:+5.1f} sd{_LOOKBACK})  "
                   f"{near:5d} rows to a label window  members {' '.join(fired) or '-'}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.tools.false_alarm_days", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, type=Path)
    p.add_argument("--members", default=DEFAULT_SCORERS["positive"],
                   help="The spec the corpus' models ship, whose members are run alone (default: that of prices).")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    members = list(parse_spec(args.members))
    runs = run_corpus(find_series(args.corpus), TrainConfig(), [ScorerSpec(), *(ScorerSpec(m) for m in members)],
                      jobs=args.jobs)
    rows = unlabeled = 0
    for run in runs:
        lines = alarm_days(run, members)
        rows += len(lines)
        unlabeled += int(unlabeled_rows(run, ScorerSpec().label).sum())
        for line in lines:
            print(line)
    print(f"{rows} alarm rows on {unlabeled} unlabeled rows: {rows / max(unlabeled, 1):.3g} per row", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

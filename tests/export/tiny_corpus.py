"""A tiny labeled corpus in NAB's layout (2 series, one category): fast enough for every `evaluate` test."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROWS = 500
START = datetime(2021, 3, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)


def _stamp(i: int) -> str:
    return (START + i * STEP).strftime("%Y-%m-%d %H:%M:%S")


def write_tiny_corpus(root: Path) -> Path:
    """``root/data/synthetic/{sine_spike,walk_shift}.csv`` and ``root/labels/combined_windows.json``."""
    rng = np.random.default_rng(12)
    t = np.arange(ROWS)
    series = {
        "sine_spike": (10 + 3 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 0.2, ROWS), 330, "spike"),
        "walk_shift": (50 + np.cumsum(rng.normal(0, 0.1, ROWS)), 400, "shift"),
    }
    labels = {}
    (root / "data" / "synthetic").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, (values, at, kind) in series.items():
        if kind == "spike":
            values[at] += 8
        else:
            values[at:] += 6
        with (root / "data" / "synthetic" / f"{name}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value"])
            w.writerows([_stamp(i), f"{v:.5f}"] for i, v in enumerate(values))
        labels[f"synthetic/{name}.csv"] = [[_stamp(at - 10) + ".000000", _stamp(at + 10) + ".000000"]]
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels, indent=2))
    return root


DIRTY = {200: "NaN", 250: "n/a", 325: "inf"}  # row -> value: non_finite, non_numeric, non_finite (in the window)
DIRTY_TIME = {400: "yesterday"}  # row -> timestamp: bad_timestamp


def write_dirty_corpus(root: Path, clean: Path) -> Path:
    """``clean``'s ``sine_spike`` series with a few rows `run` would dead-letter (``DIRTY``, ``DIRTY_TIME``),
    same labels.

    One bad row lies inside the label window, so aligning labels by row position instead of event time
    would shift the window.
    """
    (root / "data" / "synthetic").mkdir(parents=True)
    (root / "labels").mkdir()
    with (clean / "data" / "synthetic" / "sine_spike.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    for i, value in DIRTY.items():
        rows[i + 1][1] = value
    for i, stamp in DIRTY_TIME.items():
        rows[i + 1][0] = stamp
    with (root / "data" / "synthetic" / "sine_spike.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    labels = json.loads((clean / "labels" / "combined_windows.json").read_text())
    dirty = {"synthetic/sine_spike.csv": labels["synthetic/sine_spike.csv"]}
    (root / "labels" / "combined_windows.json").write_text(json.dumps(dirty, indent=2))
    return root

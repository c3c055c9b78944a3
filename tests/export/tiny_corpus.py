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

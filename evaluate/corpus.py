"""A labeled corpus in NAB's layout: ``data/<category>/<series>.csv`` (``timestamp,value``) and
``labels/combined_windows.json`` (per ``<category>/<series>.csv``, a list of ``[start, end]`` timestamps).

Window limits are matched to rows by event time (NAB's ``Window``: the rows with ``start <= t <= end``), so a
label written as ``2014-02-19 10:50:00.000000`` finds the row ``2014-02-19 10:50:00``.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.offline import event_ms_of

__all__ = ["CorpusSeries", "find_series", "label_windows"]

LABELS = Path("labels") / "combined_windows.json"


@dataclass(frozen=True)
class CorpusSeries:
    """One data file: its corpus-relative name (``category/series.csv``), path and label windows (ms)."""

    name: str
    path: Path
    windows_ms: tuple[tuple[int, int], ...]

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]


def find_series(corpus: Path, categories: list[str] | None = None,
                series: list[str] | None = None) -> list[CorpusSeries]:
    """The corpus' labeled series, sorted by name, filtered by category names and series glob patterns."""
    labels_path = corpus / LABELS
    try:
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        msg = f"{corpus} is not a NAB-layout corpus: {labels_path} does not exist"
        raise ConfigError(msg) from exc
    out = []
    for name in sorted(labels):
        path = corpus / "data" / name
        if not path.is_file():
            msg = f"{labels_path} labels {name}, but {path} does not exist"
            raise ConfigError(msg)
        if categories and name.split("/", 1)[0] not in categories:
            continue
        stem = Path(name).stem
        if series and not any(fnmatch.fnmatch(stem, p) or fnmatch.fnmatch(name, p) for p in series):
            continue
        windows = tuple((event_ms_of(str(a)), event_ms_of(str(b))) for a, b in labels[name])
        out.append(CorpusSeries(name, path, windows))
    if not out:
        msg = f"no series of {corpus} match the filters (categories {categories}, series {series})"
        raise ConfigError(msg)
    return out


def label_windows(event_ms: list[int], windows_ms: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """Window limits as event times of rows of the file (first and last row inside each window)."""
    out = []
    for start, end in windows_ms:
        inside = [t for t in event_ms if start <= t <= end]
        if inside:
            out.append((inside[0], inside[-1]))
    return out

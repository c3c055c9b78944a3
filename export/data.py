"""Training data: a CSV of one or many series (one per key), each in time order."""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnwatch.consumer.decoder import parse_event_time
from rnnwatch.consumer.errors import ConfigError

__all__ = ["Series", "default_columns", "load_series"]


@dataclass(frozen=True)
class Series:
    key: str
    values: np.ndarray  # [T, F] float64, time order
    event_ms: np.ndarray | None = None  # [T] int64 event times when the file has a time column


def load_series(path: str | Path, columns: list[str], *, key_column: str = "", time_column: str = "",
                rows: int = 0) -> tuple[list[Series], str]:
    """Series per key (sorted by time when a time column is given, then its first ``rows``; 0 = all) and the
    file's sha256.

    Only the values of rows that are used are parsed and checked: a hole after the training rows (a corpus
    series `evaluate` trains on its probationary rows only) is for the scoring side to refuse, as `run` does.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError as exc:
        msg = f"training data {p} does not exist"
        raise ConfigError(msg) from exc
    except IsADirectoryError as exc:
        msg = f"training data {p} is a directory, not a CSV file"
        raise ConfigError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"training data {p} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it, e.g. iconv -t UTF-8"
        raise ConfigError(msg) from None
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    for needed in [*columns, *([key_column] if key_column else []), *([time_column] if time_column else [])]:
        if needed not in header:
            msg = f"{p}: no column {needed!r} (columns: {', '.join(header)})"
            raise ConfigError(msg)
    groups: dict[str, list[tuple[tuple[int, int], int, dict[str, str]]]] = {}
    for i, row in enumerate(reader):
        order = _order(row[time_column]) if time_column else i
        # a row whose time does not parse sorts last: refused only if the training rows reach it
        rank = (0, order) if order is not None else (1, i)
        groups.setdefault(row[key_column] if key_column else "series", []).append((rank, i, row))
    series = []
    for key, group in groups.items():
        group.sort(key=lambda r: r[0])
        used = group[:rows] if rows else group
        for rank, i, row in used:
            if rank[0]:
                msg = f"{p}: row {i + 2}: {time_column} {row[time_column]!r} is not a timestamp: fix or drop the row"
                raise ConfigError(msg)
        times = np.array([rank[1] for rank, _, _ in used], dtype=np.int64) if time_column else None
        series.append(Series(key, np.array([_values(p, i, row, columns) for _, i, row in used], dtype=np.float64),
                             times))
    if not series or all(len(s.values) < 10 for s in series):
        msg = f"{p}: too little data to train on (need at least 10 rows per series)"
        raise ConfigError(msg)
    return series, hashlib.sha256(raw).hexdigest()


def _values(p: Path, i: int, row: dict[str, str], columns: list[str]) -> list[float]:
    try:
        values = [float(row[c]) for c in columns]
    except (ValueError, TypeError) as exc:
        msg = f"{p}: row {i + 2}: {exc}"
        raise ConfigError(msg) from exc
    if not all(math.isfinite(v) for v in values):
        # `run` dead-letters such a record (non_finite); in training data it is a hole to fill or drop
        msg = f"{p}: row {i + 2}: {dict(zip(columns, values, strict=True))} is not finite: fill or drop the row"
        raise ConfigError(msg)
    return values


def default_columns(path: str | Path, columns: list[str] | None, key_column: str | None,
                    time_column: str | None) -> tuple[list[str], str, str]:
    """Feature, key and time columns with the defaults `produce`, `run` and `score` use (price, symbol, ts).

    A default applies only when the file has that column (a file without ``symbol`` is one series, one
    without ``ts`` is in time order); a column given explicitly must exist (``load_series`` checks).
    """
    try:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError):
        header = []  # load_series reports the problem with the file
    header = [h.strip() for h in header]
    if not columns:
        columns = ["price"] if "price" in header or "value" not in header else ["value"]
    key = key_column if key_column is not None else ("symbol" if "symbol" in header else "")
    time_col = time_column if time_column is not None else ("ts" if "ts" in header else "")
    return columns, key, time_col


def _order(text: str | None) -> int | None:
    """Event time (ms) of a time cell; None if it is not a timestamp (`run` refuses it as ``bad_timestamp``)."""
    try:
        try:
            return parse_event_time(float(text or ""))
        except ValueError:
            return parse_event_time(text or "")
    except (ValueError, TypeError, OverflowError):
        return None

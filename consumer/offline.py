"""The offline path: score a CSV (or an array) through the same StepRunner and scorer as the service.

``rnnwatch score --model M --input in.csv --output out.csv`` writes one row per input row, in input order:
``timestamp,value,anomaly_score,is_anomaly`` (with the key column first when ``--key-column`` is given, and
one value column per feature for multi-feature models). Rows the runtime would skip (duplicate or
out-of-order event time for their key) keep their place with an empty score.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rnnwatch.consumer.contract import StepSignature, load_signature
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.records import parse_event_time
from rnnwatch.consumer.runner import PROCESSED, StepResults, StepRunner, TickBatch, make_runner

__all__ = ["DEFAULT_SCORER", "ScoreInput", "SeriesScores", "check_scorer", "event_ms_of", "read_input", "register",
           "score_array", "score_records", "score_rows"]

_CHUNK = 50_000  # records per micro-batch: bounds memory, same results as any other split
_T = TypeVar("_T")
DEFAULT_SCORER = "model"  # the scorer and calibrated parameters named in the model's metadata
# Scorer options `score_rows` takes today (forwarded to make_runner); anything else is refused by name.
_SCORER_OPTIONS = ("threshold", "warmup_steps", "halflife_steps")


@dataclass(frozen=True)
class SeriesScores:
    scores: np.ndarray  # float64 [T]; NaN where a row was skipped
    is_anomaly: np.ndarray  # bool [T]
    forecasts: np.ndarray  # float32 [T, F]: the forecast made at step t for t+1
    expected: np.ndarray  # float32 [T, F]: the forecast x_t was compared with (made at t-1)


def score_array(model: str | Path | StepSignature, values: np.ndarray, *, threshold: float | None = None,
                warmup_steps: int | None = None, halflife_steps: float | None = None) -> SeriesScores:
    """Score one key's series ``values`` ([T] or [T, F], message units) from a fresh state."""
    signature = model if isinstance(model, StepSignature) else load_signature(model)
    x = np.asarray(values, dtype=np.float32).reshape(len(values), -1)
    runner = make_runner(signature, threshold=threshold, warmup_steps=warmup_steps, halflife_steps=halflife_steps)
    keys = [b"series"] * len(x)
    res = score_records(runner, keys, np.arange(len(x), dtype=np.int64), x)
    forecasts = np.empty_like(x)
    forecasts[:-1] = res.expected[1:]
    forecasts[-1] = runner.table.arrays["s.forecast"][0] if len(x) else 0
    return SeriesScores(res.score, res.is_anomaly, forecasts, res.expected)


def score_records(runner: StepRunner, keys: Sequence[bytes], event_ms: np.ndarray, x: np.ndarray) -> StepResults:
    """Run records (in order; any mix of keys) through ``runner`` in bounded micro-batches."""
    n = len(keys)
    merged = StepResults.empty(n, x.shape[1])
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        batch = TickBatch(
            partition=np.zeros(stop - start, dtype=np.int32),
            offset=np.arange(start, stop, dtype=np.int64),
            keys=list(keys[start:stop]),
            event_ms=event_ms[start:stop],
            x=x[start:stop],
        )
        part = runner.process(batch)
        for name in ("status", "score", "tail", "is_anomaly", "expected", "residual", "model_score", "gap"):
            getattr(merged, name)[start:stop] = getattr(part, name)
    return merged


@dataclass(frozen=True)
class ScoreInput:
    """A CSV read for scoring: its rows (as text, for writing back) and what the runner needs from them."""

    header: list[str]
    table: list[list[str]]
    columns: list[str]  # value column per model feature
    keys: list[bytes]
    event_ms: np.ndarray  # int64 [n]
    x: np.ndarray  # float32 [n, n_features]


def read_input(signature: StepSignature, path: Path, *, time_column: str = "timestamp",
               columns: list[str] | None = None, key_column: str = "") -> ScoreInput:
    """Read and validate a CSV for ``signature`` exactly as `rnnwatch score` does (ConfigError naming the file)."""
    header, table = _read_csv(path)
    value_columns = _value_columns(signature, header, columns)
    for needed in [time_column, *value_columns, *([key_column] if key_column else [])]:
        if needed not in header:
            msg = f"{path}: no column {needed!r} (columns: {', '.join(header)})"
            raise ConfigError(msg)
    col = {name: i for i, name in enumerate(header)}
    try:
        x = np.array([[float(r[col[c]]) for c in value_columns] for r in table], dtype=np.float32)
        event_ms = np.array([event_ms_of(r[col[time_column]]) for r in table], dtype=np.int64)
    except ValueError as exc:
        msg = f"{path}: {exc}"
        raise ConfigError(msg) from exc
    keys = [r[col[key_column]].encode() for r in table] if key_column else [b"series"] * len(table)
    return ScoreInput(header, table, value_columns, keys, event_ms, x.reshape(-1, len(value_columns)))


def check_scorer(scorer: str | None, scorer_options: Mapping[str, object] | None) -> dict[str, object]:
    """Refuse an unknown scorer or option by name (callers check before any expensive work); the options."""
    if scorer not in (None, DEFAULT_SCORER):
        msg = f"unknown scorer {scorer!r} (known: {DEFAULT_SCORER})"
        raise ConfigError(msg)
    options = dict(scorer_options or {})
    unknown = sorted(set(options) - set(_SCORER_OPTIONS))
    if unknown:
        msg = f"unknown scorer option(s) {', '.join(unknown)} (known: {', '.join(_SCORER_OPTIONS)})"
        raise ConfigError(msg)
    return options


def score_rows(signature: StepSignature, keys: Sequence[bytes], event_ms: np.ndarray, x: np.ndarray, *,
               scorer: str | None = None, scorer_options: Mapping[str, object] | None = None) -> StepResults:
    """The one offline scoring path (`score`, `evaluate`): a fresh runner over the rows, in order.

    ``scorer`` names the scorer (None or ``"model"``: the model's own defaults) and ``scorer_options``
    overrides its parameters; both are validated here (:func:`check_scorer`), so every caller refuses the
    same things.
    """
    options = check_scorer(scorer, scorer_options)
    try:
        runner = make_runner(signature, threshold=_option(options, "threshold", float),
                             warmup_steps=_option(options, "warmup_steps", int),
                             halflife_steps=_option(options, "halflife_steps", float))
    except (TypeError, ValueError) as exc:
        msg = f"bad scorer option value: {exc}"
        raise ConfigError(msg) from exc
    return score_records(runner, keys, event_ms, x)


def _option(options: Mapping[str, Any], name: str, kind: Callable[[Any], _T]) -> _T | None:
    value = options.get(name)
    return None if value is None else kind(value)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("score", help="Score a CSV offline through the same runner and scorer as `run`.",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Step model (.onnx).")
    p.add_argument("--input", required=True, help="Input CSV with a header row.")
    p.add_argument("--output", required=True, help="Output CSV ('-' for stdout).")
    p.add_argument("--time-column", default="timestamp", help="Event time column (default: timestamp).")
    p.add_argument("--column", action="append", default=None,
                   help="Value column per model feature, in feature order (default: the feature names, "
                        "or 'value' for a one-feature model).")
    p.add_argument("--key-column", default="", help="Column that separates several series (default: one series).")
    p.add_argument("--threshold", type=float, default=None, help="Override the model's calibrated threshold.")
    p.add_argument("--warmup-steps", type=int, default=None, help="Override the model's warm-up.")
    p.add_argument("--report", default="", help="Also write a self-contained HTML report (a plot per key) here.")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    signature = load_signature(args.model)
    inp = read_input(signature, Path(args.input), time_column=args.time_column, columns=args.column,
                     key_column=args.key_column)
    res = score_rows(signature, inp.keys, inp.event_ms, inp.x,
                     scorer_options={"threshold": args.threshold, "warmup_steps": args.warmup_steps})
    col = {name: i for i, name in enumerate(inp.header)}
    _write(args, inp.table, col, inp.columns, res)
    if args.report:
        _write_report(Path(args.report), f"rnnwatch score: {Path(args.input).name} with {signature.name} "
                      f"{signature.version}", inp, res)
    skipped = int((res.status != PROCESSED).sum())
    print(f"scored {len(inp.table)} rows, {int(res.is_anomaly.sum())} anomalies, {skipped} skipped "
          f"(duplicate/out-of-order time) with {signature.name} {signature.version}", file=sys.stderr)
    return 0


def _write_report(path: Path, title: str, inp: ScoreInput, res: StepResults) -> None:
    """One plot per key and feature: values, the forecast each row was compared with, flagged rows."""
    from rnnwatch.consumer.report import SeriesPlot, render_report

    order: dict[bytes, list[int]] = {}
    for i, k in enumerate(inp.keys):
        order.setdefault(k, []).append(i)
    plots = []
    for key, rows in order.items():
        idx = np.array(rows, dtype=np.int64)
        for f, column in enumerate(inp.columns):
            name = key.decode(errors="replace") if len(order) > 1 else ""
            label = " / ".join(x for x in (name, column if len(inp.columns) > 1 else "") if x) or "series"
            flags = res.is_anomaly[idx]
            plots.append(SeriesPlot(label, inp.event_ms[idx], inp.x[idx, f], expected=res.expected[idx, f],
                                    flags=[("is_anomaly", flags)],
                                    notes=[f"{len(idx)} rows, {int(flags.sum())} flagged"]))
    summary = [("rows", str(len(inp.keys))), ("keys", str(len(order))),
               ("flagged", str(int(res.is_anomaly.sum())))]
    path.write_text(render_report(title, plots, summary=summary), encoding="utf-8")


def event_ms_of(text: str) -> int:
    """Event time (ms) of a CSV cell: an epoch number or an ISO 8601 string."""
    try:
        return parse_event_time(float(text))
    except ValueError:
        return parse_event_time(text)


def _value_columns(signature: StepSignature, header: list[str], given: list[str] | None) -> list[str]:
    if given:
        if len(given) != signature.n_features:
            msg = f"--column given {len(given)} time(s); the model has {signature.n_features} feature(s)"
            raise ConfigError(msg)
        return given
    names = list(signature.feature_names)
    if all(n in header for n in names):
        return names
    if len(names) == 1 and "value" in header:
        return ["value"]
    msg = f"cannot tell which columns hold the features {names}: pass --column for each"
    raise ConfigError(msg)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = [r for r in reader if r]
    except FileNotFoundError as exc:
        msg = f"input file {path} does not exist"
        raise ConfigError(msg) from exc
    if not header:
        msg = f"{path} is empty: expected a header row"
        raise ConfigError(msg)
    return [h.strip() for h in header], rows


def _write(args: argparse.Namespace, table: list[list[str]], col: dict[str, int], columns: list[str],
           res: StepResults) -> None:
    out = sys.stdout if args.output == "-" else open(args.output, "w", newline="", encoding="utf-8")  # noqa: SIM115
    try:
        writer = csv.writer(out)
        value_names = ["value"] if len(columns) == 1 else columns
        writer.writerow([*([args.key_column] if args.key_column else []), "timestamp", *value_names,
                         "anomaly_score", "is_anomaly"])
        for i, r in enumerate(table):
            score = res.score[i]
            writer.writerow([*([r[col[args.key_column]]] if args.key_column else []), r[col[args.time_column]],
                             *(r[col[c]] for c in columns), "" if np.isnan(score) else f"{score:.6f}",
                             int(res.is_anomaly[i])])
    finally:
        if out is not sys.stdout:
            out.close()

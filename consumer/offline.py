"""The offline path: score a CSV (or an array) through the same StepRunner and scorer as the service.

``rnnwatch score --model M --input in.csv --output out.csv`` writes one row per input row, in input order:
``timestamp,value,anomaly_score,surprise,is_anomaly,incident`` (with the key column first when ``--key-column``
is given, and one value column per feature for multi-feature models). ``anomaly_score`` is in [0, 1],
``surprise`` is ``-log10`` of the tail probability (both at full precision, so they rank where a rounded
score would print 1.000000); ``is_anomaly`` is 1 where an incident opens (one per incident, as `run` emits
one event), ``incident`` the row (0-based) of the opening point of the incident a flagged row belongs to.
Rows the runtime would skip (duplicate or out-of-order event time for their key) keep their place with an
empty score. The scorer flags are those of `run` (``--scorer``, ``--scorer-options`` ...), resolved the same
way (``rnnwatch.consumer.scoring_config``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnwatch.consumer.contract import StepSignature, load_signature
from rnnwatch.consumer.detectors import DETECTORS
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.records import parse_event_time
from rnnwatch.consumer.runner import PROCESSED, StepResults, StepRunner, TickBatch, make_runner
from rnnwatch.consumer.scoring import TAIL_OPTIONS
from rnnwatch.consumer.scoring_config import OVERRIDE_FIELDS, ScoringOverrides, add_scoring_arguments

__all__ = ["DEFAULT_SCORER", "ScoreInput", "SeriesScores", "check_scorer", "event_ms_of", "read_input", "register",
           "score_array", "score_records", "score_rows"]

_CHUNK = 50_000  # records per micro-batch: bounds memory, same results as any other split
DEFAULT_SCORER = "model"  # the scorer and calibrated parameters named in the model's metadata


@dataclass(frozen=True)
class SeriesScores:
    scores: np.ndarray  # float64 [T]; NaN where a row was skipped
    is_anomaly: np.ndarray  # bool [T]: an incident opens here
    surprise: np.ndarray  # float64 [T]: -log10(tail); NaN where a row was skipped
    alarm: np.ndarray  # bool [T]: over the threshold (any point of an incident)
    forecasts: np.ndarray  # float32 [T, F]: the forecast made at step t for t+1
    expected: np.ndarray  # float32 [T, F]: the forecast x_t was compared with (made at t-1)


def score_array(model: str | Path | StepSignature, values: np.ndarray, *, threshold: float | None = None,
                warmup_steps: int | None = None, halflife_steps: float | None = None, scorer: str | None = None,
                scorer_options: Mapping[str, Any] | str | None = None, threshold_surprise: float | None = None,
                incident_gap_steps: int | None = None, incident_updates: int | None = None) -> SeriesScores:
    """Score one key's series ``values`` ([T] or [T, F], message units) from a fresh state.

    ``scorer`` / ``scorer_options`` (a mapping or its JSON text) / ``threshold_surprise`` / incident options
    override the model's defaults exactly as the flags of `run` and `score` do.
    """
    signature = model if isinstance(model, StepSignature) else load_signature(model)
    x = np.asarray(values, dtype=np.float32).reshape(len(values), -1)
    options = json.loads(scorer_options) if isinstance(scorer_options, str) and scorer_options else scorer_options
    overrides = ScoringOverrides(scorer=scorer, scorer_options=options or {}, threshold=threshold,
                                 threshold_surprise=threshold_surprise, warmup_steps=warmup_steps,
                                 halflife_steps=halflife_steps, incident_gap_steps=incident_gap_steps,
                                 incident_updates=incident_updates)
    runner = make_runner(signature, scoring=overrides)
    keys = [b"series"] * len(x)
    res = score_records(runner, keys, np.arange(len(x), dtype=np.int64), x)
    forecasts = np.empty_like(x)
    forecasts[:-1] = res.expected[1:]
    forecasts[-1] = runner.table.arrays["s.forecast"][0] if len(x) else 0
    return SeriesScores(res.score, res.is_anomaly, res.surprise, res.alarm, forecasts, res.expected)


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
        for name in ("status", "score", "tail", "surprise", "alarm", "is_anomaly", "is_update", "incident", "expected",
                     "residual", "model_score", "gap"):
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


def check_scorer(scorer: str | None, scorer_options: Mapping[str, object] | str | None) -> ScoringOverrides:
    """The scorer choice as the runner takes it; refuses an unknown scorer or option by name (ConfigError).

    ``scorer``: a spec such as ``"gaussian+likelihood"``, or None / ``"model"`` for the model's default.
    ``scorer_options`` (a mapping or its JSON text): the override fields (``threshold``,
    ``threshold_surprise``, ``warmup_steps``, ``halflife_steps``, ``incident_gap_steps``,
    ``incident_updates``) and per-scorer options (``{"likelihood": {"long_halflife": 500}}``).
    """
    raw: Any
    try:
        raw = json.loads(scorer_options) if isinstance(scorer_options, str) and scorer_options.strip() else (
            scorer_options if isinstance(scorer_options, Mapping) else {})
    except json.JSONDecodeError as exc:
        msg = f"scorer options are not valid JSON: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(raw, Mapping):
        msg = f"scorer options must be a JSON object, got {raw!r}"
        raise ConfigError(msg)
    detector = {k: v for k, v in raw.items() if k not in OVERRIDE_FIELDS}
    unknown = sorted(k for k in detector if k not in DETECTORS and k != TAIL_OPTIONS)
    if unknown:
        msg = (f"unknown scorer option(s) {', '.join(unknown)}: give {', '.join(OVERRIDE_FIELDS)}, or "
               f"per-scorer options under a scorer's name ({', '.join(sorted(DETECTORS))}, {TAIL_OPTIONS})")
        raise ConfigError(msg)
    spec = None if scorer in (None, "", DEFAULT_SCORER) else scorer
    try:
        def num(name: str, kind: type[float] | type[int]) -> Any:
            value = raw.get(name)
            return None if value is None else kind(value)

        return ScoringOverrides(scorer=spec, scorer_options=detector, threshold=num("threshold", float),
                                threshold_surprise=num("threshold_surprise", float),
                                warmup_steps=num("warmup_steps", int), halflife_steps=num("halflife_steps", float),
                                incident_gap_steps=num("incident_gap_steps", int),
                                incident_updates=num("incident_updates", int))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        msg = f"bad scorer option value: {exc}"
        raise ConfigError(msg) from exc


def score_rows(signature: StepSignature, keys: Sequence[bytes], event_ms: np.ndarray, x: np.ndarray, *,
               scorer: str | None = None, scorer_options: Mapping[str, object] | str | None = None) -> StepResults:
    """The one offline scoring path (`score`, `evaluate`): a fresh runner over the rows, in order.

    ``scorer`` and ``scorer_options`` are validated here (:func:`check_scorer`) and resolved against the
    model's metadata exactly as `run` resolves its settings (``consumer.scoring_config``).
    """
    return score_records(make_runner(signature, scoring=check_scorer(scorer, scorer_options)), keys, event_ms, x)


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
    add_scoring_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    signature = load_signature(args.model)
    inp = read_input(signature, Path(args.input), time_column=args.time_column, columns=args.column,
                     key_column=args.key_column)
    options = _json_object(args.scorer_options)
    options.update({"threshold": args.threshold, "warmup_steps": args.warmup_steps,
                    "threshold_surprise": args.threshold_surprise, "incident_gap_steps": args.incident_gap_steps,
                    "incident_updates": args.incident_updates})
    res = score_rows(signature, inp.keys, inp.event_ms, inp.x, scorer=args.scorer, scorer_options=options)
    col = {name: i for i, name in enumerate(inp.header)}
    _write(args, inp.table, col, inp.columns, res)
    if args.report:
        _write_report(Path(args.report), f"rnnwatch score: {Path(args.input).name} with {signature.name} "
                      f"{signature.version}", inp, res)
    skipped = int((res.status != PROCESSED).sum())
    print(f"scored {len(inp.table)} rows, {int(res.is_anomaly.sum())} anomalies, {skipped} skipped "
          f"(duplicate/out-of-order time) with {signature.name} {signature.version}", file=sys.stderr)
    return 0


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        msg = f"--scorer-options is not valid JSON: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(value, dict):
        msg = f"--scorer-options must be a JSON object, got {value!r}"
        raise ConfigError(msg)
    return value


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
                         "anomaly_score", "surprise", "is_anomaly", "incident"])
        for i, r in enumerate(table):
            score, surprise, incident = res.score[i], res.surprise[i], int(res.incident[i])
            writer.writerow([*([r[col[args.key_column]]] if args.key_column else []), r[col[args.time_column]],
                             *(r[col[c]] for c in columns), "" if np.isnan(score) else repr(float(score)),
                             "" if np.isnan(surprise) else repr(float(surprise)), int(res.is_anomaly[i]),
                             "" if incident < 0 else incident])
    finally:
        if out is not sys.stdout:
            out.close()

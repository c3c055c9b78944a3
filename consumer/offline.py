"""The offline path: score a CSV (or an array) through the same decoder checks, StepRunner and scorer as `run`.

``rnnwatch score --model M --input in.csv`` writes one CSV row per input row, in input order, to stdout (or
``--output FILE``), ``\\n`` line endings::

    [key,]timestamp,value,expected,residual,anomaly_score,surprise,is_anomaly,incident,severity,status

(one value / expected / residual column per feature for multi-feature models, named ``<feature>``,
``expected_<feature>``, ``residual_<feature>``). ``anomaly_score`` is in [0, 1], ``surprise`` is ``-log10`` of
the tail probability (both at full precision, so they rank where a rounded score would print 1.000000);
``is_anomaly`` is 1 where an incident opens (one per incident, as `run` emits one event), ``incident`` the row
(0-based) of the opening point of the incident a flagged row belongs to, ``severity`` that of an opening row.
``status`` is ``processed`` for a scored row; otherwise it names why the row was not scored, with the very
reason `run` would dead-letter its record (``non_finite``, ``out_of_domain``, ``non_numeric``,
``missing_field``, ``bad_timestamp`` ...) or skip it (``duplicate``, ``out_of_order`` event time for its key);
such rows keep their place with empty scores. A refused row never reaches the model, so it cannot poison the
rows after it. The scorer flags are those of `run` (``--scorer``, ``--scorer-options`` ...), resolved the same
way (``rnnwatch.consumer.scoring_config``); scoring goes through :func:`score_rows`, as `evaluate` does.

Column defaults agree with `rnnwatch produce` and `rnnwatch run` and come from the model where it knows:
features = the model's feature names, event time = the column the model was trained with (else ``ts``), key =
the model's key column (else ``symbol``) when the file has it; ``--key-column ''`` scores one series.
A count per reason goes to stderr, with a warning and a hint when most rows are not scored.
"""

from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnwatch.consumer.contract import StepSignature, load_signature
from rnnwatch.consumer.decoder import Rejected, TickDecoder, parse_event_time
from rnnwatch.consumer.detectors import DETECTORS
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.files import open_output, read_csv
from rnnwatch.consumer.runner import StepResults, StepRunner, make_runner
from rnnwatch.consumer.scoring import STAGE_OPTIONS, severity_of
from rnnwatch.consumer.scoring_config import OVERRIDE_FIELDS, ScoringOverrides, json_object, scorer_config
from rnnwatch.consumer.types import PROCESSED, STATUS, TickBatch

__all__ = ["DEFAULT_SCORER", "DecodedInput", "InputColumns", "SeriesScores", "check_scorer", "decode_input",
           "event_ms_of", "score_array", "score_csv", "score_records", "score_rows"]

_CHUNK = 50_000  # records per micro-batch: bounds memory, same results as any other split
_MOSTLY = 0.5  # warn when more than this fraction of rows is not scored
DEFAULT_SCORER = "model"  # the scorer and calibrated parameters named in the model's metadata


@dataclass(frozen=True)
class SeriesScores:
    scores: np.ndarray  # float64 [T]; NaN where a row was not scored
    is_anomaly: np.ndarray  # bool [T]: an incident opens here
    surprise: np.ndarray  # float64 [T]: -log10(tail); NaN where a row was not scored
    alarm: np.ndarray  # bool [T]: over the threshold (any point of an incident)
    forecasts: np.ndarray  # float32 [T, F]: the forecast made at step t for t+1 (carried over refused rows)
    expected: np.ndarray  # float32 [T, F]: the forecast x_t was compared with (made at t-1)
    status: np.ndarray  # str [T]: "processed", or why the row was not scored (run's dead-letter reason)


def score_array(model: str | Path | StepSignature, values: np.ndarray, *, threshold: float | None = None,
                warmup_steps: int | None = None, halflife_steps: float | None = None, scorer: str | None = None,
                scorer_options: Mapping[str, Any] | str | None = None, threshold_surprise: float | None = None,
                incident_gap_steps: int | None = None, incident_updates: int | None = None,
                event_ms: np.ndarray | None = None) -> SeriesScores:
    """Score one key's series ``values`` ([T] or [T, F], message units) from a fresh state.

    ``event_ms``: the rows' event times (epoch ms, as `run` reads them), which place a key in its model's season
    across gaps; None scores rows without meaningful times (a season then counts rows).

    ``scorer`` / ``scorer_options`` (a mapping or its JSON text) / ``threshold_surprise`` / incident options
    override the model's defaults exactly as the flags of `run` and `score` do. Rows `run` would refuse (NaN
    or infinite values, values outside the model's domain) are not scored: their score is NaN and ``status``
    names the reason.
    """
    options = json_object(scorer_options, "scorer options")
    overrides = ScoringOverrides(scorer=scorer, scorer_options=options, threshold=threshold,
                                 threshold_surprise=threshold_surprise, warmup_steps=warmup_steps,
                                 halflife_steps=halflife_steps, incident_gap_steps=incident_gap_steps,
                                 incident_updates=incident_updates)
    signature = model if isinstance(model, StepSignature) else load_signature(model)
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    runner = make_runner(signature, scoring=overrides)
    decoder = _decoder(signature, list(signature.feature_names), "", "")
    event_ms = np.arange(len(x), dtype=np.int64) if event_ms is None else np.asarray(event_ms, dtype=np.int64)
    ok, rejected = decoder.check_values(x, event_ms, int(time.time() * 1000))
    kept = np.flatnonzero(ok)
    part = score_records(runner, [b"series"] * kept.size, event_ms[kept], x[kept].astype(np.float32))
    res = _spread(part, kept, len(x), signature.n_features, rejected)
    last = runner.table.arrays["s.forecast"][0] if kept.size else np.zeros(signature.n_features, np.float32)
    following = np.searchsorted(kept, np.arange(len(x)), side="right")  # the next scored row after each row
    ahead = np.vstack([part.expected, last[None, :]]).astype(np.float32)
    forecasts = ahead[following]
    return SeriesScores(scores=res.score, is_anomaly=res.is_anomaly, surprise=res.surprise, alarm=res.alarm,
                        forecasts=forecasts, expected=res.expected, status=_status_names(res, rejected, len(x)))


def score_records(runner: StepRunner, keys: Sequence[bytes], event_ms: np.ndarray, x: np.ndarray) -> StepResults:
    """Run valid records (in order; any mix of keys) through ``runner`` in bounded micro-batches."""
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
            timestamp_ms=np.zeros(stop - start, dtype=np.int64),
        )
        part = runner.process(batch)
        for name in ("status", "score", "tail", "surprise", "alarm", "is_anomaly", "is_update", "incident", "expected",
                     "residual", "gap"):
            getattr(merged, name)[start:stop] = getattr(part, name)
    return merged


def _spread(part: StepResults, kept: np.ndarray, n: int, n_features: int, rejected: list[Rejected]) -> StepResults:
    """Results of the kept rows placed at their input positions; refused rows stay NaN / not anomalous.

    ``incident`` (the opening record's offset among the kept rows) becomes the opening row's input position.
    """
    full = StepResults.empty(n, n_features)
    for name in ("status", "score", "tail", "surprise", "alarm", "is_anomaly", "is_update", "expected", "residual",
                 "gap"):
        getattr(full, name)[kept] = getattr(part, name)
    full.incident[kept] = np.where(part.incident >= 0, kept[np.clip(part.incident, 0, None)], -1)
    full.status[[r.index for r in rejected]] = -1
    return full


def _status_names(res: StepResults, rejected: list[Rejected], n: int) -> np.ndarray:
    out = np.array([STATUS.get(int(c), "") for c in res.status.tolist()], dtype=object)
    for r in rejected:
        out[r.index] = r.reason
    return out.astype(str) if n else np.array([], dtype=str)


def _decoder(signature: StepSignature, fields: list[str], key_field: str, time_field: str) -> TickDecoder:
    """The decoder `run` builds for this model, with run's defaults for the limits."""
    return TickDecoder(signature.features, fields, key_field=key_field or "key", time_field=time_field)


@dataclass(frozen=True)
class InputColumns:
    key: str  # "" = one series
    time: str
    values: list[str]


@dataclass(frozen=True)
class DecodedInput:
    """A CSV through run's decoder (`score` and `evaluate`): its rows as text, and the rows the runner gets.

    ``batch`` holds the rows the decoder kept, ``kept`` their input positions, ``rejected`` the others with
    the reason `run` would dead-letter their records for.
    """

    header: list[str]
    table: list[list[str]]
    col: dict[str, int]
    columns: InputColumns
    batch: TickBatch
    kept: np.ndarray  # int64 [k]: input row of each batch row
    rejected: list[Rejected]

    def spread(self, part: StepResults, n_features: int) -> tuple[StepResults, np.ndarray]:
        """``part`` (the runner's results on ``batch``) at the input rows, and each input row's status name."""
        res = _spread(part, self.kept, len(self.table), n_features, self.rejected)
        return res, _status_names(res, self.rejected, len(self.table))


def decode_input(signature: StepSignature, path: str | Path, *, key_column: str | None = None,
                 time_column: str | None = None, columns: list[str] | None = None,
                 source: str = "--input") -> DecodedInput:
    """Read a CSV and validate each row with the decoder `run` builds for ``signature``.

    A bad row (NaN, non-numeric, out of the model's domain, bad timestamp ...) is refused on its own, with
    `run`'s dead-letter reason; it never fails the file. Column defaults as in the module docstring.
    """
    header, table = read_csv(path, source)
    cols = _columns(signature, header, path, key_column, time_column, columns)
    col = {name: i for i, name in enumerate(header)}
    docs: list[dict[str, Any]] = []
    for r in table:
        doc = {c: _number_or_text(_cell(r, col[c])) for c in cols.values}
        doc[cols.time] = _number_or_text(_cell(r, col[cols.time]))
        if cols.key:
            doc[cols.key] = _cell(r, col[cols.key]) or None
        docs.append(doc)
    decoder = _decoder(signature, cols.values, cols.key, cols.time)
    kafka_keys: list[bytes | None] = [None if cols.key else b"series"] * len(docs)
    batch, kept, rejected = decoder.decode_docs(docs, kafka_keys, int(time.time() * 1000))
    return DecodedInput(header, table, col, cols, batch, kept, rejected)


def check_scorer(scorer: str | None, scorer_options: Mapping[str, object] | str | None) -> ScoringOverrides:
    """The scorer choice as the runner takes it; refuses an unknown scorer or option by name (ConfigError).

    ``scorer``: a spec such as ``"gaussian+likelihood"``, or None / ``"model"`` for the model's default.
    ``scorer_options`` (a mapping or its JSON text): the override fields (``threshold``,
    ``threshold_surprise``, ``warmup_steps``, ``halflife_steps``, ``incident_gap_steps``,
    ``incident_updates``) and per-scorer options (``{"likelihood": {"long_halflife": 500}}``). The values
    are checked by :class:`ScoringOverrides`, the one validation `run` applies to its settings too.
    """
    raw = json_object(scorer_options, "scorer options")
    detector = {k: v for k, v in raw.items() if k not in OVERRIDE_FIELDS}
    unknown = sorted(k for k in detector if k not in DETECTORS and k not in STAGE_OPTIONS)
    if unknown:
        msg = (f"unknown scorer option(s) {', '.join(unknown)}: give {', '.join(OVERRIDE_FIELDS)}, or "
               f"per-scorer options under a scorer's name ({', '.join([*sorted(DETECTORS), *STAGE_OPTIONS])})")
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


def row_severity(signature: StepSignature, res: StepResults, overrides: ScoringOverrides) -> np.ndarray:
    """Severity of each incident-opening row ('' elsewhere), graded as `run` grades its events."""
    tail_at_threshold = 10.0 ** -scorer_config(signature, overrides).surprise_threshold
    severity = np.full(len(res.score), "", dtype=object)
    for i in np.flatnonzero(res.is_anomaly).tolist():
        severity[i] = severity_of(float(res.tail[i]), tail_at_threshold)
    return severity


def score_csv(model: str, input_path: str, output: str, *, scorer: str | None, scorer_options: Mapping[str, object],
              key_column: str | None = None, time_column: str | None = None, columns: list[str] | None = None,
              report: str = "") -> None:
    """`rnnwatch score`: the scored CSV to ``output`` ('-' = stdout), counts per reason to stderr, optional HTML.

    ``scorer_options`` is the flat mapping :func:`check_scorer` takes; a bad one is refused before the model is read.
    """
    overrides = check_scorer(scorer, scorer_options)
    signature = load_signature(model)
    inp = decode_input(signature, input_path, key_column=key_column, time_column=time_column, columns=columns)
    batch, cols = inp.batch, inp.columns
    part = score_rows(signature, batch.keys, batch.event_ms, batch.x, scorer=scorer, scorer_options=scorer_options)
    res, status = inp.spread(part, signature.n_features)
    _write(output, inp.table, inp.col, cols, res, row_severity(signature, res, overrides), status)
    if report:
        _write_report(Path(report), f"rnnwatch score: {Path(input_path).name} with {signature.name} "
                      f"{signature.version}", cols.values, batch.keys, batch.event_ms, batch.x, part)
    _report(signature, cols, inp.header, inp.table, inp.col, res, status, inp.rejected)


def _write_report(path: Path, title: str, columns: list[str], keys: Sequence[bytes], event_ms: np.ndarray,
                  x: np.ndarray, res: StepResults) -> None:
    """One plot per key and feature of the scored rows: values, the forecast each was compared with, flags."""
    from rnnwatch.consumer.html_report import SeriesPlot, render_report

    order: dict[bytes, list[int]] = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    plots = []
    for key, rows in order.items():
        idx = np.array(rows, dtype=np.int64)
        for f, column in enumerate(columns):
            name = key.decode(errors="replace") if len(order) > 1 else ""
            label = " / ".join(x for x in (name, column if len(columns) > 1 else "") if x) or "series"
            flags = res.is_anomaly[idx]
            plots.append(SeriesPlot(label, event_ms[idx], x[idx, f], expected=res.expected[idx, f],
                                    flags=[("is_anomaly", flags)],
                                    notes=[f"{len(idx)} rows, {int(flags.sum())} flagged"]))
    summary = [("rows", str(len(keys))), ("keys", str(len(order))), ("flagged", str(int(res.is_anomaly.sum())))]
    out = open_output(str(path))
    try:
        out.write(render_report(title, plots, summary=summary))
    finally:
        if out is not sys.stdout:
            out.close()


def event_ms_of(text: str) -> int:
    """Event time (ms) of a CSV cell: an epoch number or an ISO 8601 string."""
    try:
        return parse_event_time(float(text))
    except ValueError:
        return parse_event_time(text)


def _cell(row: list[str], i: int) -> str:
    return row[i].strip() if i < len(row) else ""


def _number_or_text(text: str) -> float | str | None:
    """A CSV cell as the value a JSON record would carry: a number if it parses as one, else the text."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _columns(signature: StepSignature, header: list[str], path: str | Path, key_column: str | None,
             time_column: str | None, columns: list[str] | None) -> InputColumns:
    trained = signature.provenance.get("columns")
    trained = trained if isinstance(trained, dict) else {}
    if key_column is not None:
        key = key_column
    else:
        default_key = str(trained.get("key") or "symbol")
        key = default_key if default_key in header else ""
    time_name = time_column or str(trained.get("time") or "ts")
    if time_column is None and time_name not in header and "timestamp" in header:
        time_name = "timestamp"
    values = _value_columns(signature, header, columns)
    for needed in [time_name, *values, *([key] if key else [])]:
        if needed not in header:
            msg = f"{path}: no column {needed!r} (columns: {', '.join(header)})"
            raise ConfigError(msg)
    return InputColumns(key, time_name, values)


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
    msg = (f"cannot tell which columns hold the model's features {names} (columns: {', '.join(header)}): "
           "pass --column for each")
    raise ConfigError(msg)


def output_header(cols: InputColumns) -> list[str]:
    """The output columns, in order (see the module docstring)."""
    one = len(cols.values) == 1
    values = ["value"] if one else cols.values
    expected = ["expected"] if one else [f"expected_{c}" for c in cols.values]
    residual = ["residual"] if one else [f"residual_{c}" for c in cols.values]
    return [*([cols.key] if cols.key else []), "timestamp", *values, *expected, *residual,
            "anomaly_score", "surprise", "is_anomaly", "incident", "severity", "status"]


def _write(path: str, table: list[list[str]], col: dict[str, int], cols: InputColumns, res: StepResults,
           severity: np.ndarray, status: np.ndarray) -> None:
    out = open_output(path)
    try:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(output_header(cols))
        for i, r in enumerate(table):
            score, surprise, incident = res.score[i], res.surprise[i], int(res.incident[i])
            writer.writerow([
                *([_cell(r, col[cols.key])] if cols.key else []), _cell(r, col[cols.time]),
                *(_cell(r, col[c]) for c in cols.values),
                *(_fmt(v) for v in res.expected[i].tolist()), *(_fmt(v) for v in res.residual[i].tolist()),
                "" if np.isnan(score) else repr(float(score)), "" if np.isnan(surprise) else repr(float(surprise)),
                int(res.is_anomaly[i]), "" if incident < 0 else incident, severity[i], status[i],
            ])
        out.flush()
    finally:
        if out is not sys.stdout:
            out.close()


def _fmt(v: float) -> str:
    return "" if v != v else f"{v:.6g}"  # NaN: not scored (or no forecast yet)


def _report(signature: StepSignature, cols: InputColumns, header: list[str], table: list[list[str]],
            col: dict[str, int], res: StepResults, status: np.ndarray, rejected: list[Rejected]) -> None:
    n = len(table)
    counts = Counter(s for s in status.tolist() if s != STATUS[PROCESSED])
    skipped = sum(counts.values())
    detail = ", ".join(f"{c} {reason}" for reason, c in counts.most_common()) or "none"
    print(f"scored {n - skipped} of {n} rows with {signature.name} {signature.version}: "
          f"{int(res.is_anomaly.sum())} anomalies; not scored: {detail}", file=sys.stderr)
    if n == 0 or skipped <= _MOSTLY * n:
        return
    reason, count = counts.most_common(1)[0]
    example = next((r.detail for r in rejected if r.reason == reason), "")
    hint = _hint(reason, cols, header, table, col, example)
    print(f"warning: {skipped} of {n} rows were not scored (most: {count} {reason}); {hint}", file=sys.stderr)


def _hint(reason: str, cols: InputColumns, header: list[str], table: list[list[str]], col: dict[str, int],
          example: str) -> str:
    if reason in ("duplicate", "out_of_order"):
        if not cols.key:
            candidates = [h for h in header if h not in (cols.time, *cols.values) and _repeats(table, col[h])]
            if candidates:
                return f"the file holds several series: pass --key-column {candidates[0]}"
            return "the file looks like several series: pass --key-column COLUMN"
        return f"event times repeat or go back within a {cols.key!r} series: sort the file by time per key"
    return f"e.g. {example}; `rnnwatch run` would dead-letter these records as {reason}"


def _repeats(table: list[list[str]], i: int) -> bool:
    """A column that names a few series: several distinct, non-numeric values, each on many rows."""
    values = [r[i] for r in table[:10_000] if i < len(r)]
    distinct = set(values)
    return 1 < len(distinct) <= len(values) // 2 and all(_number_or_text(v) == v for v in list(distinct)[:50])

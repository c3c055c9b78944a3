"""Per series: train on the probationary rows, score the whole series, as a user would with the CLI.

Training goes through :func:`rnnwatch.export.train.train` with the flags `rnnwatch train` parses (so the model
is exactly what ``rnnwatch train --train-rows <probation> ...`` writes), reading and
scoring through :func:`rnnwatch.consumer.offline.decode_input` and :func:`~rnnwatch.consumer.offline.score_rows`,
the functions behind `rnnwatch score` (offline equals online: there is no second validation or scoring path; a
row `run` would dead-letter is refused on its own and counted by reason, it does not fail the series). Series
run in a process pool (one torch/onnxruntime thread per worker) with a fixed seed per run, so results do not
depend on ``--jobs`` or on scheduling.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.offline import DEFAULT_SCORER, decode_input, score_rows
from rnnwatch.consumer.scoring_config import json_object
from rnnwatch.consumer.types import PROCESSED, STATUS
from rnnwatch.evaluate.corpus import CorpusSeries
from rnnwatch.evaluate.nab import probation_rows

__all__ = ["ScorerSpec", "SeriesRun", "TrainConfig", "parse_scorer_spec", "run_corpus", "run_series"]


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer to evaluate: its name (as `score --scorer` takes it) and options (as `--scorer-options`)."""

    name: str = DEFAULT_SCORER
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name + (json.dumps(dict(self.options), sort_keys=True, separators=(",", ":"))
                            if self.options else "")


def parse_scorer_spec(spec: str, defaults: Mapping[str, Any] | None = None) -> ScorerSpec:
    """``NAME`` or ``NAME:{json options}``; the per-spec options override ``defaults`` (`--scorer-options`)."""
    name, _, raw = spec.partition(":")
    options = dict(defaults or {})
    if raw:
        options.update(json_object(raw, f"--scorer {spec!r}: the option text after ':'"))
    if not name:
        msg = f"--scorer {spec!r}: no scorer name"
        raise ConfigError(msg)
    return ScorerSpec(name, options)


@dataclass(frozen=True)
class TrainConfig:
    """The `rnnwatch train` flags every series is trained with (one configuration for the whole corpus)."""

    arch: str = "gru"
    hidden: int | None = None  # None: the trainer's default
    epochs: int | None = None
    seed: int = 0
    extra: tuple[str, ...] = ()  # further `rnnwatch train` flags, verbatim

    def argv(self, csv_path: Path, train_rows: int, output: Path) -> list[str]:
        """The `rnnwatch train` command line (without the program name) for one series."""
        sized = [*(["--hidden", str(self.hidden)] if self.hidden is not None else []),
                 *(["--epochs", str(self.epochs)] if self.epochs is not None else [])]
        return ["train", "--arch", self.arch, *sized, "--seed", str(self.seed), "--input", str(csv_path),
                "--time-column", "timestamp", "--train-rows", str(train_rows),
                "--trained-at", "2000-01-01T00:00:00Z", "--output", str(output), *self.extra]


@dataclass(frozen=True)
class ScoredRun:
    """One scorer's output on one series (aligned with the series' rows)."""

    score: np.ndarray  # float64 [T], NaN where the runtime skipped a row
    is_anomaly: np.ndarray  # bool [T]
    surprise: np.ndarray  # float64 [T]: -log10 of the tail probability, which keeps its resolution near 1
    alarm: np.ndarray | None = None  # bool [T]: over the threshold (any row of an incident)


@dataclass(frozen=True)
class SeriesRun:
    """A series trained and scored: rows, label windows (event ms) and each scorer's output.

    The arrays hold the rows `run`'s decoder accepted (T of them, in file order); a refused row has no
    place in them (it may have no event time), so labels are matched to rows by event time, never by position.
    """

    series: CorpusSeries
    rows: int  # rows in the file
    refused: dict[str, int]  # rows not scored, by run's reason (dead-letter or skip), as `score` reports them
    event_ms: np.ndarray  # int64 [T]
    values: np.ndarray  # float32 [T]
    expected: np.ndarray  # float32 [T]: the forecast each row was compared with (NaN at the first)
    probation: int
    threshold: float  # the model's calibrated threshold (what the product alerts at by default)
    runs: dict[str, ScoredRun]  # by ScorerSpec.label
    train_seconds: float
    score_seconds: float
    # the trainer's forecast-skill gate per feature (1: the model's forecast, 0: no change); () if not recorded
    forecast_weight: tuple[float, ...] = ()


def run_series(series: CorpusSeries, config: TrainConfig, scorers: Sequence[ScorerSpec]) -> SeriesRun:
    """Train on the probationary rows of ``series`` and score every row with each scorer."""
    from rnnwatch.export.cli import build_parser, training_config
    from rnnwatch.export.train import train

    with tempfile.TemporaryDirectory(prefix="rnnwatch-eval-") as tmp:
        model = Path(tmp) / "model.onnx"
        n_rows = _count_rows(series.path)
        probation = probation_rows(n_rows)
        t0 = time.perf_counter()
        train(training_config(build_parser().parse_args(config.argv(series.path, probation, model))))
        t1 = time.perf_counter()
        signature = load_signature(model)
    # `rnnwatch score`'s reading: each row through run's decoder, a bad row refused on its own
    inp = decode_input(signature, series.path, key_column="", time_column="timestamp", source="corpus series")
    batch = inp.batch
    runs = {}
    expected = np.full(len(batch.x), np.nan, dtype=np.float32)
    refused: Counter[str] = Counter()
    for spec in scorers:
        res = score_rows(signature, batch.keys, batch.event_ms, batch.x, scorer=spec.name,
                         scorer_options=spec.options)
        with np.errstate(divide="ignore"):
            surprise = -np.log10(res.tail)  # a tail that underflowed to 0 ranks above everything (inf)
        runs[spec.label] = ScoredRun(res.score, res.is_anomaly, surprise, res.alarm)
        expected = res.expected[:, 0]
        refused = Counter(s for s in inp.spread(res, signature.n_features)[1].tolist() if s != STATUS[PROCESSED])
    t2 = time.perf_counter()
    skill = signature.provenance.get("forecast_skill")
    weight = tuple(float(w) for w in skill.get("weight", ())) if isinstance(skill, dict) else ()
    return SeriesRun(series, len(inp.table), dict(sorted(refused.items())), batch.event_ms, batch.x[:, 0], expected,
                     probation, signature.scoring.threshold, runs, t1 - t0, t2 - t1, weight)


def _count_rows(path: Path) -> int:
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip()) - 1


def run_corpus(series: Sequence[CorpusSeries], config: TrainConfig, scorers: Sequence[ScorerSpec], *,
               jobs: int = 2, progress: Callable[[SeriesRun], None] | None = None) -> list[SeriesRun]:
    """Every series through :func:`run_series`, ``jobs`` at a time (1: in this process), in input order."""
    if jobs <= 1:
        out = []
        for s in series:
            out.append(run_series(s, config, scorers))
            if progress:
                progress(out[-1])
        return out
    # spawn, not fork: torch and onnxruntime keep thread pools a forked child must not inherit
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_series, s, config, scorers) for s in series]
        results = []
        for f in futures:
            results.append(f.result())
            if progress:
                progress(results[-1])
    return results

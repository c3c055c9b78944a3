"""`rnnwatch evaluate`: detection quality on a labeled corpus in NAB's layout, scored with NAB v1.1.

    rnnwatch evaluate --corpus DIR [--category C]... [--series GLOB]... [--scorer SPEC]... [--jobs N] [--seeds N]

Per series: `rnnwatch train` on the probationary rows (the first 15 %, at most 750), `rnnwatch score` on
every row. JSON on stdout (per scorer: NAB scores of the three profiles at the best corpus-wide threshold
and for the shipped decisions, per category, per series with its rows refused by reason, as `score` refuses
them); a per-category table on stderr. With ``--seeds N`` the corpus is run once per trainer seed and the JSON's
``seed_spread`` says how far each score moves with the seed alone (``rnnwatch.evaluate.spread``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rnnwatch.consumer.cli import run_command
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.offline import DEFAULT_SCORER, check_scorer
from rnnwatch.evaluate.corpus import CorpusSeries, find_series
from rnnwatch.evaluate.harness import ScorerSpec, SeriesRun, TrainConfig, parse_scorer_spec, run_corpus
from rnnwatch.evaluate.results import corpus_scores
from rnnwatch.evaluate.spread import seed_spread
from rnnwatch.evaluate.table import render_html, render_table

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnwatch")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("evaluate", help="NAB scores of train + score on a labeled corpus (NAB layout).",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True,
                   help="Corpus directory (data/<category>/*.csv, labels/combined_windows.json).")
    p.add_argument("--category", action="append", help="Only this category (repeatable).")
    p.add_argument("--series", action="append", help="Only series matching this glob, e.g. 'nyc_*' (repeatable).")
    p.add_argument("--scorer", action="append",
                   help=f"Scorer to evaluate, NAME or NAME:{{json options}} (repeatable; default {DEFAULT_SCORER}).")
    p.add_argument("--scorer-options", default="{}", help="JSON options for every --scorer (as `score` takes them).")
    p.add_argument("--jobs", type=int, default=2, help="Series trained and scored in parallel (default 2).")
    p.add_argument("--arch", default="gru", help="`rnnwatch train --arch` (default gru).")
    p.add_argument("--hidden", type=int, default=None, help="`rnnwatch train --hidden` (default: the trainer's).")
    p.add_argument("--epochs", type=int, default=None, help="`rnnwatch train --epochs` (default: the trainer's).")
    p.add_argument("--seed", type=int, default=0, help="`rnnwatch train --seed` (default 0; see --seeds).")
    p.add_argument("--seeds", type=int, default=1,
                   help="Run the corpus once per seed (--seed, --seed + 1, ...) and report how far the scores move "
                        "with the seed alone (default 1: no spread; the main results are the first seed's).")
    p.add_argument("--train-arg", action="append", default=[],
                   help="A further `rnnwatch train` flag, verbatim, e.g. --train-arg=--window=32 (repeatable).")
    p.add_argument("--output", default="-", help="Where to write the JSON (default stdout).")
    p.add_argument("--report", default="", help="Also write a self-contained HTML report (a plot per series) here.")
    p.set_defaults(func=_evaluate)
    return parser


def _scorer_defaults(text: str) -> dict[str, Any]:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"--scorer-options is not JSON: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(options, dict):
        msg = "--scorer-options must be a JSON object"
        raise ConfigError(msg)
    return options


def _evaluate(args: argparse.Namespace) -> int:
    corpus = Path(args.corpus)
    defaults = _scorer_defaults(args.scorer_options)
    specs = [parse_scorer_spec(s, defaults) for s in (args.scorer or [DEFAULT_SCORER])]
    if len({s.label for s in specs}) != len(specs):
        msg = "the same --scorer is given twice"
        raise ConfigError(msg)
    if args.seeds < 1:
        msg = f"--seeds must be >= 1, got {args.seeds}"
        raise ConfigError(msg)
    for spec in specs:
        check_scorer(spec.name, spec.options)  # before hours of training, not after
    series = find_series(corpus, args.category, args.series)
    config = TrainConfig(args.arch, args.hidden, args.epochs, args.seed, tuple(args.train_arg))
    started = time.perf_counter()

    def progress(run: SeriesRun) -> None:
        print(f"  {run.series.name}: {len(run.event_ms)} rows, trained in {run.train_seconds:.1f}s, "
              f"scored in {run.score_seconds:.1f}s", file=sys.stderr)

    print(f"evaluating {len(series)} series of {corpus} ({args.jobs} jobs)", file=sys.stderr)
    runs = run_corpus(series, config, specs, jobs=args.jobs, progress=progress)
    report = {
        "corpus": str(corpus), "series": len(runs), "seconds": round(time.perf_counter() - started, 1),
        "train": {"arch": config.arch, "hidden": config.hidden, "epochs": config.epochs, "seed": config.seed,
                  "extra": list(config.extra), "train_rows": "probationary (min(floor(0.15 n), 750))"},
        "scorers": [{"scorer": s.name, "options": dict(s.options), **corpus_scores(runs, s.label)} for s in specs],
    }
    if args.seeds > 1:
        report["seed_spread"] = _seed_spread(runs, series, config, specs, args.seeds, args.jobs)
    text = json.dumps(report, indent=2)
    if args.output == "-":
        print(text)
    else:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    if args.report:
        Path(args.report).write_text(render_html(report, runs, [s.label for s in specs]), encoding="utf-8")
    print(render_table(report), file=sys.stderr)
    return 0


def _seed_spread(first: list[SeriesRun], series: list[CorpusSeries], config: TrainConfig, specs: list[ScorerSpec],
                 n_seeds: int, jobs: int) -> list[dict[str, Any]]:
    """Per scorer, the spread of its scores over ``n_seeds`` trainer seeds (``first``: the runs of ``config.seed``)."""
    seeds = [config.seed + i for i in range(n_seeds)]
    blocks: list[list[dict[str, Any]]] = [[corpus_scores(first, s.label) for s in specs]]
    for seed in seeds[1:]:
        print(f"seed {seed}: evaluating {len(series)} series again", file=sys.stderr)
        runs = run_corpus(series, replace(config, seed=seed), specs, jobs=jobs)
        blocks.append([corpus_scores(runs, s.label) for s in specs])
    return [{"scorer": s.label, **seed_spread([b[i] for b in blocks], seeds)} for i, s in enumerate(specs)]


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))

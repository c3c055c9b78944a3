"""`rnnwatch score`: the flags of the offline path (:mod:`rnnwatch.consumer.offline`, whose docstring is the help)."""

from __future__ import annotations

import argparse

from rnnwatch.consumer import offline
from rnnwatch.consumer.scoring import DEFAULT_INCIDENT_GAP_STEPS
from rnnwatch.consumer.scoring_config import json_object

__all__ = ["add_scoring_arguments", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("score", help="Score a CSV offline through the same checks, runner and scorer as `run`.",
                       description=offline.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Step model (.onnx).")
    p.add_argument("--input", required=True, help="Input CSV with a header row (UTF-8).")
    p.add_argument("--output", default="-", help="Output CSV (default '-': stdout).")
    p.add_argument("--time-column", default=None,
                   help="Event time column (default: the model's training time column, else 'ts').")
    p.add_argument("--column", action="append", default=None,
                   help="Value column per model feature, in feature order (default: the feature names, "
                        "or 'value' for a one-feature model).")
    p.add_argument("--key-column", default=None,
                   help="Column that separates several series (default: the model's key column, else 'symbol', "
                        "if the file has it; '' = the whole file is one series).")
    p.add_argument("--threshold", type=float, default=None, help="Override the model's calibrated threshold, (0, 1).")
    p.add_argument("--warmup-steps", type=int, default=None, help="Override the model's warm-up.")
    p.add_argument("--report", default="", help="Also write a self-contained HTML report (a plot per key) here.")
    add_scoring_arguments(p)
    p.set_defaults(func=_run)


def add_scoring_arguments(p: argparse.ArgumentParser) -> None:
    """The scorer flags of `score` (`run`/`demo` declare the same names in settings)."""
    p.add_argument("--scorer", default=None, help="Scorer spec, e.g. 'novelty+likelihood' [default: the model's].")
    p.add_argument("--scorer-options", default="",
                   help='Scorer options as JSON: {"likelihood": {"long_halflife": 500}}.')
    p.add_argument("--threshold-surprise", type=float, default=None,
                   help="Alarm when -log10(tail) >= this (6 = 1e-6) [default: the model's calibrated one].")
    p.add_argument("--incident-gap-steps", type=int, default=None,
                   help="An alarm at most this many steps after the key's previous one continues its incident (0: no "
                        "grouping) "
                        f"(default {DEFAULT_INCIDENT_GAP_STEPS}).")
    p.add_argument("--incident-updates", type=int, default=None,
                   help="Update events an incident may emit for a new peak (default 0).")


def _run(args: argparse.Namespace) -> int:
    options = json_object(args.scorer_options, "--scorer-options")
    options.update({"threshold": args.threshold, "warmup_steps": args.warmup_steps,
                    "threshold_surprise": args.threshold_surprise, "incident_gap_steps": args.incident_gap_steps,
                    "incident_updates": args.incident_updates})
    offline.score_csv(args.model, args.input, args.output, scorer=args.scorer, scorer_options=options,
                      key_column=args.key_column, time_column=args.time_column, columns=args.column,
                      report=args.report)
    return 0


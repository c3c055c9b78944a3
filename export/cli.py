"""`rnnwatch train` and `rnnwatch export` (the runtime's CLI delegates here, so it never imports torch).

The only place the training side parses flags: `train`'s become a :class:`~rnnwatch.export.config.TrainingConfig`
(:func:`training_config`), whose classes also give the flags their defaults.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnnwatch.consumer.cli import run_command
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.export.config import ArchOptions, TrainingConfig, defaults, parse_periods
from rnnwatch.export.registry import ARCHITECTURES
from rnnwatch.export.skill import ForecastSkill
from rnnwatch.export.transform import TRANSFORMS

__all__ = ["build_parser", "main", "training_config"]

_TRAIN = defaults(TrainingConfig)
_ARCH = defaults(ArchOptions)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnwatch")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="Train a reference forecaster on a CSV and export a step model.",
                       description="Architectures: " + "; ".join(f"{a.name} = {a.summary}"
                                                                  for a in ARCHITECTURES.values()))
    t.add_argument("--arch", required=True, choices=list(ARCHITECTURES), help="Architecture.")
    t.add_argument("--input", required=True, help="CSV with a header row.")
    t.add_argument("--column", action="append",
                   help="Feature column(s), in order (default: 'price' if the file has it, else 'value').")
    t.add_argument("--key-column", default=None,
                   help="Column naming the series, one model for all keys (default: 'symbol' if the file has it; "
                        "'' = one series).")
    t.add_argument("--time-column", default=None,
                   help="Column to sort each series by (default: 'ts' if the file has it; '' = file order).")
    t.add_argument("--train-rows", type=int, default=_TRAIN["train_rows"],
                   help="Use the first N rows of each series (0 = all).")
    t.add_argument("--transform", default=_TRAIN["transform"], choices=["auto", *TRANSFORMS],
                   help="Input transform baked into the graph (auto: sqrt for an over-dispersed count of whole "
                        "numbers >= 0, log-return if all values > 0 and they wander like a price, else level; a "
                        "metric that reverts to its level keeps levels).")
    t.add_argument("--epochs", type=int, default=_TRAIN["epochs"], help="Most epochs (early stop on held-out loss).")
    t.add_argument("--window", type=int, default=_TRAIN["window"], help="Truncated-BPTT window length.")
    t.add_argument("--batch-size", type=int, default=_TRAIN["batch_size"])
    t.add_argument("--lr", type=float, default=_TRAIN["lr"])
    t.add_argument("--seed", type=int, default=_TRAIN["seed"])
    t.add_argument("--warmup-steps", type=int, default=_TRAIN["warmup_steps"],
                   help="Steps a key must see before it can alert.")
    t.add_argument("--halflife-steps", type=float, default=_TRAIN["halflife_steps"],
                   help="Half-life of the per-key normaliser.")
    t.add_argument("--scorer", default=_TRAIN["scorer"],
                   help="Default scorer written into the model (e.g. 'gaussian+likelihood'); 'auto' picks it from "
                        "the data: volatility for positive (log-return) series (default auto).")
    t.add_argument("--target-rate", type=float, default=_TRAIN["target_rate"],
                   help="Alarm rows per row the written threshold allows on rows the model was not fitted on; the "
                        "surprise threshold is -log10 of it (default %(default)g).")
    t.add_argument("--forecast-gate", type=float, default=_TRAIN["forecast_gate"], metavar="T",
                   help="Keep a feature's forecast only if it shows skill on the held-out rows: the t statistic of "
                        "the outcome's regression on it (robust standard error) is at least T; else the model "
                        "forecasts no change (the training mean return, difference or level). 0 keeps every "
                        "forecast (default %(default)g).")
    t.add_argument("--name", default=_TRAIN["name"], help="Model name (default: <csv stem>-<arch>).")
    t.add_argument("--model-version", default=_TRAIN["model_version"])
    t.add_argument("--trained-at", default=_TRAIN["trained_at"],
                   help="Pin the trained_at metadata (reproducible builds).")
    t.add_argument("--output", required=True, help="Where to write the .onnx step model.")
    _add_arch_options(t)
    t.set_defaults(func=_train)
    e = sub.add_parser("export", help="Export your own StepModule to an ONNX step model.")
    e.add_argument("--module", required=True, help="package.module:factory returning a StepModule.")
    e.add_argument("--feature", action="append", required=True,
                   help="name[:domain] per input feature, in order (domain: positive, nonnegative, real).")
    e.add_argument("--name", required=True)
    e.add_argument("--model-version", default="1")
    e.add_argument("--residual-std", type=float, action="append",
                   help="Typical one-step residual std per feature, message units (default 1).")
    e.add_argument("--threshold", type=float, default=0.9999)
    e.add_argument("--warmup-steps", type=int, default=20)
    e.add_argument("--halflife-steps", type=float, default=250.0)
    e.add_argument("--output", required=True)
    e.set_defaults(func=_export)
    return parser


def _add_arch_options(parser: argparse.ArgumentParser) -> None:
    """Architecture options (:class:`ArchOptions`); each names the architectures it applies to."""
    d = _ARCH
    a = parser.add_argument_group("architecture options")
    a.add_argument("--hidden", type=int, default=d["hidden"], help="Hidden units (all but esn; default 32).")
    a.add_argument("--layers", type=int, default=d["layers"], help="stacked: recurrent layers (default 2).")
    a.add_argument("--cell", default=d["cell"], choices=["elman", "lstm", "gru"], help="stacked/birnn: cell type.")
    a.add_argument("--jordan-decay", type=float, default=d["jordan_decay"],
                   help="jordan: decay mu of the output average.")
    a.add_argument("--delays", type=int, default=d["delays"], help="tdnn: window of past inputs (default 8).")
    a.add_argument("--input-delays", type=int, default=d["input_delays"],
                   help="narx: input delay line length (default 4).")
    a.add_argument("--output-delays", type=int, default=d["output_delays"],
                   help="narx: output delay line length (default 2).")
    a.add_argument("--reservoir", type=int, default=d["reservoir"], help="esn: reservoir size (default 200).")
    a.add_argument("--spectral-radius", type=float, default=d["spectral_radius"], help="esn: spectral radius (< 1).")
    a.add_argument("--density", type=float, default=d["density"],
                   help="esn: fraction of non-zero reservoir weights.")
    a.add_argument("--input-scaling", type=float, default=d["input_scaling"], help="esn: input weight scale.")
    a.add_argument("--leak", type=float, default=d["leak"], help="esn: leak rate (1 = no leak).")
    a.add_argument("--ridge", type=float, default=d["ridge"], help="esn: ridge regularisation.")
    a.add_argument("--periods", default=",".join(map(str, d["periods"])),
                   help="clockwork: module periods (default 1,2,4,8).")
    a.add_argument("--bi-window", type=int, default=d["bi_window"], help="birnn: trailing window length (default 16).")


def training_config(args: argparse.Namespace) -> TrainingConfig:
    """The parsed `rnnwatch train` flags as a validated config (a ConfigError names the flag to fix)."""
    options = ArchOptions(
        hidden=args.hidden, layers=args.layers, cell=args.cell, jordan_decay=args.jordan_decay, delays=args.delays,
        input_delays=args.input_delays, output_delays=args.output_delays, reservoir=args.reservoir,
        spectral_radius=args.spectral_radius, density=args.density, input_scaling=args.input_scaling,
        leak=args.leak, ridge=args.ridge, periods=parse_periods(args.periods), bi_window=args.bi_window,
    )
    return TrainingConfig(
        arch=args.arch, input=Path(args.input), output=Path(args.output), columns=tuple(args.column or ()),
        key_column=args.key_column, time_column=args.time_column, train_rows=args.train_rows,
        transform=args.transform, epochs=args.epochs, window=args.window, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, warmup_steps=args.warmup_steps, halflife_steps=args.halflife_steps, scorer=args.scorer,
        target_rate=args.target_rate, forecast_gate=args.forecast_gate, name=args.name,
        model_version=args.model_version, trained_at=args.trained_at, options=options,
    )


def _train(args: argparse.Namespace) -> int:
    from rnnwatch.export.train import train

    result = train(training_config(args))
    s = result.spec
    if args.transform == "auto" and s.provenance["transform"] == "log-return":
        print(_LOG_RETURN_NOTICE)
    if result.skill.dropped:
        print(_dropped_line(result.skill, [name for name, _ in s.features], str(s.provenance["transform"])))
    print(f"wrote {result.path}: {s.name} {s.version} ({s.architecture}), scorer {s.scoring.scorer}, "
          f"threshold_surprise {s.scoring.threshold_surprise} (score {s.scoring.threshold}), "
          f"parity max abs err {result.parity['max_abs_error']:.2e}")
    return 0


# `auto` sees only the training rows: a metric that later reaches 0 (a CPU that stops) is dead-lettered row by row
_LOG_RETURN_NOTICE = ("transform: log-return (auto: every training value is > 0 and its changes are uncorrelated, as "
                      "a price's are); the model refuses a value <= 0 "
                      "(dead-letter reason out_of_domain): for a metric that can reach 0, train with --transform diff "
                      "or --transform level")

_NO_CHANGE = {"log-return": "the last value times exp(the training mean log-return)",
              "diff": "the last value plus the training mean difference", "level": "the training mean level",
              "sqrt": "the square of the training mean square root"}


def _dropped_line(skill: ForecastSkill, features: Sequence[str], transform: str) -> str:
    """One line naming the features whose forecast the gate replaced, their t, and how to keep them."""
    which = ", ".join(f"{features[i]} (t {skill.t[i]:.2f} < gate {skill.gate:g})" for i in skill.dropped)
    return (f"forecast: no skill on the {skill.rows} held-out rows for {which}; forecasting no change instead "
            f"({_NO_CHANGE[transform]}); --forecast-gate 0 keeps the model's forecast")


def _export(args: argparse.Namespace) -> int:
    from rnnwatch.export.api import export_user_module

    factory = _factory(args.module)
    features = [tuple([*f.split(":", 1), "real"][:2]) for f in args.feature]
    report = export_user_module(
        factory(), args.output, name=args.name, version=args.model_version, features=features,
        residual_std=args.residual_std, threshold=args.threshold, warmup_steps=args.warmup_steps,
        halflife_steps=args.halflife_steps,
    )
    print(f"wrote {args.output}: parity max abs err {report['max_abs_error']:.2e}")
    return 0


def _factory(spec: str) -> Callable[[], Any]:
    """The factory ``module:name`` names; the current directory is importable, as with ``python -m``."""
    module_name, _, factory_name = spec.partition(":")
    if not module_name or not factory_name:
        msg = f"--module must look like package.module:factory, got {spec!r}"
        raise ConfigError(msg)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name and module_name.startswith(exc.name):
            msg = (f"--module {spec}: no module {module_name!r} importable from {os.getcwd()} "
                   "(run from the directory holding it, or set PYTHONPATH)")
        else:
            msg = f"--module {spec}: importing {module_name} failed: {exc}"
        raise ConfigError(msg) from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        msg = f"--module {spec}: {module_name} has no callable {factory_name!r} (it has: {', '.join(names) or 'none'})"
        raise ConfigError(msg)
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))

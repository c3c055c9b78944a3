"""`rnnwatch train` and `rnnwatch export` (the runtime's CLI delegates here, so it never imports torch)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rnnwatch.consumer.cli import run_command
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.export.calibrate import TARGET_FALSE_ALARM_RATE
from rnnwatch.export.registry import ARCHITECTURES, add_arch_options, check_arch_options
from rnnwatch.export.transform import TRANSFORMS

__all__ = ["main"]


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
    t.add_argument("--train-rows", type=int, default=0, help="Use the first N rows of each series (0 = all).")
    t.add_argument("--transform", default="auto", choices=["auto", *TRANSFORMS],
                   help="Input transform baked into the graph (auto: log-return if all values > 0, else level).")
    t.add_argument("--epochs", type=int, default=40, help="Most epochs (early stop on held-out loss).")
    t.add_argument("--window", type=int, default=64, help="Truncated-BPTT window length.")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=5e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--warmup-steps", type=int, default=20, help="Steps a key must see before it can alert.")
    t.add_argument("--halflife-steps", type=float, default=250.0, help="Half-life of the per-key normaliser.")
    t.add_argument("--scorer", default="auto",
                   help="Default scorer written into the model (e.g. 'gaussian+likelihood'); 'auto' picks it from "
                        "the data: volatility for positive (log-return) series (default auto).")
    t.add_argument("--target-rate", type=float, default=TARGET_FALSE_ALARM_RATE,
                   help="False alarms per row the calibrated threshold aims at on held-out rows (default 10^-2.5).")
    t.add_argument("--name", default="", help="Model name (default: <csv stem>-<arch>).")
    t.add_argument("--model-version", default="1")
    t.add_argument("--trained-at", default="", help="Pin the trained_at metadata (reproducible builds).")
    t.add_argument("--output", required=True, help="Where to write the .onnx step model.")
    add_arch_options(t)
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


def _train(args: argparse.Namespace) -> int:
    from rnnwatch.export.train import train

    check_arch_options(args)
    if not 0.0 < args.target_rate < 0.5:
        msg = f"--target-rate must be in (0, 0.5), got {args.target_rate}"
        raise ConfigError(msg)
    result = train(args)
    s = result.spec
    print(f"wrote {result.path}: {s.name} {s.version} ({s.architecture}), scorer {s.scoring.scorer}, "
          f"threshold_surprise {s.scoring.threshold_surprise} (score {s.scoring.threshold}), "
          f"parity max abs err {result.parity['max_abs_error']:.2e}")
    return 0


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

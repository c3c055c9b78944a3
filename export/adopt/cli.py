"""`rnnwatch adopt MODEL.onnx --output step.onnx` (the runtime's CLI delegates here; needs onnx, never torch)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rnnwatch.consumer.cli import run_command
from rnnwatch.export.adopt.core import AdoptOptions, AdoptResult, adopt_model
from rnnwatch.export.adopt.mapping import LAYOUTS, MappingRequest
from rnnwatch.export.adopt.transform import KINDS

__all__ = ["build_parser", "main"]

_EXAMPLES = """\
examples:
  # torch.onnx.export of an nn.LSTM forecaster (inputs x, h0, c0; outputs y, hn, cn), trained on log-returns
  rnnwatch adopt lstm.onnx --transform log-return --mean 0.0003 --std 0.012 --feature price \\
      --data history.csv --key-column symbol --time-column ts --output step.onnx
  # pin what the guess got wrong
  rnnwatch adopt gru.onnx --input obs --layout sequence-first --state initial_h=Y_h --forecast pred \\
      --transform level --output step.onnx
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnwatch")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("adopt", help="Wrap an existing recurrent ONNX model as a step model (no torch needed).",
                       description="Turn a recurrent ONNX model whose state is exposed as inputs and outputs\n"
                                   "into an rnnwatch step model: map it, wrap it, prove parity, calibrate.\n"
                                   "Nothing is written unless the proof passes.",
                       epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("model", help="The recurrent ONNX model (one self-contained .onnx file).")
    a.add_argument("--output", required=True, help="Where to write the step model.")
    m = a.add_argument_group("mapping (guessed when not given; every guess is printed)")
    m.add_argument("--input", dest="observation", metavar="NAME", help="The input that reads the observation.")
    m.add_argument("--layout", choices=LAYOUTS, help="The observation's layout: [batch, time, F], [time, batch, F] "
                                                     "or [batch, F].")
    m.add_argument("--state", action="append", default=[], type=_pair, metavar="IN=OUT",
                   help="A carried state: the input that takes it and the output that gives it back (repeat).")
    m.add_argument("--forecast", metavar="NAME", help="The output that forecasts the next observation.")
    m.add_argument("--scale", metavar="NAME", help="An output with the forecast's predicted std (optional).")
    t = a.add_argument_group("what the model reads (baked into the step graph)")
    t.add_argument("--transform", required=True, choices=KINDS,
                   help="The input transform the model was trained on; none = it reads and forecasts raw values.")
    t.add_argument("--mean", type=_floats, default=(), metavar="V[,V...]",
                   help="Normalisation mean of the transformed values, 1 or one per feature (default 0).")
    t.add_argument("--std", type=_floats, default=(), metavar="V[,V...]",
                   help="Normalisation std of the transformed values, 1 or one per feature (default 1).")
    t.add_argument("--feature", action="append", default=[], metavar="NAME[:DOMAIN]",
                   help="Message field per model feature, in order (domain: positive, nonnegative, real).")
    d = a.add_argument_group("held-out data: parity sequences, residual statistics, threshold calibration")
    d.add_argument("--data", type=Path, metavar="CSV", help="Rows the model was not trained on (header row).")
    d.add_argument("--column", action="append", default=[], help="Value column per feature (default: feature names).")
    d.add_argument("--key-column", default="", help="Column naming the series (several keys in one file).")
    d.add_argument("--time-column", default="", help="Column to sort each series by (default: file order).")
    s = a.add_argument_group("identity and scoring")
    s.add_argument("--name", default="", help="Model name (default: the file's stem).")
    s.add_argument("--model-version", default="1")
    s.add_argument("--warmup-steps", type=int, default=20, help="Steps a key must see before it can alert.")
    s.add_argument("--halflife-steps", type=float, default=250.0, help="Half-life of the per-key normaliser.")
    s.add_argument("--residual-std", type=_floats, default=(), metavar="V[,V...]",
                   help="One-step residual std per feature, message units (default: from --data).")
    s.add_argument("--adopted-at", default="", help="Pin the adopted_at metadata (reproducible builds).")
    a.set_defaults(func=_adopt)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


def _adopt(args: argparse.Namespace) -> int:
    options = AdoptOptions(
        source=Path(args.model), output=Path(args.output), transform=args.transform,
        mapping=MappingRequest(args.observation, args.layout, tuple(args.state), args.forecast, args.scale),
        mean=args.mean, std=args.std, features=tuple(args.feature), data=args.data, columns=tuple(args.column),
        key_column=args.key_column, time_column=args.time_column, name=args.name, version=args.model_version,
        warmup_steps=args.warmup_steps, halflife_steps=args.halflife_steps, residual_std=args.residual_std,
        adopted_at=args.adopted_at,
    )
    result = adopt_model(options, report=print)
    print(summary(result))
    return 0


def summary(result: AdoptResult) -> str:
    p, s = result.parity, result.spec
    sequences = "windows of the data" if result.holdout_rows else "synthetic sequences"
    scoring = (f"threshold {s.scoring.threshold:g} calibrated on {result.holdout_rows} held-out rows"
               if result.holdout_rows else
               f"threshold {s.scoring.threshold:g} NOT calibrated: pass rows the model was not trained on with --data")
    states = ", ".join(f"{st.name} {list(st.shape)}" for st in s.states)
    return "\n".join([
        f"parity   max abs err {p['max_abs_error']:.2g}, max rel err {p['max_rel_error']:.2g} over 1/7/64/257-step "
        f"{sequences}; batch-invariant (max {p['batch_max_abs_error']:.2g})",
        f"scoring  {scoring}",
        f"wrote    {result.path}: {s.name} {s.version} ({s.architecture}); state {states}",
    ])


def _pair(text: str) -> tuple[str, str]:
    given, sep, comes = text.partition("=")
    if not sep or not given or not comes:
        msg = f"expected IN=OUT (e.g. h0=hn), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return given, comes


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        msg = f"expected numbers separated by commas, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc

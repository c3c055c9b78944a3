"""Architectures `rnnwatch train --arch NAME` knows: name -> factory, fitting method, CLI options.

The order of :data:`ARCHITECTURES` is the order the CLI and the README list them in.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.export.models.base import StepModule
from rnnwatch.export.models.birnn import BiRNNForecaster
from rnnwatch.export.models.clockwork import ClockworkForecaster
from rnnwatch.export.models.deep_transition import DeepTransitionForecaster
from rnnwatch.export.models.elman import ElmanForecaster
from rnnwatch.export.models.esn import EchoStateForecaster
from rnnwatch.export.models.gru import GRUForecaster
from rnnwatch.export.models.jordan import JordanForecaster
from rnnwatch.export.models.lstm import LSTMForecaster
from rnnwatch.export.models.narx import NARXForecaster
from rnnwatch.export.models.stacked import StackedForecaster
from rnnwatch.export.models.tdnn import TDNNForecaster

__all__ = ["ARCHITECTURES", "Architecture", "add_arch_options", "check_arch_options"]

Options = argparse.Namespace


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str
    build: Callable[[int, Options], StepModule]  # (n_features, parsed options) -> module
    fit: str = "backprop"  # or "ridge": closed-form readout (echo state networks)


def _periods(text: str) -> tuple[int, ...]:
    try:
        periods = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        periods = ()
    if not periods or min(periods) < 1:
        msg = f"--periods must be comma-separated whole numbers >= 1 (e.g. 1,2,4,8), got {text!r}"
        raise ConfigError(msg)
    return periods


_POSITIVE = ("hidden", "layers", "delays", "input_delays", "output_delays", "reservoir", "bi_window", "epochs",
             "window", "batch_size")


def check_arch_options(options: Options) -> None:
    """Refuse option values no architecture can be built with, naming the flag (before any training)."""
    for name in _POSITIVE:
        value = getattr(options, name, None)
        if value is not None and value < 1:
            msg = f"--{name.replace('_', '-')} must be >= 1, got {value}"
            raise ConfigError(msg)
    if getattr(options, "arch", "") == "clockwork":
        periods = _periods(options.periods)
        if options.hidden % len(periods):
            msg = (f"--hidden ({options.hidden}) must be a multiple of the number of --periods ({len(periods)}), "
                   f"e.g. --hidden {len(periods) * max(1, options.hidden // len(periods))}")
            raise ConfigError(msg)


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("elman", "Elman RNN (tanh)", lambda f, o: ElmanForecaster(f, o.hidden)),
    Architecture("jordan", "Jordan network (decaying average of past outputs)",
                 lambda f, o: JordanForecaster(f, o.hidden, o.jordan_decay)),
    Architecture("lstm", "LSTM", lambda f, o: LSTMForecaster(f, o.hidden)),
    Architecture("gru", "GRU", lambda f, o: GRUForecaster(f, o.hidden)),
    Architecture("stacked", "stacked RNN/LSTM/GRU (--layers, --cell)",
                 lambda f, o: StackedForecaster(f, o.hidden, o.layers, o.cell)),
    Architecture("deep-transition", "deep-transition RNN with deep output",
                 lambda f, o: DeepTransitionForecaster(f, o.hidden)),
    Architecture("tdnn", "time-delay network on the last --delays inputs",
                 lambda f, o: TDNNForecaster(f, o.hidden, o.delays)),
    Architecture("narx", "NARX on --input-delays inputs and --output-delays outputs",
                 lambda f, o: NARXForecaster(f, o.hidden, o.input_delays, o.output_delays)),
    Architecture("esn", "echo state network (ridge readout)",
                 lambda f, o: EchoStateForecaster(f, o.reservoir, o.spectral_radius, o.density, o.input_scaling,
                                                  o.leak, o.ridge, o.seed), fit="ridge"),
    Architecture("clockwork", "clockwork RNN (--periods)",
                 lambda f, o: ClockworkForecaster(f, o.hidden, _periods(o.periods))),
    Architecture("birnn", "bidirectional RNN over a trailing --bi-window",
                 lambda f, o: BiRNNForecaster(f, o.hidden, o.bi_window, "lstm" if o.cell == "lstm" else "gru")),
)}


def add_arch_options(parser: argparse.ArgumentParser) -> None:
    """Architecture options; each names the architectures it applies to."""
    a = parser.add_argument_group("architecture options")
    a.add_argument("--hidden", type=int, default=32, help="Hidden units (all but esn; default 32).")
    a.add_argument("--layers", type=int, default=2, help="stacked: recurrent layers (default 2).")
    a.add_argument("--cell", default="gru", choices=["elman", "lstm", "gru"], help="stacked/birnn: cell type.")
    a.add_argument("--jordan-decay", type=float, default=0.5, help="jordan: decay mu of the output average.")
    a.add_argument("--delays", type=int, default=8, help="tdnn: window of past inputs (default 8).")
    a.add_argument("--input-delays", type=int, default=4, help="narx: input delay line length (default 4).")
    a.add_argument("--output-delays", type=int, default=2, help="narx: output delay line length (default 2).")
    a.add_argument("--reservoir", type=int, default=200, help="esn: reservoir size (default 200).")
    a.add_argument("--spectral-radius", type=float, default=0.9, help="esn: spectral radius (< 1).")
    a.add_argument("--density", type=float, default=0.1, help="esn: fraction of non-zero reservoir weights.")
    a.add_argument("--input-scaling", type=float, default=1.0, help="esn: input weight scale.")
    a.add_argument("--leak", type=float, default=1.0, help="esn: leak rate (1 = no leak).")
    a.add_argument("--ridge", type=float, default=1e-4, help="esn: ridge regularisation.")
    a.add_argument("--periods", default="1,2,4,8", help="clockwork: module periods (default 1,2,4,8).")
    a.add_argument("--bi-window", type=int, default=16, help="birnn: trailing window length (default 16).")

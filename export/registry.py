"""Architectures `rnnwatch train --arch NAME` knows: name -> factory (from typed options), fitting method.

The order of :data:`ARCHITECTURES` is the order the CLI and the README list them in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rnnwatch.export.config import ArchOptions
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

__all__ = ["ARCHITECTURES", "Architecture"]


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str
    build: Callable[[int, ArchOptions, int], StepModule]  # (n_features, options, seed) -> module
    fit: str = "backprop"  # or "ridge": closed-form readout (echo state networks)


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("elman", "Elman RNN (tanh)", lambda f, o, _seed: ElmanForecaster(f, o.hidden)),
    Architecture("jordan", "Jordan network (decaying average of past outputs)",
                 lambda f, o, _seed: JordanForecaster(f, o.hidden, o.jordan_decay)),
    Architecture("lstm", "LSTM", lambda f, o, _seed: LSTMForecaster(f, o.hidden)),
    Architecture("gru", "GRU", lambda f, o, _seed: GRUForecaster(f, o.hidden)),
    Architecture("stacked", "stacked RNN/LSTM/GRU (--layers, --cell)",
                 lambda f, o, _seed: StackedForecaster(f, o.hidden, o.layers, o.cell)),
    Architecture("deep-transition", "deep-transition RNN with deep output",
                 lambda f, o, _seed: DeepTransitionForecaster(f, o.hidden)),
    Architecture("tdnn", "time-delay network on the last --delays inputs",
                 lambda f, o, _seed: TDNNForecaster(f, o.hidden, o.delays)),
    Architecture("narx", "NARX on --input-delays inputs and --output-delays outputs",
                 lambda f, o, _seed: NARXForecaster(f, o.hidden, o.input_delays, o.output_delays)),
    Architecture("esn", "echo state network (ridge readout)",
                 lambda f, o, seed: EchoStateForecaster(f, o.reservoir, o.spectral_radius, o.density,
                                                        o.input_scaling, o.leak, o.ridge, seed), fit="ridge"),
    Architecture("clockwork", "clockwork RNN (--periods)",
                 lambda f, o, _seed: ClockworkForecaster(f, o.hidden, o.periods)),
    Architecture("birnn", "bidirectional RNN over a trailing --bi-window",
                 lambda f, o, _seed: BiRNNForecaster(f, o.hidden, o.bi_window, "lstm" if o.cell == "lstm" else "gru")),
)}


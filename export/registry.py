"""Architectures `rnnwatch train --arch NAME` knows: name -> factory, fitting method, CLI options.

More architectures register here (see ``models/``); the order of :data:`ARCHITECTURES` is the order the
CLI lists them in.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

from rnnwatch.export.models.base import StepModule
from rnnwatch.export.models.elman import ElmanForecaster
from rnnwatch.export.models.gru import GRUForecaster
from rnnwatch.export.models.lstm import LSTMForecaster

__all__ = ["ARCHITECTURES", "Architecture", "add_arch_options"]


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str
    build: Callable[[int, argparse.Namespace], StepModule]  # (n_features, options) -> module
    fit: str = "backprop"  # or "ridge" (closed-form readout, e.g. echo state networks)
    options: list[tuple[str, dict[str, object]]] = field(default_factory=list)


ARCHITECTURES: dict[str, Architecture] = {
    "elman": Architecture("elman", "Elman RNN (tanh)", lambda f, o: ElmanForecaster(f, o.hidden)),
    "lstm": Architecture("lstm", "LSTM", lambda f, o: LSTMForecaster(f, o.hidden)),
    "gru": Architecture("gru", "GRU", lambda f, o: GRUForecaster(f, o.hidden)),
}


def add_arch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hidden", type=int, default=32, help="Hidden units (default 32).")
    seen = {"--hidden"}
    for arch in ARCHITECTURES.values():
        for flag, kwargs in arch.options:
            if flag not in seen:
                parser.add_argument(flag, **kwargs)  # type: ignore[arg-type]
                seen.add(flag)

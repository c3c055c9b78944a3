"""Recurrent forecasters as other teams ship them, built without rnnwatch: the models `rnnwatch adopt` is for.

* ``torch.onnx.export`` of an ``nn.LSTM`` / ``nn.GRU`` forecaster with a Linear head, batch-first and
  sequence-first, 1 and 2 layers, the initial states as inputs and the final states as outputs;
* a graph written with ``onnx.helper`` around the standard ONNX ``GRU`` operator (``tests/unit/onnx_builders``).

The torch models are fitted for a few dozen Adam steps on normalised log-returns (u = log-return / STD) of
random walks, so their forecasts are sensible for `score` and `run`; the fit takes well under a second each.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

STD = 0.01  # the models read log-returns / STD and forecast the next one in the same units
HIDDEN = 8
# case -> (cell, batch_first, layers)
TORCH_CASES: dict[str, tuple[str, bool, int]] = {
    "lstm-bf-1": ("lstm", True, 1), "lstm-bf-2": ("lstm", True, 2),
    "lstm-sf-1": ("lstm", False, 1), "lstm-sf-2": ("lstm", False, 2),
    "gru-bf-1": ("gru", True, 1), "gru-bf-2": ("gru", True, 2),
    "gru-sf-1": ("gru", False, 1), "gru-sf-2": ("gru", False, 2),
}


class Forecaster(nn.Module):
    """forward(x, h0[, c0]) -> (next-step forecast per step, hn[, cn]), the way such models are usually written."""

    def __init__(self, cell: str, batch_first: bool, layers: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.cell, self.batch_first, self.layers, self.hidden = cell, batch_first, layers, hidden
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(1, hidden, num_layers=layers, batch_first=batch_first)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        if self.cell == "lstm":
            out, (h, c) = self.rnn(x, (states[0], states[1]))
            return self.head(out), h, c
        out, h = self.rnn(x, states[0])
        return self.head(out), h

    def zero_states(self, batch: int) -> tuple[Tensor, ...]:
        h = torch.zeros(self.layers, batch, self.hidden)
        return (h, h.clone()) if self.cell == "lstm" else (h,)

    @property
    def names(self) -> tuple[list[str], list[str]]:
        return (["x", "h0", "c0"], ["y", "hn", "cn"]) if self.cell == "lstm" else (["x", "h0"], ["y", "hn"])


def fit(model: Forecaster, *, steps: int = 40, seed: int = 0) -> Forecaster:
    """A few Adam steps on one-step-ahead prediction of normalised returns (truly a random walk: learn ~0)."""
    torch.manual_seed(seed)
    u = torch.randn(16, 33, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        xs = u[:, :-1] if model.batch_first else u[:, :-1].transpose(0, 1)
        y = model(xs, *model.zero_states(16))[0]
        y = y if model.batch_first else y.transpose(0, 1)
        loss = torch.mean((y - u[:, 1:]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def export(model: Forecaster, path: Path, *, dynamo: bool = False) -> Path:
    """A plain torch.onnx.export with named dynamic batch and time axes (TorchScript exporter unless ``dynamo``)."""
    ins, outs = model.names
    x = torch.randn(3, 5, 1) if model.batch_first else torch.randn(5, 3, 1)
    args = (x, *model.zero_states(3))
    seq = {0: "batch", 1: "time"} if model.batch_first else {0: "time", 1: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
            shapes = {"x": {k: batch if v == "batch" else time for k, v in seq.items()},
                      "states": tuple({1: batch} for _ in args[1:])}
            program = torch.onnx.export(model, args, input_names=ins, output_names=outs, dynamo=True,
                                        dynamic_shapes=shapes, verbose=False)
            onnx.save(program.model_proto, str(path))  # type: ignore[union-attr]
            return path
    dynamic = {"x": seq, "y": seq, **{n: {1: "batch"} for n in [*ins[1:], *outs[1:]]}}
    return plain_export(model, args, path, ins, outs, dynamic)


def plain_export(module: nn.Module, args: tuple[Tensor, ...], path: Path, input_names: list[str],
                 output_names: list[str], dynamic_axes: dict[str, dict[int, str]] | None = None) -> Path:
    """torch.onnx.export with the TorchScript exporter (the default before torch 2.9), quietly."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, input_names=input_names,  # type: ignore[arg-type]
                          output_names=output_names, dynamic_axes=dynamic_axes, dynamo=False)
    path.write_bytes(buffer.getvalue())
    return path


def build(case: str) -> Forecaster:
    """The fitted module of ``case``; the same weights every time (seeded init and fit)."""
    cell, batch_first, layers = TORCH_CASES[case]
    torch.manual_seed(0)
    return fit(Forecaster(cell, batch_first, layers))

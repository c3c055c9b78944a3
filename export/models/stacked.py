"""Stacked (deep) RNN/LSTM/GRU (Graves et al. 2013): N recurrent layers, each layer's state carried.

The step runs the layers one after another with torch's own per-layer weights; the sequence reference is
the native multi-layer nn.RNN/nn.LSTM/nn.GRU. State per key: h [layers, H] (and c [layers, H] for LSTM).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["StackedForecaster"]

_CELLS = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class StackedForecaster(StepModule):
    def __init__(self, n_features: int = 1, hidden: int = 32, layers: int = 2, cell: str = "gru") -> None:
        super().__init__()
        self.n_features, self.hidden, self.layers, self.cell = n_features, hidden, layers, cell
        self.rnn = _CELLS[cell](n_features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_features)

    def state_spec(self) -> list[StateSpec]:
        spec = [StateSpec("h", (self.layers, self.hidden))]
        return [*spec, StateSpec("c", (self.layers, self.hidden))] if self.cell == "lstm" else spec

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        hs, cs = [], []
        inp = x
        for k in range(self.layers):
            w_ih, w_hh = getattr(self.rnn, f"weight_ih_l{k}"), getattr(self.rnn, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(self.rnn, f"bias_ih_l{k}"), getattr(self.rnn, f"bias_hh_l{k}")
            h = state["h"][:, k]
            gi, gh = inp @ w_ih.T + b_ih, h @ w_hh.T + b_hh
            if self.cell == "elman":
                h = torch.tanh(gi + gh)
            elif self.cell == "gru":
                i_r, i_z, i_n = gi.chunk(3, dim=-1)
                h_r, h_z, h_n = gh.chunk(3, dim=-1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                h = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
            else:
                i, f, g, o = (gi + gh).chunk(4, dim=-1)
                c = torch.sigmoid(f) * state["c"][:, k] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                cs.append(c)
            hs.append(h)
            inp = h
        new = {"h": torch.stack(hs, dim=1)}
        if cs:
            new["c"] = torch.stack(cs, dim=1)
        return self.head(inp), new

    def forward_sequence(self, xs: Tensor) -> Tensor:
        out, _ = self.rnn(xs)
        return self.head(out)

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden, "layers": self.layers, "cell": self.cell}

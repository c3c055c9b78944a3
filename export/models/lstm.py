"""LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), PyTorch's gate layout.

i, f, g, o = split(x W_ih + b_ih + h W_hh + b_hh); C' = σ(f)·C + σ(i)·tanh(g); H' = σ(o)·tanh(C').
State: cell C and hidden H. Initialisation: nn.LSTM default U(-1/sqrt(H), 1/sqrt(H)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["LSTMForecaster"]


class LSTMForecaster(StepModule):
    def __init__(self, n_features: int = 1, hidden: int = 32) -> None:
        super().__init__()
        self.n_features, self.hidden = n_features, hidden
        self.rnn = nn.LSTM(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_features)

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("h", (self.hidden,)), StateSpec("c", (self.hidden,))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.rnn
        gates = x @ r.weight_ih_l0.T + r.bias_ih_l0 + state["h"] @ r.weight_hh_l0.T + r.bias_hh_l0
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * state["c"] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h), {"h": h, "c": c}

    def forward_sequence(self, xs: Tensor) -> Tensor:
        out, _ = self.rnn(xs)
        return self.head(out)

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden}

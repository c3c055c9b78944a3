"""Elman RNN (Elman 1990): h_t = tanh(x_t W_ih + b_ih + h_{t-1} W_hh + b_hh); forecast = h_t W_o + b_o.

Initialisation: PyTorch's nn.RNN default, U(-1/sqrt(H), 1/sqrt(H)), as in the original small-init practice.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["ElmanForecaster"]


class ElmanForecaster(StepModule):
    def __init__(self, n_features: int = 1, hidden: int = 32) -> None:
        super().__init__()
        self.n_features, self.hidden = n_features, hidden
        self.rnn = nn.RNN(n_features, hidden, batch_first=True, nonlinearity="tanh")
        self.head = nn.Linear(hidden, n_features)

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("h", (self.hidden,))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.rnn
        h = torch.tanh(x @ r.weight_ih_l0.T + r.bias_ih_l0 + state["h"] @ r.weight_hh_l0.T + r.bias_hh_l0)
        return self.head(h), {"h": h}

    def forward_sequence(self, xs: Tensor) -> Tensor:
        out, _ = self.rnn(xs)
        return self.head(out)

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden}

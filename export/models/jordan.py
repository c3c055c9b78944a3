"""Jordan network (Jordan 1986): the memory is a decaying average of the network's own past outputs.

s_t = mu·s_{t-1} + (1-mu)·y_{t-1} (state units with self-connection mu; Jordan used a fixed mu), then
h_t = tanh(x_t W_x + s_t W_s + b), y_t = h_t W_o + b_o. No hidden state is carried, only s and y_{t-1}.
mu = 0.5 by default (--jordan-decay); initial s = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["JordanForecaster"]


class JordanForecaster(StepModule):
    def __init__(self, n_features: int = 1, hidden: int = 32, decay: float = 0.5) -> None:
        super().__init__()
        self.n_features, self.hidden, self.decay = n_features, hidden, decay
        self.inp = nn.Linear(2 * n_features, hidden)
        self.head = nn.Linear(hidden, n_features)

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("s", (self.n_features,)), StateSpec("y", (self.n_features,))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        s = self.decay * state["s"] + (1 - self.decay) * state["y"]
        y = self.head(torch.tanh(self.inp(torch.cat([x, s], dim=-1))))
        return y, {"s": s, "y": y}

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden, "decay": self.decay}

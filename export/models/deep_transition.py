"""Deep-transition RNN with deep output (Pascanu et al. 2014, "How to construct deep RNNs", DT(S)-RNN).

The hidden-to-hidden transition is an MLP: h_t = tanh(W_2 relu(W_1 [x_t, h_{t-1}] + b_1) + b_2), and the
output is deep too: y_t = W_4 relu(W_3 h_t + b_3) + b_4. State: h [H].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["DeepTransitionForecaster"]


class DeepTransitionForecaster(StepModule):
    def __init__(self, n_features: int = 1, hidden: int = 32) -> None:
        super().__init__()
        self.n_features, self.hidden = n_features, hidden
        self.transition = nn.Sequential(nn.Linear(n_features + hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.output = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_features))

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("h", (self.hidden,))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        h = torch.tanh(self.transition(torch.cat([x, state["h"]], dim=-1)))
        return self.output(h), {"h": h}

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden}

"""GRU (Cho et al. 2014), PyTorch's formulation (reset gate applied after the hidden matmul).

r = σ(x W_ir + h W_hr + b), z = σ(x W_iz + h W_hz + b), n = tanh(x W_in + b_in + r·(h W_hn + b_hn)),
h' = (1 - z)·n + z·h. Initialisation: nn.GRU default U(-1/sqrt(H), 1/sqrt(H)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["GRUForecaster"]


class GRUForecaster(StepModule):
    def __init__(self, n_features: int = 1, hidden: int = 32) -> None:
        super().__init__()
        self.n_features, self.hidden = n_features, hidden
        self.rnn = nn.GRU(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_features)

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("h", (self.hidden,))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        r_ = self.rnn
        h = state["h"]
        gi = x @ r_.weight_ih_l0.T + r_.bias_ih_l0
        gh = h @ r_.weight_hh_l0.T + r_.bias_hh_l0
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h_new = (1 - z) * n + z * h
        return self.head(h_new), {"h": h_new}

    def forward_sequence(self, xs: Tensor) -> Tensor:
        out, _ = self.rnn(xs)
        return self.head(out)

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden}

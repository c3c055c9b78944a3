"""Time-delay network / sliding-window predictor (Waibel et al. 1989): a finite-response MLP on the last N inputs.

State: the window of the last N inputs, a shift buffer [N, F] (oldest first), zeros before a key has N
inputs (the same zero padding the full-sequence reference uses). The reference builds every window with
``unfold`` over a zero-padded sequence, a computation independent of the shift buffer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as fn
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["TDNNForecaster"]


class TDNNForecaster(StepModule):
    def __init__(self, n_features: int = 1, hidden: int = 32, delays: int = 8) -> None:
        super().__init__()
        self.n_features, self.hidden, self.delays = n_features, hidden, delays
        self.mlp = nn.Sequential(nn.Linear(delays * n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_features))

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("window", (self.delays, self.n_features))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        window = torch.cat([state["window"][:, 1:], x[:, None]], dim=1)
        return self.mlp(window.flatten(1)), {"window": window}

    def forward_sequence(self, xs: Tensor) -> Tensor:
        padded = fn.pad(xs, (0, 0, self.delays - 1, 0))  # [B, T+N-1, F]
        windows = padded.unfold(1, self.delays, 1).transpose(2, 3)  # [B, T, N, F]
        return self.mlp(windows.flatten(2))

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden, "delays": self.delays}

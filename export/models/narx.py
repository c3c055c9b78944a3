"""NARX (Leontaritis & Billings 1985; Lin et al. 1996 for neural NARX): y_t = f(x_{t-L+1..t}, y_{t-K..t-1}).

Both delay lines are state: the last L inputs [L, F] and the model's last K outputs [K, F] (fed back,
"parallel" mode, as deployed), zeros before a key has them. f is an MLP with one tanh hidden layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["NARXForecaster"]


class NARXForecaster(StepModule):
    def __init__(self, n_features: int = 1, hidden: int = 32, input_delays: int = 4, output_delays: int = 2) -> None:
        super().__init__()
        self.n_features, self.hidden = n_features, hidden
        self.input_delays, self.output_delays = input_delays, output_delays
        width = (input_delays + output_delays) * n_features
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, n_features))

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("inputs", (self.input_delays, self.n_features)),
                StateSpec("outputs", (self.output_delays, self.n_features))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        inputs = torch.cat([state["inputs"][:, 1:], x[:, None]], dim=1)
        y = self.mlp(torch.cat([inputs.flatten(1), state["outputs"].flatten(1)], dim=-1))
        outputs = torch.cat([state["outputs"][:, 1:], y[:, None]], dim=1)
        return y, {"inputs": inputs, "outputs": outputs}

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden, "input_delays": self.input_delays, "output_delays": self.output_delays}

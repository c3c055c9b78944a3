"""Clockwork RNN (Koutník et al. 2014): hidden units in g modules with periods T_1 < ... < T_g.

At step t (counted from 0 per key), module i updates only when t mod T_i = 0; the others keep their values.
Modules are ordered by period and the recurrent matrix is block-triangular so that slower modules feed
faster ones, never the reverse (as in the paper). Periods default to the paper's exponential series
1, 2, 4, 8 (--periods). State: h [H] and the step counter t [1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["ClockworkForecaster"]


class ClockworkForecaster(StepModule):
    mask: Tensor
    unit_period: Tensor

    def __init__(self, n_features: int = 1, hidden: int = 32, periods: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        if hidden % len(periods):
            msg = f"hidden ({hidden}) must be a multiple of the number of periods ({len(periods)})"
            raise ConfigError(msg)
        self.n_features, self.hidden, self.periods = n_features, hidden, tuple(sorted(periods))
        size = hidden // len(periods)
        self.w_in = nn.Linear(n_features, hidden)
        self.w_h = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Linear(hidden, n_features)
        module_of = torch.arange(hidden) // size
        # entry [i, j] of the (out x in) weight: unit i may read unit j only if j's module is as slow or slower
        self.register_buffer("mask", (module_of[None, :] >= module_of[:, None]).float())
        self.register_buffer("unit_period", torch.tensor([self.periods[m] for m in module_of.tolist()],
                                                         dtype=torch.float32))

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("h", (self.hidden,)), StateSpec("t", (1,))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        h, t = state["h"], state["t"]
        candidate = torch.tanh(self.w_in(x) + h @ (self.w_h.weight * self.mask).T)
        active = torch.remainder(t, self.unit_period) == 0  # [B, H] via broadcasting t [B, 1]
        h_new = torch.where(active, candidate, h)
        return self.head(h_new), {"h": h_new, "t": t + 1}

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden, "periods": list(self.periods)}

"""Echo state network (Jaeger 2001; leaky variant of Jaeger et al. 2007): a fixed random reservoir, a ridge readout.

r_t = (1-a)·r_{t-1} + a·tanh(W_in x_t + W r_{t-1}), y_t = W_out [r_t, x_t, 1]. W is sparse (``density`` of
entries non-zero, uniform in [-1, 1]) and rescaled to ``spectral_radius`` < 1 (echo state property);
W_in is uniform in [-input_scaling, input_scaling]. Only W_out is fitted, by ridge regression on reservoir
states of the fitting rows after a washout, so there is no backprop. State: the reservoir r [R].
Defaults follow Lukoševičius' practical guide: R = 200, radius 0.9, density 0.1, input scaling 1,
leak a = 1, ridge 1e-4.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["EchoStateForecaster"]

WASHOUT = 20


class EchoStateForecaster(StepModule):
    w: Tensor
    w_in: Tensor

    def __init__(self, n_features: int = 1, reservoir: int = 200, spectral_radius: float = 0.9,
                 density: float = 0.1, input_scaling: float = 1.0, leak: float = 1.0, ridge: float = 1e-4,
                 seed: int = 0) -> None:
        super().__init__()
        self.n_features, self.size = n_features, reservoir
        self.spectral_radius, self.density, self.input_scaling = spectral_radius, density, input_scaling
        self.leak, self.ridge = leak, ridge
        rng = np.random.default_rng(seed)
        w = rng.uniform(-1, 1, (reservoir, reservoir)) * (rng.random((reservoir, reservoir)) < density)
        radius = float(np.max(np.abs(np.linalg.eigvals(w)))) or 1.0
        self.register_buffer("w", torch.tensor(w * (spectral_radius / radius), dtype=torch.float32))
        self.register_buffer("w_in", torch.tensor(rng.uniform(-input_scaling, input_scaling,
                                                              (n_features, reservoir)), dtype=torch.float32))
        self.readout = nn.Linear(reservoir + n_features, n_features)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("r", (self.size,))]

    def _advance(self, x: Tensor, r: Tensor) -> Tensor:
        return (1 - self.leak) * r + self.leak * torch.tanh(x @ self.w_in + r @ self.w)

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        r = self._advance(x, state["r"])
        return self.readout(torch.cat([r, x], dim=-1)), {"r": r}

    def fit_readout(self, parts: list[np.ndarray]) -> None:
        """Ridge regression of the next normalised input on [reservoir state, input]."""
        feats, targets = [], []
        with torch.no_grad():
            for u in parts:
                r = torch.zeros(1, self.size)
                xs = torch.from_numpy(u.astype(np.float32))
                states = []
                for t in range(len(xs) - 1):
                    r = self._advance(xs[t:t + 1], r)
                    states.append(torch.cat([r[0], xs[t]]))
                if len(states) > WASHOUT:
                    feats.append(torch.stack(states[WASHOUT:]).double())
                    targets.append(xs[1 + WASHOUT:].double())
        x = torch.cat(feats)
        y = torch.cat(targets)
        x1 = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
        gram = x1.T @ x1 + self.ridge * torch.eye(x1.shape[1], dtype=torch.float64)
        w = torch.linalg.solve(gram, x1.T @ y)  # [R + F + 1, F]
        self.readout.weight.data = w[:-1].T.float().contiguous()
        self.readout.bias.data = w[-1].float().contiguous()

    def hyperparameters(self) -> dict[str, object]:
        return {"reservoir": self.size, "spectral_radius": self.spectral_radius, "density": self.density,
                "input_scaling": self.input_scaling, "leak": self.leak, "ridge": self.ridge}

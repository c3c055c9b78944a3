"""Bidirectional RNN (Schuster & Paliwal 1997) over a trailing window of the last W inputs.

Not causal step by step, so the state is the window itself [W, F] (zeros until a key has W inputs): each
step runs a bidirectional GRU (or LSTM) over the window and forecasts the next point from the forward pass's
last output and the backward pass's final output. Cost and latency grow linearly with W (2·W recurrent
steps per record), unlike the other architectures' constant cost per step: keep W small (default 16).
The reference forward builds every window with ``unfold`` and runs torch's native bidirectional module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as fn
from torch import Tensor, nn

from rnnwatch.export.models.base import StateSpec, StepModule

__all__ = ["BiRNNForecaster"]


class BiRNNForecaster(StepModule):
    def __init__(self, n_features: int = 1, hidden: int = 32, window: int = 16, cell: str = "gru") -> None:
        super().__init__()
        self.n_features, self.hidden, self.window, self.cell = n_features, hidden, window, cell
        kind = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = kind(n_features, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, n_features)

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("window", (self.window, self.n_features))]

    def _read(self, windows: Tensor) -> Tensor:
        # explicit initial states keep the exported graph's batch axis dynamic
        h0 = windows.new_zeros(2, windows.shape[0], self.hidden)
        out, _ = self.rnn(windows, (h0, h0) if self.cell == "lstm" else h0)  # [N, W, 2H]
        return self.head(torch.cat([out[:, -1, : self.hidden], out[:, 0, self.hidden:]], dim=-1))

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        window = torch.cat([state["window"][:, 1:], x[:, None]], dim=1)
        return self._read(window), {"window": window}

    def forward_sequence(self, xs: Tensor) -> Tensor:
        b, t, f = xs.shape
        windows = fn.pad(xs, (0, 0, self.window - 1, 0)).unfold(1, self.window, 1).transpose(2, 3)
        return self._read(windows.reshape(b * t, self.window, f)).reshape(b, t, f)

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden, "window": self.window, "cell": self.cell}

"""The step protocol every rnnwatch model follows, reference architectures and your own modules alike.

A :class:`StepModule` is a ``torch.nn.Module`` that works on *normalised* inputs (the exporter wraps it with
the data transform) and declares:

* :meth:`~StepModule.state_spec` — the tensors it carries per key, ``StateSpec(name, shape, init)``
  (``shape`` without the batch axis, ``init`` a fill value): hidden/cell vectors, delay-line windows,
  past outputs, step counters… anything;
* :meth:`~StepModule.step` — one time step for a batch of keys:
  ``step(x [B, F], state {name: [B, *shape]}) -> (forecast of the next x [B, F], new state)``;
* :meth:`~StepModule.forward_sequence` — the full-sequence reference forward ``[B, T, F] -> [B, T, F]``
  (forecast made at every step). The exporter proves that stepping the ONNX graph reproduces it, so
  reference modules implement it with torch's own sequence modules (``nn.GRU`` …) where one exists: the
  proof then compares two independent computations. The default loops :meth:`step`, which is what a
  user module without a faster sequence form gets.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnwatch.export.signature import StateSpec

__all__ = ["StateSpec", "StepModule"]


class StepModule(nn.Module):
    """Base class for step models (see the module docstring for the protocol)."""

    n_features: int

    def state_spec(self) -> list[StateSpec]:
        raise NotImplementedError

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def initial_state(self, batch: int) -> dict[str, Tensor]:
        return {s.name: torch.full((batch, *s.shape), s.init) for s in self.state_spec()}

    def forward_sequence(self, xs: Tensor) -> Tensor:
        state = self.initial_state(xs.shape[0])
        outputs = []
        for t in range(xs.shape[1]):
            y, state = self.step(xs[:, t], state)
            outputs.append(y)
        return torch.stack(outputs, dim=1)

    def hyperparameters(self) -> dict[str, object]:
        """Recorded in the model's provenance metadata."""
        return {}

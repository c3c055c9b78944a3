"""Parity proof for an exported step graph (raises typed errors; tolerances in one table).

1. **Sequence parity**: stepping the ONNX graph one step at a time over sequences of several lengths (odd
   ones included) reproduces the PyTorch *full-sequence* forward of the same model, at every step.
2. **Batch invariance**: a key's outputs are the same when it is stepped alone, in a batch with other
   keys, and in a different batch order / composition.

Error hierarchy (all are ``rnnwatch.consumer.errors.ModelError``)::

    ParityError
    ├── ShapeError       an output has the wrong shape
    ├── AtolError        ONNX steps differ from the torch full-sequence forward beyond tolerance
    └── BatchError       a key's outputs depend on the other keys in its batch
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rnnwatch.consumer import contract as c
from rnnwatch.consumer.errors import ModelError

__all__ = ["SEQUENCE_LENGTHS", "TOLERANCES", "AtolError", "BatchError", "ParityError", "ShapeError",
           "check_parity"]

# (absolute, relative) tolerance per dtype, on forecasts in message units. float32 graphs accumulate
# rounding over hundreds of recurrent steps; 1e-4 relative is far below any residual worth scoring.
TOLERANCES: dict[str, tuple[float, float]] = {"float32": (1e-4, 1e-4)}
BATCH_TOLERANCE = (1e-5, 1e-5)
SEQUENCE_LENGTHS = (1, 7, 64, 257)


class ParityError(ModelError):
    pass


class ShapeError(ParityError):
    pass


class AtolError(ParityError):
    pass


class BatchError(ParityError):
    pass


def check_parity(onnx_path: str | Path, graph: Any, *, lengths: tuple[int, ...] = SEQUENCE_LENGTHS,
                 batch: int = 5, seed: int = 0, positive: bool | None = None) -> dict[str, float]:
    """Prove parity of ``onnx_path`` with the torch ``graph`` (a StepGraph); return the errors measured."""
    import onnxruntime as ort
    import torch  # local: the typed errors and tolerances above serve `rnnwatch adopt`, which has no torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    if positive is None:
        positive = graph.transform is not None and graph.transform.domain == "positive"
    n_features = graph.model.n_features
    worst_abs = worst_rel = 0.0
    atol, rtol = TOLERANCES["float32"]
    for length in lengths:
        xs = _sequences(rng, batch, length, n_features, positive)
        with torch.no_grad():
            reference = graph.forward_sequence(torch.from_numpy(xs)).numpy()
        stepped = _step_all(session, graph, xs)
        if stepped.shape != reference.shape:
            msg = f"{onnx_path}: stepped forecasts have shape {stepped.shape}, torch gives {reference.shape}"
            raise ShapeError(msg)
        err = np.abs(stepped - reference)
        bound = atol + rtol * np.abs(reference)
        if not np.all(err <= bound):
            t = int(np.argwhere(err > bound)[0][1])
            msg = (f"{onnx_path}: ONNX step graph diverges from the torch full-sequence forward at step {t} of "
                   f"{length} (max abs err {err.max():.3g} > atol {atol} + rtol {rtol}·|ref|)")
            raise AtolError(msg)
        worst_abs = max(worst_abs, float(err.max()))
        worst_rel = max(worst_rel, float((err / np.maximum(np.abs(reference), 1e-12)).max()))
    batch_err = _check_batch_invariance(session, graph, rng, n_features, positive, onnx_path)
    return {"max_abs_error": worst_abs, "max_rel_error": worst_rel, "batch_max_abs_error": batch_err,
            "atol": atol, "rtol": rtol}


def _sequences(rng: np.random.Generator, batch: int, length: int, n_features: int, positive: bool) -> np.ndarray:
    steps = rng.normal(0.0, 0.02, (batch, length, n_features))
    if positive:
        return (rng.uniform(5, 500, (batch, 1, n_features)) * np.exp(np.cumsum(steps, axis=1))).astype(np.float32)
    return (np.cumsum(steps * 50, axis=1) + rng.normal(0, 3, (batch, 1, n_features))).astype(np.float32)


def _step_all(session: Any, graph: Any, xs: np.ndarray) -> np.ndarray:
    """Step the ONNX graph over [B, T, F] from the declared initial state; forecasts [B, T, F]."""
    specs = graph.state_spec()
    states = [np.full((xs.shape[0], *s.shape), s.init, dtype=np.float32) for s in specs]
    n_out = 2 if graph.has_scale else 1
    forecasts = []
    for t in range(xs.shape[1]):
        feeds = {c.INPUT_X: xs[:, t]} | {c.STATE_IN + s.name: v for s, v in zip(specs, states, strict=True)}
        out = session.run(None, feeds)
        for name, value in zip((c.OUTPUT_FORECAST, c.OUTPUT_SCALE)[:n_out], out, strict=False):
            if value.shape != xs[:, t].shape:
                msg = f"output {name} has shape {value.shape} at step {t}, expected {xs[:, t].shape} (batch, features)"
                raise ShapeError(msg)
        forecasts.append(out[0])
        states = out[n_out:]
        for s, v in zip(specs, states, strict=True):
            if v.shape != (xs.shape[0], *s.shape):
                msg = f"{c.STATE_OUT}{s.name} has shape {v.shape}, expected {(xs.shape[0], *s.shape)}"
                raise ShapeError(msg)
    return np.stack(forecasts, axis=1)


def _check_batch_invariance(session: Any, graph: Any, rng: np.random.Generator, n_features: int,
                            positive: bool, path: str | Path) -> float:
    xs = _sequences(rng, 7, 33, n_features, positive)
    together = _step_all(session, graph, xs)
    reversed_ = _step_all(session, graph, xs[::-1].copy())[::-1]
    worst = 0.0
    atol, rtol = BATCH_TOLERANCE
    for k in (0, 3, 6):
        alone = _step_all(session, graph, xs[k:k + 1])[0]
        for name, other in (("in a batch of 7", together[k]), ("in reversed order", reversed_[k])):
            err = np.abs(alone - other)
            if not np.all(err <= atol + rtol * np.abs(alone)):
                msg = f"{path}: key {k} stepped alone differs from the same key {name} (max {err.max():.3g})"
                raise BatchError(msg)
            worst = max(worst, float(err.max()))
    return worst

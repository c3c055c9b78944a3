"""The parity proof of an adopted model: the wrapped step graph computes what the original computes.

1. For sequences of 1, 7, 64 and 257 steps (windows of ``--data``, else synthetic), 5 keys at once, the
   original run over the whole sequence in one call (``reference.py``) and the step model stepped one
   message at a time from its declared initial state give the same forecasts (every step, or the last for
   a last-step-only forecast output), the same forecast scale and the same final state, within the
   exporter's tolerances (``validate.TOLERANCES``).
2. Batch invariance, checked exactly as the exporter checks it.

A failure says which part of the mapping looks wrong: forecasts that differ at the first step (both sides
start from the zero state) point at the observation/forecast mapping or the layout; forecasts that agree
for a while and then drift point at the state pairs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnwatch.consumer import contract as c
from rnnwatch.export.adopt.mapping import Mapping
from rnnwatch.export.adopt.reference import Reference, ReferenceRun, onnxruntime_errors, quiet_session
from rnnwatch.export.signature import StateSpec
from rnnwatch.export.validate import SEQUENCE_LENGTHS, TOLERANCES, AtolError, ShapeError
from rnnwatch.export.validate import _check_batch_invariance as check_batch_invariance

__all__ = ["StepShape", "explain_failures", "prove_parity"]


@dataclass(frozen=True)
class StepShape:
    """What the exporter's stepping helpers need to know about a step graph (its StepGraph duck type)."""

    specs: list[StateSpec]
    has_scale: bool

    def state_spec(self) -> list[StateSpec]:
        return self.specs


def prove_parity(step_path: Path, reference: Reference, shape: StepShape,
                 sequences: Callable[[int], np.ndarray], positive: bool) -> dict[str, float]:
    """Raise AtolError/ShapeError/BatchError naming the suspect mapping, or return the errors measured."""
    session = quiet_session(step_path.read_bytes())
    worst_abs = worst_rel = 0.0
    with explain_failures(reference.source.path, reference.mapping):
        for length in SEQUENCE_LENGTHS:
            xs = sequences(length)
            ref = reference.run(xs)
            forecast, scale, states = step_through(session, shape, xs)
            for what, got, want, steps in _comparisons(ref, forecast, scale, states):
                err = np.abs(got - want)
                bad = err > TOLERANCES["float32"][0] + TOLERANCES["float32"][1] * np.abs(want)
                if bad.any():
                    step = length - 1 if steps is None else int(steps[np.argwhere(bad)[0][1]])
                    raise AtolError(_diagnosis(reference, what, step, length, float(err.max())))
                worst_abs = max(worst_abs, float(err.max()))
                worst_rel = max(worst_rel, float((err / np.maximum(np.abs(want), 1e-12)).max()))
        rng = np.random.default_rng(1)
        batch = check_batch_invariance(session, shape, rng, reference.mapping.n_features, positive, step_path)
    atol, rtol = TOLERANCES["float32"]
    return {"max_abs_error": worst_abs, "max_rel_error": worst_rel, "batch_max_abs_error": batch,
            "atol": atol, "rtol": rtol}


def step_through(session: Any, shape: StepShape, xs: np.ndarray) -> tuple[
        np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """Step ``xs`` [B, T, F] from the declared initial state: forecasts, scales [B, T, F], final states."""
    states = {s.name: np.full((len(xs), *s.shape), s.init, np.float32) for s in shape.specs}
    n_out = 2 if shape.has_scale else 1
    forecasts, scales = [], []
    for t in range(xs.shape[1]):
        out = session.run(None, {c.INPUT_X: xs[:, t], **{c.STATE_IN + k: v for k, v in states.items()}})
        forecasts.append(out[0])
        scales.append(out[n_out - 1])
        states = dict(zip(states, out[n_out:], strict=True))
    return np.stack(forecasts, axis=1), np.stack(scales, axis=1) if shape.has_scale else None, states


def explain_failures(path: Path, mapping: Mapping) -> contextlib.AbstractContextManager[None]:
    """onnxruntime refusing to run a mapping (a shape mismatch inside the model) becomes a ShapeError."""
    return onnxruntime_errors(ShapeError, lambda why: f"{path}: the model does not run with the mapping "
                              f"{' '.join(mapping.flags())} ({why}): the layout or a state's batch axis looks wrong; "
                              "pin the mapping with --layout/--state")


def _comparisons(ref: ReferenceRun, forecast: np.ndarray, scale: np.ndarray | None,
                 states: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(what, stepped, reference, the steps compared; None for a final state)."""
    yield "forecast", forecast[:, ref.steps], ref.forecast, ref.steps
    if scale is not None and ref.scale is not None:
        yield "forecast_scale", scale[:, ref.steps], ref.scale, ref.steps
    for name, want in ref.states.items():
        yield f"state {name}", states[name], want, None


def _diagnosis(reference: Reference, what: str, step: int, length: int, err: float) -> str:
    m = reference.mapping
    atol, rtol = TOLERANCES["float32"]
    if what.startswith("state "):
        pair = next(p for p in m.states if p.name == what.removeprefix("state "))
        hint = (f"the forecasts agree but the state carried through {pair.input} -> {pair.output} ends elsewhere than "
                f"the model's own: check --state {pair.input}={pair.output} (and its batch axis {pair.batch_axis})")
    elif step == 0:
        hint = (f"both sides start from the zero state, so the observation or {what} mapping looks wrong: "
                f"{m.observation} read as {m.layout}, forecast {m.forecast}"
                f"{'' if m.forecast_per_step else ' (last step only)'}{f', scale {m.scale}' if m.scale else ''}; "
                "check --input, --layout, --forecast, --scale")
    else:
        pairs = ", ".join(f"{p.input} -> {p.output}" for p in m.states)
        hint = (f"the forecasts agree before step {step} and then drift, so the state mapping looks wrong ({pairs}): "
                "check each --state IN=OUT (a swapped pair, an output that is not the next state, a batch axis)")
    return (f"{reference.source.path}: the adopted step graph differs from the model's own {length}-step run at step "
            f"{step} ({what}: max abs err {err:.3g} > atol {atol} + rtol {rtol}·|ref|): {hint}")

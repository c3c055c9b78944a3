"""The original model run as its authors run it: a whole sequence in one call, in its own layouts.

This is the parity proof's reference and the source of the held-out residual statistics. It shares with
the step graph only the transform's formulas (``TransformSpec``) and the mapping; everything the wrapper
does (reshapes, state transposes, carrying state between calls) is done differently here: by numpy on
the model's own tensors, or not at all when the model runs the whole sequence itself.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from rnnwatch.consumer.errors import ModelError
from rnnwatch.export.adopt.errors import AdoptError
from rnnwatch.export.adopt.mapping import Mapping
from rnnwatch.export.adopt.source import Source
from rnnwatch.export.adopt.transform import TransformSpec
from rnnwatch.export.validate import ShapeError

__all__ = ["Reference", "ReferenceRun", "onnxruntime_errors", "quiet_session"]


@dataclass(frozen=True)
class ReferenceRun:
    u: np.ndarray  # [B, T, F] what the model read
    u_hat: np.ndarray  # [B, S, F] what it forecast, at the steps in ``steps``
    steps: np.ndarray  # int [S]: every step, or only the last one (a last-step-only forecast output)
    forecast: np.ndarray  # [B, S, F] message units
    scale: np.ndarray | None  # [B, S, F] message units
    states: dict[str, np.ndarray]  # final state per pair, contract layout [B, *shape]


class Reference:
    def __init__(self, source: Source, mapping: Mapping, transform: TransformSpec) -> None:
        self.source, self.mapping, self.transform = source, mapping, transform
        with onnxruntime_errors(AdoptError, lambda why: f"{source.path}: onnxruntime cannot load it ({why}); rnnwatch "
                                "runs models on onnxruntime's CPU provider: export it with standard ONNX operators"):
            self.session = quiet_session(_dynamic_batch(source.model, mapping).SerializeToString())
        self._outputs = [mapping.forecast, *([mapping.scale] if mapping.scale else []),
                         *(p.output for p in mapping.states)]

    def with_transform(self, transform: TransformSpec) -> Reference:
        """The same model and session with other transform constants (held-out statistics arrive later)."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def run(self, xs: np.ndarray, *, stepwise: bool = False) -> ReferenceRun:
        """Forecasts for raw ``xs`` [B, T, F] from the zero state: one call, or one per step when the model
        takes one step per call (or ``stepwise``: to get every step's forecast from a last-step-only output)."""
        u = self.transform.encode_sequence(xs)
        if stepwise or self.mapping.one_step_per_call:
            u_hat, s_hat, states = self._stepwise(u)
            steps = np.arange(u.shape[1])
        else:
            u_hat, s_hat, states = self._call(u, self._zero_states(len(u)))
            steps = np.arange(u.shape[1]) if self.mapping.forecast_per_step else np.array([u.shape[1] - 1])
        if u_hat.shape[1] != len(steps):
            msg = (f"{self.source.path}: output {self.mapping.forecast!r} gives {u_hat.shape[1]} step(s) for a call of "
                   f"{u.shape[1]}, expected {len(steps)}: is it a per-step ([.., time, F]) or a last-step ([batch, F]) "
                   "forecast? (--forecast names it)")
            raise ShapeError(msg)
        forecast, scale = self.transform.decode(u_hat, xs[:, steps].astype(np.float32), s_hat)
        finals = {p.name: np.moveaxis(states[p.output], p.batch_axis, 0) for p in self.mapping.states}
        return ReferenceRun(u, u_hat, steps, forecast, scale, finals)

    def _stepwise(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
        states = self._zero_states(len(u))
        u_hats, s_hats, out = [], [], dict[str, np.ndarray]()
        for t in range(u.shape[1]):
            u_hat, s_hat, out = self._call(u[:, t:t + 1], states)
            u_hats.append(u_hat[:, -1])
            s_hats.append(u_hat[:, -1] if s_hat is None else s_hat[:, -1])
            states = {p.input: out[p.output] for p in self.mapping.states}
        scale = None if self.mapping.scale is None else np.stack(s_hats, axis=1)
        return np.stack(u_hats, axis=1), scale, out

    def _call(self, u: np.ndarray, states: dict[str, np.ndarray]) -> tuple[
            np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
        """One session call on [B, T, F] in the model's layout; (u_hat [B, S, F], s_hat, {output: value})."""
        m = self.mapping
        feeds = {m.observation: _to_layout(u, m.layout), **states}
        values = dict(zip(self._outputs, self.session.run(self._outputs, feeds), strict=True))
        for p in m.states:
            if values[p.output].shape != p.own_shape(len(u)):
                msg = (f"{self.source.path}: state output {p.output!r} has shape {list(values[p.output].shape)}, its "
                       f"input {p.input!r} {list(p.own_shape(len(u)))}: --state {p.input}={p.output} looks wrong")
                raise ShapeError(msg)
        u_hat = _from_layout(values[m.forecast], m, u.shape, m.forecast)
        s_hat = _from_layout(values[m.scale], m, u.shape, m.scale) if m.scale else None
        return u_hat, s_hat, {p.output: values[p.output] for p in m.states}

    def _zero_states(self, batch: int) -> dict[str, np.ndarray]:
        return {p.input: np.zeros(p.own_shape(batch), np.float32) for p in self.mapping.states}


def quiet_session(model: bytes) -> Any:
    """An onnxruntime session that logs nothing: exporters declare output shapes they do not keep (a warning per
    call), and a failing run raises an error that the proof turns into a message about the mapping."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def onnxruntime_errors(error: type[ModelError], explain: Callable[[str], str]) -> Iterator[None]:
    """Turn onnxruntime's own exceptions (Fail, InvalidArgument … all plain Exceptions) into ``error`` with the
    message ``explain(first line of onnxruntime's)``; any other exception propagates."""
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        text = str(exc).strip()
        raise error(explain(text.splitlines()[0] if text else type(exc).__name__)) from exc


def _to_layout(u: np.ndarray, layout: str) -> np.ndarray:
    if layout == "step":
        return u[:, -1]
    return u if layout == "batch-first" else np.ascontiguousarray(u.transpose(1, 0, 2))


def _from_layout(value: np.ndarray, m: Mapping, shape: tuple[int, ...], name: str) -> np.ndarray:
    batch, steps, n_features = shape
    if value.ndim == 3 and m.layout != "step":
        value = value if m.layout == "batch-first" else value.transpose(1, 0, 2)
    expected = (batch, steps, n_features) if value.ndim == 3 else (batch, n_features)
    if value.shape != expected and not (m.layout == "step" and value.size == batch * n_features):
        msg = (f"output {name!r} has shape {list(value.shape)} for an input of {batch} key(s) x {steps} step(s); "
               f"expected {list(expected)} (--layout {m.layout}, --forecast/--scale name the right outputs?)")
        raise ShapeError(msg)
    return value.reshape(batch, -1, n_features)


def _dynamic_batch(model: onnx.ModelProto, mapping: Mapping) -> onnx.ModelProto:
    """A copy whose mapped inputs declare a symbolic batch axis and whose outputs declare no shape.

    Exporters often fix the batch of state inputs they were not told about (``h0`` traced at batch 3) and
    declare output shapes the graph does not keep (torch's dynamo exporter fixes the time axis of outputs);
    onnxruntime checks declarations, not the computation. Only declarations change: the nodes and weights are
    the original's, and a graph that really depends on its traced batch still fails the proof.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    axes = {mapping.observation: 0 if mapping.layout != "sequence-first" else 1,
            **{p.input: p.batch_axis for p in mapping.states}}
    for value in copy.graph.input:
        if value.name in axes and value.type.tensor_type.HasField("shape"):
            dim = value.type.tensor_type.shape.dim[axes[value.name]]
            dim.Clear()
            dim.dim_param = "batch"
    for value in copy.graph.output:
        value.type.tensor_type.ClearField("shape")
    del copy.graph.value_info[:]
    return copy

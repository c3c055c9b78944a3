"""The parity proof fails for the right reason, with its typed error, and runs on files already written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import Tensor

from rnnwatch.consumer import contract as c
from rnnwatch.consumer.errors import ModelError
from rnnwatch.export import (
    AtolError,
    BatchError,
    Scoring,
    ShapeError,
    StateSpec,
    StepGraph,
    StepModule,
    StepSignatureSpec,
    Transform,
    check_parity,
    export_step_model,
)
from rnnwatch.export.models.elman import ElmanForecaster
from rnnwatch.export.models.gru import GRUForecaster
from rnnwatch.export.models.lstm import LSTMForecaster

pytestmark = pytest.mark.export


class _Broken(StepModule):
    """A one-feature module whose ``kind`` picks one way of breaking the step protocol."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.n_features, self.kind = 1, kind
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("h", (3,) if self.kind == "state-grows" else (1,))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        h = state["h"]
        if self.kind == "state-grows":  # declares h [3] but hands back h [4]
            h = torch.cat([h, x], dim=-1)
            return x * self.w + 0.01 * h.sum(-1, keepdim=True), {"h": h}
        if self.kind == "mixes-keys":  # uses the batch mean: a key's forecast depends on its neighbours
            h = 0.5 * h + x - x.mean(0, keepdim=True)
            return h * self.w, {"h": h}
        h = 0.5 * h + x  # "wide-forecast": two columns for one feature
        return torch.cat([h, h], dim=-1) * self.w, {"h": h}


def _spec(graph: StepGraph, features: int = 1) -> StepSignatureSpec:
    domain = "real" if graph.transform is None else graph.transform.domain
    return StepSignatureSpec(name="t", version="1", architecture="custom", features=[("v", domain)] * features,
                             states=graph.state_spec(), scoring=Scoring(residual_std=(1.0,) * features),
                             has_forecast_scale=graph.has_scale)


@pytest.mark.parametrize(("kind", "error", "message"), [
    ("state-grows", ShapeError, "state_out.h has shape"),
    ("wide-forecast", ShapeError, "output forecast has shape"),
    ("mixes-keys", BatchError, "stepped alone differs"),
])
def test_broken_module_raises_its_typed_error_and_writes_nothing(kind: str, error: type[ModelError], message: str,
                                                                 tmp_path: Path) -> None:
    graph = StepGraph(_Broken(kind), transform=None)
    with pytest.raises(error, match=message):
        export_step_model(graph, tmp_path / "m.onnx", _spec(graph))
    assert list(tmp_path.iterdir()) == []  # neither the model nor its temporary file


def _core(arch: str) -> StepGraph:
    torch.manual_seed(3)
    model = {"elman": ElmanForecaster, "lstm": LSTMForecaster, "gru": GRUForecaster}[arch](1, 16)
    return StepGraph(model, Transform("log-return", np.array([0.0005]), np.array([0.015]), np.array([0.95])))


@pytest.mark.parametrize("arch", ["elman", "lstm", "gru"])
def test_existing_file_is_checked_against_its_module(arch: str, tmp_path: Path) -> None:
    graph = _core(arch)
    path = tmp_path / "m.onnx"
    export_step_model(graph, path, _spec(graph))
    report = check_parity(path, graph, lengths=(1, 7, 64, 257), batch=3, seed=11)
    assert 0 < report["max_rel_error"] <= report["rtol"]  # 0 would mean torch was compared with itself
    with torch.no_grad():  # the same file against a module whose weights moved: the proof must fail
        next(p for name, p in graph.model.named_parameters() if name.startswith("head.")).add_(0.05)
    with pytest.raises(AtolError, match="diverges from the torch full-sequence forward"):
        check_parity(path, graph)


@pytest.mark.parametrize("arch", ["elman", "lstm", "gru"])
def test_a_key_is_the_same_alone_and_in_any_batch(arch: str, tmp_path: Path) -> None:
    """Keys stepped in shuffled batches of varying size give bit-for-bit-close outputs to the key alone."""
    graph = _core(arch)
    path = tmp_path / "m.onnx"
    export_step_model(graph, path, _spec(graph))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    xs = (100 * np.exp(np.cumsum(rng.normal(0, 0.02, (6, 19, 1)), axis=1))).astype(np.float32)
    alone = np.stack([_run(session, graph, xs[k:k + 1], rng, shuffle=False)[0] for k in range(6)])
    for _ in range(3):
        mixed = _run(session, graph, xs, rng, shuffle=True)
        np.testing.assert_allclose(mixed, alone, rtol=1e-5, atol=1e-5)


def _run(session: ort.InferenceSession, graph: StepGraph, xs: np.ndarray, rng: np.random.Generator,
         *, shuffle: bool) -> np.ndarray:
    """Step keys [K, T, F]; with ``shuffle`` each step runs a random subset of keys in a random order."""
    specs = graph.state_spec()
    states = {s.name: np.full((len(xs), *s.shape), s.init, dtype=np.float32) for s in specs}
    pos = np.zeros(len(xs), dtype=int)
    out = np.zeros_like(xs)
    while np.any(pos < xs.shape[1]):
        keys = np.flatnonzero(pos < xs.shape[1])
        if shuffle:
            keys = rng.permutation(keys)[: rng.integers(1, len(keys) + 1)]
        feeds = {c.INPUT_X: xs[keys, pos[keys]]} | {c.STATE_IN + s.name: states[s.name][keys] for s in specs}
        result = session.run(None, feeds)
        out[keys, pos[keys]] = result[0]
        for s, value in zip(specs, result[2:], strict=True):
            states[s.name][keys] = value
        pos[keys] += 1
    return out


@pytest.mark.parametrize(("kind", "first_input"), [("log-return", 0.0), ("diff", 0.0), ("level", 100.0),
                                                          ("sqrt", 2.0 * (100.0 + 0.375) ** 0.5)])
def test_transform_first_step_and_state(kind: str, first_input: float) -> None:
    """A key's first step has no previous value: its return/difference counts as 0, and the state then holds x."""
    t = Transform(kind, np.array([0.001]), np.array([0.02]), np.array([0.8]))
    x = torch.tensor([[100.0]])
    prev, seen = (torch.zeros(1, 1), torch.zeros(1, 1)) if t.stateful else (None, None)
    u = t.encode(x, prev, seen)
    torch.testing.assert_close(u, torch.tensor([[(first_input - 0.001) / 0.02]]))
    graph = StepGraph(_Identity(), t)
    outputs = graph(x, *graph.initial_states(1))
    forecast, scale = outputs[0], outputs[1]
    if t.stateful:
        torch.testing.assert_close(outputs[2], x)  # previous x
        torch.testing.assert_close(outputs[3], torch.ones(1, 1))  # seen
    step = 0.001 + 0.02 * u  # the identity model forecasts its own normalised input
    expected = {"log-return": x * torch.exp(step), "diff": x + step, "level": step,
                "sqrt": (step / 2) ** 2 - 0.375}[kind]
    torch.testing.assert_close(forecast, expected)
    # the scale is carried back through the transform: x times a return's spread; (y / 2) dy for y = 2 sqrt(x + 3/8)
    gain = {"log-return": float(expected), "sqrt": float(step) / 2}.get(kind, 1.0)
    spread = 0.02 * 0.8 * gain
    torch.testing.assert_close(scale, torch.tensor([[spread]]))


class _Identity(StepModule):
    def __init__(self) -> None:
        super().__init__()
        self.n_features = 1

    def state_spec(self) -> list[StateSpec]:
        return []

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return x, {}

"""Exporter: every architecture's ONNX step graph reproduces its torch full-sequence forward, batch-invariant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.offline import score_array
from rnnwatch.export import AtolError, Scoring, StepGraph, StepModule, StepSignatureSpec, Transform, export_step_model
from rnnwatch.export.config import ArchOptions
from rnnwatch.export.models.base import StateSpec
from rnnwatch.export.registry import ARCHITECTURES
from rnnwatch.export.transform import DOMAIN

pytestmark = pytest.mark.export


def _graph(arch: str, transform: str, n_features: int = 1) -> StepGraph:
    torch.manual_seed(1)
    options = ArchOptions(hidden=12, delays=5, periods=(1, 3, 4), reservoir=30, bi_window=6)
    model = ARCHITECTURES[arch].build(n_features, options, 0)
    for p in model.parameters():  # larger weights than the default init make the proof harder
        p.data.mul_(2.0)
    t = Transform(transform, np.full(n_features, 0.001), np.full(n_features, 0.02), np.full(n_features, 0.9))
    return StepGraph(model, t)


def _spec(graph: StepGraph, arch: str) -> StepSignatureSpec:
    assert graph.transform is not None
    n = graph.model.n_features
    return StepSignatureSpec(name=f"t-{arch}", version="1", architecture=arch,
                             features=[(f"f{i}", graph.transform.domain) for i in range(n)],
                             states=graph.state_spec(), scoring=Scoring(residual_std=(1.0,) * n))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_architecture_exports_with_parity(arch: str, tmp_path: Path) -> None:
    graph = _graph(arch, "log-return")
    report = export_step_model(graph, tmp_path / "m.onnx", _spec(graph, arch))
    assert report["max_rel_error"] < 1e-4
    sig = load_signature(tmp_path / "m.onnx")
    assert sig.architecture == arch and sig.has_forecast_scale


@pytest.mark.parametrize("transform", list(DOMAIN))
def test_each_transform_and_first_step(transform: str, tmp_path: Path) -> None:
    graph = _graph("gru", transform, n_features=2)
    export_step_model(graph, tmp_path / "m.onnx", _spec(graph, "gru"))
    sig = load_signature(tmp_path / "m.onnx")
    assert sig.features[0].domain == DOMAIN[transform]
    xs = np.array([[100.0, 5.0], [101.0, 5.5], [99.0, 4.0]], dtype=np.float32)
    res = score_array(sig, xs)
    assert res.scores[0] == 0.0  # nothing to compare the first point with
    with torch.no_grad():
        reference = graph.forward_sequence(torch.from_numpy(xs)[None])[0].numpy()
    np.testing.assert_allclose(res.forecasts, reference, rtol=1e-5)


class _Cheater(StepModule):
    """Its step differs from its sequence forward after a few steps: the proof must catch that."""

    def __init__(self) -> None:
        super().__init__()
        self.n_features = 1
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("n", (1,))]

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        n = state["n"] + 1
        return x * self.w + (n > 5).float(), {"n": n}

    def forward_sequence(self, xs: Tensor) -> Tensor:
        return xs * self.w


def test_a_module_that_breaks_parity_is_refused_and_not_written(tmp_path: Path) -> None:
    graph = StepGraph(_Cheater(), transform=None)
    spec = StepSignatureSpec(name="cheat", version="1", architecture="custom", features=[("v", "real")],
                             states=graph.state_spec(), scoring=Scoring(), has_forecast_scale=False)
    with pytest.raises(AtolError, match="diverges"):
        export_step_model(graph, tmp_path / "cheat.onnx", spec)
    assert not (tmp_path / "cheat.onnx").exists()

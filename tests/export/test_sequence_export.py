"""Every reference architecture exported from PyTorch gets a sequence form (consumer.sequence) that gives its step
graph's outputs and states bit for bit, over many steps and several batch sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.session import StepModel
from rnnwatch.export import export_step_model
from rnnwatch.export.registry import ARCHITECTURES
from tests.export.test_export import _graph, _spec
from tests.unit.test_sequence import assert_sequence_is_the_step_graph

pytestmark = pytest.mark.export


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_an_exported_architecture_runs_as_a_sequence_exactly_as_step_by_step(arch: str, tmp_path: Path) -> None:
    graph = _graph(arch, "log-return")
    export_step_model(graph, tmp_path / "m.onnx", _spec(graph, arch))
    model = StepModel(load_signature(tmp_path / "m.onnx"))
    rng = np.random.default_rng(0)
    for keys, steps in ((1, 41), (7, 23)):
        assert model.has_sequence(keys)
        x = (100 * np.exp(np.cumsum(rng.normal(0, 0.02, (steps, keys, 1)), axis=0))).astype(np.float32)
        assert_sequence_is_the_step_graph(model, x)

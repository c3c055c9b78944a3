"""Every reference architecture exported from PyTorch gets a sequence form (consumer.sequence) that gives its step
graph's outputs and states bit for bit, over many steps and several batch sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.hoisted import HoistedSequence
from rnnwatch.consumer.runner import make_runner
from rnnwatch.consumer.scoring_config import ScoringOverrides
from rnnwatch.consumer.session import StepModel
from rnnwatch.export import export_step_model
from rnnwatch.export.registry import ARCHITECTURES
from tests.export.test_export import _graph, _spec
from tests.unit.test_blocks import _assert_same_runs, _counting, _feed, _run, _wave_by_wave
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


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_an_exported_architecture_loops_over_less_than_its_step_graph(arch: str, tmp_path: Path) -> None:
    """The split form (consumer.hoisted) proves itself for every reference architecture, at batch sizes on both
    sides of the kernels' 4-row blocks."""
    graph = _graph(arch, "log-return")
    export_step_model(graph, tmp_path / "m.onnx", _spec(graph, arch))
    model = StepModel(load_signature(tmp_path / "m.onnx"))
    rng = np.random.default_rng(1)
    for keys in (2, 3, 4, 5, 9):
        assert model.has_sequence(keys) and isinstance(model._sequence, HoistedSequence)
        x = (100 * np.exp(np.cumsum(rng.normal(0, 0.02, (19, keys, 1)), axis=0))).astype(np.float32)
        assert_sequence_is_the_step_graph(model, x)
    assert len(model._sequence.split.core_nodes) < len(onnx.load(tmp_path / "m.onnx").graph.node)


@pytest.mark.parametrize("spec", ["gaussian+volatility+stuck", "gaussian+likelihood+volatility"])
def test_blocks_of_a_two_feature_model_step_exactly_as_waves(spec: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Two features: the block kernels' sums over features and their tails of negative arguments (chi-square
    with k > 1) give the per-wave numbers."""
    graph = _graph("gru", "log-return", n_features=2)
    export_step_model(graph, tmp_path / "m2.onnx", _spec(graph, "gru"))
    sig = load_signature(tmp_path / "m2.onnx")
    rng = np.random.default_rng(4)
    keys, x, event_ms = _feed(rng, 3, 1500, messy=False)
    x2 = np.hstack([x, _feed(rng, 3, 1500, messy=False)[1]])
    scoring = ScoringOverrides(scorer=spec, threshold_surprise=2.0, warmup_steps=15)
    block, waves = make_runner(sig, scoring=scoring), make_runner(sig, scoring=scoring)
    _wave_by_wave(monkeypatch, waves)
    taken = _counting(block)
    got, want = _run(block, keys, x2, event_ms, [700, 800]), _run(waves, keys, x2, event_ms, [700, 800])
    _assert_same_runs(block, waves, got, want)
    assert sum(taken) > 300 and np.concatenate([w.alarm for w in want]).any()

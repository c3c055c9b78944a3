"""The split sequence form (consumer.hoisted): shape-only values computed once per batch size, exact elementwise
arithmetic on the inputs once per block, the rest in the loop; bit for bit the step graph's outputs at every batch
size, and the plain wrapper when the split form does not prove itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from rnnwatch.consumer.contract import STATE_OUT, load_signature
from rnnwatch.consumer.hoisted import EXACT_OPS, HoistedSequence, Split, _loop_nodes, fused_slices, split_step_graph
from rnnwatch.consumer.session import SPLIT_MIN_STEPS, StepModel
from tests.unit.test_sequence import _prices, assert_sequence_is_the_step_graph


def _ops(model: bytes | None) -> list[str]:
    return [] if model is None else [n.op_type for n in onnx.load_from_string(model).graph.node]


def test_the_bundled_gru_loops_over_its_recurrence_only(bundled_model: Path) -> None:
    sig = load_signature(bundled_model)
    split = split_step_graph(sig.model_bytes, [s.name for s in sig.states], ["forecast", "forecast_scale"])
    assert split is not None
    assert split.shifted == ("t.prev", "t.seen") and split.recurrent == ("h",)  # t.prev = x, t.seen: a flag set once
    assert set(_ops(split.pre)) - {"Constant"} <= EXACT_OPS  # never a Gemm or a Log over a batch unlike a wave
    assert "Shape" in _ops(split.static) and STATE_OUT + "t.seen" in split.static_outputs
    in_loop = [onnx.NodeProto.FromString(raw).op_type for raw in split.core_nodes]
    assert "Shape" not in in_loop and {"Gemm", "MatMul"} & set(in_loop) and "Log" in in_loop
    assert len(in_loop) < len(onnx.load_from_string(sig.model_bytes).graph.node)
    model = StepModel(sig)
    assert model.has_sequence(3) and isinstance(model._sequence, HoistedSequence)


@pytest.mark.parametrize("keys", [1, 2, 3, 4, 6, 9, 64])
def test_the_split_form_is_the_step_graph_bit_for_bit_at_every_batch_size(bundled_model: Path, keys: int) -> None:
    """A batch's row count decides which kernel onnxruntime runs a row through (4-row blocks and a tail): the split
    form must keep each row where stepping puts it, at every count."""
    model = StepModel(load_signature(bundled_model))
    assert model.has_sequence(keys) and isinstance(model._sequence, HoistedSequence)
    x = _prices(np.random.default_rng(100 + keys), 23, keys)
    x[5:9, 0] = x[4, 0]  # a frozen run
    assert_sequence_is_the_step_graph(model, x)


def test_a_split_form_that_does_not_prove_itself_leaves_the_plain_wrapper(bundled_model: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    proves = StepModel._proves
    monkeypatch.setattr(StepModel, "_proves",
                        lambda self, session: not isinstance(session, HoistedSequence) and proves(self, session))
    model = StepModel(load_signature(bundled_model))
    assert model.has_sequence(3) and not isinstance(model._sequence, HoistedSequence)
    assert_sequence_is_the_step_graph(model, _prices(np.random.default_rng(1), 9, 3))


def test_a_model_whose_outputs_read_the_new_state_computes_them_after_the_loop(ewma_path: Path) -> None:
    sig = load_signature(ewma_path)
    split = split_step_graph(sig.model_bytes, [s.name for s in sig.states], ["forecast", "forecast_scale"])
    assert split is not None and split.boundary == (STATE_OUT + "m",) and not split.loop_outputs
    model = StepModel(sig)
    for keys in (1, 4, 6):
        assert model.has_sequence(keys) and isinstance(model._sequence, HoistedSequence)
        assert_sequence_is_the_step_graph(model, _prices(np.random.default_rng(keys), 11, keys))


def test_graphs_with_nothing_to_take_out_of_the_loop_are_not_split() -> None:
    """Every node reads the state or a Log (whose bits depend on where a value sits in its batch)."""
    f = onnx.TensorProto.FLOAT
    nodes = [onnx.helper.make_node("Log", ["x"], ["lx"]), onnx.helper.make_node("Add", ["state_in.m", "lx"], ["s"]),
             onnx.helper.make_node("Log", ["s"], ["state_out.m"]),
             onnx.helper.make_node("Log", ["state_out.m"], ["forecast"])]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info(n, f, ["batch", 1])
                                                for n in ("x", "state_in.m")],
                                   [onnx.helper.make_tensor_value_info(n, f, ["batch", 1])
                                    for n in ("forecast", "state_out.m")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    assert split_step_graph(model.SerializeToString(), ["m"], ["forecast"]) is None


def test_a_split_form_wrong_at_one_batch_size_is_not_used(bundled_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a row lands in a batch can change its bits (kernel tails): the probe steps several batch sizes."""
    run = HoistedSequence.run

    def off_at_five(self: HoistedSequence, x: np.ndarray, states: dict[str, np.ndarray]) -> tuple[Any, ...]:
        forecast, *rest = run(self, x, states)
        return (np.nextafter(forecast, np.inf) if x.shape[1] == 5 else forecast, *rest)

    monkeypatch.setattr(HoistedSequence, "run", off_at_five)
    model = StepModel(load_signature(bundled_model))
    assert model.has_sequence(3) and not isinstance(model._sequence, HoistedSequence)


def test_the_gate_slices_of_the_bundled_gru_are_one_split_per_step(bundled_model: Path) -> None:
    model = StepModel(load_signature(bundled_model))
    assert model.has_sequence(3) and isinstance(model._sequence, HoistedSequence)
    hoisted = model._sequence
    fused = fused_slices(hoisted.split, hoisted.fused_at)
    assert [len(group) for group, _, _ in fused] == [3, 3]  # r, z, n gates of the input and the hidden projection
    nodes, _ = _loop_nodes(hoisted.split, fused)
    ops = [onnx.NodeProto.FromString(raw).op_type for raw in nodes]
    assert ops.count("Split") == 2 and "Slice" not in ops


def test_a_batch_size_whose_slice_bounds_differ_runs_the_unfused_loop(bundled_model: Path) -> None:
    model = StepModel(load_signature(bundled_model))
    assert model.has_sequence(4) and isinstance(model._sequence, HoistedSequence)
    hoisted = model._sequence
    fused_core = hoisted.core_for(4)
    name = next(iter(hoisted.fused_at))
    hoisted.fused_at[name] = hoisted.fused_at[name] + 1  # as if 6 keys cut their gates elsewhere
    assert hoisted.core_for(6) is not fused_core and hoisted.core_for(4) is fused_core  # bounds checked per size
    assert_sequence_is_the_step_graph(model, _prices(np.random.default_rng(6), 9, 6))


def test_a_fused_loop_that_fails_leaves_the_split_form_without_fusing(bundled_model: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnwatch.consumer import hoisted as hoisted_module

    def broken(split: Split, params: dict[str, np.ndarray]) -> list[tuple[list[bytes], bytes, bytes]]:
        return [(group, node.replace(b"Split", b"Splat"), init) for group, node, init in fused_slices(split, params)]

    monkeypatch.setattr(hoisted_module, "fused_slices", broken)
    model = StepModel(load_signature(bundled_model))
    assert model.has_sequence(3) and isinstance(model._sequence, HoistedSequence) and model._sequence.params is None
    assert_sequence_is_the_step_graph(model, _prices(np.random.default_rng(3), 9, 3))


def test_blocks_of_a_few_steps_run_the_whole_graph_in_one_call(bundled_model: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The split form's four calls cost more than its shorter loop saves on a few steps."""
    model = StepModel(load_signature(bundled_model))
    assert model.has_sequence(3) and isinstance(model._sequence, HoistedSequence)
    assert model._sequence.short is not None
    calls: list[int] = []
    run = HoistedSequence.run
    monkeypatch.setattr(HoistedSequence, "run", lambda self, x, s: calls.append(x.shape[0]) or run(self, x, s))
    rng = np.random.default_rng(5)
    for steps in (2, SPLIT_MIN_STEPS - 1, SPLIT_MIN_STEPS, 30):
        assert_sequence_is_the_step_graph(model, _prices(rng, steps, 3))
    assert calls == [SPLIT_MIN_STEPS, 30]

"""Small step models built directly with onnx.helper, for runtime tests that need exact arithmetic.

The exponential-smoothing forecaster is a real ONNX graph that follows the step contract: its forecast is
an EWMA of x carried in state (``m``) with a first-step flag (``n``), so expected values are easy to
compute by hand in tests. Tests that need trained recurrent models use rnnwatch.export instead.

The GRU-operator forecaster and the Scan smoother are models as other tools write them (not step models):
what `rnnwatch adopt` takes in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnwatch.consumer import contract as c

ALPHA = 0.2


def default_metadata(**overrides: Any) -> dict[str, str]:
    meta = {
        c.META_CONTRACT: c.CONTRACT_VERSION,
        c.META_MODEL: json.dumps({"name": "ewma", "version": "1", "architecture": "ewma"}),
        c.META_FEATURES: json.dumps([{"name": "price", "domain": "positive"}]),
        c.META_STATE: json.dumps([{"name": "m", "shape": [1], "init": 0.0}, {"name": "n", "shape": [1], "init": 0.0}]),
        c.META_SCORING: json.dumps({"warmup_steps": 3, "threshold": 0.999, "halflife_steps": 50,
                                    "residual_std": [1.0]}),
        c.META_PROVENANCE: json.dumps({"data": "synthetic", "rows": 0}),
    }
    meta.update(overrides)
    return meta


def ewma_model(path: Path, *, scale: float | None = 1.0, metadata: dict[str, str] | None = None,
               drop_outputs: tuple[str, ...] = (), batch: str | int = "batch",
               x_dtype: int = TensorProto.FLOAT) -> Path:
    """forecast = m' with m' = x on a key's first step, else (1-ALPHA)*m + ALPHA*x; scale = constant."""
    def vi(name: str, dims: list[Any], dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, dtype, dims)

    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Greater", ["state_in.n", "zero"], ["seen"]),
        helper.make_node("Mul", ["state_in.m", "keep"], ["m_keep"]),
        helper.make_node("Mul", ["xf", "alpha"], ["x_part"]),
        helper.make_node("Add", ["m_keep", "x_part"], ["m_ewma"]),
        helper.make_node("Where", ["seen", "m_ewma", "xf"], ["state_out.m"]),
        helper.make_node("Add", ["state_in.n", "one"], ["state_out.n"]),
        helper.make_node("Identity", ["state_out.m"], ["forecast"]),
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("alpha", TensorProto.FLOAT, [], [ALPHA]),
        helper.make_tensor("keep", TensorProto.FLOAT, [], [1.0 - ALPHA]),
    ]
    outputs = [vi("forecast", [batch, 1]), vi("state_out.m", [batch, 1]), vi("state_out.n", [batch, 1])]
    if scale is not None:
        inits.append(helper.make_tensor("scale_value", TensorProto.FLOAT, [], [scale]))
        nodes += [helper.make_node("Mul", ["state_out.m", "zero"], ["zeros"]),
                  helper.make_node("Add", ["zeros", "scale_value"], ["forecast_scale"])]
        outputs.append(vi("forecast_scale", [batch, 1]))
    outputs = [o for o in outputs if o.name not in drop_outputs]
    graph = helper.make_graph(
        nodes, "ewma_step",
        [vi("x", [batch, 1], x_dtype), vi("state_in.m", [batch, 1]), vi("state_in.n", [batch, 1])],
        outputs, inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (default_metadata() if metadata is None else metadata).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(model, path)
    return path


def gru_op_model(path: Path, *, hidden: int = 8, seed: int = 0, batch: str | int = "batch", seq: str | int = "seq",
                 lengths_input: bool = False, extra_input: bool = False, external_data: bool = False,
                 state_input: bool = True) -> Path:
    """A forecaster written with onnx.helper around the standard ONNX ``GRU`` operator (not from torch).

    Sequence-first like the operator itself: ``observations [seq, batch, 1]`` and ``initial_h [1, batch, H]``
    in, ``prediction [seq, batch, 1]`` (a Linear head on Y) and ``final_h [1, batch, H]`` out. Variants for the
    refusals: an int32 ``sequence_lens`` input, an extra float input, weights in an external data file, the
    state hidden inside (no ``initial_h`` input: every call starts from zeros).
    """
    rng = np.random.default_rng(seed)
    h = hidden
    weights = {
        "W": rng.uniform(-0.6, 0.6, (1, 3 * h, 1)), "R": rng.uniform(-0.4, 0.4, (1, 3 * h, h)),
        "B": rng.uniform(-0.1, 0.1, (1, 6 * h)), "head_w": rng.normal(0, 0.05, (h, 1)), "head_b": np.zeros(1),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    x = "observations"
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [seq, batch, 1])]
    if state_input:
        inputs.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, batch, h]))
    nodes = []
    if extra_input:
        inputs.append(helper.make_tensor_value_info("offset", TensorProto.FLOAT, [seq, batch, 1]))
        nodes.append(helper.make_node("Add", [x, "offset"], ["shifted"]))
        x = "shifted"
    if lengths_input:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [batch]))
    nodes += [
        helper.make_node("GRU", [x, "W", "R", "B", "sequence_lens" if lengths_input else "",
                                 "initial_h" if state_input else ""],
                         ["Y", "final_h"], hidden_size=h, linear_before_reset=1, name="gru"),
        helper.make_node("Squeeze", ["Y", "axis1"], ["Y_seq"]),
        helper.make_node("MatMul", ["Y_seq", "head_w"], ["projected"]),
        helper.make_node("Add", ["projected", "head_b"], ["prediction"]),
    ]
    graph = helper.make_graph(nodes, "gru_forecaster", inputs,
                              [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [seq, batch, 1]),
                               helper.make_tensor_value_info("final_h", TensorProto.FLOAT, [1, batch, h])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path), save_as_external_data=external_data, all_tensors_to_one_file=True,
              location=f"{path.name}.data", size_threshold=0)
    return path


def scan_ewma_model(path: Path, *, expose_state: bool = False) -> Path:
    """An exponential smoother whose recurrence runs in a ``Scan`` over the time axis of ``x [batch, time, 1]``.

    Without ``expose_state`` its state starts from zeros made inside the graph (a model that cannot be
    stepped); with it, the state comes in as ``s0 [batch, 1]`` and leaves as ``sn`` (a model that can).
    """
    body = helper.make_graph(
        [helper.make_node("Mul", ["s_in", "keep"], ["kept"]), helper.make_node("Mul", ["x_t", "alpha"], ["part"]),
         helper.make_node("Add", ["kept", "part"], ["s_out"]), helper.make_node("Identity", ["s_out"], ["y_t"])],
        "ewma_step",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("y_t", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("keep", TensorProto.FLOAT, [], [1 - ALPHA]),
         helper.make_tensor("alpha", TensorProto.FLOAT, [], [ALPHA])],
    )
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 1])]
    nodes = []
    if expose_state:
        inputs.append(helper.make_tensor_value_info("s0", TensorProto.FLOAT, ["batch", 1]))
        start = "s0"
    else:
        nodes += [helper.make_node("ReduceMean", ["x", "time_axis"], ["mean"], keepdims=0),
                  helper.make_node("Mul", ["mean", "zero"], ["zeros"])]
        start = "zeros"
    nodes.append(helper.make_node("Scan", [start, "x"], ["sn", "y"], body=body, num_scan_inputs=1,
                                  scan_input_axes=[1], scan_output_axes=[1]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", 1])]
    if expose_state:
        outputs.append(helper.make_tensor_value_info("sn", TensorProto.FLOAT, ["batch", 1]))
    constants = [] if expose_state else [numpy_helper.from_array(np.array([1], np.int64), "time_axis"),
                                         helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    graph = helper.make_graph(nodes, "scan_ewma", inputs, outputs, constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def custom_op_model(path: Path) -> Path:
    """A recurrent-looking model whose only node is a custom operator onnxruntime does not know."""
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Forecaster", ["x", "h0"], ["y", "hn"], domain="com.example")], "custom",
        [vi("x", TensorProto.FLOAT, ["batch", "time", 1]), vi("h0", TensorProto.FLOAT, [1, "batch", 4])],
        [vi("y", TensorProto.FLOAT, ["batch", "time", 1]), vi("hn", TensorProto.FLOAT, [1, "batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def keras_like_gru_model(path: Path, *, producer: str = "tf2onnx", hidden: int = 6, seed: int = 1) -> Path:
    """A GRU laid out the way tf2onnx converts a Keras model: batch-first ``input_1 [unk__1, unk__2, 1]``, the
    state ``input_2 [unk__3, H]`` unsqueezed into the operator, outputs ``dense`` and ``gru`` (the final state),
    every dynamic axis under its own meaningless name."""
    rng = np.random.default_rng(seed)
    h = hidden
    consts = {"W": rng.uniform(-0.5, 0.5, (1, 3 * h, 1)), "R": rng.uniform(-0.4, 0.4, (1, 3 * h, h)),
              "head_w": rng.normal(0, 0.1, (h, 1))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()]
    inits += [numpy_helper.from_array(np.array([0], np.int64), "axis0"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["x_tbf"], perm=[1, 0, 2]),
        helper.make_node("Unsqueeze", ["input_2", "axis0"], ["h_1bh"]),
        helper.make_node("GRU", ["x_tbf", "W", "R", "", "", "h_1bh"], ["Y", "Y_h"], hidden_size=h),
        helper.make_node("Squeeze", ["Y", "axis1"], ["y_tbh"]),
        helper.make_node("Transpose", ["y_tbh"], ["y_bth"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["y_bth", "head_w"], ["dense"]),
        helper.make_node("Squeeze", ["Y_h", "axis0"], ["gru"]),
    ]
    graph = helper.make_graph(nodes, "keras_gru", [vi("input_1", TensorProto.FLOAT, ["unk__1", "unk__2", 1]),
                                                  vi("input_2", TensorProto.FLOAT, ["unk__3", h])],
                              [vi("dense", TensorProto.FLOAT, ["unk__4", "unk__5", 1]),
                               vi("gru", TensorProto.FLOAT, ["unk__6", h])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], producer_name=producer)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def exploding_model(path: Path) -> Path:
    """A model that overflows on large inputs: forecast = m' = m * x + x (state ``m``, feature ``price``, real).

    With x = 1e20 twice in a row, m' = 1e40 is inf in float32, and stays inf (inf * x + x) forever after.
    """
    def vi(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1])

    nodes = [
        helper.make_node("Mul", ["state_in.m", "x"], ["mx"]),
        helper.make_node("Add", ["mx", "x"], ["state_out.m"]),
        helper.make_node("Identity", ["state_out.m"], ["forecast"]),
    ]
    graph = helper.make_graph(nodes, "exploding_step", [vi("x"), vi("state_in.m")],
                              [vi("forecast"), vi("state_out.m")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = default_metadata(**{
        c.META_MODEL: json.dumps({"name": "exploding", "version": "1", "architecture": "test"}),
        c.META_FEATURES: json.dumps([{"name": "price", "domain": "real"}]),
        c.META_STATE: json.dumps([{"name": "m", "shape": [1], "init": 0.0}]),
        c.META_SCORING: json.dumps({"warmup_steps": 2, "threshold": 0.9, "halflife_steps": 50,
                                    "residual_std": [1.0]}),
    })
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(model, path)
    return path

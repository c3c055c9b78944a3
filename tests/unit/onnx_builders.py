"""Small step models built directly with onnx.helper, for runtime tests that need exact arithmetic.

The exponential-smoothing forecaster is a real ONNX graph that follows the step contract: its forecast is
an EWMA of x carried in state (``m``) with a first-step flag (``n``), so expected values are easy to
compute by hand in tests. Tests that need trained recurrent models use rnnwatch.export instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

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

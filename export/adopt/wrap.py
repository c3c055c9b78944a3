"""The step graph around an adopted model: contract inputs in, the original graph untouched, contract outputs out.

::

    x [batch, F] ─ transform encode (state t.prev, t.seen) ─ reshape to the model's layout ─┐
    state_in.<s> [batch, ...] ─ transpose to the model's layout (e.g. [L, batch, H]) ───────┤
                                                            original graph (names prefixed "src/")
    forecast, forecast_scale ─ transform decode ─ reshape to [batch, F] ─ the forecast output ┤
    state_out.<s> [batch, ...] ─ transpose back ─ the state outputs ─────────────────────────┘

The original nodes, initializers, functions and opset imports are copied as they are; only names get the
``src/`` prefix so they can never clash with the contract's. The glue uses operators of opset 9 or newer,
valid at the original's opset. The original's value_info (optional shape hints) is dropped: exporters
write hints for the sequence length they traced, which would contradict a one-step call.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, compose, helper

from rnnwatch.consumer import contract as c
from rnnwatch.export.adopt.block import Block
from rnnwatch.export.adopt.errors import AdoptError
from rnnwatch.export.adopt.mapping import Mapping, StatePair
from rnnwatch.export.adopt.source import Source
from rnnwatch.export.adopt.transform import TransformSpec
from rnnwatch.export.signature import PREV, SEEN, StateSpec

__all__ = ["PREFIX", "build_step_model", "state_specs"]

PREFIX = "src/"
_BATCH = "batch"


def state_specs(mapping: Mapping, transform: TransformSpec) -> list[StateSpec]:
    """The contract's state, in input/output order: the transform's memory, then the model's own pairs."""
    own = [StateSpec(PREV, (mapping.n_features,)), StateSpec(SEEN, (1,))] if transform.stateful else []
    return [*own, *(StateSpec(p.name, p.shape) for p in mapping.states)]


def build_step_model(source: Source, mapping: Mapping, transform: TransformSpec,
                     metadata: dict[str, str]) -> onnx.ModelProto:
    """The step model (with ``metadata`` as its metadata_props); checked by onnx.checker before it is returned."""
    f = mapping.n_features
    pre, post = Block("adopt/in/"), Block("adopt/out/")
    u = transform.encode_nodes(pre, c.INPUT_X)
    pre.op("Reshape", [u, pre.const("obs_shape", _observation_shape(mapping))], PREFIX + mapping.observation)
    for pair in mapping.states:
        pre.op("Transpose", [c.STATE_IN + pair.name], PREFIX + pair.input, perm=_to_model(pair))
        post.op("Transpose", [PREFIX + pair.output], c.STATE_OUT + pair.name, perm=_to_contract(pair))
    flat = post.const("flat", [-1, f])
    u_hat = post.op("Reshape", [PREFIX + mapping.forecast, flat])
    s_hat = post.op("Reshape", [PREFIX + mapping.scale, flat]) if mapping.scale else None
    transform.decode_nodes(post, u_hat, c.INPUT_X, s_hat)
    inner = compose.add_prefix_graph(source.model.graph, PREFIX)
    specs = state_specs(mapping, transform)
    has_scale = mapping.scale is not None or transform.kind != "none"
    graph = helper.make_graph(
        [*pre.nodes, *inner.node, *post.nodes], f"rnnwatch_step_{source.model.graph.name or 'adopted'}",
        [_value(c.INPUT_X, (f,)), *(_value(c.STATE_IN + s.name, s.shape) for s in specs)],
        [_value(c.OUTPUT_FORECAST, (f,)), *([_value(c.OUTPUT_SCALE, (f,))] if has_scale else []),
         *(_value(c.STATE_OUT + s.name, s.shape) for s in specs)],
        [*inner.initializer, *pre.constants, *post.constants],
        sparse_initializer=list(inner.sparse_initializer),
    )
    model = helper.make_model(graph, opset_imports=list(source.model.opset_import),
                              functions=list(source.model.functions), producer_name="rnnwatch adopt",
                              ir_version=max(source.model.ir_version, 4))
    model.doc_string = f"rnnwatch step model adopted from {source.path.name} (sha256 {source.sha256})"
    kept = [(p.key, p.value) for p in source.model.metadata_props if not p.key.startswith("rnnwatch.")]
    for key, value in [*kept, *metadata.items()]:
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        msg = (f"{source.path}: the step graph around it fails onnx.checker ({str(exc).strip().splitlines()[0]}); "
               f"check the model itself: python -c \"import onnx; onnx.checker.check_model('{source.path}')\"")
        raise AdoptError(msg) from exc
    return model


def _observation_shape(mapping: Mapping) -> list[int]:
    """One step of x in the model's layout: [batch, 1, F], [1, batch, F] or [batch, F] (the same bytes)."""
    f = mapping.n_features
    return {"batch-first": [-1, 1, f], "sequence-first": [1, -1, f], "step": [-1, f]}[mapping.layout]


def _to_model(pair: StatePair) -> list[int]:
    """Permutation of the contract's [batch, *shape] into the model's layout (batch at ``batch_axis``)."""
    rank, axis = len(pair.shape) + 1, pair.batch_axis
    return [*range(1, axis + 1), 0, *range(axis + 1, rank)]


def _to_contract(pair: StatePair) -> list[int]:
    rank, axis = len(pair.shape) + 1, pair.batch_axis
    return [axis, *range(axis), *range(axis + 1, rank)]


def _value(name: str, per_key: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [_BATCH, *per_key])


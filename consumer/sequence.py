"""A step model's sequence form: its step graph as the body of an ONNX ``Scan``, built when a block first needs it.

With few keys the runner steps a poll's consecutive waves of the same keys as one block (``consumer.runner``),
and one onnxruntime call per step (~30 us for the bundled GRU, most of it the call, not the arithmetic) is then
most of what a record costs. ``Scan`` runs the *same* step graph over the block's T steps in one call, carrying
the state inside onnxruntime. Nothing is re-exported: the wrapper is built from the model's own bytes (with a
few lines of protobuf, as the runtime does not depend on the ``onnx`` package), every model gets it, and it is
used only after it proved on a probe block that it gives the step graph's outputs bit for bit
(``StepModel.has_sequence`` in ``consumer.session``); otherwise the model is stepped call by call as before.

The wrapper's outputs, per step (``[T, batch, ...]``): the model's forecast (and forecast_scale, score) and every
new state, so the runner checks each step's outputs for non-finite values as it does step by step.
"""

from __future__ import annotations

import numpy as np

from rnnwatch.consumer.contract import INPUT_X, STATE_IN, STATE_OUT
from rnnwatch.consumer.onnxwire import (
    ATTR_G,
    ATTR_GRAPH,
    ATTR_I,
    ATTR_INT,
    ATTR_NAME,
    ATTR_TYPE,
    GRAPH_INPUT,
    GRAPH_NAME,
    GRAPH_NODE,
    GRAPH_OUTPUT,
    MODEL_GRAPH,
    MODEL_IR,
    MODEL_OPSET,
    NODE_ATTR,
    default_opset,
    field_int,
    field_len,
    field_str,
    fields,
    float_tensor,
    name_of,
    node_proto,
)

__all__ = ["SEQ", "same_bits", "scan_wrapper"]

SEQ = ".seq"  # suffix of the wrapper's per-step outputs


def scan_wrapper(model_bytes: bytes, states: list[str], outputs: list[str]) -> bytes | None:
    """The Scan model over ``model_bytes``' step graph, or None when the graph is not a plain step graph.

    Inputs ``state_in.<s>`` ([batch, ...], the states before the first step) and ``x.seq`` ([T, batch, F]);
    outputs ``state_out.<s>`` (after the last step), ``<output>.seq`` for each of ``outputs`` (forecast, ...)
    and ``state_out.<s>.seq`` (every step's new state).
    """
    model = list(fields(model_bytes))
    graph = next((v for f, v, _ in model if f == MODEL_GRAPH), None)
    opsets = [raw for f, _, raw in model if f == MODEL_OPSET]
    if graph is None or default_opset(model) < 9:  # Scan-9 and later take no sequence_lens input
        return None
    parts = list(fields(graph))
    inputs = {name_of(v): raw for f, v, raw in parts if f == GRAPH_INPUT}
    outs = {name_of(v): raw for f, v, raw in parts if f == GRAPH_OUTPUT}
    carried_in, carried_out = [STATE_IN + s for s in states], [STATE_OUT + s for s in states]
    if set(inputs) != {*carried_in, INPUT_X} or set(outs) != {*carried_out, *outputs}:
        return None
    copies = b"".join(field_len(GRAPH_NODE, node_proto("Identity", [o], [o + SEQ], f"rnnwatch_seq_{o}"))
                      for o in carried_out)
    body = (b"".join(raw for f, _, raw in parts if f not in (GRAPH_INPUT, GRAPH_OUTPUT)) + copies
            + b"".join(inputs[n] for n in [*carried_in, INPUT_X])
            + b"".join(outs[n] for n in [*carried_out, *outputs])
            + b"".join(field_len(GRAPH_OUTPUT, float_tensor(o + SEQ)) for o in carried_out))
    attrs = (field_len(NODE_ATTR, field_str(ATTR_NAME, "body") + field_len(ATTR_G, body)
                       + field_int(ATTR_TYPE, ATTR_GRAPH))
             + field_len(NODE_ATTR, field_str(ATTR_NAME, "num_scan_inputs") + field_int(ATTR_I, 1)
                         + field_int(ATTR_TYPE, ATTR_INT)))
    seq_out = [o + SEQ for o in [*outputs, *carried_out]]
    scan = node_proto("Scan", [*carried_in, INPUT_X + SEQ], [*carried_out, *seq_out], "rnnwatch_sequence", attrs)
    outer = (field_len(GRAPH_NODE, scan) + field_str(GRAPH_NAME, "rnnwatch_sequence")
             + b"".join(field_len(GRAPH_INPUT, float_tensor(n)) for n in [*carried_in, INPUT_X + SEQ])
             + b"".join(field_len(GRAPH_OUTPUT, float_tensor(n)) for n in [*carried_out, *seq_out]))
    ir = b"".join(raw for f, _, raw in model if f == MODEL_IR)
    return ir + b"".join(opsets) + field_len(MODEL_GRAPH, outer)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and bytes (NaN payloads included): the wrapper must be the step graph, not close to it."""
    return a.shape == b.shape and a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(
        b).tobytes()


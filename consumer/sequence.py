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

from collections.abc import Iterator
from typing import Any

import numpy as np

from rnnwatch.consumer.contract import INPUT_X, STATE_IN, STATE_OUT

__all__ = ["SEQ", "same_bits", "scan_wrapper"]

_LEN, _VARINT = 2, 0
# ONNX protobuf field numbers (onnx.proto3)
_MODEL_IR, _MODEL_GRAPH, _MODEL_OPSET = 1, 7, 8
_GRAPH_NODE, _GRAPH_NAME, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 2, 11, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP, _NODE_ATTR = 1, 2, 3, 4, 5
_ATTR_NAME, _ATTR_I, _ATTR_G, _ATTR_TYPE = 1, 3, 6, 20
_ATTR_INT, _ATTR_GRAPH = 2, 5
_VALUE_NAME, _VALUE_TYPE = 1, 2
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2
_FLOAT = 1
SEQ = ".seq"  # suffix of the wrapper's per-step outputs


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, Any, bytes]]:
    """(field number, value: int or payload bytes, the field's raw bytes) of a protobuf message."""
    i = 0
    while i < len(buf):
        start = i
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        value: Any
        if wire == _VARINT:
            value, i = _read_varint(buf, i)
        elif wire == _LEN:
            size, i = _read_varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):  # fixed 64 / 32 bits
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            msg = f"protobuf wire type {wire} is not used by ONNX"
            raise ValueError(msg)
        yield field, value, buf[start:i]


def _len(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | _LEN) + _varint(len(payload)) + payload


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3 | _VARINT) + _varint(value)


def _str(field: int, text: str) -> bytes:
    return _len(field, text.encode())


def _name_of(value_info: bytes) -> str:
    return next((v.decode() for f, v, _ in _fields(value_info) if f == _VALUE_NAME), "")


def _float_tensor(name: str) -> bytes:
    """A ValueInfoProto: float tensor of any shape (the wrapper's inputs and outputs)."""
    return _str(_VALUE_NAME, name) + _len(_VALUE_TYPE, _len(1, _int(1, _FLOAT)))


def _node(op: str, inputs: list[str], outputs: list[str], name: str, attrs: bytes = b"") -> bytes:
    return (b"".join(_str(_NODE_INPUT, i) for i in inputs) + b"".join(_str(_NODE_OUTPUT, o) for o in outputs)
            + _str(_NODE_NAME, name) + _str(_NODE_OP, op) + attrs)


def _default_opset(model: list[tuple[int, Any, bytes]]) -> int:
    for field, value, _ in model:
        if field == _MODEL_OPSET:
            opset = {f: v for f, v, _ in _fields(value)}
            if opset.get(_OPSET_DOMAIN, b"") in (b"", b"ai.onnx"):
                return int(opset.get(_OPSET_VERSION, 0))
    return 0


def scan_wrapper(model_bytes: bytes, states: list[str], outputs: list[str]) -> bytes | None:
    """The Scan model over ``model_bytes``' step graph, or None when the graph is not a plain step graph.

    Inputs ``state_in.<s>`` ([batch, ...], the states before the first step) and ``x.seq`` ([T, batch, F]);
    outputs ``state_out.<s>`` (after the last step), ``<output>.seq`` for each of ``outputs`` (forecast, ...)
    and ``state_out.<s>.seq`` (every step's new state).
    """
    model = list(_fields(model_bytes))
    graph = next((v for f, v, _ in model if f == _MODEL_GRAPH), None)
    opsets = [raw for f, _, raw in model if f == _MODEL_OPSET]
    if graph is None or _default_opset(model) < 9:  # Scan-9 and later take no sequence_lens input
        return None
    parts = list(_fields(graph))
    inputs = {_name_of(v): raw for f, v, raw in parts if f == _GRAPH_INPUT}
    outs = {_name_of(v): raw for f, v, raw in parts if f == _GRAPH_OUTPUT}
    carried_in, carried_out = [STATE_IN + s for s in states], [STATE_OUT + s for s in states]
    if set(inputs) != {*carried_in, INPUT_X} or set(outs) != {*carried_out, *outputs}:
        return None
    copies = b"".join(_len(_GRAPH_NODE, _node("Identity", [o], [o + SEQ], f"rnnwatch_seq_{o}")) for o in carried_out)
    body = (b"".join(raw for f, _, raw in parts if f not in (_GRAPH_INPUT, _GRAPH_OUTPUT)) + copies
            + b"".join(inputs[n] for n in [*carried_in, INPUT_X])
            + b"".join(outs[n] for n in [*carried_out, *outputs])
            + b"".join(_len(_GRAPH_OUTPUT, _float_tensor(o + SEQ)) for o in carried_out))
    attrs = (_len(_NODE_ATTR, _str(_ATTR_NAME, "body") + _len(_ATTR_G, body) + _int(_ATTR_TYPE, _ATTR_GRAPH))
             + _len(_NODE_ATTR, _str(_ATTR_NAME, "num_scan_inputs") + _int(_ATTR_I, 1) + _int(_ATTR_TYPE, _ATTR_INT)))
    seq_out = [o + SEQ for o in [*outputs, *carried_out]]
    scan = _node("Scan", [*carried_in, INPUT_X + SEQ], [*carried_out, *seq_out], "rnnwatch_sequence", attrs)
    outer = (_len(_GRAPH_NODE, scan) + _str(_GRAPH_NAME, "rnnwatch_sequence")
             + b"".join(_len(_GRAPH_INPUT, _float_tensor(n)) for n in [*carried_in, INPUT_X + SEQ])
             + b"".join(_len(_GRAPH_OUTPUT, _float_tensor(n)) for n in [*carried_out, *seq_out]))
    ir = b"".join(raw for f, _, raw in model if f == _MODEL_IR)
    return ir + b"".join(opsets) + _len(_MODEL_GRAPH, outer)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and bytes (NaN payloads included): the wrapper must be the step graph, not close to it."""
    return a.shape == b.shape and a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(
        b).tobytes()


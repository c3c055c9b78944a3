"""ONNX's protobuf wire format, the few pieces the runtime reads and writes without the ``onnx`` package.

The sequence forms of a step model (``consumer.sequence``, ``consumer.hoisted``) are built from the model's own
bytes at run time, and the runtime image does not carry ``onnx``: these helpers parse a message into its fields
and encode the handful of messages (nodes, value infos, attributes) the wrappers need.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = [
    "ATTR_G", "ATTR_GRAPH", "ATTR_GRAPHS", "ATTR_I", "ATTR_INT", "ATTR_NAME", "ATTR_TYPE", "GRAPH_INIT",
    "GRAPH_INPUT", "GRAPH_NAME", "GRAPH_NODE", "GRAPH_OUTPUT", "GRAPH_SPARSE", "MODEL_GRAPH", "MODEL_IR",
    "MODEL_OPSET", "NODE_ATTR", "NODE_DOMAIN", "NODE_INPUT", "NODE_NAME", "NODE_OP", "NODE_OUTPUT", "SPARSE_VALUES",
    "TENSOR_NAME", "VALUE_NAME", "VALUE_TYPE", "default_opset", "field_int", "field_len", "field_str", "fields",
    "float_tensor", "name_of", "node_proto",
]

_VARINT, _LEN = 0, 2  # wire types
_FLOAT = 1  # TensorProto.FLOAT
# field numbers (onnx.proto3)
MODEL_IR, MODEL_GRAPH, MODEL_OPSET = 1, 7, 8
GRAPH_NODE, GRAPH_NAME, GRAPH_INIT, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_SPARSE = 1, 2, 5, 11, 12, 15
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP, NODE_ATTR, NODE_DOMAIN = 1, 2, 3, 4, 5, 7
ATTR_NAME, ATTR_I, ATTR_G, ATTR_GRAPHS, ATTR_TYPE = 1, 3, 6, 11, 20
ATTR_INT, ATTR_GRAPH = 2, 5  # AttributeProto.AttributeType
VALUE_NAME, VALUE_TYPE = 1, 2
TENSOR_NAME, SPARSE_VALUES = 8, 1
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2


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


def fields(buf: bytes) -> Iterator[tuple[int, Any, bytes]]:
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


def field_len(field: int, payload: bytes) -> bytes:
    """A length-delimited field (a sub-message, bytes or a string)."""
    return _varint(field << 3 | _LEN) + _varint(len(payload)) + payload


def field_int(field: int, value: int) -> bytes:
    return _varint(field << 3 | _VARINT) + _varint(value)


def field_str(field: int, text: str) -> bytes:
    return field_len(field, text.encode())


def name_of(value_info: bytes) -> str:
    """The name of a ValueInfoProto."""
    return next((v.decode() for f, v, _ in fields(value_info) if f == VALUE_NAME), "")


def float_tensor(name: str) -> bytes:
    """A ValueInfoProto: float tensor of any shape (the wrappers' inputs and outputs)."""
    return field_str(VALUE_NAME, name) + field_len(VALUE_TYPE, field_len(1, field_int(1, _FLOAT)))


def node_proto(op: str, inputs: list[str], outputs: list[str], name: str, attrs: bytes = b"") -> bytes:
    """A NodeProto of the default domain."""
    return (b"".join(field_str(NODE_INPUT, i) for i in inputs) + b"".join(field_str(NODE_OUTPUT, o) for o in outputs)
            + field_str(NODE_NAME, name) + field_str(NODE_OP, op) + attrs)


def default_opset(model: list[tuple[int, Any, bytes]]) -> int:
    """The model's opset of the default (``ai.onnx``) domain, 0 if it names none."""
    for field, value, _ in model:
        if field == MODEL_OPSET:
            opset = {f: v for f, v, _ in fields(value)}
            if opset.get(_OPSET_DOMAIN, b"") in (b"", b"ai.onnx"):
                return int(opset.get(_OPSET_VERSION, 0))
    return 0

"""The model to adopt: read once, checked for what can never be stepped, described for the mapping.

Besides the graph's inputs and outputs, :func:`recurrent_links` traces which inputs feed which slot of the
standard recurrent operators (``LSTM``/``GRU``/``RNN``: ``X``, ``initial_h``, ``initial_c``) and which
outputs come from which of their results (``Y``, ``Y_h``, ``Y_c``). That structure, not names, is what
pairs ``h0`` with ``hn`` in most exported models.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

from rnnwatch.consumer.contract import META_CONTRACT
from rnnwatch.export.adopt.errors import AdoptError, ExternalDataError, MappingError

__all__ = ["RECURRENT_OPS", "Link", "Source", "TensorInfo", "load_source", "recurrent_links"]

# Recurrent operator -> {input slot: role} and {output slot: role}; roles: x/y = the sequence, h/c = state.
RECURRENT_OPS: dict[str, tuple[dict[int, str], dict[int, str]]] = {
    "LSTM": ({0: "x", 5: "h", 6: "c"}, {0: "y", 1: "h", 2: "c"}),
    "GRU": ({0: "x", 5: "h"}, {0: "y", 1: "h"}),
    "RNN": ({0: "x", 5: "h"}, {0: "y", 1: "h"}),
}
CONTROL_FLOW_OPS = ("Loop", "Scan", "If")
MIN_OPSET = 9  # Where, Expand, Greater on floats: the glue around the model needs them

Dim = int | str | None  # static size, symbolic name, or unknown
Link = tuple[int, str]  # (index of a recurrent node in the graph, role)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    elem_type: int
    dims: tuple[Dim, ...] | None  # None: the rank is unknown

    @property
    def is_float(self) -> bool:
        return self.elem_type == TensorProto.FLOAT

    @property
    def type_name(self) -> str:
        return TensorProto.DataType.Name(self.elem_type).lower() if self.elem_type else "not a tensor"

    @property
    def rank(self) -> int | None:
        return None if self.dims is None else len(self.dims)

    def describe(self) -> str:
        if self.dims is None:
            return f"{self.name} [?]"
        return f"{self.name} [{', '.join('?' if d is None else str(d) for d in self.dims)}]"


@dataclass(frozen=True)
class Source:
    path: Path
    sha256: str
    model: onnx.ModelProto
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def input(self, name: str) -> TensorInfo:
        return _named(self.inputs, name, "input", self.path)

    def output(self, name: str) -> TensorInfo:
        return _named(self.outputs, name, "output", self.path)

    def node_types(self) -> set[str]:
        return {n.op_type for n in _all_nodes(self.model.graph)}

    def consumed(self) -> set[str]:
        """Every value some node reads (subgraphs included)."""
        return {name for n in _all_nodes(self.model.graph) for name in n.input}


def load_source(path: str | Path) -> Source:
    """Read ``path`` and refuse at once what no mapping can fix (external data, an old opset, a step model)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        msg = f"cannot read the model to adopt: {p} ({exc.strerror or exc})"
        raise AdoptError(msg) from exc
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, or a ValueError for truncated files
        msg = f"{p} is not an ONNX model ({type(exc).__name__}); adopt expects a .onnx file"
        raise AdoptError(msg) from exc
    _refuse_external_data(model, p)
    if any(prop.key == META_CONTRACT for prop in model.metadata_props):
        msg = f"{p} is already an rnnwatch step model: use it as it is (`rnnwatch check {p}`)"
        raise AdoptError(msg)
    initialised = {t.name for t in model.graph.initializer}
    source = Source(p, hashlib.sha256(data).hexdigest(), model,
                    tuple(_info(v) for v in model.graph.input if v.name not in initialised),
                    tuple(_info(v) for v in model.graph.output))
    if source.opset < MIN_OPSET:
        msg = (f"{p} uses ONNX opset {source.opset}; adopt needs opset {MIN_OPSET} or newer: convert it first "
               "(onnx.version_converter.convert_version(model, 17))")
        raise AdoptError(msg)
    return source


def recurrent_links(graph: onnx.GraphProto) -> tuple[dict[str, frozenset[Link]], dict[str, frozenset[Link]]]:
    """Per graph input, the recurrent-node slots it feeds; per graph output, the recurrent results it comes from.

    The walk stops at recurrent nodes (a layer's ``Y`` feeding the next layer's ``X`` does not make the first
    layer's input a state), so a 2-layer model's ``h0`` links to both layers' ``initial_h`` and nothing else.
    """
    consumers: dict[str, list[tuple[int, int]]] = {}
    producers: dict[str, list[tuple[int, int]]] = {}
    for i, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((i, slot))
        for slot, name in enumerate(node.output):
            producers[name] = [(i, slot)]
    nodes = list(graph.node)
    return ({v.name: _trace(v.name, consumers, nodes, 0) for v in graph.input},
            {v.name: _trace(v.name, producers, nodes, 1) for v in graph.output})


def _trace(start: str, edges: dict[str, list[tuple[int, int]]], nodes: list[onnx.NodeProto],
           side: int) -> frozenset[Link]:
    """Breadth-first from ``start`` along ``edges`` (side 0: downstream, 1: upstream), stopping at recurrent nodes."""
    found: set[Link] = set()
    seen, queue = {start}, deque([start])
    while queue:
        for i, slot in edges.get(queue.popleft(), ()):
            node = nodes[i]
            roles = RECURRENT_OPS.get(node.op_type)
            if roles is not None:
                if slot in roles[side]:
                    found.add((i, roles[side][slot]))
                continue
            for name in node.output if side == 0 else node.input:
                if name and name not in seen:
                    seen.add(name)
                    queue.append(name)
    return frozenset(found)


def _named(infos: tuple[TensorInfo, ...], name: str, kind: str, path: Path) -> TensorInfo:
    for info in infos:
        if info.name == name:
            return info
    msg = f"{path} has no {kind} {name!r} (its {kind}s: {', '.join(i.describe() for i in infos) or 'none'})"
    raise MappingError(msg)


def _info(value: onnx.ValueInfoProto) -> TensorInfo:
    if not value.type.HasField("tensor_type"):
        return TensorInfo(value.name, 0, None)
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return TensorInfo(value.name, tensor.elem_type, None)
    dims: list[Dim] = []
    for d in tensor.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return TensorInfo(value.name, tensor.elem_type, tuple(dims))


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _all_nodes(sub)


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _all_tensors(sub)


def _refuse_external_data(model: onnx.ModelProto, path: Path) -> None:
    external = [t.name or "(unnamed)" for t in _all_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]
    if external:
        files = sorted({e.value for t in _all_tensors(model.graph) for e in t.external_data if e.key == "location"})
        msg = (f"{path} keeps {len(external)} weight tensor(s) in external data file(s) {files}: a step model must "
               "be one self-contained file; merge them first (models under 2 GB): "
               f"python -c \"import onnx; onnx.save(onnx.load('{path}'), 'merged.onnx')\", then adopt merged.onnx")
        raise ExternalDataError(msg)

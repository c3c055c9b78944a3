"""A step model's sequence form with less inside the loop: what depends only on shapes is computed once per batch
size, exact elementwise arithmetic on the inputs once for all T steps, and only the rest in the ``Scan``.

With few keys a block is thousands of steps of 3 or 4 keys, and a ``Scan`` step costs its nodes' fixed overhead
(~0.35 us each, whatever the batch), not their arithmetic: the bundled GRU's 46 nodes were most of what a record
cost. Half of them do not need to be in the loop:

* *static* values depend only on shapes (``Shape``, the index arithmetic a GRU's gate slicing does on it, a
  "seen" flag's ``ConstantOfShape``): computed once per batch size K by the step graph itself and read by the
  loop body as outer-scope values;
* *pre* values are exact elementwise operations (``Div``, ``Where``, ``Greater`` ...: IEEE operations whose result
  does not depend on where an element sits in its tensor) on the input and on *non-recurrent* states, run once
  over the block's T x K rows. A state is non-recurrent when its new value does not read any state (``t.prev =
  x``; the seen flag): its value before step t is its new value of step t - 1, computed here from the inputs;
* *post* nodes compute only outputs (the forecast's de-standardisation and ``Exp`` after the head's ``Gemm``) and are
  row-invariant: run once over the block's rows after the loop, from the values the loop gives per step.

Everything else stays in the loop, batch K as stepping wave by wave runs it: onnxruntime's ``Gemm`` and ``Log``
give a row a result that depends on its position in the batch (a 4-row kernel and a tail kernel; vector packets and
a scalar tail), so they are never run on a differently shaped batch. In the loop, Slices that cut one tensor into
consecutive pieces (a GRU's three gates) become one ``Split``. Bundled GRU: 46 nodes a step -> 22. Graphs with
subgraphs (``If``, ``Loop``) are not split. Like the plain wrapper (``consumer.sequence``) this form is used only
after it proved on probe blocks of 1 to 5 keys that it gives the step graph's outputs bit for bit
(``StepModel.has_sequence`` in ``consumer.session``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from rnnwatch.consumer.contract import INPUT_X, OUTPUT_FORECAST, OUTPUT_SCALE, OUTPUT_SCORE, STATE_IN, STATE_OUT
from rnnwatch.consumer.onnxwire import (
    ATTR_G,
    ATTR_GRAPH,
    ATTR_GRAPHS,
    ATTR_I,
    ATTR_INT,
    ATTR_NAME,
    ATTR_TYPE,
    GRAPH_INIT,
    GRAPH_INPUT,
    GRAPH_NAME,
    GRAPH_NODE,
    GRAPH_OUTPUT,
    GRAPH_SPARSE,
    MODEL_GRAPH,
    MODEL_IR,
    MODEL_OPSET,
    NODE_ATTR,
    NODE_DOMAIN,
    NODE_INPUT,
    NODE_OP,
    NODE_OUTPUT,
    SPARSE_VALUES,
    TENSOR_NAME,
    VALUE_NAME,
    VALUE_TYPE,
    default_opset,
    field_int,
    field_len,
    field_str,
    fields,
    float_tensor,
    name_of,
    node_proto,
)
from rnnwatch.consumer.sequence import SEQ

__all__ = ["EXACT_OPS", "ROW_OPS", "HoistedSequence", "Split", "core_scan", "hoisted_sequence", "split_step_graph"]

# Elementwise operations whose every element is one IEEE operation (or a selection / comparison) of the inputs'
# elements at that position: the same bits in a batch of T x K rows as in a batch of K. Not Max / Min: a vector
# max and a scalar one can disagree on which operand a NaN gives back.
EXACT_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Where", "Greater", "Less", "Equal",
                       "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Identity"})
# After the loop, on the outputs' side, also onnxruntime's vectorised Exp / Sigmoid / Tanh (MLAS kernels: every
# element through the same lanes, the tail included; measured identical at every batch size, and the probe blocks
# of several batch sizes check it on the machine that runs them). ``Log`` is not one of them.
ROW_OPS = EXACT_OPS | {"Exp", "Sigmoid", "Tanh"}
_ELEMENT = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.int32): 6,
            np.dtype(np.int64): 7, np.dtype(np.bool_): 9, np.dtype(np.float16): 10, np.dtype(np.float64): 11}


@dataclass(frozen=True)
class _Node:
    raw: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    op: str


@dataclass(frozen=True)
class Split:
    """A step graph split (see the module docstring): the pre and static models, and what the core is built of."""

    pre: bytes | None  # x rows and shifted states' rows -> pre_outputs (None: nothing to hoist)
    static: bytes | None  # the step graph's inputs (any values, K rows) -> static_outputs
    shifted: tuple[str, ...]  # non-recurrent states: their values before each step are known ahead
    recurrent: tuple[str, ...]  # carried through the loop
    crossing: tuple[str, ...]  # values the core reads per step (pre outputs, x or a shifted state)
    pre_outputs: tuple[str, ...]
    static_outputs: tuple[str, ...]
    outputs: tuple[str, ...]  # the step outputs (forecast, ...), each step's from the core
    core_nodes: tuple[bytes, ...]
    graph: tuple[tuple[int, Any, bytes], ...]  # the step graph's fields
    model: tuple[tuple[int, Any, bytes], ...]  # the model's fields
    post_nodes: tuple[bytes, ...] = ()  # row-invariant nodes only the outputs need: run after the loop, batched
    boundary: tuple[str, ...] = ()  # loop values the post nodes read (each step's, as scan outputs)
    post_rows: tuple[str, ...] = ()  # pre values and inputs the post nodes read
    loop_outputs: tuple[str, ...] = ()  # the step outputs computed in the loop
    slices: tuple[tuple[bytes, tuple[str, ...], str], ...] = ()  # loop Slices with bounds fixed per batch size
    params: tuple[str, ...] = ()  # those bounds (starts, ends, axes, steps)
    params_model: bytes | None = None  # the step graph's inputs (any values, K rows) -> params
    opset: int = 0

    @property
    def scanned(self) -> list[str]:
        """The boundary values the loop gives per step besides the carried states (which it gives anyway)."""
        return [v for v in self.boundary if v not in {STATE_OUT + s for s in self.recurrent}]


def _parse_node(raw: bytes) -> _Node | None:
    ins: list[str] = []
    outs: list[str] = []
    op, domain = "", ""
    for f, v, _ in fields(raw):
        if f == NODE_INPUT:
            ins.append(v.decode())
        elif f == NODE_OUTPUT:
            outs.append(v.decode())
        elif f == NODE_OP:
            op = v.decode()
        elif f == NODE_DOMAIN:
            domain = v.decode()
        elif f == NODE_ATTR and any(af in (ATTR_G, ATTR_GRAPHS) for af, _, _ in fields(v)):
            return None  # a subgraph may read any outer value: its dependencies are not in its inputs
    return _Node(raw, tuple(ins), tuple(outs), op if domain in ("", "ai.onnx") else f"{domain}.{op}")


def _tainted(nodes: list[_Node], sources: set[str], *, through_shape: bool = False) -> set[str]:
    """The values computed from ``sources``' data (a ``Shape`` reads its input's shape only, unless
    ``through_shape``)."""
    out = set(sources)
    for n in nodes:
        if (through_shape or n.op != "Shape") and any(i in out for i in n.inputs if i):
            out.update(n.outputs)
    return out


def _ancestors(targets: list[str], producer: dict[str, _Node], stop: set[str]) -> list[_Node]:
    """The nodes computing ``targets`` from the graph's inputs, not going past values in ``stop``."""
    picked: dict[int, _Node] = {}
    todo, seen = list(targets), set()
    while todo:
        v = todo.pop()
        n = producer.get(v)
        if v in seen or v in stop or n is None:
            continue
        seen.add(v)
        picked[id(n)] = n
        todo.extend(i for i in n.inputs if i)
    return list(picked.values())


def _classes(nodes: list[_Node], recurrent: list[str], shifted: list[str]) -> tuple[set[str], set[str], set[str]]:
    """(pre values, static values, data values) when ``recurrent`` states are carried and ``shifted`` ones known
    ahead."""
    rec = _tainted(nodes, {STATE_IN + s for s in recurrent}, through_shape=True)
    data = _tainted(nodes, {INPUT_X, *(STATE_IN + s for s in [*recurrent, *shifted])})
    shaped = {o for n in nodes if n.op == "Shape" for o in n.outputs}
    static = _tainted(nodes, shaped, through_shape=True) - data
    rows = {INPUT_X, *(STATE_IN + s for s in shifted)}
    pre: set[str] = set()
    for n in nodes:  # exact operations on rows, earlier pre values and constants
        known = [i in rows or i in pre for i in n.inputs if i]
        constant = [i not in data and i not in static for i in n.inputs if i]
        if (n.op in EXACT_OPS and not any(i in rec for i in n.inputs) and any(known)
                and all(k or c for k, c in zip(known, constant, strict=True))):
            pre.update(n.outputs)
    return pre, static, data


def split_step_graph(model_bytes: bytes, states: list[str], outputs: list[str]) -> Split | None:
    """The step graph split into static / pre / core (None when it has nothing to take out of the loop or cannot
    be split: a subgraph, a step output computed outside the loop)."""
    model = list(fields(model_bytes))
    graph = next((v for f, v, _ in model if f == MODEL_GRAPH), None)
    if graph is None or default_opset(model) < 9:
        return None
    parts = list(fields(graph))
    parsed = [_parse_node(v) for f, v, _ in parts if f == GRAPH_NODE]
    if any(n is None for n in parsed):
        return None
    nodes = [n for n in parsed if n is not None]
    producer = {o: n for n in nodes for o in n.outputs}
    reads_state = _tainted(nodes, {STATE_IN + s for s in states})
    candidates = [s for s in states if STATE_OUT + s not in reads_state]
    pre, static, _ = _classes(nodes, [s for s in states if s not in candidates], candidates)
    shifted = [s for s in candidates if STATE_OUT + s in pre or STATE_OUT + s in static]
    recurrent = [s for s in states if s not in shifted]
    pre, static, data = _classes(nodes, recurrent, shifted)  # a state moved to the loop takes what reads it
    if not recurrent or any(o in pre or o in static for o in outputs):
        return None
    carried = {STATE_IN + s for s in recurrent}
    rows = {INPUT_X, *(STATE_IN + s for s in shifted)}
    for_states = _loop(producer, [STATE_OUT + s for s in recurrent], carried, pre | rows | static)
    loop = _loop(producer, [*(STATE_OUT + s for s in recurrent), *outputs], carried, pre | rows | static)
    post = {k: n for k, n in loop.items() if k not in for_states and n.op in ROW_OPS
            and not any(i in static for i in n.inputs)}
    changed = True
    while changed:  # a value the loop reads is computed in the loop
        changed = False
        for k, n in list(loop.items()):
            if k not in post and any(id(producer[i]) in post for i in n.inputs if i in producer):
                for i in n.inputs:
                    post.pop(id(producer[i]), None) if i in producer else None
                changed = True
    for k in post:
        loop.pop(k)
    if len(loop) == len(nodes):
        return None
    made_in_loop = {o for n in loop.values() for o in n.outputs}
    post_reads = list(dict.fromkeys(i for n in post.values() for i in n.inputs if i))
    boundary = [v for v in post_reads if v in made_in_loop]
    crossing = list(dict.fromkeys(i for n in loop.values() for i in n.inputs if i in pre or i in rows))
    static_used = list(dict.fromkeys(i for n in loop.values() for i in n.inputs if i in static))
    if not crossing:
        return None
    inputs = {name_of(v): raw for f, v, raw in parts if f == GRAPH_INPUT}
    pre_outputs = tuple(dict.fromkeys([*(c for c in [*crossing, *post_reads] if c in pre),
                                       *(STATE_OUT + s for s in shifted if STATE_OUT + s in pre)]))
    static_outputs = tuple(dict.fromkeys([*static_used, *(STATE_OUT + s for s in shifted
                                                          if STATE_OUT + s in static)]))
    order = {id(n): i for i, n in enumerate(nodes)}

    def ordered(picked: list[_Node]) -> list[bytes]:
        return [n.raw for n in sorted(picked, key=lambda n: order[id(n)])]

    pre_model = None
    if pre_outputs:
        pre_nodes = ordered(_ancestors(list(pre_outputs), producer, rows))
        pre_model = _model(model, _graph(parts, pre_nodes, "pre", [inputs[n] for n in [INPUT_X, *(
            STATE_IN + s for s in shifted)]], [field_str(VALUE_NAME, o) for o in pre_outputs]))
    static_model = None
    if static_outputs:
        static_nodes = ordered(_ancestors(list(static_outputs), producer, set()))
        static_model = _model(model, _graph(parts, static_nodes, "static", list(inputs.values()),
                                            [field_str(VALUE_NAME, o) for o in static_outputs]))
    slices = [n for n in loop.values() if n.op == "Slice" and len(n.inputs) in (4, 5)
              and all(i in producer and i not in data for i in n.inputs[1:])]
    params = tuple(dict.fromkeys(i for n in slices for i in n.inputs[1:]))
    params_model = None
    if params:
        params_model = _model(model, _graph(parts, ordered(_ancestors(list(params), producer, set())), "params",
                                            list(inputs.values()), [field_str(VALUE_NAME, o) for o in params]))
    return Split(pre_model, static_model, tuple(shifted), tuple(recurrent), tuple(crossing), pre_outputs,
                 static_outputs, tuple(outputs), tuple(ordered(list(loop.values()))), tuple(parts), tuple(model),
                 tuple(ordered(list(post.values()))), tuple(boundary),
                 tuple(v for v in post_reads if v in pre or v in rows),
                 tuple(o for o in outputs if o in made_in_loop),
                 tuple((n.raw, n.inputs, n.outputs[0]) for n in slices), params, params_model,
                 default_opset(model))


def _loop(producer: dict[str, _Node], targets: list[str], carried: set[str], outside: set[str]) -> dict[int, _Node]:
    """The nodes computing ``targets`` from the carried states and the values computed ``outside`` the loop."""
    picked: dict[int, _Node] = {}
    todo, seen = list(targets), set()
    while todo:
        v = todo.pop()
        if v in seen or v in carried or v in outside or v not in producer:
            continue
        seen.add(v)
        picked[id(producer[v])] = producer[v]
        todo.extend(producer[v].inputs)
    return picked


def _initializers(parts: tuple[tuple[int, Any, bytes], ...] | list[tuple[int, Any, bytes]],
                  nodes: list[bytes]) -> bytes:
    """The initializers ``nodes`` read (onnxruntime warns about each unused one)."""
    read = {i for raw in nodes for n in [_parse_node(raw)] if n is not None for i in n.inputs}
    out = []
    for f, v, raw in parts:
        if f == GRAPH_INIT:
            name = next((x.decode() for g, x, _ in fields(v) if g == TENSOR_NAME), "")
        elif f == GRAPH_SPARSE:
            values = next((x for g, x, _ in fields(v) if g == SPARSE_VALUES), b"")
            name = next((x.decode() for g, x, _ in fields(values) if g == TENSOR_NAME), "")
        else:
            continue
        if name in read:
            out.append(raw)
    return b"".join(out)


def _graph(parts: list[tuple[int, Any, bytes]], nodes: list[bytes], name: str, inputs: list[bytes],
           outputs: list[bytes]) -> bytes:
    return (b"".join(field_len(GRAPH_NODE, r) for r in nodes) + field_str(GRAPH_NAME, name)
            + _initializers(parts, nodes) + b"".join(inputs) + b"".join(field_len(GRAPH_OUTPUT, o) for o in outputs))


def _model(model: list[tuple[int, Any, bytes]] | tuple[tuple[int, Any, bytes], ...], graph: bytes) -> bytes:
    ir = b"".join(raw for f, _, raw in model if f == MODEL_IR)
    return ir + b"".join(raw for f, _, raw in model if f == MODEL_OPSET) + field_len(MODEL_GRAPH, graph)


def _typed(name: str, elem: int, rank: int) -> bytes:
    """A ValueInfoProto: a tensor of ``elem`` type and ``rank`` dimensions of unknown size."""
    shape = b"".join(field_len(1, field_str(2, f"d{i}")) for i in range(rank))
    return field_str(VALUE_NAME, name) + field_len(VALUE_TYPE, field_len(1, field_int(1, elem) + field_len(2, shape)))


def fused_slices(split: Split, params: dict[str, np.ndarray]) -> list[tuple[list[bytes], bytes, bytes]]:
    """Groups of loop Slices that cut one tensor into consecutive pieces along one axis, each as one ``Split``
    (one node instead of several in every step: a piece's bytes are the same either way): (the Slices it replaces,
    the Split node, its sizes initializer). ``params``: the Slices' bounds as evaluated for a batch size."""
    if split.opset < 13:  # Split takes its sizes as an input from opset 13
        return []
    groups: dict[tuple[str, int], list[tuple[int, int, bytes, str]]] = {}
    for raw, ins, out in split.slices:
        starts, ends, axes = (np.asarray(params[i]).reshape(-1) for i in ins[1:4])
        steps = np.asarray(params[ins[4]]).reshape(-1) if len(ins) == 5 else np.ones(1, np.int64)
        if not (starts.size == ends.size == axes.size == steps.size == 1) or int(steps[0]) != 1:
            continue
        start, end = int(starts[0]), int(ends[0])
        if 0 <= start < end < 2**31:
            groups.setdefault((ins[0], int(axes[0])), []).append((start, end, raw, out))
    fused: list[tuple[list[bytes], bytes, bytes]] = []
    for (data, axis), pieces in groups.items():
        pieces.sort()
        if len(pieces) < 2 or pieces[0][0] != 0 or any(a[1] != b[0] for a, b in pairwise(pieces)):
            continue
        name = f"rnnwatch_split_{len(fused)}_sizes"
        sizes = np.array([e - s for s, e, _, _ in pieces], dtype="<i8")
        tensor = (field_int(1, len(sizes)) + field_int(2, 7) + field_str(TENSOR_NAME, name)
                  + field_len(9, sizes.tobytes()))
        attrs = field_len(NODE_ATTR, field_str(ATTR_NAME, "axis") + field_int(ATTR_I, axis % 2**64)
                          + field_int(ATTR_TYPE, ATTR_INT))
        node = node_proto("Split", [data, name], [o for _, _, _, o in pieces], f"rnnwatch_split_{len(fused)}", attrs)
        fused.append(([r for _, _, r, _ in pieces], node, field_len(GRAPH_INIT, tensor)))
    return fused


def _loop_nodes(split: Split, fused: list[tuple[list[bytes], bytes, bytes]]) -> tuple[list[bytes], bytes]:
    """The loop's nodes with each fused group's first Slice replaced by its Split (the others dropped), and the
    Splits' sizes initializers."""
    first = {group[0]: node for group, node, _ in fused}
    dropped = {r for group, _, _ in fused for r in group[1:]}
    nodes = [_parse_node(first.get(raw, raw)) for raw in split.core_nodes if raw not in dropped]
    read = {*(STATE_OUT + s for s in split.recurrent), *split.loop_outputs, *split.scanned}
    kept: list[bytes] = []
    for n in reversed(nodes):  # what only the replaced Slices read (their bounds' Constants) goes too
        if n is not None and any(o in read for o in n.outputs):
            kept.append(n.raw)
            read.update(n.inputs)
    return kept[::-1], b"".join(init for _, _, init in fused)


def core_scan(split: Split, types: dict[str, tuple[int, int]],
              fused: list[tuple[list[bytes], bytes, bytes]] | None = None) -> bytes:
    """The core's ``Scan``: carried recurrent states, one scan input per crossing value and the static values read
    from the outer scope (``types``: each one's element type and rank per step); outputs the states after the last
    step, each step's outputs (``<output>.seq``) and each step's new recurrent states (``<state_out>.seq``)."""
    parts = split.graph
    inputs = {name_of(v): raw for f, v, raw in parts if f == GRAPH_INPUT}
    outs = {name_of(v): raw for f, v, raw in parts if f == GRAPH_OUTPUT}
    carried_in = [STATE_IN + s for s in split.recurrent]
    carried_out = [STATE_OUT + s for s in split.recurrent]
    copies = b"".join(field_len(GRAPH_NODE, node_proto("Identity", [o], [o + SEQ], f"rnnwatch_core_{o}"))
                      for o in carried_out)
    loop_nodes, sizes = _loop_nodes(split, fused or [])
    body = (b"".join(field_len(GRAPH_NODE, raw) for raw in loop_nodes) + copies + field_str(GRAPH_NAME, "core")
            + _initializers(parts, loop_nodes) + sizes
            + b"".join(inputs[n] for n in carried_in)
            + b"".join(field_len(GRAPH_INPUT, _typed(c, *types[c])) for c in split.crossing)
            + b"".join(outs[n] for n in [*carried_out, *split.loop_outputs])
            + b"".join(field_len(GRAPH_OUTPUT, float_tensor(v)) for v in split.scanned)
            + b"".join(field_len(GRAPH_OUTPUT, float_tensor(o + SEQ)) for o in carried_out))
    attrs = (field_len(NODE_ATTR, field_str(ATTR_NAME, "body") + field_len(ATTR_G, body)
                       + field_int(ATTR_TYPE, ATTR_GRAPH))
             + field_len(NODE_ATTR, field_str(ATTR_NAME, "num_scan_inputs") + field_int(ATTR_I, len(split.crossing))
                    + field_int(ATTR_TYPE, ATTR_INT)))
    seq_in = [c + SEQ for c in split.crossing]
    seq_out = [o + SEQ for o in [*split.loop_outputs, *split.scanned, *carried_out]]
    scan = node_proto("Scan", [*carried_in, *seq_in], [*carried_out, *seq_out], "rnnwatch_core", attrs)
    outer = (field_len(GRAPH_NODE, scan) + field_str(GRAPH_NAME, "rnnwatch_core")
             + b"".join(field_len(GRAPH_INPUT, float_tensor(n)) for n in carried_in)
             + b"".join(field_len(GRAPH_INPUT, _typed(c + SEQ, types[c][0], types[c][1] + 1)) for c in split.crossing)
             + b"".join(field_len(GRAPH_INPUT, _typed(v, *types[v])) for v in split.static_outputs
                        if not v.startswith(STATE_OUT))
             + b"".join(field_len(GRAPH_OUTPUT, float_tensor(n)) for n in [*carried_out, *seq_out]))
    return _model(split.model, outer)


def post_model(split: Split, types: dict[str, tuple[int, int]]) -> bytes | None:
    """The post nodes over T x K rows: the loop's boundary values (float) and the pre values and inputs they read
    -> the step outputs they compute (None when the loop computes every output)."""
    if not split.post_nodes:
        return None
    parts = split.graph
    inputs = {name_of(v): raw for f, v, raw in parts if f == GRAPH_INPUT}
    outs = {name_of(v): raw for f, v, raw in parts if f == GRAPH_OUTPUT}
    declared = [inputs[v] if v in inputs else field_len(GRAPH_INPUT, _typed(v, *types[v])) for v in split.post_rows]
    declared += [field_len(GRAPH_INPUT, float_tensor(v)) for v in split.boundary]
    return _model(split.model, _graph(list(parts), list(split.post_nodes), "post", declared, []) + b"".join(
        outs[o] for o in split.outputs if o not in split.loop_outputs))


class HoistedSequence:
    """T steps of K keys as static values (once per K), pre (batched over T x K rows) and the core's ``Scan``:
    the same (forecast, scale, score, every step's states) as ``StepModel.run_sequence``."""

    def __init__(self, split: Split, pre: Any, static: Any, core: Any, init: dict[str, np.ndarray],
                 n_features: int, post: Any = None, params: Any = None,
                 fused_at: dict[str, np.ndarray] | None = None, plain: Any = None) -> None:
        self.split = split
        self.pre = pre
        self.static = static
        self.core = core
        self.post = post
        self.params = params  # the loop Slices' bounds per batch size (None: no Slice fused)
        self.fused_at = fused_at or {}  # the bounds the core's Splits were built for
        self.plain = plain  # () -> the core without fused Slices, for a batch size whose bounds differ
        self.short: Any = None  # the whole step graph's Scan session, for blocks of a few steps (consumer.session)
        self._cores: dict[int, Any] = {}
        self.init = init  # each state's initial row: the static model's inputs (their values are never read)
        self.n_features = n_features
        self._static: dict[int, dict[str, np.ndarray]] = {}

    def _inputs(self, keys: int) -> dict[str, np.ndarray]:
        """The step graph's inputs for a batch of ``keys`` (values that are never read, only their shapes)."""
        return {INPUT_X: np.ones((keys, self.n_features), np.float32),
                **{STATE_IN + s: np.repeat(v[None], keys, axis=0) for s, v in self.init.items()}}

    def core_for(self, keys: int) -> Any:
        """The core for a batch of ``keys``: with the fused Splits when the Slices' bounds are the ones they were
        built for (they do not depend on the batch size in any model seen; checked, not assumed)."""
        if keys not in self._cores:
            core = self.core
            if self.params is not None:
                names = list(self.split.params)
                got = dict(zip(names, self.params.run(names, self._inputs(keys)), strict=True))
                if any(not np.array_equal(got[n], v) for n, v in self.fused_at.items()):
                    core = self.plain()
            self._cores[keys] = core
        return self._cores[keys]

    def statics(self, keys: int) -> dict[str, np.ndarray]:
        """The static values for a batch of ``keys`` (computed from shapes alone: any inputs of that shape do)."""
        if keys not in self._static:
            sp = self.split
            got: dict[str, np.ndarray] = {}
            if self.static is not None:
                got = dict(zip(sp.static_outputs, self.static.run(list(sp.static_outputs), self._inputs(keys)),
                               strict=True))
            self._static[keys] = got
        return self._static[keys]

    def run(self, x: np.ndarray, states: dict[str, np.ndarray]) -> tuple[
            np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
        T, K = x.shape[:2]
        n = T * K
        sp = self.split
        static = self.statics(K)
        rows = {INPUT_X: np.ascontiguousarray(x.reshape(n, *x.shape[2:]))}
        every: dict[str, np.ndarray] = {}
        shifted_pre = [s for s in sp.shifted if STATE_OUT + s in sp.pre_outputs]
        if shifted_pre:  # first pass: the new values of the shifted states (they read no state)
            dummy = {STATE_IN + s: np.repeat(states[s][None], T, axis=0).reshape(n, *states[s].shape[1:])
                     for s in sp.shifted}
            got = dict(zip(sp.pre_outputs, self.pre.run(list(sp.pre_outputs), {**rows, **dummy}), strict=True))
            for s in shifted_pre:
                every[s] = got[STATE_OUT + s].reshape(T, K, *states[s].shape[1:])
        for s in sp.shifted:
            if s not in every:
                every[s] = np.broadcast_to(static[STATE_OUT + s], (T, *states[s].shape))
            before = np.concatenate([states[s][None], every[s][:-1]])
            rows[STATE_IN + s] = before.reshape(n, *before.shape[2:])
        values = dict(rows)
        if self.pre is not None:
            values.update(zip(sp.pre_outputs, self.pre.run(list(sp.pre_outputs), rows), strict=True))
        feeds = {STATE_IN + s: states[s] for s in sp.recurrent}
        feeds.update({v: static[v] for v in sp.static_outputs if not v.startswith(STATE_OUT)})
        for c in sp.crossing:
            v = values[c]
            if v.shape[:1] != (n,):
                msg = f"{c}: {v.shape} is not one row per key-step"
                raise ValueError(msg)
            feeds[c + SEQ] = v.reshape(T, K, *v.shape[1:])
        names = [o + SEQ for o in [*sp.loop_outputs, *sp.scanned, *(STATE_OUT + s for s in sp.recurrent)]]
        out = dict(zip(names, self.core_for(K).run(names, feeds), strict=True))
        every.update({s: out[STATE_OUT + s + SEQ] for s in sp.recurrent})
        if self.post is not None:  # the outputs' side over every step's rows at once
            post_feeds = {v: values[v] for v in sp.post_rows}
            post_feeds.update({v: out[v + SEQ].reshape(n, *out[v + SEQ].shape[2:]) for v in sp.boundary})
            rest = [o for o in sp.outputs if o not in sp.loop_outputs]
            for o, v in zip(rest, self.post.run(rest, post_feeds), strict=True):
                out[o + SEQ] = v.reshape(T, K, *v.shape[1:])
        score = out.get(OUTPUT_SCORE + SEQ)
        return (out[OUTPUT_FORECAST + SEQ], out.get(OUTPUT_SCALE + SEQ),
                None if score is None else score.reshape(T, -1), {s: every[s] for s in states})


def hoisted_sequence(model_bytes: bytes, outputs: list[str], init: dict[str, np.ndarray], n_features: int,
                     session: Any, *, fuse: bool = True) -> HoistedSequence | None:
    """The split form of a step model (None when its graph cannot be split). ``outputs``: the step outputs
    (forecast first, then forecast_scale and score when the model has them); ``init``: each state's initial row;
    ``session(bytes)`` opens an onnxruntime session; ``fuse``: Slices that cut one tensor into pieces become one
    Split in the loop."""
    split = split_step_graph(model_bytes, list(init), outputs)
    if split is None:
        return None
    pre = None if split.pre is None else session(split.pre)
    static = None if split.static is None else session(split.static)
    probe = HoistedSequence(split, pre, static, None, init, n_features)
    keys = 3
    values = dict(probe.statics(keys))
    rows = {INPUT_X: np.ones((keys, n_features), np.float32),
            **{STATE_IN + s: np.repeat(init[s][None], keys, axis=0) for s in split.shifted}}
    values.update(rows)
    if pre is not None:
        values.update(zip(split.pre_outputs, pre.run(list(split.pre_outputs), rows), strict=True))
    types = {}
    for name in dict.fromkeys([*split.crossing, *split.static_outputs, *split.post_rows]):
        v = np.asarray(values[name])
        if v.dtype not in _ELEMENT:
            return None
        types[name] = (_ELEMENT[v.dtype], v.ndim)
    post = post_model(split, types)
    params = None if split.params_model is None or not fuse else session(split.params_model)
    fused_at: dict[str, np.ndarray] = {}
    fused: list[tuple[list[bytes], bytes, bytes]] = []
    if params is not None:
        fused_at = dict(zip(split.params, params.run(list(split.params), probe._inputs(keys)), strict=True))
        fused = fused_slices(split, fused_at)
    return HoistedSequence(split, pre, static, session(core_scan(split, types, fused)), init, n_features,
                           None if post is None else session(post), params if fused else None, fused_at,
                           lambda: session(core_scan(split, types)))

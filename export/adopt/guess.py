"""The guesses behind a mapping, and the refusals for models no mapping can step.

Order of trust: the graph's structure (:func:`~rnnwatch.export.adopt.source.recurrent_links`), then names
(``h0``/``hn``, ``state_in``/``state_out``, ``forecast``, ``scale`` …), then symbolic dimension names
(``batch``, ``time``). Each guess appends a line saying what it decided and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from collections.abc import Mapping as MappingType
from typing import TYPE_CHECKING

from rnnwatch.export.adopt.errors import (
    REEXPORT_HINT,
    ControlFlowError,
    FixedShapeError,
    InputTypeError,
    MappingError,
    NoStateError,
)
from rnnwatch.export.adopt.source import RECURRENT_OPS, Dim, Link, Source, TensorInfo
from rnnwatch.export.signature import PREV, SEEN

if TYPE_CHECKING:
    from rnnwatch.export.adopt.mapping import MappingRequest

__all__ = ["batch_axis", "compatible", "forecast", "layout", "refuse_hidden_state", "refuse_non_float",
           "refuse_stateless", "scale", "state_names", "state_pairs", "stem"]

Links = MappingType[str, frozenset[Link]]
_NOISE = {"in", "out", "input", "output", "inputs", "outputs", "init", "initial", "final", "prev", "previous",
          "next", "new", "old", "last", "0", "n", "t"}
_FORECAST_WORDS = ("forecast", "prediction", "pred", "yhat", "output", "out", "y")
_SCALE_WORDS = ("scale", "std", "sigma", "stddev")
_BATCH_WORDS = ("batch", "n", "b", "bs", "keys")
_TIME_WORDS = ("time", "seq", "sequence", "step", "steps", "len", "length", "t", "window")


def refuse_non_float(source: Source) -> None:
    for info in source.inputs:
        if not info.is_float:
            msg = (f"{source.path}: input {info.name!r} is {info.type_name}; rnnwatch feeds float32 observations and "
                   "states only. Re-export the model with float32 inputs (cast ids, lengths or masks inside the "
                   "graph; convert a float64/float16 model to float32), or use `rnnwatch export --module`")
            raise InputTypeError(msg)


def refuse_stateless(source: Source) -> None:
    """No state pair: say why the model cannot be stepped and what to do instead."""
    types = source.node_types()
    loops = sorted(types & {"Loop", "Scan"})
    if loops:
        msg = (f"{source.path} runs its recurrence inside a {loops[0]} over the whole sequence and exposes no state "
               "as inputs/outputs: rnnwatch steps a model once per message and must carry its state between "
               f"calls; {REEXPORT_HINT}")
        raise ControlFlowError(msg)
    recurrent = sorted(types & RECURRENT_OPS.keys())
    ins = ", ".join(i.describe() for i in source.inputs)
    outs = ", ".join(o.describe() for o in source.outputs)
    if recurrent:
        msg = (f"{source.path}: its {recurrent[0]} layer starts every call from a state fixed inside the graph (no "
               f"input feeds its initial state), so it would forget everything between messages; {REEXPORT_HINT}")
        raise NoStateError(msg)
    msg = (f"{source.path}: no input/output pair carries state (inputs {ins}; outputs {outs}). If some do, "
           f"name them with --state IN=OUT; otherwise {REEXPORT_HINT}")
    raise NoStateError(msg)


def refuse_hidden_state(source: Source, state_inputs: Sequence[str], in_links: Links) -> None:
    """Every recurrent layer's initial state must come from a mapped state input, and every state input be read."""
    fed = set().union(*(in_links.get(i, frozenset()) for i in state_inputs))
    for index, node in enumerate(source.model.graph.node):
        roles = RECURRENT_OPS.get(node.op_type)
        for slot, role in (roles[0].items() if roles else ()):
            if role != "x" and (index, role) not in fed:
                msg = (f"{source.path}: {node.op_type} node {node.name or index!r} does not take its "
                       f"{'initial_h' if role == 'h' else 'initial_c'} (input {slot}) from a state input, so it "
                       f"restarts from a fixed state at every message; {REEXPORT_HINT}")
                raise NoStateError(msg)
    unused = [i for i in state_inputs if i not in source.consumed()]
    if unused:
        msg = (f"{source.path}: state input(s) {unused} are read by no node, so the state they should carry is lost "
               "between messages (torch's dynamo exporter drops h0 of nn.LSTM this way): re-export with "
               "torch.onnx.export(..., dynamo=False), or use `rnnwatch export --module`")
        raise NoStateError(msg)


def state_pairs(source: Source, in_links: Links, out_links: Links, request: MappingRequest,
                guessed: list[str]) -> list[tuple[str, str]]:
    """(input, output) pairs: same recurrent state slots first, then matching names with compatible shapes."""
    ins = [i for i in source.inputs if i.name != request.observation]
    outs = [o for o in source.outputs if o.name not in (request.forecast, request.scale)]
    pairs: list[tuple[str, str]] = []
    state_outs = {o.name: out_links[o.name] for o in outs if _only_state(out_links.get(o.name))}
    for i in ins:
        links = in_links.get(i.name)
        match = [name for name, got in state_outs.items() if _only_state(links) and got == links]
        if len(match) == 1:
            pairs.append((i.name, match[0]))
            del state_outs[match[0]]
    if pairs:
        guessed.append("states " + ", ".join(f"{i} -> {o}" for i, o in pairs)
                       + " (each feeds and leaves the same LSTM/GRU/RNN state slots)")
    paired_in, paired_out = {i for i, _ in pairs}, {o for _, o in pairs}
    by_name = _pairs_by_name([i for i in ins if not _reads_sequence(in_links.get(i.name)) and i.name not in paired_in],
                             [o for o in outs if o.name not in paired_out])
    if by_name:
        guessed.append("states " + ", ".join(f"{i} -> {o}" for i, o in by_name) + " (matching names and shapes)")
    return pairs + by_name


def state_names(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Contract names: the pair's common stem (h0/hn -> h) when that is unique, else the input's own name."""
    stems = [stem(i) if stem(i) == stem(o) else i for i, o in pairs]
    if len(set(stems)) == len(stems) and not set(stems) & {PREV, SEEN}:
        return stems
    return [i for i, _ in pairs]


def layout(source: Source, obs: TensorInfo, states: Sequence[TensorInfo], guessed: list[str]) -> str:
    """batch-first, sequence-first or step, from fixed axes, the states' batch symbol, then axis names."""
    if obs.dims is None or len(obs.dims) not in (2, 3):
        msg = (f"{source.path}: cannot read the layout of {obs.describe()}: adopt reads [batch, time, F], "
               "[time, batch, F] or [batch, F]; pass --input NAME for the observation")
        raise MappingError(msg)
    if len(obs.dims) == 2:
        guessed.append(f"layout step: {obs.describe()} takes one step per call")
        return "step"
    d0, d1 = obs.dims[0], obs.dims[1]
    if isinstance(d0, int) and isinstance(d1, int):
        msg = (f"{source.path}: {obs.describe()} has a fixed batch size and sequence length: re-export with a dynamic "
               f"batch axis (torch: dynamic_axes={{'{obs.name}': {{0: 'batch'}}}}, the same for states and outputs)")
        raise FixedShapeError(msg)
    # The states' batch axes ([L, batch, H] by convention when no single axis is dynamic): a symbol or a size
    # other than 1 shared with one axis of x says which axis of x is the batch.
    symbols = {s.dims[batch_axis(s.dims, None)] for s in states if s.dims} - {None, 1}
    rules = (
        (d0 in symbols and d1 not in symbols, "batch-first", f"axis 0 ({d0}) is the states' batch axis"),
        (d1 in symbols and d0 not in symbols, "sequence-first", f"axis 1 ({d1}) is the states' batch axis"),
        (isinstance(d1, int), "batch-first", f"its time axis (1) is fixed at {d1}"),
        (isinstance(d0, int), "sequence-first", f"its time axis (0) is fixed at {d0}"),
        (_word(d0) == "batch" or _word(d1) == "time", "batch-first", f"its axes are named {d0}, {d1}"),
        (_word(d1) == "batch" or _word(d0) == "time", "sequence-first", f"its axes are named {d0}, {d1}"),
    )
    for applies, chosen, why in rules:
        if applies:
            guessed.append(f"layout {chosen}: {why}")
            return chosen
    if source.model.producer_name in ("tf2onnx", "keras2onnx"):
        guessed.append(f"layout batch-first: a Keras model (converted by {source.model.producer_name}) is batch-first")
        return "batch-first"
    msg = (f"{source.path}: cannot tell which axis of {obs.describe()} is the batch: pass --layout batch-first "
           "([batch, time, F]) or --layout sequence-first ([time, batch, F])")
    raise MappingError(msg)


def forecast(source: Source, taken: set[str], n_features: int, out_links: Links, guessed: list[str]) -> TensorInfo:
    """The one output left that fits [.., F]; ties broken by structure (from Y), then by name."""
    fits = [o for o in source.outputs if o.name not in taken and _fits(o, n_features)]
    picks = _narrow(fits, [lambda o: any(r == "y" for _, r in out_links.get(o.name, ())),
                           lambda o: not _named(o.name, _SCALE_WORDS),
                           lambda o: _named(o.name, _FORECAST_WORDS)])
    if len(picks) != 1:
        names = ", ".join(o.describe() for o in (picks or source.outputs))
        msg = (f"{source.path}: cannot tell which output is the forecast of the next observation (candidates: "
               f"{names or 'none'}): pass --forecast NAME (an output of shape [..., {n_features}])")
        raise MappingError(msg)
    guessed.append(f"forecast {picks[0].describe()}" + ("" if len(fits) == 1 else " (the sequence output)"))
    return picks[0]


def scale(source: Source, taken: set[str], fc: TensorInfo, guessed: list[str]) -> TensorInfo | None:
    named = [o for o in source.outputs if o.name not in taken and _named(o.name, _SCALE_WORDS) and compatible(o, fc)]
    if len(named) != 1:
        return None
    guessed.append(f"forecast scale {named[0].describe()} (by its name)")
    return named[0]


def batch_axis(dims: Sequence[Dim], batch_symbol: object) -> int:
    """The observation's batch symbol if the state has it, else its one dynamic axis, else [L, B, H] / [B, H]."""
    if isinstance(batch_symbol, str) and batch_symbol in dims:
        return list(dims).index(batch_symbol)
    dynamic = [k for k, d in enumerate(dims) if not isinstance(d, int)]
    if len(dynamic) == 1:
        return dynamic[0]
    return 1 if len(dims) >= 3 else 0


def compatible(a: TensorInfo, b: TensorInfo) -> bool:
    if a.dims is None or b.dims is None:
        return True
    return len(a.dims) == len(b.dims) and all(
        not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a.dims, b.dims, strict=True))


def stem(name: str) -> str:
    """``h0``/``hn``/``h_0``/``initial_h`` -> ``h``; ``state_in``/``state_out`` -> ``state``."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t and t not in _NOISE]
    kept = [re.sub(r"^([a-z])[0n]$", r"\1", t) for t in tokens]
    return ".".join(kept) if any(not t.isdigit() for t in kept) else name  # input_1 says nothing about pairs


def _pairs_by_name(ins: Sequence[TensorInfo], outs: Sequence[TensorInfo]) -> list[tuple[str, str]]:
    pairs = []
    for i in ins:
        match = [o for o in outs if stem(o.name) == stem(i.name) and compatible(i, o)]
        rivals = [j for j in ins if stem(j.name) == stem(i.name)]
        if len(match) == 1 and len(rivals) == 1:
            pairs.append((i.name, match[0].name))
    return pairs


def _only_state(links: frozenset[Link] | None) -> bool:
    return bool(links) and all(role in ("h", "c") for _, role in links or ())


def _reads_sequence(links: frozenset[Link] | None) -> bool:
    return any(role == "x" for _, role in links or ())


def _word(dim: Dim) -> str | None:
    if not isinstance(dim, str):
        return None
    tokens = set(re.split(r"[^a-z]+", dim.lower()))
    if tokens & set(_BATCH_WORDS) or "batch" in dim.lower():
        return "batch"
    return "time" if tokens & set(_TIME_WORDS) else None


def _fits(out: TensorInfo, n_features: int) -> bool:
    if not out.is_float or (out.rank is not None and out.rank not in (2, 3)):
        return False
    last = out.dims[-1] if out.dims else None
    return not isinstance(last, int) or last == n_features


def _named(name: str, words: Sequence[str]) -> bool:
    tokens = set(re.split(r"[^a-z]+", name.lower()))
    return bool(tokens & set(words))


def _narrow(items: list[TensorInfo], preferences: Sequence[Callable[[TensorInfo], bool]]) -> list[TensorInfo]:
    """Apply each preference in turn while more than one item is left and the preference keeps some."""
    for prefer in preferences:
        if len(items) <= 1:
            break
        kept = [i for i in items if prefer(i)]
        items = kept or items
    return items

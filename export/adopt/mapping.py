"""Which of a model's inputs and outputs play which part of the step contract, as given or guessed.

==============  ==========================================================================================
observation     the input that reads x: ``[batch, time, F]`` (batch-first), ``[time, batch, F]``
                (sequence-first) or ``[batch, F]`` (a model that already takes one step per call: ``step``)
states          (input, output) pairs carried from one step to the next (``h0 -> hn``, ``c0 -> cn``), each
                in the model's own layout, e.g. ``[layers·directions, batch, H]`` for LSTM/GRU/RNN layers
forecast        the output predicting the next observation, per step (``[batch, time, F]``) or for the
                last step of the call only (``[batch, F]``)
scale           optional: the predicted std of that forecast, same shape as the forecast
==============  ==========================================================================================

Guesses come from the graph's structure first (``guess.py``), then names, then symbolic dimension names.
Everything guessed is reported; whatever stays ambiguous is refused with the flag that settles it. The
parity proof then checks the result, guessed or given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnwatch.export.adopt import guess
from rnnwatch.export.adopt.errors import FixedShapeError, MappingError
from rnnwatch.export.adopt.source import Source, TensorInfo, recurrent_links

__all__ = ["LAYOUTS", "Mapping", "MappingRequest", "StatePair", "resolve_mapping"]

LAYOUTS = ("batch-first", "sequence-first", "step")
_AXES = {"batch-first": (0, 1), "sequence-first": (1, 0), "step": (0, None)}  # (batch axis, time axis) of x


@dataclass(frozen=True)
class StatePair:
    name: str  # the contract's state_in.<name> / state_out.<name>
    input: str
    output: str
    batch_axis: int  # where the model keeps the batch in this tensor; the contract keeps it first
    shape: tuple[int, ...]  # per key, without the batch axis

    def own_shape(self, batch: int) -> tuple[int, ...]:
        """The shape the model itself reads for ``batch`` keys."""
        return (*self.shape[:self.batch_axis], batch, *self.shape[self.batch_axis:])


@dataclass(frozen=True)
class MappingRequest:
    """What the user pinned with flags; None / empty = guess it."""

    observation: str | None = None
    layout: str | None = None
    states: tuple[tuple[str, str], ...] = ()
    forecast: str | None = None
    scale: str | None = None


@dataclass(frozen=True)
class Mapping:
    observation: str
    layout: str
    n_features: int
    one_step_per_call: bool  # True when the model's time axis is fixed at 1 (or absent)
    states: tuple[StatePair, ...]
    forecast: str
    forecast_per_step: bool  # False: a [batch, F] forecast for the last step of the call only
    scale: str | None = None

    def flags(self) -> list[str]:
        """The flags that pin this mapping (printed, and kept in the provenance, for a reproducible adopt)."""
        out = ["--input", self.observation, "--layout", self.layout]
        for p in self.states:
            out += ["--state", f"{p.input}={p.output}"]
        out += ["--forecast", self.forecast]
        return out + (["--scale", self.scale] if self.scale else [])

    def as_dict(self) -> dict[str, Any]:
        return {
            "observation": self.observation, "layout": self.layout, "features": self.n_features,
            "states": [{"name": p.name, "input": p.input, "output": p.output, "batch_axis": p.batch_axis,
                        "shape": list(p.shape)} for p in self.states],
            "forecast": self.forecast, "forecast_per_step": self.forecast_per_step, "scale": self.scale,
        }


def resolve_mapping(source: Source, request: MappingRequest) -> tuple[Mapping, list[str]]:
    """The mapping (pinned parts as given, the rest guessed) and a line per guess made."""
    guessed: list[str] = []
    guess.refuse_non_float(source)
    in_links, out_links = recurrent_links(source.model.graph)
    pairs = [_named_pair(source, i, o) for i, o in request.states]
    if not pairs:
        pairs = guess.state_pairs(source, in_links, out_links, request, guessed)
    if not pairs:
        guess.refuse_stateless(source)
    obs = _observation(source, {i for i, _ in pairs}, request, guessed)
    guess.refuse_hidden_state(source, [i for i, _ in pairs], in_links)
    layout = request.layout or guess.layout(source, obs, [source.input(i) for i, _ in pairs], guessed)
    n_features, one_step = _check_observation(source, obs, layout)
    batch_symbol = obs.dims[_AXES[layout][0]] if obs.dims else None
    names = guess.state_names(pairs)
    states = tuple(_state_pair(source, n, i, o, batch_symbol) for n, (i, o) in zip(names, pairs, strict=True))
    taken = {o for _, o in pairs}
    forecast = source.output(request.forecast) if request.forecast else guess.forecast(
        source, taken | {request.scale or ""}, n_features, out_links, guessed)
    _check_forecast(source, forecast, obs, n_features)
    scale = source.output(request.scale) if request.scale else guess.scale(
        source, taken | {forecast.name}, forecast, guessed)
    if scale is not None:
        _check_forecast(source, scale, obs, n_features)
    per_step = forecast.rank == 3 or layout == "step"
    return Mapping(obs.name, layout, n_features, one_step, states, forecast.name, per_step,
                   scale.name if scale else None), guessed


def _named_pair(source: Source, input_name: str, output_name: str) -> tuple[str, str]:
    source.input(input_name)
    source.output(output_name)
    return input_name, output_name


def _observation(source: Source, state_inputs: set[str], request: MappingRequest, guessed: list[str]) -> TensorInfo:
    rest = [i for i in source.inputs if i.name not in state_inputs]
    if request.observation:
        obs = source.input(request.observation)
        if obs.name in state_inputs:
            msg = f"{source.path}: input {obs.name!r} is mapped both as the observation and as a state"
            raise MappingError(msg)
        rest = [i for i in rest if i.name != obs.name]
    elif len(rest) == 1:
        obs, rest = rest[0], []
        guessed.append(f"observation {obs.describe()}: the one input that is not a state")
    elif not rest:
        msg = (f"{source.path}: every input is mapped as a state, no input is left for the observation: name it with "
               "--input NAME and list only the carried states with --state IN=OUT")
        raise MappingError(msg)
    if rest:
        msg = (f"{source.path}: input(s) {', '.join(i.describe() for i in rest)} are not mapped: name the observation "
               "with --input NAME and every carried state with --state IN=OUT (rnnwatch feeds nothing else)")
        raise MappingError(msg)
    return obs


def _check_observation(source: Source, obs: TensorInfo, layout: str) -> tuple[int, bool]:
    """(number of features, whether the model takes exactly one step per call)."""
    if layout not in LAYOUTS:
        msg = f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}"
        raise MappingError(msg)
    want = 2 if layout == "step" else 3
    if obs.dims is None or len(obs.dims) != want:
        msg = (f"{source.path}: observation {obs.describe()} does not fit --layout {layout} (rank {want}); adopt reads "
               "[batch, time, F] (batch-first), [time, batch, F] (sequence-first) or [batch, F] (step)")
        raise MappingError(msg)
    n_features, (batch_axis, time_axis) = obs.dims[-1], _AXES[layout]
    if not isinstance(n_features, int):
        msg = f"{source.path}: the feature axis of {obs.describe()} is not fixed: adopt needs the number of features"
        raise MappingError(msg)
    if isinstance(obs.dims[batch_axis], int):
        msg = (f"{source.path}: {obs.describe()} has a fixed batch size {obs.dims[batch_axis]}: the runtime steps many "
               f"keys per call; re-export with a dynamic batch axis (torch: dynamic_axes={{'{obs.name}': "
               f"{{{batch_axis}: 'batch'}}}} and the same for every state and output)")
        raise FixedShapeError(msg)
    steps = None if time_axis is None else obs.dims[time_axis]
    if isinstance(steps, int) and steps != 1:
        msg = (f"{source.path}: {obs.describe()} takes exactly {steps} steps per call; the runtime gives one step "
               "per message: re-export with a dynamic time axis (or a time axis of 1)")
        raise FixedShapeError(msg)
    return n_features, steps is None or steps == 1


def _state_pair(source: Source, name: str, input_name: str, output_name: str, batch_symbol: object) -> StatePair:
    given, comes = source.input(input_name), source.output(output_name)
    dims = given.dims if given.dims is not None else comes.dims
    if dims is None:
        msg = f"{source.path}: the shape of state input {input_name!r} is not declared: adopt needs its size per key"
        raise MappingError(msg)
    if not comes.is_float:
        msg = f"{source.path}: output {output_name!r} is {comes.type_name}: it cannot carry the state {input_name!r}"
        raise MappingError(msg)
    if not guess.compatible(given, comes):
        msg = (f"{source.path}: --state {input_name}={output_name} pairs tensors of different shapes "
               f"({given.describe()} and {comes.describe()}): a state output must have its input's shape")
        raise MappingError(msg)
    axis = guess.batch_axis(dims, batch_symbol)
    shape = tuple(d for k, d in enumerate(dims) if k != axis)
    if not all(isinstance(d, int) and d > 0 for d in shape):
        msg = (f"{source.path}: state {given.describe()} has a dynamic axis besides the batch (axis {axis}): "
               "adopt needs every other axis fixed in the model's signature")
        raise FixedShapeError(msg)
    return StatePair(name, input_name, output_name, axis, tuple(int(d) for d in shape))  # type: ignore[arg-type]


def _check_forecast(source: Source, out: TensorInfo, obs: TensorInfo, n_features: int) -> None:
    ranks = (2, 3) if obs.rank == 3 else (2,)
    if not out.is_float or (out.rank is not None and out.rank not in ranks):
        msg = (f"{source.path}: output {out.describe()} ({out.type_name}) cannot be a forecast of {obs.describe()}: "
               f"expected float32 of rank {' or '.join(map(str, ranks))}")
        raise MappingError(msg)
    last = out.dims[-1] if out.dims else None
    if isinstance(last, int) and last != n_features:
        msg = (f"{source.path}: output {out.describe()} has {last} feature(s), the observation {n_features}: a "
               "forecast predicts the next observation, every feature of it (pass --forecast NAME for another output)")
        raise MappingError(msg)

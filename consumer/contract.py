"""The step-model contract (DESIGN §2): what an ONNX file must look like for rnnwatch to run it.

One ONNX graph computes **one time step for a batch of keys**:

* input ``x``: float32 ``[batch, n_features]``, raw feature values in message units;
* inputs ``state_in.<name>`` and outputs ``state_out.<name>``: float32 ``[batch, *shape]``, one pair per
  state tensor (hidden/cell vectors, delay lines, step counters, running normalisers ...);
* output ``forecast``: float32 ``[batch, n_features]``, the expected *next* ``x``;
* optional outputs ``forecast_scale`` (predicted std of the next ``x``, message units, > 0) and
  ``score`` (``[batch]`` or ``[batch, 1]``, a model-computed anomaly score in [0, 1] for this step; reserved for
  reconstruction-style scorers: this runtime reads it only to reset a key whose output is not finite, no scorer
  uses its value yet);
* the batch dimension is dynamic (symbolic), every other dimension is static.

Metadata (``metadata_props``, every value a JSON document unless said otherwise):

========================  =====================================================================
key                       value
========================  =====================================================================
``rnnwatch.contract``     ``"1"`` (plain string): the contract version
``rnnwatch.model``        ``{"name", "version", "architecture", "description"?}``
``rnnwatch.features``     ``[{"name": "price", "domain": "positive" | "nonnegative" | "real"}]``
                          in ``x`` column order; ``domain`` is what the graph's transform accepts
``rnnwatch.state``        ``[{"name": "h", "shape": [32], "init": 0.0}]``; ``init`` is a number
                          (fill value) or a nested list of exactly ``shape``
``rnnwatch.scoring``      ``{"warmup_steps": int >= 0, "threshold": float in (0, 1),
                          "halflife_steps": float > 0, "residual_std": [float > 0 per feature],
                          optional "scorer": spec ("novelty+likelihood"), "scorer_options": {...},
                          "threshold_surprise": float > 0 (calibrated -log10 tail)}``
``rnnwatch.provenance``   free-form object: data, rows, train_rows, trained_at, seed, tool versions,
                          parity tolerance achieved ...
========================  =====================================================================

:func:`load_signature` reads and checks all of it through onnxruntime (no ``onnx`` package needed at
run time) and raises :class:`~rnnwatch.consumer.errors.ModelError` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnwatch.consumer.errors import ModelError

__all__ = [
    "CONTRACT_VERSION",
    "FEATURE_DOMAINS",
    "META_CONTRACT",
    "META_FEATURES",
    "META_MODEL",
    "META_PROVENANCE",
    "META_SCORING",
    "META_STATE",
    "FeatureSpec",
    "ScoringDefaults",
    "StateTensor",
    "StepSignature",
    "load_signature",
    "signature_from_session",
]

CONTRACT_VERSION = "1"
META_CONTRACT = "rnnwatch.contract"
META_MODEL = "rnnwatch.model"
META_FEATURES = "rnnwatch.features"
META_STATE = "rnnwatch.state"
META_SCORING = "rnnwatch.scoring"
META_PROVENANCE = "rnnwatch.provenance"

INPUT_X = "x"
STATE_IN = "state_in."
STATE_OUT = "state_out."
OUTPUT_FORECAST = "forecast"
OUTPUT_SCALE = "forecast_scale"
OUTPUT_SCORE = "score"
FEATURE_DOMAINS = ("positive", "nonnegative", "real")


@dataclass(frozen=True)
class FeatureSpec:
    """One column of ``x``: the message field it is read from and the values the graph accepts."""

    name: str
    domain: str = "real"


@dataclass(frozen=True)
class StateTensor:
    """One state tensor of a loaded model, carried per key; ``shape`` excludes the batch dimension.

    The training side's :class:`rnnwatch.export.StateSpec` declares a state (``init`` a fill value); this is what
    the runtime reads back from a model's metadata (``init`` the full initial array).
    """

    name: str
    shape: tuple[int, ...]
    init: np.ndarray = field(compare=False, repr=False)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class ScoringDefaults:
    """Scorer defaults calibrated on held-out training residuals; settings may override them."""

    warmup_steps: int
    threshold: float
    halflife_steps: float
    residual_std: tuple[float, ...]
    # The default scorer spec and its calibrated surprise threshold (-log10 tail). A model without them (made
    # before scorers were pluggable) gets "gaussian" with the surprise of its [0, 1] threshold: the scorer its
    # threshold was calibrated for.
    scorer: str = "gaussian"
    scorer_options: Mapping[str, Any] = field(default_factory=dict)
    threshold_surprise: float | None = None


@dataclass(frozen=True)
class StepSignature:
    """Everything the runtime knows about a model: read once at start-up, immutable after."""

    path: str
    sha256: str
    name: str
    version: str
    architecture: str
    features: tuple[FeatureSpec, ...]
    states: tuple[StateTensor, ...]
    scoring: ScoringDefaults
    has_forecast_scale: bool
    has_score: bool
    provenance: Mapping[str, Any]
    description: str = ""
    # The exact bytes that were validated and hashed: the runtime builds its session from these, never from
    # ``path`` again (a file swapped in between must not run under the old identity).
    model_bytes: bytes = field(default=b"", repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def state_bytes_per_key(self) -> int:
        """Bytes of model state one key costs in the state table (float32)."""
        return sum(s.size for s in self.states) * 4

    @property
    def identity(self) -> str:
        """What a state snapshot must match to be restored: the exact file and its state layout."""
        layout = ";".join(f"{s.name}:{'x'.join(map(str, s.shape))}" for s in self.states)
        return f"{self.sha256[:16]}/{hashlib.sha256(layout.encode()).hexdigest()[:8]}"


def load_signature(path: str | Path) -> StepSignature:
    """Open ``path`` with onnxruntime and check it against the contract; raise ModelError if it breaks it."""
    import onnxruntime as ort  # local: keeps `import rnnwatch.consumer.contract` cheap

    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        msg = f"model file {p} {what} (pass --model PATH to an exported .onnx step model)"
        raise ModelError(msg)
    data = p.read_bytes()
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for any unreadable file
        msg = f"{p} is not a loadable ONNX model ({type(exc).__name__}: {exc}); export one with `rnnwatch export`"
        raise ModelError(msg) from exc
    return signature_from_session(session, str(p), hashlib.sha256(data).hexdigest(), model_bytes=data)


def signature_from_session(session: Any, path: str, sha256: str, *, model_bytes: bytes = b"") -> StepSignature:
    """Check an already-open onnxruntime session; split out so tests can build models in memory.

    Pass the ``model_bytes`` the session was built from to run the signature (see :class:`StepModel`).
    """
    meta = dict(session.get_modelmeta().custom_metadata_map)
    version = meta.get(META_CONTRACT)
    if version is None:
        msg = (
            f"{path} has no rnnwatch metadata ({META_CONTRACT} is missing): it is an ONNX model but not a "
            "step model; export it with `rnnwatch export` or `rnnwatch.export.export_step_model`"
        )
        raise ModelError(msg)
    if version != CONTRACT_VERSION:
        msg = f"{path} follows step contract v{version}; this rnnwatch reads v{CONTRACT_VERSION}: re-export it"
        raise ModelError(msg)
    model = _json_meta(meta, META_MODEL, path, dict)
    features = _parse_features(_json_meta(meta, META_FEATURES, path, list), path)
    states = _parse_states(_json_meta(meta, META_STATE, path, list), path)
    scoring = _parse_scoring(_json_meta(meta, META_SCORING, path, dict), len(features), path)
    provenance = _json_meta(meta, META_PROVENANCE, path, dict) if META_PROVENANCE in meta else {}
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    _check_io(inputs, outputs, features, states, path)
    for key in ("name", "version", "architecture"):
        if not isinstance(model.get(key), str) or not model[key]:
            msg = f"{path}: {META_MODEL} needs a non-empty string {key!r}"
            raise ModelError(msg)
    return StepSignature(
        path=path,
        sha256=sha256,
        name=model["name"],
        version=model["version"],
        architecture=model["architecture"],
        description=str(model.get("description", "")),
        features=features,
        states=states,
        scoring=scoring,
        has_forecast_scale=OUTPUT_SCALE in outputs,
        has_score=OUTPUT_SCORE in outputs,
        provenance=provenance,
        model_bytes=model_bytes,
    )


def _json_meta(meta: Mapping[str, str], key: str, path: str, kind: type) -> Any:
    if key not in meta:
        msg = f"{path}: metadata {key} is missing (required by step contract v{CONTRACT_VERSION})"
        raise ModelError(msg)
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as exc:
        msg = f"{path}: metadata {key} is not valid JSON ({exc})"
        raise ModelError(msg) from exc
    if not isinstance(value, kind):
        msg = f"{path}: metadata {key} must be a JSON {'object' if kind is dict else 'array'}"
        raise ModelError(msg)
    return value


def _parse_features(raw: Sequence[Any], path: str) -> tuple[FeatureSpec, ...]:
    if not raw:
        msg = f"{path}: {META_FEATURES} is empty: a model needs at least one input feature"
        raise ModelError(msg)
    specs = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            msg = f"{path}: every entry of {META_FEATURES} needs a string 'name', got {item!r}"
            raise ModelError(msg)
        domain = item.get("domain", "real")
        if domain not in FEATURE_DOMAINS:
            msg = f"{path}: feature {item['name']!r} has domain {domain!r}; use one of {FEATURE_DOMAINS}"
            raise ModelError(msg)
        specs.append(FeatureSpec(item["name"], domain))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        msg = f"{path}: {META_FEATURES} names a feature twice: {names}"
        raise ModelError(msg)
    return tuple(specs)


def _parse_states(raw: Sequence[Any], path: str) -> tuple[StateTensor, ...]:
    specs = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            msg = f"{path}: every entry of {META_STATE} needs a string 'name', got {item!r}"
            raise ModelError(msg)
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
            msg = f"{path}: state {item['name']!r} needs 'shape' as a list of positive ints, got {shape!r}"
            raise ModelError(msg)
        init = np.asarray(item.get("init", 0.0), dtype=np.float32)
        if init.ndim == 0:
            init = np.full(shape, init, dtype=np.float32)
        if init.shape != tuple(shape):
            msg = f"{path}: state {item['name']!r} init has shape {list(init.shape)}, expected {shape}"
            raise ModelError(msg)
        specs.append(StateTensor(item["name"], tuple(shape), init))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        msg = f"{path}: {META_STATE} names a state tensor twice: {names}"
        raise ModelError(msg)
    return tuple(specs)


def _parse_scoring(raw: Mapping[str, Any], n_features: int, path: str) -> ScoringDefaults:
    try:
        defaults = ScoringDefaults(
            warmup_steps=int(raw["warmup_steps"]),
            threshold=float(raw["threshold"]),
            halflife_steps=float(raw["halflife_steps"]),
            residual_std=tuple(float(v) for v in raw["residual_std"]),
            scorer=str(raw.get("scorer", "gaussian")),
            scorer_options=dict(raw.get("scorer_options", {})),
            threshold_surprise=None if raw.get("threshold_surprise") is None else float(raw["threshold_surprise"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        msg = (
            f"{path}: {META_SCORING} needs warmup_steps, threshold, halflife_steps and residual_std "
            f"({type(exc).__name__}: {exc})"
        )
        raise ModelError(msg) from exc
    if defaults.warmup_steps < 0 or not 0.0 < defaults.threshold < 1.0 or defaults.halflife_steps <= 0:
        msg = f"{path}: {META_SCORING} out of range: {dict(raw)} (threshold in (0,1), warmup >= 0, halflife > 0)"
        raise ModelError(msg)
    _check_scorer(defaults, path)
    if len(defaults.residual_std) != n_features or min(defaults.residual_std) <= 0:
        msg = f"{path}: {META_SCORING}.residual_std needs {n_features} positive value(s), got {defaults.residual_std}"
        raise ModelError(msg)
    return defaults


def _check_scorer(defaults: ScoringDefaults, path: str) -> None:
    from rnnwatch.consumer.scoring import parse_options, parse_spec

    try:
        parse_options(dict(defaults.scorer_options), parse_spec(defaults.scorer))
    except ValueError as exc:
        msg = f"{path}: {META_SCORING}: {exc}"
        raise ModelError(msg) from exc
    if defaults.threshold_surprise is not None and not defaults.threshold_surprise > 0:
        msg = f"{path}: {META_SCORING}.threshold_surprise must be > 0, got {defaults.threshold_surprise}"
        raise ModelError(msg)


def _check_io(
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    features: Sequence[FeatureSpec],
    states: Sequence[StateTensor],
    path: str,
) -> None:
    n = len(features)
    _check_tensor(inputs, INPUT_X, (n,), path, "input")
    _check_tensor(outputs, OUTPUT_FORECAST, (n,), path, "output")
    if OUTPUT_SCALE in outputs:
        _check_tensor(outputs, OUTPUT_SCALE, (n,), path, "output")
    if OUTPUT_SCORE in outputs:
        shape = outputs[OUTPUT_SCORE].shape
        _check_tensor(outputs, OUTPUT_SCORE, tuple(1 for _ in shape[1:]), path, "output")
    for spec in states:
        _check_tensor(inputs, STATE_IN + spec.name, spec.shape, path, "input")
        _check_tensor(outputs, STATE_OUT + spec.name, spec.shape, path, "output")
    known_in = {INPUT_X} | {STATE_IN + s.name for s in states}
    known_out = {OUTPUT_FORECAST, OUTPUT_SCALE, OUTPUT_SCORE} | {STATE_OUT + s.name for s in states}
    extra_in = sorted(set(inputs) - known_in)
    extra_out = sorted(set(outputs) - known_out)
    if extra_in or extra_out:
        msg = (
            f"{path}: graph has names the contract does not know: inputs {extra_in}, outputs {extra_out}; "
            f"every state tensor must be declared in {META_STATE} and named state_in.<name>/state_out.<name>"
        )
        raise ModelError(msg)


def _check_tensor(
    io: Mapping[str, Any], name: str, per_key_shape: tuple[int, ...], path: str, kind: str
) -> None:
    if name not in io:
        msg = f"{path}: the graph has no {kind} {name!r} (required by step contract v{CONTRACT_VERSION})"
        raise ModelError(msg)
    arg = io[name]
    if arg.type != "tensor(float)":
        msg = f"{path}: {kind} {name!r} is {arg.type}, must be tensor(float) (float32)"
        raise ModelError(msg)
    shape = list(arg.shape)
    if len(shape) != 1 + len(per_key_shape):
        msg = f"{path}: {kind} {name!r} has rank {len(shape)}, expected [batch, {', '.join(map(str, per_key_shape))}]"
        raise ModelError(msg)
    if isinstance(shape[0], int):
        msg = f"{path}: {kind} {name!r} has a fixed batch dimension {shape[0]}; export it with a dynamic batch axis"
        raise ModelError(msg)
    for got, want in zip(shape[1:], per_key_shape, strict=True):
        if isinstance(got, int) and got != want:
            msg = f"{path}: {kind} {name!r} has shape {shape}, expected [batch, {', '.join(map(str, per_key_shape))}]"
            raise ModelError(msg)

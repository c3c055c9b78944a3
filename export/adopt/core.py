"""`rnnwatch adopt`: an existing recurrent ONNX model becomes a step model, proved and calibrated, without torch.

1. read the model; refuse what cannot be stepped (``source.py``, ``guess.py``);
2. resolve the mapping, guessing what was not pinned (``mapping.py``);
3. run the original over ``--data`` (when given) for its held-out residual statistics (``reference.py``);
4. wrap it in the step graph with the transform it was trained on (``wrap.py``);
5. prove parity, original vs step graph (``parity.py``);
6. calibrate the threshold on the held-out rows through the runtime's own scorer, with the same function as
   `rnnwatch train` (``rnnwatch.export.calibrate``);
7. the runtime's own contract check; only then does the file appear at ``--output``.

Held-out rows: ``--data`` should hold rows the model was not trained on. As in `train`, the last 20 % of
each series give the residual statistics and set the threshold; the rows before warm the scorer up.
Without ``--data`` the proof runs on synthetic sequences, the threshold stays at the provisional 0.9999,
the transform's ``forecast_scale`` assumes normalised residuals of std 1 (the runtime's per-key normaliser
adapts from there), and ``residual_std`` is ``--residual-std``, else the transform's std, else 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from rnnwatch.consumer.contract import FEATURE_DOMAINS
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.export.adopt.mapping import Mapping, MappingRequest, resolve_mapping
from rnnwatch.export.adopt.parity import StepShape, explain_failures, prove_parity
from rnnwatch.export.adopt.reference import Reference
from rnnwatch.export.adopt.source import RECURRENT_OPS, Source, load_source
from rnnwatch.export.adopt.transform import TransformSpec
from rnnwatch.export.adopt.wrap import build_step_model, state_specs
from rnnwatch.export.calibrate import (
    HOLDOUT,
    PROVISIONAL_THRESHOLD,
    calibrate_scoring,
    default_scorer,
    holdout_start,
)
from rnnwatch.export.data import Series, load_series
from rnnwatch.export.proven import proven_model
from rnnwatch.export.signature import Scoring, StepSignatureSpec
from rnnwatch.export.validate import _sequences as synthetic_sequences

__all__ = ["AdoptOptions", "AdoptResult", "adopt_model"]

_BATCH = 5  # keys per parity sequence, as the exporter's proof


@dataclass(frozen=True)
class AdoptOptions:
    source: Path
    output: Path
    transform: str  # none, log-return, diff or level: what the model was trained on
    mapping: MappingRequest = field(default_factory=MappingRequest)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    features: tuple[str, ...] = ()  # name[:domain], in the model's feature order
    data: Path | None = None
    columns: tuple[str, ...] = ()
    key_column: str = ""
    time_column: str = ""
    name: str = ""
    version: str = "1"
    warmup_steps: int = 20
    halflife_steps: float = 250.0
    residual_std: tuple[float, ...] = ()
    adopted_at: str = ""


@dataclass(frozen=True)
class AdoptResult:
    path: Path
    mapping: Mapping
    guessed: tuple[str, ...]
    spec: StepSignatureSpec
    parity: dict[str, float]
    holdout_rows: int  # 0: not calibrated (no --data)


@dataclass(frozen=True)
class _Holdout:
    series: list[Series]
    sha256: str
    resid_std: np.ndarray  # normalised one-step residual std [F] (the transform's forecast_scale)
    residual_std: np.ndarray  # message units [F]
    rows: int


def adopt_model(options: AdoptOptions, report: Callable[[str], None] = lambda _line: None) -> AdoptResult:
    """Write the step model for ``options`` (see the module docstring); ``report`` hears each guess as it is made."""
    source = load_source(options.source)
    mapping, guessed = resolve_mapping(source, options.mapping)
    for line in guessed:
        report(f"guessed  {line}")
    report(f"mapping  {' '.join(mapping.flags())}")
    transform = TransformSpec.create(options.transform, mapping.n_features, options.mean, options.std)
    features = _features(options, mapping.n_features, transform)
    reference = Reference(source, mapping, transform)
    held = _holdout(options, reference, [n for n, _ in features]) if options.data else None
    if held is not None:
        reference = reference.with_transform(replace(transform, resid_std=held.resid_std))
    spec = _spec(options, source, mapping, tuple(guessed), reference.transform, features, held)
    positive = all(d == "positive" for _, d in features)
    out = Path(options.output)
    with proven_model(out) as draft:
        model = build_step_model(source, mapping, reference.transform, spec.metadata())
        onnx.save(model, draft)
        shape = StepShape(state_specs(mapping, reference.transform), spec.has_forecast_scale)
        parity = prove_parity(draft, reference, shape, _sequences(held, mapping.n_features, positive), positive)
        scorer = default_scorer("positive" if positive else "real")
        scoring = (calibrate_scoring(draft, [s.values for s in held.series], spec.scoring, scorer)
                   if held else replace(spec.scoring, scorer=scorer))
        spec = replace(spec, scoring=scoring,
                       provenance={**spec.provenance, "parity": {k: float(f"{v:.3g}") for k, v in parity.items()}})
        _replace_metadata(model, spec.metadata())
        onnx.save(model, draft)
    return AdoptResult(out, mapping, tuple(guessed), spec, parity, held.rows if held else 0)


def _features(options: AdoptOptions, n_features: int, transform: TransformSpec) -> list[tuple[str, str]]:
    """(name, domain) per feature: --feature, else the --column names, else ``value`` for one feature."""
    given = list(options.features) or list(options.columns) or (["value"] if n_features == 1 else [])
    if len(given) != n_features:
        msg = (f"the model reads {n_features} feature(s) per step; name each, in order, with --feature NAME[:DOMAIN] "
               f"(got {len(given)})")
        raise ConfigError(msg)
    features = []
    for item in given:
        name, _, domain = item.partition(":")
        domain = domain or transform.domain
        if domain not in FEATURE_DOMAINS or (transform.kind == "log-return" and domain != "positive"):
            allowed = "positive" if transform.kind == "log-return" else ", ".join(FEATURE_DOMAINS)
            msg = f"--feature {item}: domain {domain!r} does not fit --transform {transform.kind} (use {allowed})"
            raise ConfigError(msg)
        features.append((name, domain))
    return features


def _holdout(options: AdoptOptions, reference: Reference, names: list[str]) -> _Holdout:
    """The original's one-step residuals on the last HOLDOUT of each series, normalised and in message units."""
    assert options.data is not None  # noqa: S101 - only called with data
    columns = list(options.columns) or names
    if len(columns) != len(names):
        msg = f"--column given {len(columns)} time(s); the model reads {len(names)} feature(s) per step"
        raise ConfigError(msg)
    series, sha = load_series(options.data, columns, key_column=options.key_column,
                              time_column=options.time_column)
    normalised, message = [], []
    with explain_failures(reference.source.path, reference.mapping):
        for s in series:
            run = reference.run(s.values[None].astype(np.float32), stepwise=not reference.mapping.forecast_per_step)
            cut = holdout_start(len(s.values) - 1)  # residuals: one fewer than rows
            normalised.append((run.u[0, 1:] - run.u_hat[0, :-1])[cut:])
            message.append((s.values[1:] - run.forecast[0, :-1])[cut:])
    rows = sum(len(m) for m in message)
    return _Holdout(series, sha, np.maximum(np.concatenate(normalised).std(axis=0), 1e-6),
                    np.maximum(np.concatenate(message).std(axis=0), 1e-9), rows)


def _sequences(held: _Holdout | None, n_features: int, positive: bool) -> Callable[[int], np.ndarray]:
    """Parity sequences of a given length: evenly spread windows of the data, synthetic when none is long enough."""
    rng = np.random.default_rng(0)

    def make(length: int) -> np.ndarray:
        windows = [s.values[start:start + length] for s in (held.series if held else [])
                   for start in np.linspace(0, len(s.values) - length, 5).astype(int) if len(s.values) >= length]
        if not windows:
            return synthetic_sequences(rng, _BATCH, length, n_features, positive)
        picks = np.linspace(0, len(windows) - 1, min(_BATCH, len(windows))).round().astype(int)
        return np.stack([windows[i] for i in picks]).astype(np.float32)

    return make


def _spec(options: AdoptOptions, source: Source, mapping: Mapping, guessed: tuple[str, ...],
          transform: TransformSpec, features: list[tuple[str, str]], held: _Holdout | None) -> StepSignatureSpec:
    ops = sorted(source.node_types() & RECURRENT_OPS.keys())
    return StepSignatureSpec(
        name=options.name or source.path.stem, version=options.version,
        architecture=f"adopted:{'+'.join(ops).lower() or 'onnx'}", features=features,
        states=state_specs(mapping, transform),
        has_forecast_scale=mapping.scale is not None or transform.kind != "none",
        scoring=Scoring(warmup_steps=options.warmup_steps, threshold=PROVISIONAL_THRESHOLD,
                        halflife_steps=options.halflife_steps, residual_std=_residual_std(options, transform, held)),
        provenance=_provenance(options, source, mapping, guessed, transform, held),
        description=f"adopted from {source.path.name}",
    )


def _residual_std(options: AdoptOptions, transform: TransformSpec, held: _Holdout | None) -> tuple[float, ...]:
    n = len(transform.mean)
    if options.residual_std:
        if len(options.residual_std) not in (1, n) or min(options.residual_std) <= 0:
            msg = f"--residual-std takes 1 positive value or one per feature ({n}), got {list(options.residual_std)}"
            raise ConfigError(msg)
        return tuple(float(v) for v in np.broadcast_to(options.residual_std, (n,)))
    if held is not None:
        return tuple(float(v) for v in held.residual_std)
    return tuple(float(v) for v in (transform.std if transform.kind in ("diff", "level") else np.ones(n)))


def _provenance(options: AdoptOptions, source: Source, mapping: Mapping, guessed: tuple[str, ...],
                transform: TransformSpec, held: _Holdout | None) -> dict[str, Any]:
    import onnxruntime

    def floats(values: np.ndarray) -> list[float]:
        return [float(f"{v:.6g}") for v in values]

    model = source.model
    data: dict[str, Any] = {"data": None, "calibrated": False}
    if held is not None and options.data is not None:
        data = {"data": Path(options.data).name, "data_sha256": held.sha256, "series": len(held.series),
                "rows": sum(len(s.values) for s in held.series), "holdout_rows": held.rows,
                "holdout_fraction": HOLDOUT, "calibrated": True}
    return {
        "tool": "rnnwatch adopt", "adopted_from": source.path.name, "source_sha256": source.sha256,
        "source_producer": f"{model.producer_name} {model.producer_version}".strip(), "source_opset": source.opset,
        "mapping": mapping.as_dict(), "mapping_flags": " ".join(mapping.flags()), "guessed": list(guessed),
        "transform": transform.kind, "mean": floats(transform.mean), "std": floats(transform.std),
        "resid_std": floats(transform.resid_std), **data, "adopted_at": _adopted_at(options.adopted_at),
        "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
    }


def _adopted_at(given: str) -> str:
    if given:
        return given
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), tz=UTC) if epoch else datetime.now(tz=UTC)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _replace_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))

"""`rnnwatch train`: fit a reference architecture as a one-step-ahead forecaster and export it.

Per series (key), the first ``train_rows`` rows are used: the first 80 % to fit, the last 20 % held out
(never fitted) to pick the best epoch and to calibrate the scoring defaults *through the real runtime*
(``rnnwatch.export.calibrate``, shared with `rnnwatch adopt`), so the threshold means the same thing in production.
Normalisation constants come from the fitting rows only and are baked into the graph. A feature whose held-out
forecasts show no skill (``rnnwatch.export.skill``, ``--forecast-gate``) forecasts no change instead, and its
residual scale is measured for that forecast.
Reproducible: a fixed seed, deterministic torch kernels, one thread; ``--trained-at`` (or
``SOURCE_DATE_EPOCH``) pins the only time-dependent metadata.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.seasonal import SEASON_OPTIONS
from rnnwatch.export.calibrate import (
    HOLDOUT,
    PROVISIONAL_THRESHOLD,
    calibrate_scoring,
    calibrate_threshold,
    default_scorer,
    holdout_start,
)
from rnnwatch.export.config import TrainingConfig
from rnnwatch.export.convert import StepGraph, write_metadata, write_step_graph
from rnnwatch.export.data import Series, default_columns, load_series
from rnnwatch.export.models.base import StepModule
from rnnwatch.export.period import series_season
from rnnwatch.export.proven import proven_model
from rnnwatch.export.registry import ARCHITECTURES
from rnnwatch.export.signature import Scoring, StepSignatureSpec
from rnnwatch.export.skill import ForecastSkill, forecast_skill
from rnnwatch.export.transform import STATELESS, Transform, choose_transform, transform_series
from rnnwatch.export.validate import check_parity

__all__ = ["TrainResult", "TrainingConfig", "calibrate_threshold", "train"]

# (epoch, epochs, train loss, held-out loss, best held-out loss so far, early stop now)
EpochCallback = Callable[[int, int, float, float, float, bool], None]


@dataclass(frozen=True)
class TrainResult:
    path: Path
    spec: StepSignatureSpec
    parity: dict[str, float]
    skill: ForecastSkill  # the forecast-skill gate's decision per feature (also in the provenance)


def train(config: TrainingConfig) -> TrainResult:
    """Train per ``config`` (`rnnwatch train` parses its flags into one) and write the step model."""
    arch = ARCHITECTURES.get(config.arch)
    if arch is None:
        msg = f"--arch {config.arch!r} is not one of {', '.join(ARCHITECTURES)}"
        raise ConfigError(msg)
    _seed_everything(config.seed)
    columns, key_column, time_column = default_columns(config.input, list(config.columns) or None, config.key_column,
                                                       config.time_column)
    series, sha = load_series(config.input, columns, key_column=key_column, time_column=time_column,
                              rows=config.train_rows)
    kind = choose_transform(config.transform, [s.values for s in series])
    fit_parts, hold_parts, mean, std = _normalise(series, kind)
    model = arch.build(len(columns), config.options, config.seed)
    if arch.fit == "ridge":
        epochs, best = _fit_ridge(model, fit_parts), 0.0
    else:
        epochs, best = _fit_backprop(model, fit_parts, hold_parts, config, on_epoch=_progress_printer())
    pred, target = _holdout_predictions(model, fit_parts, hold_parts)
    skill = forecast_skill(pred, target, config.forecast_gate)
    resid = _residual_std(target - skill.weight * pred)  # the scale of the forecast the graph will make
    graph = StepGraph(model, Transform(kind, mean, std, resid, skill.weight))
    spec = _spec(config, arch.name, columns, graph, kind, series, sha, epochs, best, model)
    spec = _with_provenance(spec, forecast_skill=skill.provenance())
    season = series_season([(s.values, s.event_ms) for s in series])
    period = season.get("period", 0)
    scorer = config.scorer if config.scorer and config.scorer != "auto" else default_scorer(graph.transform.domain,
                                                                                                period)
    if period:  # the scorer deseasons the residual (consumer.seasonal), whichever detectors it runs; the draft
        # names its scorer so that calibration scores with the season (metadata holds options with a scorer only)
        spec = replace(spec, scoring=replace(spec.scoring, scorer=scorer, scorer_options={
            **spec.scoring.scorer_options, SEASON_OPTIONS: season}))
    out = Path(config.output)
    with proven_model(out) as draft:
        write_step_graph(graph, draft, spec)
        scoring = calibrate_scoring(draft, [s.values for s in series], spec.scoring, scorer, config.target_rate,
                                    [s.event_ms for s in series])
        parity = check_parity(draft, graph)
        final = _with_provenance(replace(spec, scoring=scoring), target_false_alarm_rate=config.target_rate,
                                 parity={k: float(f"{v:.3g}") for k, v in parity.items()})
        write_metadata(draft, final)
    return TrainResult(out, final, parity, skill)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def _normalise(series: list[Series], kind: str) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Normalised inputs per series, split into fit / held-out parts; mean and std from fit rows only."""
    transformed = [transform_series(kind, s.values) for s in series]
    skip = 0 if kind in STATELESS else 1  # the first step of a stateful transform is a fixed 0
    cut = [_fit_rows(len(z)) for z in transformed]
    fit_rows = np.concatenate([z[skip:c] for z, c in zip(transformed, cut, strict=True)])
    mean, std = fit_rows.mean(axis=0), np.maximum(fit_rows.std(axis=0), 1e-12)
    normed = [((z - mean) / std).astype(np.float32) for z in transformed]
    return ([u[:c] for u, c in zip(normed, cut, strict=True)], [u[c - 1:] for u, c in zip(normed, cut, strict=True)],
            mean, std)


def _fit_rows(n: int) -> int:
    """Rows of a series of ``n`` that are fitted (never fewer than 2: a window needs an input and a target)."""
    return max(2, holdout_start(n))


def _windows(parts: list[np.ndarray], length: int) -> torch.Tensor:
    out = []
    for u in parts:
        if len(u) < 3:
            continue
        w = min(length, len(u) - 1)
        for start in range(0, len(u) - w, max(1, w // 2)):
            out.append(u[start:start + w + 1])
    width = min(len(o) for o in out)
    return torch.from_numpy(np.stack([o[:width] for o in out]))


def _progress_printer() -> EpochCallback | None:
    """Per-epoch lines on stderr when it is a terminal; nothing when piped or redirected (logs, CI)."""
    if not sys.stderr.isatty():
        return None

    def show(epoch: int, epochs: int, loss: float, held_out: float, best: float, stopping: bool) -> None:
        mark = "  *best" if held_out <= best else ""
        stop = "  early stop: no better held-out loss for 5 epochs" if stopping else ""
        print(f"epoch {epoch:>3}/{epochs}  loss {loss:.5f}  held-out {held_out:.5f}{mark}{stop}", file=sys.stderr,
              flush=True)

    return show


def _fit_backprop(model: StepModule, fit: list[np.ndarray], hold: list[np.ndarray],
                  config: TrainingConfig, on_epoch: EpochCallback | None = None) -> tuple[int, float]:
    """Adam on windows (truncated BPTT), best epoch by held-out loss, early stop after 5 bad epochs.

    ``on_epoch(epoch, epochs, train_loss, held_out_loss, best_held_out, stopping)`` after each epoch.
    """
    train_w, hold_w = _windows(fit, config.window), _windows(hold, config.window)
    burn = min(8, train_w.shape[1] // 4)  # windows start from a zero state: don't score the warm-up
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    best, best_state, bad, epoch = float("inf"), None, 0, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, batches = 0.0, 0
        for idx in torch.randperm(len(train_w), generator=gen).split(config.batch_size):
            w = train_w[idx]
            loss = torch.mean((model.forward_sequence(w[:, :-1])[:, burn:] - w[:, 1 + burn:]) ** 2)
            total, batches = total + float(loss.detach()), batches + 1
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        model.eval()
        with torch.no_grad():
            val = float(torch.mean((model.forward_sequence(hold_w[:, :-1])[:, burn:] - hold_w[:, 1 + burn:]) ** 2))
        if val < best - 1e-6:
            best, bad = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        if on_epoch is not None:
            on_epoch(epoch, config.epochs, total / max(batches, 1), val, best, bad >= 5)
        if bad >= 5:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return epoch, best


def _fit_ridge(model: StepModule, fit: list[np.ndarray]) -> int:
    """Closed-form readout (echo state networks): the module fits itself on the normalised fit rows."""
    fit_readout = getattr(model, "fit_readout", None)
    if fit_readout is None:
        msg = f"{type(model).__name__} has no fit_readout() for ridge fitting"
        raise TypeError(msg)
    fit_readout(fit)
    return 1


def _holdout_predictions(model: StepModule, fit: list[np.ndarray],
                         hold: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, targets) [N, F] of every held-out row, normalised, float32; each series' state carried in
    from its fit rows. What the skill gate and the residual scale are measured on."""
    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for f, h in zip(fit, hold, strict=True):
            u = torch.from_numpy(np.concatenate([f[:-1], h]))[None]
            preds.append(model.forward_sequence(u[:, :-1])[0].numpy()[len(f) - 1:])
            targets.append(u[0, len(f):].numpy())
    return np.concatenate(preds), np.concatenate(targets)


def _residual_std(residuals: np.ndarray) -> np.ndarray:
    """Std of normalised one-step residuals [N, F] per feature (floored: the scale is divided by)."""
    return np.maximum(residuals.std(axis=0), 1e-6).astype(np.float32)


def _spec(config: TrainingConfig, arch: str, columns: list[str], graph: StepGraph, kind: str,
          series: list[Series], sha: str, epochs: int, best: float, model: StepModule) -> StepSignatureSpec:
    assert graph.transform is not None  # noqa: S101 - train always builds a transform
    rows = sum(len(s.values) for s in series)
    fit_rows = sum(_fit_rows(len(s.values)) for s in series)
    provenance: dict[str, Any] = {
        "data": Path(config.input).name, "data_sha256": sha, "series": len(series), "rows": rows,
        "fit_rows": fit_rows, "holdout_rows": rows - fit_rows, "holdout_fraction": HOLDOUT,
        "trained_at": _trained_at(config), "seed": config.seed, "transform": kind,
        "epochs": epochs, "best_holdout_mse": round(best, 6), "window": config.window, "lr": config.lr,
        "hyperparameters": model.hyperparameters(), "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__, "trainer": "rnnwatch train",
    }
    residual_std = tuple(float(v) for v in _message_residual_std(graph, series))
    return StepSignatureSpec(
        name=config.name or f"{Path(config.input).stem}-{arch}", version=config.model_version, architecture=arch,
        features=[(c, graph.transform.domain) for c in columns], states=graph.state_spec(),
        scoring=Scoring(warmup_steps=config.warmup_steps, threshold=PROVISIONAL_THRESHOLD,
                        halflife_steps=config.halflife_steps, residual_std=residual_std),
        provenance=provenance,
    )


def _message_residual_std(graph: StepGraph, series: list[Series]) -> np.ndarray:
    """Held-out one-step residual std in message units (the scale used if forecast_scale is absent)."""
    out = []
    with torch.no_grad():
        for s in series:
            xs = torch.from_numpy(s.values.astype(np.float32))[None]
            forecast = graph.forward_sequence(xs)[0, :-1].numpy()
            res = s.values[1:] - forecast
            out.append(res[holdout_start(len(res)):])
    return np.maximum(np.concatenate(out).std(axis=0), 1e-9)


def _trained_at(config: TrainingConfig) -> str:
    if config.trained_at:
        return config.trained_at
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), tz=UTC) if epoch else datetime.now(tz=UTC)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _with_provenance(spec: StepSignatureSpec, **extra: Any) -> StepSignatureSpec:
    return replace(spec, provenance={**spec.provenance, **extra})


"""Python API for exporting your own module (the `rnnwatch export` command uses it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.export.convert import StepGraph, export_step_model
from rnnwatch.export.models.base import StepModule
from rnnwatch.export.signature import Scoring, StepSignatureSpec

__all__ = ["export_user_module"]


def export_user_module(module: StepModule, path: str | Path, *, name: str, version: str = "1",
                       features: Sequence[tuple[str, str]], residual_std: Sequence[float] | None = None,
                       threshold: float = 0.9999, warmup_steps: int = 20, halflife_steps: float = 250.0,
                       provenance: dict[str, object] | None = None) -> dict[str, float]:
    """Export a StepModule that works in message units (its own transform inside, if any).

    The graph has no ``forecast_scale`` output, so the runtime scales residuals by ``residual_std`` (per
    feature, message units) and adapts per key from there. Parity is proven as for reference models.
    """
    if len(features) != module.n_features:
        msg = f"{len(features)} feature(s) given, the module has n_features={module.n_features}"
        raise ConfigError(msg)
    graph = StepGraph(module, transform=None)
    stds = tuple(residual_std or [1.0] * module.n_features)
    spec = StepSignatureSpec(
        name=name, version=version, architecture=f"custom:{type(module).__name__}", features=list(features),
        states=graph.state_spec(), has_forecast_scale=False,
        scoring=Scoring(warmup_steps=warmup_steps, threshold=threshold, halflife_steps=halflife_steps,
                        residual_std=stds),
        provenance={"exporter": "rnnwatch export", **(provenance or {})},
    )
    return export_step_model(graph, path, spec)

"""Declarative step signature: names, state specs and metadata exactly as the runtime contract reads them.

The contract itself lives in ``rnnwatch.consumer.contract`` (the runtime owns it); this module only builds
what it checks, from the same constants. It imports no torch: ``rnnwatch adopt`` uses it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rnnwatch.consumer import contract as c

__all__ = ["DOMAIN", "PREV", "SEEN", "TRANSFORMS", "Scoring", "StateSpec", "StepSignatureSpec"]

# The input transforms a step graph can carry (export/transform.py in torch, export/adopt/transform.py in ONNX),
# the feature domain each accepts, and the state names of their memory (prefixed: never a model's own names).
TRANSFORMS = ("log-return", "diff", "level", "sqrt")
DOMAIN = {"log-return": "positive", "diff": "real", "level": "real", "sqrt": "nonnegative"}
PREV, SEEN = "t.prev", "t.seen"


@dataclass(frozen=True)
class StateSpec:
    """One state tensor a step graph carries per key: ``shape`` without the batch axis, ``init`` a fill value.

    Lives here (no torch) so that graph builders without torch (``rnnwatch adopt``) describe state the same way.
    """

    name: str
    shape: tuple[int, ...]
    init: float = 0.0


@dataclass(frozen=True)
class Scoring:
    warmup_steps: int = 20
    threshold: float = 0.9999
    halflife_steps: float = 500.0
    residual_std: tuple[float, ...] = (1.0,)
    scorer: str = ""  # "" = not written: the runtime then uses "gaussian" with the [0, 1] threshold
    scorer_options: Mapping[str, Any] = field(default_factory=dict)
    threshold_surprise: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"warmup_steps": self.warmup_steps, "threshold": self.threshold,
                               "halflife_steps": self.halflife_steps, "residual_std": list(self.residual_std)}
        if self.scorer:
            out["scorer"] = self.scorer
            out["scorer_options"] = {k: dict(v) for k, v in self.scorer_options.items()}
        if self.threshold_surprise is not None:
            out["threshold_surprise"] = self.threshold_surprise
        return out


@dataclass(frozen=True)
class StepSignatureSpec:
    """What a step graph takes and gives, plus the metadata the runtime needs."""

    name: str
    version: str
    architecture: str
    features: Sequence[tuple[str, str]]  # (name, domain)
    states: Sequence[StateSpec]
    scoring: Scoring
    has_forecast_scale: bool = True
    provenance: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def input_names(self) -> list[str]:
        return [c.INPUT_X, *(c.STATE_IN + s.name for s in self.states)]

    @property
    def output_names(self) -> list[str]:
        scale = [c.OUTPUT_SCALE] if self.has_forecast_scale else []
        return [c.OUTPUT_FORECAST, *scale, *(c.STATE_OUT + s.name for s in self.states)]

    def metadata(self) -> dict[str, str]:
        model = {"name": self.name, "version": self.version, "architecture": self.architecture}
        if self.description:
            model["description"] = self.description
        return {
            c.META_CONTRACT: c.CONTRACT_VERSION,
            c.META_MODEL: json.dumps(model),
            c.META_FEATURES: json.dumps([{"name": n, "domain": d} for n, d in self.features]),
            c.META_STATE: json.dumps([{"name": s.name, "shape": list(s.shape), "init": s.init} for s in self.states]),
            c.META_SCORING: json.dumps(self.scoring.as_dict()),
            c.META_PROVENANCE: json.dumps(dict(self.provenance), sort_keys=True, default=str),
        }

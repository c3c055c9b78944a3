"""One resolution of the scorer choice for every command: model metadata, then overrides (DESIGN §4, §7).

`run` and `demo` (through settings), `score` and `evaluate` (through flags) all build a
:class:`ScoringOverrides` and hand it to :func:`~rnnwatch.consumer.runner.make_runner`, so a backtest and
production flag the same points for the same options. Precedence, highest first:

- threshold: ``threshold_surprise`` given, else ``threshold`` (a [0, 1] score) given, else the model's
  calibrated ``threshold_surprise``, else the surprise of the model's [0, 1] threshold;
- scorer: ``scorer`` given, else the model's default; options: the model's calibrated options for the
  chosen scorers, each overridden per option by ``scorer_options``. A scorer other than the model's default
  keeps the model's surprise threshold: every scorer reports on the same ``-log10`` tail scale.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnwatch.consumer.contract import StepSignature
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.scoring import (
    DEFAULT_INCIDENT_GAP_STEPS,
    STAGE_OPTIONS,
    ScorerConfig,
    parse_options,
    parse_spec,
)
from rnnwatch.consumer.seasonal import SEASON_OPTIONS

__all__ = ["OVERRIDE_FIELDS", "ScoringOverrides", "json_object", "scorer_config"]


def json_object(text: str | Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """Scorer options as given (JSON text, a mapping, or nothing) -> a dict; ConfigError naming ``what``.

    The one parser of the scorer-options JSON for every command (flags, settings, evaluate's ``NAME:{...}``),
    so a typo reads the same wherever it is made.
    """
    if isinstance(text, Mapping):
        return dict(text)
    try:
        value = json.loads(text) if text and text.strip() else {}
    except json.JSONDecodeError as exc:
        msg = f"{what} is not valid JSON: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(value, dict):
        msg = f"{what} must be a JSON object, got {value!r}"
        raise ConfigError(msg)
    return value


@dataclass(frozen=True)
class ScoringOverrides:
    scorer: str | None = None
    scorer_options: Mapping[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    threshold_surprise: float | None = None
    warmup_steps: int | None = None
    halflife_steps: float | None = None
    incident_gap_steps: int | None = None
    incident_updates: int | None = None

    def __post_init__(self) -> None:
        try:
            names = parse_spec(self.scorer) if self.scorer else None
            if names is not None:  # option names and values of the named scorers, checked without a model
                options = parse_options(dict(self.scorer_options), names)
                from rnnwatch.consumer.scoring import ResidualScorer

                # a season stands in for the model's (only the model knows whether it has one)
                season = {SEASON_OPTIONS: {"period": 2, **options.get(SEASON_OPTIONS, {})}}
                ResidualScorer(ScorerConfig(threshold=0.999, warmup_steps=0, halflife_steps=1.0,
                                            residual_std=np.ones(1), uses_model_scale=False, spec="+".join(names),
                                            options={**options, **season}), 1)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            msg = f"threshold must be in (0, 1), got {self.threshold}"
            raise ConfigError(msg)
        if self.threshold_surprise is not None and not self.threshold_surprise > 0:
            msg = f"threshold_surprise must be > 0 (a -log10 tail, e.g. 6 for 1e-6), got {self.threshold_surprise}"
            raise ConfigError(msg)
        if self.halflife_steps is not None and not self.halflife_steps > 0:
            msg = f"halflife_steps must be > 0, got {self.halflife_steps}"
            raise ConfigError(msg)
        for name in ("incident_gap_steps", "incident_updates", "warmup_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                msg = f"{name} must be >= 0, got {value}"
                raise ConfigError(msg)


def scorer_config(signature: StepSignature, o: ScoringOverrides) -> ScorerConfig:
    d = signature.scoring
    spec = o.scorer or d.scorer
    try:
        names = parse_spec(spec)
        model_opts = parse_options(dict(d.scorer_options), parse_spec(d.scorer))
        user_opts = parse_options(dict(o.scorer_options), names)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    options = {n: {**model_opts.get(n, {}), **user_opts.get(n, {})} for n in (*names, *STAGE_OPTIONS)}
    if o.threshold_surprise is not None:
        surprise: float | None = o.threshold_surprise
    elif o.threshold is not None:
        surprise = None
    else:
        surprise = d.threshold_surprise
    config = ScorerConfig(
        threshold=d.threshold if o.threshold is None else o.threshold,
        warmup_steps=d.warmup_steps if o.warmup_steps is None else o.warmup_steps,
        halflife_steps=d.halflife_steps if o.halflife_steps is None else o.halflife_steps,
        residual_std=np.asarray(d.residual_std, dtype=np.float32),
        uses_model_scale=signature.has_forecast_scale,
        spec="+".join(names), options=options, threshold_surprise=surprise,
        incident_gap_steps=DEFAULT_INCIDENT_GAP_STEPS if o.incident_gap_steps is None else o.incident_gap_steps,
        incident_updates=0 if o.incident_updates is None else o.incident_updates,
        domain=signature.features[0].domain if signature.features else "real",
    )
    try:
        from rnnwatch.consumer.scoring import ResidualScorer

        ResidualScorer(config, signature.n_features)  # option names and values checked once, at start-up
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return config


# The ScoringOverrides fields a flat options mapping (`evaluate --scorer-options`) may carry beside per-scorer options.
OVERRIDE_FIELDS = ("threshold", "threshold_surprise", "warmup_steps", "halflife_steps", "incident_gap_steps",
                   "incident_updates")

"""rnnwatch runtime: stream a Kafka topic through an ONNX step model, per key, and score every point.

The public API is re-exported here and loaded lazily, so ``import rnnwatch.consumer.contract`` (which the
training side does) stays cheap and never pulls in Kafka.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AnomalyEvent",
    "ConfigError",
    "ModelError",
    "RnnwatchError",
    "Service",
    "Settings",
    "StepSignature",
    "load_settings",
    "load_signature",
    "make_runner",
    "score_array",
]

_EXPORTS = {
    "AnomalyEvent": "rnnwatch.consumer.events",
    "ConfigError": "rnnwatch.consumer.errors",
    "ModelError": "rnnwatch.consumer.errors",
    "RnnwatchError": "rnnwatch.consumer.errors",
    "Service": "rnnwatch.consumer.service",
    "Settings": "rnnwatch.consumer.settings",
    "StepSignature": "rnnwatch.consumer.contract",
    "load_settings": "rnnwatch.consumer.settings",
    "load_signature": "rnnwatch.consumer.contract",
    "make_runner": "rnnwatch.consumer.runner",
    "score_array": "rnnwatch.consumer.offline",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module 'rnnwatch.consumer' has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)

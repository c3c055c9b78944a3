"""What every detector shares: the wave it sees, the protocol it implements, its option and half-life helpers.

Kept apart from ``consumer.detectors`` (the built-in detectors and their registry) so that detectors living in
their own modules (``consumer.telemanom``, ``consumer.stuck``) import this and the registry imports them:
no import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from rnnwatch.consumer.state import Column, StateTable

__all__ = ["Detector", "Wave", "alpha_of_halflife", "detector_options"]


@dataclass(frozen=True)
class Wave:
    """One wave of keys, as every detector sees it (rows aligned)."""

    x: np.ndarray  # float64 [n, F], message units
    z: np.ndarray  # float64 [n, F], residual / the model's scale; 0 where not valid
    valid: np.ndarray  # bool [n]: the key had a finite forecast to compare with
    n_features: int
    all_valid: bool = False  # valid.all(): detectors skip their masking (the common case, same numbers)
    x_finite: bool = False  # every value of x is finite
    clock: np.ndarray | None = None  # int64 [n]: position in the model's season, in rows (consumer.seasonal)


class Detector(Protocol):
    """A per-key scorer: ``columns`` it keeps in the state table, ``surprise`` (scores and learns)."""

    name: ClassVar[str]

    def columns(self) -> list[Column]: ...

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Wave) -> np.ndarray: ...


def alpha_of_halflife(halflife: float) -> float:
    """The EWMA weight whose memory halves every ``halflife`` steps.

    >>> round(alpha_of_halflife(1.0), 3)
    0.5
    """
    return float(1.0 - 0.5 ** (1.0 / halflife))


def detector_options(name: str, given: Mapping[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``given`` over ``defaults``; refuses an unknown option or a non-number where a number is expected."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        msg = f"scorer {name!r} has no option(s) {unknown}; it takes {sorted(defaults)}"
        raise ValueError(msg)
    out = {**defaults, **given}
    for key, value in out.items():
        if isinstance(defaults[key], (int, float)) and not isinstance(value, (int, float)):
            msg = f"scorer {name!r} option {key!r} must be a number, got {value!r}"
            raise ValueError(msg)
    return out

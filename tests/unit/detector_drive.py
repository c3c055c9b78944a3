"""Drive one detector over many independent keys at once: T waves of K keys (no forecaster, no tail calibration)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnwatch.consumer.detector_protocol import Wave
from rnnwatch.consumer.state import StateTable


def drive(detector: Any, z: np.ndarray) -> np.ndarray:
    """The detector's raw surprise [T, K] for residuals z [T, K] (one feature; x = z)."""
    T, K = z.shape
    table = StateTable(detector.columns(), identity="drive")
    rows, _ = table.rows_for(0, [b"k%d" % i for i in range(K)])
    out = np.zeros((T, K))
    valid = np.ones(K, dtype=bool)
    for t in range(T):
        zt = z[t][:, None].astype(np.float64)
        out[t] = detector.surprise(table, rows, Wave(zt, zt, valid, 1, all_valid=True, x_finite=True))
    return out


def first_at(surprise: np.ndarray, level: float) -> np.ndarray:
    """Per key, the first step whose surprise reaches ``level`` (len(surprise) where none does)."""
    hit = surprise >= level
    return np.where(hit.any(axis=0), hit.argmax(axis=0), len(surprise))


def last_at(surprise: np.ndarray, level: float) -> np.ndarray:
    """Per key, the last step whose surprise reaches ``level`` (-1 where none does)."""
    hit = surprise >= level
    return np.where(hit.any(axis=0), len(surprise) - 1 - hit[::-1].argmax(axis=0), -1)

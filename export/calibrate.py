"""Scoring calibration shared by `rnnwatch train` and `rnnwatch adopt`: held-out rows, the runtime's own scorer.

No torch here: `adopt` (which needs only onnx) calibrates through the same function as `train`, so a
change to how thresholds are calibrated lands in one place for both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["HOLDOUT", "PROVISIONAL_THRESHOLD", "calibrate_threshold"]

HOLDOUT = 0.2
TARGET_FALSE_ALARM_RATE = 0.001
THRESHOLD_RANGE = (0.99, 0.999999)
PROVISIONAL_THRESHOLD = 0.9999
CALIBRATION_ROUNDS = 3


def calibrate_threshold(model_path: Path, series: list[np.ndarray], warmup: int) -> float:
    """Threshold with ~0.1 % false alarms on held-out rows, scored by the runtime's own scorer.

    The runtime's per-key normaliser does not learn from points it flags, so the scores depend on the
    threshold itself: start from the provisional threshold and refine it a few times (it settles within
    one or two rounds). Scoring at a low threshold instead would freeze the normaliser on most points and
    inflate every score.
    """
    threshold = PROVISIONAL_THRESHOLD
    for _ in range(CALIBRATION_ROUNDS):
        scores = _holdout_scores(model_path, series, warmup, threshold)
        if scores.size == 0:
            return PROVISIONAL_THRESHOLD
        q = float(np.quantile(scores, 1 - TARGET_FALSE_ALARM_RATE))
        refined = float(np.clip(round(q, 6), *THRESHOLD_RANGE))
        if refined == threshold:
            break
        threshold = refined
    return threshold


def _holdout_scores(model_path: Path, series: list[np.ndarray], warmup: int, threshold: float) -> np.ndarray:
    """Runtime scores of every key's held-out rows (after warm-up), each key scored from a fresh state."""
    from rnnwatch.consumer.offline import score_array

    held = []
    for values in series:
        scores = score_array(model_path, values, threshold=threshold).scores
        held.append(scores[max(warmup + 1, int(len(values) * (1 - HOLDOUT))):])
    all_scores = np.concatenate(held)
    return all_scores[np.isfinite(all_scores)]

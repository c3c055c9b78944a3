"""Small numpy reductions for the per-wave hot path, cheaper on small waves and bit-identical.

A wave of a few keys runs every scorer operation on arrays of ~10 elements, where a numpy call costs its
fixed overhead, not its work: ``mask.all()`` and ``y.sum(axis=1)`` go through numpy's generic reduction
machinery (about 1.2-2 us each), ``count_nonzero`` and a column view do not (0.2-0.5 us). The scorer does a
few dozen such reductions per wave, so they are a visible share of a 10-key wave. Each helper returns
exactly what the expression it replaces returns (see ``tests/unit/test_waveops.py``).

>>> import numpy as np
>>> every(np.array([True, False])), row_sum(np.array([[-0.0], [2.0]])).tolist()
(False, [0.0, 2.0])
"""

from __future__ import annotations

import numpy as np

__all__ = ["any_true", "every", "row_all", "row_sum"]

_ZERO = np.array(0.0)


def every(mask: np.ndarray) -> bool:
    """``bool(mask.all())`` for a bool array."""
    return int(np.count_nonzero(mask)) == mask.size


def any_true(mask: np.ndarray) -> bool:
    """``bool(mask.any())`` for a bool array."""
    return int(np.count_nonzero(mask)) > 0


def row_all(mask: np.ndarray) -> np.ndarray:
    """``mask.all(axis=1)`` of a bool [n, F] array (with one feature, a column view of ``mask``)."""
    return mask[:, 0] if mask.shape[1] == 1 else np.logical_and.reduce(mask, axis=1)


def row_sum(y: np.ndarray) -> np.ndarray:
    """``y.sum(axis=1)`` of a float64 [n, F] array: with one feature ``0.0 + y[:, 0]``, as numpy's sum adds it
    to 0.0 (so -0.0 sums to 0.0, NaN stays NaN)."""
    out: np.ndarray = _ZERO + y[:, 0] if y.shape[1] == 1 else y.sum(axis=1)
    return out

"""Pure arithmetic of the benchmark: rates, best-of-N, ratios that carry their two numbers, percentiles.

Nothing here touches a broker, so tests/unit/test_bench_helpers.py checks it directly.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["best_run", "latency_summary", "percentile", "rate", "ratio"]


def rate(records: int, seconds: float) -> float:
    """Records per second, rounded to 0.1; 0.0 when nothing was timed (never a division by zero)."""
    return round(records / seconds, 1) if seconds > 0 and records > 0 else 0.0


def best_run(runs: Sequence[Mapping[str, Any]], key: str = "records_per_second") -> dict[str, Any]:
    """The run with the highest ``key``: a baseline kept at its best, so a ratio against it is not flattered."""
    if not runs:
        msg = "best_run needs at least one run"
        raise ValueError(msg)
    return dict(max(runs, key=lambda run: float(run[key])))


def ratio(numerator_name: str, numerator: float | None, denominator_name: str,
          denominator: float | None) -> dict[str, Any]:
    """``numerator / denominator`` with both numbers and what they are, so every ratio can be checked.

    ``value`` is None when either side is missing (a row that could not be measured) or the denominator is 0.
    """
    value = None
    if numerator is not None and denominator:
        value = round(numerator / denominator, 3)
    return {"value": value, "numerator": {"what": numerator_name, "records_per_second": numerator},
            "denominator": {"what": denominator_name, "records_per_second": denominator}}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` % of the values at or below it.

    No interpolation, so p99 of 100 samples is the 99th smallest, a value that was really observed.

    >>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50)
    3.0
    >>> percentile(list(range(1, 101)), 99)
    99
    """
    if not values:
        msg = "percentile of no values"
        raise ValueError(msg)
    if not 0 < q <= 100:
        msg = f"percentile q must be in (0, 100], got {q}"
        raise ValueError(msg)
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p90, p99 and max of latencies in milliseconds (0.1 ms resolution)."""
    if not latencies_ms:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    return {"count": len(latencies_ms),
            "p50_ms": round(percentile(latencies_ms, 50), 1),
            "p90_ms": round(percentile(latencies_ms, 90), 1),
            "p99_ms": round(percentile(latencies_ms, 99), 1),
            "max_ms": round(max(latencies_ms), 1)}


def paired(base: Callable[[], float], new: Callable[[], float], rounds: int,
           digits: int = 1) -> dict[str, float]:
    """Time two revisions alternately ``rounds`` times: medians of each and the median of the paired ratios.

    Alternating in one process puts both under the same machine load, which a sequential A then B would not.
    """
    times: dict[str, list[float]] = {"base": [], "new": []}
    for _ in range(rounds):
        times["base"].append(base())
        times["new"].append(new())
    ratios = [n / b for b, n in zip(times["base"], times["new"], strict=True)]
    return {"base_us": round(statistics.median(times["base"]), digits),
            "new_us": round(statistics.median(times["new"]), digits),
            "ratio": round(statistics.median(ratios), 3)}

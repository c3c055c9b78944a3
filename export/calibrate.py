"""Scoring calibration shared by `rnnwatch train` and `rnnwatch adopt`: held-out rows, the runtime's own scorer.

No torch here: `adopt` (which needs only onnx) calibrates through the same function as `train`, so a
change to how thresholds are calibrated lands in one place for both.

The threshold is a *surprise* (``-log10`` tail): the runtime's scorer is run over each training series from a
fresh state, exactly as in production (every detector keeps learning, so the scores do not depend on the
threshold), and its surprises on the held-out rows (never fitted; after warm-up) are pooled. A target rate
of 10^-2.5 false alarms per row asks for a quantile that a few hundred held-out rows cannot estimate
directly, so the tail is *fitted*: a calibrated surprise is exactly exponential (P(S > s) = 10^-s), and the
exceedances of any scorer's surprise over a high threshold u are close to exponential (the
peaks-over-threshold / generalised Pareto limit with shape 0), so with the top ``TAIL_FRACTION`` of the
held-out surprises, P(S > s) ~ (k/N) exp(-(s - u) / beta), beta the mean exceedance, solved for the target
rate. The runtime calibrates every detector to the key's own tail (``consumer.tailcal``), so a surprise of
-log10(rate) is what a calibrated scorer needs; the held-out rows test that (:func:`held_out_threshold`):
only when they hold significantly more exceedances than the rate allows does the tail fit raise the
threshold. That is what holds out of sample (``tests/unit/test_calibration.py``: five kinds of synthetic
series, each with the default scorer of its domain; `rnnwatch evaluate` reports it on a corpus' unlabeled,
unfitted rows: NAB 0.56e-3 alarm rows per row, the price-shock corpus 1.16e-3 / 1.47e-3 / 1.53e-3 on its seeds
0 / 1 / 2). The rate holds for keys whose residuals have about Gaussian tails; a key with heavy tails (Student-t
returns, real daily prices) gets up to twice it, since its tail calibration caps the fitted Pareto shape
(``consumer.tailcal``, README "Scorers"); the held-out rows cannot see that (150 rows of a 750-row training set
expect 0.15 alarms at 1e-3), and a threshold raised for it costs the price corpus 2-11 shipped points.

The rate is a false-alarm *budget*, not the threshold a labeled benchmark rewards most. NAB's cost model puts
its best threshold of a calibrated surprise near ``log10(A_FP ln 10 / ((A_TP + A_FN) f density))``, which
moves with the corpus' anomaly density (``rnnwatch.evaluate.false_alarms``): on NAB (2.4e-4 label windows per
row) the best corpus threshold is this calibrated 3.0, on the price-shock corpus (1.9e-3, eight times denser)
2.1, one decade of the density ratio lower, with both corpora at the documented false-alarm rate. No
label-free rule sees the density; tried on the held-out rows (a rate ratio at surprise 0.5 or 1, the tail fit
without the floor) they gain 3-5 points on prices and lose 10-33 on NAB, so the calibrated floor stands and
``--target-rate`` is the knob for a feed with denser anomalies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnwatch.consumer.scoring import DEFAULT_INCIDENT_GAP_STEPS
from rnnwatch.export.signature import Scoring

__all__ = ["HOLDOUT", "PROVISIONAL_THRESHOLD", "TARGET_FALSE_ALARM_RATE", "calibrate", "calibrate_scoring",
           "calibrate_threshold", "default_scorer", "fit_tail_threshold", "held_out_surprise", "held_out_threshold",
           "holdout_start"]

HOLDOUT = 0.2
TARGET_FALSE_ALARM_RATE = 1e-3  # alarm rows per row on data the model was not fitted on
THRESHOLD_RANGE = (0.99, 0.999999)
SURPRISE_CEILING = 12.0
PROVISIONAL_THRESHOLD = 0.9999
TAIL_FRACTION = 0.05
MIN_TAIL = 10
BETA_FLOOR = 0.1  # a surprise's tail is never thinner than this (a calibrated one has beta = 1/ln 10 = 0.43)


def holdout_start(n: int) -> int:
    """Index of the first held-out row of a series of ``n`` rows (or residuals): the last ``HOLDOUT`` of it.

    The one train / held-out split of `train` and `adopt`: fitting, the residual scale, the calibrated threshold
    and the provenance's row counts all cut here (callers add their own floor: fitting keeps at least 2 rows,
    calibration skips the warm-up).

    >>> holdout_start(100), holdout_start(99), holdout_start(1)
    (80, 79, 0)
    """
    return int(n * (1 - HOLDOUT))


def fit_tail_threshold(surprise: np.ndarray, target_rate: float = TARGET_FALSE_ALARM_RATE) -> float:
    """The surprise exceeded by ``target_rate`` of rows, from an exponential fit to the top of ``surprise``.

    >>> rng = np.random.default_rng(0)
    >>> s = -np.log10(rng.uniform(size=400))   # a perfectly calibrated scorer: P(S > s) = 10^-s
    >>> round(fit_tail_threshold(s, 1e-3), 1)  # 1e-3 asks for about 3 from 400 rows
    3.3
    >>> round(fit_tail_threshold(3 * s, 1e-3), 1)  # a tail three times too heavy: the threshold follows it
    9.8
    """
    s = np.sort(np.asarray(surprise, dtype=np.float64)[np.isfinite(surprise)])[::-1]
    n = s.size
    floor = -math.log10(target_rate)
    if n == 0:
        return floor
    k = max(MIN_TAIL, math.ceil(TAIL_FRACTION * n))
    if k / n <= target_rate or k >= n:  # enough rows to read the quantile itself (or too few to fit)
        fitted = float(np.quantile(s, 1 - target_rate))
    else:
        u = float(s[k])
        beta = max(float(np.mean(s[:k] - u)), BETA_FLOOR)
        fitted = u + beta * math.log((k / n) / target_rate)
    return float(np.clip(fitted, floor, SURPRISE_CEILING))


# The default scorer, chosen from what the training data is (label-free): positive features the trainer
# models as log-returns (prices, volumes: multiplicative series) get the model's residual, the return
# against its own recent volatility (RiskMetrics), events of one step, and `stuck`: such a series moves
# every step, so a run of exact repeats is a frozen feed (price corpus: standard 64.9 -> 71.6 swept, 48.7 ->
# 54.5 shipped; NAB unchanged or better). Other series (levels, counts with zeros, states ...) also get the
# anomaly likelihood, for sustained changes of behaviour that no single residual shows, and not `stuck`:
# holding a value is ordinary for them (NAB's rogue_agent_key_hold holds keys outside its labels).
# Fewer members cost less multiple-testing (Bonferroni log10 k) sensitivity.
# A series with a season (``export.period``) gets its residual deseasoned (``consumer.seasonal``), scored by
# `gaussian`, and `phase`: its value against the same phase of earlier periods, which catches a day of unusual
# shape that the one-step forecaster follows, and so the sustained changes `likelihood` is there for otherwise
# (one member fewer: less multiple-testing cost). Not `volatility`: it scores raw differences, and a periodic
# series' daily edges are large differences every day. NAB 18 series, swept standard, with the season:
# gaussian+likelihood+volatility 50.8, gaussian+likelihood 54.4, gaussian+likelihood+phase 66.8, gaussian+phase 71.0.
DEFAULT_SCORERS = {"positive": "gaussian+volatility+stuck+reversal", "real": "gaussian+likelihood+volatility",
                   "seasonal": "gaussian+phase"}


def default_scorer(domain: str, period: int = 0) -> str:
    """The default scorer spec for features of ``domain`` ("positive" = log-return series, else levels), or for
    a series with a season of ``period`` rows (> 0)."""
    if period > 0:
        return DEFAULT_SCORERS["seasonal"]
    return DEFAULT_SCORERS["positive" if domain == "positive" else "real"]


def calibrate_scoring(model_path: Path, series: list[np.ndarray], scoring: Scoring, scorer: str,
                      target_rate: float = TARGET_FALSE_ALARM_RATE,
                      event_ms: Sequence[np.ndarray | None] | None = None) -> Scoring:
    """``scoring`` with ``scorer`` as the model's default and its surprise threshold calibrated on held-out rows
    (``event_ms``: each series' event times, or None, as :func:`calibrate` takes them).

    The [0, 1] ``threshold`` is written too (1 - 10**-threshold_surprise, clipped to what older readers accept).
    """
    from dataclasses import replace

    surprise = calibrate(model_path, series, scoring.warmup_steps, scorer, target_rate, event_ms)
    threshold = float(np.clip(round(1 - 10 ** -surprise, 9), THRESHOLD_RANGE[0], 1 - 1e-9))
    return replace(scoring, scorer=scorer, threshold_surprise=round(surprise, 4), threshold=threshold)


def calibrate(model_path: Path, series: list[np.ndarray], warmup: int, scorer: str,
              target_rate: float = TARGET_FALSE_ALARM_RATE,
              event_ms: Sequence[np.ndarray | None] | None = None) -> float:
    """Surprise threshold of ``scorer`` giving ``target_rate`` false alarms per held-out row.

    ``event_ms``: each series' event times (None: rows without meaningful times). The held-out rows are scored
    as `run` scores them: a model with a season places each row in it by its event time, so a gap in the
    training rows does not shift the phases of the rows after it (counted by rows, it did, and the held-out
    rows of a seasonal series with gaps were scored against the wrong phases).
    """
    return held_out_threshold(held_out_surprise(model_path, series, warmup, scorer, event_ms), target_rate)


def held_out_threshold(surprise: np.ndarray | Sequence[np.ndarray], target_rate: float = TARGET_FALSE_ALARM_RATE,
                       significance: float = 0.01) -> float:
    """-log10(target_rate), raised to the tail fit only when the held-out rows *prove* a heavier tail.

    ``surprise``: the held-out rows' surprises, one array per key (or one array: one key).

    The runtime calibrates each key's surprise to its own tail, so -log10(rate) is the threshold for the
    rate; a few hundred held-out rows mostly add noise to it (measured on NAB and the price corpus: the fitted
    per-model thresholds shipped 6-8 points worse than the calibrated floor). So the floor stands unless the
    held-out rows hold more *bursts* over it than a Poisson(N * rate) count would give with probability
    ``significance``; then the tail fit (:func:`fit_tail_threshold`) sets it. Bursts, not rows: rows over a
    threshold cluster (one event spans several rows, as the runtime's incidents do, ``gap`` rows apart at
    most), so rows are not Poisson and a single burst would pass for a heavier tail (an AR(1) level's 7 alarm
    rows in 3 bursts raised its threshold to 3.88, 10^-4 alarm rows per unseen row where the floor gives
    7·10^-4). Under a calibrated tail the bursts number at most the rows' expected N * rate (runs declustering,
    Coles 2001, *An introduction to statistical modeling of extreme values*, §5.3), so the test keeps its level.

    >>> rng = np.random.default_rng(1)
    >>> held_out_threshold(-np.log10(rng.uniform(size=2000)), 1e-3)   # calibrated: the floor
    3.0
    >>> round(held_out_threshold(-3 * np.log10(rng.uniform(size=2000)), 1e-3), 1)  # three times too heavy
    8.9
    """
    keys = [np.asarray(surprise, dtype=np.float64)] if isinstance(surprise, np.ndarray) else [
        np.asarray(k, dtype=np.float64) for k in surprise]
    floor = -math.log10(target_rate)
    bursts = sum(_bursts(k >= floor, DEFAULT_INCIDENT_GAP_STEPS) for k in keys)  # NaN: no alarm
    s = np.concatenate([k[np.isfinite(k)] for k in keys]) if keys else np.zeros(0)
    if s.size == 0 or _poisson_sf(bursts, s.size * target_rate) >= significance:
        return floor
    return fit_tail_threshold(s, target_rate)


def _bursts(alarm: np.ndarray, gap: int) -> int:
    """Runs of alarms, a run continuing while alarms are at most ``gap`` rows apart (``consumer.incidents``)."""
    rows = np.flatnonzero(alarm)
    return int(rows.size and 1 + np.count_nonzero(np.diff(rows) > gap))


def _poisson_sf(k: int, lam: float) -> float:
    """P(Poisson(lam) >= k)."""
    if k <= 0:
        return 1.0
    term = cdf = math.exp(-lam)
    for i in range(1, k):
        term *= lam / i
        cdf += term
    return max(0.0, 1.0 - cdf)


def calibrate_threshold(model_path: Path, series: list[np.ndarray], warmup: int) -> float:
    """The [0, 1] score threshold of the model's default scorer (what older readers of the metadata use)."""
    from rnnwatch.consumer.contract import load_signature

    surprise = calibrate(model_path, series, warmup, load_signature(model_path).scoring.scorer)
    return float(np.clip(round(1 - 10 ** -surprise, 6), *THRESHOLD_RANGE))


def held_out_surprise(model_path: Path, series: list[np.ndarray], warmup: int, scorer: str,
                      event_ms: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
    """Runtime surprises of every key's held-out rows (after warm-up), each key scored from a fresh state at
    its event times (``event_ms``, one array or None per series; None: rows without meaningful times).

    The surprise every alarm is decided on: scored without incident grouping (gap 0), since a row continuing
    an incident *reports* only what beats the incident's peak (``consumer.incidents``), and the low reported
    rows inside one burst would split it into several bursts of evidence for a heavier tail."""
    from rnnwatch.consumer.offline import score_array

    times = list(event_ms) if event_ms is not None else [None] * len(series)
    held = []
    for values, ms in zip(series, times, strict=True):
        surprise = score_array(model_path, values, scorer=scorer, event_ms=ms, incident_gap_steps=0).surprise
        held.append(surprise[max(warmup + 1, holdout_start(len(values))):])
    return held

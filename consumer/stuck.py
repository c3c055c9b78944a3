"""A value that stops moving: the run of exact repeats of a key, against the key's own rate of repeats.

A frozen feed (a stale price, a stuck sensor, a held key) is not a large residual: the forecaster follows
the flat line within a step or two, so the residual scorers stay quiet. What is news is the *run*: a key
that repeats its previous value with probability ``p`` per step runs ``r`` steps with probability ``p**r``,
so the surprise of a run is ``r * -log10(p)`` (a record/run-length test in the spirit of the novelty scorer).

``p`` is the key's repeat rate *before the run*: the larger of its long-run rate ``(repeats + 1/2) / (steps + 1)``
(so a key that has never repeated in 750 steps gives each repeat a surprise of about 3.2, and a key that
repeats 3 % of the time needs a run of three) and an EWMA of repeats with half-life ``halflife`` steps, both
with the run's own repeats taken back out (:func:`rate_before_run`): counting them would let the run explain
itself away, two repeats then being less surprising than one. The EWMA, which does count the run, ends a
lasting freeze: once it reaches 1/2, repeating is the key's norm and a repeat is no news, after about one
half-life of a run on a key that rarely repeats (20 steps at the default), so a key that stays constant for
good stops alarming (``tests/unit/test_stuck.py``). A key whose values routinely repeat (counters at zero, a
square wave) has ``p`` near 1 and never alarms on repeats.

The surprise is already the key's own probability, so the scorer does not tail-calibrate it
(``self_calibrated``). State per key: the previous value, the EWMA rate, the repeat count, the run length,
the steps seen (columns ``s.stuck.prev`` and ``s.stuck.stats``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnwatch.consumer.detector_protocol import alpha_of_halflife, detector_options
from rnnwatch.consumer.state import Column, StateTable
from rnnwatch.consumer.waveops import any_true, row_all

__all__ = ["NORM_RATE", "Stuck", "rate_before_run"]

NORM_RATE = 0.5  # an EWMA repeat rate this high: repeating is the key's norm, a repeat is no news
_MAX_UNDO = 200.0  # runs longer than this have an EWMA rate far above NORM_RATE: no need to undo them exactly


def rate_before_run(rate: np.ndarray, repeats: np.ndarray, run: np.ndarray, n: np.ndarray,
                    alpha: float) -> np.ndarray:
    """The repeat probability a key had before its current run of ``run`` repeats: the larger of its EWMA rate
    (weight ``alpha``) and its long-run rate, each with the run's repeats taken back out.

    The EWMA after r repeats is ``1 - (1 - rate0) (1 - alpha)**r``, so ``rate0`` is recovered from the stored
    rate without a column of its own (exact once ``alpha`` is constant, i.e. after the first 1/alpha steps).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        kept = (1.0 - alpha) ** np.minimum(run, _MAX_UNDO)
        ewma = np.clip(1.0 - (1.0 - rate) / kept, 0.0, 1.0)
    return np.asarray(np.maximum(ewma, (repeats - run + 0.5) / (n - run + 1.0)))


class Stuck:
    name: ClassVar[str] = "stuck"
    self_calibrated: ClassVar[bool] = True  # the scorer skips the tail calibration (consumer.tailcal)
    DEFAULTS: ClassVar[dict[str, Any]] = {"halflife": 20.0, "min_steps": 30.0}

    def __init__(self, options: Mapping[str, Any], n_features: int, domain: str) -> None:
        o = detector_options(self.name, options, self.DEFAULTS)
        if not float(o["halflife"]) > 0:
            msg = f"scorer 'stuck' halflife must be > 0, got {o['halflife']}"
            raise ValueError(msg)
        self.alpha = alpha_of_halflife(float(o["halflife"]))
        self.min_steps, self.f = int(o["min_steps"]), n_features

    def columns(self) -> list[Column]:
        # rate, repeats, run length, steps seen: one block, so a wave gathers and scatters it once
        return [Column.filled("s.stuck.prev", (self.f,), np.float64, np.nan),
                Column.filled("s.stuck.stats", (4,), np.float64, 0.0)]

    def surprise(self, table: StateTable, rows: np.ndarray, wave: Any) -> np.ndarray:
        a = table.arrays
        prev, stats = a["s.stuck.prev"].take(rows, axis=0), a["s.stuck.stats"].take(rows, axis=0)  # copies
        rate, repeats, run, n = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]  # views: read before writing
        x = wave.x
        finite = None if wave.x_finite else row_all(np.isfinite(x))  # None: every value finite (common)
        repeat = row_all(x == prev)  # NaN prev (the first step) never equals
        if finite is not None:
            repeat &= finite
        alpha = np.maximum(self.alpha, 1.0 / np.maximum(n, 1.0))  # running mean first, EWMA once n > 1/alpha
        seen = n >= 1  # a repeat needs a previous value
        new_rate = np.where(seen if finite is None else seen & finite, rate + alpha * (repeat - rate), rate)
        reset: float | np.ndarray = 0.0 if finite is None else np.where(finite, 0.0, run)  # non-finite: run kept
        if any_true(repeat):
            p = rate_before_run(rate, repeats, run, n, self.alpha)
            new_run: float | np.ndarray = np.where(repeat, run + 1.0, reset)
            news = repeat & (n >= self.min_steps) & (rate < NORM_RATE)
            out = np.where(news, new_run * -np.log10(p), 0.0)
            stats[:, 1] = repeats + repeat
        else:  # the common case: no key repeated its value, nothing surprising
            new_run, out = reset, np.zeros(len(rows))
        stats[:, 3] = n + 1.0 if finite is None else n + finite
        stats[:, 0], stats[:, 2] = new_rate, new_run
        a["s.stuck.stats"][rows] = stats
        a["s.stuck.prev"][rows] = x if finite is None else np.where(finite[:, None], x, prev)
        return np.asarray(out)

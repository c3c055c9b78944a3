"""The StepRunner: one onnxruntime call per *wave* of keys, state carried in the state table.

A micro-batch of records is split into waves: wave k holds the k-th record (in offset order) of every key
in the batch, so each wave has each key at most once and can be stepped as one batch. For each wave:
ordering checks (event time must increase per key), gather the keys' state rows, one ``session.run``,
scatter the new state back, score against the forecast remembered from the key's previous step.

The Kafka path and the offline path (``rnnwatch score``) both go through :meth:`StepRunner.process`, so a
backtest and production produce the same numbers for the same input; a key's results do not depend on
which other keys share its waves (the contract requires batch-invariant graphs) or on how its records are
split across polls.

A model output that is not finite (NaN or inf in the forecast, its scale, its score or a new state row: an
overflow, a log of a non-positive number ...) would poison the key for good: every later forecast is NaN and
every later score 0. Such a key is reset to its initial state at once (it re-warms) and the record is
flagged in :attr:`StepResults.reset`, which the pipeline counts and logs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace

import numpy as np

from rnnwatch.consumer.contract import StepSignature
from rnnwatch.consumer.scoring import ResidualScorer, ScoreBatch
from rnnwatch.consumer.scoring_config import ScoringOverrides, scorer_config
from rnnwatch.consumer.session import StepModel
from rnnwatch.consumer.state import NO_TIME, Column, StateTable
from rnnwatch.consumer.types import ALREADY_APPLIED, DUPLICATE, OUT_OF_ORDER, PROCESSED, TickBatch
from rnnwatch.consumer.waveops import any_true, every

__all__ = ["StepModel", "StepResults", "StepRunner", "make_runner"]  # StepModel lives in session; re-exported

_SCORED = tuple(f.name for f in fields(ScoreBatch))  # every per-record field a wave's scoring fills

@dataclass
class StepResults:
    """Per-record results aligned with the TickBatch (NaN/False where a record was not processed)."""

    status: np.ndarray
    score: np.ndarray
    tail: np.ndarray
    surprise: np.ndarray  # -log10(tail)
    alarm: np.ndarray  # bool [n]: over the threshold (any point of an incident)
    is_anomaly: np.ndarray  # bool [n]: opens an incident (one event per incident)
    is_update: np.ndarray  # bool [n]: a new peak of an open incident (an update event)
    incident: np.ndarray  # int64 [n]: input offset of the incident's opening record, -1 where no alarm
    expected: np.ndarray
    residual: np.ndarray
    gap: np.ndarray
    reset: np.ndarray  # bool [n]: the model's output for this record was not finite, the key was reset
    step_seconds: list[float] = field(default_factory=list)
    wave_keys: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int, n_features: int) -> StepResults:
        nan = np.full(n, np.nan)
        return cls(
            status=np.full(n, PROCESSED, dtype=np.int8), score=nan.copy(), tail=nan.copy(), surprise=nan.copy(),
            alarm=np.zeros(n, dtype=bool), is_anomaly=np.zeros(n, dtype=bool), is_update=np.zeros(n, dtype=bool),
            incident=np.full(n, -1, dtype=np.int64), expected=np.full((n, n_features), np.nan, dtype=np.float32),
            residual=np.full((n, n_features), np.nan, dtype=np.float32),
            gap=np.zeros(n, dtype=bool), reset=np.zeros(n, dtype=bool),
        )


class StepRunner:
    """Steps micro-batches of ticks through the model, wave by wave, over a state table."""

    def __init__(self, model: StepModel, scorer: ResidualScorer, table: StateTable, *,
                 gap_ms: int = 0, reset_on_gap: bool = False) -> None:
        self.model = model
        self.scorer = scorer
        self.table = table
        self.gap_ms = gap_ms
        self.reset_on_gap = reset_on_gap
        self._state_cols = [(s.name, "m." + s.name) for s in model.signature.states]

    def process(self, batch: TickBatch, now_s: float | None = None) -> StepResults:
        n = len(batch)
        results = StepResults.empty(n, self.model.signature.n_features)
        if n == 0:
            return results
        table = self.table
        rows = np.empty(n, dtype=np.int64)
        for p in np.unique(batch.partition).tolist():
            sel = np.flatnonzero(batch.partition == p)
            rows[sel], _ = table.rows_for(p, [batch.keys[i] for i in sel.tolist()])
        table.last_seen_s[rows] = time.monotonic() if now_s is None else now_s
        applied = batch.offset > table.last_offset[rows]  # restored state already reflects the rest
        results.status[~applied] = ALREADY_APPLIED
        scored: list[tuple[np.ndarray, ScoreBatch]] = []
        for wave in _waves(rows, batch.offset, applied):
            self._step_wave(batch, rows, wave, results, scored)
        _fill(results, scored)
        return results

    def _step_wave(self, batch: TickBatch, rows: np.ndarray, idx: np.ndarray, results: StepResults,
                   scored_waves: list[tuple[np.ndarray, ScoreBatch]]) -> None:
        table = self.table
        r = rows[idx]
        ts = batch.event_ms[idx]
        last = table.last_event_ms[r]
        table.last_offset[r] = batch.offset[idx]
        keep = ts > last
        if not every(keep):  # the common case skips this: every record of the wave is new to its key
            results.status[idx[ts == last]] = DUPLICATE
            results.status[idx[ts < last]] = OUT_OF_ORDER
            idx, r, ts, last = idx[keep], r[keep], ts[keep], last[keep]
            if idx.size == 0:
                return
        if self.gap_ms > 0:
            gap = (last != NO_TIME) & (ts - last > self.gap_ms)
            results.gap[idx[gap]] = True
            if self.reset_on_gap:
                table.reset(r[gap])
        x = batch.x.take(idx, axis=0)
        scored = self.scorer.score(table, r, x, table.steps[r], batch.offset[idx], ts)
        states = {name: table.arrays[col].take(r, axis=0) for name, col in self._state_cols}
        t0 = time.perf_counter()
        forecast, scale, model_score, new_states = self.model.run(x, states)
        results.step_seconds.append(time.perf_counter() - t0)
        results.wave_keys.append(int(idx.size))
        for name, col in self._state_cols:
            table.arrays[col][r] = new_states[name]
        self.scorer.remember(table, r, forecast, scale)
        table.steps[r] += 1
        table.last_event_ms[r] = ts
        table.dirty[r] = True
        broken = _non_finite_rows(idx.size, forecast, scale, model_score, *new_states.values())
        if any_true(broken):
            table.reset(r[broken])
            results.reset[idx[broken]] = True
        scored_waves.append((idx, scored))


def _fill(results: StepResults, scored: list[tuple[np.ndarray, ScoreBatch]]) -> None:
    """Write the waves' scores into the per-record results: once per poll, not nine scatters per wave (with
    few keys a poll is thousands of small waves, and each scatter costs its fixed numpy overhead)."""
    if not scored:
        return
    idx = np.concatenate([i for i, _ in scored])
    for name in _SCORED:
        getattr(results, name)[idx] = np.concatenate([getattr(b, name) for _, b in scored])


def _non_finite_rows(n: int, *arrays: np.ndarray | None) -> np.ndarray:
    """Rows (keys of the wave) where any of the model's outputs holds a NaN or an infinity."""
    present = [a for a in arrays if a is not None]
    if all(every(np.isfinite(a)) for a in present):  # the common case: one pass per output, no per-row masks
        return np.zeros(n, dtype=bool)
    broken = np.zeros(n, dtype=bool)
    for a in present:
        broken |= ~np.isfinite(a.reshape(n, -1)).all(axis=1)
    return broken


def _waves(rows: np.ndarray, offsets: np.ndarray, applied: np.ndarray) -> list[np.ndarray]:
    """Record indices per wave: wave k = the k-th applicable record (offset order) of each key."""
    idx = np.flatnonzero(applied)
    if idx.size == 0:
        return []
    order = idx[np.lexsort((offsets[idx], rows[idx]))]
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    group_len = np.diff(np.r_[starts, sorted_rows.size])
    rank = np.arange(sorted_rows.size) - np.repeat(starts, group_len)
    by_wave = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_wave], np.arange(int(rank.max()) + 2))
    return [order[by_wave[bounds[k]:bounds[k + 1]]] for k in range(len(bounds) - 1)]


def make_runner(signature: StepSignature, *, threshold: float | None = None, warmup_steps: int | None = None,
                halflife_steps: float | None = None, threads: int = 1, gap_ms: int = 0,
                reset_on_gap: bool = False, input_topic: str = "",
                scoring: ScoringOverrides | None = None) -> StepRunner:
    """A StepRunner with the model's calibrated scoring defaults, overridden where arguments are given.

    ``scoring`` carries the scorer choice (`--scorer`, `--scorer-options`, `--threshold-surprise`, incident
    options) that `run`, `demo`, `score` and `evaluate` all accept; :func:`scorer_config` resolves it against
    the model's metadata in one place.

    ``input_topic`` is part of the state identity: snapshots tag the input offset they reflect, and an
    offset means nothing for another topic (a group re-pointed at a new topic must not skip its records).
    """
    o = scoring or ScoringOverrides()
    o = replace(o, threshold=o.threshold if threshold is None else threshold,
                warmup_steps=o.warmup_steps if warmup_steps is None else warmup_steps,
                halflife_steps=o.halflife_steps if halflife_steps is None else halflife_steps)
    scorer = ResidualScorer(scorer_config(signature, o), signature.n_features)
    model_cols = [Column(f"m.{s.name}", s.shape, np.dtype(np.float32), s.init) for s in signature.states]
    table = StateTable([*model_cols, *scorer.columns()], identity=f"{signature.identity}@{input_topic}")
    return StepRunner(StepModel(signature, threads), scorer, table, gap_ms=gap_ms, reset_on_gap=reset_on_gap)

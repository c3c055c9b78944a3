"""The StepRunner: one onnxruntime call per *wave* of keys, state carried in the state table.

A micro-batch of records is split into waves: wave k holds the k-th record (in offset order) of every key
in the batch, so each wave has each key at most once and can be stepped as one batch. For each wave:
ordering checks (event time must increase per key), gather the keys' state rows, one ``session.run``,
scatter the new state back, score against the forecast remembered from the key's previous step. The scoring
needs nothing from this step's model call, so a large wave's call runs on a second thread meanwhile
(``consumer.offload``: onnxruntime releases the GIL; same calls, same results).

With few keys a poll is thousands of waves of the same handful of keys, and a wave's fixed costs (a numpy call
costs the same for 3 keys as for 300) were most of what a record cost. So consecutive waves of the same keys
(up to ``BLOCK_MAX_KEYS``) are stepped as a *block*: their state is gathered once, the model runs the T steps in
one call when it has a sequence form (``consumer.sequence``: its own step graph inside an ONNX ``Scan``, proven
bit-identical when loaded) or call by call with the state carried between calls, the scorer runs its recursions
over the block (``ResidualScorer.score_block``, ``consumer.blockscore``), and the state is scattered once. A
block stops before a wave the per-wave path must take (a duplicate or out-of-order record, a gap that resets,
a non-finite model output) and resumes after it. The results and the state are those of stepping wave by wave,
bit for bit (``tests/unit/test_blocks.py``), and a block never spans two polls, so what a checkpoint commits
is unchanged.

The Kafka path and the offline path (``rnnwatch score``) both go through :meth:`StepRunner.process`, so a
backtest and production produce the same numbers for the same input; a key's results depend on how its
records are split across polls and on which other keys share its waves only to within a rounding of the
model's kernels (the contract requires batch-invariant graphs, checked to a tolerance: onnxruntime's Gemm can
round a row by its place in a batch: on the bundled model a state by ~1 ulp, a forecast by up to 7.6e-6).

A model output that is not finite (NaN or inf in the forecast, its scale, its score or a new state row: an
overflow, a log of a non-positive number ...) would poison the key for good: every later forecast is NaN and
every later score 0. Such a key is reset to its initial state at once (it re-warms) and the record is
flagged in :attr:`StepResults.reset`, which the pipeline counts and logs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import numpy.ma  # np.unique imports it at its first call: ~50 ms of the first poll, else start-up's

from rnnwatch.consumer.contract import StepSignature
from rnnwatch.consumer.offload import Offload
from rnnwatch.consumer.scoring import SCORE_FIELDS, ResidualScorer, ScoreBatch
from rnnwatch.consumer.scoring_config import ScoringOverrides, scorer_config
from rnnwatch.consumer.session import StepModel
from rnnwatch.consumer.state import NO_TIME, Column, StateTable
from rnnwatch.consumer.types import ALREADY_APPLIED, DUPLICATE, OUT_OF_ORDER, PROCESSED, TickBatch
from rnnwatch.consumer.waveops import any_true, every

__all__ = ["StepModel", "StepResults", "StepRunner", "make_runner"]  # StepModel lives in session; re-exported

# Blocks of more keys go wave by wave: a block's scorer recursions cost per point in Python, a wave's numpy calls
# per wave; with ~100 keys a wave's numpy calls cost as much as its points' Python steps (tests/bench/bench_waves).
BLOCK_MAX_KEYS = 64
SEQUENCE_ROWS = 4096  # key-steps per sequence call: bounds what onnxruntime holds (bundled model: 0.6 MB)

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
        self._offload = Offload()

    def process(self, batch: TickBatch, now_s: float | None = None) -> StepResults:
        n = len(batch)
        results = StepResults.empty(n, self.model.signature.n_features)
        if n == 0:
            return results
        table = self.table
        rows = np.empty(n, dtype=np.int64)
        keys = batch.keys
        for p in np.unique(batch.partition).tolist():
            sel = np.flatnonzero(batch.partition == p)
            rows[sel], _ = table.rows_for(p, list(map(keys.__getitem__, sel.tolist())))  # a C-level pass
        table.last_seen_s[rows] = time.monotonic() if now_s is None else now_s
        applied = batch.offset > table.last_offset[rows]  # restored state already reflects the rest
        results.status[~applied] = ALREADY_APPLIED
        scored: list[tuple[np.ndarray, ScoreBatch]] = []
        for block in _blocks(rows, batch.offset, applied):
            small = block.shape[1] <= BLOCK_MAX_KEYS
            lo = 0
            while lo < block.shape[0]:  # runs of waves as blocks; a wave a block cannot take goes on its own
                used = self._step_block(batch, rows, block[lo:], results, scored) if small else 0
                if used == 0:
                    self._step_wave(batch, rows, block[lo], results, scored)
                lo += max(used, 1)
        _fill(results, scored)
        return results

    def _step_block(self, batch: TickBatch, rows: np.ndarray, idx: np.ndarray, results: StepResults,
                    scored_waves: list[tuple[np.ndarray, ScoreBatch]]) -> int:
        """Step the leading waves of ``idx`` (record indices [T, K]: consecutive waves of the same K keys) as one
        block: the keys' state is gathered once, carried through the model (one call with a sequence form,
        ``consumer.sequence``), scored by the scorer's block path and scattered once; the same results and state
        as wave by wave. Returns how many waves it stepped: it stops before the first wave the per-wave path must
        handle (a duplicate or out-of-order record, a gap that resets, a non-finite model output) and steps
        nothing (0) unless at least two waves precede it."""
        table = self.table
        r = rows[idx[0]]
        ts = batch.event_ms[idx]
        before = np.concatenate([table.last_event_ms[r][None], ts[:-1]])
        ok = (ts > before).all(axis=1)
        gap = (before != NO_TIME) & (ts - before > self.gap_ms) if self.gap_ms > 0 else None
        if gap is not None and self.reset_on_gap:
            ok &= ~gap.any(axis=1)
        T = idx.shape[0] if every(ok) else int(np.argmin(ok))
        if T < 2:
            return 0
        x = batch.x[idx[:T]]
        states = {name: table.arrays[col].take(r, axis=0) for name, col in self._state_cols}
        forecast, scale, states, seconds = self._run_block_model(x, states)
        T = int(forecast.shape[0])
        if T < 2:
            return 0
        idx, x, ts = idx[:T], x[:T], ts[:T]
        if gap is not None:
            results.gap[idx[gap[:T]]] = True
        offsets = batch.offset[idx]
        scored = self.scorer.score_block(table, r, x, forecast, scale, table.steps[r], offsets, ts)
        for name, col in self._state_cols:
            table.arrays[col][r] = states[name]
        table.last_offset[r] = offsets[-1]
        table.steps[r] += T
        table.last_event_ms[r] = ts[-1]
        table.dirty[r] = True
        results.step_seconds.extend(seconds[:T])
        results.wave_keys.extend([int(r.size)] * T)
        scored_waves.append((idx.reshape(-1), scored))
        return T

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
        states = {name: table.arrays[col].take(r, axis=0) for name, col in self._state_cols}
        # the model call and the scoring of this wave are independent (scoring uses the forecasts remembered
        # from each key's previous step): large waves run the call on a second thread meanwhile (offload)
        model_call = self._offload.start(idx.size, partial(self.model.run, x, states))
        scored = self.scorer.score(table, r, x, table.steps[r], batch.offset[idx], ts)
        seconds, (forecast, scale, model_score, new_states) = model_call.result()
        results.step_seconds.append(seconds)
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

    def _run_block_model(self, x: np.ndarray, states: dict[str, np.ndarray]) -> tuple[
            np.ndarray, np.ndarray | None, dict[str, np.ndarray], list[float]]:
        """The model over a block's T steps (x: [T, K, F]), each step's new state fed to the next: forecasts and
        scales of the steps before the first step with a non-finite output (its per-wave step resets keys), the
        states after them and each call's seconds."""
        T = x.shape[0]
        if self.model.has_sequence(x.shape[1]):  # one onnxruntime call per SEQUENCE_ROWS (consumer.sequence)
            t0 = time.perf_counter()
            forecast, scale, model_score, every_state = self._run_sequence(x, states)
            seconds = [(time.perf_counter() - t0) / T] * T  # the step-duration metric stays per wave
        else:
            outputs: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]] = []
            seconds = []
            for t in range(T):
                t0 = time.perf_counter()
                outputs.append(self.model.run(x[t], states))
                seconds.append(time.perf_counter() - t0)
                states = outputs[-1][3]
            forecast = np.stack([o[0] for o in outputs])
            scale = None if outputs[0][1] is None else np.stack([o[1] for o in outputs])  # type: ignore[misc]
            model_score = None if outputs[0][2] is None else np.stack([o[2] for o in outputs])  # type: ignore[misc]
            every_state = {name: np.stack([o[3][name] for o in outputs]) for name in states}
        finite = np.ones(T, dtype=bool)
        for a in (forecast, scale, model_score, *every_state.values()):  # one pass per output over the block
            if a is not None and not every(np.isfinite(a)):
                finite &= np.isfinite(a).reshape(T, -1).all(axis=1)
        n = T if every(finite) else int(np.argmin(finite))
        last = {name: v[n - 1] for name, v in every_state.items()} if n else states
        return forecast[:n], None if scale is None else scale[:n], last, seconds

    def _run_sequence(self, x: np.ndarray, states: dict[str, np.ndarray]) -> tuple[
            np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
        """``run_sequence`` in calls of at most SEQUENCE_ROWS key-steps: onnxruntime keeps the memory of its largest
        call, and a call's outputs hold every step's state (see ``session.MAX_MODEL_BATCH``)."""
        T, K = x.shape[:2]
        span = max(2, SEQUENCE_ROWS // K)
        if span >= T:
            return self.model.run_sequence(x, states)
        parts = []
        for lo in range(0, T, span):
            part = self.model.run_sequence(x[lo:lo + span], states)
            states = {name: v[-1] for name, v in part[3].items()}
            parts.append(part)
        scale = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
        score = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
        return (np.concatenate([p[0] for p in parts]), scale, score,
                {name: np.concatenate([p[3][name] for p in parts]) for name in states})


def _fill(results: StepResults, scored: list[tuple[np.ndarray, ScoreBatch]]) -> None:
    """Write the waves' scores into the per-record results: once per poll, not nine scatters per wave (with
    few keys a poll is thousands of small waves, and each scatter costs its fixed numpy overhead)."""
    if not scored:
        return
    idx = np.concatenate([i for i, _ in scored])
    for name in SCORE_FIELDS:
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


def _blocks(rows: np.ndarray, offsets: np.ndarray, applied: np.ndarray) -> list[np.ndarray]:
    """The waves (see :func:`_waves`) grouped into blocks of consecutive waves of the same keys: record indices
    [T, K] per block, row k of a block the k-th wave of it, keys in the same (row) order in every wave.

    Wave k holds the keys with more than k records, so the key set changes only at a wave index that is some
    key's record count: a key count with few keys gives few long blocks.
    """
    idx = np.flatnonzero(applied)
    if idx.size == 0:
        return []
    order = idx[np.lexsort((offsets[idx], rows[idx]))]
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    group_len = np.diff(np.r_[starts, sorted_rows.size])
    blocks, lo = [], 0
    for hi in np.unique(group_len).tolist():
        keys = starts[group_len >= hi]
        blocks.append(order[keys[None, :] + np.arange(lo, hi)[:, None]])
        lo = hi
    return blocks


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

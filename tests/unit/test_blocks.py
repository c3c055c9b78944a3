"""Stepping a poll's consecutive waves of the same keys as one block gives what stepping them wave by wave gives:
the same per-record results, bit for bit, and the same state table (every stored column, the bookkeeping, the
snapshots a checkpoint would write), for every scorer spec, kernels or not, including blocks that must fall
back (a non-finite value, a duplicate, an out-of-order record, a gap that resets, an output that overflows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.runner import StepResults, StepRunner, make_runner
from rnnwatch.consumer.scoring_config import ScoringOverrides
from rnnwatch.consumer.types import OUT_OF_ORDER, TickBatch
from tests.unit.onnx_builders import exploding_model

SPECS: list[tuple[str, dict[str, Any]]] = [
    ("gaussian+volatility+stuck+reversal", {}),  # the bundled model's spec: every detector has a block kernel
    ("gaussian+volatility+stuck", {}),
    ("gaussian+volatility+stuck", {"tail": {"off": 1}}),
    ("gaussian", {}),
    ("volatility", {"volatility": {"method": "garch"}}),  # no kernel: wave by wave inside the block
    ("gaussian+likelihood+volatility", {}),
    ("gaussian+likelihood+novelty", {}),  # novelty has no kernel: the block goes step by step
    ("stuck", {}),
]
_FIELDS = ("status", "score", "tail", "surprise", "alarm", "is_anomaly", "is_update", "incident", "expected",
           "residual", "gap", "reset")


def _feed(rng: np.random.Generator, keys: int, n: int, *, messy: bool) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Interleaved random-walk prices with shocks and frozen runs; ``messy`` adds NaNs, duplicates, reorderings."""
    key = rng.integers(0, keys, n)
    level = np.full(keys, 100.0)
    x = np.empty(n)
    for i, k in enumerate(key.tolist()):
        level[k] *= np.exp(rng.normal(0, 0.01)) * (1.25 if rng.random() < 0.01 else 1.0)
        x[i] = level[k]
    for start in rng.integers(0, n - 40, 6).tolist():  # frozen runs: the stuck detector's repeats
        same = np.flatnonzero(key[start:start + 40] == key[start]) + start
        x[same] = x[same[0]]
    event_ms = 1_000 * np.arange(1, n + 1, dtype=np.int64)
    if messy:
        x[rng.random(n) < 0.003] = np.nan
        dup = rng.integers(1, n, 5)
        event_ms[dup] = event_ms[dup - 1]  # a duplicate time (same key only by chance; other keys: fine)
        swap = rng.integers(1, n, 5)
        event_ms[swap] -= 5_000  # out of order for its key
        for start in rng.integers(1, n, 3).tolist():
            event_ms[start:] += 10_000_000  # a gap in time (every key's next record)
    return [b"k%d" % k for k in key.tolist()], x.astype(np.float32).reshape(n, 1), event_ms


def _run(runner: StepRunner, keys: list[bytes], x: np.ndarray, event_ms: np.ndarray, sizes: list[int]) -> list[
        StepResults]:
    out, start = [], 0
    for size in sizes:
        stop = min(start + size, len(keys))
        n = stop - start
        out.append(runner.process(TickBatch(np.zeros(n, dtype=np.int32), np.arange(start, stop, dtype=np.int64),
                                            keys[start:stop], event_ms[start:stop], x[start:stop],
                                            np.zeros(n, dtype=np.int64)), now_s=0.0))
        start = stop
    return out


def _same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, what
    np.testing.assert_array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8),
                                  err_msg=what)


def _assert_same_runs(block: StepRunner, waves: StepRunner, got: list[StepResults], want: list[StepResults]) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        for name in _FIELDS:
            _same(getattr(g, name), getattr(w, name), f"poll {i} {name}")
        assert g.wave_keys == w.wave_keys and len(g.step_seconds) == len(w.step_seconds)
    rows = np.flatnonzero(waves.table.partition >= 0)
    _same(np.flatnonzero(block.table.partition >= 0), rows, "rows in use")
    for name, stored in waves.table.stored.items():
        _same(block.table.stored[name][rows], stored[rows], name)
    for name in ("steps", "last_event_ms", "last_offset", "dirty"):
        _same(getattr(block.table, name)[rows], getattr(waves.table, name)[rows], name)
    assert block.table.snapshots(rows) == waves.table.snapshots(rows)


def _wave_by_wave(monkeypatch: pytest.MonkeyPatch, runner: StepRunner) -> None:
    monkeypatch.setattr(runner, "_step_block", lambda *a: 0)


def _counting(runner: StepRunner) -> list[int]:
    """The waves each block step took (0: none), so a test cannot pass by never taking the block path."""
    taken: list[int] = []
    step = runner._step_block

    def counted(*a: Any) -> int:
        used = step(*a)
        taken.append(used)
        return used

    runner._step_block = counted  # type: ignore[method-assign]
    return taken


@pytest.mark.parametrize(("spec", "options"), SPECS, ids=[s + ("-tail-off" if "tail" in o else "") + (
    "-garch" if "volatility" in o else "") for s, o in SPECS])
@pytest.mark.parametrize("messy", [False, True], ids=["clean", "messy"])
def test_blocks_step_exactly_as_waves(bundled_model: Path, spec: str, options: dict[str, Any], messy: bool,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sig = load_signature(bundled_model)
    scoring = ScoringOverrides(scorer=spec, scorer_options=options, threshold_surprise=2.0, warmup_steps=15,
                               incident_updates=2)
    rng = np.random.default_rng(7)
    keys, x, event_ms = _feed(rng, 5, 3000, messy=messy)
    sizes = [1, 7, 400, 1500, 92, 1000]
    block = make_runner(sig, scoring=scoring, gap_ms=1_000_000 if messy else 0)
    waves = make_runner(sig, scoring=scoring, gap_ms=1_000_000 if messy else 0)
    _wave_by_wave(monkeypatch, waves)
    taken = _counting(block)
    got, want = _run(block, keys, x, event_ms, sizes), _run(waves, keys, x, event_ms, sizes)
    _assert_same_runs(block, waves, got, want)
    assert sum(taken) > 400  # most of the ~600 waves were stepped in blocks
    merged = np.concatenate([w.alarm for w in want])
    assert merged.any() and np.concatenate([w.is_anomaly for w in want]).any()
    status = np.concatenate([w.status for w in want])
    if messy:  # the waves the blocks had to leave to the per-wave path were there
        assert (status == OUT_OF_ORDER).any() and np.concatenate([w.gap for w in want]).any()
        assert np.isnan(x).any()


def test_blocks_fall_back_where_a_gap_resets_or_the_model_overflows(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sig = load_signature(exploding_model(tmp_path / "exploding.onnx"))
    rng = np.random.default_rng(1)
    keys, x, event_ms = _feed(rng, 3, 600, messy=True)
    x = np.abs(x) * np.float32(1e-3)
    k0 = np.flatnonzero(np.array(keys) == b"k0")
    x[k0[[20, 21, 150, 151]]] = 1e20  # twice in a row overflows the state: the key is reset
    block = make_runner(sig, gap_ms=1_000_000, reset_on_gap=True)
    waves = make_runner(sig, gap_ms=1_000_000, reset_on_gap=True)
    _wave_by_wave(monkeypatch, waves)
    taken = _counting(block)
    with np.errstate(over="ignore"):  # a 1e20 point's surprise overflows the float32 tail state in both paths alike
        got, want = _run(block, keys, x, event_ms, [50, 300, 250]), _run(waves, keys, x, event_ms, [50, 300, 250])
    _assert_same_runs(block, waves, got, want)
    assert np.concatenate([w.reset for w in want]).any() and 0 in taken and max(taken) >= 2


@pytest.mark.parametrize("messy", [False, True], ids=["clean", "messy"])
def test_blocks_without_a_sequence_form_step_the_model_call_by_call_exactly_as_waves(
        bundled_model: Path, messy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    sig = load_signature(bundled_model)
    scoring = ScoringOverrides(threshold_surprise=2.0, warmup_steps=15)
    keys, x, event_ms = _feed(np.random.default_rng(11), 4, 2000, messy=messy)
    block, waves = make_runner(sig, scoring=scoring), make_runner(sig, scoring=scoring)
    assert block.model.has_sequence(4)
    monkeypatch.setattr(block.model, "_sequence", None)
    _wave_by_wave(monkeypatch, waves)
    taken = _counting(block)
    got, want = _run(block, keys, x, event_ms, [3, 900, 1097]), _run(waves, keys, x, event_ms, [3, 900, 1097])
    _assert_same_runs(block, waves, got, want)
    assert sum(taken) > 350  # of ~500 waves


def test_a_block_longer_than_one_sequence_call_is_run_in_several_with_the_same_results(
        bundled_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnwatch.consumer import runner as runner_module

    monkeypatch.setattr(runner_module, "SEQUENCE_ROWS", 13)  # 4 keys: 3 steps per call
    sig = load_signature(bundled_model)
    keys, x, event_ms = _feed(np.random.default_rng(12), 4, 1200, messy=False)
    block, waves = make_runner(sig), make_runner(sig)
    calls: list[int] = []
    run_sequence = block.model.run_sequence
    monkeypatch.setattr(block.model, "run_sequence", lambda x, s: calls.append(x.shape[0]) or run_sequence(x, s))
    _wave_by_wave(monkeypatch, waves)
    got, want = _run(block, keys, x, event_ms, [600, 600]), _run(waves, keys, x, event_ms, [600, 600])
    _assert_same_runs(block, waves, got, want)
    assert max(calls) <= 13 and calls.count(3) > 50  # 4 keys: 3 steps a call (fewer keys: more)


def test_warm_keys_blocks_step_exactly_as_waves(bundled_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys past their running-mean phase (1/n under every EWMA weight) take the kernels' constant-weight loops."""
    sig = load_signature(bundled_model)
    keys, x, event_ms = _feed(np.random.default_rng(21), 3, 5400, messy=False)
    block, waves = make_runner(sig), make_runner(sig)
    _wave_by_wave(monkeypatch, waves)
    got, want = _run(block, keys, x, event_ms, [2400]), _run(waves, keys, x, event_ms, [2400])
    rows = np.flatnonzero(block.table.partition >= 0)
    weights = [d.alpha for d in block.scorer.detectors if d.name == "gaussian"]
    weights += [d.long_alpha for d in block.scorer.detectors if d.name == "volatility"]
    assert (1.0 / (block.table.arrays["s.n"][rows] + 1) <= min(weights)).all()  # warm before the next poll
    more, more_want = _run(block, keys, x, event_ms, [2400, 3000])[1:], _run(waves, keys, x, event_ms, [2400, 3000])[1:]
    _assert_same_runs(block, waves, [*got, *more], [*want, *more_want])

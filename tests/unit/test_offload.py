"""A large wave's model call runs on a second thread while the poll thread scores the wave (consumer.offload):
the two really overlap, the results and the state are those of running them one after the other, bit for bit,
and an error in the model call is raised by ``process`` on the caller's thread."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.offload import OFFLOAD_MIN_KEYS, Offload
from rnnwatch.consumer.runner import StepResults, StepRunner, make_runner
from rnnwatch.consumer.scoring_config import ScoringOverrides
from rnnwatch.consumer.types import TickBatch
from tests.unit.test_blocks import _FIELDS, _feed, _same

_KEYS = 4 * OFFLOAD_MIN_KEYS  # waves of this many keys are offloaded


def _runner(model: Path, *, inline: bool = False) -> StepRunner:
    scoring = ScoringOverrides(threshold_surprise=2.0, warmup_steps=5, incident_updates=2)
    runner = make_runner(load_signature(model), scoring=scoring, gap_ms=1_000_000)
    if inline:
        runner._offload = Offload(min_keys=10**9)
    return runner


def _polls(runner: StepRunner, keys: list[bytes], x: np.ndarray, event_ms: np.ndarray, size: int) -> list[
        StepResults]:
    out = []
    for start in range(0, len(keys), size):
        stop = min(start + size, len(keys))
        n = stop - start
        out.append(runner.process(TickBatch(np.zeros(n, dtype=np.int32), np.arange(start, stop, dtype=np.int64),
                                            keys[start:stop], event_ms[start:stop], x[start:stop],
                                            np.zeros(n, dtype=np.int64)), now_s=0.0))
    return out


def test_model_call_overlaps_the_scoring_of_its_wave(bundled_model: Path) -> None:
    """The scorer of a large wave waits until the model call of the same wave has started: run one after the
    other (model after scoring) it would wait in vain."""
    runner = _runner(bundled_model)
    started = threading.Event()
    overlapped: list[bool] = []
    run, score = runner.model.run, runner.scorer.score

    def model_run(*a: Any) -> Any:
        started.set()
        return run(*a)

    def scorer_score(*a: Any, **k: Any) -> Any:
        overlapped.append(started.wait(timeout=30))
        started.clear()
        return score(*a, **k)

    runner.model.run = model_run  # type: ignore[method-assign]
    runner.scorer.score = scorer_score  # type: ignore[method-assign]
    keys, x, event_ms = _feed(np.random.default_rng(3), _KEYS, 3 * _KEYS, messy=False)
    keys = [b"k%d" % (i % _KEYS) for i in range(len(keys))]  # every wave holds every key
    _polls(runner, keys, x, event_ms, len(keys))
    assert overlapped == [True, True, True]


def test_offloaded_waves_give_the_inline_results(bundled_model: Path) -> None:
    """Large messy waves (NaNs, duplicates, reorderings, gaps, alarms): offloaded and inline, bit for bit."""
    keys, x, event_ms = _feed(np.random.default_rng(11), _KEYS, 30 * _KEYS, messy=True)
    off, inline = _runner(bundled_model), _runner(bundled_model, inline=True)
    got, want = _polls(off, keys, x, event_ms, 5 * _KEYS), _polls(inline, keys, x, event_ms, 5 * _KEYS)
    assert max(k for r in got for k in r.wave_keys) >= OFFLOAD_MIN_KEYS  # the offload path was taken
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        for name in _FIELDS:
            _same(getattr(g, name), getattr(w, name), f"poll {i} {name}")
    assert np.concatenate([w.alarm for w in want]).any()
    rows = np.flatnonzero(inline.table.partition >= 0)
    for name, stored in inline.table.stored.items():
        _same(off.table.stored[name][rows], stored[rows], name)
    assert off.table.snapshots(rows) == inline.table.snapshots(rows)


def test_model_error_is_raised_by_process(bundled_model: Path) -> None:
    runner = _runner(bundled_model)
    caller = threading.get_ident()
    where: list[int] = []

    def broken(*_a: Any) -> Any:
        where.append(threading.get_ident())
        msg = "model failed"
        raise RuntimeError(msg)

    runner.model.run = broken  # type: ignore[method-assign]
    keys = [b"k%d" % i for i in range(_KEYS)]
    batch = TickBatch(np.zeros(_KEYS, dtype=np.int32), np.arange(_KEYS, dtype=np.int64), keys,
                      np.full(_KEYS, 1_000, dtype=np.int64), np.ones((_KEYS, 1), dtype=np.float32),
                      np.zeros(_KEYS, dtype=np.int64))
    with pytest.raises(RuntimeError, match="model failed"):
        runner.process(batch, now_s=0.0)
    assert where and where[0] != caller  # it did fail on the worker


def test_small_and_very_large_waves_run_inline() -> None:
    offload = Offload(min_keys=8, max_keys=100)
    for keys, inline in ((7, True), (8, False), (100, False), (101, True)):
        _seconds, where = offload.start(keys, threading.get_ident).result()
        assert (where == threading.get_ident()) == inline, keys
    offload.close()


def test_runner_import_loads_what_the_first_poll_would_import() -> None:
    """np.unique imports numpy.ma at its first call (~50 ms): importing the runner does it at start-up instead."""
    code = "import sys, rnnwatch.consumer.runner; sys.exit(0 if 'numpy.ma' in sys.modules else 1)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_call_left_uncollected_never_answers_for_the_next_one() -> None:
    """A caller that raised between starting a model call and collecting it (its wave failed) leaves an outcome
    behind: the next call's result is its own."""
    offload = Offload(min_keys=1, max_keys=100)
    offload.start(5, lambda: "first")  # never collected
    assert offload.start(5, lambda: "second").result()[1] == "second"
    offload.start(5, _raise)  # an uncollected failure is not raised by the next call either
    assert offload.start(5, lambda: "third").result()[1] == "third"
    offload.close()


def _raise() -> str:
    msg = "model failed"
    raise RuntimeError(msg)

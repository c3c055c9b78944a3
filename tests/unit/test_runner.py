"""The StepRunner: per-key results do not depend on batching; ordering, gaps and restore skips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.runner import make_runner
from rnnwatch.consumer.types import ALREADY_APPLIED, DUPLICATE, OUT_OF_ORDER, PROCESSED, TickBatch
from tests.unit.onnx_builders import ALPHA

# The bundled GRU in float32: batched matmuls may round differently from batch-of-one ones.
BATCH_RTOL = 1e-5


def _batch(keys: list[bytes], times: list[int], values: list[float], partition: int = 0,
           first_offset: int = 0) -> TickBatch:
    n = len(keys)
    return TickBatch(np.full(n, partition, dtype=np.int32), np.arange(first_offset, first_offset + n, dtype=np.int64),
                     keys, np.asarray(times, dtype=np.int64), np.asarray(values, dtype=np.float32).reshape(n, 1),
                     np.zeros(n, dtype=np.int64))


def _series(rng: np.random.Generator, keys: int, steps: int) -> np.ndarray:
    return (100 * np.exp(np.cumsum(rng.normal(0, 0.01, (keys, steps)), axis=1))).astype(np.float32)


def test_ewma_forecast_matches_hand_computation(ewma_path: Path) -> None:
    runner = make_runner(load_signature(ewma_path))
    values = [10.0, 20.0, 20.0]
    res = runner.process(_batch([b"k"] * 3, [1, 2, 3], values))
    m1 = 10.0
    m2 = (1 - ALPHA) * m1 + ALPHA * 20.0
    np.testing.assert_allclose(res.expected[:, 0], [np.nan, m1, m2], rtol=1e-6)
    np.testing.assert_allclose(res.residual[1:, 0], [10.0, 20.0 - m2], rtol=1e-6)
    assert res.score[0] == 0.0  # no forecast yet for a key's first point


@pytest.mark.parametrize("model", ["ewma_path", "bundled_model"])
def test_key_results_do_not_depend_on_batching(model: str, request: pytest.FixtureRequest) -> None:
    sig = load_signature(request.getfixturevalue(model))
    rng = np.random.default_rng(3)
    keys, steps = 12, 60
    values = _series(rng, keys, steps)
    alone = []
    for k in range(keys):
        r = make_runner(sig)
        alone.append(r.process(_batch([b"k%d" % k] * steps, list(range(steps)), values[k].tolist())))
    # interleaved with all other keys, split into polls of uneven size
    runner = make_runner(sig)
    order = [(t, k) for t in range(steps) for k in rng.permutation(keys).tolist()]
    scores = np.zeros((keys, steps))
    forecasts = np.zeros((keys, steps))
    start = 0
    for size in [1, 5, 97, 3, 250, 10_000]:
        chunk = order[start:start + size]
        if not chunk:
            break
        res = runner.process(_batch([b"k%d" % k for _, k in chunk], [t for t, _ in chunk],
                                    [values[k, t] for t, k in chunk], first_offset=start))
        for j, (t, k) in enumerate(chunk):
            scores[k, t], forecasts[k, t] = res.score[j], res.expected[j, 0]
        start += len(chunk)
    for k in range(keys):
        np.testing.assert_allclose(scores[k], alone[k].score, rtol=BATCH_RTOL, atol=1e-7)
        np.testing.assert_allclose(forecasts[k, 1:], alone[k].expected[1:, 0], rtol=BATCH_RTOL)


def test_each_wave_holds_a_key_at_most_once(ewma_path: Path) -> None:
    runner = make_runner(load_signature(ewma_path))
    keys = [b"a", b"b", b"a", b"a", b"c", b"b"]
    res = runner.process(_batch(keys, [1, 1, 2, 3, 1, 2], [1.0] * 6))
    assert res.wave_keys == [3, 2, 1]  # a, b, c | a, b | a
    assert (res.status == PROCESSED).all()


def test_duplicates_and_out_of_order_are_dropped(ewma_path: Path) -> None:
    runner = make_runner(load_signature(ewma_path))
    res = runner.process(_batch([b"k"] * 5, [10, 20, 20, 15, 30], [1.0, 2.0, 99.0, 99.0, 3.0]))
    assert res.status.tolist() == [PROCESSED, PROCESSED, DUPLICATE, OUT_OF_ORDER, PROCESSED]
    assert np.isnan(res.score[2]) and np.isnan(res.score[3])
    # the dropped 99s never reached the state: the last forecast is the EWMA of 1, 2 then 3
    m = (1 - ALPHA) * ((1 - ALPHA) * 1.0 + ALPHA * 2.0) + ALPHA * 3.0
    row = runner.table.row_of(0, b"k")
    assert row is not None
    assert runner.table.arrays["s.forecast"][row][0] == pytest.approx(m, rel=1e-6)
    later = runner.process(_batch([b"k"], [25], [1.0], first_offset=5))
    assert later.status.tolist() == [OUT_OF_ORDER]


def test_gap_detection_and_reset_policy(ewma_path: Path) -> None:
    sig = load_signature(ewma_path)
    for reset in (False, True):
        runner = make_runner(sig, gap_ms=100, reset_on_gap=reset)
        res = runner.process(_batch([b"k"] * 4, [0, 50, 500, 550], [10.0, 10.0, 50.0, 50.0]))
        assert res.gap.tolist() == [False, False, True, False]
        row = runner.table.row_of(0, b"k")
        assert row is not None
        # after a reset the key starts over: its forecast restarts at the first post-gap value
        expected_last = 50.0 if reset else (1 - ALPHA) * ((1 - ALPHA) * 10 + ALPHA * 50) + ALPHA * 50
        assert runner.table.arrays["s.forecast"][row][0] == pytest.approx(expected_last, rel=1e-6)
        assert runner.table.steps[row] == (2 if reset else 4)


def test_records_already_in_restored_state_are_skipped(ewma_path: Path) -> None:
    runner = make_runner(load_signature(ewma_path))
    rows, _ = runner.table.rows_for(0, [b"k"])
    runner.table.last_offset[rows] = 11
    res = runner.process(_batch([b"k"] * 4, [1, 2, 3, 4], [1.0] * 4, first_offset=10))
    assert res.status.tolist() == [ALREADY_APPLIED, ALREADY_APPLIED, PROCESSED, PROCESSED]


@pytest.mark.parametrize(("spec", "options"), [("gaussian+likelihood+novelty+volatility", {}),
                                               ("gaussian+volatility+stuck", {}),
                                               ("gaussian+likelihood+phase", {"season": {"period": 24}})])
def test_scorer_state_and_incidents_survive_a_snapshot_restore_exactly(ewma_path: Path, spec: str,
                                                                       options: dict[str, Any]) -> None:
    """Every detector's per-key state is in the state table: a run restored from snapshots half way scores,
    flags and groups into incidents exactly as an uninterrupted run (the event ids and content stay the same)."""
    from rnnwatch.consumer.scoring_config import ScoringOverrides

    sig = load_signature(ewma_path)
    scoring = ScoringOverrides(scorer=spec, scorer_options=options, threshold_surprise=2.0)
    rng = np.random.default_rng(9)
    keys, steps = [b"a", b"b", b"c"], 400
    values = _series(rng, len(keys), steps)
    values[:, 150] *= 1.2  # shocks before and after the cut
    values[:, 300] *= 0.8
    values[0, 190:215] = values[0, 190]  # a frozen run across the cut (t = 200)
    order = [(k, t) for t in range(steps) for k in range(len(keys))]
    batch = _batch([keys[k] for k, _ in order], [t + 1 for _, t in order], [values[k, t] for k, t in order])
    whole = make_runner(sig, scoring=scoring).process(batch)
    cut = len(order) // 2
    first = make_runner(sig, scoring=scoring)
    first.process(_batch(batch.keys[:cut], batch.event_ms[:cut].tolist(), batch.x[:cut, 0].tolist()))
    second = make_runner(sig, scoring=scoring)
    for key in keys:
        row = first.table.row_of(0, key)
        assert row is not None
        second.table.load(0, key, second.table.decode(first.table.snapshot(row)))
    rest = second.process(_batch(batch.keys[cut:], batch.event_ms[cut:].tolist(), batch.x[cut:, 0].tolist(),
                                 first_offset=cut))
    np.testing.assert_array_equal(rest.surprise, whole.surprise[cut:])
    np.testing.assert_array_equal(rest.is_anomaly, whole.is_anomaly[cut:])
    np.testing.assert_array_equal(rest.incident, whole.incident[cut:])
    assert whole.is_anomaly[cut:].any() and whole.alarm.sum() > whole.is_anomaly.sum()


def test_a_wave_larger_than_the_model_batch_is_stepped_in_slices_with_the_same_results(
        bundled_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnwatch.consumer import session as session_module

    sig = load_signature(bundled_model)
    rng = np.random.default_rng(5)
    keys, steps = 11, 30
    values = _series(rng, keys, steps)
    order = [(t, k) for t in range(steps) for k in range(keys)]
    batch = _batch([b"k%d" % k for _, k in order], [t for t, _ in order], [float(values[k, t]) for t, k in order])
    whole = make_runner(sig).process(batch)
    monkeypatch.setattr(session_module, "MAX_MODEL_BATCH", 4)
    sliced_runner = make_runner(sig)
    calls: list[int] = []
    run = sliced_runner.model.session.run

    def counting(names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        calls.append(len(feeds["x"]))
        return run(names, feeds)

    monkeypatch.setattr(sliced_runner.model.session, "run", counting)
    sliced = sliced_runner.process(batch)
    assert max(calls) == 4 and len(calls) == 3 * steps  # 11 keys per wave: 4 + 4 + 3
    np.testing.assert_allclose(sliced.expected, whole.expected, rtol=BATCH_RTOL)
    np.testing.assert_allclose(sliced.score, whole.score, rtol=BATCH_RTOL, atol=1e-9)
    assert (sliced.status == whole.status).all()


def test_a_poll_of_many_waves_gives_every_result_field_of_record_by_record_polls(ewma_path: Path) -> None:
    """The waves' scores are written into the per-record results once per poll: field for field, bit for bit, the
    same as stepping one record per poll, with duplicates, out-of-order times, NaN values, alarms and new keys."""
    sig = load_signature(ewma_path)
    rng = np.random.default_rng(11)
    n, keys = 900, 7
    key = rng.integers(0, keys, n)
    times = np.cumsum(rng.integers(0, 3, n)).tolist()  # 0 steps: duplicates of the key's last time, or older
    values = (100 * np.exp(0.01 * rng.normal(size=n) + 0.3 * (rng.random(n) < 0.02))).astype(np.float32)
    values[rng.random(n) < 0.01] = np.nan
    batch = _batch([b"k%d" % k for k in key.tolist()], times, values.tolist())
    whole = make_runner(sig, warmup_steps=5).process(batch)
    one_by_one = make_runner(sig, warmup_steps=5)
    parts = [one_by_one.process(_batch([batch.keys[i]], [times[i]], [float(values[i])], first_offset=i))
             for i in range(n)]
    assert whole.alarm.any() and (whole.status != PROCESSED).any() and len(whole.wave_keys) > n // keys
    processed = whole.status == PROCESSED  # every processed record got its scores, an alarm its incident
    assert np.isfinite(whole.surprise[processed]).all() and np.isnan(whole.surprise[~processed]).all()
    np.testing.assert_array_equal(whole.incident >= 0, whole.alarm)
    for name in ("status", "score", "tail", "surprise", "alarm", "is_anomaly", "is_update", "incident", "expected",
                 "residual", "gap", "reset"):
        got, want = getattr(whole, name), np.concatenate([getattr(p, name) for p in parts])
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8), err_msg=name)

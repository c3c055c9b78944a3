"""The per-wave reductions (consumer.waveops) and the tail calibration's exceedance-only update return exactly
what the plain numpy expressions they replace return (bits, dtype), on waves with NaN, inf, -0.0 and no rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnwatch.consumer.state import StateTable
from rnnwatch.consumer.tailcal import MAX_EXCESS, TailCalibrator
from rnnwatch.consumer.waveops import any_true, every, row_all, row_sum

SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e150, -1e-320])


def _wave(rng: np.random.Generator, n: int, f: int) -> np.ndarray:
    y = rng.normal(size=(n, f)) * 10.0 ** rng.integers(-3, 4, size=(n, f))
    return np.where(rng.random((n, f)) < 0.3, rng.choice(SPECIALS, size=(n, f)), y)


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("f", [1, 3])
@pytest.mark.parametrize("n", [0, 1, 10, 257])
def test_reductions_equal_the_numpy_expressions_they_replace(n: int, f: int) -> None:
    rng = np.random.default_rng(n * 10 + f)
    for _ in range(50):
        y = _wave(rng, n, f)
        if f > 1:  # several features: the sum itself is numpy's (only inf - inf would warn here)
            y = np.where(np.isinf(y), np.nan, y)
        finite = np.isfinite(y)
        _same(row_sum(y), y.sum(axis=1))
        _same(row_sum(y * y), (y * y).sum(axis=1))
        _same(row_sum(y) / f, y.mean(axis=1))
        _same(row_all(finite), finite.all(axis=1))
        for mask in (finite, finite[:, 0], np.ones(n, dtype=bool), np.zeros(n, dtype=bool)):
            assert every(mask) is bool(mask.all()) and any_true(mask) is bool(mask.any())


def _reference(cal: TailCalibrator, state: dict[str, np.ndarray], raw: np.ndarray,
               learn: np.ndarray) -> np.ndarray:
    """The calibration as written before its exceedance-only update (every key updated with its step)."""
    u, m1, m2, k = (state[n].copy() for n in ("u", "m1", "m2", "k"))
    excess = raw - u
    above = excess > 0
    x = np.maximum(excess, 0.0)
    out = raw * (cal.u0 / np.maximum(u, 1e-9))
    hits = np.flatnonzero(above)
    if hits.size:
        out[hits] = cal.u0 + cal._pareto(m1[hits], m2[hits], x[hits])
    step = np.maximum(cal.alpha, 1.0 / (k + 1.0 + cal.prior)) * above
    x = np.minimum(x, MAX_EXCESS)
    new = {"u": np.maximum(u + cal.eta * m1 * (above - cal.level), 1e-6), "m1": m1 + step * (x - m1),
           "m2": m2 + step * (x * x - m2), "k": k + above}
    for name, old in (("u", u), ("m1", m1), ("m2", m2), ("k", k)):
        state[name] = np.where(learn, new[name], old)
    return np.asarray(np.maximum(out, 0.0))


def test_tail_calibration_matches_its_every_key_form_over_many_waves() -> None:
    rng = np.random.default_rng(3)
    cal = TailCalibrator("s.t", prior=2.0)
    table = StateTable(cal.columns(), identity="t")
    n = 40
    rows, _ = table.rows_for(0, [f"k{i}".encode() for i in range(n)])
    state = {name: table.arrays[f"s.t.{name}"][rows].copy() for name in ("u", "m1", "m2", "k")}
    for w in range(400):
        present = np.flatnonzero(rng.random(n) < 0.7)
        raw = rng.exponential(1.0 / math.log(10.0), present.size) * rng.choice([1.0, 1.0, 5.0], present.size)
        raw[rng.random(present.size) < 0.05] = 0.0
        learn = rng.random(present.size) < (1.0 if w % 3 else 0.8)
        sub = {k: v[present] for k, v in state.items()}
        want = _reference(cal, sub, raw, learn)
        for k, v in sub.items():  # the table stores its columns at half width (consumer.state): round as it does
            state[k][present] = v.astype(table.stored[f"s.t.{k}"].dtype)
        _same(cal.calibrate(table, rows[present], raw, learn), want)
        for name, v in state.items():
            _same(table.arrays[f"s.t.{name}"][rows], v)
    assert state["k"].min() > 5  # the keys did exceed their u and learn their tails


@pytest.mark.parametrize("hi", [0.25, 0.0, -0.0])
def test_the_pareto_shapes_clip_is_numpys_clip_bit_for_bit(hi: float) -> None:
    """tailcal._pareto clips the shape as minimum(hi, maximum(0, xi)): the same bits as np.clip, -0.0 and NaN too."""
    xi = _wave(np.random.default_rng(5), 4000, 1)[:, 0]
    _same(np.minimum(hi, np.maximum(0.0, xi)), np.clip(xi, 0.0, hi))


def test_a_huge_surprise_leaves_the_tail_moments_finite_at_half_width() -> None:
    """m1, m2 are stored as float32: the exceedance they learn is clipped so its square stays in range, and
    the block form (blockscore.calibrate_block) rounds them after every step exactly as the table stores them."""
    from rnnwatch.consumer.blockscore import calibrate_block

    cal = TailCalibrator("s.t")
    assert all(c.stored.itemsize == 4 for c in cal.columns())
    raw = np.array([[1e30, 3.0, np.inf, 1e300], [0.5, 1e30, 2.0, 1e20], [4.0, 0.1, 1e30, 7.0]])
    learn = np.ones_like(raw, dtype=bool)
    tables = [StateTable(cal.columns(), identity="t") for _ in range(2)]
    rows = [t.rows_for(0, [f"k{i}".encode() for i in range(raw.shape[1])])[0] for t in tables]
    waves = np.stack([cal.calibrate(tables[0], rows[0], raw[t], learn[t]) for t in range(raw.shape[0])])
    block = calibrate_block(cal, tables[1], rows[1], raw, learn)
    _same(block, waves)
    for name in ("u", "m1", "m2", "k"):
        got = [t.arrays[f"s.t.{name}"][r] for t, r in zip(tables, rows, strict=True)]
        _same(got[1], got[0])
        assert np.isfinite(got[0]).all(), name


def test_calibrating_several_detectors_at_once_equals_each_ones_every_key_form() -> None:
    """tailcal.calibrate_all (a wave's detectors' tails in one pass) gives each calibrator's every-key form, bit for
    bit: surprises, and every moment it learns, over waves where some keys exceed u, some do not learn, and huge or
    infinite surprises come; a calibrator with other options (its own pass) among them."""
    from rnnwatch.consumer.tailcal import calibrate_all

    rng = np.random.default_rng(8)
    names = ("s.a", "s.b", "s.c", "s.d")
    cals = [TailCalibrator(p, prior=2.0, level=0.1 if p == "s.d" else 0.05) for p in names]
    table = StateTable([c for cal in cals for c in cal.columns()], identity="t")
    n = 50
    rows, _ = table.rows_for(0, [f"k{i}".encode() for i in range(n)])
    fields = ("u", "m1", "m2", "k")
    state = {p: {f: table.arrays[f"{p}.{f}"][rows].copy() for f in fields} for p in names}
    for w in range(300):
        present = np.flatnonzero(rng.random(n) < 0.8)
        raws = [rng.exponential(0.5, present.size) * rng.choice([1.0, 1.0, 8.0], present.size) for _ in names]
        raws[w % 3][rng.random(present.size) < 0.05] = rng.choice([0.0, 1e30, np.inf])
        learn = rng.random(present.size) < (1.0 if w % 4 else 0.7)
        got = calibrate_all(cals, table, rows[present], raws, learn)
        for cal, p, raw, g in zip(cals, names, raws, got, strict=True):
            sub = {f: v[present] for f, v in state[p].items()}
            want = _reference(cal, sub, raw, learn)
            for f, v in sub.items():  # the table stores its columns at half width (consumer.state): round as it does
                state[p][f][present] = v.astype(table.stored[f"{p}.{f}"].dtype)
            _same(g, want)
    for p in names:
        for f in fields:
            _same(table.arrays[f"{p}.{f}"][rows], state[p][f])
    assert min(state[p]["k"].min() for p in names) > 5  # every detector's keys did exceed u and learn


def test_the_stacked_pair_surprise_equals_the_pairs_one_by_one() -> None:
    """reversal.pair_surprise evaluates its three pairs stacked on one axis: the same bits as pair by pair."""
    from rnnwatch.consumer.reversal import _LOG10_2, _LOG10_PAIRS, _SQRT_HALF, pair_surprise
    from rnnwatch.consumer.tails import gaussian_surprise

    rng = np.random.default_rng(9)
    for shape in ((0, 1), (1, 1), (257, 1), (40, 3), (6, 20, 1)):
        u2, u1, u0 = (np.where(rng.random(shape) < 0.1, rng.choice([-0.0, 0.0, 1e4, -40.0], shape),
                               rng.normal(size=shape) * 3.0) for _ in range(3))
        best = np.zeros(shape)
        for before, after in ((u1, u0), ((u2 + u1) * _SQRT_HALF, u0), (u2, (u1 + u0) * _SQRT_HALF)):
            size = np.minimum(np.abs(before), np.abs(after))
            best = np.maximum(best, np.where((before * after) < 0, 2.0 * gaussian_surprise(size) + _LOG10_2, 0.0))
        _same(pair_surprise(u2, u1, u0), best.max(axis=-1) - _LOG10_PAIRS)

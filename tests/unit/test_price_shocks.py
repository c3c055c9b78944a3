"""The price-shock corpus generator: each kind changes what it says where it says, labels cover every
injection (and its reversal), windows are NAB-sized and outside the probationary period, output is seeded."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from rnnwatch.evaluate.corpus import find_series, label_windows
from rnnwatch.evaluate.nab import probation_rows
from rnnwatch.evaluate.price_shocks import KINDS, inject, load_package_prices, plan_onsets, window_bounds, write_corpus

N = 2400


def _walk(seed: int = 3, n: int = N) -> np.ndarray:
    return 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, n)))


def _fake_prices() -> dict[str, tuple[list[str], np.ndarray]]:
    dates = [str(np.datetime64("2001-01-01") + i) for i in range(N)]
    return {"AAA": (dates, _walk(1)), "SP500": (dates, _walk(2))}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_the_series_from_its_onset_only(kind: str) -> None:
    base = _walk()
    shocked, [inj] = inject(base, [kind], [1200], np.random.default_rng(0))
    changed = np.flatnonzero(~np.isclose(shocked, base, rtol=1e-12))
    assert inj.kind == kind and inj.onset == 1200
    assert changed.min() == 1200
    assert inj.end >= inj.onset
    step = np.abs(np.diff(np.log(shocked)))
    if kind in ("spike", "flash_crash", "frozen"):  # transient: back on the true path after the end
        assert changed.max() <= inj.end
        np.testing.assert_allclose(shocked[inj.end + 1:], base[inj.end + 1:])
    if kind == "spike":
        assert step[1199] >= 6 * inj.sigma
    if kind == "level_shift":
        np.testing.assert_allclose(np.log(shocked[1200:] / base[1200:]), inj.size_sigma * inj.sigma, rtol=1e-3)
    if kind == "frozen":
        assert np.all(shocked[inj.onset:inj.end + 1] == shocked[inj.onset - 1])
        assert 10 <= inj.end - inj.onset + 1 <= 20
    if kind == "flash_crash":
        assert np.log(shocked[inj.onset:inj.end + 1] / base[inj.onset:inj.end + 1]).min() <= -8 * inj.sigma
    if kind == "volatility_burst":
        burst = np.std(step[inj.onset - 1:inj.end])
        before = np.std(step[inj.onset - 60:inj.onset - 1])
        assert burst > 2 * before
    if kind == "slow_drift":
        assert abs(np.log(shocked[-1] / base[-1])) == pytest.approx(abs(inj.size_sigma) * inj.sigma, rel=1e-3)
        assert step[inj.onset:inj.end].max() < 4 * inj.sigma  # no single day stands out


def test_labels_cover_every_injection_with_nab_sized_windows_after_probation() -> None:
    rng = np.random.default_rng(7)
    onsets = plan_onsets(N, len(KINDS), rng)
    _, injections = inject(_walk(), list(KINDS), onsets, rng)
    windows = window_bounds(N, injections)
    width = int(0.1 * N / len(KINDS))
    assert len(windows) == len(KINDS)
    for (start, end), inj in zip(windows, sorted(injections, key=lambda i: i.onset), strict=True):
        assert start <= inj.onset and inj.end + 1 <= end  # the reversal day is inside too
        assert end - start >= width - 1
        assert start >= probation_rows(N)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(windows))


def test_the_corpus_is_nab_layout_and_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_corpus(a, seed=0, prices=_fake_prices())
    write_corpus(b, seed=0, prices=_fake_prices())
    write_corpus(c, seed=1, prices=_fake_prices())

    def digest(root: Path) -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()

    assert digest(a) == digest(b) != digest(c)
    series = find_series(a)
    assert [s.name for s in series] == ["indices/SP500.csv", "stocks/AAA.csv"]
    injections = json.loads((a / "injections.json").read_text())
    for s in series:
        assert len(s.windows_ms) == len(KINDS)
        assert sorted(i["kind"] for i in injections[s.name]) == sorted(KINDS)
        times = [np.datetime64("2001-01-01") + i for i in range(N)]
        ms = [int(t.astype("datetime64[ms]").astype(np.int64)) for t in times]
        assert len(label_windows(ms, s.windows_ms)) == len(KINDS)


def test_the_real_prices_come_from_the_installed_packages() -> None:
    prices = load_package_prices()
    assert sorted(prices) == ["AAPL", "GOOG", "IBM", "MSFT", "NASDAQ", "SP500"]
    for dates, values in prices.values():
        assert len(dates) == len(values) > 2000
        assert dates == sorted(dates) and np.all(values > 0)
    dates, values = prices["AAPL"]
    split = dates.index("2005-02-28")  # AAPL split 2:1 that day: adjusted closes do not halve
    assert abs(np.log(values[split] / values[split - 1])) < 0.1

"""A labeled price-shock corpus in NAB's layout, built reproducibly from real daily prices that packages ship.

    python -m rnnwatch.evaluate.price_shocks --output build/price-corpus [--seed 0]    (make price-corpus)

Sources (read from the installed packages, never committed): ``arch`` ships S&P 500 and NASDAQ daily closes
(1999-2018), ``bokeh-sampledata`` AAPL, GOOG, IBM and MSFT (to 2013; split- and dividend-adjusted closes, so
a split is not an unlabeled crash). Into each series, after NAB's probationary period, six shocks are
injected, one of each kind, sized in multiples of the series' own recent daily volatility ``sigma`` (the
std of the previous 60 log returns), on the log price:

- ``spike``: one day off by +-(6..10) sigma, back on the path the next day;
- ``level_shift``: from the onset on, the level moves by +-(6..10) sigma for good;
- ``volatility_burst``: 15-30 days whose returns are 3-5x larger (the level wanders off with them);
- ``flash_crash``: a fall of 8-14 sigma over 1-2 days, recovered over the next 3-5 days;
- ``frozen``: 10-20 days at the onset's price, then back to the (moving) true price;
- ``slow_drift``: 40-60 days that add a linear drift totalling +-(8..12) sigma, kept afterwards.

Label windows are sized the NAB way: ``0.1 * rows / shocks`` rows, centred on the onset, and stretched to
cover the whole injection (its reversal belongs to the same incident). ``injections.json`` records each
shock (series, kind, onset, end, size).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from rnnwatch.evaluate.nab import probation_rows

__all__ = ["KINDS", "Injection", "inject", "load_package_prices", "main", "plan_onsets", "window_bounds",
           "write_corpus"]

KINDS = ("spike", "level_shift", "volatility_burst", "flash_crash", "frozen", "slow_drift")
_SIGMA_LOOKBACK = 60
_WINDOW_FRACTION = 0.1  # NAB: label windows take 10 % of a file, split between its anomalies


@dataclass(frozen=True)
class Injection:
    kind: str
    onset: int  # first row changed
    end: int  # last row changed (inclusive)
    size_sigma: float  # signed size in units of the local daily volatility
    sigma: float


def load_package_prices() -> dict[str, tuple[list[str], np.ndarray]]:
    """name -> (ISO dates, adjusted closes) of the six real series the dev extra's packages ship."""
    out = {}
    for name, package, member in (("SP500", "arch", "data/sp500/sp500.csv.gz"),
                                  ("NASDAQ", "arch", "data/nasdaq/nasdaq.csv.gz")):
        rows = list(csv.DictReader(io.StringIO(_read_package_gz(package, member))))
        dates = [datetime.strptime(r["Date"], "%m/%d/%Y").strftime("%Y-%m-%d") for r in rows]
        out[name] = (dates, np.array([float(r["Adj Close"]) for r in rows]))
    rows = list(csv.DictReader(io.StringIO(_read_package_gz("bokeh_sampledata", "_data/stocks.csv.gz"))))
    for ticker in ("AAPL", "GOOG", "IBM", "MSFT"):
        mine = sorted((r["Date"], float(r["Adj Close"])) for r in rows if r["Ticker"] == ticker)
        out[ticker] = ([d for d, _ in mine], np.array([v for _, v in mine]))
    return out


def _read_package_gz(package: str, member: str) -> str:
    spec = importlib.util.find_spec(package)  # locates the package without importing it (and its pandas)
    if spec is None or not spec.submodule_search_locations:
        msg = f"package {package!r} is not installed: `make install-dev` installs it (the [dev] extra)"
        raise FileNotFoundError(msg)
    path = Path(next(iter(spec.submodule_search_locations))) / member
    return gzip.decompress(path.read_bytes()).decode("utf-8")


def plan_onsets(n_rows: int, n_shocks: int, rng: np.random.Generator, *, guard: int = 70) -> list[int]:
    """Onsets spread evenly (with jitter) over the rows after the probationary period."""
    first = probation_rows(n_rows) + guard
    slot = (n_rows - guard - first) / n_shocks
    if slot < 2 * guard:
        msg = f"{n_rows} rows are too few for {n_shocks} shocks"
        raise ValueError(msg)
    return [int(first + k * slot + rng.uniform(0.1, 0.5) * slot) for k in range(n_shocks)]


def inject(prices: np.ndarray, kinds: Sequence[str], onsets: Sequence[int],
           rng: np.random.Generator) -> tuple[np.ndarray, list[Injection]]:
    """The prices with one shock of each given kind at its onset (log-price arithmetic), and the record."""
    log_p = np.log(np.asarray(prices, dtype=np.float64))
    out = log_p.copy()
    done = []
    for kind, t in zip(kinds, onsets, strict=True):
        sigma = float(np.std(np.diff(log_p[t - _SIGMA_LOOKBACK - 1:t])))
        sign = float(rng.choice([-1.0, 1.0]))
        delta = np.zeros_like(out)
        if kind == "spike":
            size, end = sign * rng.uniform(6, 10), t
            delta[t] = size * sigma
        elif kind == "level_shift":
            size, end = sign * rng.uniform(6, 10), t
            delta[t:] = size * sigma
        elif kind == "volatility_burst":
            length, factor = int(rng.integers(15, 31)), rng.uniform(3, 5)
            end, size = t + length - 1, factor
            extra = (factor - 1) * np.diff(out[t - 1:end + 1])
            delta[t:end + 1] = np.cumsum(extra)
            delta[end + 1:] = delta[end]
        elif kind == "flash_crash":
            fall, recover, size = int(rng.integers(1, 3)), int(rng.integers(3, 6)), -rng.uniform(8, 14)
            end = t + fall + recover - 1
            path = np.r_[np.linspace(0, 1, fall + 1)[1:], np.linspace(1, 0, recover + 1)[1:]]
            delta[t:end + 1] = size * sigma * path
        elif kind == "frozen":
            length = int(rng.integers(10, 21))
            end, size = t + length - 1, 0.0
            delta[t:end + 1] = out[t - 1] - out[t:end + 1]
        elif kind == "slow_drift":
            length, size = int(rng.integers(40, 61)), sign * rng.uniform(8, 12)
            end = t + length - 1
            delta[t:end + 1] = size * sigma * np.arange(1, length + 1) / length
            delta[end + 1:] = size * sigma
        else:
            msg = f"unknown shock kind {kind!r} (known: {', '.join(KINDS)})"
            raise ValueError(msg)
        out += delta
        done.append(Injection(kind, t, int(end), round(float(size), 3), sigma))
    return np.exp(out), done


def window_bounds(n_rows: int, injections: Sequence[Injection]) -> list[tuple[int, int]]:
    """NAB-sized label windows (rows, inclusive), centred on each onset and covering the whole injection."""
    width = max(2, int(_WINDOW_FRACTION * n_rows / max(1, len(injections))))
    out: list[tuple[int, int]] = []
    for inj in sorted(injections, key=lambda i: i.onset):
        start = max(0, inj.onset - width // 2)
        end = min(n_rows - 1, max(inj.onset + width // 2, inj.end + 1))  # +1: the day the price snaps back
        if out and start <= out[-1][1]:
            msg = f"label windows overlap around row {inj.onset}: too many shocks for {n_rows} rows"
            raise ValueError(msg)
        out.append((start, end))
    return out


def write_corpus(output: Path, seed: int = 0,
                 prices: dict[str, tuple[list[str], np.ndarray]] | None = None) -> dict[str, list[Injection]]:
    """Write ``output/data/<category>/<name>.csv``, ``labels/combined_windows.json``, ``injections.json``."""
    prices = load_package_prices() if prices is None else prices
    labels: dict[str, list[list[str]]] = {}
    record: dict[str, list[Injection]] = {}
    for k, (name, (dates, values)) in enumerate(sorted(prices.items())):
        rng = np.random.default_rng([seed, k])
        kinds = list(rng.permutation(KINDS))
        shocked, injections = inject(values, kinds, plan_onsets(len(values), len(kinds), rng), rng)
        category = "indices" if name in ("SP500", "NASDAQ") else "stocks"
        rel = f"{category}/{name}.csv"
        (output / "data" / category).mkdir(parents=True, exist_ok=True)
        with (output / "data" / rel).open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value"])
            w.writerows([f"{d} 00:00:00", f"{v:.6g}"] for d, v in zip(dates, shocked, strict=True))
        labels[rel] = [[f"{dates[a]} 00:00:00.000000", f"{dates[b]} 00:00:00.000000"]
                       for a, b in window_bounds(len(values), injections)]
        record[rel] = injections
    (output / "labels").mkdir(parents=True, exist_ok=True)
    (output / "labels" / "combined_windows.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    (output / "injections.json").write_text(
        json.dumps({k: [asdict(i) for i in v] for k, v in record.items()}, indent=2) + "\n", encoding="utf-8")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnwatch.evaluate.price_shocks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="Corpus directory to write (NAB layout).")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    record = write_corpus(Path(args.output), args.seed)
    shocks = sum(len(v) for v in record.values())
    print(f"wrote {len(record)} series with {shocks} labeled shocks to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

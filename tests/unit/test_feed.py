"""The price-feed replayer without a broker: bundled data, CSV errors, shock injection, synthetic feeds, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from rnnwatch.consumer.cli import build_parser
from rnnwatch.consumer.decoder import parse_event_time
from rnnwatch.consumer.demo.feed import (
    Shock,
    Tick,
    bundled_prices_path,
    inject_shocks,
    load_ticks,
    shifted,
    synthetic_ticks,
)
from rnnwatch.consumer.errors import ConfigError


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ticks.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_prices_are_real_daily_closes_sorted_by_time_then_symbol() -> None:
    ticks = load_ticks()
    symbols = {t.symbol for t in ticks}
    assert symbols == {"AAPL", "GOOG", "IBM", "MSFT"}
    assert len(ticks) == 4 * 2054
    assert [(t.ts, t.symbol) for t in ticks] == sorted((t.ts, t.symbol) for t in ticks)
    assert all(t.price > 0 and t.ts.endswith("T00:00:00Z") for t in ticks)
    assert ticks[0] == Tick("AAPL", "2005-01-03T00:00:00Z", 4.0668)
    assert bundled_prices_path().stat().st_size < 1_000_000


def test_custom_column_names(tmp_path: Path) -> None:
    path = _csv(tmp_path, "time,sensor,reading,unused\n2024-01-01T00:00:00Z,pump-1,3.5,x\n")
    ticks = load_ticks(path, key_column="sensor", time_column="time", value_column="reading")
    assert ticks == [Tick("pump-1", "2024-01-01T00:00:00Z", 3.5)]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("symbol,ts,close\nAAPL,2019-01-02,1.0\n", "missing column(s) ['price']"),
        ("symbol,ts,price\nAAPL,2019-01-02,1.0\nAAPL,2019-01-03,n/a\n",
         "ticks.csv:3: 'price' value 'n/a' is not a number"),
        ("symbol,ts,price\nAAPL,2019-01-02,1.0\nMSFT,2019-01-02\n",
         "ticks.csv:3: the row has no 'symbol', 'ts' or 'price'"),
        ("symbol,ts,price\n,2019-01-02,1.0\n", "ticks.csv:2: the row has no"),
    ],
)
def test_csv_errors_name_the_file_line_and_problem(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_ticks(_csv(tmp_path, text))
    assert fragment in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_ticks(tmp_path / "nope.csv")


def test_tick_message_format() -> None:
    key, value = Tick("AAPL", "2019-01-02T00:00:00Z", 157.92).to_kafka()
    assert key == b"AAPL"
    assert orjson.loads(value) == {"symbol": "AAPL", "ts": "2019-01-02T00:00:00Z", "price": 157.92}


def test_shocks_are_deterministic_distinct_and_after_the_warm_up() -> None:
    first, second = load_ticks(), load_ticks()
    original = load_ticks()
    shocks = inject_shocks(first, count=5, size=0.15, seed=3)
    assert shocks == inject_shocks(second, count=5, size=0.15, seed=3)
    assert first == second
    rows = [s.index for s in shocks]
    assert rows == sorted(set(rows)) and len(rows) == 5
    assert min(rows) >= int(0.2 * len(original))
    for s in shocks:
        before = original[s.index]
        assert (s.symbol, s.ts, s.old) == (before.symbol, before.ts, before.price)
        assert s.new in (round(before.price * 1.15, 4), round(before.price * 0.85, 4))
        assert first[s.index] == Tick(before.symbol, before.ts, s.new)
    untouched = set(range(len(original))) - set(rows)
    assert all(first[i] == original[i] for i in untouched)


def test_other_seed_other_rows_and_no_shock_when_count_is_zero() -> None:
    ticks = load_ticks()
    a = inject_shocks(load_ticks(), count=5, seed=0)
    b = inject_shocks(load_ticks(), count=5, seed=1)
    assert [s.index for s in a] != [s.index for s in b]
    assert inject_shocks(ticks, count=0) == []
    assert ticks == load_ticks()


def test_shock_count_is_capped_by_the_rows_after_the_warm_up() -> None:
    ticks = [Tick("A", f"2024-01-{d:02d}", 10.0) for d in range(1, 11)]
    shocks = inject_shocks(ticks, count=50, size=0.5, seed=0)
    assert sorted(s.index for s in shocks) == list(range(2, 10))
    assert all(isinstance(s, Shock) and s.new in (15.0, 5.0) for s in shocks)


@pytest.mark.parametrize("size", [0.0, 1.0, -0.1, 2.0])
def test_shock_size_must_keep_prices_positive(size: float) -> None:
    with pytest.raises(ConfigError, match="shock size"):
        inject_shocks(load_ticks(), count=1, size=size)


def test_synthetic_feed_shape() -> None:
    ticks = synthetic_ticks(7, 100, seed=5)
    assert len(ticks) == 100
    assert [t.symbol for t in ticks[:8]] == [f"S{i:05d}" for i in range(7)] + ["S00000"]
    times = [parse_event_time(t.ts) for t in ticks]
    assert times == sorted(times)
    assert times[7] - times[0] == 60_000
    assert all(t.price > 0 for t in ticks)
    assert ticks == synthetic_ticks(7, 100, seed=5)
    assert ticks != synthetic_ticks(7, 100, seed=6)
    assert synthetic_ticks(3, 0) == []


@pytest.mark.parametrize(("symbols", "count"), [(0, 10), (-1, 10), (3, -1)])
def test_synthetic_feed_refuses_bad_sizes(symbols: int, count: int) -> None:
    with pytest.raises(ConfigError, match="synthetic feed"):
        synthetic_ticks(symbols, count)


def test_a_looped_pass_moves_every_key_forward_in_time() -> None:
    ticks = load_ticks()[:8]
    later = list(shifted(ticks, 1))
    assert [t.symbol for t in later] == [t.symbol for t in ticks]
    assert [t.price for t in later] == [t.price for t in ticks]
    assert min(parse_event_time(t.ts) for t in later) > max(parse_event_time(t.ts) for t in ticks)


def test_produce_command_defaults() -> None:
    args = build_parser().parse_args(["produce", "--topic", "ticks"])
    assert (args.bootstrap_servers, args.input, args.rate, args.shocks, args.shock_size, args.seed) == (
        "localhost:9092", "", 0.0, 0, 0.15, 0)
    assert (args.key_column, args.time_column, args.value_column, args.loop) == ("symbol", "ts", "price", False)
    assert callable(args.func)


def test_bundled_file_has_the_documented_columns() -> None:
    with bundled_prices_path().open(newline="") as fh:
        assert next(csv.reader(fh)) == ["symbol", "ts", "price"]


def test_demo_progress_draws_a_bar_only_on_a_terminal() -> None:
    import io

    from rnnwatch.consumer.cli.demo import _Progress
    from rnnwatch.consumer.events import AnomalyEvent
    from rnnwatch.consumer.pipeline import BatchOutcome

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    event = AnomalyEvent(source="s", key=b"AAPL", event_ms=0, score=0.9999, threshold=0.999, severity="minor",
                         features=("price",), actual=[1.0], expected=[2.0], residual=[-1.0],
                         model={"name": "m", "version": "1", "sha256": "0"}, topic="t", partition=0, offset=0,
                         timestamp_ms=0)
    outcome = BatchOutcome(10, 10, [], 0, {0: 10}, {0: 10})
    for out, live in ((io.StringIO(), False), (Terminal(), True)):
        progress = _Progress(total=100, out=out, quiet=False)
        for _ in range(5):
            progress.batch(outcome)
        progress.anomaly(event)
        text = out.getvalue()
        assert ("\r" in text) == live
        assert ("ticks" in text) == live  # the bar
        assert "AAPL" in text and text.count("\n") == 1

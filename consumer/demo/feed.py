"""Price-feed replayer: the demo's producer, the compose stack's feed, and `rnnwatch produce` (flags in cli.produce).

Ticks are JSON values like ``{"symbol": "AAPL", "ts": "2019-01-02T00:00:00Z", "price": 157.92}`` with the
symbol as the Kafka key, so a symbol's ticks stay in one partition (rnnwatch scopes state by partition).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson

from rnnwatch.consumer.errors import BrokerError, ConfigError
from rnnwatch.consumer.files import read_csv

__all__ = ["Shock", "Tick", "bundled_prices_path", "inject_shocks", "load_ticks", "produce_ticks", "shifted",
           "synthetic_ticks"]


@dataclass(frozen=True)
class Tick:
    symbol: str
    ts: str
    price: float

    def to_kafka(self) -> tuple[bytes, bytes]:
        return self.symbol.encode(), orjson.dumps({"symbol": self.symbol, "ts": self.ts, "price": self.price})


@dataclass(frozen=True)
class Shock:
    index: int
    symbol: str
    ts: str
    old: float
    new: float


def bundled_prices_path() -> Path:
    return Path(__file__).parent.parent / "data" / "prices.csv"  # consumer/data/, beside the bundled model


def load_ticks(path: str | Path | None = None, *, key_column: str = "symbol", time_column: str = "ts",
               value_column: str = "price") -> list[Tick]:
    """Read a CSV of ticks (default: the bundled real prices); a bad row raises ConfigError naming its line."""
    p = Path(path) if path else bundled_prices_path()
    header, rows = read_csv(p, "tick")
    missing = {key_column, time_column, value_column} - set(header)
    if missing:
        msg = f"{p}: missing column(s) {sorted(missing)}; columns are {header}"
        raise ConfigError(msg)
    return [_tick(p, line, dict(zip(header, r, strict=False)), key_column, time_column, value_column)
            for line, r in enumerate(rows, start=2)]


def _tick(path: Path, line: int, row: dict[str, str | None], key_column: str, time_column: str,
          value_column: str) -> Tick:
    key, ts, value = row.get(key_column), row.get(time_column), row.get(value_column)
    if not key or not ts or value is None:
        msg = f"{path}:{line}: the row has no {key_column!r}, {time_column!r} or {value_column!r} value"
        raise ConfigError(msg)
    try:
        return Tick(key, ts, float(value))
    except ValueError as exc:
        msg = f"{path}:{line}: {value_column!r} value {value!r} is not a number"
        raise ConfigError(msg) from exc


def inject_shocks(ticks: list[Tick], *, count: int, size: float = 0.15, seed: int = 0,
                  skip_first: float = 0.2) -> list[Shock]:
    """Multiply ``count`` prices by 1 ± size in place (deterministic for a seed); return where.

    Shocks avoid the first ``skip_first`` of the feed (warm-up) and are spread over distinct rows.
    """
    if count <= 0:
        return []
    if not 0.0 < size < 1.0:
        msg = f"shock size must be in (0, 1) so a shocked price stays positive, got {size}"
        raise ConfigError(msg)
    rng = np.random.default_rng(seed)
    lo = int(len(ticks) * skip_first)
    rows = np.sort(rng.choice(np.arange(lo, len(ticks)), size=min(count, len(ticks) - lo), replace=False))
    shocks = []
    for row in rows.tolist():
        sign = 1.0 if rng.random() < 0.5 else -1.0
        old = ticks[row]
        new_price = round(old.price * (1.0 + sign * size), 4)
        ticks[row] = replace(old, price=new_price)
        shocks.append(Shock(row, old.symbol, old.ts, old.price, new_price))
    return shocks


def synthetic_ticks(symbols: int, ticks: int, *, seed: int = 0, start_s: int = 1_600_000_000,
                    step_s: int = 60) -> list[Tick]:
    """A random-walk feed of ``ticks`` ticks over ``symbols`` symbols, round-robin in time (benchmarks)."""
    if symbols < 1 or ticks < 0:
        msg = f"a synthetic feed needs symbols >= 1 and ticks >= 0, got symbols={symbols} ticks={ticks}"
        raise ConfigError(msg)
    rng = np.random.default_rng(seed)
    steps = -(-ticks // symbols)
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (steps, symbols)), axis=0))
    names = [f"S{i:05d}" for i in range(symbols)]
    out: list[Tick] = []
    for t in range(steps):
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_s + t * step_s))
        row = prices[t].tolist()
        out.extend(Tick(names[k], ts, round(row[k], 4)) for k in range(symbols))
    return out[:ticks]


def produce_ticks(bootstrap_servers: str, topic: str, ticks: Iterable[Tick], *, rate: float = 0.0,
                  extra_config: dict[str, object] | None = None) -> int:
    """Send ticks keyed by symbol; ``rate`` ticks/s (0 = as fast as the producer goes). Returns the count."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from rnnwatch.consumer.settings import parse_servers

    try:
        # acks=1 (a replay, not a ledger) rules out the client's idempotent default: say so, or it warns each run
        producer = KafkaProducer(**{"bootstrap_servers": list(parse_servers(bootstrap_servers)), "acks": 1,
                                    "enable_idempotence": False, "linger_ms": 20, "batch_size": 512 * 1024,
                                    "max_request_size": 8 * 1024 * 1024, **(extra_config or {})})
    except KafkaError as exc:
        msg = f"cannot reach the Kafka brokers at {bootstrap_servers} ({type(exc).__name__}): is the broker up?"
        raise BrokerError(msg) from None
    sent = 0
    start = time.monotonic()
    try:
        for tick in ticks:
            key, value = tick.to_kafka()
            producer.send(topic, key=key, value=value)
            sent += 1
            if rate > 0 and sent % max(1, int(rate // 20)) == 0:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    except KafkaError as exc:
        msg = f"producing to {topic} at {bootstrap_servers} failed after {sent} ticks: {type(exc).__name__}: {exc}"
        raise BrokerError(msg) from None
    finally:
        producer.close()
    return sent


def shifted(ticks: Sequence[Tick], passes: int) -> Iterable[Tick]:
    """Ticks of a later pass get event times after the previous pass, so keys keep moving forward in time."""
    if passes == 0:
        return ticks
    from rnnwatch.consumer.decoder import parse_event_time
    from rnnwatch.consumer.events import format_time

    first, last = parse_event_time(ticks[0].ts), parse_event_time(ticks[-1].ts)
    shift = (last - first + 86_400_000) * passes
    return (replace(t, ts=format_time(parse_event_time(t.ts) + shift)) for t in ticks)

"""Helpers for integration tests: produce a feed, read a topic to its end (highwater, not end_offsets); price
history as a CSV (what `train` and `adopt --data` read)."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def changelog_reader(bootstrap: str) -> Any:
    """A partition reader (the changelog restore's client) for ``read_snapshots``; close it after use."""
    from rnnwatch.consumer.kafka.python import PythonReader

    return PythonReader(KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50))


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def price_feed(symbols: int, steps: int, *, shock: tuple[int, int] | None = None, seed: int = 0) -> list[
        tuple[bytes | None, bytes]]:
    """Random-walk ticks, keyed by symbol, time-ordered; ``shock=(symbol, step)`` multiplies one price by 1.3."""
    rng = np.random.default_rng(seed)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (symbols, steps)), axis=1))
    if shock is not None:
        prices[shock[0], shock[1]] *= 1.3
    return ticks(prices)


def ticks(prices: np.ndarray) -> list[tuple[bytes | None, bytes]]:
    """One tick per (symbol, step) of a [symbols, steps] price array, keyed by symbol, time-ordered, a minute apart."""
    out: list[tuple[bytes | None, bytes]] = []
    for t in range(prices.shape[1]):
        for k in range(prices.shape[0]):
            sym = f"S{k:03d}"
            out.append((sym.encode(), orjson.dumps({"symbol": sym, "ts": 1_600_000_000 + 60 * t,
                                                    "price": round(float(prices[k, t]), 4)})))
    return out


def start_run(bootstrap: str, topic: str, name: str, model: Path) -> subprocess.Popen[str]:
    """`rnnwatch run --until-caught-up` in its own process: events to ``<topic>.<name>``, group ``g-<name>``."""
    return subprocess.Popen(
        [sys.executable, "-m", "rnnwatch.consumer.cli", "run", "--bootstrap-servers", bootstrap, "--input-topic", topic,
         "--output-topic", f"{topic}.{name}", "--dead-letter-topic", f"{topic}.{name}.dlq", "--group-id", f"g-{name}",
         "--auto-offset-reset", "earliest",
         "--model", str(model), "--metrics-port", "0", "--session-timeout-ms", "6000", "--until-caught-up"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_prices(path: Path, *, symbols: int = 3, rows: int = 400, seed: int = 0) -> Path:
    """Daily random-walk prices (1 % daily volatility) keyed by symbol: columns symbol, ts, price."""
    rng = np.random.default_rng(seed)
    walks = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (symbols, rows)), axis=1))
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["symbol", "ts", "price"])
        for t in range(rows):
            for k in range(symbols):
                w.writerow([f"S{k:03d}", 1_600_000_000 + 86_400 * t, f"{walks[k, t]:.4f}"])
    return path


def read_all(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[Any]:
    """Every record of ``topic``, reading each partition up to the highwater its fetches report."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
        if all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp) for tp in tps):
            break
    consumer.close()
    return records


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    parts = consumer.partitions_for_topic(topic) or set()
    out = {p: consumer.committed(TopicPartition(topic, p)) for p in parts}
    consumer.close()
    return out

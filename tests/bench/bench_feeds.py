"""Getting ticks onto the broker: bulk feeds (as fast as the producer goes) and a paced feed with shocks.

Bulk feeds are the project's own ``synthetic_ticks`` (the numbers stay comparable with earlier runs), sent by
confluent-kafka when installed (a C producer: a million ticks in seconds) else by kafka-python. Both use the
Java client's key hashing (murmur2), so a symbol lands on the same partition whichever client sent it.

The paced feed runs in its own process, so its Python time does not compete with the reader of the latency
section. It sends record ``i`` at ``start + i / rate``, stamps each record's Kafka timestamp itself at the
moment it hands the record to the client (that stamp is the "produce time" of the latency section), and
turns every ``shock_every``-th tick after the warm-up into a price shock so the detector has events to raise.
"""

from __future__ import annotations

import math
import multiprocessing
import queue as queue_module
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rnnwatch.consumer.demo.feed import Tick, produce_ticks

__all__ = ["PacedConfig", "PacedFeed", "achieved_rate", "coprime_interval", "due", "produce_bulk",
           "run_paced_producer"]

_START_S = 1_600_000_000  # event time of the first step; steps are one minute apart


def produce_bulk(bootstrap: str, topic: str, ticks: Sequence[Tick]) -> dict[str, Any]:
    """Send ``ticks`` keyed by symbol; returns count, seconds and which client sent them."""
    start = time.monotonic()
    try:
        from confluent_kafka import Producer
    except ImportError:
        sent = produce_ticks(bootstrap, topic, ticks)
        client = "kafka-python"
    else:
        sent = _confluent_bulk(Producer, bootstrap, topic, ticks)
        client = "confluent-kafka"
    if sent != len(ticks):
        msg = f"feed {topic}: sent {sent} of {len(ticks)} ticks"
        raise RuntimeError(msg)
    return {"records": sent, "seconds": round(time.monotonic() - start, 2), "producer": client}


def _confluent_bulk(producer_class: Any, bootstrap: str, topic: str, ticks: Sequence[Tick]) -> int:
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = producer_class({"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random",
                               "queue.buffering.max.messages": 1_000_000, "on_delivery": on_delivery})
    for tick in ticks:
        key, value = tick.to_kafka()
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
    left = producer.flush(120)
    if left or errors:
        msg = f"feed {topic}: {left} ticks undelivered after 120 s, {len(errors)} delivery errors {errors[:3]}"
        raise RuntimeError(msg)
    return len(ticks)


# -- pacing arithmetic (pure) -------------------------------------------------------------------------------
def due(elapsed_s: float, rate: float, total: int) -> int:
    """Records that should have been sent ``elapsed_s`` after the start: record ``i`` is due at ``i / rate``."""
    if elapsed_s < 0:
        return 0
    return min(total, math.floor(elapsed_s * rate) + 1)


def achieved_rate(records: int, first_s: float, last_s: float) -> float:
    """The rate really achieved: ``records - 1`` intervals between the first and the last send."""
    if records < 2 or last_s <= first_s:
        return 0.0
    return round((records - 1) / (last_s - first_s), 1)


def coprime_interval(every: int, symbols: int) -> int:
    """The smallest interval >= ``every`` sharing no factor with ``symbols``.

    Ticks go round-robin over the symbols, so shocks every ``n`` ticks hit symbol ``i % symbols``: with ``n``
    coprime to the symbol count successive shocks walk over every symbol instead of hitting one again and again.
    """
    n = max(1, every)
    while math.gcd(n, symbols) != 1:
        n += 1
    return n


class PacedFeed:
    """Tick ``i`` of a deterministic random walk over ``symbols`` symbols (round-robin), with price shocks.

    The walk continues from the unshocked price, so the tick after a shock reverses it (one incident).
    """

    def __init__(self, symbols: int, *, seed: int, shock_every: int, shock_size: float, warmup_ticks: int) -> None:
        self.symbols = symbols
        self.shock_every = coprime_interval(shock_every, symbols)
        self.shock_size = shock_size
        self.warmup_ticks = warmup_ticks
        self._rng = np.random.default_rng(seed)
        self._names = [f"S{i:05d}" for i in range(symbols)]
        self._keys = [name.encode() for name in self._names]
        self._prices = np.full(symbols, 100.0)
        self._row: list[float] = []
        self._step = -1

    def is_shock(self, i: int) -> bool:
        return i >= self.warmup_ticks and (i - self.warmup_ticks) % self.shock_every == 0

    def record(self, i: int) -> tuple[bytes, bytes, bool]:
        """(key, JSON value, is_shock) of tick ``i``; ticks must be asked for in order."""
        step, k = divmod(i, self.symbols)
        if step != self._step:
            self._prices *= np.exp(self._rng.normal(0.0, 0.01, self.symbols))
            self._row = self._prices.round(4).tolist()
            self._step = step
        price = self._row[k]
        shock = self.is_shock(i)
        if shock:
            sign = 1.0 if (i // self.shock_every) % 2 else -1.0
            price = round(price * (1.0 + sign * self.shock_size), 4)
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_START_S + step * 60))
        return self._keys[k], orjson.dumps({"symbol": self._names[k], "ts": ts, "price": price}), shock


# -- the paced producer (its own process) --------------------------------------------------------------------
@dataclass(frozen=True)
class PacedConfig:
    bootstrap: str
    topic: str
    probe_topic: str
    rate: float
    duration_s: float
    symbols: int
    shock_every: int
    shock_size: float
    warmup_ticks: int
    seed: int = 0
    # librdkafka's own default (and the Java client's since Kafka 4.0). 1 ms made ~1,000 produce requests a
    # second at 10,000 records/s: the embedded broker then spent a core on them, fell behind and the whole
    # path (rnnwatch and the floor alike) showed seconds of age that a real producer would not cause.
    linger_ms: int = 5

    @property
    def total(self) -> int:
        return int(self.rate * self.duration_s)


def run_paced_producer(config: PacedConfig, timeout_s: float) -> dict[str, Any]:
    """Run the paced feed in a spawned process; returns its report (raises if it failed, died or hung)."""
    ctx = multiprocessing.get_context("spawn")
    queue: Any = ctx.Queue()
    proc = ctx.Process(target=_paced_main, args=(config, queue), daemon=True)
    proc.start()
    deadline = time.monotonic() + timeout_s
    report: dict[str, Any] | None = None
    try:
        while report is None and time.monotonic() < deadline:
            try:
                report = queue.get(timeout=1.0)
            except queue_module.Empty:
                if not proc.is_alive() and queue.empty():
                    break
    finally:
        if report is None:
            proc.kill()
        proc.join(10)
    if report is None:
        msg = f"the paced producer sent no report (exit code {proc.exitcode}, limit {timeout_s:.0f} s)"
        raise RuntimeError(msg)
    if "error" in report:
        msg = f"the paced producer failed: {report['error']}"
        raise RuntimeError(msg)
    return report


def _paced_main(config: PacedConfig, queue: Any) -> None:
    try:
        queue.put(_paced_send(config))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails loudly
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _paced_send(c: PacedConfig) -> dict[str, Any]:
    from confluent_kafka import Producer

    shocks: list[dict[str, Any]] = []
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        elif msg.topic() == c.topic:
            shocks.append({"key": msg.key().decode(), "partition": msg.partition(), "offset": msg.offset(),
                           "timestamp_ms": msg.timestamp()[1]})

    producer = Producer({"bootstrap.servers": c.bootstrap, "linger.ms": c.linger_ms,
                         "partitioner": "murmur2_random", "queue.buffering.max.messages": 1_000_000})
    feed = PacedFeed(c.symbols, seed=c.seed, shock_every=c.shock_every, shock_size=c.shock_size,
                     warmup_ticks=c.warmup_ticks)
    total, sent, behind_s, stalls = c.total, 0, 0.0, 0
    start = time.monotonic()
    first = last = start
    while sent < total:
        elapsed = time.monotonic() - start
        target = due(elapsed, c.rate, total)
        if target > sent:
            behind_s = max(behind_s, elapsed - sent / c.rate)
        while sent < target:
            key, value, shock = feed.record(sent)
            stamp = int(time.time() * 1000)
            stalls += _produce(producer, c.topic, key, value, stamp, delivered if shock else None)
            if shock:  # the same record, straight to a reader: the floor of the latency
                stalls += _produce(producer, c.probe_topic, key, value, stamp, delivered)
            if sent == 0:
                first = time.monotonic()
            sent += 1
        last = time.monotonic()
        producer.poll(0)
        time.sleep(max(0.0, sent / c.rate - (time.monotonic() - start)))
    left = producer.flush(60)
    return {"records": sent, "target_rate": c.rate, "achieved_rate": achieved_rate(sent, first, last),
            "seconds": round(last - first, 3), "max_behind_schedule_ms": round(behind_s * 1000, 1),
            "queue_full_waits": stalls, "undelivered": left, "delivery_errors": errors[:5],
            "shock_every": feed.shock_every, "shocks": shocks, "producer": "confluent-kafka",
            "linger_ms": c.linger_ms}


def _produce(producer: Any, topic: str, key: bytes, value: bytes, stamp: int, on_delivery: Any) -> int:
    """Produce one record with an explicit timestamp; returns how often the local queue was full."""
    waits = 0
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, value, key, timestamp=stamp)
            else:
                producer.produce(topic, value, key, timestamp=stamp, on_delivery=on_delivery)
            return waits
        except BufferError:
            waits += 1
            producer.poll(0.001)

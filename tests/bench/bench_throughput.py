"""Throughput of one feed: the raw consumes, the naive loop and ``rnnwatch run`` per transport, side by side.

A feed is produced once into its own topic; then, on that topic, rounds of (raw kafka-python, raw
confluent-kafka) runs, best of N kept and every run listed; the naive per-message loop on a capped number of
records; and ``rnnwatch run --until-caught-up`` with each available transport. Each rnnwatch row carries its
ratio to both raw consumes, each ratio with the two rates it is made of.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.demo.feed import synthetic_ticks
from tests.bench.bench_env import CpuClock
from tests.bench.bench_feeds import produce_bulk
from tests.bench.bench_peers import BenchError, naive_loop, raw_confluent, raw_kafka_python
from tests.bench.bench_rnnwatch import Transport, run_args, run_until_caught_up
from tests.bench.bench_stats import best_run, ratio

__all__ = ["Feed", "FeedBench", "NOT_INSTALLED_CONFLUENT"]

log = logging.getLogger("bench")
NOT_INSTALLED_CONFLUENT = "confluent-kafka is not installed (pip install 'rnnwatch[fast]')"


@dataclass(frozen=True)
class Feed:
    """``ticks`` ticks round-robin over ``symbols`` symbols (the project's synthetic random walk)."""

    ticks: int
    symbols: int
    partitions: int = 4

    @property
    def name(self) -> str:
        return f"{self.ticks:,} ticks x {self.symbols:,} symbols"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ticks": self.ticks, "symbols": self.symbols, "partitions": self.partitions,
                "ticks_per_key": round(self.ticks / self.symbols, 1)}


def confluent_installed() -> bool:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False
    return True


class FeedBench:
    """Measures feeds on one broker; a feed measured once is shared by every section that asks for it."""

    def __init__(self, broker: EmbeddedBroker, model: str, transports: list[Transport], runs: int) -> None:
        self.broker = broker
        self.model = model
        self.transports = transports
        self.runs = runs
        self._done: dict[Feed, dict[str, Any]] = {}
        self._startup_cpu: dict[str, float] = {}

    def measure(self, feed: Feed, *, naive_records: int = 0) -> dict[str, Any]:
        if feed in self._done:
            return self._done[feed]
        topic = f"feed-{feed.ticks}-{feed.symbols}-{uuid.uuid4().hex[:8]}"
        self.broker.create_topics([topic], partitions=feed.partitions)
        log.info("feed %s: producing", feed.name)
        produced = produce_bulk(self.broker.bootstrap_servers, topic, synthetic_ticks(feed.symbols, feed.ticks))
        row: dict[str, Any] = {"feed": {**feed.as_dict(), "produce": produced}}
        row.update(self._raw_rounds(topic, feed))
        if naive_records:
            log.info("feed %s: naive per-message loop on %d records", feed.name, naive_records)
            row["naive_per_message"] = naive_loop(self.broker.bootstrap_servers, topic, feed.partitions,
                                                  self.model, min(naive_records, feed.ticks))
        row["rnnwatch"] = {t.name: self._rnnwatch(topic, feed, t, row) for t in self.transports}
        self._done[feed] = row
        return row

    def startup_cpu(self, transport: Transport, partitions: int) -> float:
        """CPU seconds of `rnnwatch run --until-caught-up` on an empty topic: start-up, join and shutdown.

        Subtracted from a run's CPU to give CPU per record, which moves far less than a rate when other work
        shares the machine.
        """
        if transport.name not in self._startup_cpu:
            topic = f"empty-{uuid.uuid4().hex[:8]}"
            self.broker.create_topics([topic], partitions=partitions)
            log.info("rnnwatch (%s) on an empty topic: start-up CPU", transport.name)
            cmd = run_args(self.broker.bootstrap_servers, topic, self.model, transport, "--metrics-port", "0")
            self._startup_cpu[transport.name] = run_until_caught_up(cmd, timeout_s=300.0)["cpu_seconds"]
        return self._startup_cpu[transport.name]

    def _raw_rounds(self, topic: str, feed: Feed) -> dict[str, Any]:
        """Alternate the two raw consumes, so load from elsewhere on the machine hits both alike."""
        bootstrap, kafka_python, confluent = self.broker.bootstrap_servers, [], []
        for i in range(self.runs):
            log.info("feed %s: raw consumes, round %d of %d", feed.name, i + 1, self.runs)
            kafka_python.append(raw_kafka_python(bootstrap, topic, feed.partitions, feed.ticks))
            if confluent_installed():
                confluent.append(raw_confluent(bootstrap, topic, feed.partitions, feed.ticks))
        out: dict[str, Any] = {"raw_kafka_python": {"best": best_run(kafka_python), "runs": kafka_python}}
        out["raw_confluent_kafka"] = ({"best": best_run(confluent), "runs": confluent} if confluent
                                      else {"available": False, "reason": NOT_INSTALLED_CONFLUENT})
        return out

    def _rnnwatch(self, topic: str, feed: Feed, transport: Transport, row: dict[str, Any]) -> dict[str, Any]:
        if not transport.available:
            return transport.as_dict()
        log.info("feed %s: rnnwatch run --until-caught-up (%s)", feed.name, transport.name)
        cmd = run_args(self.broker.bootstrap_servers, topic, self.model, transport, "--metrics-port", "0")
        machine = CpuClock()
        summary = run_until_caught_up(cmd, timeout_s=max(300.0, feed.ticks / 2000))
        summary["machine_busy_share"] = machine.busy()
        if summary["records"] != feed.ticks:
            msg = f"rnnwatch ({transport.name}) read {summary['records']} of {feed.ticks} records of {feed.name}"
            raise BenchError(msg)
        startup = self.startup_cpu(transport, feed.partitions)
        summary["startup_cpu_seconds"] = startup
        summary["cpu_us_per_record"] = round((summary["cpu_seconds"] - startup) * 1e6 / feed.ticks, 2)
        ours = float(summary["records_per_second"])
        summary["ratio_to_raw_kafka_python"] = ratio(
            f"rnnwatch run ({transport.name})", ours, f"raw kafka-python (best of {self.runs})",
            row["raw_kafka_python"]["best"]["records_per_second"])
        confluent = row["raw_confluent_kafka"].get("best")
        summary["ratio_to_raw_confluent_kafka"] = ratio(
            f"rnnwatch run ({transport.name})", ours, f"raw confluent-kafka (best of {self.runs})",
            confluent["records_per_second"] if confluent else None)
        return summary

"""`rnnwatch run` on a terminal: one status line every few seconds, read from the service's own metrics.

Only when stderr is a terminal (a person is watching); under a supervisor or in a container the logs and
``/metrics`` say the same without the noise. The line is computed from the registry, so it can never
disagree with what Prometheus scrapes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from prometheus_client import CollectorRegistry

__all__ = ["Snapshot", "StatusPrinter", "snapshot", "status_line"]


@dataclass(frozen=True)
class Snapshot:
    at_s: float
    processed: float
    lag: float
    keys: float
    anomalies: float
    dead_letters: float


def _total(registry: CollectorRegistry, name: str) -> float:
    return sum(s.value for m in registry.collect() for s in m.samples if s.name == name)


def snapshot(registry: CollectorRegistry, now_s: float) -> Snapshot:
    names = ("rnnwatch_records_processed_total", "rnnwatch_consumer_lag_records", "rnnwatch_active_keys",
             "rnnwatch_anomalies_total", "rnnwatch_records_dead_lettered_total")
    return Snapshot(now_s, *(_total(registry, name) for name in names))


def status_line(before: Snapshot, now: Snapshot) -> str:
    """e.g. ``1,234 rec/s  lag 0  keys 512  anomalies 3 (+1)  dead letters 0``."""
    rate = (now.processed - before.processed) / max(now.at_s - before.at_s, 1e-9)
    new = now.anomalies - before.anomalies
    return (f"{rate:,.0f} rec/s  lag {now.lag:,.0f}  keys {now.keys:,.0f}  anomalies {now.anomalies:,.0f}"
            f"{f' (+{new:,.0f})' if new else ''}  dead letters {now.dead_letters:,.0f}")


class StatusPrinter:
    """A daemon thread printing :func:`status_line` every ``interval_s`` until :meth:`stop`."""

    def __init__(self, registry: CollectorRegistry, interval_s: float = 10.0, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry, self.interval_s, self.out, self.clock = registry, interval_s, out or sys.stderr, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rnnwatch-status", daemon=True)

    def start(self) -> StatusPrinter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        before = snapshot(self.registry, self.clock())
        while not self._stop.wait(self.interval_s):
            now = snapshot(self.registry, self.clock())
            print(f"status: {status_line(before, now)}", file=self.out, flush=True)
            before = now

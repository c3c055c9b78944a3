"""`rnnwatch demo`: the whole product on embedded defaults, in one command and under two minutes.

Starts an embedded Kafka-protocol broker (Tansu, from the ``[demo]`` extra), creates the topics, replays the
bundled real daily prices with a few injected shocks, and runs the real service (same code as ``rnnwatch
run``) with the bundled pre-trained model. Anomalies are printed as they arrive, under a progress bar; the
metrics endpoint is served the whole time; at the end a summary says which injected shocks were caught.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from rnnwatch.consumer.events import AnomalyEvent
from rnnwatch.consumer.logs import configure_logging
from rnnwatch.consumer.pipeline import BatchOutcome
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import bundled_model_path, load_settings

__all__ = ["register"]

INPUT_TOPIC = "prices"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="Embedded broker + bundled model + bundled prices: see rnnwatch work.",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=bundled_model_path(), help="Step model (default: the bundled one).")
    p.add_argument("--shocks", type=int, default=8, help="Price shocks to inject into the replay (default 8).")
    p.add_argument("--shock-size", type=float, default=0.15, help="Relative size of a shock (default 0.15).")
    p.add_argument("--seed", type=int, default=7, help="Seed for where shocks go (default 7).")
    p.add_argument("--rate", type=float, default=2500.0, help="Ticks per second (default 2500; 0 = flat out).")
    p.add_argument("--partitions", type=int, default=4, help="Partitions of the input topic (default 4).")
    p.add_argument("--metrics-port", type=int, default=9108, help="Port for /metrics (0 = any free port).")
    p.add_argument("--follow", action="store_true", help="Keep consuming after the replay (Ctrl-C to stop).")
    p.add_argument("--quiet", action="store_true", help="Only print the summary.")
    p.add_argument("--scorer", default="", help="Scorer spec, as for `run` [default: the model's].")
    p.add_argument("--scorer-options", default="", help="Scorer options as JSON, as for `run`.")
    p.set_defaults(func=_run)


@dataclass
class _Progress:
    """Anomaly lines under a redrawn progress bar on a terminal; piped, plain anomaly lines and no bar."""

    total: int
    out: TextIO
    quiet: bool
    done: int = 0
    events: list[AnomalyEvent] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    live: bool = field(init=False)

    def __post_init__(self) -> None:
        isatty = getattr(self.out, "isatty", None)
        self.live = bool(isatty and isatty())

    def batch(self, outcome: BatchOutcome) -> None:
        with self.lock:
            self.done += outcome.records
            self._bar()

    def anomaly(self, event: AnomalyEvent) -> None:
        with self.lock:
            self.events.append(event)
            if not self.quiet:
                body = event.body()
                name = event.features[0]
                self.out.write(
                    f"{self._clear}  {body['event_time'][:10]}  {body['key']:<6} {name} {body['actual'][name]:>10.2f}  "
                    f"expected {body['expected'][name]:>10.2f}  surprise {event.surprise:5.1f}  {event.severity}\n")
                self._bar()

    @property
    def _clear(self) -> str:
        return "\r\033[K" if self.live else ""

    def _bar(self) -> None:
        if self.quiet or not self.live:
            return
        frac = min(1.0, self.done / max(self.total, 1))
        width = 30
        filled = int(frac * width)
        self.out.write(f"\r\033[K[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} ticks  "
                       f"{len(self.events)} anomalies  {time.monotonic() - self.started:.1f}s")
        self.out.flush()


def _run(args: argparse.Namespace) -> int:
    from rnnwatch.consumer.demo.broker import EmbeddedBroker
    from rnnwatch.consumer.demo.feed import inject_shocks, load_ticks, produce_ticks

    configure_logging("WARNING")
    ticks = load_ticks()
    shocks = inject_shocks(ticks, count=args.shocks, size=args.shock_size, seed=args.seed)
    out = sys.stdout
    print(f"rnnwatch demo: {len(ticks)} daily prices of {len({t.symbol for t in ticks})} symbols, "
          f"{len(shocks)} injected shocks:", file=out)
    for shock in shocks:
        print(f"  shock  {shock.ts[:10]}  {shock.symbol:<6} {shock.old:.2f} -> {shock.new:.2f}", file=out)
    with EmbeddedBroker() as broker:
        broker.create_topics([INPUT_TOPIC], partitions=args.partitions)
        settings = load_settings({
            "bootstrap_servers": broker.bootstrap_servers, "input_topic": INPUT_TOPIC, "group_id": "rnnwatch-demo",
            "auto_offset_reset": "earliest",
            "model": args.model, "metrics_port": args.metrics_port, "metrics_host": "127.0.0.1",
            "session_timeout_ms": 6000, "checkpoint_interval_ms": 1000,
            "scorer": args.scorer, "scorer_options": args.scorer_options,
        }, env={})
        progress = _Progress(total=len(ticks), out=out, quiet=args.quiet)
        service = Service(settings, on_anomaly=progress.anomaly, on_batch=progress.batch).start()
        print(f"metrics: http://127.0.0.1:{service.metrics_port}/metrics   (anomaly events on topic "
              f"{settings.output_topic})", file=out)
        producer_done = threading.Event()
        threading.Thread(target=_replay, args=(service, broker.bootstrap_servers, ticks, args.rate, producer_done,
                                               produce_ticks), daemon=True).start()
        if not args.follow:
            _stop_when_done(service, producer_done, progress)
        summary = service.run()
        # the demo stops its own broker next: a client whose close is still in flight then logs a refused
        # reconnect (seen once in a `make test` run), which says nothing about the user's data or setup
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if progress.live and not args.quiet:
        print(file=out)  # end the bar's line
    caught = _caught(shocks, progress.events)
    print(f"done: {summary.records} ticks, {summary.anomalies} anomalies, {caught}/{len(shocks)} injected shocks "
          f"flagged, {summary.as_dict()['records_per_second']:.0f} ticks/s", file=out)
    return 0


def _replay(service: Service, bootstrap: str, ticks: list[Any], rate: float, done: threading.Event,
            produce: Any) -> None:
    """Start the replay once the detector holds its partitions, so the ticks are seen arriving live."""
    try:
        deadline = time.monotonic() + 60
        while not service.health.ready()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        produce(bootstrap, INPUT_TOPIC, ticks, rate=rate)
    finally:
        done.set()


def _stop_when_done(service: Service, producer_done: threading.Event, progress: _Progress) -> None:
    def watch() -> None:
        while not (producer_done.is_set() and progress.done >= progress.total):
            time.sleep(0.1)
        service.request_stop()
    threading.Thread(target=watch, daemon=True).start()


def _caught(shocks: list[Any], events: list[AnomalyEvent]) -> int:
    flagged = {(e.key.decode(), e.event_ms) for e in events}
    from rnnwatch.consumer.decoder import parse_event_time

    return sum((s.symbol, parse_event_time(s.ts)) in flagged for s in shocks)

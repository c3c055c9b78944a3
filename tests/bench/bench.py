"""`make bench`: how rnnwatch's cost grows, against its peers, on one embedded broker, in one JSON report.

``--bootstrap-servers HOST:PORT`` runs every section against that Kafka cluster instead (no embedded broker is
started; topic names are unique per run): the only way to prove the latency target, whose floor on Tansu is set
by the broker.

Sections (all by default; pick with ``--only peers,latency``):

* ``peers``   - 200,000 ticks x 1,000 symbols: raw kafka-python (tuned), raw confluent-kafka (timing includes
                its prefetch), the naive per-message loop, and ``rnnwatch run --until-caught-up`` per transport;
* ``keys``    - the same with 10 symbols (20,000 ticks per key) and 100,000 symbols (3 ticks per key);
* ``latency`` - a paced feed (10,000 and 50,000 records/s) with shocks into a running ``rnnwatch run``:
                p50/p99/max from produce time to the anomaly event being readable downstream;
* ``memory``  - peak RSS with 1,000,000 keys in the state table, bytes per key beside the state bytes.

The report goes to stdout (and ``--output``), progress to stderr. When a section cannot measure what it claims
(records missing, a run failing, too few events) its entry holds an ``error`` and the exit code is 1.
Speed is measured here and only here: tests never time anything. Render the README table with
``bench_render.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.settings import bundled_model_path
from tests.bench.bench_env import external_broker, load_average, machine_info
from tests.bench.bench_latency import READER_CONFIG, LatencyPlan, measure_latency
from tests.bench.bench_latency_peers import RAW_CLIENTS, measure_raw_latency
from tests.bench.bench_memory import measure_memory
from tests.bench.bench_peers import CONFLUENT_TUNED, KAFKA_PYTHON_TUNED, BenchError
from tests.bench.bench_restore import measure_restore
from tests.bench.bench_rnnwatch import Transport, model_info, resolve_transports, run_help
from tests.bench.bench_throughput import NOT_INSTALLED_CONFLUENT, Feed, FeedBench, confluent_installed

log = logging.getLogger("bench")
SECTIONS = ("peers", "keys", "latency", "memory", "restore")
DEFINITIONS = {
    "records_per_second": "rnnwatch and raw kafka-python: records / (last poll with records - first poll with "
                          "records); raw confluent-kafka: records / (last record - just before assign()), so its "
                          "background prefetch is timed; every peer uses assign() (no group join timed)",
    "best_of_runs": "raw consumes are run N times in alternating rounds; the best run is the baseline (a ratio "
                    "against it is not flattered) and every run is listed",
    "latency": "wall clock when a reader of the output topic receives the anomaly event, minus the input "
               "record's Kafka timestamp carried in the event body (input.timestamp), which the paced producer "
               "sets to the wall clock when it hands the record to its client (same host, same clock, 1 ms "
               "resolution)",
    "in_rnnwatch": "the event record's own timestamp (set by rnnwatch's producer at send) minus input.timestamp",
    "delivery": "reader receive time minus the event record's timestamp",
    "floor": "the same shock records sent straight to a probe topic and read by the same reader: producer, "
             "broker and reader without rnnwatch",
    "age": "raw-client latency rows: receive wall clock minus the record's timestamp, for every record of the same "
           "paced feed (half as long) read by the client alone, tuned as in the throughput peers, with rnnwatch's "
           "fetch wait (--fetch-max-wait-ms)",
    "cpu_seconds": "peers: CPU of the harness process over the run, client threads included; rnnwatch: user + "
                   "system CPU of the process over its whole life, start-up included",
    "cpu_us_per_record": "peers: cpu_seconds / records; rnnwatch: (cpu_seconds - startup_cpu_seconds, the CPU of "
                         "the same command on an empty topic) / records. Moves far less than a rate when other "
                         "work shares the machine",
    "rnnwatch_cores": "CPU seconds rnnwatch spent per wall second while the paced feed ran (from its own "
                      "process_cpu_seconds_total); machine_busy_share: share of all CPUs busy meanwhile",
    "peak_rss_mib": "ru_maxrss of the rnnwatch process (wait4), MiB",
    "marginal_bytes_per_key": "(peak RSS with N keys - peak RSS with the baseline's keys) / key difference",
}
TARGETS = {  # issue 9, for the reader of the report; nothing here asserts them
    "ratio_to_raw_kafka_python_1000_keys": 0.9, "ratio_to_raw_kafka_python_10_and_100000_keys": 0.5,
    "confluent_transport_records_per_second": 400_000, "p99_ms_at_10000_records_per_second": 100,
    "peak_rss_mib_1000000_keys": 500,
}


@dataclass(frozen=True)
class Plan:
    main_feed: Feed
    key_feeds: tuple[Feed, ...]
    runs: int
    naive_records: int
    latency_rates: tuple[float, ...]
    latency_seconds: float
    memory_keys: int
    memory_baseline: Feed
    restore_keys: int = 100_000

    def as_dict(self) -> dict[str, Any]:
        return {"main_feed": self.main_feed.name, "key_feeds": [f.name for f in self.key_feeds], "runs": self.runs,
                "naive_records": self.naive_records, "latency_rates": list(self.latency_rates),
                "latency_seconds": self.latency_seconds, "memory_keys": self.memory_keys,
                "memory_baseline": self.memory_baseline.name, "restore_keys": self.restore_keys}


def make_plan(args: argparse.Namespace) -> Plan:
    """Full size by default; ``--quick`` keeps every shape (ticks per key) at about a quarter of the records."""
    p = args.partitions
    if args.quick:
        main, keys = Feed(50_000, 1_000, p), (Feed(50_000, 10, p), Feed(60_000, 20_000, p))
        runs, naive, seconds, memory = 1, 5_000, 6.0, 200_000
    else:
        main, keys = Feed(200_000, 1_000, p), (Feed(200_000, 10, p), Feed(300_000, 100_000, p))
        runs, naive, seconds, memory = 3, 20_000, 20.0, 1_000_000
    return Plan(main, (keys[0], main, keys[1]), args.runs or runs, args.naive_records or naive,
                tuple(args.latency_rates), args.latency_seconds or seconds, args.memory_keys or memory,
                Feed(100_000, 1_000, p), 25_000 if args.quick else 100_000)


@dataclass
class Context:
    broker: EmbeddedBroker
    model: str
    model_info: dict[str, Any]
    transports: list[Transport]
    plan: Plan
    feeds: FeedBench
    errors: list[str] = field(default_factory=list)

    def attempt(self, where: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one measurement; a failure becomes ``{"error": ...}`` in the report and a non-zero exit."""
        try:
            return measure()
        except BenchError as exc:
            log.error("%s: %s", where, exc)
            error = str(exc)
        except Exception as exc:  # a bug in the bench or the runtime: still report every other section
            log.exception("%s failed", where)
            error = f"{type(exc).__name__}: {exc}"
        self.errors.append(f"{where}: {error}")
        return {"error": error}


def section_peers(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    return ctx.attempt(f"peers {plan.main_feed.name}",
                       lambda: ctx.feeds.measure(plan.main_feed, naive_records=plan.naive_records))


def section_keys(ctx: Context) -> dict[str, Any]:
    feeds = ctx.plan.key_feeds
    return {"feeds": [ctx.attempt(f"keys {feed.name}", partial(ctx.feeds.measure, feed)) for feed in feeds]}


def section_latency(ctx: Context) -> dict[str, Any]:
    """Per rate: the raw clients' record age, then rnnwatch's produce -> event latency per transport."""
    out: dict[str, Any] = {"reader": READER_CONFIG, "raw": {}, "runs": {}}
    plans = [LatencyPlan(rate=rate, duration_s=ctx.plan.latency_seconds, partitions=ctx.plan.main_feed.partitions)
             for rate in ctx.plan.latency_rates]
    for client in RAW_CLIENTS:
        if client == "raw_confluent_kafka" and not confluent_installed():
            out["raw"][client] = {"available": False, "reason": NOT_INSTALLED_CONFLUENT}
            continue
        out["raw"][client] = [ctx.attempt(f"latency {client} {plan.rate:.0f}/s", partial(
            _logged, f"latency: {client} at {plan.rate:.0f} records/s", measure_raw_latency, ctx.broker, client,
            replace(plan, duration_s=plan.duration_s / 2)))  # every record is a sample: half as long is plenty
            for plan in plans]
    for transport in ctx.transports:
        out["runs"][transport.name] = transport.as_dict() if not transport.available else [
            ctx.attempt(f"latency {transport.name} {plan.rate:.0f}/s", partial(
                _logged, f"latency: rnnwatch ({transport.name}) at {plan.rate:.0f} records/s", measure_latency,
                ctx.broker, ctx.model, ctx.model_info["warmup_steps"], transport, plan))
            for plan in plans]
    return out


def _logged(message: str, measure: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    log.info("%s", message)
    return measure(*args)


def section_memory(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for transport in ctx.transports:
        out[transport.name] = transport.as_dict() if not transport.available else ctx.attempt(
            f"memory {transport.name}", partial(measure_memory, ctx.broker, ctx.model,
                                                ctx.model_info["state_bytes_per_key"], transport,
                                                ctx.plan.memory_keys, ctx.plan.memory_baseline))
    return out


def section_restore(ctx: Context) -> dict[str, Any]:
    """A new owner restoring 100,000 keys from a changelog of 2,000,000 snapshots (a quarter with --quick)."""
    keys = ctx.plan.restore_keys
    return ctx.attempt("restore", partial(_logged, f"restore: {keys:,} keys x 20 checkpoints", measure_restore,
                                          ctx.broker, keys, 20, ctx.plan.main_feed.partitions))


SECTION_RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "peers": section_peers, "keys": section_keys, "latency": section_latency, "memory": section_memory,
    "restore": section_restore}


class ExternalBroker(EmbeddedBroker):
    """A cluster the bench did not start (``--bootstrap-servers``): the embedded broker's interface (its address,
    ``create_topics``) with nothing to start or stop, so every section runs unchanged against real Kafka."""

    def __init__(self, bootstrap_servers: str) -> None:  # no super(): no port to pick, no process, no log
        self.bootstrap_servers = bootstrap_servers

    def start(self) -> ExternalBroker:
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """Not ours to stop."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--quick", action="store_true", help="about a quarter of the records, one raw run each")
    parser.add_argument("--transports", default="kafka-python,confluent",
                        help="rnnwatch transports to measure (a name `rnnwatch run` does not offer is reported "
                             "as not available)")
    parser.add_argument("--model", default=bundled_model_path())
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=0, help="raw consume runs per feed (default 3; quick 1)")
    parser.add_argument("--naive-records", type=int, default=0, help="records for the naive loop (20,000)")
    parser.add_argument("--latency-rates", type=lambda s: [float(r) for r in s.split(",")], default=[10_000, 50_000])
    parser.add_argument("--latency-seconds", type=float, default=0.0, help="paced seconds per rate (20; quick 6)")
    parser.add_argument("--memory-keys", type=int, default=0, help="keys held in the memory section (1,000,000)")
    parser.add_argument("--rnnwatch-args", default="", help="extra arguments for every `rnnwatch run` (e.g. "
                        "\"--checkpoint-interval-ms 1000\" to see what a setting costs); recorded in the report")
    parser.add_argument("--bootstrap-servers", help="HOST:PORT[,...] of a Kafka cluster to run every section "
                        "against instead of starting the embedded Tansu broker (plaintext; topics are created "
                        "with --partitions, replication 1, unique names)")
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; sections are {', '.join(SECTIONS)}")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    started, clock = datetime.now(UTC), time.monotonic()
    plan = make_plan(args)
    report: dict[str, Any] = {"report": "rnnwatch make bench", "format": 1,
                              "started_at": started.isoformat(timespec="seconds"), "sections_run": args.sections,
                              "plan": plan.as_dict(), "machine": machine_info()}
    names = [t.strip() for t in args.transports.split(",") if t.strip()]
    transports = resolve_transports(names, run_help(), tuple(shlex.split(args.rnnwatch_args)))
    report.update(model=model_info(args.model), transports={t.name: t.as_dict() for t in transports},
                  clients={"raw_kafka_python": KAFKA_PYTHON_TUNED, "raw_confluent_kafka": CONFLUENT_TUNED},
                  definitions=DEFINITIONS, targets=TARGETS, sections={})
    if args.bootstrap_servers:
        report["machine"]["broker"] = external_broker(args.bootstrap_servers)
    with ExternalBroker(args.bootstrap_servers) if args.bootstrap_servers else EmbeddedBroker() as broker:
        ctx = Context(broker, args.model, report["model"], transports, plan,
                      FeedBench(broker, args.model, transports, plan.runs))
        for name in args.sections:
            log.info("section %s", name)
            section_start = time.monotonic()
            result = SECTION_RUNNERS[name](ctx)
            report["sections"][name] = {**result, "seconds": round(time.monotonic() - section_start, 1),
                                        "load_average_after": load_average()}
    report.update(errors=ctx.errors, seconds=round(time.monotonic() - clock, 1), load_average_at_end=load_average())
    return report


def main(argv: list[str] | None = None) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s bench: %(message)s", datefmt="%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the broker and every rnnwatch started so far are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    if report["errors"]:
        print(f"bench: {len(report['errors'])} measurement(s) failed:", *report["errors"], sep="\n  ",
              file=sys.stderr)
        return 1
    log.info("done in %.0f s", report["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

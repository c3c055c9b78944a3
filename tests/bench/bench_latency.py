"""Latency: a paced feed with shocks into a running ``rnnwatch run``; produce time -> event visible to a reader.

Definition (per anomaly event)::

    latency = t_visible - input.timestamp

* ``input.timestamp`` is the input record's Kafka timestamp as carried in the event body. The paced producer
  sets it explicitly to the wall clock at the moment it hands the record to its client, so the producer's
  own batching (``linger.ms`` 5, librdkafka's default), the broker, rnnwatch's poll, decode, step, scoring,
  event send and the event's delivery are all inside;
* ``t_visible`` is the wall clock when a reader of the output topic (confluent-kafka, ``fetch.wait.max.ms``
  5, same host, same clock) receives the event: the event is acknowledged and readable downstream.

Timestamps are whole milliseconds, so a latency is exact to about 1 ms. Two parts are given beside it:
``in_rnnwatch`` (the event record's own timestamp, stamped by rnnwatch's producer at send, minus
``input.timestamp``) and ``delivery`` (``t_visible`` minus that stamp). The ``floor`` is the same path
without rnnwatch: every shock record is also sent to a probe topic that the reader reads directly.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rnnwatch.consumer.demo.broker import EmbeddedBroker, free_port
from tests.bench.bench_env import CpuClock
from tests.bench.bench_feeds import PacedConfig, run_paced_producer
from tests.bench.bench_peers import BenchError
from tests.bench.bench_rnnwatch import RunningService, Transport, run_args
from tests.bench.bench_stats import latency_summary

__all__ = ["LatencyPlan", "EventReader", "latency_row", "measure_latency"]

READER_CONFIG: dict[str, Any] = {"fetch.wait.max.ms": 5, "enable.auto.commit": False}


@dataclass(frozen=True)
class LatencyPlan:
    rate: float
    duration_s: float
    symbols: int = 1000
    shocks_per_second: float = 10.0
    shock_size: float = 0.15
    partitions: int = 4
    min_events: int = 20


@dataclass
class _Seen:
    events: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)


class EventReader(threading.Thread):
    """Reads the output topic and the probe topic from the beginning; notes when each record arrives."""

    def __init__(self, bootstrap: str, output_topic: str, probe_topic: str, partitions: int) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, TopicPartition

        self.output_topic = output_topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-reader-{uuid.uuid4().hex}",
                                  **READER_CONFIG})
        self.consumer.assign([TopicPartition(output_topic, p, 0) for p in range(partitions)]
                             + [TopicPartition(probe_topic, 0, 0)])
        self.seen = _Seen()
        self.error: str | None = None
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                # poll(), not consume(n, timeout): a batch call waits to fill its batch (up to the timeout, or
                # a 200 ms chunk since confluent-kafka 2.13), which would add that wait to every latency.
                message = self.consumer.poll(0.05)
                if message is None:
                    continue
                if message.error() is not None:
                    self.error = str(message.error())
                    continue
                self._note(message, time.time() * 1000)
        finally:
            self.consumer.close()

    def _note(self, message: Any, now_ms: float) -> None:
        _, stamp = message.timestamp()
        with self._lock:
            if message.topic() == self.output_topic:
                body = json.loads(message.value())
                self.seen.events.append({"visible_ms": now_ms, "sent_ms": stamp, "key": body["key"],
                                         **{k: body["input"][k] for k in ("partition", "offset", "timestamp")}})
            else:
                self.seen.probes.append({"visible_ms": now_ms, "timestamp": stamp})

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self.seen.events), len(self.seen.probes)

    def has(self, events: float, probes: float) -> bool:
        seen_events, seen_probes = self.counts()
        return seen_events >= events and seen_probes >= probes

    def stop(self) -> _Seen:
        self._stop_event.set()
        self.join(10)
        return self.seen


def measure_latency(broker: EmbeddedBroker, model: str, warmup_steps: int, transport: Transport,
                    plan: LatencyPlan) -> dict[str, Any]:
    """One paced run at ``plan.rate``: start rnnwatch, wait until ready, feed, drain, stop, summarise."""
    topic = f"lat-{int(plan.rate)}-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic, f"{topic}.anomalies"], partitions=plan.partitions)
    broker.create_topics([f"{topic}.dlq", f"{topic}.probe"], partitions=1)
    port = free_port()
    service = RunningService(run_args(broker.bootstrap_servers, topic, model, transport), port)
    reader: EventReader | None = None
    try:
        service.wait_ready(120)
        reader = EventReader(broker.bootstrap_servers, f"{topic}.anomalies", f"{topic}.probe", plan.partitions)
        reader.start()
        config = PacedConfig(broker.bootstrap_servers, topic, f"{topic}.probe", plan.rate, plan.duration_s,
                             plan.symbols, shock_every=max(1, int(plan.rate / plan.shocks_per_second)),
                             shock_size=plan.shock_size, warmup_ticks=(warmup_steps + 10) * plan.symbols)
        cpu_before, machine, wall = service.metric("process_cpu_seconds_total"), CpuClock(), time.monotonic()
        fed = run_paced_producer(config, timeout_s=plan.duration_s * 3 + 120)
        cpu_used = service.metric("process_cpu_seconds_total") - cpu_before
        cpu = {"rnnwatch_cores": round(cpu_used / (time.monotonic() - wall), 2), "machine_busy_share": machine.busy()}
        lag_at_end = fed["records"] - service.metric("rnnwatch_records_consumed_total")
        _wait_for(lambda: _handled(service) >= fed["records"], 120,
                  lambda: f"rnnwatch handled {_handled(service):.0f} of {fed['records']} records")
        raised = service.metric("rnnwatch_anomalies_total", missing=0.0)
        _wait_for(lambda: reader is not None and reader.has(raised, len(fed["shocks"])), 60,
                  lambda: f"the reader saw {reader.counts() if reader else None} (events, probes) of "
                          f"{raised:.0f} events and {len(fed['shocks'])} probes")
        checkpoints = _checkpoints(service)
        seen = reader.stop()
        reader = None
        stopped = service.stop()
    except BaseException:
        service.kill()
        raise
    finally:
        if reader is not None:
            reader.stop()
    return {**latency_row(plan, fed, seen, stopped, lag_at_end), "rnnwatch_checkpoints": checkpoints,
            "cpu_during_feed": cpu}


def latency_row(plan: LatencyPlan, fed: dict[str, Any], seen: _Seen, stopped: dict[str, Any],
                lag_at_end: float) -> dict[str, Any]:
    """Summarise one run; raise BenchError when it cannot stand for what it claims."""
    shocks = {(s["partition"], s["offset"]): s for s in fed["shocks"]}
    events = seen.events
    matched = [e for e in events if (e["partition"], e["offset"]) in shocks]
    wrong = [e for e in matched if e["timestamp"] != shocks[(e["partition"], e["offset"])]["timestamp_ms"]]
    if wrong:
        msg = (f"{len(wrong)} events carry an input timestamp other than the one the producer set (e.g. {wrong[0]}): "
               "the broker rewrote record timestamps, so produce time cannot be read from the event")
        raise BenchError(msg)
    if len(events) < plan.min_events:
        msg = f"only {len(events)} anomaly events at {plan.rate:.0f} records/s (need {plan.min_events})"
        raise BenchError(msg)
    if fed["undelivered"] or fed["delivery_errors"]:
        msg = f"the paced producer lost records: {fed['undelivered']} undelivered, {fed['delivery_errors']}"
        raise BenchError(msg)
    row = {
        "target_rate": plan.rate, "achieved_rate": fed["achieved_rate"], "records": fed["records"],
        "seconds": fed["seconds"], "symbols": plan.symbols,
        "producer": {k: fed[k] for k in ("producer", "linger_ms", "max_behind_schedule_ms", "queue_full_waits",
                                         "shock_every")},
        "shocks": len(shocks), "events": len(events), "events_from_shocks": len(matched),
        "rnnwatch_lag_at_feed_end_records": int(lag_at_end),
        "latency": latency_summary([e["visible_ms"] - e["timestamp"] for e in events]),
        "in_rnnwatch": latency_summary([e["sent_ms"] - e["timestamp"] for e in events]),
        "delivery": latency_summary([e["visible_ms"] - e["sent_ms"] for e in events]),
        "floor": latency_summary([p["visible_ms"] - p["timestamp"] for p in seen.probes]),
        "rnnwatch_process": stopped,
    }
    return row


def _checkpoints(service: RunningService) -> dict[str, Any]:
    """How often rnnwatch checkpointed during the run and how long that took on average (its own metrics)."""
    count = service.metric("rnnwatch_checkpoint_duration_seconds_count")
    total = service.metric("rnnwatch_checkpoint_duration_seconds_sum")
    return {"count": int(count), "mean_ms": round(total / count * 1000, 1) if count else None}


def _handled(service: RunningService) -> float:
    """Records rnnwatch is done with: processed, skipped or dead-lettered (events of them already sent)."""
    return (service.metric("rnnwatch_records_processed_total")
            + service.metric("rnnwatch_records_skipped_total", missing=0.0)
            + service.metric("rnnwatch_records_dead_lettered_total", missing=0.0))


def _wait_for(condition: Callable[[], bool], timeout_s: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            msg = f"gave up after {timeout_s:.0f} s: {describe()}"
            raise BenchError(msg)
        time.sleep(0.1)

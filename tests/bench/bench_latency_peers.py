"""Latency peers: the same paced feed read by a raw client, every record's age on receipt.

What the client library and the broker alone cost, under the same pacing as the ``rnnwatch run`` latency
runs: ``age = receive wall clock - record timestamp`` (the paced producer's stamp), for every record. Each
client runs with the tuned config of the throughput peers and rnnwatch's fetch wait (``--fetch-max-wait-ms``, 50 ms;
the clients' own default is 500 ms, which the embedded broker holds part of for every fetch, records waiting or
not). confluent-kafka waits for one record with ``poll()`` and then drains what is queued with
``consume(n, 0)`` (a ``consume(n, timeout)`` would wait to fill its batch, adding that wait to every age).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.settings import Settings
from tests.bench.bench_env import CpuClock
from tests.bench.bench_feeds import PacedConfig, run_paced_producer
from tests.bench.bench_latency import LatencyPlan
from tests.bench.bench_peers import CONFLUENT_TUNED, KAFKA_PYTHON_TUNED, BenchError
from tests.bench.bench_stats import latency_summary

__all__ = ["RAW_CLIENTS", "measure_raw_latency"]

Ages = list[float]


def _kafka_python(bootstrap: str, topic: str, partitions: int, ready: threading.Event, stop: threading.Event,
                  ages: Ages, overrides: dict[str, Any]) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, **{**KAFKA_PYTHON_TUNED, **overrides})
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    try:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=100)
            ready.set()
            for records in polled.values():
                now_ms = time.time() * 1000
                ages.extend(now_ms - r.timestamp for r in records)
    finally:
        consumer.close()


def _confluent(bootstrap: str, topic: str, partitions: int, ready: threading.Event, stop: threading.Event,
               ages: Ages, overrides: dict[str, Any]) -> None:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-age-{uuid.uuid4().hex}",
                         **CONFLUENT_TUNED, **overrides})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    try:
        while not stop.is_set():
            first = consumer.poll(0.1)
            ready.set()
            if first is None:
                continue
            messages = [first, *consumer.consume(10000, 0)]
            now_ms = time.time() * 1000
            ages.extend(now_ms - m.timestamp()[1] for m in messages if m.error() is None)
    finally:
        consumer.close()


Reader = Callable[[str, str, int, threading.Event, threading.Event, Ages, dict[str, Any]], None]
# name -> (label, reader, config overrides)
_WAIT_MS = Settings.__dataclass_fields__["fetch_max_wait_ms"].default  # rnnwatch's, so the rows compare
RAW_CLIENTS: dict[str, tuple[str, Reader, dict[str, Any]]] = {
    "raw_kafka_python": ("kafka-python alone (age of every record)", _kafka_python, {"fetch_max_wait_ms": _WAIT_MS}),
    "raw_confluent_kafka": ("confluent-kafka alone (age of every record)", _confluent,
                            {"fetch.wait.max.ms": _WAIT_MS}),
}


def measure_raw_latency(broker: EmbeddedBroker, client: str, plan: LatencyPlan) -> dict[str, Any]:
    """Pace ``plan`` into a fresh topic read by ``client``; the age summary of every record it received."""
    topic = f"age-{client}-{int(plan.rate)}-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic], partitions=plan.partitions)
    broker.create_topics([f"{topic}.probe"], partitions=1)
    label, read, overrides = RAW_CLIENTS[client]
    ready, stop = threading.Event(), threading.Event()
    ages: Ages = []
    reader = threading.Thread(target=read, daemon=True,
                              args=(broker.bootstrap_servers, topic, plan.partitions, ready, stop, ages, overrides))
    reader.start()
    machine = CpuClock()
    try:
        if not ready.wait(60):
            msg = f"{client} did not start reading {topic} within 60 s"
            raise BenchError(msg)
        fed = run_paced_producer(PacedConfig(broker.bootstrap_servers, topic, f"{topic}.probe", plan.rate,
                                             plan.duration_s, plan.symbols, shock_every=10**9, shock_size=0.15,
                                             warmup_ticks=10**9), timeout_s=plan.duration_s * 3 + 120)
        deadline = time.monotonic() + 60
        while len(ages) < fed["records"] and time.monotonic() < deadline and reader.is_alive():
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join(10)
    if len(ages) != fed["records"]:
        msg = f"{client} received {len(ages)} of {fed['records']} paced records at {plan.rate:.0f}/s"
        raise BenchError(msg)
    return {"label": label, "config": overrides, "target_rate": plan.rate, "achieved_rate": fed["achieved_rate"],
            "records": fed["records"],
            "age": latency_summary(ages), "machine_busy_share": machine.busy()}

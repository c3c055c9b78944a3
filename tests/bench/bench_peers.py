"""The rows rnnwatch is judged against: raw consumes with each client, and the naive per-message loop.

Every peer reads its partitions with ``assign()`` (no consumer group), so no run pays Tansu's group join (about
half of session_timeout_ms) and the peers cost seconds, not a join each. Clocks:

* raw kafka-python and the naive loop: from the poll that returned the first record to the poll that
  returned the last one, the definition ``rnnwatch run --until-caught-up`` uses for its own summary, so
  their ratio compares like with like; "from start" (from ``assign()``) is given beside it;
* raw confluent-kafka: from just before ``assign()`` to the last record, so librdkafka's background
  prefetch is inside the timing (a clock started at the first record would hide it).

Feed topics are fresh, so every peer starts at offset 0 explicitly: asking for "beginning" costs a ListOffsets
round trip that librdkafka retries after 500 ms against Tansu, a start-up cost that says nothing about consuming.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from tests.bench.bench_env import CpuClock
from tests.bench.bench_stats import rate

__all__ = ["CONFLUENT_TUNED", "KAFKA_PYTHON_TUNED", "BenchError", "naive_loop", "raw_confluent", "raw_kafka_python"]

_MIB = 1024 * 1024
# rnnwatch's default fetch sizes (settings.py); its group consumers fetch at most 512 KiB per partition
# (kafka.config), which made no measurable difference to this raw loop (6 pairs: 154k vs 155k rec/s), so it keeps
# the settings' 16 MiB. crc32c is a dependency, so CRCs are checked in C.
KAFKA_PYTHON_TUNED: dict[str, Any] = {"enable_auto_commit": False, "fetch_max_bytes": 64 * _MIB,
                                      "max_partition_fetch_bytes": 16 * _MIB, "max_poll_records": 20000}
# The same fetch sizes; fetch.queue.backoff.ms 10, because at its default (1000) librdkafka stops fetching for a
# whole second whenever its local queue passes queued.min.messages (100,000), which a consumer that drains the
# queue faster than that spends idle (1.4 s instead of 0.3 s for 300,000 records here). librdkafka defaults
# otherwise (check.crcs=false, fetch.wait.max.ms=500, queued.min.messages=100000).
CONFLUENT_TUNED: dict[str, Any] = {"enable.auto.commit": False, "fetch.max.bytes": 64 * _MIB,
                                   "max.partition.fetch.bytes": 16 * _MIB, "receive.message.max.bytes": 65 * _MIB,
                                   "fetch.queue.backoff.ms": 10}
_CONFLUENT_BATCH = 10000
_TIMEOUT_S = 300.0


class BenchError(RuntimeError):
    """A section could not measure what it claims (records missing, a run failed): the bench exits non-zero."""


def raw_kafka_python(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[str, Any]:
    """Consume every record with kafka-python, doing nothing with them; done at the fetch highwater.

    "Done" comes from ``consumer.highwater(tp)`` after a fetch, never ``end_offsets()`` (Tansu's ListOffsets
    stops at the last batch's first offset + 1).
    """
    consumer, tps = _kafka_python_at_zero(bootstrap, topic, partitions)
    timer = _Timer()
    try:
        while timer.elapsed() < _TIMEOUT_S:
            for records in consumer.poll(timeout_ms=200).values():
                timer.arrived()
                timer.done(len(records))
            if timer.n and all((hw := consumer.highwater(tp)) is not None and consumer.position(tp) >= hw
                               for tp in tps):
                break
    finally:
        consumer.close()
    return timer.result("raw kafka-python", expected)


def raw_confluent(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[str, Any]:
    """Consume every record with confluent-kafka ``consume(10000)``, checking only ``error()`` of each."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{time.monotonic_ns()}",
                         **CONFLUENT_TUNED})
    timer = _Timer()  # before assign(): librdkafka starts fetching in the background from there
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    try:
        while timer.n < expected and timer.elapsed() < _TIMEOUT_S:
            messages = consumer.consume(_CONFLUENT_BATCH, 0.2)
            for message in messages:
                if message.error() is not None:
                    msg = f"raw confluent-kafka: {message.error()}"
                    raise BenchError(msg)
            if messages:
                timer.arrived()
                timer.done(len(messages))
    finally:
        consumer.close()
    timed = timer.result("raw confluent-kafka", expected)
    # Headline rate includes the prefetch: the clock started before assign().
    timed["records_per_second_from_first_record"] = timed["records_per_second"]
    timed["records_per_second"] = timed["records_per_second_from_start"]
    return timed


def naive_loop(bootstrap: str, topic: str, partitions: int, model: str, cap: int) -> dict[str, Any]:
    """What a first version does: per message ``json.loads`` and one onnxruntime call, state in a dict.

    Reads the model's own metadata for the feature name and the initial state (as any user of the model
    would), keeps each key's state and last forecast in plain dicts, and flags |residual| > 4 std.
    """

    step = _NaiveModel(model)
    consumer, _ = _kafka_python_at_zero(bootstrap, topic, partitions)
    timer = _Timer()
    try:
        while timer.n < cap and timer.elapsed() < _TIMEOUT_S:
            for records in consumer.poll(timeout_ms=200, max_records=cap - timer.n).values():
                timer.arrived()
                for record in records:
                    step(record.key, json.loads(record.value))
                timer.done(len(records))
    finally:
        consumer.close()
    return {**timer.result("naive per-message loop", cap), "anomalies": step.anomalies, "keys": len(step.states)}


class _NaiveModel:
    def __init__(self, path: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as rnnwatch's default inference_threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.feature = json.loads(meta["rnnwatch.features"])[0]["name"]
        self.std = float(json.loads(meta["rnnwatch.scoring"])["residual_std"][0])
        self.init = {f"state_in.{s['name']}": np.broadcast_to(np.asarray(s.get("init", 0.0), np.float32),
                                                              (1, *s["shape"])).copy()
                     for s in json.loads(meta["rnnwatch.state"])}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.states: dict[bytes, dict[str, np.ndarray]] = {}
        self.forecasts: dict[bytes, float] = {}
        self.anomalies = 0

    def __call__(self, key: bytes, value: dict[str, Any]) -> None:
        price = float(value[self.feature])
        feed = {"x": np.array([[price]], dtype=np.float32), **self.states.get(key, self.init)}
        out = dict(zip(self.outputs, self.session.run(None, feed), strict=True))
        self.states[key] = {"state_in." + name.removeprefix("state_out."): v for name, v in out.items()
                            if name.startswith("state_out.")}
        previous = self.forecasts.get(key)
        if previous is not None and abs(price - previous) > 4 * self.std:
            self.anomalies += 1
        self.forecasts[key] = float(out["forecast"][0, 0])


def _kafka_python_at_zero(bootstrap: str, topic: str, partitions: int) -> tuple[Any, list[Any]]:
    """A tuned kafka-python consumer assigned every partition of ``topic`` from offset 0 (no group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, **KAFKA_PYTHON_TUNED)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    return consumer, tps


class _Timer:
    """The clocks of one peer run: from start and from the first batch, the harness's CPU, the machine's."""

    def __init__(self) -> None:
        self.start, self.cpu_start, self.machine = time.monotonic(), time.process_time(), CpuClock()
        self.first = self.last = 0.0
        self.n = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def arrived(self) -> None:
        """A batch of records is here (the first one starts the first-record clock)."""
        self.first = self.first or time.monotonic()

    def done(self, records: int) -> None:
        self.last = time.monotonic()
        self.n += records

    def result(self, what: str, expected: int) -> dict[str, Any]:
        """Rates from both clocks, CPU of the harness process (client threads included), machine load."""
        if self.n != expected:
            msg = f"{what} read {self.n} records, expected {expected}"
            raise BenchError(msg)
        seconds, cpu, n = self.last - self.first, time.process_time() - self.cpu_start, self.n
        return {"records": n, "seconds": round(seconds, 3), "records_per_second": rate(n, seconds),
                "seconds_from_start": round(self.last - self.start, 3),
                "records_per_second_from_start": rate(n, self.last - self.start), "cpu_seconds": round(cpu, 3),
                "cpu_us_per_record": round(cpu * 1e6 / n, 2) if n else None,
                "machine_busy_share": self.machine.busy()}

"""`make bench` (restore): how long a new owner takes to restore 100,000 keys from a long changelog.

Writes, through the service's own write path (``StateStore`` + ``KafkaSink`` on an embedded Tansu broker),
20 checkpoints of 100,000 keys of the bundled GRU model over 4 partitions: 2,000,000 snapshot records plus
one marker per partition and checkpoint, as a busy service leaves behind on a changelog that is not (yet)
compacted. Then restores all four partitions through ``RestoreJob`` twice:
  * ``whole_changelog`` - the restore before markers existed (and the fallback when a marker is not
    trusted): every record from the first one;
  * ``from_marker`` - the restore the service does now: the newest marker, checked against the committed
    position, and only the records after its low-water mark.
Prints one JSON document: seconds, records read and keys restored for each, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from typing import Any

import numpy as np

from rnnwatch.consumer.changelog import RestoreStats, StateStore
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.kafka import KafkaConfig, Transport, open_transport
from rnnwatch.consumer.runner import make_runner
from rnnwatch.consumer.settings import bundled_model_path, load_settings
from rnnwatch.consumer.sink import KafkaSink


def _transport(bootstrap: str) -> Transport:
    """The service's kafka-python clients (its default fetch sizes: 64 MiB fetches, 20,000 records per read)."""
    settings = load_settings({"bootstrap_servers": bootstrap, "input_topic": "bench", "group_id": "bench"}, env={})
    return open_transport(KafkaConfig.from_settings(settings))


def write_changelog(bootstrap: str, topic: str, keys: int, rounds: int, partitions: int) -> dict[str, Any]:
    """``rounds`` checkpoints of every key, each followed by a marker per partition; returns positions."""
    table = make_runner(load_signature(bundled_model_path()), input_topic="bench").table
    transport = _transport(bootstrap)
    reader = transport.reader()
    store = StateStore(table, topic, reader)
    sink = KafkaSink(producer=transport.producer(), output_topic="bench.anomalies", dead_letter_topic="bench.dlq",
                     changelog_topic=topic)
    rng = np.random.default_rng(0)
    per_partition = keys // partitions
    rows = {p: table.rows_for(p, [f"K{p}-{i:06d}".encode() for i in range(per_partition)])[0]
            for p in range(partitions)}
    for p in range(partitions):
        store.ends[p] = 0  # an empty, just restored partition
    start = time.monotonic()
    for r in range(rounds):
        for rs in rows.values():
            for column in table.columns:
                table.arrays[column.name][rs] = rng.standard_normal((rs.size, *column.shape))
            table.last_offset[rs] = r * per_partition + np.arange(rs.size)
            table.steps[rs] = r + 1
            table.dirty[rs] = True
        store.write_snapshots(sink.send_snapshot)
        sink.flush(120)
        store.apply_acks()
        store.write_markers(sink.send_snapshot, dict.fromkeys(rows, (r + 1) * per_partition))
        sink.flush(120)
        store.apply_acks()
    sink.close(30)
    reader.close()
    return {"seconds": round(time.monotonic() - start, 1), "position": rounds * per_partition,
            "records": sum(store.ends.values())}


def restore(bootstrap: str, topic: str, partitions: int, committed: int | None) -> dict[str, Any]:
    """One new owner restoring every partition; ``committed`` None makes it read whole partitions."""
    table = make_runner(load_signature(bundled_model_path()), input_topic="bench").table
    consumer = _transport(bootstrap).reader()
    store = StateStore(table, topic, consumer)
    job = store.restore_job(warn_s=3600)
    for p in range(partitions):
        job.add(p, committed)
    start = time.monotonic()
    done: list[RestoreStats] = []
    while len(done) < partitions:
        done += job.step(0.5)
    seconds = time.monotonic() - start
    consumer.close()
    return {"seconds": round(seconds, 2), "records_read": sum(s.records for s in done),
            "keys": sum(s.keys for s in done), "records_per_second": round(sum(s.records for s in done) / seconds)}


def measure_restore(broker: EmbeddedBroker, keys: int, rounds: int, partitions: int) -> dict[str, Any]:
    """Write the long changelog on ``broker`` (a fresh topic), then restore it whole and from the marker."""
    topic = f"bench-{uuid.uuid4().hex[:8]}.state"  # one changelog per measurement, on any broker
    broker.create_topics([topic], partitions=partitions)
    written = write_changelog(broker.bootstrap_servers, topic, keys, rounds, partitions)
    whole = restore(broker.bootstrap_servers, topic, partitions, None)
    bounded = restore(broker.bootstrap_servers, topic, partitions, written["position"])
    result: dict[str, Any] = {
        "keys": keys, "partitions": partitions, "checkpoints": rounds, "changelog_records": written["records"],
        "write_seconds": written["seconds"], "whole_changelog": whole, "from_marker": bounded,
        "speedup": round(whole["seconds"] / max(bounded["seconds"], 1e-9), 1)}
    if not whole["keys"] == bounded["keys"] == keys:
        result["error"] = f"restored {whole['keys']} / {bounded['keys']} keys, expected {keys}"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        result = measure_restore(broker, args.keys, args.rounds, args.partitions)
    report = {
        "restore": result,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    print(json.dumps(report, indent=2))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())

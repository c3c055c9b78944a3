"""`make bench`: rnnwatch run vs a plain kafka-python consumer on the same topic, same broker, same run.

Produces a synthetic feed (default 200,000 ticks over 1,000 symbols, 4 partitions) into an embedded Tansu
broker, then measures
  * baseline  - a plain kafka-python group consumer that only consumes (crc32c installed, fetch sizes
                raised like rnnwatch's), stopping when every partition reaches the fetch highwater;
  * rnnwatch  - `rnnwatch run --until-caught-up` with the bundled GRU model (decode, validate, step every
                key, score, events, checkpoints), as a subprocess, with its peak RSS;
and prints one JSON document with both rates and their ratio. Baseline runs are repeated and the best is
kept, so the ratio is not flattered by a slow baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kafka import KafkaConsumer

from rnnwatch.consumer.broker import EmbeddedBroker
from rnnwatch.consumer.feed import produce_ticks, synthetic_ticks
from rnnwatch.consumer.settings import bundled_model_path


def plain_consume(bootstrap: str, topic: str, expected: int) -> dict[str, float]:
    """Consume ``topic`` with a group consumer until every partition's position reaches its fetch highwater.

    "Done" comes from ``consumer.highwater(tp)`` after a fetch, never ``end_offsets()`` (Tansu's ListOffsets
    stops at the last batch's first offset + 1). The clock starts at the first record, so the group join
    (about half of session_timeout_ms on Tansu) is not counted.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"bench-plain-{time.monotonic_ns()}", auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
        max_poll_records=20000, session_timeout_ms=6000,
    )
    consumer.subscribe([topic])
    n, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=200)
        for records in batch.values():
            if not first:
                first = time.monotonic()
            n += len(records)
        if batch:
            last = time.monotonic()
        if first and _caught_up(consumer):
            break
    consumer.close()
    if n != expected:
        msg = f"baseline consumed {n} records, expected {expected}"
        raise RuntimeError(msg)
    seconds = max(last - first, 1e-9)
    return {"records": n, "seconds": round(seconds, 3), "records_per_second": round(n / seconds, 1)}


def _caught_up(consumer: KafkaConsumer) -> bool:
    tps = consumer.assignment()
    return bool(tps) and all((hw := consumer.highwater(tp)) is not None and consumer.position(tp) >= hw
                             for tp in tps)


def rnnwatch_run(bootstrap: str, topic: str, model: str) -> dict[str, object]:
    """`rnnwatch run --until-caught-up` as a subprocess; its JSON summary plus its own peak RSS (wait4)."""
    cmd = [sys.executable, "-m", "rnnwatch.consumer.cli", "run", "--bootstrap-servers", bootstrap,
           "--input-topic", topic, "--output-topic", f"{topic}.anomalies", "--dead-letter-topic", f"{topic}.dlq",
           "--group-id", f"bench-rnnwatch-{time.monotonic_ns()}", "--model", model, "--metrics-port", "0",
           "--session-timeout-ms", "6000", "--until-caught-up", "--log-level", "WARNING"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}: {stderr[-2000:]}"}
    summary: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    summary["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # Linux: ru_maxrss is in KiB
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--baseline-runs", type=int, default=2)
    parser.add_argument("--model", default=bundled_model_path())
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        topic = "bench-ticks"
        broker.create_topics([topic], partitions=args.partitions)
        start = time.monotonic()
        produced = produce_ticks(broker.bootstrap_servers, topic, synthetic_ticks(args.symbols, args.ticks))
        produce_s = time.monotonic() - start
        baselines = [plain_consume(broker.bootstrap_servers, topic, produced) for _ in range(args.baseline_runs)]
        best = max(baselines, key=lambda b: b["records_per_second"])
        ours = rnnwatch_run(broker.bootstrap_servers, topic, args.model)
    rate = ours.get("records_per_second")
    ratio = rate / best["records_per_second"] if isinstance(rate, float | int) else None
    report = {
        "feed": {"ticks": produced, "symbols": args.symbols, "partitions": args.partitions,
                 "produce_seconds": round(produce_s, 2)},
        "baseline_plain_kafka_python": best,
        "baseline_runs": baselines,
        "rnnwatch_run": ours,
        "ratio_rnnwatch_to_plain": round(ratio, 3) if ratio is not None else None,
        "model": Path(args.model).name,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    print(json.dumps(report, indent=2))
    return 0 if "error" not in ours else 1


if __name__ == "__main__":
    sys.exit(main())

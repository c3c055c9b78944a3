"""Memory with many keys: ``rnnwatch run`` holding one state row per key, against a run with few keys.

A feed of N ticks, one per key, leaves N keys in the state table (the default key TTL is a day). Its peak
RSS (``ru_maxrss`` of the process) is the number that matters to an operator sizing a pod; the bytes per key
are given two ways: peak RSS / keys (everything, interpreter and clients included) and the marginal cost,
(peak RSS - peak RSS of a run with 1,000 keys) / (key difference), beside the model's state bytes per key and
the state table's own bytes per key by part (model state, scorer state, bookkeeping, key index, key pointer).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.demo.feed import synthetic_ticks
from tests.bench.bench_feeds import produce_bulk
from tests.bench.bench_peers import BenchError
from tests.bench.bench_rnnwatch import Transport, run_args, run_until_caught_up
from tests.bench.bench_throughput import Feed

__all__ = ["measure_memory", "memory_row"]

log = logging.getLogger("bench")
_MIB = 1024 * 1024


def measure_memory(broker: EmbeddedBroker, model: str, state_bytes_per_key: int, transport: Transport,
                   keys: int, baseline: Feed) -> dict[str, Any]:
    many = Feed(keys, keys)
    runs = {}
    for feed in (baseline, many):
        topic = f"mem-{feed.symbols}-{uuid.uuid4().hex[:8]}"
        broker.create_topics([topic], partitions=feed.partitions)
        log.info("memory: %s, producing", feed.name)
        produce_bulk(broker.bootstrap_servers, topic, synthetic_ticks(feed.symbols, feed.ticks))
        log.info("memory: %s, rnnwatch run --until-caught-up (%s)", feed.name, transport.name)
        summary = run_until_caught_up(run_args(broker.bootstrap_servers, topic, model, transport,
                                               "--metrics-port", "0"), timeout_s=max(300.0, feed.ticks / 2000))
        if summary["processed"] != feed.ticks:
            msg = f"memory: rnnwatch processed {summary['processed']} of {feed.ticks} ticks of {feed.name}"
            raise BenchError(msg)
        runs[feed] = summary
    row = memory_row(many, runs[many], baseline, runs[baseline], state_bytes_per_key)
    return {**row, "table_bytes_per_key": table_bytes_per_key(model)}


def table_bytes_per_key(model: str) -> dict[str, int]:
    """The state table's bytes per key by part (``StateTable.bytes_per_key``), with their sum."""
    from rnnwatch.consumer.contract import load_signature
    from rnnwatch.consumer.runner import make_runner

    parts = make_runner(load_signature(model)).table.bytes_per_key()
    return {**parts, "sum": sum(parts.values())}


def memory_row(many: Feed, run: dict[str, Any], baseline: Feed, base_run: dict[str, Any],
               state_bytes_per_key: int) -> dict[str, Any]:
    """Bytes per key, total and marginal, with every number they are made of."""
    peak, base = float(run["peak_rss_mib"]), float(base_run["peak_rss_mib"])
    return {
        "keys": many.symbols, "feed": many.as_dict(),
        "peak_rss_mib": peak, "rss_last_sample_mib": run["rss_last_sample_mib"],
        "records_per_second": run["records_per_second"],
        "bytes_per_key": round(peak * _MIB / many.symbols),
        "marginal_bytes_per_key": round((peak - base) * _MIB / (many.symbols - baseline.symbols)),
        "state_bytes_per_key": state_bytes_per_key,
        "baseline": {"keys": baseline.symbols, "feed": baseline.as_dict(), "peak_rss_mib": base,
                     "rss_last_sample_mib": base_run["rss_last_sample_mib"]},
    }

"""Chaos: kill -9 a consumer at every point of its cycle, restart it, and compare with an uninterrupted run.

Pass condition per scenario (DESIGN §5): the set of distinct event ids equals the reference set, every
id's content equals the reference (floats to 1e-9 relative), every key's final state read back from the
changelog equals the reference state (bit-exact here: the EWMA model steps one key at a time identically),
including its step count, which proves no record was applied twice or skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from rnnwatch.consumer.changelog import read_snapshots
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.runner import make_runner
from tests.integration.helpers import changelog_reader, price_feed, produce, read_all

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]
PARTITIONS = 4
REPORT: dict[str, Any] = {}


def member_args(broker: EmbeddedBroker, topic: str, name: str, model: Path, *extra: str,
                session_timeout_ms: int | None = 6000) -> list[str]:
    """`rnnwatch run` for scenario ``name``: its own group, output, dead-letter and changelog topics.

    ``session_timeout_ms=None`` keeps rnnwatch's default session timeout.
    """
    session = [] if session_timeout_ms is None else ["--session-timeout-ms", str(session_timeout_ms)]
    return [sys.executable, "-m", "rnnwatch.consumer.cli", "run", "--bootstrap-servers", broker.bootstrap_servers,
            "--input-topic", topic, "--output-topic", f"{topic}.{name}", "--dead-letter-topic", f"{topic}.{name}.dlq",
            "--group-id", f"{topic}-{name}",
            "--auto-offset-reset", "earliest", "--model", str(model), "--metrics-port", "0", *session, *extra]


def _run(broker: EmbeddedBroker, topic: str, name: str, model: Path, env: dict[str, str] | None = None,
         timeout: float = 180, transport: str = "kafka-python") -> subprocess.CompletedProcess[str]:
    args = member_args(broker, topic, name, model, "--max-poll-records", "700", "--checkpoint-records", "1500",
                       "--until-caught-up", "--transport", transport)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def _events(broker: EmbeddedBroker, topic: str) -> tuple[dict[str, dict[str, Any]], int]:
    records = read_all(broker.bootstrap_servers, topic)
    by_id: dict[str, dict[str, Any]] = {}
    for rec in records:
        event_id = dict(rec.headers)["ce_id"].decode()
        body = orjson.loads(rec.value)
        if event_id in by_id:
            assert _same(by_id[event_id], body), f"{event_id} repeated with different content"
        by_id[event_id] = body
    return by_id, len(records) - len(by_id)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return bool(np.isclose(a, b, rtol=1e-9, atol=0))
    return bool(a == b)


def _final_state(broker: EmbeddedBroker, changelog: str, model: Path, topic: str) -> dict[tuple[int, bytes], Any]:
    table = make_runner(load_signature(model), input_topic=topic).table
    consumer = changelog_reader(broker.bootstrap_servers)
    try:
        latest, _ = read_snapshots(consumer, changelog, list(range(PARTITIONS)))
    finally:
        consumer.close()
    return {(p, key): table.decode(snap.value) for p, keys in latest.items() for key, snap in keys.items()}


def _assert_state_equal(got: dict[tuple[int, bytes], Any], want: dict[tuple[int, bytes], Any]) -> None:
    assert got.keys() == want.keys()
    for pk, snap in want.items():
        other = got[pk]
        assert (other.steps, other.input_offset, other.last_event_ms) == (snap.steps, snap.input_offset,
                                                                          snap.last_event_ms), pk
        for name, value in snap.values.items():
            np.testing.assert_array_equal(other.values[name], value, err_msg=f"{pk} {name}")


@pytest.fixture(scope="module")
def scenario(broker: EmbeddedBroker, ewma_path: Path) -> dict[str, Any]:
    """One feed (30 symbols x 250 ticks, shocks and poison), and the reference run over it."""
    topic = f"chaos-{int(time.time() * 1000)}"
    broker.create_topics([topic], partitions=PARTITIONS)
    feed = price_feed(30, 250, shock=(3, 200), seed=11)
    poison: list[tuple[bytes | None, bytes]] = [(b"S004", b"\xff\xfe"), (b"S005", b'{"symbol":"S005","price":1}')]
    produce(broker.bootstrap_servers, topic, feed[:3000] + poison + feed[3000:])
    ref = _run(broker, topic, "ref", ewma_path)
    assert ref.returncode == 0, ref.stderr
    summary = json.loads(ref.stdout.strip().splitlines()[-1])
    assert summary["records"] == len(feed) + 2 and summary["dead_lettered"] == 2
    events, dups = _events(broker, f"{topic}.ref")
    assert dups == 0 and len(events) > 10  # one event per incident (a shock and its reversal are one)
    state = _final_state(broker, f"{topic}-ref.state", ewma_path, topic)
    assert len(state) == 30 and all(s.steps == 250 for s in state.values())
    return {"topic": topic, "events": events, "state": state, "records": len(feed) + 2}


# every crash point with kafka-python; with librdkafka the ones where its commit and rebalance rules matter
@pytest.mark.parametrize(("point", "after", "transport"), [
    ("batch.before_events", 3, "kafka-python"), ("batch.after_events", 5, "kafka-python"),
    ("checkpoint.before_snapshots", 2, "kafka-python"), ("checkpoint.before_commit", 2, "kafka-python"),
    ("checkpoint.before_commit", 4, "kafka-python"), ("batch.after_events", 5, "confluent"),
    ("checkpoint.before_commit", 4, "confluent"),
])
def test_kill_minus_9_then_restart(broker: EmbeddedBroker, ewma_path: Path, scenario: dict[str, Any],
                                   point: str, after: int, transport: str) -> None:
    topic, name = scenario["topic"], f"{point.replace('.', '-').replace('_', '-')}-{after}-{transport}"
    crashed = _run(broker, topic, name, ewma_path, env={"RNNWATCH_CRASH_POINT": point,
                                                        "RNNWATCH_CRASH_AFTER": str(after)}, transport=transport)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    start = time.monotonic()
    again = _run(broker, topic, name, ewma_path, transport=transport)
    recovery_s = time.monotonic() - start
    assert again.returncode == 0, again.stderr[-2000:]
    events, duplicates = _events(broker, f"{topic}.{name}")
    assert events.keys() == scenario["events"].keys()
    for event_id, body in scenario["events"].items():
        assert _same(events[event_id], body), event_id
    _assert_state_equal(_final_state(broker, f"{topic}-{name}.state", ewma_path, topic), scenario["state"])
    REPORT[name] = {"duplicate_events": duplicates, "recovery_run_seconds": round(recovery_s, 2),
                    "reprocessed_records": json.loads(again.stdout.strip().splitlines()[-1])["records"]}
    print(json.dumps({name: REPORT[name]}))

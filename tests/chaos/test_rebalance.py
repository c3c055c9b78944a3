"""Chaos: scale 1 -> 3 -> 1 consumers while the feed flows; partitions move with their state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import committed, price_feed, produce
from test_crash_recovery import PARTITIONS, _assert_state_equal, _events, _final_state, _run, _same

from rnnwatch.consumer.broker import EmbeddedBroker

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]


def _member(broker: EmbeddedBroker, topic: str, name: str, model: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnwatch.consumer.cli", "run", "--bootstrap-servers", broker.bootstrap_servers,
         "--input-topic", topic, "--output-topic", f"{topic}.{name}", "--dead-letter-topic", f"{topic}.{name}.dlq",
         "--group-id", f"{topic}-{name}", "--model", str(model), "--metrics-port", "0", "--session-timeout-ms",
         "6000", "--max-poll-records", "300", "--checkpoint-interval-ms", "500"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def _feed_in_background(broker: EmbeddedBroker, topic: str, feed: list[tuple[bytes | None, bytes]],
                        chunk: int) -> threading.Thread:
    def flow() -> None:
        for i in range(0, len(feed), chunk):
            produce(broker.bootstrap_servers, topic, feed[i:i + chunk])
            time.sleep(0.25)

    feeder = threading.Thread(target=flow)
    feeder.start()
    return feeder


def _wait_all_committed(broker: EmbeddedBroker, topic: str, group: str, total: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(v or 0 for v in committed(broker.bootstrap_servers, group, topic).values()) == total:
            return
        time.sleep(0.5)


def _matches_reference(broker: EmbeddedBroker, topic: str, name: str, model: Path) -> int:
    """Assert events and final state equal an uninterrupted run's; return the duplicate events seen."""
    ref = _run(broker, topic, "ref", model)
    assert ref.returncode == 0, ref.stderr[-2000:]
    want, _ = _events(broker, f"{topic}.ref")
    got, duplicates = _events(broker, f"{topic}.{name}")
    assert got.keys() == want.keys()
    for event_id, body in want.items():
        assert _same(got[event_id], body), event_id
    _assert_state_equal(_final_state(broker, f"{topic}-{name}.state", model, topic),
                        _final_state(broker, f"{topic}-ref.state", model, topic))
    return duplicates


def test_scale_one_three_one_while_the_feed_flows(broker: EmbeddedBroker, ewma_path: Path) -> None:
    topic = f"scale-{int(time.time() * 1000)}"
    broker.create_topics([topic], partitions=PARTITIONS)
    feed = price_feed(24, 200, shock=(2, 150), seed=21)
    feeder = _feed_in_background(broker, topic, feed, 200)
    start = time.monotonic()
    first = _member(broker, topic, "scaled", ewma_path)
    time.sleep(4)
    extra = [_member(broker, topic, "scaled", ewma_path) for _ in range(2)]
    time.sleep(8)
    for proc in extra:
        proc.send_signal(signal.SIGTERM)
    for proc in extra:
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    feeder.join()
    _wait_all_committed(broker, topic, f"{topic}-scaled", len(feed))
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err[-2000:]
    elapsed = time.monotonic() - start
    duplicates = _matches_reference(broker, topic, "scaled", ewma_path)
    report: dict[str, Any] = {"duplicate_events": duplicates, "scenario_seconds": round(elapsed, 1),
                              "revocations_logged": err.count("revoked partitions")}
    print(json.dumps({"scale-1-3-1": report}))
    assert report["revocations_logged"] >= 3  # initial join, scale-up and scale-down all moved partitions


def test_zombie_frozen_past_its_session_timeout(broker: EmbeddedBroker, ewma_path: Path) -> None:
    topic = f"zombie-{int(time.time() * 1000)}"
    broker.create_topics([topic], partitions=PARTITIONS)
    feed = price_feed(24, 200, shock=(2, 150), seed=22)
    feeder = _feed_in_background(broker, topic, feed, 150)
    zombie = _member(broker, topic, "zombie", ewma_path)
    time.sleep(5)
    zombie.send_signal(signal.SIGSTOP)  # frozen mid-stream, past its 6 s session timeout
    survivor = _member(broker, topic, "zombie", ewma_path)
    time.sleep(12)
    zombie.send_signal(signal.SIGCONT)  # wakes up believing it still owns its partitions
    feeder.join()
    _wait_all_committed(broker, topic, f"{topic}-zombie", len(feed))
    for proc in (zombie, survivor):
        proc.send_signal(signal.SIGTERM)
    for proc in (zombie, survivor):
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
    duplicates = _matches_reference(broker, topic, "zombie", ewma_path)
    print(json.dumps({"zombie": {"duplicate_events": duplicates}}))

"""`rnnwatch run --log-format json`: every line is one JSON object, and the lines about a partition, a
record or the broker carry their fields (event, topic, partition(s), offset(s), key, reason), so a log
shipper filters without parsing messages."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from tests.integration.helpers import price_feed, produce

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "rnnwatch.consumer.cli"]


def _by_event(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [doc for doc in lines if doc.get("event") == event]


def test_json_log_lines_parse_and_carry_their_fields(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                                     ewma_path: Path) -> None:
    topic = topic_factory(partitions=2)
    feed = price_feed(4, 30)
    produce(broker.bootstrap_servers, topic, [*feed, (b"S001", b"{not json")])
    out = subprocess.run([*CLI, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", topic,
                          "--group-id", f"{topic}-g", "--auto-offset-reset", "earliest", "--model", str(ewma_path),
                          "--metrics-port", "0", "--session-timeout-ms", "6000", "--until-caught-up",
                          "--log-format", "json", "--log-level", "DEBUG"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]  # every line parses
    assert all({"time", "level", "logger", "message"} <= set(doc) for doc in lines)

    (assigned,) = _by_event(lines, "assigned")
    assert (assigned["topic"], assigned["partitions"]) == (topic, [0, 1])
    restored = _by_event(lines, "restored")
    assert sorted(doc["partition"] for doc in restored) == [0, 1]
    assert all(doc["topic"] == f"{topic}-g.state" and doc["count"] == 0 and "seconds" in doc for doc in restored)
    commits = _by_event(lines, "commit")
    assert commits and {int(p) for doc in commits for p in doc["offsets"]} == {0, 1}
    (dead,) = _by_event(lines, "dead_letter")
    assert (dead["topic"], dead["key"], dead["reason"], dead["count"]) == (topic, "S001", "invalid_json", 1)
    assert isinstance(dead["partition"], int) and isinstance(dead["offset"], int)

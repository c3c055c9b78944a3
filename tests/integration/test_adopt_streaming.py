"""Models exported elsewhere and wrapped by `rnnwatch adopt` stream through the unchanged runtime on Kafka."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from tests.integration.helpers import price_feed, produce, read_all, start_run

pytestmark = [pytest.mark.integration, pytest.mark.export]


def test_every_adopted_model_runs_on_kafka(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                           adopted_models: dict[str, tuple[Path, Path]]) -> None:
    topic = topic_factory(partitions=2)
    feed = price_feed(8, 60, shock=(5, 45), seed=4)
    produce(broker.bootstrap_servers, topic, feed)
    procs = {case: start_run(broker.bootstrap_servers, topic, case, step) for case, (_, step) in adopted_models.items()}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{case}: {err}"
        assert json.loads(out.strip().splitlines()[-1])["processed"] == len(feed), case
        events = [orjson.loads(e.value) for e in read_all(broker.bootstrap_servers, f"{topic}.{case}")]
        shock = [e for e in events if e["key"] == "S005" and e["actual"]["price"] > 1.2 * e["expected"]["price"]]
        assert shock, f"{case}: the 30 % shock of S005 was not flagged ({len(events)} events)"
        assert all(e["model"]["name"] == f"adopted-{case}" for e in events)

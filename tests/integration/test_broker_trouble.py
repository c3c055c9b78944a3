"""The broker goes away mid-run: checkpoints are postponed (nothing committed), /readyz says so, no crash.

Tansu keeps its data only in memory, so "the broker comes back with the data" can only be shown on real
Kafka; what is checked here is the detector's side: it notices, reports not-ready, and keeps retrying.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import price_feed, produce

from rnnwatch.consumer.broker import EmbeddedBroker
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import load_settings

pytestmark = pytest.mark.integration


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_broker_lost_mid_run_makes_the_detector_unready_not_dead(ewma_path: Path) -> None:
    with EmbeddedBroker() as own:  # this test stops its broker: not the shared one
        own.create_topics(["ticks"], partitions=1)
        produce(own.bootstrap_servers, "ticks", price_feed(3, 30))
        service = Service(load_settings({
            "bootstrap_servers": own.bootstrap_servers, "input_topic": "ticks", "group_id": "g",
            "model": str(ewma_path), "metrics_port": "0", "metrics_host": "127.0.0.1", "session_timeout_ms": "6000",
            "checkpoint_interval_ms": "12000", "shutdown_grace_ms": "6000"}, env={})).start()
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (service.summary.processed == 90 and _readyz(
                service.metrics_port)[0] == 200):
            time.sleep(0.2)
        assert service.summary.processed == 90
        produce(own.bootstrap_servers, "ticks", price_feed(3, 35)[90:])  # state changes not yet checkpointed
        while time.monotonic() < deadline and service.summary.processed < 105:
            time.sleep(0.1)
        own.stop()
        while time.monotonic() < deadline and _readyz(service.metrics_port)[0] == 200:
            time.sleep(0.5)
        status, detail = _readyz(service.metrics_port)
        assert (status, detail.strip()) == (503, "broker unreachable: checkpoints are postponed")
        assert thread.is_alive()  # still running, retrying
        live = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/healthz", timeout=5)
        assert live.status == 200
        live.close()
        service.request_stop()
        thread.join(timeout=90)

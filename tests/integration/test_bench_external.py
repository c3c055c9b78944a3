"""`make bench --bootstrap-servers`: every section runs against a cluster the bench did not start.

The "external" cluster here is the test session's own Tansu; what matters is that the bench measures on it
(its feed topic appears there, the report names it) and never starts a broker of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from tests.bench import bench

pytestmark = pytest.mark.integration


def test_bench_runs_on_the_given_cluster_without_starting_a_broker(
        broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_own_broker(self: EmbeddedBroker) -> EmbeddedBroker:
        raise AssertionError("the bench started its own broker despite --bootstrap-servers")

    monkeypatch.setattr(EmbeddedBroker, "start", no_own_broker)  # the session's broker is already up
    out = tmp_path / "report.json"
    code = bench.main(["--bootstrap-servers", broker.bootstrap_servers, "--quick", "--only", "peers",
                       "--transports", "kafka-python", "--naive-records", "1000", "--output", str(out)])

    report = json.loads(out.read_text())
    assert code == 0, report["errors"]
    assert report["machine"]["broker"].startswith(f"external: {broker.bootstrap_servers}")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        feeds = [t for t in admin.list_topics() if t.startswith("feed-50000-1000-")]
    finally:
        admin.close()
    assert feeds, "the peers feed was not written to the given cluster"
    assert report["sections"]["peers"]["rnnwatch"]["kafka-python"]["records"] == 50_000

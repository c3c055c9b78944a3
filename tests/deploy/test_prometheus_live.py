"""A real Prometheus scrapes a running `rnnwatch run` over a real broker; every dashboard and alert query
parses, every metric they use exists in the scraped data, and the key panels return sensible values."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rnnwatch.consumer.demo.broker import EmbeddedBroker, free_port
from tests.integration.helpers import price_feed, produce

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRAPE_S = 1


def _api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def detector(broker: EmbeddedBroker, bundled_model: Path) -> Iterator[int]:
    topic = f"prom-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic], partitions=2)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rnnwatch.consumer.cli", "run", "--bootstrap-servers",
                             broker.bootstrap_servers, "--input-topic", topic, "--group-id", f"g-{topic}",
                             "--auto-offset-reset", "earliest",
                             "--model", str(bundled_model), "--metrics-host", "127.0.0.1", "--metrics-port",
                             str(port), "--session-timeout-ms", "6000", "--checkpoint-interval-ms", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    feed = price_feed(12, 3000, shock=(4, 100), seed=9)
    bad: list[tuple[bytes | None, bytes]] = [(b"S001", b"not json")]
    stop = threading.Event()

    def flow() -> None:  # ticks keep flowing until the tests are done (at most ~150 s)
        for i in range(0, len(feed), 240):
            if stop.is_set():
                return
            produce(broker.bootstrap_servers, topic, feed[i:i + 240] + (bad if i == 960 else []))
            time.sleep(0.5)

    _wait_healthy(port, proc)  # its port is taken before Prometheus picks one of its own
    feeder = threading.Thread(target=flow, daemon=True)
    feeder.start()
    try:
        yield port
        assert proc.poll() is None, f"rnnwatch run exited early: {proc.communicate()[1][-3000:]}"
    finally:
        stop.set()
        feeder.join(timeout=60)
        proc.terminate()
        print(proc.communicate(timeout=60)[1][-4000:])  # shown by pytest when the test fails


@pytest.fixture(scope="module")
def prometheus(detector: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path = tmp_path_factory.mktemp("prometheus")
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: `make test` installs the Debian package"
    port = free_port()
    rules = tmp_path / "rules.yml"
    rules.write_text((DEPLOY / "prometheus" / "rules.yml").read_text())
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "rnnwatch", "static_configs": [{"targets": [f"127.0.0.1:{detector}"]}]}],
    }))
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                up = _api(port, "query", query='sum_over_time(up{job="rnnwatch"}[1m])')["data"]["result"]
                if up and float(up[0]["value"][1]) >= 8:
                    break
            except OSError:
                pass
            time.sleep(1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_healthy(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"rnnwatch run exited: {proc.communicate()[1][-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("rnnwatch run did not serve /healthz within 30 s")


def _dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "rnnwatch.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def _rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
    return [(r["alert"], r["expr"]) for g in groups for r in g["rules"]]


def _concrete(expr: str) -> str:
    """Grafana variables -> values Prometheus accepts (what Grafana would send)."""
    return expr.replace("$__rate_interval", "15s").replace("$job", ".*")


METRIC = re.compile(r"\b((?:rnnwatch|process)_[a-z_]+|up)\b")


def test_every_query_parses_and_every_metric_exists(prometheus: int) -> None:
    names = set(_api(prometheus, "label/__name__/values")["data"])
    for where, expr in _dashboard_exprs() + _rule_exprs():
        answer = _api(prometheus, "query", query=_concrete(expr))
        assert answer["status"] == "success", f"{where}: {answer}"
        for metric in METRIC.findall(expr):
            assert metric in names, f"{where}: {metric} is not in the scraped data"


def test_throughput_and_anomaly_panels_have_data(prometheus: int) -> None:
    exprs: dict[str, str] = {}
    for title, expr in _dashboard_exprs():
        exprs.setdefault(title, expr)  # a panel's first query: consumed records/s for "Throughput"
    deadline = time.monotonic() + 30  # the group join takes a few seconds; ticks keep flowing meanwhile
    while True:
        throughput = _api(prometheus, "query", query=_concrete(exprs["Throughput (records/s)"]))["data"]["result"]
        if (throughput and float(throughput[0]["value"][1]) > 0) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert throughput and float(throughput[0]["value"][1]) > 0
    total = _api(prometheus, "query", query='sum(rnnwatch_records_consumed_total{job="rnnwatch"})')["data"]["result"]
    assert 0 < float(total[0]["value"][1]) <= 12 * 3000 + 1
    anomalies = _api(prometheus, "query", query=_concrete(exprs["Anomalies by severity and model (/s)"]))
    series = anomalies["data"]["result"]
    assert {s["metric"]["severity"] for s in series} == {"minor", "major", "critical"}
    assert all((s["metric"]["name"], s["metric"]["version"]) == ("prices-gru", "1") for s in series)
    flagged = _api(prometheus, "query", query='sum(rnnwatch_anomalies_total{job="rnnwatch"})')["data"]["result"]
    assert float(flagged[0]["value"][1]) >= 1
    failed = _api(prometheus, "query", query='rnnwatch_records_failed_total{reason="invalid_json"}')
    assert float(failed["data"]["result"][0]["value"][1]) == 1

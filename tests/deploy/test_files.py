"""Operations files, checked with the real tools where they run here (promtool, kubectl kustomize)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: `make test` installs it (Debian package)"
    return path


# ---------------------------------------------------------------- Dockerfile
def _stages() -> list[list[str]]:
    lines, stages = [], []
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1] + " " + line
        elif line and not line.startswith("#"):
            lines.append(line)
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_is_multistage_slim_nonroot_and_torch_free() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert re.match(r"FROM python:3\.\d+-slim$", final[0])
    user = [line for line in final if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in {"root", "0"}
    assert 'ENTRYPOINT ["rnnwatch"]' in final
    assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in final)
    assert "EXPOSE 9108" in final
    env = " ".join(line for line in final if line.startswith("ENV "))
    assert "RNNWATCH_METRICS_HOST=0.0.0.0" in env  # loopback by default: probes and scrapes come from outside
    text = "\n".join(line for stage in stages for line in stage)
    assert "torch" not in text.lower()
    assert "[export]" not in text
    assert not any(re.search(r"apt-get install.*(gcc|build-essential)", line) for line in final)


def test_dockerfile_copies_only_what_exists() -> None:
    for stage in _stages():
        for line in stage:
            if line.startswith("COPY ") and "--from=" not in line:
                for src in line.split()[1:-1]:
                    assert (ROOT / src).exists(), src


# ---------------------------------------------------------------- compose
def test_compose_services_and_mounted_files_exist() -> None:
    path = DEPLOY / "compose" / "docker-compose.yml"
    doc = yaml.safe_load(path.read_text())
    services = doc["services"]
    assert {"kafka", "topics", "rnnwatch", "feed", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "KRaft" in path.read_text() or services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["rnnwatch"]["build"]["dockerfile"] == "Dockerfile"
    assert (path.parent / services["rnnwatch"]["build"]["context"] / "Dockerfile").exists()
    assert services["feed"]["command"][0] == "produce"
    assert "9108:9108" in services["rnnwatch"]["ports"]
    # rnnwatch refuses to start on a changelog that is not compacted (changelog_check=refuse)
    init = " ".join(services["topics"]["command"]) if isinstance(services["topics"]["command"], list) else str(
        services["topics"]["command"])
    assert "--topic rnnwatch.state --partitions 4 --config cleanup.policy=compact" in init
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            host = volume.split(":")[0]
            assert (path.parent / host).exists(), f"{name}: {host} is not in the repository"


# ---------------------------------------------------------------- Prometheus rules
def _rules() -> list[dict[str, Any]]:
    return yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"][0]["rules"]


def test_promtool_check_rules() -> None:
    out = subprocess.run([_tool("promtool"), "check", "rules", str(DEPLOY / "prometheus" / "rules.yml")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_cover_every_alert() -> None:
    tests = DEPLOY / "prometheus" / "tests" / "rules_test.yml"
    out = subprocess.run([_tool("promtool"), "test", "rules", str(tests)], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = yaml.safe_load(tests.read_text())
    for rule in _rules():
        cases = [c for t in doc["tests"] for c in t["alert_rule_test"] if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in cases), f"{rule['alert']} never shown firing"
        assert any(not c["exp_alerts"] for c in cases), f"{rule['alert']} never shown silent"


def test_every_alert_has_labels_annotations_and_a_runbook_section() -> None:
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    for rule in _rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert f"## {rule['alert']}" in runbook and anchor == rule["alert"].lower()


# ---------------------------------------------------------------- Grafana
def test_dashboard_structure() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "rnnwatch.json").read_text())
    assert dash["uid"] == "rnnwatch-overview"
    names = {v["name"] for v in dash["templating"]["list"]}
    assert "datasource" in names
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for needle in ("throughput", "anomalies by severity", "anomaly rate", "lag", "latency", "active keys",
                   "state resets", "dead-lettered", "rebalances", "checkpoint", "commit", "cpu", "model info"):
        assert needle in titles, needle
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]


# ---------------------------------------------------------------- Kubernetes
def _render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / overlay)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("overlay", ["base", "overlays/keda", "overlays/prometheus-operator"])
def test_kustomize_renders_a_sound_deployment(overlay: str) -> None:
    docs = _render(overlay)
    kinds = {d["kind"]: d for d in docs}
    deploy = kinds["Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    toml = kinds["ConfigMap"]["data"]["rnnwatch.toml"]
    grace_ms = int(re.search(r"shutdown_grace_ms = (\d+)", toml).group(1))  # type: ignore[union-attr]
    assert pod["terminationGracePeriodSeconds"] * 1000 > grace_ms
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert all(deploy["spec"]["template"]["metadata"]["labels"][k] == v for k, v in selector.items())
    svc = kinds["Service"]
    assert all(deploy["spec"]["template"]["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())
    assert svc["spec"]["ports"][0]["port"] == 9108
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]


def test_keda_overlay_scales_on_group_lag() -> None:
    scaled = next(d for d in _render("overlays/keda") if d["kind"] == "ScaledObject")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == "rnnwatch"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "rnnwatch"
    assert scaled["spec"]["maxReplicaCount"] <= 4


def test_prometheus_operator_overlay_uses_the_same_rules() -> None:
    docs = _render("overlays/prometheus-operator")
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"][0]["rules"] == _rules()
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    svc = next(d for d in docs if d["kind"] == "Service")
    assert all(svc["metadata"]["labels"][k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    generator = DEPLOY / "k8s" / "overlays" / "prometheus-operator" / "make_prometheusrule.py"
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_prometheusrule", generator)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (generator.parent / "prometheusrule.yaml").read_text() == module.render(), "regenerate prometheusrule.yaml"

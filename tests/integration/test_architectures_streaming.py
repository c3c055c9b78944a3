"""Several architectures stream through the same, unchanged runtime over a real broker at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.export.config import ArchOptions
from rnnwatch.export.convert import StepGraph, export_step_model
from rnnwatch.export.registry import ARCHITECTURES
from rnnwatch.export.signature import Scoring, StepSignatureSpec
from rnnwatch.export.transform import Transform
from tests.integration.helpers import price_feed, produce, read_all, start_run

pytestmark = [pytest.mark.integration, pytest.mark.export]
ARCHS = ("tdnn", "narx", "esn", "clockwork", "birnn", "stacked")


def _model(arch: str, path: Path) -> Path:
    """A real exported step model; untrained weights, a price transform with a 1 % daily scale."""
    torch.manual_seed(0)
    graph = StepGraph(ARCHITECTURES[arch].build(1, ArchOptions(hidden=8, reservoir=30), 0),
                      Transform("log-return", np.zeros(1), np.full(1, 0.01), np.ones(1)))
    spec = StepSignatureSpec(name=f"it-{arch}", version="1", architecture=arch, features=[("price", "positive")],
                             states=graph.state_spec(),
                             scoring=Scoring(warmup_steps=5, threshold=0.99999, residual_std=(1.0,)))
    export_step_model(graph, path, spec)
    return path


def test_six_architectures_at_once(broker: EmbeddedBroker, topic_factory: Callable[..., str],
                                   tmp_path: Path) -> None:
    topic = topic_factory(partitions=2)
    feed = price_feed(8, 60, shock=(5, 45), seed=4)
    produce(broker.bootstrap_servers, topic, feed)
    procs = {}
    for arch in ARCHS:
        model = _model(arch, tmp_path / f"{arch}.onnx")
        procs[arch] = start_run(broker.bootstrap_servers, topic, arch, model)
    for arch, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"{arch}: {err}"
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["processed"] == len(feed), arch
        events = [orjson.loads(e.value) for e in read_all(broker.bootstrap_servers, f"{topic}.{arch}")]
        assert any(e["key"] == "S005" and e["actual"]["price"] > 1.2 * e["expected"]["price"] for e in events), arch
        assert all(e["model"]["name"] == f"it-{arch}" for e in events)

"""`make bench-arch`: per-architecture step cost through the runtime's own StepModel (onnxruntime, 1 thread).

For every `--arch`, export a step graph with default options (untrained weights cost the same as trained
ones), then time `StepModel.run` at batch 1 and batch 1,000: median latency per call, steps/s (keys stepped
per second), and state bytes per key. Prints JSON, then the Markdown table used in the README.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.session import StepModel
from rnnwatch.export.config import ArchOptions
from rnnwatch.export.convert import StepGraph, export_step_model
from rnnwatch.export.registry import ARCHITECTURES
from rnnwatch.export.signature import Scoring, StepSignatureSpec
from rnnwatch.export.transform import Transform


def _export(arch: str, path: Path) -> None:
    torch.manual_seed(0)
    graph = StepGraph(ARCHITECTURES[arch].build(1, ArchOptions(), 0), Transform("log-return", np.zeros(1), np.ones(1),
                                                                         np.ones(1)))
    spec = StepSignatureSpec(name=arch, version="bench", architecture=arch, features=[("price", "positive")],
                             states=graph.state_spec(), scoring=Scoring())
    export_step_model(graph, path, spec)


def _time(model: StepModel, batch: int, repeats: int) -> float:
    sig = model.signature
    x = np.full((batch, 1), 100.0, dtype=np.float32)
    states = {s.name: np.broadcast_to(s.init, (batch, *s.shape)).copy() for s in sig.states}
    for _ in range(5):
        model.run(x, states)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.run(x, states)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ARCHITECTURES:
            path = Path(tmp) / f"{arch}.onnx"
            _export(arch, path)
            sig = load_signature(path)
            model = StepModel(sig, threads=1)
            t1, t1000 = _time(model, 1, 300), _time(model, 1000, 40)
            rows.append({"arch": arch, "batch1_us": round(t1 * 1e6, 1), "batch1_steps_per_s": round(1 / t1),
                         "batch1000_us": round(t1000 * 1e6, 1), "batch1000_steps_per_s": round(1000 / t1000),
                         "state_bytes_per_key": sig.state_bytes_per_key})
    print(json.dumps(rows, indent=2))
    print("\n| `--arch` | batch 1: µs/step | batch 1: steps/s | batch 1,000: µs/call | batch 1,000: key-steps/s "
          "| state bytes/key |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['arch']}` | {r['batch1_us']} | {r['batch1_steps_per_s']:,} | {r['batch1000_us']:,} | "
              f"{r['batch1000_steps_per_s']:,} | {r['state_bytes_per_key']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

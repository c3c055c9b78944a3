"""`rnnwatch check MODEL.onnx`: validate a step model and print what the runtime will see."""

from __future__ import annotations

import argparse
import json

import numpy as np

from rnnwatch.consumer.contract import StepSignature, load_signature
from rnnwatch.consumer.session import StepModel

__all__ = ["register", "summarize"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="Validate a step model against the contract and print its summary.")
    p.add_argument("model", help="Path to the .onnx step model.")
    p.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    signature = load_signature(args.model)
    _smoke_step(signature)
    if args.json:
        print(json.dumps(_as_dict(signature), indent=2))
    else:
        print(summarize(signature))
    return 0


def _smoke_step(signature: StepSignature) -> None:
    """Run one step at batch 1 and batch 3 from the declared initial state: the graph must actually execute."""
    model = StepModel(signature)
    for batch in (1, 3):
        x = np.ones((batch, signature.n_features), dtype=np.float32)
        states = {s.name: np.broadcast_to(s.init, (batch, *s.shape)).copy() for s in signature.states}
        model.run(x, states)


def _as_dict(s: StepSignature) -> dict[str, object]:
    return {
        "path": s.path, "sha256": s.sha256, "name": s.name, "version": s.version, "architecture": s.architecture,
        "features": [{"name": f.name, "domain": f.domain} for f in s.features],
        "states": [{"name": st.name, "shape": list(st.shape), "bytes": st.size * 4} for st in s.states],
        "state_bytes_per_key": s.state_bytes_per_key,
        "outputs": ["forecast", *(["forecast_scale"] if s.has_forecast_scale else []),
                    *(["score"] if s.has_score else [])],
        "scoring": {"warmup_steps": s.scoring.warmup_steps, "threshold": s.scoring.threshold,
                    "halflife_steps": s.scoring.halflife_steps, "residual_std": list(s.scoring.residual_std)},
        "provenance": dict(s.provenance),
    }


def summarize(s: StepSignature) -> str:
    d = _as_dict(s)
    lines = [
        f"OK  {s.path}",
        f"model         {s.name} {s.version} ({s.architecture})  sha256 {s.sha256[:16]}",
        "features      " + ", ".join(f"{f.name} ({f.domain})" for f in s.features),
        "state         " + ", ".join(f"{st.name} {list(st.shape)}" for st in s.states)
        + f"  = {s.state_bytes_per_key} bytes/key",
        "outputs       " + ", ".join(d["outputs"]),  # type: ignore[arg-type]
        f"scoring       threshold {s.scoring.threshold:g}, warm-up {s.scoring.warmup_steps} steps, "
        f"half-life {s.scoring.halflife_steps:g} steps, residual std {list(s.scoring.residual_std)}",
        f"scorer        {s.scoring.scorer}, threshold_surprise "
        f"{s.scoring.threshold_surprise if s.scoring.threshold_surprise is not None else 'from threshold'}"
        + (f", options {json.dumps(dict(s.scoring.scorer_options))}" if s.scoring.scorer_options else ""),
    ]
    for key, value in sorted(s.provenance.items()):
        lines.append(f"provenance    {key}: {value if not isinstance(value, dict | list) else json.dumps(value)}")
    return "\n".join(lines)

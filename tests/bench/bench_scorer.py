"""Per-wave cost of the residual scorer (score + remember), this checkout against a git revision, paired.

    .venv/bin/python -m tests.bench.bench_scorer [--base 6f7a925] [--keys 10 1000] [--rounds 7] [--block-steps 200]

The base revision's ``consumer/`` is extracted to a temporary package (imports renamed) so both run in one
process on the same waves; rounds alternate base/new so drift and other load hit both alike. Prints JSON:
CPU microseconds per wave (process time, so other processes on a shared machine count less; median over
rounds) per spec and key count, and the ratio new / base. A base older than the scorer specs (c9203df: the
one Gaussian scorer) is given only the config fields it knows, so it runs its one scorer for every spec.
``--block-steps N`` times this checkout's ``score_block`` (the runner's path for a poll's consecutive waves of the
same keys) over blocks of N waves against the base's wave-by-wave ``score``: the cost of a wave as `run` pays it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.bench_stats import paired

ROOT = Path(__file__).resolve().parents[2]


def _base_package(rev: str, where: Path) -> str:
    pkg = where / "rnnwatch_base" / "consumer"
    pkg.mkdir(parents=True)
    (where / "rnnwatch_base" / "__init__.py").write_text("")
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "consumer"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where / "rnnwatch_base"), "--strip-components=0"], input=tar, check=True)
    for f in pkg.rglob("*.py"):
        f.write_text(f.read_text().replace("rnnwatch.consumer", "rnnwatch_base.consumer"))
    sys.path.insert(0, str(where))
    return "rnnwatch_base.consumer"


def _setup(pkg: str, spec: str, n_keys: int) -> tuple[Any, Any, np.ndarray]:
    scoring = importlib.import_module(f"{pkg}.scoring")
    state = importlib.import_module(f"{pkg}.state")
    wanted = {"threshold": 0.9999, "warmup_steps": 10, "halflife_steps": 250.0,
              "residual_std": np.ones(1, dtype=np.float32), "uses_model_scale": True, "spec": spec,
              "domain": "positive"}
    known = {f.name for f in dataclasses.fields(scoring.ScorerConfig)}
    cfg = scoring.ScorerConfig(**{k: v for k, v in wanted.items() if k in known})
    scorer = scoring.ResidualScorer(cfg, 1)
    table = state.StateTable(scorer.columns(), identity="bench")
    rows, _ = table.rows_for(0, [f"k{i}".encode() for i in range(n_keys)])
    return scorer, table, rows


def _time(pkg: str, spec: str, n_keys: int, waves: int, data: np.ndarray) -> float:
    scorer, table, rows = _setup(pkg, spec, n_keys)
    steps = np.zeros(n_keys, dtype=np.int64)
    scale = np.full((n_keys, 1), 0.01, dtype=np.float32)
    t0 = time.process_time()
    for w in range(waves):
        x = data[w]
        scorer.score(table, rows, x, steps)
        scorer.remember(table, rows, x, scale)
        steps += 1
    return (time.process_time() - t0) / waves * 1e6


def _time_blocks(pkg: str, spec: str, n_keys: int, waves: int, data: np.ndarray, block_steps: int) -> float:
    """Per-wave CPU of ``score_block`` over blocks of ``block_steps`` waves (what the runner does with few keys);
    a revision without it scores wave by wave (``_time``)."""
    scorer, table, rows = _setup(pkg, spec, n_keys)
    if not hasattr(scorer, "score_block"):
        return _time(pkg, spec, n_keys, waves, data)
    scale = np.full(data.shape, 0.01, dtype=np.float32)
    t0 = time.process_time()
    for lo in range(0, waves, block_steps):
        hi = min(waves, lo + block_steps)
        x = data[lo:hi]
        when = np.broadcast_to(np.arange(lo, hi)[:, None], x.shape[:2])
        scorer.score_block(table, rows, x, x, scale[lo:hi], np.full(n_keys, lo, dtype=np.int64), when, when)
    return (time.process_time() - t0) / waves * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", default="6f7a925")
    p.add_argument("--keys", type=int, nargs="+", default=[10, 1000])
    p.add_argument("--specs", nargs="+", default=["gaussian+volatility", "gaussian+likelihood+volatility",
                                                  "gaussian+volatility+stuck"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--block-steps", type=int, default=0,
                   help="time this checkout's score_block over blocks of this many waves (0: score wave by wave)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = _base_package(args.base, Path(tmp))
        report: dict[str, Any] = {"base": args.base, "unit": "CPU us/wave", "block_steps": args.block_steps,
                                  "results": []}
        rng = np.random.default_rng(0)
        for spec in args.specs:
            for n in args.keys:
                waves = max(50, 20000 // n)
                data = np.exp(np.cumsum(0.01 * rng.normal(size=(waves, n, 1)), axis=0)).astype(np.float32)
                new = partial(_time, "rnnwatch.consumer", spec, n, waves, data) if not args.block_steps else partial(
                    _time_blocks, "rnnwatch.consumer", spec, n, waves, data, args.block_steps)
                timed = paired(partial(_time, base, spec, n, waves, data), new, args.rounds)
                report["results"].append({"spec": spec, "keys": n, **timed})
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""Per-record CPU cost of the runner (``StepRunner.process``: waves, model, scorer), this checkout against a git
revision, paired, with the bundled model and its default scorer; no Kafka, no decoding.

    .venv/bin/python -m tests.bench.bench_waves [--base main] [--keys 10 1000 100000] [--rounds 5]

What ``rnnwatch run`` spends per record beyond the client and the decoder, at a few key counts: with 10 keys
a poll of 2,000 records is 200 waves of 10 keys (per-wave overhead dominates), with 100,000 keys it is one
wave of new keys (per-key work dominates). The base revision is imported as in ``bench_scorer``; rounds
alternate base/new on the same polls. Prints JSON: CPU microseconds per record (process time, median over
rounds) and the ratio new / base.
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.bench_scorer import ROOT, _base_package
from tests.bench.bench_stats import paired

MODEL = ROOT / "consumer" / "data" / "model.onnx"


def _polls(pkg: str, n_keys: int, records: int, per_poll: int) -> list[Any]:
    """Polls of random-walk prices over ``n_keys`` symbols, keys drawn at random (seeded: same for base and new)."""
    types = importlib.import_module(f"{pkg}.types")
    rng = np.random.default_rng(n_keys)
    names = [f"SYM{i}".encode() for i in range(n_keys)]
    key = rng.integers(0, n_keys, records) if records > n_keys else rng.permutation(n_keys)[:records]
    steps = np.exp(0.01 * rng.normal(size=records))
    x = np.empty((records, 1), dtype=np.float32)
    level = np.full(n_keys, 100.0)
    for i, (k, s) in enumerate(zip(key.tolist(), steps.tolist(), strict=True)):
        level[k] *= s
        x[i, 0] = level[k]
    event_ms = 1_700_000_000_000 + 10 * np.arange(records, dtype=np.int64)
    out = []
    for lo in range(0, records, per_poll):
        hi = min(lo + per_poll, records)
        out.append(types.TickBatch(np.zeros(hi - lo, dtype=np.int32), np.arange(lo, hi, dtype=np.int64),
                                   [names[k] for k in key[lo:hi].tolist()], event_ms[lo:hi], x[lo:hi],
                                   event_ms[lo:hi].copy()))
    return out


def _time(pkg: str, polls: list[Any]) -> float:
    contract = importlib.import_module(f"{pkg}.contract")
    runner = importlib.import_module(f"{pkg}.runner").make_runner(contract.load_signature(MODEL))
    t0 = time.process_time()
    for batch in polls:
        runner.process(batch, now_s=0.0)
    return (time.process_time() - t0) / sum(len(b) for b in polls) * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", default="main")
    p.add_argument("--keys", type=int, nargs="+", default=[10, 1000, 100000])
    p.add_argument("--records", type=int, default=40000)
    p.add_argument("--per-poll", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = _base_package(args.base, Path(tmp))
        report: dict[str, Any] = {"base": args.base, "unit": "CPU us/record", "records": args.records,
                                  "per_poll": args.per_poll, "results": []}
        for n in args.keys:
            records = max(args.records, n)  # with many keys: one record per key, every wave of new keys
            per_poll = max(args.per_poll, n) if n > args.records // 2 else args.per_poll
            polls = {pkg: _polls(pkg, n, records, per_poll) for pkg in (base, "rnnwatch.consumer")}
            timed = paired(partial(_time, base, polls[base]),
                           partial(_time, "rnnwatch.consumer", polls["rnnwatch.consumer"]), args.rounds, digits=2)
            report["results"].append({"keys": n, "records": records, **timed})
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

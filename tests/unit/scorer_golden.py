"""A seeded multi-key run of the residual scorer, recorded as arrays (golden outputs for speed work).

The scorer's arithmetic is pinned bit for bit by ``tests/unit/data/scorer_golden.npz``, generated with
``python tests/unit/scorer_golden.py`` from the code before the scorer's fast path (commit 6f7a925), and
regenerated when the math changed deliberately (the tail calibration's shape cap 0.5 -> 0.25; its moments
m1, m2 stored as float32 with the learnt excess clipped to 1e15, branch slim-9; a row continuing an incident
reports only the surprise by which it beats the incident's peak, branch lowfp-12: only the score, tail and
surprise of those rows changed, every state array and every other row stayed bit-identical; a row below the
threshold reports its surprise only as its key's recent high, issue 12: the same, plus that high's two columns). Waves
cover what the fast path special-cases: keys missing from a wave, a key's first step (NaN forecast),
non-finite and zero model scales, non-finite inputs, warm-up, shocks that open and continue incidents.

The specs with ``stuck`` (the bundled model's default) are pinned in a second fixture,
``scorer_golden_stuck.npz``, recorded from 22cb895 (before the per-wave speed work of branch speed-12) and
re-recorded with branch mem-9's code (half-width scorer state, still without the speed work) when both merged, and
again when the stuck detector came to price a run at the key's repeat rate before it (issue 12); their
waves also hold values (runs of exact repeats), so the stuck detector's run path is exercised. The other
cases draw the same random numbers as before, so the first fixture did not change.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rnnwatch.consumer.scoring import ResidualScorer, ScorerConfig
from rnnwatch.consumer.state import StateTable

SPECS = ("gaussian+volatility", "gaussian+likelihood+volatility", "gaussian+likelihood+novelty+volatility")
STUCK_SPECS = ("gaussian+volatility+stuck", "gaussian+likelihood+novelty+volatility+stuck")
FIXTURE = Path(__file__).parent / "data" / "scorer_golden.npz"
STUCK_FIXTURE = Path(__file__).parent / "data" / "scorer_golden_stuck.npz"
N_KEYS, N_WAVES, F = 24, 160, 2
FIELDS = ("score", "tail", "surprise", "alarm", "is_anomaly", "is_update", "incident", "expected", "residual")


def run(spec: str, uses_model_scale: bool, domain: str) -> dict[str, np.ndarray]:
    """Every wave's outputs (concatenated) and the final state table, as named arrays."""
    rng = np.random.default_rng(7)
    cfg = ScorerConfig(threshold=0.999, warmup_steps=12, halflife_steps=30.0,
                       residual_std=np.array([0.5, 2.0], dtype=np.float32), uses_model_scale=uses_model_scale,
                       spec=spec, incident_updates=2, domain=domain)
    scorer = ResidualScorer(cfg, F)
    table = StateTable(scorer.columns(), identity="golden")
    keys = [f"k{i}".encode() for i in range(N_KEYS)]
    level = np.exp(rng.normal(0.0, 1.0, (N_KEYS, F))).astype(np.float32) + 1.0
    steps = np.zeros(N_KEYS, dtype=np.int64)
    out: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}
    for w in range(N_WAVES):
        present = np.flatnonzero(rng.random(N_KEYS) < (1.0 if w % 5 == 0 else 0.7))
        rng.shuffle(present)
        rows, _ = table.rows_for(0, [keys[i] for i in present.tolist()])
        shock = (rng.random((present.size, 1)) < 0.03) * rng.normal(0.0, 8.0, (present.size, 1))
        vol = np.where(w > 100, 3.0, 1.0) * (1.0 + (present[:, None] % 3))
        before = level[present]
        level[present] *= np.exp(0.01 * vol * rng.normal(size=(present.size, F)) + 0.05 * shock).astype(np.float32)
        if "stuck" in spec:  # held values: every 4th key in runs of 15 waves, and single repeats at random
            hold = ((present % 4 == 0) & (w % 40 >= 25)) | (rng.random(present.size) < 0.1)
            level[present[hold]] = before[hold]
        x = level[present].copy()
        x[rng.random(present.size) < 0.01] = np.nan
        res = scorer.score(table, rows, x, steps[present], offsets=1000 * w + present.astype(np.int64))
        for f in FIELDS:
            out[f].append(np.asarray(getattr(res, f)))
        forecast = (x * (1.0 + 0.002 * rng.normal(size=x.shape))).astype(np.float32)
        scale = (0.02 * np.abs(x) * rng.uniform(0.5, 2.0, x.shape)).astype(np.float32)
        scale[rng.random(scale.shape) < 0.05] = 0.0
        scale[rng.random(scale.shape) < 0.05] = np.nan
        scorer.remember(table, rows, forecast, scale if uses_model_scale else None)
        steps[present] += 1
    arrays = {f: np.concatenate(v) for f, v in out.items()}
    arrays.update({f"state:{name}": arr[: len(table)] for name, arr in table.arrays.items()})
    return arrays


CASES = [(spec, scaled, domain) for spec in SPECS for scaled, domain in ((True, "positive"), (False, "real"))]
STUCK_CASES = [(spec, scaled, domain) for spec in STUCK_SPECS
               for scaled, domain in ((True, "positive"), (False, "real"))]


def fixture_of(spec: str) -> Path:
    return STUCK_FIXTURE if "stuck" in spec else FIXTURE


def case_key(spec: str, scaled: bool, domain: str) -> str:
    return f"{spec}|{'scaled' if scaled else 'fixed'}|{domain}"


def main() -> None:
    """Rewrite both fixtures (``--stuck``: the stuck fixture only)."""
    for path, cases in ((FIXTURE, CASES), (STUCK_FIXTURE, STUCK_CASES)):
        if "--stuck" in sys.argv and path != STUCK_FIXTURE:
            continue
        saved: dict[str, np.ndarray] = {}
        for spec, scaled, domain in cases:
            for name, arr in run(spec, scaled, domain).items():
                saved[f"{case_key(spec, scaled, domain)}|{name}"] = arr
        np.savez_compressed(path, **saved)
        print(f"wrote {path} ({len(saved)} arrays)", file=sys.stderr)


if __name__ == "__main__":
    main()

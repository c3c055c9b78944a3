"""`rnnwatch evaluate` as a user runs it: JSON on stdout, the per-category table on stderr, filters, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
RNNWATCH = [sys.executable, "-m", "rnnwatch.consumer.cli"]
FAST = ["--hidden", "8", "--epochs", "3"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RNNWATCH, *args], capture_output=True, text=True, timeout=300, check=False)


def test_evaluate_prints_nab_scores_as_json_and_a_table(tiny_corpus: Path) -> None:
    out = _run("evaluate", "--corpus", str(tiny_corpus), "--jobs", "2", *FAST)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["series"] == 2
    assert report["train"]["hidden"] == 8
    [scorer] = report["scorers"]
    assert scorer["scorer"] == "model" and scorer["windows"] == 2
    for block in (scorer, scorer["categories"]["synthetic"]):
        for kind in ("swept", "shipped"):
            assert set(block[kind]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
            for entry in block[kind].values():
                assert -1000 < entry["score"] <= 100
    assert [s["name"] for s in scorer["series"]] == ["synthetic/sine_spike.csv", "synthetic/walk_shift.csv"]
    assert [(s["rows"], s["scored"], s["refused"]) for s in scorer["series"]] == [(500, 500, {})] * 2
    assert "synthetic" in out.stderr and "swept: std" in out.stderr
    *_, total, false_alarms = out.stderr.splitlines()
    assert total.startswith("all") and false_alarms.startswith("false alarms on unfitted, unlabeled rows")


def test_evaluate_filters_and_writes_to_a_file(tiny_corpus: Path, tmp_path: Path) -> None:
    dest = tmp_path / "eval.json"
    out = _run("evaluate", "--corpus", str(tiny_corpus), "--series", "walk_*", "--jobs", "1",
               "--scorer", "model", "--scorer", 'model:{"threshold": 0.9999999}', "--output", str(dest), *FAST)
    assert out.returncode == 0, out.stderr
    report = json.loads(dest.read_text())
    assert report["series"] == 1
    assert [s["options"] for s in report["scorers"]] == [{}, {"threshold": 0.9999999}]


@pytest.mark.parametrize(("args", "message"), [
    (["--corpus", "/nonexistent"], "not a NAB-layout corpus"),
    (["--series", "nothing-matches"], "no series"),
    (["--scorer", "nope"], "unknown scorer 'nope'"),
    (["--scorer-options", "[1]"], "must be a JSON object"),
])
def test_evaluate_errors_say_what_is_wrong(tiny_corpus: Path, args: list[str], message: str) -> None:
    corpus = [] if "--corpus" in args else ["--corpus", str(tiny_corpus)]
    out = _run("evaluate", *corpus, *args, "--jobs", "1", *FAST)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr

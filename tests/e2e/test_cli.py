"""The CLI as a user runs it: check, score (offline backtest), errors that say what to fix."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e
RNNWATCH = [sys.executable, "-m", "rnnwatch.consumer.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RNNWATCH, *args], capture_output=True, text=True, timeout=120, check=False)


def test_check_prints_the_summary(bundled_model: Path) -> None:
    out = _run("check", str(bundled_model))
    assert out.returncode == 0, out.stderr
    for needle in ("OK", "prices-gru", "gru", "price (positive)", "h [32]", "bytes/key", "threshold",
                   "provenance    data: prices.csv", "trained_at"):
        assert needle in out.stdout


def test_check_refuses_a_broken_model(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    out = _run("check", str(junk))
    assert out.returncode == 2
    assert "not a loadable ONNX model" in out.stderr


def _write_series(path: Path, values: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for i, v in enumerate(values):
            w.writerow([f"2020-01-01T00:{i // 60:02d}:{i % 60:02d}Z", f"{v:.4f}"])


def test_score_flags_an_injected_spike_row_by_row(tmp_path: Path, bundled_model: Path) -> None:
    rng = np.random.default_rng(5)
    values = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 600)))
    values[450] *= 1.25
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_series(src, values)
    out = _run("score", "--model", str(bundled_model), "--input", str(src), "--output", str(dst))
    assert out.returncode == 0, out.stderr
    with dst.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["timestamp", "value", "expected", "residual", "anomaly_score", "surprise", "is_anomaly",
                             "incident", "severity", "status"]
    assert len(rows) == 600
    assert [r["value"] for r in rows] == [f"{v:.4f}" for v in values]
    flagged = [i for i, r in enumerate(rows) if r["is_anomaly"] == "1"]
    assert 450 in flagged
    assert rows[451]["incident"] in ("", "450")  # the reversion, if flagged at all, belongs to the spike's incident
    assert len(flagged) <= 3  # one incident for the spike and its reversion, maybe a stray one; not a flood
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in rows)


def test_score_reports_a_missing_column(tmp_path: Path, bundled_model: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("when,value\n1,2\n")
    out = _run("score", "--model", str(bundled_model), "--input", str(src), "--output", str(tmp_path / "o.csv"))
    assert out.returncode == 2
    assert "no column 'ts'" in out.stderr


def test_run_refuses_a_bad_model_before_touching_kafka(tmp_path: Path) -> None:
    out = _run("run", "--input-topic", "t", "--group-id", "g", "--model", str(tmp_path / "missing.onnx"),
               "--bootstrap-servers", "127.0.0.1:1")
    assert out.returncode == 2
    assert "does not exist" in out.stderr


def test_run_refuses_bad_config() -> None:
    out = _run("run", "--input-topic", "t", "--group-id", "g", "--max-poll-records", "0")
    assert out.returncode == 2
    assert "max_poll_records must be > 0" in out.stderr

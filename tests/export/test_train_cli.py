"""`rnnwatch train` / `rnnwatch export` end to end: files the runtime accepts, reproducible bytes."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rnnwatch.consumer.contract import load_signature

pytestmark = pytest.mark.export
CLI = [sys.executable, "-m", "rnnwatch.consumer.cli"]


@pytest.fixture(scope="module")
def prices_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "prices.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["symbol", "ts", "price"])
        walks = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (3, 400)), axis=1))
        for t in range(400):
            for k, sym in enumerate(["AAA", "BBB", "CCC"]):
                w.writerow([sym, 1_600_000_000 + 86_400 * t, f"{walks[k, t]:.4f}"])
    return path


def _train(csv_path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "train", "--arch", "gru", "--input", str(csv_path), "--key-column", "symbol",
                           "--time-column", "ts", "--column", "price", "--hidden", "8", "--epochs", "3",
                           "--trained-at", "2026-01-01T00:00:00Z", "--output", str(out), *extra],
                          capture_output=True, text=True, timeout=300, check=False)


def test_train_writes_a_calibrated_model_the_runtime_accepts(prices_csv: Path, tmp_path: Path) -> None:
    out = _train(prices_csv, tmp_path / "m.onnx")
    assert out.returncode == 0, out.stderr
    sig = load_signature(tmp_path / "m.onnx")
    assert sig.architecture == "gru" and sig.feature_names == ("price",)
    assert sig.features[0].domain == "positive"  # auto transform: prices -> log-returns
    assert 0.99 <= sig.scoring.threshold <= 0.999999
    p = sig.provenance
    assert p["series"] == 3 and p["rows"] == 1200 and p["seed"] == 0 and p["transform"] == "log-return"
    assert p["data_sha256"] == hashlib.sha256(prices_csv.read_bytes()).hexdigest()
    assert p["parity"]["max_rel_error"] < 1e-4


def test_same_seed_same_bytes(prices_csv: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert _train(prices_csv, a).returncode == 0
    assert _train(prices_csv, b).returncode == 0
    assert a.read_bytes() == b.read_bytes()


def test_train_reports_a_missing_column(prices_csv: Path, tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "train", "--arch", "lstm", "--input", str(prices_csv), "--column", "close",
                          "--output", str(tmp_path / "m.onnx")], capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert "no column 'close'" in out.stderr


def test_export_a_user_module(tmp_path: Path) -> None:
    module = tmp_path / "my_model.py"
    module.write_text(textwrap.dedent('''
        import torch
        from rnnwatch.export import StateSpec, StepModule

        class Smoother(StepModule):
            """Forecast = EWMA of the last values, in message units (its own state)."""
            def __init__(self):
                super().__init__()
                self.n_features = 1
                self.alpha = torch.nn.Parameter(torch.tensor(0.3))
            def state_spec(self):
                return [StateSpec("m", (1,)), StateSpec("seen", (1,))]
            def step(self, x, state):
                m = torch.where(state["seen"] > 0, (1 - self.alpha) * state["m"] + self.alpha * x, x)
                return m, {"m": m, "seen": torch.ones_like(state["seen"])}

        def make():
            return Smoother()
    '''))
    out = subprocess.run([*CLI, "export", "--module", "my_model:make", "--feature", "load:nonnegative",
                          "--name", "smoother", "--residual-std", "2.5", "--output", str(tmp_path / "s.onnx")],
                         capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    sig = load_signature(tmp_path / "s.onnx")
    assert sig.features[0].domain == "nonnegative" and not sig.has_forecast_scale
    assert sig.scoring.residual_std == (2.5,)


@pytest.mark.parametrize("arch", ["elman", "jordan", "lstm", "gru", "stacked", "deep-transition", "tdnn", "narx",
                                  "esn", "clockwork", "birnn"])
def test_every_architecture_trains_with_defaults(arch: str, prices_csv: Path, tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "train", "--arch", arch, "--input", str(prices_csv), "--key-column", "symbol",
                          "--time-column", "ts", "--column", "price", "--train-rows", "200", "--hidden", "8",
                          "--epochs", "2", "--reservoir", "40", "--output", str(tmp_path / f"{arch}.onnx")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    sig = load_signature(tmp_path / f"{arch}.onnx")
    assert sig.architecture == arch
    assert sig.provenance["parity"]["max_rel_error"] < 1e-4
    assert sig.provenance["hyperparameters"]

"""Progress on a terminal, quiet when piped: `train` epochs, `demo`'s bar."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnwatch.consumer.demo.feed import bundled_prices_path

pytestmark = pytest.mark.e2e
RNNWATCH = [sys.executable, "-m", "rnnwatch.consumer.cli"]
TRAIN = ["train", "--arch", "elman", "--hidden", "8", "--train-rows", "200", "--epochs", "30"]


def _on_a_terminal(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; (exit code, everything it printed)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode()


def test_train_prints_epochs_on_a_terminal(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the [export] extra is part of make install-dev")
    code, text = _on_a_terminal([*RNNWATCH, *TRAIN, "--input", str(bundled_prices_path()), "--output", "m.onnx"],
                                tmp_path)
    assert code == 0, text
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(epochs) >= 2 and "loss" in epochs[0] and "held-out" in epochs[0]
    assert "*best" in text
    assert ("early stop" in epochs[-1]) == (not epochs[-1].startswith("epoch  30/30"))


def test_train_is_quiet_when_piped(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the [export] extra is part of make install-dev")
    out = subprocess.run([*RNNWATCH, *TRAIN, "--input", str(bundled_prices_path()), "--output", "m.onnx"],
                         capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "epoch" not in out.stderr and out.stdout.splitlines()[-1].startswith("wrote ")
    # nor on stdout: results only (the transform auto chose when it refuses values <= 0, the skill gate's line when
    # it drops a forecast, then what was written)
    assert all(line.startswith(("transform: log-return", "forecast: no skill", "wrote "))
               for line in out.stdout.splitlines())
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o644

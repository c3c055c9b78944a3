"""`rnnwatch adopt` as a user without torch runs it: the [adopt] extra is onnx only; no onnx, a one-line hint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.onnx_builders import gru_op_model

pytestmark = pytest.mark.e2e


def _rnnwatch_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The rnnwatch CLI in a fresh interpreter where ``import <module>`` fails, as if it were not installed."""
    code = (f"import sys; sys.modules[{module!r}] = None; from rnnwatch.consumer.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False)


def test_adopt_needs_no_torch(tmp_path: Path) -> None:
    source = gru_op_model(tmp_path / "gru.onnx")
    out = _rnnwatch_without("torch", "adopt", str(source), "--transform", "level", "--output",
                            str(tmp_path / "step.onnx"))
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout
    check = _rnnwatch_without("torch", "check", str(tmp_path / "step.onnx"))
    assert check.returncode == 0, check.stderr


def test_adopt_without_onnx_says_which_extra_to_install(tmp_path: Path) -> None:
    out = _rnnwatch_without("onnx", "adopt", str(tmp_path / "m.onnx"), "--transform", "none", "--output",
                            str(tmp_path / "s.onnx"))
    assert out.returncode == 2
    assert out.stderr == "rnnwatch adopt needs the adopt extra (onnx is missing): pip install 'rnnwatch[adopt]'\n"


def test_train_without_torch_still_points_at_the_training_extra(tmp_path: Path) -> None:
    out = _rnnwatch_without("torch", "train", "--arch", "gru", "--input", "x.csv", "--output", "m.onnx")
    assert out.returncode == 2
    assert out.stderr == "rnnwatch train needs the training extra (torch is missing): pip install 'rnnwatch[export]'\n"

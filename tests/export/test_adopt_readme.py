"""The README's three `rnnwatch adopt` commands, run exactly as written, on models of the shapes they describe."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rnnwatch.consumer.contract import load_signature
from tests.export.elsewhere import build, export
from tests.integration.helpers import write_prices
from tests.unit.onnx_builders import gru_op_model

pytestmark = [pytest.mark.export, pytest.mark.e2e]
README = Path(__file__).parents[2] / "README.md"


def _readme_commands() -> list[str]:
    block = re.search(r"<!-- adopt-commands -->\n```bash\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its adopt-commands block"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("rnnwatch adopt")]


def test_the_readme_adopt_commands_work_as_written(tmp_path: Path) -> None:
    export(build("lstm-bf-1"), tmp_path / "lstm.onnx")
    export(build("gru-sf-2"), tmp_path / "gru.onnx")
    gru_op_model(tmp_path / "gru-op.onnx")
    write_prices(tmp_path / "history.csv")
    commands = _readme_commands()
    assert len(commands) == 3
    for command in commands:
        args = shlex.split(command)
        out = subprocess.run([sys.executable, "-m", "rnnwatch.consumer.cli", *args[1:]], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, f"{command}\n{out.stderr}"
        sig = load_signature(tmp_path / args[args.index("--output") + 1])
        assert sig.feature_names == ("price",) and sig.provenance["parity"]["max_rel_error"] < 1e-4

"""Every subcommand over a table of bad inputs: one line on stderr, a non-zero exit, never a traceback.

Each case is one a new user hit (issue 11). A case passes only if the process exits non-zero, prints no
``Traceback``, and says what is wrong in one ``rnnwatch <command>: error: ...`` line naming the needle.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.user_modules import SMOOTHER_MODULE

pytestmark = pytest.mark.e2e
RNNWATCH = [sys.executable, "-m", "rnnwatch.consumer.cli"]


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    needle: str  # a phrase the error line must contain
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = ""  # relative to the workspace
    export: bool = False  # needs torch


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path) -> Iterator[Path]:
    ws = tmp_path_factory.mktemp("bad")
    (ws / "ok.csv").write_text("ts,price\n" + "".join(f"2020-01-{d:02d}T00:00:00Z,{100 + d}\n" for d in range(1, 29)))
    (ws / "latin1.csv").write_bytes("ts,price\n2020-01-01,1.0\ncaf\xe9,2\n".encode("latin-1"))
    (ws / "nan.csv").write_text("value\n" + "".join(f"{1 + 0.01 * i}\n" for i in range(40)) + "nan\n" +
                                "".join(f"{1 + 0.01 * i}\n" for i in range(40)))
    (ws / "adir").mkdir()
    (ws / "model.onnx").write_bytes(bundled_model.read_bytes())
    mine = ws / "mine"
    mine.mkdir()
    (mine / "my_model.py").write_text(SMOOTHER_MODULE)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        os.environ["_RNNWATCH_TEST_TAKEN_PORT"] = str(taken.getsockname()[1])
        yield ws


CASES = [
    Case("score-output-missing-dir", ("score", "--model", "model.onnx", "--input", "ok.csv", "--output",
                                      "no/such/dir/out.csv"), "directory no/such/dir does not exist"),
    Case("score-input-directory", ("score", "--model", "model.onnx", "--input", "adir"), "is a directory"),
    Case("score-input-missing", ("score", "--model", "model.onnx", "--input", "nope.csv"), "does not exist"),
    Case("score-non-utf8", ("score", "--model", "model.onnx", "--input", "latin1.csv"), "not UTF-8"),
    Case("score-threshold", ("score", "--model", "model.onnx", "--input", "ok.csv", "--threshold", "2"),
         "threshold must be in (0, 1)"),
    Case("check-missing-model", ("check", "nope.onnx"), "does not exist"),
    Case("check-directory", ("check", "adir"), "adir is a directory"),
    Case("produce-non-utf8", ("produce", "--topic", "t", "--input", "latin1.csv"), "not UTF-8"),
    Case("produce-broker-down", ("produce", "--topic", "t", "--input", "ok.csv", "--key-column", "price",
                                 "--bootstrap-servers", "127.0.0.1:1"), "cannot reach the Kafka brokers"),
    Case("run-metrics-port-out-of-range", ("run", "--input-topic", "t", "--group-id", "g", "--model", "model.onnx"),
         "metrics_port must be a TCP port", env=(("RNNWATCH_METRICS_PORT", "99999"),)),
    Case("run-metrics-port-in-use", ("run", "--input-topic", "t", "--group-id", "g", "--model", "model.onnx",
                                     "--bootstrap-servers",
                                     "127.0.0.1:1", "--metrics-port", "{taken}"), "is in use"),
    Case("train-nan", ("train", "--arch", "gru", "--input", "nan.csv", "--output", "m.onnx"), "not finite",
         export=True),
    Case("train-non-utf8", ("train", "--arch", "gru", "--input", "latin1.csv", "--column", "price",
                            "--output", "m.onnx"), "not UTF-8", export=True),
    Case("train-hidden-zero", ("train", "--arch", "gru", "--input", "ok.csv", "--column", "price", "--hidden", "0",
                               "--output", "m.onnx"), "--hidden must be >= 1", export=True),
    Case("train-target-rate", ("train", "--arch", "gru", "--input", "ok.csv", "--column", "price", "--target-rate",
                               "0.7", "--output", "m.onnx"), "--target-rate must be in (0, 0.5)", export=True),
    Case("score-threshold-surprise", ("score", "--model", "model.onnx", "--input", "ok.csv", "--threshold-surprise",
                                      "0"), "threshold_surprise must be > 0"),
    Case("train-periods-garbage", ("train", "--arch", "clockwork", "--input", "ok.csv", "--column", "price",
                                   "--periods", "1,x", "--output", "m.onnx"), "--periods must be", export=True),
    Case("train-periods-mismatch", ("train", "--arch", "clockwork", "--input", "ok.csv", "--column", "price",
                                    "--hidden", "30", "--periods", "1,2,4,8", "--output", "m.onnx"),
         "must be a multiple", export=True),
    Case("export-wrong-factory", ("export", "--module", "my_model:build", "--feature", "price", "--name", "x",
                                  "--output", "x.onnx"), "has no callable 'build'", cwd="mine", export=True),
    Case("export-no-module", ("export", "--module", "not_there:make", "--feature", "price", "--name", "x",
                              "--output", "x.onnx"), "no module 'not_there'", cwd="mine", export=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_one_line_and_a_non_zero_exit(case: Case, workspace: Path) -> None:
    if case.export:
        pytest.importorskip("torch", reason="the [export] extra is part of make install-dev")
    args = [a.replace("{taken}", os.environ["_RNNWATCH_TEST_TAKEN_PORT"]) for a in case.args]
    env = {**os.environ, **dict(case.env), "PYTHONPATH": ""}
    out = subprocess.run([*RNNWATCH, *args], capture_output=True, text=True, timeout=120, check=False,
                         cwd=workspace / case.cwd, env=env)
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"rnnwatch {args[0]}: error: "), lines[0]
    assert case.needle in lines[0], lines[0]


def test_export_from_the_modules_directory_works(workspace: Path) -> None:
    """The README's own example: `rnnwatch export --module my_model:make` run where my_model.py lives."""
    pytest.importorskip("torch", reason="the [export] extra is part of make install-dev")
    out = subprocess.run([*RNNWATCH, "export", "--module", "my_model:make", "--feature", "price:positive",
                          "--name", "mine", "--output", "mine.onnx"], capture_output=True, text=True, timeout=300,
                         check=False, cwd=workspace / "mine", env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr
    assert (workspace / "mine" / "mine.onnx").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("argv", [["check", "--json", "model.onnx"],
                                  ["score", "--model", "model.onnx", "--input", "ok.csv"]],
                         ids=["check-json", "score-stdout"])
def test_a_closed_pipe_ends_quietly(argv: list[str], workspace: Path) -> None:
    """`rnnwatch ... | head`: the reader is gone before we write; exit 141 like other tools, no traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader went away
    try:
        out = subprocess.run([*RNNWATCH, *argv], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
                             check=False, cwd=workspace)
    finally:
        os.close(write)
    assert out.returncode == 141, out.stderr
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr

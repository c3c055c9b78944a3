"""The README cannot drift: every ``bash`` and ``python`` block in it runs here, as written.

Blocks run in order, in one directory holding ``prices.csv`` and ``history.csv`` (copies of the bundled
prices, ``symbol,ts,price``, which the README names), with a real embedded broker in
``RNNWATCH_BOOTSTRAP_SERVERS`` whose topic ``prices`` holds the bundled ticks. A block whose first line
starts with ``# needs`` (a Kafka cluster, Docker, Kubernetes, the checkout) is checked for syntax only:
``bash -n`` or ``compile``. The ``rnnwatch adopt`` block runs in tests/export/test_adopt_readme.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.demo.feed import bundled_prices_path, load_ticks, produce_ticks

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
README = Path(__file__).resolve().parents[2] / "README.md"
ADOPT_MARKER = "<!-- adopt-commands -->"


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    code: str
    marker: str  # the line before the fence

    @property
    def syntax_only(self) -> bool:
        return self.code.lstrip().startswith("# needs")

    @property
    def elsewhere(self) -> bool:
        return self.marker == ADOPT_MARKER


def _blocks() -> list[Block]:
    text = README.read_text()
    out = []
    for m in re.finditer(r"^```(bash|python)\n(.*?)^```", text, re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        out.append(Block(line, m.group(1), m.group(2), before))
    return out


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    ws = tmp_path_factory.mktemp("readme")
    for name in ("prices.csv", "history.csv"):
        shutil.copy(bundled_prices_path(), ws / name)
    with EmbeddedBroker() as broker:
        broker.create_topics(["prices"], partitions=2)
        produce_ticks(broker.bootstrap_servers, "prices", load_ticks())
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "RNNWATCH_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "RNNWATCH_METRICS_PORT": "0",
               "RNNWATCH_SESSION_TIMEOUT_MS": "6000"}
        yield ws, env


def test_the_readme_has_runnable_blocks_of_both_kinds() -> None:
    runnable = {b.lang for b in BLOCKS if not b.syntax_only and not b.elsewhere}
    assert runnable == {"bash", "python"}, [(b.line, b.lang, b.syntax_only) for b in BLOCKS]
    assert sum(b.elsewhere for b in BLOCKS) == 1  # the adopt commands, run by tests/export/test_adopt_readme.py
    assert any("score_array" in b.code and "on_anomaly" in b.code for b in BLOCKS if not b.syntax_only)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}-{b.lang}" for b in BLOCKS])
def test_readme_block(block: Block, workspace: tuple[Path, dict[str, str]]) -> None:
    ws, env = workspace
    if block.elsewhere:
        assert "rnnwatch adopt" in block.code
        return  # run as written by tests/export/test_adopt_readme.py (it finds the block by the same marker)
    if block.syntax_only:
        if block.lang == "bash":
            syntax = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True, check=False)
            assert syntax.returncode == 0, f"README.md:{block.line}: {syntax.stderr}"
        else:
            compile(block.code, f"README.md:{block.line}", "exec")
        return
    if block.lang == "bash":
        argv = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        argv = [sys.executable, "-c", block.code]
    out = subprocess.run(argv, cwd=ws, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, f"README.md:{block.line}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr

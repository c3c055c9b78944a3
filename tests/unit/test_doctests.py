"""Every docstring example in the package runs and passes (issue 10 item 7: the `scoring` doctest never ran).

Modules are found by scanning the source folders for ``>>>``, so a new example is collected without editing
this file; `make check` (tests/unit) and `make test` both run it.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"consumer": "rnnwatch.consumer", "export": "rnnwatch.export", "evaluate": "rnnwatch.evaluate"}


def _modules_with_examples() -> list[str]:
    out = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if ">>>" in path.read_text(encoding="utf-8"):
                parts = path.relative_to(ROOT / folder).with_suffix("").parts
                parts = parts[:-1] if parts[-1] == "__init__" else parts
                out.append(".".join([package, *parts]))
    return out


MODULES = _modules_with_examples()


def test_the_examples_are_found() -> None:
    assert {"rnnwatch.consumer.scoring", "rnnwatch.consumer.tails", "rnnwatch.export.calibrate",
            "rnnwatch.evaluate.nab", "rnnwatch.evaluate.table"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module} has '>>>' but no example doctest runs"
    assert result.failed == 0

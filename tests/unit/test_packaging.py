"""pyproject.toml asks for a setuptools that understands what it declares (issue 10 item 7)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SPDX_LICENSE_SETUPTOOLS = (77, 0)  # PEP 639 `license = "<SPDX expression>"` is understood from setuptools 77.0


def test_the_build_requirement_understands_an_spdx_license_string() -> None:
    meta = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert isinstance(meta["project"]["license"], str)  # the SPDX form, not the {text = ...} table
    [setuptools] = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    floor = re.fullmatch(r"setuptools>=(\d+)(?:\.(\d+))?.*", setuptools)
    assert floor is not None, f"{setuptools!r} has no lower bound"
    assert (int(floor[1]), int(floor[2] or 0)) >= SPDX_LICENSE_SETUPTOOLS


def test_every_package_folder_is_declared_so_a_wheel_ships_it() -> None:
    """`pip install .` (the Docker image) ships only the declared packages; a folder left out is an ImportError there
    that an editable install hides."""
    meta = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    root = PYPROJECT.parent
    found = set()
    for name, folder in meta["package-dir"].items():
        for init in (root / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(root / folder).parts
            found.add(".".join([name, *relative]))
    assert found, "no package folders found"
    assert sorted(found) == sorted(meta["packages"])

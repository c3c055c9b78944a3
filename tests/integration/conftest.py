"""Integration fixtures: collect garbage after each test so a leaked socket is reported by the test that leaked it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_after() -> Iterator[None]:
    yield
    gc.collect()

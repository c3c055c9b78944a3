"""Shared fixtures: step models (exact hand-built ones and the bundled trained one) and a real broker."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "unit"))
sys.path.insert(0, str(Path(__file__).parent / "integration"))

from onnx_builders import ewma_model

from rnnwatch.consumer.broker import EmbeddedBroker
from rnnwatch.consumer.settings import bundled_model_path


@pytest.fixture(scope="session")
def ewma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exact EWMA step model (forecast = exponential smoothing of price), feature `price` > 0."""
    return ewma_model(tmp_path_factory.mktemp("models") / "ewma.onnx")


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    return Path(bundled_model_path())


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the whole session (tests use uuid-named topics)."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def topic_factory(broker: EmbeddedBroker) -> Callable[..., str]:
    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        broker.create_topics([name], partitions=partitions)
        return name
    return make

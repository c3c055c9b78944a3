"""Shared fixtures: step models (exact hand-built ones and the bundled trained one) and a real broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.settings import bundled_model_path
from tests.unit.onnx_builders import ewma_model


@pytest.fixture(scope="session")
def ewma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exact EWMA step model (forecast = exponential smoothing of price), feature `price` > 0."""
    return ewma_model(tmp_path_factory.mktemp("models") / "ewma.onnx")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-series labeled corpus in NAB's layout (tests/export/tiny_corpus.py)."""
    from tests.export.tiny_corpus import write_tiny_corpus

    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    return Path(bundled_model_path())


@pytest.fixture(params=["kafka-python", "confluent"])
def transport(request: pytest.FixtureRequest) -> str:
    """Each Kafka transport in turn, for the tests that exercise client behaviour (both ship with make install-dev)."""
    return str(request.param)


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


@pytest.fixture(scope="session")
def price_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out daily prices of 3 symbols x 400 days (symbol, ts, price), as `adopt --data` reads them."""
    from tests.integration.helpers import write_prices

    return write_prices(tmp_path_factory.mktemp("history") / "history.csv")


@pytest.fixture(scope="session")
def adopted_models(tmp_path_factory: pytest.TempPathFactory, price_history: Path) -> dict[str, tuple[Path, Path]]:
    """case -> (model as exported elsewhere, its adopted step model): every torch.onnx.export case of
    tests/export/elsewhere.py and the onnx.helper GRU-operator graph, adopted by `rnnwatch adopt` on
    held-out prices (log-returns / 1 %, the feature `price`). Needs torch (to build the sources)."""
    from rnnwatch.consumer.cli import main
    from tests.export import elsewhere
    from tests.unit.onnx_builders import gru_op_model

    folder = tmp_path_factory.mktemp("elsewhere")
    adopted = {}
    for case in [*elsewhere.TORCH_CASES, "gru-op"]:
        source = folder / f"{case}.onnx"
        elsewhere.export(elsewhere.build(case), source) if case != "gru-op" else gru_op_model(source)
        step = folder / f"{case}.step.onnx"
        code = main(["adopt", str(source), "--transform", "log-return", "--std", str(elsewhere.STD), "--feature",
                     "price", "--data", str(price_history), "--key-column", "symbol", "--time-column", "ts",
                     "--name", f"adopted-{case}", "--output", str(step)])
        assert code == 0, f"rnnwatch adopt failed on {case}"
        adopted[case] = (source, step)
    return adopted

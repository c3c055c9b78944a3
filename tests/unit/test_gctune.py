"""`rnnwatch run` keeps the cyclic collector off its hot path (consumer.gctune): once the service is built, its
objects are frozen and young collections wait for a poll's worth of live objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from rnnwatch.consumer import gctune
from rnnwatch.consumer.cli import run as cli_run
from rnnwatch.consumer.cli.main import build_parser


@pytest.fixture
def collector() -> Iterator[None]:
    """The process's collector as it was, whatever a test did to it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
def test_settle_freezes_and_waits_for_a_polls_worth() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    young, middle, old = gctune.settle(20_000)
    assert (young, middle, old) == (gctune.YOUNG_OBJECTS_PER_RECORD * 20_000, 10, 10) == gc.get_threshold()
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("collector")
def test_settle_keeps_a_higher_threshold() -> None:
    gc.set_threshold(10**7, 5, 5)
    assert gctune.settle(100) == (10**7, 5, 5)


@pytest.mark.usefixtures("collector")
def test_run_settles_once_the_service_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI freezes after the service exists (its objects live as long as the process), before it runs."""
    order: list[Any] = []

    class FakeService:
        registry = None

        def __init__(self, settings: Any) -> None:
            order.append(("built", gc.get_freeze_count()))

        def start(self) -> FakeService:
            return self

        def run(self) -> Any:
            order.append(("run", gc.get_threshold()[0], gc.get_freeze_count()))
            return SimpleNamespace(as_dict=dict)

    gc.unfreeze()
    monkeypatch.setattr(cli_run, "Service", FakeService)
    monkeypatch.setattr(cli_run, "_install_signal_handlers", lambda *a: None)
    args = build_parser().parse_args(["run", "--bootstrap-servers", "127.0.0.1:9", "--input-topic", "ticks",
                                      "--group-id", "g", "--max-poll-records", "3000"])
    assert args.func(args) == 0
    assert order[0] == ("built", 0)
    assert order[1][0] == "run" and order[1][1] >= gctune.YOUNG_OBJECTS_PER_RECORD * 3000 and order[1][2] > 0

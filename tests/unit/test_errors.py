"""Crash points (RNNWATCH_CRASH_*) and where a failure is raised as which error (see consumer/errors.py)."""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from rnnwatch.consumer import crashpoints
from rnnwatch.consumer.errors import ConfigError
from tests.unit.fakes import FakeService
from tests.unit.test_delivery import cluster, settings


@pytest.fixture(autouse=True)
def _disarmed() -> Iterator[None]:
    yield
    crashpoints.arm({})


def test_a_bad_crash_point_in_the_environment_does_not_break_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNWATCH_CRASH_POINT", "batch.befor_events")
    monkeypatch.setenv("RNNWATCH_CRASH_AFTER", "x")
    importlib.reload(crashpoints)  # rnnwatch check, score, train ... import the modules that import this one


@pytest.mark.parametrize(("env", "named"), [
    ({"RNNWATCH_CRASH_POINT": "batch.befor_events"}, "RNNWATCH_CRASH_POINT='batch.befor_events' is not one of"),
    ({"RNNWATCH_CRASH_POINT": "batch.after_events", "RNNWATCH_CRASH_AFTER": "x"}, "RNNWATCH_CRASH_AFTER='x'"),
    ({"RNNWATCH_CRASH_POINT": "batch.after_events", "RNNWATCH_CRASH_AFTER": "0"}, "RNNWATCH_CRASH_AFTER='0'"),
])
def test_arming_refuses_a_bad_value_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        crashpoints.arm(env)


def test_the_service_refuses_a_bad_crash_point_at_start_up(ewma_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNWATCH_CRASH_POINT", "nowhere")
    with pytest.raises(ConfigError, match="RNNWATCH_CRASH_POINT='nowhere'"):
        FakeService(settings(ewma_path), cluster=cluster())


def test_an_armed_point_kills_on_its_nth_visit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(crashpoints.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    crashpoints.arm({"RNNWATCH_CRASH_POINT": "checkpoint.before_commit", "RNNWATCH_CRASH_AFTER": "3"})
    for _ in range(2):
        crashpoints.maybe_crash("checkpoint.before_commit")
        crashpoints.maybe_crash("batch.before_events")
    assert kills == []
    crashpoints.maybe_crash("checkpoint.before_commit")
    assert kills == [(os.getpid(), signal.SIGKILL)]


def test_disarmed_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[int] = []
    monkeypatch.setattr(crashpoints.os, "kill", lambda pid, sig: kills.append(sig))
    crashpoints.arm({})
    for point in crashpoints.POINTS:
        crashpoints.maybe_crash(point)
    assert kills == []



def test_a_changelog_read_that_never_ends_is_a_broker_error_not_a_state_error() -> None:
    """StateError means one thing (a snapshot that cannot be used: the key is reset); a read that does not finish
    is the broker's (the caller retries the checkpoint or restarts)."""
    from rnnwatch.consumer.errors import BrokerError, StateError
    from rnnwatch.consumer.restore import run_to_end

    def forever() -> Iterator[None]:
        while True:
            yield

    with pytest.raises(BrokerError, match="did not finish within") as info:
        run_to_end(forever(), timeout_s=0.0)  # type: ignore[arg-type]
    assert not isinstance(info.value, StateError)

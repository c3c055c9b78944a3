"""Chaos: scale 1 -> 3 -> 1 consumers while the feed flows; partitions move with their state.

Each phase waits for the group to settle (read from the members' own logs) instead of sleeping a fixed
time: on a slow machine the first member's join can take longer than any fixed sleep, and the "scale-up"
would then silently be part of the initial join.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from tests.chaos.test_crash_recovery import (
    PARTITIONS,
    _assert_state_equal,
    _events,
    _final_state,
    _run,
    _same,
    member_args,
)
from tests.integration.helpers import committed, price_feed, produce

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]
ALL_PARTITIONS = set(range(PARTITIONS))
ASSIGNED = re.compile(r"assigned partitions \[([\d, ]*)\]")
SETTLE_TIMEOUT_S = 90.0


class Member:
    """One consumer-group member in its own process; its log is read while it is written."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self._lines: list[str] = []
        self.arrived: list[float] = []  # when each line was read (monotonic), for time-to-X measurements
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self._lines.append(line)
                self.arrived.append(time.monotonic())

    @property
    def log(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def seconds_until(self, wanted: Callable[[str], bool]) -> float | None:
        """Seconds from the start of the process to the first log line ``wanted`` accepts."""
        with self._lock:
            lines = list(zip(self.arrived, self._lines, strict=True))
        return next((at - self.started for at, line in lines if wanted(line)), None)

    def assignments(self) -> list[set[int]]:
        """Every assignment this member was given, in order (one per rebalance it took part in)."""
        return [{int(p) for p in m.group(1).split(",") if p.strip()} for m in ASSIGNED.finditer(self.log)]

    def current(self) -> set[int]:
        history = self.assignments()
        return history[-1] if history else set()

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM and wait for a clean exit."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        self.close()
        assert self.proc.returncode == 0, self.log[-2000:]

    def close(self) -> None:
        """Kill the process if it still runs (a failed test) and release its pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def spawn(broker: EmbeddedBroker, ewma_path: Path) -> Iterator[Callable[..., Member]]:
    """Start group members (``transport=`` names the client library); any left running are killed at teardown."""
    started: list[Member] = []

    def start(topic: str, name: str, transport: str = "kafka-python") -> Member:
        args = member_args(broker, topic, name, ewma_path, "--max-poll-records", "300",
                           "--checkpoint-interval-ms", "500", "--transport", transport)
        started.append(Member(args))
        return started[-1]

    yield start
    for member in started:
        member.close()


def _wait_until(condition: Callable[[], bool], what: str, members: list[Member]) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not condition():
        for member in members:
            assert member.proc.poll() is None, f"a member exited while waiting for {what}:\n{member.log[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}; assignments: " + \
            str([m.assignments() for m in members])
        time.sleep(0.2)


def _settled(members: list[Member]) -> bool:
    """Every member owns something, nobody shares a partition, and all partitions are owned."""
    owned = [m.current() for m in members]
    return all(owned) and sum(map(len, owned)) == PARTITIONS and set().union(*owned) == ALL_PARTITIONS


class PhasedFeed:
    """Produces the feed in phases, each phase paced in chunks and released by its own gate."""

    def __init__(self, broker: EmbeddedBroker, topic: str, feed: list[tuple[bytes | None, bytes]], phases: int,
                 chunk: int = 100, pause_s: float = 0.2) -> None:
        self.total = len(feed)
        size = -(-len(feed) // phases)
        self.parts = [feed[i:i + size] for i in range(0, len(feed), size)]
        self.gates = [threading.Event() for _ in self.parts]
        self.gates[0].set()
        self._thread = threading.Thread(target=self._flow, args=(broker.bootstrap_servers, topic, chunk, pause_s))
        self._thread.start()

    def _flow(self, bootstrap: str, topic: str, chunk: int, pause_s: float) -> None:
        for gate, part in zip(self.gates, self.parts, strict=True):
            gate.wait(timeout=SETTLE_TIMEOUT_S * 3)
            for i in range(0, len(part), chunk):
                produce(bootstrap, topic, part[i:i + chunk])
                time.sleep(pause_s)

    def release(self, phase: int) -> None:
        self.gates[phase].set()

    def join(self) -> None:
        for gate in self.gates:
            gate.set()
        self._thread.join()


def _wait_all_committed(broker: EmbeddedBroker, topic: str, group: str, total: int) -> None:
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline:
        done = sum(v or 0 for v in committed(broker.bootstrap_servers, group, topic).values())
        if done == total:
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} committed {done} of {total} records within 120 s")


def _matches_reference(broker: EmbeddedBroker, topic: str, name: str, model: Path) -> int:
    """Assert events and final state equal an uninterrupted run's; return the duplicate events seen."""
    ref = _run(broker, topic, "ref", model)
    assert ref.returncode == 0, ref.stderr[-2000:]
    want, _ = _events(broker, f"{topic}.ref")
    got, duplicates = _events(broker, f"{topic}.{name}")
    assert got.keys() == want.keys()
    for event_id, body in want.items():
        assert _same(got[event_id], body), event_id
    _assert_state_equal(_final_state(broker, f"{topic}-{name}.state", model, topic),
                        _final_state(broker, f"{topic}-ref.state", model, topic))
    return duplicates


def test_scale_one_three_one_while_the_feed_flows(broker: EmbeddedBroker, ewma_path: Path,
                                                  spawn: Callable[..., Member], transport: str) -> None:
    topic = f"scale-{transport}-{int(time.time() * 1000)}"
    broker.create_topics([topic], partitions=PARTITIONS)
    feed = PhasedFeed(broker, topic, price_feed(24, 200, shock=(2, 150), seed=21), phases=3)
    start = time.monotonic()
    first = spawn(topic, "scaled", transport)
    _wait_until(lambda: first.current() == ALL_PARTITIONS, "the first member to own every partition", [first])

    extra = [spawn(topic, "scaled", transport) for _ in range(2)]
    feed.release(1)  # records keep flowing while partitions move to the new members
    members = [first, *extra]
    _wait_until(lambda: _settled(members), "three members to share the partitions", members)
    scaled_up = [m.current() for m in members]

    feed.release(2)
    scale_down = time.monotonic()
    rejoins_before = len(first.assignments())
    for member in extra:
        member.stop()
    _wait_until(lambda: len(first.assignments()) > rejoins_before and first.current() == ALL_PARTITIONS,
                "the first member to take every partition back", [first])
    recovery = time.monotonic() - scale_down
    feed.join()
    _wait_all_committed(broker, topic, f"{topic}-scaled", feed.total)
    first.stop()
    elapsed = time.monotonic() - start

    duplicates = _matches_reference(broker, topic, "scaled", ewma_path)
    report: dict[str, Any] = {"duplicate_events": duplicates, "scenario_seconds": round(elapsed, 1),
                              "scale_down_recovery_seconds": round(recovery, 1),
                              "assignments_after_scale_up": [sorted(p) for p in scaled_up]}
    print(json.dumps({"scale-1-3-1": report}))


def test_zombie_frozen_past_its_session_timeout(broker: EmbeddedBroker, ewma_path: Path,
                                                spawn: Callable[..., Member]) -> None:
    topic = f"zombie-{int(time.time() * 1000)}"
    group = f"{topic}-zombie"
    broker.create_topics([topic], partitions=PARTITIONS)
    feed = PhasedFeed(broker, topic, price_feed(24, 200, shock=(2, 150), seed=22), phases=3)
    zombie = spawn(topic, "zombie")
    _wait_until(lambda: zombie.current() == ALL_PARTITIONS, "the first member to own every partition", [zombie])
    feed.release(1)
    # freeze it while it works: restored, processing, and committing as it goes (state ahead of its commits)
    start = _committed_total(broker, group, topic)
    _wait_until(lambda: _committed_total(broker, group, topic) > start + 300, "the first member to commit", [zombie])
    zombie.proc.send_signal(signal.SIGSTOP)  # frozen mid-stream, past its 6 s session timeout
    frozen_at = len(zombie.log)
    survivor = spawn(topic, "zombie")
    _wait_until(lambda: survivor.current() == ALL_PARTITIONS, "the survivor to take every partition", [survivor])
    feed.release(2)
    zombie.proc.send_signal(signal.SIGCONT)  # wakes up believing it still owns its partitions
    _wait_until(lambda: "lost partitions" in zombie.log[frozen_at:], "the zombie to learn it lost its partitions",
                [zombie, survivor])
    feed.join()
    _wait_all_committed(broker, topic, group, feed.total)
    for member in (zombie, survivor):
        member.stop()
    woke = zombie.log[frozen_at:]
    fenced = "UnknownMemberIdError" in woke or "IllegalGenerationError" in woke
    duplicates = _matches_reference(broker, topic, "zombie", ewma_path)
    print(json.dumps({"zombie": {"duplicate_events": duplicates, "late_commit_fenced": fenced}}))


def _committed_total(broker: EmbeddedBroker, group: str, topic: str) -> int:
    return sum(v or 0 for v in committed(broker.bootstrap_servers, group, topic).values())

"""Chaos: rounds of 1-3 consumers, one SIGKILLed and the others SIGTERMed, then one consumer catches up.

At rnnwatch's *default* session timeout, over several seeds. Each round's kill is tied to a moment of the
victim's life read from its own log or from the group's committed offsets (while it joins, right after it
is assigned partitions, right after it restored state, or once the group has committed more records), so
the schedule means the same thing on a fast and on a slow machine. Pass condition per seed: the events of
the chaos group equal an uninterrupted run's (ids and content), every key's final state equals the
reference's, and the final consumer gets every partition within a bounded time.

Run it by hand over many seeds (the numbers the README quotes):
``python -m tests.chaos.test_random_kills --seeds 20 --symbols 150 --steps 2000``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from tests.chaos.test_crash_recovery import PARTITIONS, _assert_state_equal, _events, _final_state, _same, member_args
from tests.chaos.test_rebalance import Member
from tests.integration.helpers import committed, produce, ticks

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]
ASSIGNED = re.compile(r"assigned partitions \[([\d, ]*)\]")
KILL_MOMENTS = ("joining", "assigned", "restored", "progress")
# The final consumer must be handed partitions within this many seconds of starting: members killed in the
# last round must drop out of the group (their 10 s session, rnnwatch's default, expires) and one more join
# (about half a session timeout on the test broker) follow.
FINAL_ASSIGNMENT_BOUND_S = 60.0
FINAL_TIMEOUT_S = 600.0
CONDITION_TIMEOUT_S = 60.0


def random_walk_feed(symbols: int, steps: int, seed: int) -> list[tuple[bytes | None, bytes]]:
    """Ticks keyed by symbol, time-ordered, with rare jumps so anomalies appear all along the feed."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.01, (symbols, steps))
    jumps = rng.random((symbols, steps)) < 0.002
    returns[jumps] += rng.choice([-0.15, 0.15], size=int(jumps.sum()))
    return ticks(100 * np.exp(np.cumsum(returns, axis=1)))


def _input_free(event_id: str) -> str:
    """``<topic>-<partition>-<offset>`` without the topic (each seed has its own copy of the feed)."""
    _, partition, offset = event_id.rsplit("-", 2)
    return f"{partition}-{offset}"


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    """The body without what names the run's own topic copy (input topic, the topic in the incident id)."""
    return ({k: v for k, v in body.items() if k not in ("input", "incident")}
            | {"input": {k: v for k, v in body["input"].items() if k not in ("topic", "timestamp")}}
            | {"incident": body["incident"] | {"id": _input_free(body["incident"]["id"])}})


def _parts(text: str) -> set[int]:
    return {int(p) for p in text.split(",") if p.strip()}


@dataclass
class SeedReport:
    seed: int
    rounds: list[dict[str, Any]] = field(default_factory=list)
    final_assignment_s: float = -1.0  # until the final consumer's first assignment
    final_seconds: float = -1.0  # until it exited, caught up
    final_returncode: int | None = None
    missing_events: int = 0
    extra_events: int = 0
    missing_by_partition: dict[int, int] = field(default_factory=dict)
    state_ok: bool = False
    duplicates: int = 0

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class FlowingFeed:
    """Produces the feed into the topic in chunks at about ``rate`` records per second, in the background."""

    def __init__(self, broker: EmbeddedBroker, topic: str, feed: list[tuple[bytes | None, bytes]], rate: float,
                 chunk: int = 2000) -> None:
        self._thread = threading.Thread(target=self._flow, args=(broker.bootstrap_servers, topic, feed, rate, chunk))
        self._thread.start()

    @staticmethod
    def _flow(bootstrap: str, topic: str, feed: list[tuple[bytes | None, bytes]], rate: float, chunk: int) -> None:
        start = time.monotonic()
        for i in range(0, len(feed), chunk):
            produce(bootstrap, topic, feed[i:i + chunk])
            ahead = (i + chunk) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer, not waiting for the system under test

    def join(self) -> None:
        self._thread.join()


class Scenario:
    """One seed: rounds of members of one group while the feed flows, then a final catch-up."""

    def __init__(self, broker: EmbeddedBroker, topic: str, model: Path, seed: int, env: dict[str, str],
                 log_dir: Path) -> None:
        self.broker, self.topic, self.model, self.seed, self.env = broker, topic, model, seed, env
        self.name = f"rk{seed}-{int(time.time() * 1000)}"
        self.group = f"{topic}-{self.name}"
        self.rng = np.random.default_rng(seed)
        self.report = SeedReport(seed)
        self.members: list[Member] = []
        self.log_dir = log_dir

    def member(self, *extra: str) -> Member:
        args = member_args(self.broker, self.topic, self.name, self.model, *extra, session_timeout_ms=None)
        self.members.append(Member(args, env=self.env))
        return self.members[-1]

    def save_logs(self) -> None:
        for i, m in enumerate(self.members):
            (self.log_dir / f"seed{self.seed}-member{i:02d}.log").write_text(m.log)

    def committed_total(self) -> int:
        return sum(v or 0 for v in committed(self.broker.bootstrap_servers, self.group, self.topic).values())

    def run_rounds(self) -> None:
        for _ in range(int(self.rng.integers(4, 7))):
            n = int(self.rng.integers(1, 4))
            moment = KILL_MOMENTS[int(self.rng.integers(len(KILL_MOMENTS)))]
            members = [self.member() for _ in range(n)]
            victim = members[int(self.rng.integers(n))]
            reached = self._wait_for(moment, victim, members)
            victim.proc.kill()
            victim.proc.wait(timeout=30)
            codes = []
            for m in members:
                if m is not victim:
                    m.proc.send_signal(signal.SIGTERM)
            for m in members:
                m.proc.wait(timeout=90)
                m.close()
                codes.append(m.proc.returncode)
            self.report.rounds.append({"members": n, "kill": moment, "reached": reached, "exit_codes": codes})

    def _wait_for(self, moment: str, victim: Member, members: list[Member]) -> bool:
        start_total = self.committed_total() if moment == "progress" else 0
        wanted = int(self.rng.integers(2_000, 15_000))
        conditions: dict[str, Callable[[], bool]] = {
            "joining": lambda: "metrics on http" in victim.log,
            "assigned": lambda: bool(ASSIGNED.search(victim.log)),
            "restored": lambda: "restored " in victim.log,
            "progress": lambda: self.committed_total() >= start_total + wanted,
        }
        deadline = time.monotonic() + CONDITION_TIMEOUT_S
        while time.monotonic() < deadline:
            if conditions[moment]():
                return True
            if any(m.proc.poll() is not None for m in members):
                return False
            time.sleep(0.1)
        return False

    def final_catch_up(self) -> None:
        final = self.member("--until-caught-up")
        try:
            final.proc.wait(timeout=FINAL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            final.proc.kill()
            final.proc.wait(timeout=30)
        self.report.final_seconds = round(time.monotonic() - final.started, 1)
        final.close()
        assigned = final.seconds_until(lambda line: bool((m := ASSIGNED.search(line)) and _parts(m.group(1))))
        self.report.final_assignment_s = -1.0 if assigned is None else round(assigned, 1)
        self.report.final_returncode = final.proc.returncode
        self.final_log = final.log

    def compare(self, reference: dict[str, dict[str, Any]], ref_state: dict[tuple[int, bytes], Any],
                output: str) -> None:
        got, self.report.duplicates = _events(self.broker, output)
        got = {_input_free(i): body for i, body in got.items()}
        missing = set(reference) - set(got)
        self.report.missing_events = len(missing)
        self.report.extra_events = len(set(got) - set(reference))
        for event_id in missing:
            p = int(event_id.split("-")[0])
            self.report.missing_by_partition[p] = self.report.missing_by_partition.get(p, 0) + 1
        same_content = all(_same(_strip(got[i]), _strip(reference[i])) for i in set(got) & set(reference))
        try:
            _assert_state_equal(_final_state(self.broker, f"{self.group}.state", self.model, self.topic), ref_state)
            self.report.state_ok = same_content
        except AssertionError:
            self.report.state_ok = False

    def close(self) -> None:
        for m in self.members:
            m.close()


def reference_run(broker: EmbeddedBroker, feed: list[tuple[bytes | None, bytes]], model: Path,
                  env: dict[str, str]) -> tuple[dict[str, dict[str, Any]], dict[tuple[int, bytes], Any]]:
    """An uninterrupted run over the feed (produced first) in its own topic."""
    topic = f"randkill-ref-{int(time.time() * 1000)}"
    broker.create_topics([topic], partitions=PARTITIONS)
    produce(broker.bootstrap_servers, topic, feed)
    args = member_args(broker, topic, "ref", model, "--until-caught-up", session_timeout_ms=None)
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    events, dups = _events(broker, f"{topic}.ref")
    assert dups == 0 and events
    state = _final_state(broker, f"{topic}-ref.state", model, topic)
    return {_input_free(i): body for i, body in events.items()}, state


def run_seed(broker: EmbeddedBroker, model: Path, seed: int, feed: list[tuple[bytes | None, bytes]],
             reference: dict[str, dict[str, Any]], ref_state: dict[tuple[int, bytes], Any], env: dict[str, str],
             log_dir: Path, rate: float) -> SeedReport:
    """Rounds while a fresh copy of the feed flows into its own topic, the final catch-up, the comparison."""
    topic = f"randkill-{seed}-{int(time.time() * 1000)}"
    broker.create_topics([topic], partitions=PARTITIONS)
    scenario = Scenario(broker, topic, model, seed, env, log_dir)
    flow = FlowingFeed(broker, topic, feed, rate)
    try:
        scenario.run_rounds()
        flow.join()
        scenario.final_catch_up()
        scenario.compare(reference, ref_state, f"{topic}.{scenario.name}")
    finally:
        flow.join()
        scenario.close()
        scenario.save_logs()
    return scenario.report


@pytest.fixture(scope="module")
def reference(broker: EmbeddedBroker, ewma_path: Path) -> dict[str, Any]:
    feed = random_walk_feed(60, 800, seed=5)
    events, state = reference_run(broker, feed, ewma_path, dict(os.environ))
    return {"feed": feed, "events": events, "state": state}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_kills_lose_nothing(broker: EmbeddedBroker, ewma_path: Path, reference: dict[str, Any],
                                   seed: int, tmp_path: Path) -> None:
    feed = reference["feed"]
    report = run_seed(broker, ewma_path, seed, feed, reference["events"], reference["state"], dict(os.environ),
                      tmp_path, rate=len(feed) / 45)
    print(json.dumps({"random-kills": report.as_dict()}))
    assert report.final_returncode == 0, report.as_dict()
    assert report.missing_events == 0, report.as_dict()
    assert report.extra_events == 0, report.as_dict()
    assert report.state_ok, report.as_dict()
    assert 0 <= report.final_assignment_s <= FINAL_ASSIGNMENT_BOUND_S, report.as_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--symbols", type=int, default=150)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--flow-seconds", type=float, default=60.0, help="the feed flows in over this long")
    parser.add_argument("--model", required=True, help="a step model, e.g. one built by tests/unit/onnx_builders")
    args = parser.parse_args()
    env = dict(os.environ)
    model = Path(args.model)
    log_dir = Path(tempfile.mkdtemp(prefix="rnnwatch-randkill-"))
    feed = random_walk_feed(args.symbols, args.steps, seed=5)
    with EmbeddedBroker() as broker:
        reference, ref_state = reference_run(broker, feed, model, env)
        print(json.dumps({"reference_events": len(reference), "logs": str(log_dir)}), flush=True)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            report = run_seed(broker, model, seed, feed, reference, ref_state, env, log_dir,
                              rate=len(feed) / args.flow_seconds)
            print(json.dumps(report.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

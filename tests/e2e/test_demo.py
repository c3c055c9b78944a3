"""`rnnwatch demo`, the main job on embedded defaults, as a new user runs it (`make demo`): what it prints.

Issue 12's demo targets: every injected shock flagged, each as one incident (its reversal the next day is not a
second anomaly line), and fewer than half of the 67 anomaly lines the demo printed before the issue. And the
output is rnnwatch's own: no warning of a Kafka client library about how the demo configured it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date, timedelta

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

_SHOCK = re.compile(r"^\s+shock\s+(\d{4}-\d{2}-\d{2})\s+(\S+)\s", re.M)
_ANOMALY = re.compile(r"^\s+(\d{4}-\d{2}-\d{2})\s+(\S+)\s+price\s", re.M)


@pytest.fixture(scope="module")
def demo_output() -> str:
    proc = subprocess.run([sys.executable, "-m", "rnnwatch.consumer.cli", "demo", "--rate", "0",
                           "--metrics-port", "0"], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_every_injected_shock_is_flagged_once_and_the_lines_are_few(demo_output: str) -> None:
    shocks = [(date.fromisoformat(d), s) for d, s in _SHOCK.findall(demo_output)]
    anomalies = [(date.fromisoformat(d), s) for d, s in _ANOMALY.findall(demo_output)]
    assert len(shocks) == 8, demo_output
    assert len(anomalies) < 67 / 2, demo_output
    for day, symbol in shocks:
        assert (day, symbol) in anomalies, f"shock {day} {symbol} not flagged:\n{demo_output}"
        after = [a for a in anomalies if a[1] == symbol and day < a[0] <= day + timedelta(days=5)]
        assert not after, f"shock {day} {symbol} alarmed again at {after} (its reversal is the same incident)"
    assert re.search(rf"done: \d+ ticks, {len(anomalies)} anomalies, 8/8 injected shocks flagged", demo_output)


def test_the_demo_prints_no_client_library_warnings(demo_output: str) -> None:
    assert not re.search(r"WARNING kafka\.", demo_output), demo_output

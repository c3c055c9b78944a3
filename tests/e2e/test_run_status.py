"""`rnnwatch run` on a terminal prints a periodic status line; piped, it does not (tests/e2e/test_progress.py)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid

import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.demo.feed import load_ticks, produce_ticks

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
WAIT_S = 90.0  # upper bound for the first status line (printed every 10 s); never a fixed sleep


def test_run_on_a_terminal_prints_a_status_line(broker: EmbeddedBroker) -> None:
    topic = f"status-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic], partitions=2)
    produce_ticks(broker.bootstrap_servers, topic, load_ticks()[:2000])
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "rnnwatch.consumer.cli", "run", "--input-topic", topic,
                             "--bootstrap-servers", broker.bootstrap_servers, "--group-id", topic,
                             "--auto-offset-reset", "earliest",
                             "--metrics-port", "0", "--session-timeout-ms", "6000"],
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    text, deadline = "", time.monotonic() + WAIT_S
    try:
        while not re.search(r"status: .*dead letters \d+", text) and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                text += os.read(master, 65536).decode(errors="replace")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        os.close(master)
    line = re.search(r"status: (.*)", text)
    assert line, text[-2000:]
    assert re.fullmatch(r"[\d,]+ rec/s  lag [\d,]+  keys \d+  anomalies [\d,]+( \(\+[\d,]+\))?  dead letters \d+\r?",
                        line.group(1)), line.group(1)

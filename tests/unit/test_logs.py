"""Rate-limited logging: a condition a bad stream raises on every record logs once per interval, with a count."""

from __future__ import annotations

import logging

import pytest

from rnnwatch.consumer.logs import RateLimitedLog


def test_one_line_per_interval_and_the_count_of_what_was_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("rnnwatch.test"), interval_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="rnnwatch.test"):
        assert limited.warning("reset %s", "a")
        for _ in range(5):
            now[0] += 1.0
            assert not limited.warning("reset %s", "b")
        now[0] += 60.0
        assert limited.warning("reset %s", "c")
    assert [r.getMessage() for r in caplog.records] == [
        "reset a", "reset c (5 more since the last such message, not logged)"]


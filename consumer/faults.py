"""Crash points for the chaos suite: kill this process with SIGKILL at a named point of the cycle.

Off unless ``RNNWATCH_CRASH_POINT`` is set (read once at import), so production pays one attribute check per
batch. ``RNNWATCH_CRASH_AFTER=N`` crashes on the N-th time the point is reached (default 1). Points:

* ``batch.before_events``   - a batch was stepped (state changed in memory), no event sent yet
* ``batch.after_events``    - events of a batch were handed to the producer, nothing flushed
* ``checkpoint.before_snapshots`` - events flushed, no snapshot written
* ``checkpoint.before_commit``    - snapshots flushed, offsets not committed
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "maybe_crash"]

POINTS = ("batch.before_events", "batch.after_events", "checkpoint.before_snapshots", "checkpoint.before_commit")
_POINT = os.environ.get("RNNWATCH_CRASH_POINT", "")
_remaining = int(os.environ.get("RNNWATCH_CRASH_AFTER", "1") or "1")
if _POINT and _POINT not in POINTS:
    _msg = f"RNNWATCH_CRASH_POINT={_POINT!r} is not one of {POINTS}"
    raise ValueError(_msg)


def maybe_crash(point: str) -> None:
    global _remaining
    if point != _POINT:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)

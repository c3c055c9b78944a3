"""Crash points for the chaos suite: kill this process with SIGKILL at a named point of the cycle.

Off unless ``RNNWATCH_CRASH_POINT`` is set when the service starts (:func:`arm`, called once by ``Service``), so
production pays one string comparison per point reached. ``RNNWATCH_CRASH_AFTER=N`` crashes on the N-th time the
point is reached (default 1). A value that names no point is a ``ConfigError`` at start-up (never at import: any
module may import this one). Points:

* ``batch.before_events``   - a batch was stepped (state changed in memory), no event sent yet
* ``batch.after_events``    - events of a batch were handed to the producer, nothing flushed
* ``checkpoint.before_snapshots`` - events flushed, no snapshot written
* ``checkpoint.before_commit``    - snapshots flushed, offsets not committed
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

from rnnwatch.consumer.errors import ConfigError

__all__ = ["POINTS", "arm", "maybe_crash"]

POINTS = ("batch.before_events", "batch.after_events", "checkpoint.before_snapshots", "checkpoint.before_commit")
_point = ""
_remaining = 0


def arm(environ: Mapping[str, str] | None = None) -> None:
    """Read ``RNNWATCH_CRASH_POINT`` / ``RNNWATCH_CRASH_AFTER`` (default: ``os.environ``); no point = disarmed."""
    global _point, _remaining
    env = os.environ if environ is None else environ
    point = env.get("RNNWATCH_CRASH_POINT", "")
    after = env.get("RNNWATCH_CRASH_AFTER", "") or "1"
    if point and point not in POINTS:
        msg = f"RNNWATCH_CRASH_POINT={point!r} is not one of {', '.join(POINTS)}"
        raise ConfigError(msg)
    if not after.isdigit() or int(after) < 1:
        msg = f"RNNWATCH_CRASH_AFTER={after!r} must be a whole number >= 1"
        raise ConfigError(msg)
    _point, _remaining = point, int(after)


def maybe_crash(point: str) -> None:
    global _remaining
    if point != _point:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)

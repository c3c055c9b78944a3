"""Backpressure: stop fetching input while the producer holds too much that the broker has not acknowledged.

When an output partition stalls (leader election, a full disk, a throttled quota), kafka-python 3's producer
keeps accepting records into an unbounded buffer, so a consumer that keeps going turns the stall into
unbounded memory. The service asks :meth:`Backpressure.update` once per loop with the sink's pending bytes:
above ``high_bytes`` it pauses every assigned input partition (polls keep running, so the group membership
and heartbeats are unaffected), at or below half of it it resumes them. What is in flight is then bounded
by ``high_bytes`` plus one batch's records, whatever the stall's length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["Backpressure"]

log = logging.getLogger(__name__)


class Backpressure:
    def __init__(self, high_bytes: int, throttle: Callable[[bool], None],
                 on_pause: Callable[[], None] = lambda: None) -> None:
        self.high_bytes = high_bytes
        self.low_bytes = high_bytes // 2
        self.paused = False
        self._throttle = throttle
        self._on_pause = on_pause

    def update(self, pending_bytes: int) -> bool:
        """Pause or resume consumption for ``pending_bytes`` unacknowledged; returns whether it is paused."""
        if not self.paused and pending_bytes > self.high_bytes:
            self.paused = True
            self._throttle(True)
            self._on_pause()
            log.warning("paused consumption: %d bytes sent but not yet acknowledged by the broker (limit %d, "
                        "max_in_flight_bytes); resuming below %d", pending_bytes, self.high_bytes, self.low_bytes)
        elif self.paused and pending_bytes <= self.low_bytes:
            self.paused = False
            self._throttle(False)
            log.info("resumed consumption: %d bytes in flight", pending_bytes)
        return self.paused

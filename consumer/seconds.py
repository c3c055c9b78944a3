"""Per-key monotonic times at half width: float32 seconds from an origin (the state table's ``last_seen_s``).

The state table keeps, per key, when the key last had a record, only to evict idle keys after a TTL (minutes
to days) and to carry the idle time into a snapshot's header. A float64 monotonic reading costs 8 bytes per key
(8 MB at a million keys); float32 seconds *relative to an origin* cost 4 and keep that resolution for long:
1/16 s for 11 days after the origin, 1 s for 194 days, 2 s for a year (a TTL is rounded by less than that).
The origin is the first time written (a reading of the same clock), so fake clocks of tests and
real monotonic clocks both start exact; before any write every row reads 0.0, as the float64 array did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnwatch.consumer import pages

__all__ = ["Seconds"]


class Seconds:
    """An array of times in seconds: ``s[rows]`` reads float64 absolute times, ``s[rows] = t`` stores them."""

    __slots__ = ("origin", "stored")

    def __init__(self, capacity: int) -> None:
        self.stored = pages.full((capacity,), 0.0, np.float32)
        self.origin: float | None = None  # set by the first write

    def __getitem__(self, index: Any) -> Any:
        return self.stored[index].astype(np.float64) + (self.origin or 0.0)

    def __setitem__(self, index: Any, value: Any) -> None:
        t = np.asarray(value, dtype=np.float64)
        if self.origin is None:
            if t.size == 0:
                return
            self.origin = float(t.min())
        self.stored[index] = t - self.origin

    def before(self, t: float) -> np.ndarray:
        """Rows whose time is earlier than ``t``, exactly as in float64, without a float64 copy of every row (an
        eviction sweep at a million keys would briefly need 8 MB more): the threshold is rounded to float32 and
        ``<`` becomes ``<=`` where it was rounded down (no float32 lies between it and the exact threshold)."""
        exact = t - (self.origin or 0.0)
        edge = np.float32(exact)
        return np.asarray(self.stored <= edge if float(edge) < exact else self.stored < edge)

    def grown(self, rows: int) -> Seconds:
        """These times with room for ``rows`` rows (the new ones read as the origin until written)."""
        out = Seconds.__new__(Seconds)
        out.stored, out.origin = pages.grown(self.stored, rows, 0.0), self.origin
        return out

    @property
    def itemsize(self) -> int:
        return int(self.stored.itemsize)

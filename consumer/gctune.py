"""The cyclic garbage collector kept off `rnnwatch run`'s hot path: start-up objects frozen, young ones collected
once a poll's worth of them is alive, not every 700.

A poll's records are container objects while it is handled: the client's messages, the decoder's parsed JSON
objects (three or so per record); nearly all are freed by their reference counts when the poll is done. With
CPython's default threshold (700 net allocations) a poll of 20,000 records triggered ~50 young collections, each
promoting still-live records towards the old generation, and every few polls a full collection traversed every
object of the process (the start-up's modules, functions, the model's metadata). Measured, 200,000 records x
1,000 keys on the librdkafka transport: ~540 collections, 0.08-0.1 s of a 0.75 s run (4 full collections, 16 ms
each); after :func:`settle`, none. The records of a poll form no cycles, so collecting less often frees the same
memory (by reference counting) at the same time; the collector still runs when cycles do pile up.

Done by the CLI once the service is built (imports done, model loaded), like ``consumer.malloc``: a process's
collector belongs to the program that owns it, not to a library a user imports.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_OBJECTS_PER_RECORD", "settle"]

YOUNG_OBJECTS_PER_RECORD = 5  # container objects a record may hold alive while its poll is handled (with room)


def settle(max_poll_records: int) -> tuple[int, int, int]:
    """Freeze what exists now (never traversed again) and collect the young generation once ``max_poll_records``
    records' worth of objects are alive; returns the thresholds now in force."""
    gc.collect()  # start-up garbage is freed, not frozen
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_OBJECTS_PER_RECORD * max_poll_records), middle, old)
    return gc.get_threshold()

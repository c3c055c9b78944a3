"""The state table's key index: (partition, key) -> row, held in numpy arrays.

A ``dict`` per partition costs about 100 bytes per key (its entry and index slots plus an ``int`` object for
the row), a third of a key's whole state with the bundled model; at a million keys that is ~100 MB. Here a
key costs 12 bytes: the low 32 bits of its hash per row and two ``int32`` slots of an open-addressing table
(linear probing, load <= 1/2, deleted slots marked until the next rebuild). A slot position uses fewer bits
than 32 (the table has fewer than 2^32 slots), and a hash match is only a filter before the keys are
compared, so the high half of a 64-bit hash bought nothing but 4 bytes per key. A batch of keys is looked up
with a few vectorised probe rounds instead of a Python call per key.

Hashes are Python's own ``hash(bytes)`` (SipHash, per process) mixed with the partition; a hash match is
always confirmed by comparing the keys themselves, so two keys whose hashes collide stay two rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rnnwatch.consumer import pages
from rnnwatch.consumer.keyarena import KeyArena, Packed

__all__ = ["KEY_INDEX_BYTES", "KeyIndex", "distinct", "key_hashes"]

_EMPTY, _DELETED = -1, -2
KEY_INDEX_BYTES = 4 + 2 * 4  # per key: its 32-bit hash, and two int32 slots (the table is at most half full)
_U32 = (1 << 32) - 1
_REMOVE_ROWS = 16_384  # rows removed from the index at once (see KeyIndex.remove)
_U64 = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): spreads partitions over the hash space


def _partition_salt(partition: int) -> int:
    return ((partition + 1) * _MIX) & _U64


def key_hashes(partition: int, keys: Sequence[bytes]) -> np.ndarray:
    """uint32 hash of each (partition, key): the low half of Python's 64-bit hash, mixed with the partition."""
    h = np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)).view(np.uint64)
    mixed: np.ndarray = (h ^ np.uint64(_partition_salt(partition))).astype(np.uint32)
    return mixed


def distinct(keys: Sequence[bytes]) -> tuple[list[bytes], np.ndarray] | None:
    """(each key once, in first-seen order; where each of ``keys`` is in that list), or None if none repeats.

    A poll holds many records per key (20 each for 1,000 keys in 20,000 records): hashing, packing and probing
    each record's key costs more than two C-level dict passes that reduce the batch to its distinct keys.
    """
    seen = dict.fromkeys(keys)
    if len(seen) == len(keys):
        return None
    unique = list(seen)
    position = dict(zip(unique, range(len(unique)), strict=True))
    return unique, np.fromiter(map(position.__getitem__, keys), dtype=np.int64, count=len(keys))


class KeyIndex:
    """Row lookup for a :class:`~rnnwatch.consumer.state.StateTable` (its ``keys`` and ``partition`` arrays).

    The table owns the rows; the index only maps to them. Callers pass the table's current ``keys`` (object
    array) and ``partition`` arrays, which the table replaces when it grows.
    """

    def __init__(self, capacity: int) -> None:
        self.row_hash = pages.full((capacity,), 0, np.uint32)
        self._slots = pages.full((_table_size(capacity),), _EMPTY, np.int32)
        self._live = 0
        self._deleted = 0

    def grow(self, capacity: int) -> None:
        """Room for rows up to ``capacity`` (the slot table grows on insert)."""
        self.row_hash = pages.grown(self.row_hash, capacity, 0)

    def lookup(self, partition: int, keys: Packed, hashes: np.ndarray, table_keys: KeyArena,
               table_partition: np.ndarray) -> np.ndarray:
        """Row of each key of the batch in ``partition``; -1 where the key has no row."""
        n = hashes.size
        rows = np.full(n, -1, dtype=np.int64)
        mask = self._slots.size - 1
        pos = (hashes & np.uint32(mask)).astype(np.int64)
        pending = np.arange(n)
        while pending.size:
            cand = self._slots[pos[pending]].astype(np.int64)
            occupied = cand != _EMPTY  # an empty slot ends the probe: the key is absent
            pending, cand = pending[occupied], cand[occupied]
            live = np.flatnonzero(cand >= 0)
            hit_rows, hit_at = cand[live], pending[live]
            same = (self.row_hash[hit_rows] == hashes[hit_at]) & (table_partition[hit_rows] == partition)
            if same.any():  # confirm: hashes may collide
                same[same] = table_keys.equal(hit_rows[same], keys, hit_at[same])
            found = live[same]
            rows[pending[found]] = cand[found]
            keep = np.ones(pending.size, dtype=bool)
            keep[found] = False
            pending = pending[keep]
            pos[pending] = (pos[pending] + 1) & mask
        return rows

    def find(self, partition: int, key: bytes, table_keys: KeyArena, table_partition: np.ndarray) -> int | None:
        """Row of one key (a short Python probe: no array set-up for a single key)."""
        h = ((hash(key) & _U64) ^ _partition_salt(partition)) & _U32
        slots, mask = self._slots, self._slots.size - 1
        pos = h & mask
        while True:
            row = int(slots[pos])
            if row == _EMPTY:
                return None
            if (row >= 0 and int(self.row_hash[row]) == h and int(table_partition[row]) == partition
                    and table_keys[row] == key):
                return row
            pos = (pos + 1) & mask

    def insert(self, hashes: np.ndarray, rows: np.ndarray, live_rows: Callable[[], np.ndarray]) -> None:
        """Add rows for keys known to be absent (distinct); ``live_rows()``: every indexed row, for a rebuild."""
        self.row_hash[rows] = hashes
        if 2 * (self._live + self._deleted + rows.size) > self._slots.size:
            self._slots = pages.full((_table_size(self._live + rows.size),), _EMPTY, np.int32)
            self._live = self._deleted = 0
            self._place(live_rows())
        self._place(rows)

    def remove(self, rows: np.ndarray) -> None:
        """Forget these rows (each indexed once), a slice at a time: a revoked partition's every row at once
        would need a few int64 arrays of its size (~12 MB for 300,000 keys) on top of the table."""
        for start in range(0, rows.size, _REMOVE_ROWS):
            self._remove(rows[start:start + _REMOVE_ROWS])

    def _remove(self, rows: np.ndarray) -> None:
        mask = self._slots.size - 1
        pos = (self.row_hash[rows] & np.uint32(mask)).astype(np.int64)
        pending = np.arange(rows.size)
        while pending.size:
            hit = self._slots[pos[pending]] == rows[pending]
            self._slots[pos[pending[hit]]] = _DELETED
            pending = pending[~hit]
            pos[pending] = (pos[pending] + 1) & mask
        self._live -= rows.size
        self._deleted += rows.size

    def _place(self, rows: np.ndarray) -> None:
        mask = self._slots.size - 1
        pos = (self.row_hash[rows] & np.uint32(mask)).astype(np.int64)
        pending = np.arange(rows.size)
        reused = 0
        while pending.size:
            at = pos[pending]
            free = self._slots[at] < 0  # empty or deleted: the key is absent, so either may take it
            cand = pending[free]
            _, first = np.unique(at[free], return_index=True)  # one winner per slot per round
            winners = cand[first]
            reused += int((self._slots[pos[winners]] == _DELETED).sum())
            self._slots[pos[winners]] = rows[winners]
            placed = np.zeros(rows.size, dtype=bool)
            placed[winners] = True
            pending = pending[~placed[pending]]
            pos[pending] = (pos[pending] + 1) & mask
        self._live += rows.size
        self._deleted -= reused


def _table_size(keys: int) -> int:
    """Power of two >= 4 x keys (load 1/4 after a rebuild, rebuilt again past 1/2), at least 1,024 slots."""
    return max(1024, 1 << max(0, 4 * keys - 1).bit_length())

"""The state table's keys, packed in one byte buffer instead of one Python ``bytes`` object per key.

A ``bytes`` object costs 33 bytes plus its length, rounded up to 8, plus the 8-byte pointer that holds it: 56
bytes for a 7-byte symbol, more than the key index and the bookkeeping together. Here a key costs its length
plus 8 (start and length per row, ``uint32`` and ``int32`` while the buffer is under 4 GiB), and the record's
own ``bytes`` object is freed with the batch. A row's key is ``buf[start:start + length]``; a removed key
leaves its bytes behind until the buffer is compacted (on an append that needs room while the dead bytes
outweigh the live ones), so appends stay amortised O(1) and the buffer holds at most about twice the live
bytes. Keys of a batch are compared with rows' keys vectorised (:meth:`KeyArena.equal` against a
:class:`Packed` batch): no Python call per key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from rnnwatch.consumer import pages

__all__ = ["KEY_SLOT_BYTES", "KeyArena", "Packed"]

_NONE = -1  # length of a row without a key
KEY_SLOT_BYTES = 4 + 4  # per row: start (uint32) and length (int32); the key's bytes come on top
_NARROW_BUFFER = 1 << 32  # a buffer this large or larger has int64 starts (4 GiB of keys: tens of millions)
_ALL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_PAD = bytes(8)  # after the last key of a buffer: an 8-byte word may be read from any key's start
_COPY_BYTES = 1 << 16  # key bytes moved per slice of rows when the buffer is compacted (see _make_room)


@dataclass(frozen=True)
class Packed:
    """A batch of keys as one buffer: key ``i`` is ``data[start[i]:start[i] + length[i]]``."""

    data: np.ndarray  # uint8
    start: np.ndarray  # int64
    length: np.ndarray  # int64

    @classmethod
    def of(cls, keys: Sequence[bytes]) -> Packed:
        length = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
        start = np.zeros(len(keys), dtype=np.int64)
        np.cumsum(length[:-1], out=start[1:])
        return cls(np.frombuffer(b"".join([*keys, _PAD]), dtype=np.uint8), start, length)


class KeyArena:
    """Per row: its key's bytes in a shared buffer (``None`` for a free row)."""

    def __init__(self, capacity: int) -> None:
        self.start = pages.full((capacity,), 0, np.uint32)
        self.length = pages.full((capacity,), _NONE, np.int32)
        self._buf = pages.empty((1024,), np.uint8)
        self._end = 0  # bytes of the buffer in use, dead ones included
        self._live = 0  # bytes of keys still held

    def __len__(self) -> int:
        return self.length.size

    def __getitem__(self, row: int) -> bytes | None:
        n = int(self.length[row])
        if n < 0:
            return None
        s = int(self.start[row])
        return self._buf[s:s + n].tobytes()

    def __iter__(self) -> Iterator[bytes | None]:
        return iter(self.get(np.arange(self.length.size)))

    def get(self, rows: np.ndarray) -> list[bytes | None]:
        """The key of each row (``None`` where a row has none)."""
        buf = self._buf
        return [None if n < 0 else buf[s:s + n].tobytes()
                for s, n in zip(self.start[rows].tolist(), self.length[rows].tolist(), strict=True)]

    @property
    def buffer_bytes(self) -> int:
        return self._buf.nbytes

    def grow(self, capacity: int) -> None:
        """Room for rows up to ``capacity``."""
        self.start = pages.grown(self.start, capacity, 0)
        self.length = pages.grown(self.length, capacity, _NONE)

    def put(self, rows: np.ndarray, keys: Sequence[bytes]) -> None:
        """Store ``keys[i]`` as the key of ``rows[i]`` (rows without a key)."""
        packed = Packed.of(keys)
        size = packed.data.size - len(_PAD)
        if self._end + size + len(_PAD) > self._buf.size:
            self._make_room(size)
        self._buf[self._end:self._end + size + len(_PAD)] = packed.data
        self.start[rows] = self._end + packed.start
        self.length[rows] = packed.length
        self._end += size
        self._live += size

    def remove(self, rows: np.ndarray) -> None:
        """Forget the keys of these rows (each has one)."""
        self._live -= int(self.length[rows].sum())
        self.length[rows] = _NONE

    def equal(self, rows: np.ndarray, batch: Packed, at: np.ndarray) -> np.ndarray:
        """Whether the key of ``rows[i]`` is the batch's key ``at[i]`` (rows with a key), compared bytewise.

        Eight bytes at a time: round ``j`` compares the words at offset ``8 j`` of the pairs whose keys are longer,
        the last word of a key masked to its remaining bytes (a 7-byte key: one round of one comparison).
        """
        lens = batch.length[at]
        same: np.ndarray = self.length[rows] == lens
        pending = np.flatnonzero(same & (lens > 0))
        if pending.size == 0:
            return same
        ours, theirs = self.start[rows[pending]], batch.start[at[pending]]
        ours_w, theirs_w = _words(self._buf), _words(batch.data)
        off = 0
        while pending.size:
            rest = lens[pending] - off  # > 0
            mask = _ALL >> (np.uint64(64) - np.minimum(rest, 8).astype(np.uint64) * np.uint64(8))
            differ = ((ours_w[ours + off] ^ theirs_w[theirs + off]) & mask) != 0
            same[pending[differ]] = False
            more = ~differ & (rest > 8)
            pending, ours, theirs = pending[more], ours[more], theirs[more]
            off += 8
        return same

    def _make_room(self, size: int) -> None:
        """Copy the live keys to the front of a buffer with room for ``size`` more bytes: the same size when at
        least half of the old one is dead (compaction), else twice the size (growth), doubled until they fit.

        Without dead bytes (no key was removed since the last copy) the keys keep their places: one copy of the
        used bytes. Otherwise they are packed in row order, a slice of rows at a time, so the positions of the
        bytes moved (an int64 each) cover about ``_COPY_BYTES`` at once, not every key byte of the table.
        """
        capacity = self._buf.size if 2 * self._live < self._end else 2 * self._buf.size
        while self._live + size + len(_PAD) > capacity:
            capacity *= 2
        if capacity >= _NARROW_BUFFER and self.start.dtype != np.int64:  # offsets past 4 GiB: widened for good
            wide = pages.empty(self.start.shape, np.int64)
            wide[:] = self.start
            self.start = wide
        buf = pages.empty((capacity,), np.uint8)
        if self._live == self._end:
            buf[:self._end] = self._buf[:self._end]
            self._buf = buf
            return
        step = max(1, _COPY_BYTES // max(1, int(self.length.max())))
        end = 0
        for first in range(0, self.length.size, step):
            rows = first + np.flatnonzero(self.length[first:first + step] >= 0)
            lens = self.length[rows].astype(np.int64)
            total = int(lens.sum())
            buf[end:end + total] = self._buf[_positions(self.start[rows], lens)]
            self.start[rows] = end + np.cumsum(lens) - lens
            end += total
        self._buf, self._end = buf, end

def _words(buf: np.ndarray) -> np.ndarray:
    """The little-endian 8-byte word starting at every byte of ``buf`` (a view: word ``i`` is ``buf[i:i + 8]``)."""
    return np.ndarray(shape=(buf.size - 7,), dtype="<u8", buffer=buf, strides=(1,))


def _positions(start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Every byte position of the ranges ``[start[i], start[i] + length[i])``, range after range."""
    total = int(length.sum())
    ends = np.cumsum(length)
    positions: np.ndarray = np.repeat(start - (ends - length), length) + np.arange(total)
    return positions

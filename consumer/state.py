"""Per-key state table (DESIGN §3): one row per key, one numpy array per column.

Rows are found through a numpy key index (``consumer.keyindex``: 16 bytes per key, a batch of keys looked
up with a few vectorised probes; hashing each key is the only per-record Python work), then every read and
write is a gather/scatter with index arrays; new keys get their rows in one allocation per batch. State is
scoped by partition: a revoked partition's rows are dropped at once, so a rebalance never leaves stale keys
behind, and idle keys are evicted after a TTL so memory is bounded by the *active* key space, not by every
key ever seen.

Storage is narrower than arithmetic: a column declared ``float64`` is *stored* as ``float32`` unless declared
``wide`` (unbounded values), and an ``int64`` column declared a ``counter`` as ``int32``; other ``int64``
columns (offsets, steps, event times) keep every bit, so a new column is safe unless it says otherwise. Scorer
state is a third of a key's bytes; at a million keys halving it saves ~60 MB, and a detector's state (EWMA
moments, counters, ranges of float32 inputs) loses nothing that matters to a decision by being rounded to
float32 between two steps.
Detectors still compute in the declared dtype: :attr:`StateTable.arrays` hands them each narrowed column
as a :class:`Narrowed` whose gather widens and whose scatter rounds (to nearest), so the rounding happens
in one place; :attr:`StateTable.stored` holds the arrays as stored.

A row's snapshot (:meth:`StateTable.snapshot`, or :meth:`StateTable.snapshots` for many rows at once) is
immutable bytes: a small header (layout identity, input offset it reflects, last event time, steps) and the
raw column values as stored. The layout identity hashes every column's stored dtype, so a snapshot written
with another layout is recognised; one written before narrowing (every column at its declared dtype, the
*wide* layout) is still read, its values rounded to the stored dtypes. Columns marked ``keep_on_reset``
(ordering bookkeeping) survive a re-warm; everything else returns to its declared initial value.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnwatch.consumer import pages
from rnnwatch.consumer.errors import StateError
from rnnwatch.consumer.keyarena import KEY_SLOT_BYTES, KeyArena, Packed
from rnnwatch.consumer.keyindex import KEY_INDEX_BYTES, KeyIndex, distinct, key_hashes
from rnnwatch.consumer.seconds import Seconds

__all__ = ["MAX_PARTITION", "NO_TIME", "Column", "Narrowed", "Snapshot", "StateTable"]

NO_TIME = np.iinfo(np.int64).min  # "no event seen yet" for last_event_ms
MAX_PARTITION = np.iinfo(np.int16).max  # partitions are stored as int16: 2 bytes per key
_MAGIC = b"RNW1"
_HEADER = struct.Struct("<4sH")  # magic, identity length
_TAIL = struct.Struct("<qqq")  # input offset, last event ms, steps
_FREE_SCAN_ROWS = 65_536  # rows searched for released ones at once (see StateTable._released_rows)
_NARROW_FLOAT = (np.dtype(np.float64), np.dtype(np.float32))
_NARROW_COUNTER = (np.dtype(np.int64), np.dtype(np.int32))


@dataclass(frozen=True)
class Column:
    """One per-key array of ``shape`` (excluding the row axis) with its initial value.

    ``dtype`` is what readers compute with; the table stores a ``float64`` column at half width (:attr:`stored`)
    unless ``wide`` (an unbounded value), and an ``int64`` column only when it is a ``counter`` (a count that
    grows by at most one per step: ``int32`` holds 2^31 steps). Any other ``int64`` keeps every bit.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    init: np.ndarray = field(compare=False, repr=False)
    wide: bool = False
    counter: bool = False

    @classmethod
    def filled(cls, name: str, shape: tuple[int, ...], dtype: type | np.dtype, value: float, *,
               wide: bool = False, counter: bool = False) -> Column:
        dt = np.dtype(dtype)
        return cls(name, shape, dt, np.full(shape, value, dtype=dt), wide, counter)

    @property
    def stored(self) -> np.dtype:
        """The dtype of the table's array (and of the snapshot's bytes)."""
        wide, narrow = _NARROW_COUNTER if self.counter else _NARROW_FLOAT
        return narrow if self.dtype == wide and not self.wide else self.dtype


class Narrowed:
    """A column stored narrower than it is read: ``col[rows]`` widens to ``dtype``, ``col[rows] = v`` rounds.

    Only bounded values belong here: a float beyond ``float32``'s range would become an infinity (numpy warns),
    so a column whose values are unbounded (squares of surprises) is declared ``wide``.
    """

    __slots__ = ("dtype", "stored")

    def __init__(self, stored: np.ndarray, dtype: np.dtype) -> None:
        self.stored, self.dtype = stored, dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        wide: np.ndarray = self.stored[index].astype(self.dtype)
        return wide

    def __setitem__(self, index: Any, value: Any) -> None:
        # a wave's row of values rounded first, then scattered: numpy's scatter of a float64 array into a float32 one
        # casts inside its indexing loop, slower than one cast and a scatter of the same dtype (the same bits)
        if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype != self.stored.dtype:
            value = value.astype(self.stored.dtype)
        self.stored[index] = value

    def take(self, rows: np.ndarray, axis: int = 0) -> np.ndarray:
        """``ndarray.take``'s gather, widened (the detectors' cheap gather of a wave's rows)."""
        wide: np.ndarray = self.stored.take(rows, axis=axis).astype(self.dtype)
        return wide

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape


@dataclass(frozen=True)
class Snapshot:
    """A decoded snapshot: the values of one key's columns at ``input_offset``."""

    identity: str
    input_offset: int
    last_event_ms: int
    steps: int
    values: dict[str, np.ndarray]


class StateTable:
    """Rows of per-key state for all keys of the assigned partitions."""

    def __init__(self, columns: Sequence[Column], identity: str, capacity: int = 1024) -> None:
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            msg = f"duplicate state column names: {names}"
            raise ValueError(msg)
        self.columns = tuple(columns)
        self.identity = _identity(identity, [(c.name, c.shape, c.stored) for c in columns])
        # the layout of snapshots written before storage was narrowed (every column at its declared dtype)
        self._wide_identity = _identity(identity, [(c.name, c.shape, c.dtype) for c in columns])
        self._capacity = max(1, capacity)
        self.stored: dict[str, np.ndarray] = {
            c.name: pages.empty((self._capacity, *c.shape), c.stored) for c in columns
        }
        self.arrays: dict[str, np.ndarray | Narrowed] = {}
        self._expose()
        cap = (self._capacity,)
        self.steps = pages.full(cap, 0, np.int32)  # a count of steps, as the counters (2^31 holds any key)
        self.last_event_ms = pages.full(cap, NO_TIME, np.int64)
        self.last_offset = pages.full(cap, -1, np.int64)
        self.last_seen_s = Seconds(self._capacity)  # monotonic clock, float32 from an origin (consumer.seconds)
        self.changelog_offset = pages.full(cap, -1, np.int64)  # of the last acknowledged snapshot
        self.dirty = pages.full(cap, False, np.bool_)
        self.partition = pages.full(cap, -1, np.int16)  # a topic's partitions stay far below 2^15 (checked)
        self.keys = KeyArena(self._capacity)  # the key of each used row (``keys[row]``), None when free
        self._index = KeyIndex(self._capacity)
        # free rows: every row from ``_unused`` up was never used; a released row below it has partition -1 and is
        # found by a scan when rows are wanted (lowest first, before the lowest unused row), so releasing costs no
        # memory: a stack of released rows grew to 4 MB, plus the copy, as a million keys' partitions were revoked
        self._unused = 0
        self._n_released = 0
        self._free_from = 0  # no released row below this one
        self._layout = [(c.name, int(np.prod(c.shape, dtype=np.int64)), c.stored, c.shape) for c in columns]
        self._row_bytes = sum(n * dtype.itemsize for _, n, dtype, _ in self._layout)
        self._wide_layout = [(c.name, n, c.dtype, c.shape) for c, (_, n, _, _) in zip(columns, self._layout,
                                                                                      strict=True)]

    # -- lookup -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._unused - self._n_released

    def rows_for(self, partition: int, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Row index of each key in ``partition`` (new keys get fresh rows); and a mask of the new ones.

        A key's first record in ``keys`` is the new one; later records of it find its row. Each distinct key
        is looked up once (:func:`~rnnwatch.consumer.keyindex.distinct`).
        """
        once = distinct(keys)
        if once is None:
            return self._rows_for(partition, keys)
        unique, where = once
        rows, is_new = self._rows_for(partition, unique)
        new = np.zeros(len(keys), dtype=bool)
        if is_new.any():
            _, first = np.unique(where, return_index=True)  # unique[j] first appears at keys[first[j]]
            new[first[is_new]] = True
        return rows[where], new

    def _rows_for(self, partition: int, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        hashes = key_hashes(partition, keys)
        rows = self._index.lookup(partition, Packed.of(keys), hashes, self.keys, self.partition)
        is_new = np.zeros(len(keys), dtype=bool)
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            wanted = _objects(keys)
            missing_keys = wanted[missing].tolist()
            first = dict(zip(missing_keys[::-1], missing[::-1].tolist(), strict=True))  # key -> first record
            at = np.sort(np.fromiter(first.values(), dtype=np.int64, count=len(first)))
            fresh = self._allocate(partition, wanted[at], hashes[at])
            row_of = dict(zip(wanted[at].tolist(), fresh.tolist(), strict=True))
            rows[missing] = np.fromiter(map(row_of.__getitem__, missing_keys), dtype=np.int64, count=missing.size)
            is_new[at] = True
        return rows, is_new

    def rows_of(self, partition: int, keys: Sequence[bytes]) -> np.ndarray:
        """Row of each key in ``partition``, -1 where it has none (nothing is allocated)."""
        return self._index.lookup(partition, Packed.of(keys), key_hashes(partition, keys), self.keys, self.partition)

    def row_of(self, partition: int, key: bytes) -> int | None:
        return self._index.find(partition, key, self.keys, self.partition)

    def count(self, partition: int) -> int:
        return int(np.count_nonzero(self.partition == partition))

    def rows_of_partition(self, partition: int) -> np.ndarray:
        return np.flatnonzero(self.partition == partition)

    def items(self, partition: int) -> list[tuple[bytes, int]]:
        """(key, row) of every key of ``partition``."""
        rows = self.rows_of_partition(partition)
        return list(zip(self.keys.get(rows), rows.tolist(), strict=True))  # type: ignore[arg-type]

    # -- lifecycle --------------------------------------------------------------------------------------
    def reset(self, rows: np.ndarray) -> None:
        """Return rows to their initial model/scorer state (re-warm); ordering bookkeeping is kept."""
        if rows.size == 0:
            return
        for c in self.columns:
            self.stored[c.name][rows] = c.init
        self.steps[rows] = 0
        self.dirty[rows] = True

    def drop_partition(self, partition: int) -> int:
        """Forget every key of a revoked partition; returns how many rows were freed."""
        rows = self.rows_of_partition(partition)
        self._release(rows)
        return int(rows.size)

    def idle_rows(self, now_s: float, ttl_s: float) -> np.ndarray:
        """Rows not seen for ``ttl_s`` whose state is in an acknowledged snapshot (safe to drop from memory)."""
        used = self.partition >= 0
        idle = self.last_seen_s.before(now_s - ttl_s)
        return np.flatnonzero(used & ~self.dirty & (self.changelog_offset >= 0) & idle)

    def release_rows(self, rows: Sequence[int]) -> None:
        """Forget these rows' keys (eviction): the rows are reused for other keys."""
        picked = np.asarray(rows, dtype=np.int64)
        self._release(picked[self.partition[picked] >= 0])

    def bytes_per_key(self) -> dict[str, int]:
        """What one key costs in memory, by part (the bench reports it beside the RSS per key).

        ``model_state`` (``m.*`` columns), ``scorer_state`` (``s.*``: the forecast kept for the next residual,
        detectors, tail calibration, incidents), ``bookkeeping`` (ordering, durability and eviction arrays),
        ``key_index`` (hash and slots, at the index's highest load) and ``keys`` (where the key's bytes are in the
        packed key buffer, which adds the key's length: ``consumer.keyarena``).
        """
        model = sum(n * dtype.itemsize for name, n, dtype, _ in self._layout if name.startswith("m."))
        bookkeeping = sum(a.itemsize for a in (self.steps, self.last_event_ms, self.last_offset, self.last_seen_s,
                                               self.changelog_offset, self.dirty, self.partition))
        return {"model_state": model, "scorer_state": self._row_bytes - model, "bookkeeping": bookkeeping,
                "key_index": KEY_INDEX_BYTES, "keys": KEY_SLOT_BYTES}

    # -- snapshots --------------------------------------------------------------------------------------
    @property
    def snapshot_bytes(self) -> int:
        """Size of every row's snapshot (they all have the same layout)."""
        return _HEADER.size + len(self.identity.encode()) + _TAIL.size + self._row_bytes

    def snapshot(self, row: int) -> bytes:
        return self.snapshots(np.array([row], dtype=np.int64))[0]

    def snapshots(self, rows: np.ndarray) -> list[bytes]:
        """The snapshot of each row, built for all rows at once (a checkpoint writes one per dirty key).

        Layout: header (magic, identity length), identity, tail (input offset, last event ms, steps; ``<q``
        each), then every column's row values in column order. All rows share one size, so the blobs are
        cut from one buffer filled column by column: no per-row numpy call.
        """
        rows = np.asarray(rows, dtype=np.int64)
        n = rows.size
        ident = self.identity.encode()
        prefix = _HEADER.pack(_MAGIC, len(ident)) + ident
        size = len(prefix) + _TAIL.size + self._row_bytes
        buf = np.empty((n, size), dtype=np.uint8)
        buf[:, :len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        pos = len(prefix)
        for values in (self.last_offset, self.last_event_ms, self.steps):
            buf[:, pos:pos + 8] = values[rows].astype("<i8").view(np.uint8).reshape(n, 8)
            pos += 8
        for name, count, dtype, _ in self._layout:
            width = count * dtype.itemsize
            part = np.ascontiguousarray(self.stored[name][rows])  # native order, as decode() reads it
            buf[:, pos:pos + width] = part.view(np.uint8).reshape(n, width)
            pos += width
        data = buf.tobytes()
        return [data[i:i + size] for i in range(0, n * size, size)]

    def decode(self, blob: bytes) -> Snapshot:
        """Parse a snapshot; raise StateError if it is corrupt (never a crash of the service)."""
        try:
            magic, ident_len = _HEADER.unpack_from(blob, 0)
            if magic != _MAGIC:
                msg = f"not an rnnwatch snapshot (magic {magic!r})"
                raise StateError(msg)
            pos = _HEADER.size
            identity = blob[pos:pos + ident_len].decode()
            pos += ident_len
            offset, last_ms, steps = _TAIL.unpack_from(blob, pos)
            pos += _TAIL.size
        except (struct.error, UnicodeDecodeError) as exc:
            msg = f"truncated or garbled snapshot header ({exc})"
            raise StateError(msg) from exc
        if identity == self.identity:
            layout = self._layout
        elif identity == self._wide_identity:  # written before storage was narrowed: read, then rounded
            layout = self._wide_layout
        else:
            return Snapshot(identity, offset, last_ms, steps, {})
        row_bytes = sum(n * dtype.itemsize for _, n, dtype, _ in layout)
        if len(blob) - pos != row_bytes:
            msg = f"snapshot payload is {len(blob) - pos} bytes, expected {row_bytes}"
            raise StateError(msg)
        values = {}
        for name, n, dtype, shape in layout:
            values[name] = np.frombuffer(blob, dtype=dtype, count=n, offset=pos).reshape(shape)
            pos += n * dtype.itemsize
        if layout is self._wide_layout:  # rounded to the stored dtypes, as the table would round them
            values = {name: values[name].astype(stored) for name, _, stored, _ in self._layout}
        return Snapshot(identity, offset, last_ms, steps, values)

    def load(self, partition: int, key: bytes, snap: Snapshot, *, last_seen_s: float = 0.0,
             changelog_offset: int = -1) -> int:
        """Install a decoded snapshot as the key's row (creating it); returns the row.

        ``last_seen_s`` (monotonic) is when the key last had a record, ``changelog_offset`` where the snapshot
        was read from.
        """
        rows, _ = self.rows_for(partition, [key])
        row = int(rows[0])
        for c in self.columns:
            self.stored[c.name][row] = snap.values[c.name]
        self.steps[row] = snap.steps
        self.last_offset[row] = snap.input_offset
        self.last_event_ms[row] = snap.last_event_ms
        self.last_seen_s[row] = last_seen_s
        self.changelog_offset[row] = changelog_offset
        self.dirty[row] = False
        return row

    # -- internals --------------------------------------------------------------------------------------
    def _allocate(self, partition: int, keys: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Fresh rows at their initial values for distinct keys (object array) that have none."""
        if not 0 <= partition <= MAX_PARTITION:
            msg = (f"partition {partition} is outside 0..{MAX_PARTITION}: the state table stores partitions as int16 "
                   f"(a topic with {MAX_PARTITION + 1} or more partitions is not supported)")
            raise StateError(msg)
        n = keys.size
        reused = min(n, self._n_released)
        while self._capacity - self._unused < n - reused:
            self._grow()
        rows = np.empty(n, dtype=np.int64)
        rows[:reused] = self._released_rows(reused)
        rows[reused:] = np.arange(self._unused, self._unused + n - reused)
        self._n_released -= reused
        self._unused += n - reused
        for c in self.columns:
            self.stored[c.name][rows] = c.init
        self.steps[rows] = 0
        self.last_event_ms[rows] = NO_TIME
        self.last_offset[rows] = -1
        self.changelog_offset[rows] = -1
        self.dirty[rows] = False
        # indexed before they are marked used: a rebuild inside insert() places the rows in use so far
        self._index.insert(hashes, rows, lambda: np.flatnonzero(self.partition >= 0))
        self.partition[rows] = partition
        self.keys.put(rows, keys.tolist())
        return rows

    def _expose(self) -> None:
        """Point :attr:`arrays` at the stored arrays (again, after they were replaced by a growth)."""
        for c in self.columns:
            arr = self.stored[c.name]
            self.arrays[c.name] = arr if c.stored == c.dtype else Narrowed(arr, c.dtype)

    def _release(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        self._index.remove(rows)
        self.partition[rows] = -1
        self.keys.remove(rows)
        self.dirty[rows] = False
        self._n_released += rows.size
        self._free_from = min(self._free_from, int(rows.min()))
        if self._n_released == self._unused:  # no row used (every partition revoked): start again from row 0
            self._unused = self._n_released = self._free_from = 0

    def _released_rows(self, n: int) -> np.ndarray:
        """The ``n`` lowest released rows (``n`` <= how many there are), searched a slice of the table at a time
        from the lowest row that may be free: no index array of the whole table."""
        parts, found, first = [], 0, self._free_from
        while found < n and first < self._unused:
            free = first + np.flatnonzero(self.partition[first:min(first + _FREE_SCAN_ROWS, self._unused)] < 0)
            parts.append(free[:n - found])
            found += parts[-1].size
            first += _FREE_SCAN_ROWS
        rows = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        if rows.size:
            self._free_from = int(rows[-1]) + 1
        return rows

    def _grow(self) -> None:
        """Double the capacity, one array at a time (each old array is freed as soon as it is copied: the
        narrowed views are dropped first, or they would hold every old column until the end).

        Rows not used yet are only written where a free row must say so (partition, dirty, key length); a
        mapping starts zeroed, and a row's other fields are set when it is allocated, so the pages of the new
        half are touched (resident) only as keys arrive.
        """
        new = self._capacity * 2
        self.arrays.clear()
        for name in list(self.stored):
            self.stored[name] = pages.grown(self.stored[name], new)
        self._expose()
        self.steps = pages.grown(self.steps, new)
        self.last_event_ms = pages.grown(self.last_event_ms, new)
        self.last_offset = pages.grown(self.last_offset, new)
        self.last_seen_s = self.last_seen_s.grown(new)
        self.changelog_offset = pages.grown(self.changelog_offset, new)
        self.dirty = pages.grown(self.dirty, new, False)
        self.partition = pages.grown(self.partition, new, -1)
        self.keys.grow(new)
        self._index.grow(new)
        self._capacity = new


def _identity(base: str, layout: Sequence[tuple[str, tuple[int, ...], np.dtype]]) -> str:
    text = ";".join(f"{name}:{shape}:{dtype.str}" for name, shape, dtype in layout)
    return f"{base}/{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _objects(keys: Sequence[bytes]) -> np.ndarray:
    """Keys as a 1-d object array (numpy would turn a list of equal-length bytes into a fixed-width array)."""
    out = np.empty(len(keys), dtype=object)
    out[:] = keys
    return out

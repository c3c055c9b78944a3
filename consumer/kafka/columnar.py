"""kafka-python's fetched records straight into columns: no ConsumerRecord, no DefaultRecord per message.

kafka-python 3 parses a fetch response with a generator that builds a ``DefaultRecord`` and then a
``ConsumerRecord`` for every message, decoding each varint in its own function call (measured on the bench
feed: ~4.5 µs of CPU per record, against ~0.8 µs here). The fetcher builds its parsed-partition
objects through ``self.PartitionRecords`` (``Fetcher._parse_fetched_data``), so :func:`install` gives one
consumer's fetcher :class:`ColumnRecords`, a subclass whose ``take(n)`` hands back the next ``n`` records as
one :class:`Rows` block of columns. Everything else stays kafka-python's: networking, group membership,
positions (``_append`` advances them from ``next_fetch_offset``/``leader_epoch`` exactly as for its own
records), pauses, offset commits.

What a record batch means is kafka-python's too: each batch is read with its own ``DefaultRecordBatch``
(CRC check, decompression with its codecs, control batches and aborted transactions under
``isolation_level`` through its own helpers); only the records inside an intact v2 batch are decoded here.
A batch the fast loop finds malformed, and every v0/v1 batch, is read record by record through
kafka-python's own iterator, so errors and the records before them are kafka-python's. ``take`` keeps its
contract: records before an error are returned, the error is raised by the next call. Batches are read
only as far as a ``take`` needs (memory: about one poll's records, not a whole fetch).

This leans on kafka-python's internals, so it is used only on the versions it is proven equal on
(:data:`PROVEN`; tests/unit/test_kafka_columnar.py and tests/integration/test_kafka_columnar_broker.py compare
it with kafka-python's own parse take by take); on any other version kafka-python parses as usual.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import re
from typing import Any, NamedTuple

import kafka
import numpy as np
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

from rnnwatch.consumer.kafka.polled import Polled

__all__ = ["PROVEN", "ColumnRecords", "Rows", "install", "installable", "polled"]

log = logging.getLogger(__name__)

_NO_TIMESTAMP = -1  # Kafka's "no timestamp" (v0 messages have none)
_LOG_APPEND_TIME = 1


class Rows(NamedTuple):
    """Consecutive records of one partition (kafka-python's order), column by column."""

    partition: int
    offset: np.ndarray  # int64 [n]
    timestamp: np.ndarray  # int64 [n], ms
    keys: list[bytes | None]
    values: list[bytes | None]
    headers: list[list[tuple[str, bytes | None]]] | None  # None: no record of these has a header


class _Taken(list):  # type: ignore[type-arg]
    """What ``take(n)`` returns: one :class:`Rows` element, whose ``len()`` is its record count.

    The fetcher does ``drained[tp].extend(taken)`` (list.extend copies the one element: the block) and counts
    ``len(taken)`` against ``max_records`` (the records in it).
    """

    def __init__(self, rows: Rows) -> None:
        super().__init__((rows,))
        self.records = len(rows.values)

    def __len__(self) -> int:
        return self.records


class _Parsed:
    """Records parsed and not yet taken, and where the fetch position stands after the last batch read."""

    def __init__(self, epoch: int) -> None:
        self.offsets: list[int] = []
        self.timestamps: list[int] = []
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.sizes: list[int] = []  # record body bytes (kafka-python's size_in_bytes)
        self.epochs: list[int] = []  # leader epoch of each record's batch
        self.headers: dict[int, list[tuple[str, bytes | None]]] = {}  # row -> headers, rows with any
        self.next_offset: int | None = None  # next_fetch_offset once all is taken (None: as the last record)
        self.epoch = epoch  # leader_epoch then
        self.error: Exception | None = None
        self.done = False  # every batch read (or one failed)

    def drop(self, n: int) -> None:
        for column in (self.offsets, self.timestamps, self.keys, self.values, self.sizes, self.epochs):
            del column[:n]
        if self.headers:
            self.headers = {i - n: h for i, h in self.headers.items() if i >= n}


class ColumnRecords(Fetcher.PartitionRecords):  # type: ignore[misc]
    """kafka-python's PartitionRecords, parsed into columns a batch at a time as ``take`` needs records."""

    def __init__(self, fetch_offset: int, tp: Any, records: Any, key_deserializer: Any = None,
                 value_deserializer: Any = None, check_crcs: bool = True, isolation_level: Any = None,
                 aborted_transactions: Any = None, metric_aggregator: Any = None, on_drain: Any = None) -> None:
        kwargs: dict[str, Any] = {"key_deserializer": key_deserializer, "value_deserializer": value_deserializer,
                                  "check_crcs": check_crcs, "aborted_transactions": aborted_transactions,
                                  "metric_aggregator": metric_aggregator}
        if isolation_level is not None:
            kwargs["isolation_level"] = isolation_level
        if on_drain is not None:
            kwargs["on_drain"] = on_drain
        super().__init__(fetch_offset, tp, records, **kwargs)  # its record generator is never started
        if key_deserializer is not None or value_deserializer is not None:
            msg = "ColumnRecords hands back raw bytes: the consumer must have no key/value deserializer"
            raise ValueError(msg)
        self._records = records
        self._parsed = _Parsed(epoch=-1)  # kafka-python starts every PartitionRecords at leader_epoch -1
        self._skipping = True  # records before fetch_offset are still being dropped
        self._dead = False
        self._last_magic: int | None = None  # of the last batch read
        self._last_next_offset: int | None = None

    def take(self, n: int | None = None) -> _Taken | list[Any]:
        self._maybe_raise_next_inline_exception()
        if self.record_iterator is None or self._dead:  # drained, or kafka-python's generator died raising
            return []
        parsed = self._parsed
        self._fill(n)
        ready = len(parsed.offsets)
        stop = ready if n is None else min(ready, n)
        rows = None
        if stop:
            rows = self._rows(parsed, stop)
            self.records_read += stop
            self.bytes_read += sum(parsed.sizes[:stop])
            self.next_fetch_offset = parsed.offsets[stop - 1] + 1
            self.leader_epoch = parsed.epochs[stop - 1]
            parsed.drop(stop)
        if n is None or n > ready:  # kafka-python's generator runs past the last record: to its end or error
            if parsed.next_offset is not None:
                self.next_fetch_offset = parsed.next_offset
            self.leader_epoch = parsed.epoch
            if parsed.error is not None:
                self._dead = True
                if rows is None:
                    raise parsed.error
                self._next_inline_exception = parsed.error
            else:
                self.drain()
        return [] if rows is None else _Taken(rows)

    def _rows(self, parsed: _Parsed, stop: int) -> Rows:
        headers = None
        if parsed.headers and any(i < stop for i in parsed.headers):
            headers = [parsed.headers.get(i, []) for i in range(stop)]
        return Rows(self.topic_partition.partition, np.array(parsed.offsets[:stop], dtype=np.int64),
                    np.array(parsed.timestamps[:stop], dtype=np.int64), parsed.keys[:stop], parsed.values[:stop],
                    headers)

    def _fill(self, need: int | None) -> None:
        """Read batches until ``need`` records are ready (None: all), as kafka-python's ``_unpack_records`` does."""
        parsed = self._parsed
        try:
            while not parsed.done and (need is None or len(parsed.offsets) < need):
                batch = self._records.next_batch()
                if batch is None:
                    parsed.done = True
                    if self._last_magic == 2:  # v2 keeps the last offset even if compaction removed its record
                        parsed.next_offset = self._last_next_offset
                    break
                before = len(parsed.offsets)
                self._last_magic, self._last_next_offset = batch.magic, None
                try:
                    self._read_batch(batch, parsed)
                finally:  # also when it raised after some records (kafka-python yielded those)
                    if len(parsed.offsets) > before:
                        parsed.next_offset = parsed.offsets[-1] + 1
                    if self._skipping:
                        self._drop_before_fetch_offset(parsed)
                if batch.magic == 2:
                    self._last_next_offset = batch.next_offset
        except Exception as exc:  # noqa: BLE001 - kept for take() to raise, as kafka-python's generator does
            parsed.error, parsed.done = exc, True

    def _read_batch(self, batch: Any, parsed: _Parsed) -> None:
        if self.check_crcs and not batch.validate_crc():
            msg = f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} failed crc check"
            raise CorruptRecordError(msg)
        if batch.magic != 2:
            _read_each(batch, parsed, parsed.epoch, check_crcs=self.check_crcs, tp=self.topic_partition)
            return
        parsed.epoch = batch.leader_epoch
        if self._skipped(batch):
            parsed.next_offset = batch.next_offset
            return
        _read_v2(batch, parsed, parsed.epoch)

    def _skipped(self, batch: DefaultRecordBatch) -> bool:
        """A control batch, or a batch of an aborted transaction under read_committed (kafka-python's rules)."""
        if self.isolation_level == _READ_COMMITTED and batch.has_producer_id():
            self._consume_aborted_transactions_up_to(batch.last_offset)
            if self._contains_abort_marker(batch):
                self.aborted_producer_ids.discard(batch.producer_id)
            elif self._is_batch_aborted(batch):
                return True
        return bool(batch.is_control_batch)

    def _drop_before_fetch_offset(self, parsed: _Parsed) -> None:
        """A fetch can start inside a batch: records before the fetch offset are not returned (kafka-python)."""
        skip = next((i for i, o in enumerate(parsed.offsets) if o >= self.fetch_offset), len(parsed.offsets))
        if skip < len(parsed.offsets):
            self._skipping = False
        if skip:
            self.records_read += skip
            self.bytes_read += sum(parsed.sizes[:skip])
            parsed.drop(skip)


def _read_v2(batch: DefaultRecordBatch, parsed: _Parsed, epoch: int) -> None:
    """The records of an intact v2 batch; a malformed one is re-read by kafka-python's iterator."""
    raw = batch._buffer  # private: checked by installable(); decompressing replaces it
    iter(batch)  # decompresses with kafka-python's codecs
    data = bytes(batch._buffer)
    pos, count = batch._pos, batch._num_records
    base, first_ts = batch.base_offset, batch.first_timestamp
    append_time = batch.max_timestamp if batch.timestamp_type == _LOG_APPEND_TIME else None
    mark = len(parsed.offsets)
    try:
        if count >= _VECTOR_MIN and _vector_rows(data, pos, count, base, first_ts, append_time, parsed):
            pass
        elif _fast_rows(data, pos, count, base, first_ts, append_time, parsed) != len(data):
            raise _Malformed
    except (_Malformed, IndexError, ValueError):
        for name in ("offsets", "timestamps", "keys", "values", "sizes"):
            del getattr(parsed, name)[mark:]
        for row in [i for i in parsed.headers if i >= mark]:
            del parsed.headers[row]
        _read_each(DefaultRecordBatch(raw), parsed, epoch, check_crcs=False, tp=None)
        return
    parsed.epochs.extend(itertools.repeat(epoch, len(parsed.offsets) - mark))


class _Malformed(Exception):
    pass


_VECTOR_MIN = 32  # records in a batch from which numpy's per-call overhead pays
_PAD = bytes(8)


def _vector_rows(data: bytes, pos: int, count: int, base: int, first_ts: int, append_time: int | None,
                 parsed: _Parsed) -> bool:
    """:func:`_fast_rows` for a long batch: one Python step per record (its length), the fields with numpy.

    Returns False, having added nothing, for what it does not handle (headers, varints over 3 bytes, anything
    malformed): the batch then goes through :func:`_fast_rows`.
    """
    starts = _walk(data, pos, count)
    if starts is None:
        return False
    arr = np.frombuffer(data + _PAD, dtype=np.uint8)
    got = _varints(arr, np.array(starts, dtype=np.int64))
    if got is None:
        return False
    length, p = got
    end = p + length
    if (length < 0).any() or not (np.array_equal(end[:-1], starts[1:]) and end[-1] == len(data)):
        return False
    fields = []
    for _ in range(4):  # attributes, timestamp delta, offset delta, key length
        got = _varints(arr, p)
        if got is None:
            return False
        value, p = got
        fields.append(value)
    _, ts, delta, key_len = fields
    key_start, p = p, p + np.maximum(key_len, 0)
    key_end = p
    got = _varints(arr, p)
    if got is None:
        return False
    value_len, value_start = got
    value_end = value_start + np.maximum(value_len, 0)
    if (value_end >= end).any() or arr[value_end].any() or not np.array_equal(value_end + 1, end):
        return False  # headers (or a record that does not add up)
    parsed.keys.extend(_slices(data, key_start, key_end, key_len))
    parsed.values.extend(_slices(data, value_start, value_end, value_len))
    parsed.offsets.extend((delta + base).tolist())
    parsed.timestamps.extend((ts + first_ts).tolist() if append_time is None else [append_time] * count)
    parsed.sizes.extend(length.tolist())
    return True


def _walk(data: bytes, pos: int, count: int) -> list[int] | None:
    """Where each record starts, following the length varints; None if they do not reach the batch's end.

    The lengths are decoded loosely here (sign ignored) and checked again by the caller, vectorised.
    """
    starts: list[int] = []
    append = starts.append
    try:
        for _ in range(count):
            append(pos)
            b = data[pos]
            if b < 128:
                pos += 1 + (b >> 1)
            elif (c := data[pos + 1]) < 128:
                pos += 2 + (((b & 127) | (c << 7)) >> 1)
            else:
                length, pos = decode_varint(data, pos)
                pos += length
    except (IndexError, ValueError):
        return None
    return starts if pos == len(data) else None


def _varints(arr: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Zigzag varints of up to 3 bytes at positions ``p``: (values, positions after); None if any is longer."""
    b0 = arr[p].astype(np.int64)
    more = b0 >= 128
    if not more.any():
        return (b0 >> 1) ^ -(b0 & 1), p + 1
    b1 = arr[p + 1].astype(np.int64)
    third = more & (b1 >= 128)
    u = np.where(more, (b0 & 127) | ((b1 & 127) << 7), b0)
    size = 1 + more
    if third.any():
        b2 = arr[p + 2].astype(np.int64)
        if (third & (b2 >= 128)).any():
            return None
        u |= np.where(third, b2 << 14, 0)
        size = size + third
    return (u >> 1) ^ -(u & 1), p + size


def _slices(data: bytes, start: np.ndarray, stop: np.ndarray, size: np.ndarray) -> list[bytes | None]:
    out: list[bytes | None] = list(map(data.__getitem__, map(slice, start.tolist(), stop.tolist())))
    if (size < 0).any():
        for i in np.flatnonzero(size < 0).tolist():
            out[i] = None
    return out


def _fast_rows(data: bytes, pos: int, count: int, base: int, first_ts: int, append_time: int | None,
               parsed: _Parsed) -> int:
    """Decode ``count`` records from ``pos``; returns where they end. Raises on anything malformed.

    Varints of one and two bytes (all but the rare long field) are decoded inline, zigzag included: a function
    call per varint was most of kafka-python's cost.
    """
    offsets, timestamps, keys, values, sizes = (parsed.offsets, parsed.timestamps, parsed.keys, parsed.values,
                                                parsed.sizes)
    for _ in range(count):
        b = data[pos]
        if b < 128:
            length = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (c := data[pos + 1]) < 128:
            u = (b & 127) | (c << 7)
            length = (u >> 1) ^ -(u & 1)
            pos += 2
        else:
            length, pos = decode_varint(data, pos)
        end = pos + length
        pos = pos + 1 if data[pos] < 128 else decode_varint(data, pos)[1]  # attributes (unused)
        b = data[pos]
        if b < 128:
            ts = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (c := data[pos + 1]) < 128:
            u = (b & 127) | (c << 7)
            ts = (u >> 1) ^ -(u & 1)
            pos += 2
        else:
            ts, pos = decode_varint(data, pos)
        b = data[pos]
        if b < 128:
            delta = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (c := data[pos + 1]) < 128:
            u = (b & 127) | (c << 7)
            delta = (u >> 1) ^ -(u & 1)
            pos += 2
        else:
            delta, pos = decode_varint(data, pos)
        b = data[pos]
        if b < 128:
            size = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            size, pos = decode_varint(data, pos)
        if size >= 0:
            keys.append(data[pos:pos + size])
            pos += size
        else:
            keys.append(None)
        b = data[pos]
        if b < 128:
            size = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (c := data[pos + 1]) < 128:
            u = (b & 127) | (c << 7)
            size = (u >> 1) ^ -(u & 1)
            pos += 2
        else:
            size, pos = decode_varint(data, pos)
        if size >= 0:
            values.append(data[pos:pos + size])
            pos += size
        else:
            values.append(None)
        if data[pos] == 0:  # no headers
            pos += 1
        else:
            pos = _headers(data, pos, len(offsets), parsed)
        if pos != end:
            raise _Malformed
        offsets.append(base + delta)
        timestamps.append(first_ts + ts if append_time is None else append_time)
        sizes.append(length)
    return pos


def _headers(data: bytes, pos: int, row: int, parsed: _Parsed) -> int:
    count, pos = decode_varint(data, pos)
    if count < 0:
        raise _Malformed
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        size, pos = decode_varint(data, pos)
        if size < 0:
            raise _Malformed
        name = data[pos:pos + size].decode("utf-8")
        pos += size
        size, pos = decode_varint(data, pos)
        if size >= 0:
            headers.append((name, data[pos:pos + size]))
            pos += size
        else:
            headers.append((name, None))
    parsed.headers[row] = headers
    return pos


def _read_each(batch: Any, parsed: _Parsed, epoch: int, *, check_crcs: bool, tp: Any) -> None:
    """kafka-python's own record iterator (v0/v1 batches, malformed v2 batches): its records, its errors."""
    for record in batch:
        if check_crcs and not record.validate_crc():
            msg = f"Record for partition {tp} at offset {record.offset} failed crc check"
            raise CorruptRecordError(msg)
        if record.headers:
            parsed.headers[len(parsed.offsets)] = list(record.headers)
        parsed.offsets.append(record.offset)
        parsed.timestamps.append(_NO_TIMESTAMP if record.timestamp is None else record.timestamp)  # v0: none
        parsed.keys.append(record.key)
        parsed.values.append(record.value)
        parsed.sizes.append(record.size_in_bytes)
        parsed.epochs.append(epoch)


def _read_committed() -> Any:
    from kafka.consumer.fetcher import IsolationLevel

    return IsolationLevel.READ_COMMITTED


_READ_COMMITTED = _read_committed()


PROVEN = ((3, 0, 12), (3, 1))  # kafka-python versions ColumnRecords is proven equal on: [3.0.12, 3.1)


def installable() -> str | None:
    """Why this kafka-python cannot take :class:`ColumnRecords` (not a proven version, internals moved), or None."""
    version = tuple(int(part) for part in re.findall(r"\d+", kafka.__version__)[:3])
    if not PROVEN[0] <= version < PROVEN[1]:
        return f"kafka-python {kafka.__version__} is not a version it is proven on ({PROVEN[0]} to {PROVEN[1]})"
    try:
        fetch, append = inspect.getsource(Fetcher._parse_fetched_data), inspect.getsource(Fetcher._append)
    except (OSError, TypeError):
        return "kafka-python's fetcher source cannot be read to check its shape"
    checks = {
        "Fetcher._parse_fetched_data builds self.PartitionRecords(...)": "self.PartitionRecords(" in fetch,
        "Fetcher._append extends with part.take(n) and counts len()":
            "part.take(max_records)" in append and "len(part_records)" in append,
        "PartitionRecords helpers": all(hasattr(Fetcher.PartitionRecords, name) for name in (
            "_consume_aborted_transactions_up_to", "_contains_abort_marker", "_is_batch_aborted",
            "_maybe_raise_next_inline_exception", "drain")),
        "DefaultRecordBatch internals": all(name in DefaultRecordBatch.__slots__ for name in (
            "_buffer", "_pos", "_num_records")),
    }
    failed = [what for what, ok in checks.items() if not ok]
    return "; ".join(failed) or None


def install(consumer: Any) -> bool:
    """Make ``consumer.poll()`` return :class:`Rows` blocks (a list of them per partition); True if it did.

    On a kafka-python this is not proven on, nothing changes (polls return its ConsumerRecords) and a
    warning says why: slower, never wrong.
    """
    config = getattr(consumer, "config", {})
    problem = installable() or ("the consumer has a key/value deserializer (columns hold raw bytes)"
                                if config.get("key_deserializer") or config.get("value_deserializer") else None)
    if problem:
        log.warning("kafka-python records are parsed by kafka-python itself (slower): %s", problem,
                    extra={"event": "columnar_unavailable"})
        return False
    consumer._fetcher.PartitionRecords = ColumnRecords
    return True


def polled(topic: str, by_partition: dict[Any, list[Rows]]) -> Polled:
    """One ``consumer.poll()`` of an installed consumer (partition -> its :class:`Rows` blocks) as one Polled."""
    blocks = [rows for chunk in by_partition.values() for rows in chunk]
    if len(blocks) == 1:
        (b,) = blocks
        return Polled(topic, np.full(len(b.values), b.partition, dtype=np.int32), b.offset, b.timestamp, b.keys,
                      b.values, b.headers)
    if not blocks:
        return Polled.columns(topic, (), (), (), [], [], None)
    headers = None
    if any(b.headers is not None for b in blocks):
        headers = list(itertools.chain.from_iterable(
            b.headers if b.headers is not None else [[]] * len(b.values) for b in blocks))
    return Polled(topic, np.concatenate([np.full(len(b.values), b.partition, dtype=np.int32) for b in blocks]),
                  np.concatenate([b.offset for b in blocks]), np.concatenate([b.timestamp for b in blocks]),
                  list(itertools.chain.from_iterable(b.keys for b in blocks)),
                  list(itertools.chain.from_iterable(b.values for b in blocks)), headers)

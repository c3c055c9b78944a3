"""Reading the changelog back: restore on assignment, bounded by the newest marker; revive; full reads.

Everything here reads one changelog partition with a :class:`PartitionReader` (manually assigned, never in
the group, any transport) and is written as generators that yield after each fetch, so the service can interleave a long
restore with its own poll loop (group membership stays alive, other partitions keep flowing) instead of
blocking. ``run_to_end`` drives a generator to completion for the short, synchronous reads (revive).

Which snapshot wins for a key (:class:`Best`): the highest input offset, then the later-written one. A
tombstone (value ``None``) wins the same way and means "no state". Where a restore starts: see
:func:`scan_partition` and the ``changelog`` module docstring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from rnnwatch.consumer.errors import BrokerError
from rnnwatch.consumer.kafka.protocols import PartitionReader, TopicPartition

__all__ = ["HEADER_MARKER", "HEADER_MODEL", "HEADER_OFFSET", "HEADER_SEEN", "MARKER_KEY", "Best", "Marker",
           "RestoreJob", "ScanResult", "Snap", "header_int", "partition_end", "read_range", "read_snapshots",
           "release", "run_to_end", "scan_partition"]

log = logging.getLogger(__name__)

HEADER_OFFSET = "rnnwatch-offset"  # input offset the snapshot reflects
HEADER_MODEL = "rnnwatch-model"  # state identity (model + layout + input topic)
HEADER_SEEN = "rnnwatch-seen-ms"  # wall clock (ms) when the key last had a record
HEADER_MARKER = "rnnwatch-marker"  # set on marker records (see changelog)
MARKER_KEY = b"\x00rnnwatch-marker"
FIRST_WINDOW = 4096  # records; the backward search for the newest marker grows its window 4x per step
SYNC_READ_TIMEOUT_S = 60.0
_MAX_POLL = 20000

Step = Generator[None, None, Any]


@dataclass(frozen=True)
class Snap:
    """The best changelog record of one key (``value`` None: a tombstone, the key has no state)."""

    input_offset: int
    changelog_offset: int
    value: bytes | None
    seen_ms: int = -1  # -1: written by a version that did not record it

    @property
    def offset(self) -> int:  # the name read_snapshots' callers know
        return self.input_offset


@dataclass(frozen=True)
class Marker:
    """"Every key's current snapshot is at or after changelog offset ``start``", written with ``position``."""

    changelog_offset: int
    start: int
    position: int

    @staticmethod
    def encode(start: int, position: int) -> bytes:
        return orjson.dumps({"start": start, "position": position})


def header_int(headers: Sequence[tuple[str, bytes]] | None, name: str, default: int = -1) -> int:
    for key, value in headers or ():
        if key == name:
            return _int(value, default)
    return default


def _int(value: bytes, default: int = -1) -> int:
    try:
        return int(value)
    except ValueError:
        return default


def _marker(rec: Any) -> Marker | None:
    try:
        doc = orjson.loads(rec.value)
        return Marker(rec.offset, int(doc["start"]), int(doc["position"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("ignoring an unreadable changelog marker at offset %d", rec.offset)
        return None


class Best:
    """Per key, the snapshot that wins (see the module docstring); markers are collected on the side."""

    def __init__(self, keys: set[bytes] | None = None) -> None:
        self.by_key: dict[bytes, Snap] = {}
        self.markers: list[Marker] = []
        self.records = 0
        self._only = keys

    def add(self, rec: Any) -> None:
        self.records += 1
        key = rec.key
        if key is None or (self._only is not None and key not in self._only and key != MARKER_KEY):
            return
        offset = seen = -1
        for name, value in rec.headers or ():  # one pass: this runs for every record of a restore
            if name == HEADER_OFFSET:
                offset = _int(value)
            elif name == HEADER_SEEN:
                seen = _int(value)
            elif name == HEADER_MARKER:
                if (marker := _marker(rec)) is not None:
                    self.markers.append(marker)
                return
        old = self.by_key.get(key)
        if old is None or (offset, rec.offset) > (old.input_offset, old.changelog_offset):
            self.by_key[key] = Snap(offset, rec.offset, rec.value, seen)

    def merge(self, key: bytes, snap: Snap) -> None:
        old = self.by_key.get(key)
        if old is None or (snap.input_offset, snap.changelog_offset) > (old.input_offset, old.changelog_offset):
            self.by_key[key] = snap

    def absorb(self, other: Best, start: int = 0) -> None:
        for key, snap in other.by_key.items():
            if snap.changelog_offset >= start:
                self.merge(key, snap)


def _ensure(consumer: PartitionReader, tp: TopicPartition, pos: int) -> None:
    if consumer.assignment() != {tp}:
        consumer.assign([tp])
        consumer.seek(tp, pos)
    elif consumer.position(tp) != pos:
        consumer.seek(tp, pos)


def find_end(consumer: PartitionReader, tp: TopicPartition) -> Step:
    """The partition's end from a fetch's highwater (some brokers answer ListOffsets short of it).

    kafka-python keeps a partition's state while it stays assigned (``assign`` of a set that still holds it),
    its last highwater included, and ``seek_to_end`` does not clear it: a partition this reader already read
    (the last one restored at start-up, then handed back after a rebalance) would report its end of back
    then, and a restore would miss every snapshot written since. Unassigning first drops that state, so the
    end comes from a fetch made for this call.
    """
    if tp in consumer.assignment():
        consumer.assign([])
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    while (highwater := consumer.highwater(tp)) is None:
        consumer.read(100, 1)
        yield
    return int(highwater)


def read_range(consumer: PartitionReader, tp: TopicPartition, start: int, stop: int | None,
               out: Callable[[Any], None]) -> Step:
    """Feed records of [start, stop) to ``out`` (``stop`` None: up to the highwater as it moves)."""
    pos = start
    while True:
        highwater = consumer.highwater(tp) if consumer.assignment() == {tp} else None
        end = stop if stop is not None else highwater
        if end is not None and pos >= end:
            return
        _ensure(consumer, tp, pos)
        room = _MAX_POLL if end is None else max(1, min(_MAX_POLL, end - pos))
        for rec in consumer.read(100, room):
            if stop is not None and rec.offset >= stop:
                break
            out(rec)
        pos = max(pos, int(consumer.position(tp)))
        yield


def release(consumer: PartitionReader) -> None:
    """Give up the reader's partition once a read is done.

    librdkafka keeps fetching an assigned partition in the background whether anyone reads it or not: a reader
    left on a changelog partition buffers every snapshot the next checkpoints write there, up to its prefetch
    bound (measured with 1,000,000 keys: +14 MiB peak RSS). The next read assigns what it reads.
    """
    if consumer.assignment():
        consumer.assign([])


def run_to_end(step: Step, timeout_s: float = SYNC_READ_TIMEOUT_S) -> Any:
    """Drive a reading generator to completion and return its value (for short synchronous reads).

    Raises BrokerError past ``timeout_s``: these reads are bounded by the key count, so only an unreachable
    broker makes them this slow, and the caller then retries (a checkpoint) or restarts (a revive).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            next(step)
        except StopIteration as done:
            return done.value
        if time.monotonic() > deadline:
            step.close()
            msg = f"a changelog read did not finish within {timeout_s:.0f}s; is the broker reachable?"
            raise BrokerError(msg)


@dataclass
class ScanResult:
    best: Best
    start: int  # first changelog offset that counted
    end: int  # position after the last record read
    why: str  # how the start was chosen, for the log
    committed: int | None  # the group's committed input offset the scan was checked against


def scan_partition(consumer: PartitionReader, topic: str, partition: int, committed: int | None) -> Step:
    """Read a partition's snapshots from the newest trustworthy marker (or from the start) to its end.

    Backward search: windows [end - w, end), w growing 4x, until one holds a marker; the newest marker is
    trusted only if the position it was written with equals the group's committed offset (so it belongs
    to the checkpoint the group resumes from, not to a zombie or to a checkpoint whose commit never
    happened); otherwise the whole partition is read. Windows above the marker all count (they were
    written after it); in the marker's window only records at or after its start count.
    """
    tp = TopicPartition(topic, partition)
    end = yield from find_end(consumer, tp)
    best, lo, window = Best(), end, FIRST_WINDOW
    marker: Marker | None = None
    marker_window, marker_best = (0, 0), Best()
    while lo > 0 and marker is None:
        new_lo = max(0, lo - window)
        here = Best()
        yield from read_range(consumer, tp, new_lo, lo, here.add)
        best.records += here.records
        if here.markers:
            marker, marker_window, marker_best = max(here.markers, key=lambda m: m.changelog_offset), (new_lo, lo), here
        else:
            best.absorb(here)  # all after the newest marker: they count whatever its start
        lo, window = new_lo, window * 4
    if marker is None:
        start, why = 0, "no marker: whole partition"
    elif committed is not None and marker.position == committed:
        start, why = marker.start, f"from the marker at {marker.changelog_offset}"
    else:
        start, why = 0, f"newest marker is for position {marker.position}, committed is {committed}: whole partition"
    if start <= marker_window[0]:
        best.absorb(marker_best)  # the whole window counts
    else:  # the marker's window again, from the start on: its best of a key may lie before the start
        yield from read_range(consumer, tp, start, marker_window[1], best.add)
    if start < lo:
        yield from read_range(consumer, tp, start, lo, best.add)
    yield from read_range(consumer, tp, end, None, best.add)  # snapshots written while we read
    return ScanResult(best, start, int(consumer.position(tp)), why, committed)


@dataclass
class _Running:
    partition: int
    step: Step
    started: float = field(default_factory=time.monotonic)
    last_log: float = field(default_factory=time.monotonic)
    warned: bool = False


class RestoreJob:
    """Restores partitions one at a time, a slice per call of :meth:`step`, never giving up.

    ``finish(partition, result)`` installs a completed scan and returns whatever the caller reports. A
    restore slower than ``warn_s`` is logged as an error once (with progress every 10 s) and goes on.
    """

    def __init__(self, consumer: PartitionReader, topic: str, finish: Callable[[int, ScanResult, float], Any],
                 warn_s: float) -> None:
        self.consumer, self.topic, self.finish, self.warn_s = consumer, topic, finish, warn_s
        self._queue: dict[int, int | None] = {}  # partition -> committed input offset
        self._current: _Running | None = None

    @property
    def partitions(self) -> set[int]:
        current = {self._current.partition} if self._current is not None else set()
        return current | set(self._queue)

    @property
    def slow(self) -> bool:
        return self._current is not None and self._current.warned

    def add(self, partition: int, committed: int | None) -> None:
        if partition not in self.partitions:
            self._queue[partition] = committed

    def drop(self, partition: int) -> None:
        self._queue.pop(partition, None)
        if self._current is not None and self._current.partition == partition:
            self._current.step.close()
            self._current = None
            if not self._queue:
                release(self.consumer)

    def step(self, budget_s: float) -> list[Any]:
        """Work for about ``budget_s``; return what ``finish`` returned for each completed partition."""
        deadline = time.monotonic() + budget_s
        done = []
        while True:  # at least one fetch per call, however the clock behaves
            if self._current is None:
                if not self._queue:
                    break
                partition, committed = next(iter(self._queue.items()))
                del self._queue[partition]
                self._current = _Running(partition, scan_partition(self.consumer, self.topic, partition, committed))
            running = self._current
            try:
                next(running.step)
            except StopIteration as end:
                self._current = None
                if not self._queue:
                    release(self.consumer)
                done.append(self.finish(running.partition, end.value, time.monotonic() - running.started))
            else:
                self._report(running)
            if time.monotonic() >= deadline:
                return done
        return done

    def _report(self, running: _Running) -> None:
        now = time.monotonic()
        if not running.warned and now - running.started > self.warn_s:
            running.warned = True
            log.error("restoring %s[%d] is taking longer than %.0fs; it goes on (the partition stays paused and "
                      "/readyz reports it), see the changelog's size and the broker", self.topic,
                      running.partition, self.warn_s,
                      extra={"event": "restore_slow", "topic": self.topic, "partition": running.partition,
                             "seconds": round(now - running.started, 3)})
        if now - running.last_log >= 10.0:
            running.last_log = now
            tp = TopicPartition(self.topic, running.partition)
            position = self.consumer.position(tp) if self.consumer.assignment() == {tp} else "?"
            end = self.consumer.highwater(tp) if position != "?" else "?"
            log.info("restoring %s[%d]: at changelog offset %s of %s after %.0fs", self.topic, running.partition,
                     position, end, now - running.started,
                     extra={"event": "restoring", "topic": self.topic, "partition": running.partition,
                            "offset": position if isinstance(position, int) else None,
                            "seconds": round(now - running.started, 3)})


def partition_end(consumer: PartitionReader, topic: str, partition: int) -> int:
    """The end (highwater) of any partition, read with a plain consumer (synchronous)."""
    return int(run_to_end(find_end(consumer, TopicPartition(topic, partition))))


def read_snapshots(consumer: PartitionReader, topic: str,
                   partitions: Sequence[int]) -> tuple[dict[int, dict[bytes, Snap]], int]:
    """Every partition read from its first record to its end; per key the best snapshot (tombstones dropped).

    For tools and tests that want the changelog's full verdict (the service restores from markers).
    """
    out: dict[int, dict[bytes, Snap]] = {}
    records = 0
    for partition in partitions:
        tp = TopicPartition(topic, partition)
        best = Best()
        end = run_to_end(find_end(consumer, tp))
        run_to_end(read_range(consumer, tp, 0, end, best.add))
        out[partition] = {k: s for k, s in best.by_key.items() if s.value is not None}
        records += best.records
    consumer.assign([])
    return out, records

"""One poll's records as columns: what the decoder and the pipeline read, without a Python object per record.

A transport fills the columns straight from its client's messages in C-level passes (``map`` over librdkafka's
message accessors, one transpose of kafka-python's namedtuples): building a :class:`Record` per message cost
more than parsing its JSON. The rare record that needs a whole object (a dead letter, a log line) gets one on
demand (``polled[i]``). :meth:`Polled.of` turns any sequence of record lookalikes (tests, the in-memory
transport, a restore read) into the same columns, so there is one decoding path whatever the source.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from rnnwatch.consumer.kafka.protocols import Record

__all__ = ["HeaderList", "Polled"]

HeaderList = Sequence[tuple[str, bytes | None]]
_FEW_RUNS = 64  # runs of one partition up to which positions() goes run by run (else one sort of the poll)


@dataclass(frozen=True, eq=False)
class Polled(Sequence[Record]):
    """Records of one poll, in poll order (per partition: offset order), column by column.

    ``headers`` is None when no record of the poll has any (the common case: nothing to look at per record).
    """

    topic: str
    partition: np.ndarray  # int32 [n]
    offset: np.ndarray  # int64 [n]
    timestamp: np.ndarray  # int64 [n], Kafka record timestamp, ms
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    headers: Sequence[HeaderList | None] | None = None

    @classmethod
    def of(cls, records: Sequence[Any], topic: str = "") -> Polled:
        """Columns of any records with the fields of :class:`Record` (``headers`` and ``topic`` optional)."""
        if isinstance(records, Polled):
            return records
        n = len(records)
        headers = [getattr(r, "headers", None) for r in records]
        return cls(topic=getattr(records[0], "topic", topic) if n else topic,
                   partition=np.fromiter((r.partition for r in records), dtype=np.int32, count=n),
                   offset=np.fromiter((r.offset for r in records), dtype=np.int64, count=n),
                   timestamp=np.fromiter((r.timestamp for r in records), dtype=np.int64, count=n),
                   keys=[r.key for r in records], values=[r.value for r in records],
                   headers=headers if any(headers) else None)

    @classmethod
    def columns(cls, topic: str, partition: Sequence[Any], offset: Sequence[Any], timestamp: Sequence[Any],
                keys: Sequence[bytes | None], values: Sequence[bytes | None], headers: Sequence[Any] | None) -> Polled:
        """From per-field sequences of equal length (a client's bulk gather; ints, header lists or None).

        Empty header lists count as none: ``headers`` is kept only when some record has one.
        """
        n = len(values)
        return cls(topic=topic, partition=np.fromiter(partition, dtype=np.int32, count=n),
                   offset=np.fromiter(offset, dtype=np.int64, count=n),
                   timestamp=np.fromiter(timestamp, dtype=np.int64, count=n), keys=keys, values=values,
                   headers=headers if headers is not None and any(headers) else None)

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, i: int) -> Record: ...
    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...
    def __getitem__(self, i: int | slice) -> Record | list[Record]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        headers = self.headers[i] if self.headers is not None else None
        return Record(self.topic, int(self.partition[i]), int(self.offset[i]), self.keys[i], self.values[i],
                      int(self.timestamp[i]), headers or ())

    def __iter__(self) -> Iterator[Record]:
        return (self[i] for i in range(len(self)))

    def take(self, start: int, stop: int) -> Polled:
        """Records ``start`` to ``stop`` (exclusive) as columns of their own."""
        return Polled(self.topic, self.partition[start:stop], self.offset[start:stop], self.timestamp[start:stop],
                      self.keys[start:stop], self.values[start:stop],
                      None if self.headers is None else self.headers[start:stop])

    def positions(self) -> tuple[dict[int, int], dict[int, int]]:
        """(partition -> offset after its last record, partition -> records of it) of this poll."""
        if not len(self):
            return {}, {}
        starts = np.flatnonzero(np.r_[True, self.partition[1:] != self.partition[:-1]])
        if starts.size <= _FEW_RUNS:  # a client's poll: partitions in runs, a run's top offset by one C-level reduce
            top_of: dict[int, int] = {}
            count_of: dict[int, int] = {}
            tops = np.maximum.reduceat(self.offset, starts).tolist()
            sizes = np.diff(np.r_[starts, len(self)]).tolist()
            for part, top, size in zip(self.partition[starts].tolist(), tops, sizes, strict=True):
                top_of[part] = max(top_of.get(part, top), top)
                count_of[part] = count_of.get(part, 0) + size
            return {p: t + 1 for p, t in sorted(top_of.items())}, dict(sorted(count_of.items()))
        parts, inverse, counts = np.unique(self.partition, return_inverse=True, return_counts=True)
        top = np.full(parts.size, -1, dtype=np.int64)
        np.maximum.at(top, inverse, self.offset)
        return (dict(zip(parts.tolist(), (top + 1).tolist(), strict=True)),
                dict(zip(parts.tolist(), counts.tolist(), strict=True)))

"""ColumnRecords reads every fetch exactly as kafka-python's own PartitionRecords does.

Each case is a fetch buffer made with kafka-python's own batch builders (then patched where a producer cannot
make it: control batches, leader epochs, corrupt bytes); both parsers take it in the same steps and must agree
on every record, every position/epoch/metrics update after each take, when they drain, and what they raise.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any

import kafka
import pytest
from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c
from kafka.structs import TopicPartition

from rnnwatch.consumer.kafka import columnar
from rnnwatch.consumer.kafka.columnar import ColumnRecords, Rows
from rnnwatch.consumer.kafka.python import PythonSource

TP = TopicPartition("in", 3)
Aborted = namedtuple("Aborted", "producer_id first_offset")
_H = DefaultRecordBatch.HEADER_STRUCT
GZIP, SNAPPY = 1, 2


def v2(records: list[tuple[int, int, bytes | None, bytes | None, list[Any]]], *, base: int = 0, codec: int = 0,
       producer: int = -1, transactional: bool = False, control: bool = False, append_time: bool = False,
       epoch: int = 0, last_delta: int | None = None) -> bytes:
    """A v2 batch of (offset delta, timestamp, key, value, headers), made by kafka-python's builder."""
    builder = DefaultRecordBatchBuilder(2, codec, transactional, producer, 0 if producer >= 0 else -1,
                                        0 if producer >= 0 else -1, 1 << 20)
    for delta, ts, key, value, headers in records:
        builder.append(delta, ts, key, value, headers)
    buf = bytearray(builder.build())
    fields = list(_H.unpack_from(buf))
    fields[0], fields[2] = base, epoch
    fields[6] = fields[6] if last_delta is None else last_delta  # records after the last one compacted away
    fields[5] |= (0x20 if control else 0) | (0x08 if append_time else 0)
    _H.pack_into(buf, 0, *fields)
    return _recrc(buf)


def _recrc(buf: bytearray) -> bytes:
    struct.pack_into(">I", buf, DefaultRecordBatch.CRC_OFFSET,
                     calc_crc32c(memoryview(buf)[DefaultRecordBatch.ATTRIBUTES_OFFSET:]))
    return bytes(buf)


def marker(base: int, producer: int, *, abort: bool) -> bytes:
    return v2([(0, 2000, struct.pack(">hh", 0, 0 if abort else 1), b"\0\0\0\0\0\0", [])], base=base,
              producer=producer, transactional=True, control=True)


def legacy(magic: int, records: list[tuple[int, int, bytes | None, bytes | None]], *, codec: int = 0) -> bytes:
    builder = LegacyRecordBatchBuilder(magic, codec, 1 << 20)
    for offset, ts, key, value in records:
        builder.append(offset, ts if magic else None, key, value)
    return bytes(builder.build())


def ticks(n: int, *, start: int = 0, step: int = 1, ts: int = 1_700_000_000_000) -> list[Any]:
    return [(i * step, ts + 37 * i - (5 if i % 7 == 3 else 0), b"SYM%d" % (i % 5),
             b'{"p": %d, "pad": "%s"}' % (i, b"x" * (i % 150)), []) for i in range(start, start + n)]


def run(parser: type, data: bytes, steps: list[int | None], *, fetch_offset: int = 0, check_crcs: bool = True,
        isolation: Any = IsolationLevel.READ_COMMITTED, aborted: list[Any] | None = None) -> list[Any]:
    """What one parser does over ``steps`` takes: records and state after each, or what it raised."""
    part = parser(fetch_offset, TP, MemoryRecords(data), check_crcs=check_crcs, isolation_level=isolation,
                  aborted_transactions=aborted, on_drain=lambda p: None)
    seen: list[Any] = []
    for n in steps:
        if not part:
            seen.append("drained")
            continue
        try:
            taken = part.take(n)
        except Exception as exc:  # noqa: BLE001 - the very exception is what is compared
            seen.append(("raised", type(exc).__name__, str(exc)))
            continue
        seen.append((_records(taken), part.next_fetch_offset, part.leader_epoch, part.records_read,
                     part.bytes_read, bool(part)))
    return seen


def _records(taken: list[Any]) -> list[Any]:
    out = []
    for item in taken:
        if isinstance(item, Rows):
            heads = item.headers or [[]] * len(item.values)
            out.extend((item.partition, int(o), int(t), k, v, [tuple(h) for h in hs]) for o, t, k, v, hs in
                       zip(item.offset, item.timestamp, item.keys, item.values, heads, strict=True))
        else:
            ts = -1 if item.timestamp is None else item.timestamp  # v0: none (columns hold Kafka's -1)
            out.append((item.partition, item.offset, ts, item.key, item.value,
                        [tuple(h) for h in item.headers]))
    return out


def same(data: bytes, steps: list[int | None], **kw: Any) -> list[Any]:
    theirs = run(Fetcher.PartitionRecords, data, steps, **kw)
    ours = run(ColumnRecords, data, steps, **kw)
    assert ours == theirs
    return ours


STEPS = [[None], [1, 1, 1], [7, 100, 3, 1, 1], [3, 10_000, 1], [2] * 40]


@pytest.mark.parametrize("steps", STEPS)
def test_plain_batches_with_gaps_headers_nulls_and_long_fields(steps: list[int | None]) -> None:
    heads = [("trace", b"abc"), ("none", None), ("\u00e9t\u00e9", b"")]
    odd = [(0, 5, None, b"v", []), (1, 6, b"k", None, heads), (4, 9_999_999_999, None, None, []),  # gap: compacted
           (5, -3, b"k" * 300, b"v" * 70_000, heads[:1])]
    data = (v2(ticks(50), base=0, epoch=3) + v2(odd, base=50, epoch=4) + v2(ticks(30, step=3), base=60, epoch=4)
            + v2(ticks(20), base=150, append_time=True, epoch=5) + v2(ticks(3), base=170, last_delta=9))
    result = same(data, steps)
    if steps == [None]:
        assert len(result[0][0]) == 107 and result[0][1] == 180 and result[0][-1] is False  # all of them, and drained


def long_batch(n: int, *, ts_jump: int = 0, header_at: int = -1) -> list[Any]:
    """A batch long enough for the vectorised reader, with null keys and values and long fields."""
    out = []
    for delta, ts, key, value, _ in ticks(n):
        key = None if delta % 9 == 4 else key
        value = None if delta % 7 == 5 else b"z" * (20_000 if delta == 11 else 70_000) if delta in (11, 12) else value
        out.append((delta, ts + (ts_jump if delta == n // 2 else 0), key, value,
                    [("h", b"1"), ("x", None)] if delta == header_at else []))
    return out


@pytest.mark.parametrize("steps", STEPS)
def test_long_batches_with_nulls_long_fields_headers_and_long_varints(steps: list[int | None]) -> None:
    data = (v2(long_batch(40), base=0) + v2(long_batch(40, ts_jump=300_000_000), base=40)  # a 4-byte ts delta
            + v2(long_batch(40, header_at=39), base=80) + v2(long_batch(300), base=120, codec=GZIP)
            + v2(long_batch(35), base=420, append_time=True) + v2(long_batch(33), base=455, last_delta=40))
    result = same(data, steps)
    if steps == [None]:
        assert len(result[0][0]) == 488 and result[0][1] == 496


@pytest.mark.parametrize("steps", STEPS)
def test_gzip_batches_and_a_fetch_that_starts_inside_a_batch(steps: list[int | None]) -> None:
    data = v2(ticks(40), base=100, codec=GZIP) + v2(ticks(40), base=140) + v2(ticks(5), base=180, codec=GZIP)
    same(data, steps, fetch_offset=117)
    same(data, steps, fetch_offset=140)


def test_a_codec_that_is_not_installed_raises_what_kafka_python_raises() -> None:
    buf = bytearray(v2(ticks(3), base=3, codec=GZIP))
    fields = list(_H.unpack_from(buf))
    fields[5] = (fields[5] & ~0x07) | SNAPPY
    _H.pack_into(buf, 0, *fields)
    data = v2(ticks(3)) + _recrc(buf)
    if kafka.codec.has_snappy():
        pytest.fail("this test needs a codec that is not installed: snappy now is; pick another")
    assert same(data, [2, 5, 5])[2][0] == "raised"


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("isolation", [IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED])
def test_transactions_aborted_and_committed_and_control_batches(steps: list[int | None], isolation: Any) -> None:
    data = (v2(ticks(10), base=0, producer=7, transactional=True)    # aborted
            + v2(ticks(5), base=10, producer=8, transactional=True)  # committed
            + marker(15, 7, abort=True) + marker(16, 8, abort=False)
            + v2(ticks(6), base=17, producer=7, transactional=True)  # aborted again
            + v2(ticks(4), base=23, producer=9)  # idempotent, not transactional
            + marker(27, 7, abort=True))  # a fetch ending on a control batch
    same(data, steps, isolation=isolation, aborted=[Aborted(7, 0), Aborted(7, 17)])


@pytest.mark.parametrize("steps", STEPS)
def test_old_message_formats_go_through_kafka_pythons_own_reader(steps: list[int | None]) -> None:
    v0 = [(i, 0, b"k", b"v%d" % i) for i in range(8)]
    v1 = [(i, 1_700_000_000_000 + i, None if i % 3 else b"k", b"w%d" % i) for i in range(8, 20)]
    data = legacy(0, v0) + legacy(1, v1) + legacy(1, v1[:4], codec=GZIP) + v2(ticks(6), base=20)
    same(data, steps)


@pytest.mark.parametrize("steps", STEPS)
def test_a_partial_batch_at_the_end_of_the_fetch_is_not_returned(steps: list[int | None]) -> None:
    whole = v2(ticks(30)) + v2(ticks(30), base=30)
    same(whole + v2(ticks(30), base=60)[:-17], steps)
    same(v2(ticks(1))[:40], steps)  # nothing complete at all


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("check_crcs", [True, False])
def test_corrupt_bytes_raise_kafka_pythons_errors_after_the_good_records(steps: list[int | None],
                                                                         check_crcs: bool) -> None:
    good = v2(ticks(12), base=0, epoch=2)
    flipped = bytearray(v2(ticks(12), base=12, epoch=3))
    flipped[-30] ^= 0xFF  # a value byte: only the CRC notices
    assert same(good + bytes(flipped) + v2(ticks(3), base=24), steps, check_crcs=check_crcs)
    lying = bytearray(v2(ticks(12), base=12, epoch=3))
    lying[_H.size] += 2  # the 1st record's length, one more than its fields: its structure no longer adds up
    for data in (good + _recrc(lying), good + _recrc(lying)[:-1] + b"\0"):
        assert any(r[0] == "raised" for r in same(data, [*steps, 100, 100], check_crcs=check_crcs)
                   if isinstance(r, tuple))
    phantom = bytearray(v2(long_batch(40), base=12))  # record 0 claims a header its bytes do not hold
    length = phantom[_H.size] >> 1  # one byte: ticks(0) is short
    phantom[_H.size + length] = 2
    same(good + _recrc(phantom), [*steps, 100, 100], check_crcs=check_crcs)
    extra = bytearray(v2(ticks(4), base=12))  # a record count one short: bytes left over in the batch
    fields = list(_H.unpack_from(extra))
    fields[12] -= 1
    _H.pack_into(extra, 0, *fields)
    same(good + _recrc(extra), steps, check_crcs=check_crcs)


def test_kafka_pythons_fetcher_still_has_the_shape_columnar_relies_on() -> None:
    """Fails loudly when kafka-python moves out of the proven range or moves what ColumnRecords hooks into."""
    assert columnar.installable() is None, "re-prove columnar.py on this kafka-python, then widen PROVEN"


class _Consumer:
    def __init__(self, **config: Any) -> None:
        self._fetcher = Fetcher.__new__(Fetcher)
        self.config = {"key_deserializer": None, "value_deserializer": None, **config}


def test_install_makes_polls_return_blocks() -> None:
    consumer = _Consumer()
    assert columnar.install(consumer) is True
    assert consumer._fetcher.PartitionRecords is ColumnRecords
    assert Fetcher.PartitionRecords is not ColumnRecords  # other consumers (the changelog reader) keep theirs


@pytest.mark.parametrize("version", ["3.1.0", "3.0.11", "4.0.0rc1"])
def test_a_kafka_python_it_is_not_proven_on_keeps_its_own_records(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  version: str) -> None:
    monkeypatch.setattr(kafka, "__version__", version)
    consumer = _Consumer()
    assert columnar.install(consumer) is False
    assert "PartitionRecords" not in vars(consumer._fetcher)
    assert f"kafka-python {version} is not a version it is proven on" in caplog.text


def test_a_consumer_with_a_deserializer_keeps_its_own_records(caplog: pytest.LogCaptureFixture) -> None:
    consumer = _Consumer(value_deserializer=bytes.decode)
    assert columnar.install(consumer) is False
    assert "PartitionRecords" not in vars(consumer._fetcher) and "deserializer" in caplog.text


def test_a_source_without_columns_gathers_kafka_pythons_records() -> None:
    records = {TP: [ConsumerRecord("in", 3, 0, 5, 77, 0, b"k", b"v", [], None, 1, 1, -1)]}

    class _Polling:
        def poll(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
            return records

    polled = PythonSource(_Polling(), "in").poll(0, 10)  # type: ignore[arg-type]
    assert [(r.partition, r.offset, r.timestamp, r.key, r.value) for r in polled] == [(3, 5, 77, b"k", b"v")]


def test_blocks_of_several_partitions_become_one_polled_in_order() -> None:
    a = run(ColumnRecords, v2(ticks(3)), [None])
    assert len(a[0][0]) == 3
    part = ColumnRecords(0, TP, MemoryRecords(v2(ticks(5), base=0) + v2([(0, 1, b"k", b"v", [("h", b"1")])],
                                                                       base=5)), on_drain=lambda p: None)
    first, second = part.take(4), part.take(4)
    other = ColumnRecords(0, TopicPartition("in", 1), MemoryRecords(v2(ticks(2))), on_drain=lambda p: None).take()
    polled = columnar.polled("in", {TP: [*first, *second], TopicPartition("in", 1): list(other)})
    assert polled.partition.tolist() == [3] * 6 + [1] * 2
    assert polled.offset.tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    assert polled.headers is not None and polled.headers[5] == [("h", b"1")] and polled.headers[6] == []
    assert [r.value for r in polled] == [r[4] for r in _records([*first, *second, *other])]
    single = columnar.polled("in", {TP: list(first)})
    assert single.headers is None and single.offset.tolist() == [0, 1, 2, 3]
    assert len(columnar.polled("in", {})) == 0


def test_batches_are_read_only_as_far_as_a_take_needs() -> None:
    """A 16 MiB fetch is not turned into objects all at once: memory stays at about one poll's records."""
    part = ColumnRecords(0, TP, MemoryRecords(v2(ticks(50)) + v2(ticks(50), base=50) + v2(ticks(50), base=100)),
                         on_drain=lambda p: None)
    assert len(part.take(60)) == 60
    assert part._records.has_next() and len(part._parsed.offsets) == 40  # the 3rd batch is not read yet

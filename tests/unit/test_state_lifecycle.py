"""The service's key lifecycle over fake Kafka clients: restored keys keep their age, a slow restore never
stops the service, and what the store remembers is bounded by recent keys, not by every key ever seen."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from rnnwatch.consumer import changelog, restore
from tests.unit.fakes import FakeCluster, FakeService
from tests.unit.test_delivery import TOPIC, cluster, run, settings


def _ticks(symbols: list[str], steps: range) -> list[tuple[bytes | None, bytes]]:
    return [(s.encode(), orjson.dumps({"symbol": s, "ts": 1_600_000_000 + 60 * t, "price": 100.0 + (t % 7)}))
            for t in steps for s in symbols]


def test_restored_keys_are_not_evicted_at_once_on_a_host_up_longer_than_the_ttl(
        ewma_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = cluster(_ticks(["A", "B", "C", "D"], range(20)), partitions=1)
    run(c, ewma_path, overrides={"key_ttl_ms": "3600000"})
    c.produce(TOPIC, _ticks(["A"], range(20, 25)))  # only A has new records
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + 30 * 24 * 3600.0)  # this host has been up 30 days
    evicted: list[int] = []
    service = FakeService(settings(ewma_path, key_ttl_ms="3600000"), cluster=c,
                          on_batch=lambda _: evicted.append(service.store.evict_idle(time.monotonic(), 3600.0)))
    service.start().run()
    assert evicted == [0]  # after the restore and A's batch: B, C and D were seen moments ago, none is idle


class _RacingClock:
    """A module's ``time`` whose monotonic clock runs 50 s per reading: every restore looks very slow."""

    def __init__(self) -> None:
        self._now = time.monotonic()

    def monotonic(self) -> float:
        self._now += 50.0
        return self._now

    def time(self) -> float:
        return time.time()


def test_a_slow_restore_goes_on_and_never_stops_the_service(ewma_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    c = cluster(_ticks([f"S{i}" for i in range(30)], range(40)), partitions=1)
    run(c, ewma_path)
    c.produce(TOPIC, _ticks([f"S{i}" for i in range(30)], range(40, 45)))
    for module in (changelog, restore):
        if hasattr(module, "time"):
            monkeypatch.setattr(module, "time", _RacingClock())
    service = FakeService(settings(ewma_path), cluster=c)
    service.reader.batch = 5  # many fetches, each "50 s" apart
    service.start().run()  # the restore "takes" minutes: it must still finish, and the run with it
    assert service.summary.processed == 30 * 5
    assert any("taking longer than" in r.getMessage() for r in caplog.records)


def _keys_held(store: Any) -> int:
    """Distinct keys the store keeps anything about (rows, offsets, evicted-key index), whatever its shape."""
    held = {(int(store.table.partition[row]), key) for row, key in enumerate(store.table.keys) if key is not None}
    for name in ("snapshot_offsets", "evicted"):
        for k, v in getattr(store, name, {}).items():
            held |= {(k, key) for key in v} if isinstance(v, dict) else {k}
    return len(held)


def test_what_the_store_remembers_is_bounded_by_recent_keys(ewma_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(offset=0.0)
    real_mono, real_wall = time.monotonic, time.time
    monkeypatch.setattr(time, "monotonic", lambda: real_mono() + clock.offset)
    monkeypatch.setattr(time, "time", lambda: real_wall() + clock.offset)
    c = FakeCluster()
    c.create(TOPIC, 1)
    peak = 0

    def next_hour(outcome: Any) -> None:
        nonlocal peak
        clock.offset += 3600.0  # each batch is an hour later
        service.store.evict_idle(time.monotonic(), 3600.0)
        peak = max(peak, _keys_held(service.store))

    for hour in range(12):  # 40 new keys an hour, each seen for 3 ticks and never again
        c.produce(TOPIC, _ticks([f"h{hour}-{i}" for i in range(40)], range(hour * 3, hour * 3 + 3)))
    service = FakeService(settings(ewma_path, key_ttl_ms="3600000", state_retention_ms="10800000",
                                   max_poll_records="120", checkpoint_records="120"),
                          cluster=c, on_batch=next_hour).start()
    service.run()
    assert peak <= 5 * 40  # about the last few hours' keys, not all 480


def test_a_restart_reads_a_bounded_part_of_a_long_changelog(ewma_path: Path) -> None:
    symbols = [f"S{i:03d}" for i in range(200)]
    c = cluster(_ticks(symbols, range(60)), partitions=1)
    first = FakeService(settings(ewma_path, max_poll_records="200", checkpoint_records="200"), cluster=c).start()
    first.run()  # a checkpoint every 200 records: the changelog holds every key ~60 times
    history = len(c.topics["g.state"][0])
    assert history > 10_000
    c.produce(TOPIC, _ticks(symbols, range(60, 61)))
    again = FakeService(settings(ewma_path), cluster=c).start()
    again.run()
    assert again.summary.processed == 200
    assert again.reader.records_read <= 4096 + 3 * 200 < history  # one search window, not the history


def test_a_service_that_cannot_be_built_closes_the_clients_it_made(ewma_path: Path) -> None:
    """Construction is all or nothing: an input topic that does not exist is refused, and the group member
    already made for it is closed (not left in the group)."""
    from rnnwatch.consumer.errors import ConfigError
    from rnnwatch.consumer.service import Service
    from rnnwatch.consumer.testing import MemoryTransport

    c = FakeCluster()
    c.create("other", 1)
    transport = MemoryTransport(c, group="g", owned={0})
    c.topics["ticks"] = []  # the member can be made (no partitions), the topic check then refuses it
    with pytest.raises(ConfigError, match="does not exist"):
        Service(settings(ewma_path, input_topic="ticks", broker_wait_ms="200"), transport=transport)
    assert [s.events[-1] for s in transport.sources] == ["closed"]

"""Every kind of bad input, through a real run: dead-lettered with its reason and original bytes, counted,
and the consumer keeps going (the good records around them are all processed)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import load_settings
from tests.integration.helpers import price_feed, produce, read_all

pytestmark = pytest.mark.integration


def _tick(**fields: object) -> bytes:
    doc: dict[str, object] = {"symbol": "S000", "ts": 1_600_000_000, "price": 100.0}
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


BAD: dict[str, tuple[bytes | None, bytes]] = {
    "invalid_json": (b"S000", b"\xff\xfe\x00 not utf-8, not json"),
    "not_an_object": (b"S000", b"[1, 2, 3]"),
    "missing_key": (None, _tick(symbol=...)),
    "missing_field": (b"S000", _tick(price=...)),
    "non_numeric": (b"S000", _tick(price="12.5 USD")),
    "non_finite": (b"S000", _tick(price=1e39)),
    "out_of_domain": (b"S000", _tick(price=-1.0)),
    "bad_timestamp": (b"S000", _tick(ts="next tuesday")),
    "timestamp_future": (b"S000", _tick(ts=int(time.time()) + 30 * 86_400)),
    "timestamp_past": (b"S000", _tick(ts="1066-10-14T00:00:00Z")),
    "oversized": (b"S000", _tick(pad="x" * 5000)),
}


def test_bad_records_are_dead_lettered_with_reasons_and_processing_goes_on(
        broker: EmbeddedBroker, topic_factory: Callable[..., str], ewma_path: Path) -> None:
    topic = topic_factory(partitions=1)
    feed = price_feed(3, 40, seed=5)
    duplicate, out_of_order = feed[30], (feed[3][0], _tick(symbol="S000", ts=1_600_000_000 - 3600, price=99.0))
    extra_field = (feed[36][0], orjson.dumps(orjson.loads(feed[36][1]) | {"venue": "XNAS", "nested": {"a": [1]}}))
    records = [*feed[:33], *BAD.values(), duplicate, out_of_order, *feed[33:36], extra_field, *feed[37:]]
    produce(broker.bootstrap_servers, topic, records)
    settings = load_settings({"bootstrap_servers": broker.bootstrap_servers, "input_topic": topic,
                              "auto_offset_reset": "earliest", "group_id": f"{topic}-g", "model": str(ewma_path),
                              "metrics_port": "0",
                              "metrics_host": "127.0.0.1", "session_timeout_ms": "6000",
                              "max_message_bytes": "4096", "until_caught_up": True}, env={})
    service = Service(settings).start()
    summary = service.run()
    assert summary.records == len(records)
    assert summary.dead_lettered == len(BAD)
    assert summary.processed == len(feed)  # every good tick, the one with extra fields included
    sample = service.registry.get_sample_value
    for reason in BAD:
        assert sample("rnnwatch_records_failed_total", {"reason": reason}) == 1, reason
    assert sample("rnnwatch_records_skipped_total", {"reason": "duplicate"}) == 1
    assert sample("rnnwatch_records_skipped_total", {"reason": "out_of_order"}) == 1
    letters = {dict(r.headers)["rnnwatch-reason"].decode(): r for r in read_all(broker.bootstrap_servers,
                                                                                  f"{topic}.dlq")}
    assert set(letters) == set(BAD)
    for reason, (key, value) in BAD.items():
        letter = letters[reason]
        assert letter.key == key
        assert letter.value == value, reason
        headers = dict(letter.headers)
        assert headers["rnnwatch-original-topic"] == topic.encode()
        assert headers["rnnwatch-error"], reason


def test_unreachable_broker_fails_fast_with_a_clear_error(ewma_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "rnnwatch.consumer.cli", "run", "--bootstrap-servers",
                          "127.0.0.1:1", "--input-topic", "t", "--group-id", "g", "--model", str(ewma_path),
                          "--metrics-port", "0", "--broker-wait-ms", "3000"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2
    assert "cannot reach Kafka at 127.0.0.1:1 after 3000 ms" in out.stderr

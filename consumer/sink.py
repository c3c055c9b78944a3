"""The producer side: anomaly events, dead letters and state snapshots through one KafkaProducer.

Sends are asynchronous; delivery failures are remembered and surface at :meth:`Sink.flush`, which the
checkpoint calls before it commits offsets. A failed delivery is never forgotten: every later flush raises
it again, so no later checkpoint can commit past the lost record (the process ends, and a restart consumes
the records again) even if the producer's next records go through.

:attr:`KafkaSink.pending_bytes` counts what was sent but not yet acknowledged (or failed): kafka-python 3
has no ``buffer_memory`` bound, so the service pauses consumption on it (see ``backpressure``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from rnnwatch.consumer.errors import BrokerError, DeliveryError
from rnnwatch.consumer.events import AnomalyEvent, DeadLetter

__all__ = ["MAX_REQUEST_BYTES", "KafkaSink", "Sink"]

log = logging.getLogger(__name__)

# The producer's max_request_size: no single record rnnwatch writes may be larger (checked at start-up by
# ``limits.check_record_sizes``); brokers have their own limit (message.max.bytes, 1 MiB by default).
MAX_REQUEST_BYTES = 8 * 1024 * 1024
_RECORD_OVERHEAD = 64  # per-record bytes the producer keeps besides key, value and headers, roughly


class Sink(Protocol):
    """Where the service writes; tests and users may pass their own."""

    def send_event(self, event: AnomalyEvent) -> None: ...
    def send_dead_letter(self, letter: DeadLetter) -> None: ...
    def send_snapshot(self, partition: int, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]],
                      on_offset: Callable[[int], None]) -> None: ...
    def flush(self, timeout_s: float) -> None: ...
    def close(self, timeout_s: float) -> None: ...
    @property
    def pending_bytes(self) -> int:
        """Bytes sent and not yet acknowledged (or failed): what the service's backpressure bounds."""


class KafkaSink:
    """kafka-python producer with acks=all; remembers the first delivery error until flush()."""

    def __init__(self, *, producer: Any, output_topic: str, dead_letter_topic: str, changelog_topic: str,
                 on_event_delivered: Callable[[], None] = lambda: None,
                 on_error: Callable[[str], None] = lambda kind: None) -> None:
        self._producer = producer
        self.output_topic = output_topic
        self.dead_letter_topic = dead_letter_topic
        self.changelog_topic = changelog_topic
        self._on_event_delivered = on_event_delivered
        self._on_error = on_error
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._pending_bytes = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of records sent and not yet acknowledged or failed."""
        return self._pending_bytes

    @classmethod
    def connect(cls, config: dict[str, Any], **kwargs: Any) -> KafkaSink:
        from kafka import KafkaProducer

        producer = KafkaProducer(acks="all", linger_ms=5, batch_size=256 * 1024, retries=2**31 - 1,
                                 delivery_timeout_ms=120_000, max_request_size=MAX_REQUEST_BYTES, **config)
        return cls(producer=producer, **kwargs)

    def send_event(self, event: AnomalyEvent) -> None:
        key, value, headers = event.to_kafka()
        future = self._producer.send(self.output_topic, key=key, value=value, headers=headers)
        self._track(future, key, value, headers)
        future.add_callback(lambda _md: self._on_event_delivered())
        future.add_errback(self._failed("event"))

    def send_dead_letter(self, letter: DeadLetter) -> None:
        key, value, headers = letter.to_kafka()
        future = self._producer.send(self.dead_letter_topic, key=key, value=value, headers=headers)
        self._track(future, key, value, headers)
        future.add_errback(self._failed("dead_letter"))

    def send_snapshot(self, partition: int, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]],
                      on_offset: Callable[[int], None]) -> None:
        future = self._producer.send(self.changelog_topic, key=key, value=value, headers=headers,
                                     partition=partition)
        self._track(future, key, value, headers)
        future.add_callback(lambda md: on_offset(md.offset))
        future.add_errback(self._failed("snapshot"))

    def flush(self, timeout_s: float) -> None:
        """Wait for every send so far; raise BrokerError on a timeout, DeliveryError if any send ever failed."""
        try:
            self._producer.flush(timeout=timeout_s)
        except Exception as exc:  # kafka-python raises KafkaTimeoutError and friends
            msg = f"producer flush did not complete within {timeout_s:.0f}s: {exc}"
            raise BrokerError(msg) from exc
        with self._lock:
            error = self._error
        if error is not None:
            msg = f"a record could not be delivered: {error}"
            raise DeliveryError(msg) from error

    def close(self, timeout_s: float) -> None:
        self._producer.close(timeout=timeout_s)

    def _track(self, future: Any, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers) + _RECORD_OVERHEAD
        with self._lock:
            self._pending_bytes += size

        def done(_result: object) -> None:
            with self._lock:
                self._pending_bytes -= size
        future.add_callback(done)
        future.add_errback(done)

    def _failed(self, kind: str) -> Callable[[BaseException], None]:
        def errback(exc: BaseException) -> None:
            log.error("delivery of a %s record failed: %s", kind, exc)
            self._on_error(kind)
            with self._lock:
                if self._error is None:
                    self._error = exc
        return errback

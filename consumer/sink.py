"""The producer side: anomaly events, dead letters and state snapshots through one producer.

Sends are asynchronous; delivery failures are remembered and surface at :meth:`Sink.flush`, which the
checkpoint calls before it commits offsets. A failed delivery is never forgotten: every later flush raises
it again, so no later checkpoint can commit past the lost record (the process ends, and a restart consumes
the records again) even if the producer's next records go through.

:attr:`KafkaSink.pending_bytes` counts what was sent but not yet acknowledged (or failed): kafka-python 3
has no ``buffer_memory`` bound, so the service pauses consumption on it (see ``backpressure``). The
producer is any transport's (``rnnwatch.consumer.kafka``): this module knows no Kafka client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from itertools import chain
from typing import Protocol

from rnnwatch.consumer.errors import DeliveryError
from rnnwatch.consumer.events import AnomalyEvent, DeadLetter
from rnnwatch.consumer.kafka.config import MAX_REQUEST_BYTES
from rnnwatch.consumer.kafka.protocols import Headers, Producer
from rnnwatch.consumer.types import ProduceErrorKind

__all__ = ["MAX_REQUEST_BYTES", "KafkaSink", "Sink"]

log = logging.getLogger(__name__)

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
    """Writes through a :class:`Producer` (acks=all); remembers the first delivery error until flush()."""

    def __init__(self, *, producer: Producer, output_topic: str, dead_letter_topic: str, changelog_topic: str,
                 on_event_delivered: Callable[[], None] = lambda: None,
                 on_error: Callable[[ProduceErrorKind], None] = lambda kind: None) -> None:
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
        """Bytes of records sent and not yet acknowledged or failed (serves due delivery callbacks first)."""
        self._producer.serve()
        return self._pending_bytes

    def send_event(self, event: AnomalyEvent) -> None:
        key, value, headers = event.to_kafka()
        self._send(self.output_topic, key, value, headers, None, "event", lambda _offset: self._on_event_delivered())

    def send_dead_letter(self, letter: DeadLetter) -> None:
        key, value, headers = letter.to_kafka()
        self._send(self.dead_letter_topic, key, value, headers, None, "dead_letter", lambda _offset: None)

    def send_snapshot(self, partition: int, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]],
                      on_offset: Callable[[int], None]) -> None:
        self._send(self.changelog_topic, key, value, headers, partition, "snapshot", on_offset)

    def flush(self, timeout_s: float) -> None:
        """Wait for every send so far; raise BrokerError on a timeout, DeliveryError if any send ever failed."""
        self._producer.flush(timeout_s)
        with self._lock:
            error = self._error
        if error is not None:
            msg = f"a record could not be delivered: {error}"
            raise DeliveryError(msg) from error

    def close(self, timeout_s: float) -> None:
        self._producer.close(timeout_s)

    def _send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, partition: int | None,
              kind: ProduceErrorKind, on_offset: Callable[[int], None]) -> None:
        """One record (a checkpoint sends one per changed key: the per-record Python work here is kept to a
        size sum in C, one lock round per send and per delivery, one closure)."""
        size = len(key or b"") + len(value or b"") + sum(map(len, chain.from_iterable(headers))) + _RECORD_OVERHEAD
        lock = self._lock
        with lock:
            self._pending_bytes += size

        def done(offset: int | None, error: BaseException | None) -> None:
            with lock:
                self._pending_bytes -= size
            if error is None and offset is not None:
                on_offset(offset)
            else:
                self._failed(kind, error)

        try:
            self._producer.send(topic, key, value, headers, partition, done)
        except BaseException:
            with lock:
                self._pending_bytes -= size
            raise

    def _failed(self, kind: ProduceErrorKind, error: BaseException | None) -> None:
        log.error("delivery of a %s record failed: %s", kind, error,
                  extra={"event": "delivery_failed", "reason": type(error).__name__ if error else "no_offset"})
        self._on_error(kind)
        with self._lock:
            if self._error is None:
                self._error = error

"""The largest records rnnwatch can write, checked at start-up against what Kafka accepts.

Every record rnnwatch produces has a size bounded by its configuration: an anomaly event by the key limit
(a key travels three times: record key, ``ce_subject``, and JSON-escaped in the body) and the model's
features; a snapshot by the key limit and the model's state row; a dead letter by the ``DLQ_*_BYTES``
budgets. So the bound is computed once, from a worst-case record, instead of discovering an oversized
record at run time, when all a producer can do is fail the delivery and stop the service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rnnwatch.consumer.contract import StepSignature
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.events import DEAD_LETTER_MAX_BYTES, AnomalyEvent
from rnnwatch.consumer.settings import Settings
from rnnwatch.consumer.sink import MAX_REQUEST_BYTES
from rnnwatch.consumer.state import StateTable

__all__ = ["KAFKA_DEFAULT_MESSAGE_BYTES", "RecordSizes", "check_record_sizes"]

log = logging.getLogger(__name__)

KAFKA_DEFAULT_MESSAGE_BYTES = 1_048_588  # message.max.bytes of a broker left at its default
_RECORD_OVERHEAD = 512  # record and batch framing, generously
_WIDEST_FLOAT = -1.2345678901234567e-300  # the longest repr a float64 can have


@dataclass(frozen=True)
class RecordSizes:
    """Upper bounds, in bytes, of each kind of record this configuration can produce."""

    event: int
    snapshot: int
    dead_letter: int

    @property
    def largest(self) -> int:
        return max(self.event, self.snapshot, self.dead_letter)


def record_sizes(signature: StepSignature, table: StateTable, settings: Settings) -> RecordSizes:
    # \x01 is the costliest key byte: JSON-escaped as \u0001, six bytes in the event body
    key = b"\x01" * settings.max_key_bytes
    n = signature.n_features
    worst = AnomalyEvent(
        source=f"rnnwatch://{settings.group_id}/{signature.name}", key=key, event_ms=0, score=_WIDEST_FLOAT,
        threshold=_WIDEST_FLOAT, severity="critical", features=signature.feature_names, actual=[_WIDEST_FLOAT] * n,
        expected=[_WIDEST_FLOAT] * n, residual=[_WIDEST_FLOAT] * n,
        model={"name": signature.name, "version": signature.version, "sha256": signature.sha256},
        topic=settings.input_topic, partition=2**31 - 1, offset=2**63 - 1, timestamp_ms=-(2**63),
    )
    ev_key, ev_value, ev_headers = worst.to_kafka()
    event = len(ev_key) + len(ev_value) + sum(len(k) + len(v) for k, v in ev_headers)
    snapshot = settings.max_key_bytes + table.snapshot_bytes + 64 + len(table.identity.encode())  # + its headers
    return RecordSizes(event + _RECORD_OVERHEAD, snapshot + _RECORD_OVERHEAD, DEAD_LETTER_MAX_BYTES + _RECORD_OVERHEAD)


def check_record_sizes(signature: StepSignature, table: StateTable, settings: Settings) -> RecordSizes:
    """Raise ConfigError if a record could exceed the producer's request limit; warn above Kafka's default."""
    sizes = record_sizes(signature, table, settings)
    if sizes.largest > MAX_REQUEST_BYTES:
        msg = (f"the largest record this configuration can write is {sizes.largest} bytes (event {sizes.event}, "
               f"state snapshot {sizes.snapshot}), over the producer's limit of {MAX_REQUEST_BYTES}: lower "
               f"max_key_bytes ({settings.max_key_bytes}) or use a model with less state per key "
               f"({signature.state_bytes_per_key} bytes)")
        raise ConfigError(msg)
    if sizes.largest > KAFKA_DEFAULT_MESSAGE_BYTES:
        log.warning("records can reach %d bytes (event %d, snapshot %d): raise max.message.bytes of %s and %s above "
                    "Kafka's default of %d, or deliveries will fail", sizes.largest, sizes.event, sizes.snapshot,
                    settings.output_topic, settings.changelog_topic, KAFKA_DEFAULT_MESSAGE_BYTES)
    return sizes

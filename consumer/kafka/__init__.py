"""Every Kafka client of rnnwatch, behind small protocols (see ``types``), in one of two transports.

:func:`open_transport` picks the client library named by ``--transport``: ``kafka-python`` (default, pure
Python) or ``confluent`` (librdkafka; ``pip install 'rnnwatch[fast]'``). Client configuration is built once
(:class:`KafkaConfig`); client errors leave this package as rnnwatch's own (``errors``).
"""

from __future__ import annotations

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.kafka.config import MAX_REQUEST_BYTES, KafkaConfig
from rnnwatch.consumer.kafka.polled import Polled
from rnnwatch.consumer.kafka.protocols import (
    Admin,
    Assignment,
    Delivered,
    GroupSource,
    Headers,
    PartitionReader,
    Producer,
    Record,
    TopicPartition,
    Transport,
)

__all__ = ["MAX_REQUEST_BYTES", "TRANSPORTS", "Admin", "Assignment", "Delivered", "GroupSource", "Headers",
           "KafkaConfig", "PartitionReader", "Polled", "Producer", "Record", "TopicPartition", "Transport",
           "open_transport"]

TRANSPORTS = ("kafka-python", "confluent")


def open_transport(config: KafkaConfig) -> Transport:
    """The transport ``config.transport`` names (no client is built yet)."""
    if config.transport == "confluent":
        try:
            from rnnwatch.consumer.kafka.confluent import ConfluentTransport
        except ImportError as exc:
            msg = ("--transport confluent needs confluent-kafka: pip install 'rnnwatch[fast]' "
                   f"(import failed: {exc})")
            raise ConfigError(msg) from exc
        return ConfluentTransport(config)
    if config.transport == "kafka-python":
        from rnnwatch.consumer.kafka.python import PythonTransport

        return PythonTransport(config)
    msg = f"transport {config.transport!r} is not one of {', '.join(TRANSPORTS)}"
    raise ConfigError(msg)

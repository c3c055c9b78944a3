"""Start-up topic checks: the input must exist; output, dead-letter and changelog are created if missing.

The changelog gets the input's partition count (state for input partition p lives in changelog partition
p) and ``cleanup.policy=compact`` so a real Kafka keeps only each key's latest snapshot.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rnnwatch.consumer.errors import BrokerError, ConfigError
from rnnwatch.consumer.settings import Settings

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings, consumer: Any) -> int:
    """Return the input topic's partition count; create the topics rnnwatch writes to when allowed."""
    partitions = _partitions(consumer, settings.input_topic, settings.broker_wait_ms / 1000)
    if partitions is None:
        msg = (f"input topic {settings.input_topic!r} does not exist on {settings.bootstrap_servers}; "
               "create it (or check --input-topic)")
        raise ConfigError(msg)
    if settings.create_topics:
        _create_missing(settings, consumer, partitions)
    changelog = _partitions(consumer, settings.changelog_topic, 5.0)
    if changelog is not None and changelog < partitions:
        msg = (f"changelog {settings.changelog_topic!r} has {changelog} partitions but the input has {partitions}; "
               "state of input partition p lives in changelog partition p: add partitions to the changelog")
        raise ConfigError(msg)
    return partitions


def _partitions(consumer: Any, topic: str, wait_s: float) -> int | None:
    deadline = time.monotonic() + wait_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return len(parts)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _create_missing(settings: Settings, consumer: Any, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    wanted = {settings.output_topic: ({}, partitions), settings.dead_letter_topic: ({}, partitions),
              settings.changelog_topic: ({"cleanup.policy": "compact"}, partitions)}
    missing = {t: spec for t, spec in wanted.items() if not consumer.partitions_for_topic(t)}
    if not missing:
        return
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers.split(","), client_id=settings.client_id,
                             **settings.kafka_security())
    try:
        for topic, (configs, count) in missing.items():
            try:
                admin.create_topics([NewTopic(topic, count, 1, topic_configs=configs)])
                log.info("created topic %s (%d partitions)", topic, count)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                msg = f"cannot create topic {topic!r}: {exc}; create it yourself or grant CreateTopics"
                raise BrokerError(msg) from exc
    finally:
        admin.close()
    deadline = time.monotonic() + 10
    while any(not consumer.partitions_for_topic(t) for t in missing) and time.monotonic() < deadline:
        time.sleep(0.1)

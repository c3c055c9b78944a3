"""Start-up topic checks: the input must exist; output, dead-letter and changelog are created if missing.

The changelog gets the input's partition count (state for input partition p lives in changelog partition
p) and ``cleanup.policy=compact`` so a real Kafka keeps only each key's latest snapshot. Created topics get
``replication_factor`` replicas (default -1: the broker's ``default.replication.factor``, Kafka >= 2.4).

An existing changelog's ``cleanup.policy`` is read back (DescribeConfigs). Without ``compact``, restore time
grows with the changelog's whole history, and with ``delete`` the snapshots of keys idle longer than
``retention.ms`` disappear, taking their state with them: refused at start-up (``changelog_check=refuse``,
the default), or a warning (``warn``). A broker that does not report the policy (the embedded test broker,
Tansu, reports none for topics created without configs, and never compacts) is logged as "not verified".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from rnnwatch.consumer.errors import BrokerError, ConfigError
from rnnwatch.consumer.settings import Settings

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings, consumer: Any, *, admin_factory: Callable[[], Any] | None = None) -> int:
    """Return the input topic's partition count; create the topics rnnwatch writes to when allowed."""
    partitions = _partitions(consumer, settings.input_topic, settings.broker_wait_ms / 1000)
    if partitions is None:
        msg = (f"input topic {settings.input_topic!r} does not exist on {settings.bootstrap_servers}; "
               "create it (or check --input-topic)")
        raise ConfigError(msg)
    make_admin = admin_factory or (lambda: _admin(settings))
    if settings.create_topics:
        _create_missing(settings, consumer, partitions, make_admin)
    changelog = _partitions(consumer, settings.changelog_topic, 5.0)
    if changelog is not None and changelog < partitions:
        msg = (f"changelog {settings.changelog_topic!r} has {changelog} partitions but the input has {partitions}; "
               "state of input partition p lives in changelog partition p: add partitions to the changelog")
        raise ConfigError(msg)
    if changelog is not None and settings.changelog_check != "off":
        _check_changelog_policy(settings, make_admin)
    return partitions


def _admin(settings: Settings) -> Any:
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers.split(","), client_id=settings.client_id,
                            **settings.kafka_security())


def _partitions(consumer: Any, topic: str, wait_s: float) -> int | None:
    deadline = time.monotonic() + wait_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return len(parts)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _create_missing(settings: Settings, consumer: Any, partitions: int, make_admin: Callable[[], Any]) -> None:
    from kafka.errors import IncompatibleBrokerVersion, KafkaError, TopicAlreadyExistsError

    wanted = {settings.output_topic: {}, settings.dead_letter_topic: {},
              settings.changelog_topic: {"cleanup.policy": "compact"}}
    missing = {t: configs for t, configs in wanted.items() if not consumer.partitions_for_topic(t)}
    if not missing:
        return
    admin = make_admin()
    try:
        for topic, configs in missing.items():
            spec = {"num_partitions": partitions, "replication_factor": settings.replication_factor,
                    "configs": configs}
            try:
                admin.create_topics({topic: spec})
                log.info("created topic %s (%d partitions, replication factor %s)", topic, partitions,
                         "the broker's default" if settings.replication_factor == -1 else settings.replication_factor)
            except TopicAlreadyExistsError:
                pass
            except IncompatibleBrokerVersion as exc:
                msg = (f"cannot create topic {topic!r}: {exc}; brokers before Kafka 2.4 need an explicit "
                       "replication factor: set --replication-factor (RNNWATCH_REPLICATION_FACTOR)")
                raise ConfigError(msg) from exc
            except KafkaError as exc:
                msg = f"cannot create topic {topic!r}: {exc}; create it yourself or grant CreateTopics"
                raise BrokerError(msg) from exc
    finally:
        admin.close()
    deadline = time.monotonic() + 10
    while any(not consumer.partitions_for_topic(t) for t in missing) and time.monotonic() < deadline:
        time.sleep(0.1)


def _check_changelog_policy(settings: Settings, make_admin: Callable[[], Any]) -> None:
    topic = settings.changelog_topic
    policy = _cleanup_policy(topic, make_admin)
    if policy is None:
        log.info("the broker does not report cleanup.policy of changelog %s: compaction not verified", topic)
        return
    parts = {p.strip() for p in policy.split(",")}
    if "compact" not in parts:
        msg = (f"changelog {topic!r} has cleanup.policy={policy}: without compaction every restore reads the whole "
               "history, and snapshots of keys idle longer than retention.ms are deleted with their state. Fix: "
               f"kafka-configs.sh --bootstrap-server {settings.bootstrap_servers} --alter --entity-type topics "
               f"--entity-name {topic} --add-config cleanup.policy=compact (or set changelog_check=warn)")
        if settings.changelog_check == "refuse":
            raise ConfigError(msg)
        log.warning("%s", msg)
    elif "delete" in parts:
        log.warning("changelog %s has cleanup.policy=%s: snapshots of keys idle longer than retention.ms are "
                    "deleted, and those keys start cold when they return", topic, policy)


def _cleanup_policy(topic: str, make_admin: Callable[[], Any]) -> str | None:
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError

    admin = make_admin()
    try:
        # every config (not only the modified ones): a policy left at the broker's default must show too
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    except KafkaError as exc:
        log.warning("cannot read the configs of changelog %s (%s): compaction not verified", topic, exc)
        return None
    finally:
        admin.close()
    entry = configs.get("topic", {}).get(topic, {}).get("cleanup.policy")
    value = entry.get("value") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None

"""Start-up topic checks: the input must exist; output, dead-letter and changelog are created if missing.

The changelog gets the input's partition count (state for input partition p lives in changelog partition
p) and ``cleanup.policy=compact`` so a real Kafka keeps only each key's latest snapshot. Created topics get
``replication_factor`` replicas (default -1: the broker's ``default.replication.factor``, Kafka >= 2.4).

An existing changelog's ``cleanup.policy`` is read back (DescribeConfigs). Without ``compact``, restore time
grows with the changelog's whole history, and with ``delete`` the snapshots of keys idle longer than
``retention.ms`` disappear, taking their state with them: refused at start-up (``changelog_check=refuse``,
the default), or a warning (``warn``). A broker that does not report the policy (the embedded test broker,
Tansu, reports none for topics created without configs, and never compacts) is logged as "not verified".

Everything goes through an :class:`~rnnwatch.consumer.kafka.protocols.Admin` of the chosen transport.
"""

from __future__ import annotations

import logging
import time

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.kafka.protocols import Admin
from rnnwatch.consumer.settings import Settings

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings, admin: Admin) -> int:
    """Return the input topic's partition count; create the topics rnnwatch writes to when allowed."""
    partitions = _partitions(admin, settings.input_topic, settings.broker_wait_ms / 1000)
    if partitions is None:
        msg = (f"input topic {settings.input_topic!r} does not exist on {settings.bootstrap_servers}; "
               "create it (or check --input-topic)")
        raise ConfigError(msg)
    if settings.create_topics:
        _create_missing(settings, admin, partitions)
    changelog = _partitions(admin, settings.changelog_topic, 5.0)
    if changelog is not None and changelog < partitions:
        msg = (f"changelog {settings.changelog_topic!r} has {changelog} partitions but the input has {partitions}; "
               "state of input partition p lives in changelog partition p: add partitions to the changelog")
        raise ConfigError(msg)
    if changelog is not None and settings.changelog_check != "off":
        _check_changelog_policy(settings, admin)
    return partitions


def _partitions(admin: Admin, topic: str, wait_s: float) -> int | None:
    deadline = time.monotonic() + wait_s
    while True:
        count = admin.partition_count(topic)
        if count:
            return count
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _create_missing(settings: Settings, admin: Admin, partitions: int) -> None:
    wanted = {settings.output_topic: {}, settings.dead_letter_topic: {},
              settings.changelog_topic: {"cleanup.policy": "compact"}}
    missing = {t: configs for t, configs in wanted.items() if not admin.partition_count(t)}
    for topic, configs in missing.items():
        if admin.create_topic(topic, partitions, settings.replication_factor, configs):
            log.info("created topic %s (%d partitions, replication factor %s)", topic, partitions,
                     "the broker's default" if settings.replication_factor == -1 else settings.replication_factor)
    deadline = time.monotonic() + 10
    while any(not admin.partition_count(t) for t in missing) and time.monotonic() < deadline:
        time.sleep(0.1)


def _check_changelog_policy(settings: Settings, admin: Admin) -> None:
    topic = settings.changelog_topic
    policy = admin.cleanup_policy(topic)
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

"""Start-up topic checks on a real broker: an existing changelog that is not compacted is refused (or warned
about), topics rnnwatch creates get the configured replication factor and a compacted changelog.

Tansu reports a topic's configs as they were given at creation (it never compacts, whatever the policy says,
and reports nothing for a topic created without configs), so "not compacted" can be shown here; what a real
Kafka does with the policy afterwards only a real Kafka can prove.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from rnnwatch.consumer.demo.broker import EmbeddedBroker
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.kafka import Admin, KafkaConfig, open_transport
from rnnwatch.consumer.settings import Settings, load_settings
from rnnwatch.consumer.topics import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(broker: EmbeddedBroker) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    yield client
    client.close()


@pytest.fixture
def consumer(broker: EmbeddedBroker) -> Iterator[KafkaConsumer]:
    client = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    yield client
    client.close()


def _settings(broker: EmbeddedBroker, topic: str, ewma_path: Path, **extra: str) -> Settings:
    values = {"bootstrap_servers": broker.bootstrap_servers, "input_topic": topic,
              "auto_offset_reset": "earliest", "group_id": f"{topic}-g",
              "model": str(ewma_path), **extra}
    return load_settings(values, env={})


def _ensure(s: Settings) -> int:
    """ensure_topics through the admin client of the settings' transport."""
    admin: Admin = open_transport(KafkaConfig.from_settings(s)).admin()
    try:
        return ensure_topics(s, admin)
    finally:
        admin.close()


def _cleanup_policy(admin: KafkaAdminClient, topic: str) -> Any:
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    return configs["topic"][topic].get("cleanup.policy", {}).get("value")


def test_a_changelog_that_is_not_compacted_is_refused_with_the_fix(
        broker: EmbeddedBroker, topic_factory: Callable[..., str], admin: KafkaAdminClient,
        consumer: KafkaConsumer, ewma_path: Path, caplog: pytest.LogCaptureFixture, transport: str) -> None:
    topic = topic_factory(partitions=2)
    changelog = f"{topic}-g.state"
    admin.create_topics({changelog: {"num_partitions": 2, "replication_factor": 1,
                                     "configs": {"cleanup.policy": "delete"}}})
    with pytest.raises(ConfigError) as err:
        _ensure(_settings(broker, topic, ewma_path, transport=transport))
    text = str(err.value)
    assert changelog in text and "cleanup.policy=delete" in text
    assert "--add-config cleanup.policy=compact" in text and "changelog_check" in text
    with caplog.at_level(logging.WARNING, logger="rnnwatch.consumer.topics"):
        assert _ensure(_settings(broker, topic, ewma_path, changelog_check="warn", transport=transport)) == 2
    assert any("cleanup.policy=delete" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rnnwatch.consumer.topics"):
        assert _ensure(_settings(broker, topic, ewma_path, changelog_check="off", transport=transport)) == 2
    assert not any("cleanup.policy" in r.getMessage() for r in caplog.records)


def test_created_topics_get_a_compacted_changelog_and_pass_the_check(
        broker: EmbeddedBroker, topic_factory: Callable[..., str], admin: KafkaAdminClient,
        consumer: KafkaConsumer, ewma_path: Path, caplog: pytest.LogCaptureFixture, transport: str) -> None:
    topic = topic_factory(partitions=3)
    with caplog.at_level(logging.INFO, logger="rnnwatch.consumer.topics"):
        assert _ensure(_settings(broker, topic, ewma_path, transport=transport)) == 3  # replication factor -1
    assert _cleanup_policy(admin, f"{topic}-g.state") == "compact"
    assert len(consumer.partitions_for_topic(f"{topic}.anomalies") or ()) == 3
    assert not any(r.levelno >= logging.WARNING for r in caplog.records if r.name.startswith("rnnwatch"))


def test_a_broker_that_does_not_report_the_policy_is_not_refused(
        broker: EmbeddedBroker, topic_factory: Callable[..., str], consumer: KafkaConsumer, ewma_path: Path,
        caplog: pytest.LogCaptureFixture, transport: str) -> None:
    topic = topic_factory(partitions=1)
    changelog = f"{topic}-g.state"
    broker.create_topics([changelog])  # no configs given: Tansu then reports none
    with caplog.at_level(logging.INFO, logger="rnnwatch.consumer.topics"):
        assert _ensure(_settings(broker, topic, ewma_path, transport=transport)) == 1
    assert any("not verified" in r.getMessage() and changelog in r.getMessage() for r in caplog.records)

"""Topic creation requests (no broker: the replication factor the broker sees only shows in the request)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import IncompatibleBrokerVersion

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.kafka import KafkaConfig
from rnnwatch.consumer.kafka.python import PythonAdmin
from rnnwatch.consumer.settings import Settings, load_settings
from rnnwatch.consumer.topics import ensure_topics


class _Cluster:
    """A consumer's metadata view and an admin client over the same set of topics."""

    def __init__(self, topics: dict[str, int], *, old_broker: bool = False) -> None:
        self.topics = dict(topics)
        self.requests: list[dict[str, Any]] = []
        self.old_broker = old_broker

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.topics[topic])) if topic in self.topics else None

    def create_topics(self, spec: dict[str, dict[str, Any]]) -> None:
        self.requests.append(spec)
        (name, topic), = spec.items()
        if self.old_broker and topic["replication_factor"] == -1:
            msg = "Broker version (2, 3) requires explicit num_partitions and replication_factor"
            raise IncompatibleBrokerVersion(msg)
        self.topics[name] = topic["num_partitions"]

    def describe_configs(self, resources: Any, config_filter: str) -> dict[str, Any]:
        return {"topic": {r.name: {"cleanup.policy": {"value": "compact"}} for r in resources}}

    def close(self) -> None:
        pass


def _admin(settings: Settings, cluster: _Cluster) -> PythonAdmin:
    return PythonAdmin(KafkaConfig.from_settings(settings), metadata=cluster, client=cluster)


@pytest.mark.parametrize(("setting", "sent"), [(None, -1), ("3", 3)])
def test_created_topics_carry_the_configured_replication_factor(setting: str | None, sent: int) -> None:
    cluster = _Cluster({"ticks": 4})
    values = {"input_topic": "ticks", "group_id": "rnnwatch"} | ({"replication_factor": setting} if setting else {})
    s = load_settings(values, env={})
    ensure_topics(s, _admin(s, cluster))
    assert {name for spec in cluster.requests for name in spec} == {"ticks.anomalies", "ticks.dlq", "rnnwatch.state"}
    for spec in cluster.requests:
        (topic,) = spec.values()
        assert topic["replication_factor"] == sent and topic["num_partitions"] == 4
    assert cluster.requests[-1]["rnnwatch.state"]["configs"] == {"cleanup.policy": "compact"}


def test_a_broker_older_than_2_4_needs_an_explicit_factor_and_says_so() -> None:
    cluster = _Cluster({"ticks": 1}, old_broker=True)
    with pytest.raises(ConfigError, match="--replication-factor"):
        s = load_settings({"input_topic": "ticks", "group_id": "rnnwatch"}, env={})
        ensure_topics(s, _admin(s, cluster))

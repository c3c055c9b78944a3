"""Client configuration is built once (KafkaConfig) and reaches both transports the same way."""

from __future__ import annotations

import argparse
import socket

import pytest

from rnnwatch.consumer.errors import BrokerError, ConfigError
from rnnwatch.consumer.kafka import KafkaConfig, open_transport
from rnnwatch.consumer.kafka.config import PYTHON_PARTITION_FETCH_BYTES
from rnnwatch.consumer.settings import Settings, add_arguments, load_settings, parse_kafka_config


def _settings(*flags: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_settings(parser.parse_args(["--input-topic", "t", "--group-id", "g", *flags]), env={})


def test_bootstrap_servers_are_parsed_once_for_every_client() -> None:
    config = KafkaConfig.from_settings(_settings("--bootstrap-servers", " a:9092, b:9093 ,"))
    assert config.servers == ("a:9092", "b:9093")
    assert config.python_consumer(group=True)["bootstrap_servers"] == ["a:9092", "b:9093"]
    assert config.python_common("producer")["bootstrap_servers"] == ["a:9092", "b:9093"]
    assert config.rdkafka_consumer(group=True)["bootstrap.servers"] == "a:9092,b:9093"
    assert config.rdkafka_producer()["bootstrap.servers"] == "a:9092,b:9093"


def test_kafka_config_passes_through_to_both_transports_in_their_own_names() -> None:
    s = _settings("--kafka-config", "fetch.min.bytes=1024", "--kafka-config", "linger.ms=20",
                  "--kafka-config", "ssl.ca.location=/etc/ca.pem,receive.buffer.bytes=65536")
    config = KafkaConfig.from_settings(s)
    rd = config.rdkafka_consumer(group=True)
    assert (rd["fetch.min.bytes"], rd["ssl.ca.location"], rd["receive.buffer.bytes"]) == ("1024", "/etc/ca.pem",
                                                                                         "65536")
    assert config.rdkafka_producer()["linger.ms"] == "20"
    py = config.python_consumer(group=True)
    assert (py["fetch_min_bytes"], py["ssl_cafile"], py["receive_buffer_bytes"]) == (1024, "/etc/ca.pem", 65536)
    assert "linger_ms" not in py  # a producer setting goes to the producer only
    assert config.python_common("producer")["linger_ms"] == 20


def test_a_value_with_commas_continues_and_owned_or_unknown_names_are_refused() -> None:
    assert parse_kafka_config("debug=broker,topic,fetch.min.bytes=1") == (("debug", "broker,topic"),
                                                                         ("fetch.min.bytes", "1"))
    with pytest.raises(ConfigError, match="--group-id"):
        _settings("--kafka-config", "group.id=other")
    with pytest.raises(ConfigError, match="key=value"):
        _settings("--kafka-config", "nonsense")
    config = KafkaConfig.from_settings(_settings("--kafka-config", "fetch.mni.bytes=1"))
    with pytest.raises(ConfigError, match="fetch_mni_bytes"):
        config.python_consumer(group=True)
    typed = KafkaConfig.from_settings(_settings("--kafka-config", "fetch.min.bytes=lots"))
    with pytest.raises(ConfigError, match="takes a int"):
        typed.python_consumer(group=True)


def test_librdkafka_refuses_an_unknown_name_as_a_config_error() -> None:
    pytest.importorskip("confluent_kafka", reason="the [fast] extra is installed by make install-dev")
    transport = open_transport(KafkaConfig.from_settings(_settings("--transport", "confluent",
                                                                   "--kafka-config", "fetch.mni.bytes=1")))
    with pytest.raises(ConfigError, match=r"fetch\.mni\.bytes"):
        transport.producer()


def test_the_broker_wait_bounds_each_client_build() -> None:
    """kafka-python's own bootstrap timeout (30 s) used to apply whatever broker_wait_ms said."""
    config = KafkaConfig.from_settings(_settings("--broker-wait-ms", "1000"))
    for kind in ("consumer", "producer", "admin"):
        assert config.python_common(kind)["bootstrap_timeout_ms"] == 1000


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["kafka-python", "confluent"])
def test_an_unreachable_broker_fails_within_the_wait_and_says_so(transport: str) -> None:
    s = _settings("--bootstrap-servers", f"127.0.0.1:{_closed_port()}", "--broker-wait-ms", "1000",
                  "--transport", transport)
    with pytest.raises(BrokerError, match="after 1000 ms"):
        open_transport(KafkaConfig.from_settings(s)).source("t")


def test_the_librdkafka_prefetch_queue_is_bounded_and_librdkafka_accepts_it() -> None:
    """librdkafka's defaults queue up to 100,000 messages per partition (64 MiB of payload plus a few hundred
    bytes of bookkeeping each): one poll's records per partition and 16 MiB are enough to keep a poll fed."""
    import confluent_kafka

    config = KafkaConfig.from_settings(_settings("--max-poll-records", "5000"))
    for group in (True, False):
        rd = config.rdkafka_consumer(group=group)
        assert rd["queued.min.messages"] == 5000 and rd["queued.max.messages.kbytes"] == 16 * 1024
    confluent_kafka.Consumer({**config.rdkafka_consumer(group=True), "bootstrap.servers": "127.0.0.1:9"}).close()
    mine = KafkaConfig.from_settings(_settings("--kafka-config", "queued.max.messages.kbytes=65536"))
    assert mine.rdkafka_consumer(group=True)["queued.max.messages.kbytes"] == "65536"  # the user's word wins


def test_the_group_consumers_fetch_wait_is_rnnwatchs_own_short_default_on_both_transports() -> None:
    """Both clients default to a 500 ms fetch wait. A broker that holds every fetch for (a part of) it, as the
    embedded one does even when records are waiting, adds that to every record's latency; Kafka answers as soon
    as there is data, so the wait only bounds idle polling and a short one costs a few idle requests a second."""
    from kafka import KafkaConsumer

    default = Settings.__dataclass_fields__["fetch_max_wait_ms"].default
    assert default < KafkaConsumer.DEFAULT_CONFIG["fetch_max_wait_ms"]
    config = KafkaConfig.from_settings(_settings())
    assert config.python_consumer(group=True)["fetch_max_wait_ms"] == default
    assert config.rdkafka_consumer(group=True)["fetch.wait.max.ms"] == default
    flagged = KafkaConfig.from_settings(_settings("--fetch-max-wait-ms", "20"))
    assert flagged.python_consumer(group=True)["fetch_max_wait_ms"] == 20
    assert flagged.rdkafka_consumer(group=True)["fetch.wait.max.ms"] == 20
    passed = KafkaConfig.from_settings(_settings("--kafka-config", "fetch.wait.max.ms=7"))  # the pass-through wins
    assert passed.python_consumer(group=True)["fetch_max_wait_ms"] == 7
    assert passed.rdkafka_consumer(group=True)["fetch.wait.max.ms"] == "7"


def test_librdkafka_fetches_a_partition_in_short_runs_so_a_poll_spans_every_partition() -> None:
    """librdkafka queues each fetched partition's records as one run: with the 16 MiB per partition kafka-python
    uses, one partition's whole backlog comes first and a poll holds one partition (see kafka.carry)."""
    from rnnwatch.consumer.kafka.config import RDKAFKA_PARTITION_FETCH_BYTES

    default = Settings.__dataclass_fields__["max_partition_fetch_bytes"].default
    assert default > RDKAFKA_PARTITION_FETCH_BYTES
    config = KafkaConfig.from_settings(_settings())
    assert config.rdkafka_consumer(group=True)["max.partition.fetch.bytes"] == RDKAFKA_PARTITION_FETCH_BYTES
    small = KafkaConfig.from_settings(_settings("--max-partition-fetch-bytes", "65536"))  # a smaller one is kept
    assert small.rdkafka_consumer(group=True)["max.partition.fetch.bytes"] == 65536
    passed = KafkaConfig.from_settings(_settings("--kafka-config", "max.partition.fetch.bytes=8388608"))
    assert passed.rdkafka_consumer(group=True)["max.partition.fetch.bytes"] == "8388608"  # the user's word wins


def test_the_kafka_python_group_consumer_fetches_a_partition_in_short_runs() -> None:
    """A fetch of 16 MiB per partition is one partition's whole backlog: polls of one partition, and the next fetch
    goes out only once it is drained (the poll then waits for the broker). The changelog reader keeps the setting."""
    config = KafkaConfig.from_settings(_settings())
    default = config.settings.max_partition_fetch_bytes
    assert default > PYTHON_PARTITION_FETCH_BYTES
    assert config.python_consumer(group=True)["max_partition_fetch_bytes"] == PYTHON_PARTITION_FETCH_BYTES
    assert config.python_consumer(group=False)["max_partition_fetch_bytes"] == default
    small = KafkaConfig.from_settings(_settings("--max-partition-fetch-bytes", "65536"))  # a smaller one is kept
    assert small.python_consumer(group=True)["max_partition_fetch_bytes"] == 65536
    passed = KafkaConfig.from_settings(_settings("--kafka-config", "max.partition.fetch.bytes=8388608"))
    assert passed.python_consumer(group=True)["max_partition_fetch_bytes"] == 8388608  # the user's word wins

"""Client configuration, built once from the settings, for every client of either transport.

The bootstrap list and the pass-through pairs are parsed where the options are declared (``consumer.settings``,
once, at load); security settings are mapped to each client's own names by
``kafka.security`` (kafka-python ``sasl_plain_username``, librdkafka ``sasl.username``, ...); ``--kafka-config
key=value`` entries use librdkafka's names and pass through to both transports: to librdkafka as they are (it
rejects unknown names when the client is built), to kafka-python with dots turned into underscores (plus a few
aliases where the two differ), checked against the clients' known keys — an unknown key is refused at
start-up, never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.kafka.security import python_security, rdkafka_security
from rnnwatch.consumer.settings import Settings, parse_servers

__all__ = ["MAX_REQUEST_BYTES", "PYTHON_PARTITION_FETCH_BYTES", "RDKAFKA_PARTITION_FETCH_BYTES",
           "RDKAFKA_PREFETCH_KBYTES", "KafkaConfig"]

# The producers' request limit: no single record rnnwatch writes may be larger (checked at start-up by
# ``limits.check_record_sizes``); brokers have their own limit (message.max.bytes, 1 MiB by default).
MAX_REQUEST_BYTES = 8 * 1024 * 1024
RDKAFKA_PREFETCH_KBYTES = 16 * 1024  # librdkafka's local queue: payload bound (its default is 64 MiB)
# librdkafka's per-partition fetch (its initial size: it grows for a larger record): a partition's records reach
# the queue in runs of at most this, short enough for one poll to span every partition (see kafka.carry)
RDKAFKA_PARTITION_FETCH_BYTES = 512 * 1024
# kafka-python's group consumer, the same: a fetch of a partition's whole backlog (16 MiB) gives polls of one
# partition, and kafka-python sends the next fetch only once it is drained, so a poll then waits for the broker
PYTHON_PARTITION_FETCH_BYTES = 512 * 1024

# librdkafka name -> kafka-python name, where the plain dots-to-underscores rule does not give it
_PY_ALIASES = {
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "ssl.endpoint.identification.algorithm": "ssl_check_hostname",
    "fetch.wait.max.ms": "fetch_max_wait_ms",
    "queue.buffering.max.ms": "linger_ms",
}
@dataclass(frozen=True)
class KafkaConfig:
    """The clients' view of :class:`Settings`: no field of its own, so no option is declared twice.

    ``python_*``/``rdkafka_*`` give each client's config in its own names; the bootstrap list is parsed once.
    """

    settings: Settings

    @classmethod
    def from_settings(cls, s: Settings) -> KafkaConfig:
        if not parse_servers(s.bootstrap_servers):
            msg = "no bootstrap servers: pass --bootstrap-servers or set RNNWATCH_BOOTSTRAP_SERVERS"
            raise ConfigError(msg)
        return cls(s)

    @cached_property
    def servers(self) -> tuple[str, ...]:
        return parse_servers(self.settings.bootstrap_servers)

    @property
    def transport(self) -> str:
        return self.settings.transport

    @property
    def broker_wait_ms(self) -> int:
        return self.settings.broker_wait_ms

    @property
    def extra(self) -> tuple[tuple[str, str], ...]:
        return self.settings.kafka_config

    @property
    def heartbeat_interval_ms(self) -> int:
        s = self.settings
        return s.heartbeat_interval_ms or max(100, s.session_timeout_ms // 4)

    @cached_property
    def _token_provider(self) -> Any:
        """kafka-python's OAUTHBEARER token source, one for all clients (librdkafka fetches its own)."""
        s = self.settings
        if s.sasl_mechanism != "OAUTHBEARER":
            return None
        from rnnwatch.consumer.kafka.oauth import OidcTokenProvider

        return OidcTokenProvider(s.sasl_oauthbearer_token_endpoint_url, s.sasl_oauthbearer_client_id,
                                 s.sasl_oauthbearer_client_secret, s.sasl_oauthbearer_scope)

    @property
    def bootstrap(self) -> str:
        return ",".join(self.servers)

    # -- kafka-python ----------------------------------------------------------------------------------
    def python_common(self, kind: str) -> dict[str, Any]:
        """Config shared by kafka-python clients of ``kind`` (consumer, producer, admin).

        ``bootstrap_timeout_ms`` is the broker wait: a client built against a broker that is down gives up
        after it (kafka-python's own default is 30 s whatever ``broker_wait_ms`` says).
        """
        s = self.settings
        config: dict[str, Any] = {"bootstrap_servers": list(self.servers), "client_id": s.client_id,
                                  "bootstrap_timeout_ms": s.broker_wait_ms,
                                  **python_security(s, self._token_provider)}
        config.update(_python_extra(self.extra, kind))
        return config

    def python_consumer(self, *, group: bool) -> dict[str, Any]:
        """kafka-python consumer config; the group consumer fetches ``PYTHON_PARTITION_FETCH_BYTES`` per partition
        at most (see ``kafka.python``), the changelog reader what the settings say."""
        s = self.settings
        config: dict[str, Any] = {
            "enable_auto_commit": False, "auto_offset_reset": s.auto_offset_reset,
            "fetch_max_bytes": s.fetch_max_bytes, "max_partition_fetch_bytes": s.max_partition_fetch_bytes,
            "fetch_max_wait_ms": s.fetch_max_wait_ms, "max_poll_records": s.max_poll_records,
            "isolation_level": "read_committed"}
        if group:
            config.update(group_id=s.group_id, session_timeout_ms=s.session_timeout_ms,
                          max_partition_fetch_bytes=min(s.max_partition_fetch_bytes, PYTHON_PARTITION_FETCH_BYTES),
                          heartbeat_interval_ms=self.heartbeat_interval_ms,
                          max_poll_interval_ms=s.max_poll_interval_ms)
        else:  # assign() only (restore, metadata): reads from where it seeks, whatever the group's reset says
            config.update(fetch_max_wait_ms=50, auto_offset_reset="earliest")
        config.update(self.python_common("consumer"))
        return config

    # -- librdkafka ------------------------------------------------------------------------------------
    def rdkafka_common(self) -> dict[str, Any]:
        s = self.settings
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "client.id": s.client_id,
                                  **rdkafka_security(s)}
        return config

    def rdkafka_consumer(self, *, group: bool) -> dict[str, Any]:
        """librdkafka consumer config.

        ``fetch.queue.backoff.ms``: librdkafka's 1 s default stalls a consumer that drains the local queue fast.
        The prefetch queue is bounded to one poll's records per partition (``queued.min.messages``) and
        ``RDKAFKA_PREFETCH_KBYTES`` of payload: librdkafka's defaults (100,000 messages per partition, 64 MiB)
        hold ~100 MB of small records, as each queued message also costs a few hundred bytes of bookkeeping
        that the byte bound does not count (measured: 1,000,000 keys, peak RSS 631 -> 538 MiB). A partition is
        fetched ``RDKAFKA_PARTITION_FETCH_BYTES`` at a time at most (``max_partition_fetch_bytes`` if smaller), so
        the queue interleaves partitions and a poll spans them all (``kafka.carry``).
        """
        s = self.settings
        config: dict[str, Any] = {
            **self.rdkafka_common(), "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": s.auto_offset_reset, "isolation.level": "read_committed",
            "fetch.max.bytes": s.fetch_max_bytes,
            "max.partition.fetch.bytes": min(s.max_partition_fetch_bytes, RDKAFKA_PARTITION_FETCH_BYTES),
            "fetch.wait.max.ms": s.fetch_max_wait_ms, "fetch.queue.backoff.ms": 10, "enable.partition.eof": False,
            "queued.min.messages": s.max_poll_records, "queued.max.messages.kbytes": RDKAFKA_PREFETCH_KBYTES}
        if group:
            config.update({"group.id": s.group_id, "session.timeout.ms": s.session_timeout_ms,
                           "heartbeat.interval.ms": self.heartbeat_interval_ms,
                           "max.poll.interval.ms": s.max_poll_interval_ms})
        else:  # assign() only, never joins or commits; librdkafka still wants a group id
            config.update({"group.id": f"{s.group_id}.reader", "fetch.wait.max.ms": 50,
                           "auto.offset.reset": "earliest"})
        config.update(dict(self.extra))
        return config

    def rdkafka_producer(self, **defaults: Any) -> dict[str, Any]:
        return {**self.rdkafka_common(), **defaults, **dict(self.extra)}

    def rdkafka_admin(self) -> dict[str, Any]:
        return {**self.rdkafka_common(), **dict(self.extra)}


def _python_extra(extra: tuple[tuple[str, str], ...], kind: str) -> dict[str, Any]:
    """The pass-through entries a kafka-python client of ``kind`` knows, converted to its types."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    defaults = {"consumer": KafkaConsumer.DEFAULT_CONFIG, "producer": KafkaProducer.DEFAULT_CONFIG,
                "admin": KafkaAdminClient.DEFAULT_CONFIG}
    out: dict[str, Any] = {}
    for key, value in extra:
        name = _PY_ALIASES.get(key, key.replace(".", "_"))
        if not any(name in d for d in defaults.values()):
            msg = (f"kafka_config {key!r}: kafka-python has no setting {name!r} (nor does its producer or admin "
                   "client); check the name, or use --transport confluent for librdkafka-only settings")
            raise ConfigError(msg)
        if name in defaults[kind]:
            out[name] = _typed(key, value, defaults[kind][name], name)
    return out


def _typed(key: str, value: str, default: Any, name: str) -> Any:
    if name == "ssl_check_hostname":  # librdkafka: ssl.endpoint.identification.algorithm=https|none
        return value.lower() not in ("none", "false", "")
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        msg = f"kafka_config {key}={value!r}: kafka-python's {name} takes a {type(default).__name__}"
        raise ConfigError(msg) from None
    if default is None and value.lstrip("-").isdigit():  # unset by default (e.g. receive_buffer_bytes): a number
        return int(value)
    return value

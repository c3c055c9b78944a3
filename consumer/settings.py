"""Service settings: one frozen object, validated once at start-up.

Sources, highest precedence first: command-line flags, ``RNNWATCH_*`` environment variables, a TOML file
(``--config``), then the defaults below. Every option is declared once, as a field of :class:`Settings` (type,
default, help, range; see :mod:`rnnwatch.consumer.options`), which gives the argparse flags (help shows
``[env: RNNWATCH_…]``), the env names and the accepted TOML keys; structured values (``field_map``,
``kafka_config``, ``min_event_time``) are parsed here, once. Unknown TOML keys are rejected with the nearest
known name, as kafka-python rejects unknown config keys, because a typo silently ignored is a production
incident waiting to happen. The Kafka clients' configuration (:class:`~rnnwatch.consumer.kafka.KafkaConfig`)
is derived from these fields, not declared again.

Secrets (SASL password, OIDC client secret, TLS key password) never come from a flag — the command line is
visible to every user in ``ps`` — but, e.g. for the SASL password, from ``RNNWATCH_SASL_PASSWORD``, a file
named by ``--sasl-password-file`` / ``RNNWATCH_SASL_PASSWORD_FILE`` (a mounted Kubernetes or Docker secret),
or the TOML file. They are held as :class:`Secret`, whose repr is masked, and no error message quotes them.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.options import ENV_PREFIX, Option, Secret, convert, did_you_mean, options_of, setting
from rnnwatch.consumer.options import add_arguments as _add_arguments

if TYPE_CHECKING:
    from rnnwatch.consumer.scoring_config import ScoringOverrides

__all__ = ["OPTIONS", "Option", "Secret", "Settings", "add_arguments", "bundled_model_path", "load_settings",
           "parse_field_map", "parse_kafka_config", "parse_servers", "unknown_env_names"]

MAX_KEY_BYTES_LIMIT = 64 * 1024  # three copies of a key travel in each event; Kafka's default message limit is 1 MiB
_DAY_MS = 24 * 3600 * 1000
Pairs = tuple[tuple[str, str], ...]


def bundled_model_path() -> str:
    """The pre-trained price model shipped in the package (used by the demo and as the default)."""
    return str(Path(__file__).with_name("data") / "model.onnx")


def parse_field_map(text: str) -> Pairs:
    """``feature=field,...`` as (feature, field) pairs."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        feature, sep, name = part.partition("=")
        if not sep or not feature.strip() or not name.strip():
            msg = f"field_map entry {part!r} must look like feature=field"
            raise ConfigError(msg)
        mapping[feature.strip()] = name.strip()
    return tuple(mapping.items())


# Settings of their own: set them with their flags, not through the pass-through.
_OWNED = {"bootstrap.servers": "--bootstrap-servers", "group.id": "--group-id", "client.id": "--client-id",
          "enable.auto.commit": "(rnnwatch commits itself)", "enable.auto.offset.store": "(rnnwatch commits itself)",
          "isolation.level": "(always read_committed)"}


def parse_servers(text: str) -> tuple[str, ...]:
    """``host:port[,host:port]`` as a tuple, blanks dropped (the one place the list is parsed)."""
    return tuple(filter(None, (h.strip() for h in text.split(","))))


def parse_kafka_config(text: str) -> tuple[tuple[str, str], ...]:
    """``key=value,key=value``; an entry without ``=`` continues the previous value (``debug=broker,topic``)."""
    pairs: list[list[str]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if sep and key.strip():
            pairs.append([key.strip(), value.strip()])
        elif pairs:
            pairs[-1][1] += "," + part
        else:
            msg = f"kafka_config entry {part!r} must look like key=value (librdkafka names, e.g. fetch.wait.max.ms=10)"
            raise ConfigError(msg)
    for key, _ in pairs:
        if key in _OWNED:
            msg = f"kafka_config {key!r} is set by rnnwatch: use {_OWNED[key]}"
            raise ConfigError(msg)
    return tuple((k, v) for k, v in pairs)


def _kafka_pairs(text: str) -> Pairs:
    return parse_kafka_config(text)


def _event_time_ms(text: str) -> int:
    """ISO 8601 (``1990-01-01``, ``...T00:00:00Z``) or an epoch number, as ms since the epoch."""
    from rnnwatch.consumer.decoder import parse_event_time

    stripped = text.strip()
    try:
        try:
            return parse_event_time(float(stripped))
        except ValueError:
            return parse_event_time(stripped)
    except ValueError:
        msg = f"min_event_time {text!r} is neither an ISO 8601 time (1990-01-01T00:00:00Z) nor an epoch number"
        raise ValueError(msg) from None


_MS_1900 = -2_208_988_800_000  # 1900-01-01T00:00:00Z


@dataclass(frozen=True)
class Settings:
    """Validated settings; units are in the names. Build with :func:`load_settings`.

    Each field is one option (flag ``--name-with-dashes``, env ``RNNWATCH_NAME``, TOML key ``name``).
    """

    # Kafka
    bootstrap_servers: str = setting("localhost:9092", "Kafka bootstrap servers, host:port[,host:port].")
    input_topic: str = setting("", "Topic of input records (JSON ticks), keyed by series (e.g. symbol).")
    output_topic: str = setting("", "Topic for anomaly events [default: <input-topic>.anomalies].")
    dead_letter_topic: str = setting("", "Topic for records that cannot be used [default: <input-topic>.dlq].")
    group_id: str = setting("", "Consumer group id (required); also names the state changelog topic "
                            "<group-id>.state: give each deployment its own.")
    changelog_topic: str = setting("", "Per-key state changelog topic [default: <group-id>.state].")
    client_id: str = setting("rnnwatch", "Kafka client id.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = setting(
        "PLAINTEXT", "Kafka security protocol.")
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] = setting(
        "", "SASL mechanism (with security protocol SASL_SSL or SASL_PLAINTEXT).")
    sasl_username: str = setting("", "SASL user name (PLAIN, SCRAM).")
    sasl_password: Secret = setting(  # noqa: RUF009
        Secret(""), "SASL password (PLAIN, SCRAM): env or TOML only, or sasl_password_file.")
    sasl_oauthbearer_token_endpoint_url: str = setting("", "OAUTHBEARER: the OIDC token endpoint (client "
                                                       "credentials grant).")
    sasl_oauthbearer_client_id: str = setting("", "OAUTHBEARER: OIDC client id.")
    sasl_oauthbearer_client_secret: Secret = setting(  # noqa: RUF009
        Secret(""), "OAUTHBEARER: OIDC client secret: env or TOML only, or sasl_oauthbearer_client_secret_file.")
    sasl_oauthbearer_scope: str = setting("", "OAUTHBEARER: scope to request (optional).")
    sasl_kerberos_service_name: str = setting("kafka", "GSSAPI: the brokers' Kerberos service name.")
    sasl_kerberos_principal: str = setting("", "GSSAPI (confluent transport): client principal.")
    sasl_kerberos_keytab: str = setting("", "GSSAPI (confluent transport): client keytab file.")
    ssl_cafile: str = setting("", "TLS: CA bundle (PEM) the brokers' certificates are checked against.")
    ssl_certfile: str = setting("", "TLS client certificate (mTLS), PEM; needs ssl_keyfile.")
    ssl_keyfile: str = setting("", "TLS client private key (mTLS), PEM.")
    ssl_key_password: Secret = setting(  # noqa: RUF009
        Secret(""), "TLS: password of an encrypted ssl_keyfile: env or TOML only, or ssl_key_password_file.")
    ssl_check_hostname: bool = setting(True, "TLS: check that the broker's certificate names its host name.")
    session_timeout_ms: int = setting(10000, "Consumer group session timeout.", gt=0)
    max_poll_records: int = setting(20000, "Most records handled per poll (one micro-batch).", gt=0)
    fetch_max_bytes: int = setting(64 * 1024 * 1024, "Most bytes per fetch response.", gt=0)
    max_partition_fetch_bytes: int = setting(16 * 1024 * 1024, "Most bytes per partition per fetch.", gt=0)
    fetch_max_wait_ms: int = setting(
        50, "Longest the broker may hold a fetch that finds too little data (Kafka answers as soon as there is "
        "some, so this bounds idle polling; brokers that hold every fetch add it to each record's latency).",
        gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = setting(
        "latest", "Where a group without committed offsets starts: latest = records from now on (Kafka's own "
        "default); earliest = backfill the topic's whole retained history first (events for all of it).")
    broker_wait_ms: int = setting(30000, "How long start-up waits for the broker before failing.", gt=0)
    create_topics: bool = setting(True, "Create missing output/dead-letter/changelog topics at start-up.")
    transport: Literal["kafka-python", "confluent"] = setting(
        "kafka-python", "Kafka client library: kafka-python, or confluent (librdkafka, faster; pip install "
        "'rnnwatch[fast]').")
    kafka_config: Pairs = setting(  # noqa: RUF009 - setting() returns a dataclasses.field (immutable default)
        (), "Extra client settings, librdkafka names, 'key=value' (repeatable, or comma-separated); passed to "
        "either transport (kafka-python: dots become underscores).", repeatable=True, parse=_kafka_pairs)
    # Model and messages
    model: str = setting("", "Step model (.onnx) [default: the bundled price model].")
    key_field: str = setting("symbol", "JSON field holding the series key when the Kafka key is empty.")
    time_field: str = setting("ts", "JSON field with the event time (ISO 8601 or epoch); '' = Kafka timestamp.")
    timestamp_unit: Literal["auto", "s", "ms", "us", "ns"] = setting("auto", "Unit of numeric event times.")
    field_map: Pairs = setting(  # noqa: RUF009
        (), "Message field per model feature, 'feature=field,...' [default: same names].", parse=parse_field_map)
    max_message_bytes: int = setting(1024 * 1024, "Larger records are dead-lettered as 'oversized'.", gt=0)
    max_future_ms: int = setting(_DAY_MS, "Event times further ahead of the wall clock are dead-lettered.", ge=0)
    min_event_time: int = setting(_MS_1900, "Event times before this (ISO 8601 or epoch) are dead-lettered "
                                  "[default: 1900-01-01T00:00:00Z]; held as ms since the epoch.",
                                  parse=_event_time_ms)
    # Scoring
    threshold: float | None = setting(None, "Anomaly score threshold in (0,1) [default: the model's calibrated "
                                      "one].")
    warmup_steps: int | None = setting(None, "Steps a key must see before it can raise events [default: model].")
    halflife_steps: float | None = setting(None, "Half-life of the per-key residual normaliser [default: model].")
    scorer: str = setting("", "Scorer spec, e.g. 'novelty+likelihood' (see README) [default: the model's].")
    scorer_options: str = setting("", 'Scorer options as JSON, e.g. {"likelihood": {"long_halflife": 500}}.')
    threshold_surprise: float | None = setting(
        None, "Alarm when -log10(tail) >= this (6 = 1e-6) [default: the model's calibrated one].")
    incident_gap_steps: int | None = setting(
        None, "An alarm at most this many steps after the key's previous one continues its incident (one event "
        "per incident; 0: no grouping) [default: 4].")
    incident_updates: int | None = setting(None, "Update events an incident may emit for a new peak [default: 0].")
    gap_ms: int = setting(0, "Event-time gap that counts as a break in a key's series (0 = off).", ge=0)
    gap_policy: Literal["continue", "reset"] = setting("continue", "What a gap does to the key's state.")
    # State and delivery
    key_ttl_ms: int = setting(_DAY_MS, "Keys idle this long (wall clock) leave memory; 0 = never.", ge=0)
    checkpoint_interval_ms: int = setting(5000, "Checkpoint (events, snapshots, offsets) at least this often.", gt=0)
    checkpoint_records: int = setting(200000, "... or after this many records, whichever comes first.", gt=0)
    shutdown_grace_ms: int = setting(30000, "On SIGTERM: time to finish the batch, checkpoint and leave.", gt=0)
    inference_threads: int = setting(1, "onnxruntime intra-op threads (1 leaves a core for Kafka I/O).", gt=0)
    # Durability limits (restore, retention, group liveness)
    state_retention_ms: int = setting(
        7 * _DAY_MS, "Keys idle this long (wall clock) are forgotten: state deleted, a returning key starts cold; "
        "0 = never.", ge=0)
    restore_warn_ms: int = setting(60000, "Log an error when restoring a partition takes longer (it goes on).",
                                   gt=0)
    max_poll_interval_ms: int = setting(
        120000, "Longest pause between polls before the member leaves the group; also the rebalance timeout.",
        gt=0)
    heartbeat_interval_ms: int = setting(0, "Group heartbeat interval; 0 = a quarter of the session timeout.",
                                         ge=0)
    # Operations
    metrics_host: str = setting("127.0.0.1", "Address of the metrics/health HTTP server; 0.0.0.0 to be scraped "
                                "from other hosts (the container image sets it).")
    metrics_port: int = setting(9108, "Port of /metrics, /healthz, /readyz (0 = pick a free port).", ge=0)
    liveness_timeout_ms: int = setting(60000, "/healthz fails when the poll loop has not run for this long.", gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting("INFO", "Log level.")
    log_format: Literal["text", "json"] = setting("text", "Log line format.")
    until_caught_up: bool = setting(
        False, "Exit once the whole input topic is processed to its end (by this member or the group); print a "
        "JSON summary.", flag_only=True)
    # Limits and security (sizes in bytes: a key is copied into every event, dead letter and snapshot)
    max_key_bytes: int = setting(
        4096, "Records with a longer key (Kafka key or key field) are dead-lettered as 'oversized_key'; at most "
        "65536 (each event carries its key three times and must fit a Kafka message).", gt=0,
        le=MAX_KEY_BYTES_LIMIT)
    max_header_bytes: int = setting(64 * 1024, "Records whose headers (names + values) are larger are "
                                    "dead-lettered as 'oversized_headers'.", gt=0)
    max_in_flight_bytes: int = setting(
        32 * 1024 * 1024, "Pause consumption while records sent but not yet acknowledged by the broker exceed "
        "this; resume below half of it.", gt=0)
    replication_factor: int = setting(-1, "Replication factor of topics rnnwatch creates; -1 = the broker's "
                                      "default.replication.factor (Kafka >= 2.4).")
    changelog_check: Literal["refuse", "warn", "off"] = setting(
        "refuse", "When the broker reports the changelog's cleanup.policy without 'compact': refuse to start, "
        "warn, or do not check.")
    metrics_request_timeout_ms: int = setting(10000, "Ops-server connections that have not sent their request "
                                              "and read the response within this are closed.", gt=0)
    metrics_max_connections: int = setting(64, "Open ops-server connections at most; more are answered 503.", gt=0)

    def scoring_overrides(self) -> ScoringOverrides:
        """The scorer choice of these settings, in the form `score` and `evaluate` build from their flags."""
        from rnnwatch.consumer.scoring_config import ScoringOverrides, json_object

        options = json_object(self.scorer_options, "scorer_options")
        return ScoringOverrides(scorer=self.scorer or None, scorer_options=options, threshold=self.threshold,
                                threshold_surprise=self.threshold_surprise, warmup_steps=self.warmup_steps,
                                halflife_steps=self.halflife_steps, incident_gap_steps=self.incident_gap_steps,
                                incident_updates=self.incident_updates)

    def fields_for(self, model_features: tuple[str, ...]) -> tuple[str, ...]:
        """Message field read for each model feature, in model order."""
        mapping = dict(self.field_map)
        return tuple(mapping.get(name, name) for name in model_features)


OPTIONS: tuple[Option, ...] = options_of(Settings)
_BY_NAME = {o.name: o for o in OPTIONS}
# RNNWATCH_* variables that are not settings: read elsewhere, or injected by Kubernetes for a Service named
# "rnnwatch" (service links: RNNWATCH_PORT, RNNWATCH_SERVICE_HOST, ...).
_OTHER_ENV = re.compile(r"RNNWATCH_(CONFIG|CRASH_POINT|CRASH_AFTER|SERVICE_HOST|SERVICE_PORT.*|PORT(_.*)?)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option (``--config`` too); defaults stay unset so precedence sees what was passed."""
    _add_arguments(parser, OPTIONS)


def unknown_env_names(env: Mapping[str, str]) -> list[str]:
    """Warnings for ``RNNWATCH_*`` variables that are no setting (a typo would otherwise be ignored)."""
    known = {o.env for o in OPTIONS if not o.spec.flag_only}
    return [f"environment variable {name} is not a setting and is ignored{did_you_mean(name, known)}"
            for name in sorted(env) if name.startswith(ENV_PREFIX) and name not in known
            and not _OTHER_ENV.fullmatch(name)]


def _validate_durability(s: Settings) -> None:
    if s.state_retention_ms and s.key_ttl_ms and s.state_retention_ms < s.key_ttl_ms:
        msg = (f"state_retention_ms ({s.state_retention_ms}) must be >= key_ttl_ms ({s.key_ttl_ms}): a key is "
               "evicted from memory before it is forgotten")
        raise ConfigError(msg)
    if s.heartbeat_interval_ms and s.heartbeat_interval_ms * 3 > s.session_timeout_ms:
        msg = (f"heartbeat_interval_ms ({s.heartbeat_interval_ms}) must be at most a third of session_timeout_ms "
               f"({s.session_timeout_ms}), or 0 for a quarter")
        raise ConfigError(msg)
    if s.max_poll_interval_ms < s.session_timeout_ms:
        msg = f"max_poll_interval_ms ({s.max_poll_interval_ms}) must be >= session_timeout_ms ({s.session_timeout_ms})"
        raise ConfigError(msg)


def load_settings(
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge flags > env > TOML > defaults, convert and validate; raise ConfigError naming the source.

    ``args`` is parsed flags, or a mapping of option names to values — typed (``{"metrics_port": 0}``) or
    text as on the command line; an unknown name is refused with the nearest known one.
    """
    if isinstance(args, argparse.Namespace):
        flags = dict(vars(args))
    else:
        flags = dict(args or {})
        _refuse_unknown((k for k in flags if k != "config"), "setting")
    env = os.environ if env is None else env
    config_path = flags.get("config") or env.get(ENV_PREFIX + "CONFIG")
    toml_values = _read_toml(config_path) if config_path else {}
    values = {opt.name: _resolve(opt, flags, env, toml_values) for opt in OPTIONS}
    _derive_defaults(values)
    _load_secrets(values)
    settings = Settings(**{f.name: values[f.name] for f in fields(Settings)})
    _validate(settings)
    return settings


def _refuse_unknown(names: Any, what: str, where: str = "") -> None:
    known = [o.name for o in OPTIONS if what == "setting" or not o.spec.flag_only]
    for name in names:
        if name not in _BY_NAME or (what != "setting" and _BY_NAME[name].spec.flag_only):
            msg = f"{where}unknown {what} {name!r}{did_you_mean(name, known)}"
            if not did_you_mean(name, known):
                msg += f"; known: {', '.join(sorted(known))}"
            raise ConfigError(msg)


def _resolve(opt: Option, flags: Mapping[str, Any], env: Mapping[str, str], toml_values: Mapping[str, Any]) -> Any:
    if flags.get(opt.name) is not None:
        return convert(opt, flags[opt.name], f"flag {opt.flag}")  # a repeated flag's list is joined by convert
    if not opt.spec.flag_only and opt.env in env:
        return convert(opt, env[opt.env], f"environment variable {opt.env}")
    if opt.name in toml_values:
        return convert(opt, toml_values[opt.name], f"TOML key {opt.name!r}")
    return opt.default


def _read_toml(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        msg = f"config file {p} does not exist"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"config file {p} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    data = {k.replace("-", "_"): v for k, v in data.items()}
    _refuse_unknown(sorted(data), "key", f"config file {p}: ")
    return data


def _derive_defaults(values: dict[str, Any]) -> None:
    topic = values["input_topic"]
    if not values["output_topic"] and topic:
        values["output_topic"] = f"{topic}.anomalies"
    if not values["dead_letter_topic"] and topic:
        values["dead_letter_topic"] = f"{topic}.dlq"
    if not values["changelog_topic"] and values["group_id"]:
        values["changelog_topic"] = f"{values['group_id']}.state"
    if not values["model"]:
        values["model"] = bundled_model_path()


def _load_secrets(values: dict[str, Any]) -> None:
    """Each secret option from its value or from ``<name>_file``, never both; wrapped as a Secret."""
    for opt in OPTIONS:
        if not opt.file_of:
            continue
        secret, path, value = _BY_NAME[opt.file_of], values.pop(opt.name), values[opt.file_of]
        text = value.reveal() if isinstance(value, Secret) else value
        if path and text:
            msg = (f"both {secret.name} and {opt.name} are set ({secret.env} / {opt.env}, or the TOML keys): "
                   "set only one")
            raise ConfigError(msg)
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:  # the message must not quote the file's bytes
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                msg = f"{opt.name}: cannot read {path} ({why})"
                raise ConfigError(msg) from None
            text = text.removesuffix("\n").removesuffix("\r")
        values[secret.name] = Secret(text)


def _validate(s: Settings) -> None:
    if not s.input_topic:
        msg = f"no input topic: pass --input-topic or set {ENV_PREFIX}INPUT_TOPIC"
        raise ConfigError(msg)
    if not s.group_id:
        msg = (f"no group id: pass --group-id or set {ENV_PREFIX}GROUP_ID; it names the consumer group and the state "
               "changelog (<group-id>.state), so give each deployment its own (two sharing one would split the "
               "partitions and overwrite each other's key state)")
        raise ConfigError(msg)
    if len({s.input_topic, s.output_topic, s.dead_letter_topic, s.changelog_topic}) != 4:
        msg = "input, output, dead-letter and changelog topics must all differ"
        raise ConfigError(msg)
    _validate_durability(s)
    if s.metrics_port > 65535:
        msg = f"metrics_port must be a TCP port (0-65535; 0 picks a free one), got {s.metrics_port}"
        raise ConfigError(msg)
    s.scoring_overrides()  # ConfigError naming a bad scorer, option or threshold, before anything starts
    if not parse_servers(s.bootstrap_servers):
        msg = f"no bootstrap servers: pass --bootstrap-servers or set {ENV_PREFIX}BOOTSTRAP_SERVERS"
        raise ConfigError(msg)
    from rnnwatch.consumer.kafka.security import check_security

    check_security(s)
    if s.replication_factor == 0 or s.replication_factor < -1:
        msg = f"replication_factor must be -1 (the broker's default) or >= 1, got {s.replication_factor}"
        raise ConfigError(msg)

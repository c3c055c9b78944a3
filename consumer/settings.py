"""Service settings: one frozen object, validated once at start-up.

Sources, highest precedence first: command-line flags, ``RNNWATCH_*`` environment variables, a TOML file
(``--config``), then the defaults below. Every option is declared once in :data:`OPTIONS`, which builds the
argparse flags (help shows ``[env: RNNWATCH_…]``), the env names, and the accepted TOML keys; unknown TOML
keys are rejected, as kafka-python rejects unknown config keys, because a typo silently ignored is a
production incident waiting to happen.

Secrets (the SASL password) never come from a flag — the command line is visible to every user in ``ps`` —
but from ``RNNWATCH_SASL_PASSWORD``, a file named by ``--sasl-password-file`` /
``RNNWATCH_SASL_PASSWORD_FILE`` (a mounted Kubernetes or Docker secret), or the TOML file. They are held
as :class:`Secret`, whose repr is masked, and no error message quotes them.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnwatch.consumer.errors import ConfigError

if TYPE_CHECKING:
    from rnnwatch.consumer.scoring_config import ScoringOverrides

__all__ = ["OPTIONS", "Option", "Secret", "Settings", "add_arguments", "bundled_model_path", "load_settings"]

ENV_PREFIX = "RNNWATCH_"


def bundled_model_path() -> str:
    """The pre-trained price model shipped in the package (used by the demo and as the default)."""
    return str(Path(__file__).with_name("data") / "model.onnx")


@dataclass(frozen=True)
class Option:
    name: str
    kind: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    flag_only: bool = False
    secret: bool = False  # no flag (ps shows it); env, TOML or <name>_file only
    repeatable: bool = False  # the flag may be given several times; the values are joined with ","

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


class Secret:
    """A value that does not show itself: repr and str are masked, so settings, logs and errors cannot leak it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    msg = f"expected a boolean (true/false), got {text!r}"
    raise ValueError(msg)


def _opt_float(text: str) -> float | None:
    return None if text.strip().lower() in {"", "none", "model"} else float(text)


def _opt_int(text: str) -> int | None:
    return None if text.strip().lower() in {"", "none", "model"} else int(text)


OPTIONS: tuple[Option, ...] = (
    # Kafka
    Option("bootstrap_servers", str, "localhost:9092", "Kafka bootstrap servers, host:port[,host:port]."),
    Option("input_topic", str, "", "Topic of input records (JSON ticks), keyed by series (e.g. symbol)."),
    Option("output_topic", str, "", "Topic for anomaly events [default: <input-topic>.anomalies]."),
    Option("dead_letter_topic", str, "", "Topic for records that cannot be used [default: <input-topic>.dlq]."),
    Option("group_id", str, "rnnwatch", "Consumer group id; also names the state changelog topic."),
    Option("changelog_topic", str, "", "Per-key state changelog topic [default: <group-id>.state]."),
    Option("client_id", str, "rnnwatch", "Kafka client id."),
    Option("security_protocol", str, "PLAINTEXT", "Kafka security protocol.",
           choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
    Option("sasl_mechanism", str, "", "SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."),
    Option("sasl_username", str, "", "SASL user name."),
    Option("sasl_password", str, "", "SASL password: env or TOML only, or sasl_password_file.", secret=True),
    Option("ssl_cafile", str, "", "CA bundle for SSL."),
    Option("session_timeout_ms", int, 10000, "Consumer group session timeout."),
    Option("max_poll_records", int, 20000, "Most records handled per poll (one micro-batch)."),
    Option("fetch_max_bytes", int, 64 * 1024 * 1024, "Most bytes per fetch response."),
    Option("max_partition_fetch_bytes", int, 16 * 1024 * 1024, "Most bytes per partition per fetch."),
    Option("auto_offset_reset", str, "earliest", "Where a new group starts.", choices=("earliest", "latest")),
    Option("broker_wait_ms", int, 30000, "How long start-up waits for the broker before failing."),
    Option("create_topics", _bool, True, "Create missing output/dead-letter/changelog topics at start-up."),
    Option("transport", str, "kafka-python", "Kafka client library: kafka-python, or confluent (librdkafka, "
           "faster; pip install 'rnnwatch[fast]').", choices=("kafka-python", "confluent")),
    Option("kafka_config", str, "", "Extra client settings, librdkafka names, 'key=value' (repeatable, or "
           "comma-separated); passed to either transport (kafka-python: dots become underscores).",
           repeatable=True),
    # Model and messages
    Option("model", str, "", "Step model (.onnx) [default: the bundled price model]."),
    Option("key_field", str, "symbol", "JSON field holding the series key when the Kafka key is empty."),
    Option("time_field", str, "ts", "JSON field with the event time (ISO 8601 or epoch); '' = Kafka timestamp."),
    Option("timestamp_unit", str, "auto", "Unit of numeric event times.", choices=("auto", "s", "ms", "us", "ns")),
    Option("field_map", str, "", "Message field per model feature, 'feature=field,...' [default: same names]."),
    Option("max_message_bytes", int, 1024 * 1024, "Larger records are dead-lettered as 'oversized'."),
    Option("max_future_ms", int, 24 * 3600 * 1000, "Event times further ahead of the wall clock are dead-lettered."),
    Option("min_event_time", str, "1900-01-01T00:00:00Z", "Event times before this are dead-lettered."),
    # Scoring
    Option("threshold", _opt_float, None, "Anomaly score threshold in (0,1) [default: the model's calibrated one]."),
    Option("warmup_steps", _opt_int, None, "Steps a key must see before it can raise events [default: model]."),
    Option("halflife_steps", _opt_float, None, "Half-life of the per-key residual normaliser [default: model]."),
    Option("scorer", str, "", "Scorer spec, e.g. 'novelty+likelihood' (see README) [default: the model's]."),
    Option("scorer_options", str, "", 'Scorer options as JSON, e.g. {"likelihood": {"long_halflife": 500}}.'),
    Option("threshold_surprise", _opt_float, None,
           "Alarm when -log10(tail) >= this (6 = 1e-6) [default: the model's calibrated one]."),
    Option("incident_gap_steps", _opt_int, None, "An alarm at most this many steps after the key's previous "
           "one continues its incident (one event per incident; 0: no grouping) [default: 4]."),
    Option("incident_updates", _opt_int, None, "Update events an incident may emit for a new peak [default: 0]."),
    Option("gap_ms", int, 0, "Event-time gap that counts as a break in a key's series (0 = off)."),
    Option("gap_policy", str, "continue", "What a gap does to the key's state.", choices=("continue", "reset")),
    # State and delivery
    Option("key_ttl_ms", int, 24 * 3600 * 1000, "Keys idle this long (wall clock) leave memory; 0 = never."),
    Option("checkpoint_interval_ms", int, 5000, "Checkpoint (events, snapshots, offsets) at least this often."),
    Option("checkpoint_records", int, 200000, "... or after this many records, whichever comes first."),
    Option("shutdown_grace_ms", int, 30000, "On SIGTERM: time to finish the batch, checkpoint and leave."),
    Option("inference_threads", int, 1, "onnxruntime intra-op threads (1 leaves a core for Kafka I/O)."),
    # Durability limits (restore, retention, group liveness)
    Option("state_retention_ms", int, 7 * 24 * 3600 * 1000,
           "Keys idle this long (wall clock) are forgotten: state deleted, a returning key starts cold; 0 = never."),
    Option("restore_warn_ms", int, 60000, "Log an error when restoring a partition takes longer (it goes on)."),
    Option("max_poll_interval_ms", int, 120000,
           "Longest pause between polls before the member leaves the group; also the rebalance timeout."),
    Option("heartbeat_interval_ms", int, 0, "Group heartbeat interval; 0 = a quarter of the session timeout."),
    # Operations
    Option("metrics_host", str, "127.0.0.1", "Address of the metrics/health HTTP server; 0.0.0.0 to be scraped "
           "from other hosts (the container image sets it)."),
    Option("metrics_port", int, 9108, "Port of /metrics, /healthz, /readyz (0 = pick a free port)."),
    Option("liveness_timeout_ms", int, 60000, "/healthz fails when the poll loop has not run for this long."),
    Option("log_level", str, "INFO", "Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Option("log_format", str, "text", "Log line format.", choices=("text", "json")),
    Option("until_caught_up", _bool, False,
           "Exit once the whole input topic is processed to its end (by this member or the group); print a JSON "
           "summary.",
           flag_only=True),
    # Limits and security (sizes in bytes: a key is copied into every event, dead letter and snapshot)
    Option("max_key_bytes", int, 4096, "Records with a longer key (Kafka key or key field) are dead-lettered as "
           "'oversized_key'; at most 65536."),
    Option("max_header_bytes", int, 64 * 1024, "Records whose headers (names + values) are larger are dead-lettered "
           "as 'oversized_headers'."),
    Option("max_in_flight_bytes", int, 32 * 1024 * 1024, "Pause consumption while records sent but not yet "
           "acknowledged by the broker exceed this; resume below half of it."),
    Option("replication_factor", int, -1, "Replication factor of topics rnnwatch creates; -1 = the broker's "
           "default.replication.factor (Kafka >= 2.4)."),
    Option("changelog_check", str, "refuse", "When the broker reports the changelog's cleanup.policy without "
           "'compact': refuse to start, warn, or do not check.", choices=("refuse", "warn", "off")),
    Option("metrics_request_timeout_ms", int, 10000, "Ops-server connections that have not sent their request and "
           "read the response within this are closed."),
    Option("metrics_max_connections", int, 64, "Open ops-server connections at most; more are answered 503."),
    Option("sasl_password_file", str, "", "File holding the SASL password (a mounted secret; one trailing newline "
           "is ignored)."),
)
MAX_KEY_BYTES_LIMIT = 64 * 1024  # three copies of a key travel in each event; Kafka's default message limit is 1 MiB


@dataclass(frozen=True)
class Settings:
    """Validated settings; units are in the names. Build with :func:`load_settings`."""

    bootstrap_servers: str
    input_topic: str
    output_topic: str
    dead_letter_topic: str
    group_id: str
    changelog_topic: str
    client_id: str
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: Secret
    ssl_cafile: str
    session_timeout_ms: int
    max_poll_records: int
    fetch_max_bytes: int
    max_partition_fetch_bytes: int
    auto_offset_reset: str
    broker_wait_ms: int
    transport: str
    kafka_config: str
    create_topics: bool
    model: str
    key_field: str
    time_field: str
    timestamp_unit: str
    field_map: str
    max_message_bytes: int
    max_future_ms: int
    min_event_time: str
    threshold: float | None
    warmup_steps: int | None
    halflife_steps: float | None
    scorer: str
    scorer_options: str
    threshold_surprise: float | None
    incident_gap_steps: int | None
    incident_updates: int | None
    gap_ms: int
    gap_policy: str
    key_ttl_ms: int
    checkpoint_interval_ms: int
    checkpoint_records: int
    shutdown_grace_ms: int
    inference_threads: int
    state_retention_ms: int
    restore_warn_ms: int
    max_poll_interval_ms: int
    heartbeat_interval_ms: int
    metrics_host: str
    metrics_port: int
    liveness_timeout_ms: int
    log_level: str
    log_format: str
    until_caught_up: bool
    max_key_bytes: int
    max_header_bytes: int
    max_in_flight_bytes: int
    replication_factor: int
    changelog_check: str
    metrics_request_timeout_ms: int
    metrics_max_connections: int
    sasl_password_file: str

    def scoring_overrides(self) -> ScoringOverrides:
        """The scorer choice of these settings, in the form `score` and `evaluate` build from their flags."""
        import json

        from rnnwatch.consumer.scoring_config import ScoringOverrides

        try:
            options = json.loads(self.scorer_options) if self.scorer_options.strip() else {}
        except json.JSONDecodeError as exc:
            msg = f"scorer_options is not valid JSON: {exc}"
            raise ConfigError(msg) from exc
        return ScoringOverrides(scorer=self.scorer or None, scorer_options=options, threshold=self.threshold,
                                threshold_surprise=self.threshold_surprise, warmup_steps=self.warmup_steps,
                                halflife_steps=self.halflife_steps, incident_gap_steps=self.incident_gap_steps,
                                incident_updates=self.incident_updates)

    def fields_for(self, model_features: tuple[str, ...]) -> tuple[str, ...]:
        """Message field read for each model feature, in model order."""
        mapping = parse_field_map(self.field_map)
        return tuple(mapping.get(name, name) for name in model_features)


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


def parse_field_map(text: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        feature, sep, field = part.partition("=")
        if not sep or not feature.strip() or not field.strip():
            msg = f"field_map entry {part!r} must look like feature=field"
            raise ConfigError(msg)
        mapping[feature.strip()] = field.strip()
    return mapping


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option; defaults stay unset so precedence can see what the user passed."""
    parser.add_argument("--config", metavar="TOML", help=f"TOML settings file [env: {ENV_PREFIX}CONFIG]")
    for opt in OPTIONS:
        if opt.secret:
            parser.add_argument(opt.flag, dest=f"_refused_{opt.name}", nargs="?", action=_RefuseSecretFlag,
                                help=argparse.SUPPRESS)
            continue
        env = "" if opt.flag_only else f" [env: {opt.env}]"
        default = "" if opt.default in ("", None) else f" (default: {opt.default})"
        if opt.kind is _bool and opt.flag_only:
            parser.add_argument(opt.flag, action="store_true", default=None, help=opt.help)
            continue
        metavar = None if opt.choices else "BOOL" if opt.kind is _bool else opt.name.split("_")[-1].upper()
        if opt.repeatable:
            parser.add_argument(opt.flag, dest=opt.name, default=None, action="append", metavar="KEY=VALUE",
                                help=f"{opt.help}{env}")
            continue
        parser.add_argument(opt.flag, dest=opt.name, default=None, choices=opt.choices, metavar=metavar,
                            help=f"{opt.help}{default}{env}")


class _RefuseSecretFlag(argparse.Action):
    """A secret on the command line is readable by every local user (ps, /proc/<pid>/cmdline): refuse it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        env = ENV_PREFIX + self.dest.removeprefix("_refused_").upper()
        parser.error(f"{option_string} is not accepted: `ps` would show the secret to every user of this host; "
                     f"set {env}_FILE (or --{self.dest.removeprefix('_refused_').replace('_', '-')}-file) to a file "
                     f"holding it, or {env}")


def load_settings(
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge flags > env > TOML > defaults, convert and validate; raise ConfigError naming the source."""
    flags = dict(vars(args) if isinstance(args, argparse.Namespace) else (args or {}))
    env = os.environ if env is None else env
    config_path = flags.get("config") or env.get(ENV_PREFIX + "CONFIG")
    toml_values = _read_toml(config_path) if config_path else {}
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        values[opt.name] = _resolve(opt, flags, env, toml_values)
    _derive_defaults(values)
    _load_secrets(values)
    settings = Settings(**{f.name: values[f.name] for f in fields(Settings)})
    _validate(settings)
    return settings


def _resolve(opt: Option, flags: Mapping[str, Any], env: Mapping[str, str], toml_values: Mapping[str, Any]) -> Any:
    if flags.get(opt.name) is not None:
        raw = flags[opt.name]
        if opt.repeatable and isinstance(raw, list):
            raw = ",".join(raw)
        return _convert(opt, raw, f"flag {opt.flag}")
    if not opt.flag_only and opt.env in env:
        return _convert(opt, env[opt.env], f"environment variable {opt.env}")
    if opt.name in toml_values:
        return _convert(opt, toml_values[opt.name], f"TOML key {opt.name!r}")
    return opt.default


def _convert(opt: Option, raw: Any, source: str) -> Any:
    if isinstance(raw, bool) and opt.kind is _bool:
        return raw
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and opt.kind in (int, float, _opt_float, _opt_int):
        raw = str(raw)
    if not isinstance(raw, str):
        got = "another type" if opt.secret else repr(raw)
        msg = f"{source}: expected a {getattr(opt.kind, '__name__', 'value')}, got {got}"
        raise ConfigError(msg)
    try:
        value = opt.kind(raw)
    except ValueError as exc:
        msg = f"{source}: {exc}"
        raise ConfigError(msg) from exc
    if opt.choices and value not in opt.choices:
        msg = f"{source}: {value!r} is not one of {', '.join(opt.choices)}"
        raise ConfigError(msg)
    return value


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
    known = {o.name for o in OPTIONS if not o.flag_only}
    unknown = sorted(set(data) - known)
    if unknown:
        msg = f"config file {p}: unknown key(s) {unknown}; known keys: {sorted(known)}"
        raise ConfigError(msg)
    return data


def _derive_defaults(values: dict[str, Any]) -> None:
    topic = values["input_topic"]
    if not values["output_topic"] and topic:
        values["output_topic"] = f"{topic}.anomalies"
    if not values["dead_letter_topic"] and topic:
        values["dead_letter_topic"] = f"{topic}.dlq"
    if not values["changelog_topic"]:
        values["changelog_topic"] = f"{values['group_id']}.state"
    if not values["model"]:
        values["model"] = bundled_model_path()


def _load_secrets(values: dict[str, Any]) -> None:
    """Each secret option from its value or from ``<name>_file``, never both; wrapped as a Secret."""
    for opt in OPTIONS:
        if not opt.secret:
            continue
        path = values.get(f"{opt.name}_file", "")
        if path and values[opt.name]:
            msg = (f"both {opt.name} and {opt.name}_file are set ({opt.env} / {opt.env}_FILE, or the TOML keys): "
                   "set only one")
            raise ConfigError(msg)
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:  # the message must not quote the file's bytes
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                msg = f"{opt.name}_file: cannot read {path} ({why})"
                raise ConfigError(msg) from None
            values[opt.name] = text.removesuffix("\n").removesuffix("\r")
        values[opt.name] = Secret(values[opt.name])


def _validate(s: Settings) -> None:
    if not s.input_topic:
        msg = f"no input topic: pass --input-topic or set {ENV_PREFIX}INPUT_TOPIC"
        raise ConfigError(msg)
    if len({s.input_topic, s.output_topic, s.dead_letter_topic, s.changelog_topic}) != 4:
        msg = "input, output, dead-letter and changelog topics must all differ"
        raise ConfigError(msg)
    positive = ("session_timeout_ms", "max_poll_records", "fetch_max_bytes", "max_partition_fetch_bytes",
                "max_message_bytes", "checkpoint_interval_ms", "checkpoint_records", "shutdown_grace_ms",
                "inference_threads", "broker_wait_ms", "liveness_timeout_ms", "restore_warn_ms",
                "max_poll_interval_ms")
    for name in positive:
        if getattr(s, name) <= 0:
            msg = f"{name} must be > 0, got {getattr(s, name)}"
            raise ConfigError(msg)
    for name in ("gap_ms", "key_ttl_ms", "max_future_ms", "metrics_port", "state_retention_ms",
                 "heartbeat_interval_ms"):
        if getattr(s, name) < 0:
            msg = f"{name} must be >= 0, got {getattr(s, name)}"
            raise ConfigError(msg)
    _validate_durability(s)
    if s.metrics_port > 65535:
        msg = f"metrics_port must be a TCP port (0-65535; 0 picks a free one), got {s.metrics_port}"
        raise ConfigError(msg)
    s.scoring_overrides()  # ConfigError naming a bad scorer, option or threshold, before anything starts
    if not s.bootstrap_servers.strip():
        msg = f"no bootstrap servers: pass --bootstrap-servers or set {ENV_PREFIX}BOOTSTRAP_SERVERS"
        raise ConfigError(msg)
    parse_field_map(s.field_map)
    _validate_limits(s)
    from rnnwatch.consumer.kafka.config import parse_kafka_config

    parse_kafka_config(s.kafka_config)


def _validate_limits(s: Settings) -> None:
    for name in ("max_key_bytes", "max_header_bytes", "max_in_flight_bytes", "metrics_request_timeout_ms",
                 "metrics_max_connections"):
        if getattr(s, name) <= 0:
            msg = f"{name} must be > 0, got {getattr(s, name)}"
            raise ConfigError(msg)
    if s.max_key_bytes > MAX_KEY_BYTES_LIMIT:
        msg = (f"max_key_bytes must be <= {MAX_KEY_BYTES_LIMIT}, got {s.max_key_bytes}: each event carries its key "
               "three times and must fit a Kafka message")
        raise ConfigError(msg)
    if s.replication_factor == 0 or s.replication_factor < -1:
        msg = f"replication_factor must be -1 (the broker's default) or >= 1, got {s.replication_factor}"
        raise ConfigError(msg)

"""Settings precedence (flags > env > TOML > defaults) and errors that name their source."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.settings import Settings, add_arguments, load_settings


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _targs(*argv: str) -> argparse.Namespace:
    """Flags with the two required settings (input topic, group id) already given."""
    return _args("--input-topic", "t", "--group-id", "g", *argv)


def test_defaults_and_derived_topics() -> None:
    s = load_settings(_args("--input-topic", "ticks", "--group-id", "prices-eu"), env={})
    assert s.output_topic == "ticks.anomalies"
    assert s.dead_letter_topic == "ticks.dlq"
    assert s.changelog_topic == "prices-eu.state"
    assert s.metrics_port == 9108
    assert s.model.endswith("model.onnx")


def test_precedence_flag_over_env_over_toml(tmp_path: Path) -> None:
    toml = tmp_path / "rnnwatch.toml"
    toml.write_text('input_topic = "from-toml"\ngroup_id = "toml-group"\nmax_poll_records = 7\n')
    env = {"RNNWATCH_GROUP_ID": "env-group", "RNNWATCH_CONFIG": str(toml)}
    s = load_settings(_args("--group-id", "flag-group"), env=env)
    assert s.group_id == "flag-group"
    s = load_settings(_args(), env=env)
    assert (s.group_id, s.input_topic, s.max_poll_records) == ("env-group", "from-toml", 7)
    assert s.changelog_topic == "env-group.state"


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('input_topic = "x"\nbootstrap_server = "typo:9092"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(_args("--config", str(toml)), env={})


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--input-topic", "t", "--max-poll-records", "lots"], {}, "flag --max-poll-records"),
        (["--input-topic", "t"], {"RNNWATCH_METRICS_PORT": "-1"}, "metrics_port must be >= 0"),
        (["--input-topic", "t"], {"RNNWATCH_SESSION_TIMEOUT_MS": "abc"}, "RNNWATCH_SESSION_TIMEOUT_MS"),
        (["--input-topic", "t", "--group-id", "g", "--threshold", "1.5"], {}, "threshold must be in (0, 1)"),
        ([], {}, "no input topic"),
        (["--input-topic", "t", "--group-id", "g", "--output-topic", "t"], {}, "must all differ"),
        (["--input-topic", "t", "--field-map", "price"], {}, "feature=field"),
    ],
)
def test_bad_values_name_their_source(argv: list[str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_args(*argv), env=env)
    assert needle in str(err.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(_args("--config", "/nonexistent/rnnwatch.toml"), env={})


def test_field_map_and_help_shows_env() -> None:
    s = load_settings(_targs("--field-map", "price=close"), env={})
    assert s.fields_for(("price",)) == ("close",)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert "[env: RNNWATCH_BOOTSTRAP_SERVERS]" in " ".join(parser.format_help().split())


def test_group_liveness_reaches_the_consumer_and_is_checked() -> None:
    from rnnwatch.consumer.kafka import KafkaConfig

    def consumer_config(s: Settings) -> dict[str, Any]:
        return KafkaConfig.from_settings(s).python_consumer(group=True)

    s = load_settings(_targs("--max-poll-interval-ms", "60000"), env={})
    config = consumer_config(s)
    assert (config["session_timeout_ms"], config["heartbeat_interval_ms"], config["max_poll_interval_ms"]) == (
        10000, 2500, 60000)
    s = load_settings(_targs("--heartbeat-interval-ms", "2000"), env={})
    assert consumer_config(s)["heartbeat_interval_ms"] == 2000
    with pytest.raises(ConfigError, match="heartbeat_interval_ms"):
        load_settings(_targs("--heartbeat-interval-ms", "5000"), env={})
    with pytest.raises(ConfigError, match="max_poll_interval_ms"):
        load_settings(_targs("--max-poll-interval-ms", "5000"), env={})


def test_state_retention_must_outlast_the_ttl() -> None:
    s = load_settings(_targs(), env={})
    assert (s.key_ttl_ms, s.state_retention_ms, s.restore_warn_ms) == (86_400_000, 604_800_000, 60_000)
    with pytest.raises(ConfigError, match="state_retention_ms"):
        load_settings(_targs("--state-retention-ms", "3600000"), env={})
    assert load_settings(_targs("--state-retention-ms", "0"), env={}).state_retention_ms == 0


def test_scorer_flags_and_env_resolve_like_score_does() -> None:
    s = load_settings(_targs("--scorer", "gaussian+likelihood", "--scorer-options",
                            '{"likelihood": {"long_halflife": 500}}', "--incident-gap-steps", "0"),
                      env={"RNNWATCH_THRESHOLD_SURPRISE": "6"})
    o = s.scoring_overrides()
    assert (o.scorer, dict(o.scorer_options), o.threshold_surprise, o.incident_gap_steps) == (
        "gaussian+likelihood", {"likelihood": {"long_halflife": 500}}, 6.0, 0)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--scorer", "gaussian+nope"], "unknown scorer 'nope'"),
    (["--scorer", "likelihood", "--scorer-options", '{"likelihood": {"colour": 1}}'], "colour"),
    (["--scorer-options", "{oops"], "not valid JSON"),
    (["--threshold-surprise", "0"], "threshold_surprise"),
    (["--halflife-steps", "0"], "halflife_steps must be > 0"),
    (["--threshold", "1.5"], r"threshold must be in \(0, 1\)"),
])
def test_bad_scorer_settings_are_refused_at_start_up(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(_targs(*argv), env={})


def test_each_option_is_declared_once_and_the_kafka_config_adds_no_field() -> None:
    from dataclasses import fields

    from rnnwatch.consumer.kafka import KafkaConfig
    from rnnwatch.consumer.settings import OPTIONS

    declared = [o.name for o in OPTIONS if not o.file_of]
    assert declared == [f.name for f in fields(Settings)]
    assert [o.name for o in OPTIONS if o.file_of] == ["sasl_password_file", "sasl_oauthbearer_client_secret_file",
                                                      "ssl_key_password_file"]
    assert [f.name for f in fields(KafkaConfig)] == ["settings"]


def test_values_are_typed_at_load_and_structured_ones_parsed_once() -> None:
    s = load_settings({"input_topic": "t", "group_id": "g", "metrics_port": 0, "session_timeout_ms": 6000,
                       "create_topics": False, "halflife_steps": 50, "field_map": "price=close, volume=qty",
                       "min_event_time": "2000-01-01T00:00:00Z"}, env={})
    assert (s.metrics_port, s.session_timeout_ms, s.create_topics, s.halflife_steps) == (0, 6000, False, 50.0)
    assert isinstance(s.halflife_steps, float)
    assert s.field_map == (("price", "close"), ("volume", "qty"))
    assert s.min_event_time == 946_684_800_000  # ms since the epoch, parsed here and not by the service
    assert load_settings({"input_topic": "t", "group_id": "g", "min_event_time": "0"}, env={}).min_event_time == 0
    default = load_settings({"input_topic": "t", "group_id": "g"}, env={})
    assert default.min_event_time == -2_208_988_800_000  # 1900-01-01


@pytest.mark.parametrize(("values", "needle"), [
    ({"metrics_port": "x"}, "expected an integer"),
    ({"metrics_port": [1]}, "expected an integer, got [1]"),
    ({"auto_offset_reset": "latst"}, "did you mean 'latest'"),
    ({"min_event_time": "yesterday"}, "neither an ISO 8601 time"),
    ({"grup_id": "g"}, "unknown setting 'grup_id' (did you mean 'group_id'?)"),
    ({"session_timeout_ms": 0}, "session_timeout_ms must be > 0, got 0"),
])
def test_a_bad_python_value_is_refused_with_what_to_fix(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"input_topic": "t", "group_id": "g", **values}, env={})
    assert needle in str(err.value)


def test_unknown_names_say_which_one_was_meant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rnnwatch.consumer.cli import main
    from rnnwatch.consumer.settings import unknown_env_names

    toml = tmp_path / "c.toml"
    toml.write_text('input_topic = "x"\nbootstrap_server = "typo:9092"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'bootstrap_server' \(did you mean 'bootstrap_servers'\?\)"):
        load_settings(_args("--config", str(toml)), env={})
    with pytest.raises(SystemExit):
        main(["run", "--input-topic", "t", "--grup-id", "g"])
    assert "did you mean '--group-id'" in capsys.readouterr().err
    warnings = unknown_env_names({"RNNWATCH_GROUPID": "g", "RNNWATCH_GROUP_ID": "g", "RNNWATCH_CRASH_POINT": "",
                                  "RNNWATCH_PORT": "tcp://10.0.0.1:9108", "RNNWATCH_SERVICE_HOST": "10.0.0.1"})
    assert warnings == ["environment variable RNNWATCH_GROUPID is not a setting and is ignored "
                        "(did you mean 'RNNWATCH_GROUP_ID'?)"]


def test_a_new_group_starts_at_the_end_and_backfill_is_asked_for() -> None:
    """Kafka's own default: a first deploy on a long topic does not emit events for years of history."""
    from rnnwatch.consumer.kafka import KafkaConfig

    s = load_settings(_targs(), env={})
    assert s.auto_offset_reset == "latest"
    config = KafkaConfig.from_settings(s)
    assert config.python_consumer(group=True)["auto_offset_reset"] == "latest"
    assert config.rdkafka_consumer(group=True)["auto.offset.reset"] == "latest"
    # the restore/metadata reader seeks where it must, whatever a new group's start is
    assert config.python_consumer(group=False)["auto_offset_reset"] == "earliest"
    backfill = load_settings(_targs("--auto-offset-reset", "earliest"), env={})
    assert KafkaConfig.from_settings(backfill).python_consumer(group=True)["auto_offset_reset"] == "earliest"


def test_the_group_id_is_required_because_it_names_the_changelog() -> None:
    with pytest.raises(ConfigError, match=r"no group id: pass --group-id .*give each deployment its own"):
        load_settings(_args("--input-topic", "t"), env={})
    assert load_settings(_args("--input-topic", "t"), env={"RNNWATCH_GROUP_ID": "a"}).changelog_topic == "a.state"


def test_structured_values_from_python_or_toml_go_through_the_same_checks(tmp_path: Path) -> None:
    s = load_settings({"input_topic": "t", "group_id": "g", "field_map": {"price": "close"},
                       "kafka_config": [("fetch.min.bytes", 1024)]}, env={})
    assert (s.field_map, s.kafka_config) == ((("price", "close"),), (("fetch.min.bytes", "1024"),))
    toml = tmp_path / "c.toml"
    toml.write_text('input_topic = "t"\ngroup_id = "g"\nkafka_config = ["linger.ms=5", "group.id=other"]\n')
    with pytest.raises(ConfigError, match=r"TOML key 'kafka_config': kafka_config 'group.id' is set by rnnwatch"):
        load_settings({"config": str(toml)}, env={})
    as_number = load_settings({"input_topic": "t", "group_id": "g", "min_event_time": 1_600_000_000}, env={})
    assert as_number.min_event_time == 1_600_000_000_000  # as the text "1600000000" would be: epoch seconds

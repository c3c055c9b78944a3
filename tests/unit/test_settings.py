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


def test_defaults_and_derived_topics() -> None:
    s = load_settings(_args("--input-topic", "ticks"), env={})
    assert s.output_topic == "ticks.anomalies"
    assert s.dead_letter_topic == "ticks.dlq"
    assert s.changelog_topic == "rnnwatch.state"
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
        (["--input-topic", "t", "--threshold", "1.5"], {}, "threshold must be in (0, 1)"),
        ([], {}, "no input topic"),
        (["--input-topic", "t", "--output-topic", "t"], {}, "must all differ"),
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
    s = load_settings(_args("--input-topic", "t", "--field-map", "price=close"), env={})
    assert s.fields_for(("price",)) == ("close",)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert "[env: RNNWATCH_BOOTSTRAP_SERVERS]" in " ".join(parser.format_help().split())


def test_group_liveness_reaches_the_consumer_and_is_checked() -> None:
    from rnnwatch.consumer.kafka import KafkaConfig

    def consumer_config(s: Settings) -> dict[str, Any]:
        return KafkaConfig.from_settings(s).python_consumer(group=True)

    s = load_settings(_args("--input-topic", "t", "--max-poll-interval-ms", "60000"), env={})
    config = consumer_config(s)
    assert (config["session_timeout_ms"], config["heartbeat_interval_ms"], config["max_poll_interval_ms"]) == (
        10000, 2500, 60000)
    s = load_settings(_args("--input-topic", "t", "--heartbeat-interval-ms", "2000"), env={})
    assert consumer_config(s)["heartbeat_interval_ms"] == 2000
    with pytest.raises(ConfigError, match="heartbeat_interval_ms"):
        load_settings(_args("--input-topic", "t", "--heartbeat-interval-ms", "5000"), env={})
    with pytest.raises(ConfigError, match="max_poll_interval_ms"):
        load_settings(_args("--input-topic", "t", "--max-poll-interval-ms", "5000"), env={})


def test_state_retention_must_outlast_the_ttl() -> None:
    s = load_settings(_args("--input-topic", "t"), env={})
    assert (s.key_ttl_ms, s.state_retention_ms, s.restore_warn_ms) == (86_400_000, 604_800_000, 60_000)
    with pytest.raises(ConfigError, match="state_retention_ms"):
        load_settings(_args("--input-topic", "t", "--state-retention-ms", "3600000"), env={})
    assert load_settings(_args("--input-topic", "t", "--state-retention-ms", "0"), env={}).state_retention_ms == 0


def test_scorer_flags_and_env_resolve_like_score_does() -> None:
    s = load_settings(_args("--input-topic", "t", "--scorer", "gaussian+likelihood", "--scorer-options",
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
        load_settings(_args("--input-topic", "t", *argv), env={})

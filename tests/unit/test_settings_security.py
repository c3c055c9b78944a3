"""Secrets never reach `ps`, logs, reprs or error messages; limits are validated at start-up."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.kafka import KafkaConfig
from rnnwatch.consumer.settings import add_arguments, load_settings

SECRET = "hunter2-Zq9"  # noqa: S105 - a test value that must never be echoed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnwatch run")
    add_arguments(parser)
    return parser


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def _targs(*argv: str) -> argparse.Namespace:
    """Flags with the two required settings (input topic, group id) already given."""
    return _args("--input-topic", "t", "--group-id", "g", *argv)


def test_the_password_flag_is_refused_because_ps_shows_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _targs("--sasl-password", SECRET)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "RNNWATCH_SASL_PASSWORD_FILE" in err and "ps" in err
    assert SECRET not in err


def test_the_password_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")  # mounted secrets usually end with a newline
    base = {"RNNWATCH_SECURITY_PROTOCOL": "SASL_SSL", "RNNWATCH_SASL_MECHANISM": "PLAIN",
            "RNNWATCH_SASL_USERNAME": "svc"}
    env_file = {**base, "RNNWATCH_SASL_PASSWORD_FILE": str(secret_file)}
    from_file = load_settings(_targs(), env=env_file)
    from_flag_file = load_settings(_targs("--sasl-password-file", str(secret_file)), env=base)
    from_env = load_settings(_targs(), env={**base, "RNNWATCH_SASL_PASSWORD": SECRET})
    for s in (from_file, from_flag_file, from_env):
        config = KafkaConfig.from_settings(s)
        assert config.python_common("consumer")["sasl_plain_password"] == SECRET
        assert config.rdkafka_common()["sasl.password"] == SECRET


def test_the_password_never_shows_in_repr_or_errors(tmp_path: Path) -> None:
    s = load_settings(_targs("--security-protocol", "SASL_SSL", "--sasl-mechanism",
                            "SCRAM-SHA-512", "--sasl-username", "svc"), env={"RNNWATCH_SASL_PASSWORD": SECRET})
    assert SECRET not in repr(s) and SECRET not in str(s)
    toml = tmp_path / "c.toml"
    toml.write_text('input_topic = "t"\nsasl_password = 71828182\n')
    with pytest.raises(ConfigError) as err:
        load_settings(_args("--config", str(toml)), env={})
    assert "71828182" not in str(err.value) and "sasl_password" in str(err.value)
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET)
    with pytest.raises(ConfigError, match="both") as err:
        load_settings(_targs(), env={"RNNWATCH_SASL_PASSWORD": SECRET,
                                                        "RNNWATCH_SASL_PASSWORD_FILE": str(secret_file)})
    assert SECRET not in str(err.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(_targs(), env={"RNNWATCH_SASL_PASSWORD_FILE": str(tmp_path / "missing")})
    secret_file.write_bytes(b"\xff" + SECRET.encode())
    with pytest.raises(ConfigError, match="not UTF-8") as err:
        load_settings(_targs(), env={"RNNWATCH_SASL_PASSWORD_FILE": str(secret_file)})
    assert SECRET not in str(err.value) and "0xff" not in str(err.value)


def test_help_names_the_file_variant_and_no_password_flag() -> None:
    text = " ".join(_parser().format_help().split())
    assert "--sasl-password-file" in text and "[env: RNNWATCH_SASL_PASSWORD_FILE]" in text
    assert "--sasl-password " not in text and "--sasl-password PASSWORD" not in text


def test_the_ops_server_listens_on_loopback_unless_told_otherwise() -> None:
    s = load_settings(_targs(), env={})
    assert s.metrics_host == "127.0.0.1"
    everywhere = "0.0.0.0"  # noqa: S104 - what the container image sets
    s = load_settings(_targs(), env={"RNNWATCH_METRICS_HOST": everywhere})
    assert s.metrics_host == everywhere


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"RNNWATCH_MAX_KEY_BYTES": "0"}, "max_key_bytes must be > 0"),
        ({"RNNWATCH_MAX_KEY_BYTES": "100000"}, "max_key_bytes must be <= 65536"),
        ({"RNNWATCH_MAX_HEADER_BYTES": "-1"}, "max_header_bytes must be > 0"),
        ({"RNNWATCH_MAX_IN_FLIGHT_BYTES": "0"}, "max_in_flight_bytes must be > 0"),
        ({"RNNWATCH_REPLICATION_FACTOR": "0"}, "replication_factor must be -1"),
        ({"RNNWATCH_CHANGELOG_CHECK": "maybe"}, "not one of refuse, warn, off"),
        ({"RNNWATCH_METRICS_REQUEST_TIMEOUT_MS": "0"}, "metrics_request_timeout_ms must be > 0"),
        ({"RNNWATCH_METRICS_MAX_CONNECTIONS": "0"}, "metrics_max_connections must be > 0"),
    ],
)
def test_limits_are_validated_at_start_up(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_targs(), env=env)
    assert needle in str(err.value)


def test_limit_defaults() -> None:
    s = load_settings(_targs(), env={})
    assert (s.max_key_bytes, s.max_header_bytes, s.replication_factor, s.changelog_check) == (
        4096, 64 * 1024, -1, "refuse")
    assert s.max_in_flight_bytes > 0 and s.metrics_request_timeout_ms > 0 and s.metrics_max_connections > 0

"""Security settings for real clusters: mTLS, OAUTHBEARER, GSSAPI, hostname checks — mapped for both
transports from one declaration, and an inconsistent combination refused at start-up saying what to fix."""

from __future__ import annotations

import base64
import importlib.util
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from rnnwatch.consumer.errors import BrokerError, ConfigError
from rnnwatch.consumer.kafka import KafkaConfig, open_transport
from rnnwatch.consumer.settings import Secret, Settings, load_settings

KEY_PASSWORD = "k3y-pa55"  # noqa: S105 - a test value
CLIENT_SECRET = "cl13nt-s3cret"  # noqa: S105 - a test value


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real CA-less self-signed client certificate and its key, encrypted with KEY_PASSWORD (openssl)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "client.pem", d / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=rnnwatch-test", "-passout", f"pass:{KEY_PASSWORD}"],
                   check=True, capture_output=True)
    password = d / "key-password"
    password.write_text(KEY_PASSWORD + "\n")
    return {"cert": cert, "key": key, "ca": cert, "password": password}


def _load(values: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    return load_settings({"input_topic": "t", "group_id": "g", **values}, env=env or {})


def test_mtls_reaches_both_clients_and_each_client_can_load_the_key(tls_files: dict[str, Path]) -> None:
    s = _load({"security_protocol": "SSL", "ssl_cafile": str(tls_files["ca"]), "ssl_certfile": str(tls_files["cert"]),
               "ssl_keyfile": str(tls_files["key"])},
              env={"RNNWATCH_SSL_KEY_PASSWORD_FILE": str(tls_files["password"])})
    assert s.ssl_key_password == Secret(KEY_PASSWORD) and KEY_PASSWORD not in repr(s)
    config = KafkaConfig.from_settings(s)
    py = config.python_common("consumer")
    assert (py["security_protocol"], py["ssl_certfile"], py["ssl_keyfile"], py["ssl_password"],
            py["ssl_check_hostname"]) == ("SSL", str(tls_files["cert"]), str(tls_files["key"]), KEY_PASSWORD, True)
    # kafka-python hands these to ssl.SSLContext.load_cert_chain: the mapped values must open the real key
    ssl.create_default_context().load_cert_chain(py["ssl_certfile"], py["ssl_keyfile"], py["ssl_password"])
    rd = config.rdkafka_producer()
    assert (rd["security.protocol"], rd["ssl.certificate.location"], rd["ssl.key.location"], rd["ssl.key.password"],
            rd["ssl.ca.location"], rd["ssl.endpoint.identification.algorithm"]) == (
        "ssl", str(tls_files["cert"]), str(tls_files["key"]), KEY_PASSWORD, str(tls_files["ca"]), "https")
    pytest.importorskip("confluent_kafka", reason="the [fast] extra is installed by make install-dev")
    from confluent_kafka import Producer

    Producer(rd)  # librdkafka reads and decrypts the key when the client is built (no broker contact needed)


def test_the_key_password_is_never_a_flag_and_comes_from_env_or_toml(tmp_path: Path,
                                                                      tls_files: dict[str, Path]) -> None:
    from rnnwatch.consumer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "--input-topic", "t", "--ssl-key-password", KEY_PASSWORD])
    assert exc.value.code == 2
    tls = {"security_protocol": "SSL", "ssl_certfile": str(tls_files["cert"]), "ssl_keyfile": str(tls_files["key"])}
    assert _load(tls, env={"RNNWATCH_SSL_KEY_PASSWORD": KEY_PASSWORD}).ssl_key_password.reveal() == KEY_PASSWORD
    toml = tmp_path / "c.toml"
    toml.write_text(f'input_topic = "t"\ngroup_id = "g"\nssl_key_password = "{KEY_PASSWORD}"\n' +
                    "".join(f'{k} = "{v}"\n' for k, v in tls.items()))
    assert load_settings({"config": str(toml)}, env={}).ssl_key_password.reveal() == KEY_PASSWORD


def test_hostname_checking_can_be_turned_off_for_both_clients() -> None:
    config = KafkaConfig.from_settings(_load({"security_protocol": "SSL", "ssl_check_hostname": "false"}))
    assert config.python_common("admin")["ssl_check_hostname"] is False
    assert config.rdkafka_admin()["ssl.endpoint.identification.algorithm"] == "none"


class _TokenEndpoint(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []  # noqa: RUF012 - per-test list, reset by the fixture

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.seen.append({"authorization": self.headers["Authorization"], "body": body})
        if self.headers["Authorization"] != "Basic " + base64.b64encode(f"svc:{CLIENT_SECRET}".encode()).decode():
            self.send_response(401)
            self.end_headers()
            return
        payload = json.dumps({"access_token": f"tok-{len(self.seen)}", "expires_in": 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def token_url() -> Iterator[str]:
    _TokenEndpoint.seen = []
    server = HTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/token"
    server.shutdown()
    server.server_close()


def _oauth(url: str, secret: str = CLIENT_SECRET) -> Settings:
    return _load({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER",
                  "sasl_oauthbearer_token_endpoint_url": url, "sasl_oauthbearer_client_id": "svc",
                  "sasl_oauthbearer_scope": "kafka"}, env={"RNNWATCH_SASL_OAUTHBEARER_CLIENT_SECRET": secret})


def test_oauthbearer_oidc_reaches_librdkafka_and_kafka_python_gets_a_token_provider(token_url: str) -> None:
    from kafka.net.sasl.oauth import AbstractTokenProvider

    config = KafkaConfig.from_settings(_oauth(token_url))
    rd = config.rdkafka_consumer(group=True)
    assert {k: v for k, v in rd.items() if k.startswith("sasl.")} == {
        "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": token_url, "sasl.oauthbearer.client.id": "svc",
        "sasl.oauthbearer.client.secret": CLIENT_SECRET, "sasl.oauthbearer.scope": "kafka"}
    provider = config.python_consumer(group=True)["sasl_oauth_token_provider"]
    assert isinstance(provider, AbstractTokenProvider)
    assert config.python_common("producer")["sasl_oauth_token_provider"] is provider  # one for every client
    assert (provider.token(), provider.token()) == ("tok-1", "tok-1")  # fetched once, then reused
    assert len(_TokenEndpoint.seen) == 1
    assert _TokenEndpoint.seen[0]["body"] == "grant_type=client_credentials&scope=kafka"


def test_a_refused_token_request_says_so_without_the_secret(token_url: str) -> None:
    provider = KafkaConfig.from_settings(_oauth(token_url, "wrong")).python_common("consumer")[
        "sasl_oauth_token_provider"]
    with pytest.raises(BrokerError, match="HTTP 401") as err:
        provider.token()
    assert "wrong" not in str(err.value)


def test_gssapi_maps_to_both_clients() -> None:
    s = _load({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI", "transport": "confluent",
               "sasl_kerberos_service_name": "kafka-prod", "sasl_kerberos_principal": "svc@EXAMPLE.COM",
               "sasl_kerberos_keytab": "/etc/svc.keytab"})
    rd = KafkaConfig.from_settings(s).rdkafka_admin()
    assert (rd["sasl.mechanism"], rd["sasl.kerberos.service.name"], rd["sasl.kerberos.principal"],
            rd["sasl.kerberos.keytab"]) == ("GSSAPI", "kafka-prod", "svc@EXAMPLE.COM", "/etc/svc.keytab")
    if importlib.util.find_spec("gssapi") is None:  # kafka-python's GSSAPI needs the gssapi package
        with pytest.raises(ConfigError, match="needs the gssapi package"):
            _load({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"})
    else:
        py = KafkaConfig.from_settings(_load({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI",
                                              "sasl_kerberos_service_name": "kafka-prod"})).python_common("admin")
        assert (py["sasl_mechanism"], py["sasl_kerberos_service_name"]) == ("GSSAPI", "kafka-prod")


def test_the_confluent_wheel_without_gssapi_refuses_it_as_a_config_error() -> None:
    """The confluent-kafka wheels' librdkafka has no GSSAPI: one clear ConfigError when the client is built."""
    pytest.importorskip("confluent_kafka", reason="the [fast] extra is installed by make install-dev")
    transport = open_transport(KafkaConfig.from_settings(_load({
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI", "transport": "confluent"})))
    with pytest.raises(ConfigError, match="No provider for SASL mechanism GSSAPI"):
        transport.producer()


@pytest.mark.parametrize(("values", "env", "needle"), [
    ({"security_protocol": "SASL_SSL"}, {}, "SASL_SSL needs a SASL mechanism: set --sasl-mechanism"),
    ({"security_protocol": "SASL_PLAINTEXT"}, {}, "SASL_PLAINTEXT needs a SASL mechanism"),
    ({"sasl_mechanism": "PLAIN"}, {}, "security_protocol is PLAINTEXT, which does not authenticate with SASL"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, {}, "PLAIN needs a user name and a password"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc"}, {},
     "needs a user name and a password"),
    ({"sasl_username": "svc"}, {}, "used by PLAIN and SCRAM only"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, {},
     "OAUTHBEARER (OIDC client credentials) needs sasl_oauthbearer_token_endpoint_url"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", "sasl_oauthbearer_client_id": "c",
      "sasl_oauthbearer_token_endpoint_url": "ftp://idp/token"}, {"RNNWATCH_SASL_OAUTHBEARER_CLIENT_SECRET": "x"},
     "must be an http(s):// URL"),
    ({"sasl_oauthbearer_client_id": "c"}, {}, "sasl_oauthbearer_client_id set but sasl_mechanism is (none)"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_kerberos_keytab": "/k"}, {},
     "kafka-python takes the Kerberos identity from the credential cache"),
    ({"sasl_kerberos_principal": "p"}, {}, "set --sasl-mechanism GSSAPI"),
    ({"ssl_cafile": "/etc/ca.pem"}, {}, "ssl_cafile set but security_protocol is PLAINTEXT, which does not use TLS"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u",
      "ssl_check_hostname": False}, {"RNNWATCH_SASL_PASSWORD": "p"}, "ssl_check_hostname=false set but"),
    ({"security_protocol": "SSL", "ssl_certfile": "{cert}"}, {}, "ssl_certfile is set without ssl_keyfile"),
    ({"security_protocol": "SSL", "ssl_keyfile": "{key}"}, {}, "ssl_keyfile is set without ssl_certfile"),
    ({"security_protocol": "SSL"}, {"RNNWATCH_SSL_KEY_PASSWORD": "p"}, "ssl_key_password is set without ssl_keyfile"),
    ({"security_protocol": "SSL", "ssl_cafile": "/nope/ca.pem"}, {}, "ssl_cafile /nope/ca.pem is not a readable file"),
    ({"security_protocol": "TLS"}, {}, "'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA256"}, {}, "did you mean 'SCRAM-SHA-256'"),
])
def test_inconsistent_security_is_refused_at_start_up_saying_what_to_fix(
        values: dict[str, Any], env: dict[str, str], needle: str, tls_files: dict[str, Path]) -> None:
    values = {k: v.format(cert=tls_files["cert"], key=tls_files["key"]) if isinstance(v, str) else v
              for k, v in values.items()}
    with pytest.raises(ConfigError) as err:
        _load(values, env)
    assert needle in str(err.value)

"""Security settings: checked together at start-up, then mapped to each client's own names.

One rule set for both transports, run by ``load_settings`` before any client exists, so an inconsistent
combination (SASL_SSL without a mechanism, a certificate without its key, TLS files with PLAINTEXT ...) is
one line saying what to fix rather than a handshake failure, a hang, or a setting silently unused.

How each client takes them (kafka-python 3 / librdkafka):

=====================  ==========================================  ==========================================
TLS                    ``ssl_cafile``, ``ssl_certfile``,           ``ssl.ca.location``, ``ssl.certificate.
                       ``ssl_keyfile``, ``ssl_password``,          location``, ``ssl.key.location``, ``ssl.key.
                       ``ssl_check_hostname``                      password``, ``ssl.endpoint.identification.
                                                                   algorithm`` (``https``/``none``)
PLAIN / SCRAM          ``sasl_plain_username``/``_password``       ``sasl.username``/``sasl.password``
OAUTHBEARER (OIDC      ``sasl_oauth_token_provider``: an object    ``sasl.oauthbearer.method=oidc``,
client credentials)    with ``token()`` — ours,                    ``.client.id``, ``.client.secret``,
                       :class:`~rnnwatch.consumer.kafka.oauth.     ``.token.endpoint.url``, ``.scope``
                       OidcTokenProvider`
GSSAPI (Kerberos)      ``sasl_kerberos_service_name``; needs the   ``sasl.kerberos.service.name``,
                       ``gssapi`` package; identity from the       ``.principal``, ``.keytab``; needs a
                       credential cache / ``KRB5_CLIENT_KTNAME``   librdkafka built with libsasl2 (the
                                                                   confluent-kafka wheels are not)
=====================  ==========================================  ==========================================
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnwatch.consumer.errors import ConfigError

if TYPE_CHECKING:
    from rnnwatch.consumer.settings import Settings

__all__ = ["check_security", "python_security", "rdkafka_security"]

_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_OIDC = ("sasl_oauthbearer_token_endpoint_url", "sasl_oauthbearer_client_id", "sasl_oauthbearer_client_secret")
_KERBEROS_IDENTITY = ("sasl_kerberos_principal", "sasl_kerberos_keytab")
_TLS_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


def _refuse(msg: str) -> None:
    raise ConfigError(msg)


def check_security(s: Settings) -> None:
    """Refuse a combination that cannot work, naming the settings to fix (flags; env/TOML use the same names)."""
    sasl, tls = s.security_protocol.startswith("SASL_"), s.security_protocol.endswith("SSL")
    mech = s.sasl_mechanism
    if sasl and not mech:
        _refuse(f"security_protocol {s.security_protocol} needs a SASL mechanism: set --sasl-mechanism "
                "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or GSSAPI)")
    if mech and not sasl:
        _refuse(f"sasl_mechanism {mech} is set but security_protocol is {s.security_protocol}, which does not "
                "authenticate with SASL: set --security-protocol SASL_SSL (or SASL_PLAINTEXT), or drop the mechanism")
    _check_password(s)
    _check_oauth(s)
    _check_kerberos(s)
    _check_tls(s, tls)


def _check_password(s: Settings) -> None:
    uses = s.sasl_mechanism in _PASSWORD_MECHANISMS
    if uses and not (s.sasl_username and s.sasl_password):
        _refuse(f"sasl_mechanism {s.sasl_mechanism} needs a user name and a password: set --sasl-username and "
                "RNNWATCH_SASL_PASSWORD_FILE (a file holding the password) or RNNWATCH_SASL_PASSWORD")
    if not uses and (s.sasl_username or s.sasl_password):
        _refuse(f"sasl_username/sasl_password are used by PLAIN and SCRAM only, not by sasl_mechanism "
                f"{s.sasl_mechanism or '(none)'}: set --sasl-mechanism PLAIN or SCRAM-SHA-512, or drop them")


def _check_oauth(s: Settings) -> None:
    given = [name for name in (*_OIDC, "sasl_oauthbearer_scope") if getattr(s, name)]
    if s.sasl_mechanism != "OAUTHBEARER":
        if given:
            _refuse(f"{', '.join(given)} set but sasl_mechanism is {s.sasl_mechanism or '(none)'}: set "
                    "--sasl-mechanism OAUTHBEARER, or drop them")
        return
    missing = [name for name in _OIDC if not getattr(s, name)]
    if missing:
        _refuse(f"sasl_mechanism OAUTHBEARER (OIDC client credentials) needs {', '.join(missing)}: set "
                "--sasl-oauthbearer-token-endpoint-url, --sasl-oauthbearer-client-id and "
                "RNNWATCH_SASL_OAUTHBEARER_CLIENT_SECRET_FILE (or RNNWATCH_SASL_OAUTHBEARER_CLIENT_SECRET)")
    if not s.sasl_oauthbearer_token_endpoint_url.startswith(("https://", "http://")):
        _refuse(f"sasl_oauthbearer_token_endpoint_url {s.sasl_oauthbearer_token_endpoint_url!r} must be an "
                "http(s):// URL")


def _check_kerberos(s: Settings) -> None:
    given = [name for name in _KERBEROS_IDENTITY if getattr(s, name)]
    if s.sasl_mechanism != "GSSAPI":
        if given:
            _refuse(f"{', '.join(given)} set but sasl_mechanism is {s.sasl_mechanism or '(none)'}: set "
                    "--sasl-mechanism GSSAPI, or drop them")
        return
    if s.transport == "kafka-python":
        if given:
            _refuse(f"{', '.join(given)}: kafka-python takes the Kerberos identity from the credential cache "
                    "(kinit) or KRB5_CLIENT_KTNAME=<keytab>, not from settings; drop them, or use --transport "
                    "confluent")
        if importlib.util.find_spec("gssapi") is None:
            _refuse("sasl_mechanism GSSAPI with --transport kafka-python needs the gssapi package "
                    "(pip install gssapi, with the system's Kerberos libraries)")


def _check_tls(s: Settings, tls: bool) -> None:
    given = [name for name in (*_TLS_FILES, "ssl_key_password") if getattr(s, name)]
    if not s.ssl_check_hostname:
        given.append("ssl_check_hostname=false")
    if not tls:
        if given:
            _refuse(f"{', '.join(given)} set but security_protocol is {s.security_protocol}, which does not use "
                    "TLS: set --security-protocol SSL (or SASL_SSL), or drop them")
        return
    if bool(s.ssl_certfile) != bool(s.ssl_keyfile):
        have, need = ("ssl_certfile", "ssl_keyfile") if s.ssl_certfile else ("ssl_keyfile", "ssl_certfile")
        _refuse(f"{have} is set without {need}: a TLS client certificate needs both (--ssl-certfile and "
                "--ssl-keyfile, PEM files)")
    if s.ssl_key_password and not s.ssl_keyfile:
        _refuse("ssl_key_password is set without ssl_keyfile: set --ssl-keyfile to the encrypted key, or drop it")
    for name in _TLS_FILES:
        path = getattr(s, name)
        if path and not Path(path).is_file():
            _refuse(f"{name} {path} is not a readable file: check --{name.replace('_', '-')}")


def python_security(s: Settings, token_provider: Any = None) -> dict[str, Any]:
    """kafka-python's security settings (``token_provider``: the OIDC provider, shared by all clients)."""
    config: dict[str, Any] = {"security_protocol": s.security_protocol}
    mech = s.sasl_mechanism
    if mech:
        config["sasl_mechanism"] = mech
    if mech in _PASSWORD_MECHANISMS:
        config.update(sasl_plain_username=s.sasl_username, sasl_plain_password=s.sasl_password.reveal())
    elif mech == "OAUTHBEARER":
        config["sasl_oauth_token_provider"] = token_provider
    elif mech == "GSSAPI":
        config["sasl_kerberos_service_name"] = s.sasl_kerberos_service_name
    if s.security_protocol.endswith("SSL"):
        config["ssl_check_hostname"] = s.ssl_check_hostname
        for ours, theirs in (("ssl_cafile", "ssl_cafile"), ("ssl_certfile", "ssl_certfile"),
                             ("ssl_keyfile", "ssl_keyfile")):
            if getattr(s, ours):
                config[theirs] = getattr(s, ours)
        if s.ssl_key_password:
            config["ssl_password"] = s.ssl_key_password.reveal()
    return config


def rdkafka_security(s: Settings) -> dict[str, Any]:
    """librdkafka's security settings."""
    config: dict[str, Any] = {"security.protocol": s.security_protocol.lower()}
    mech = s.sasl_mechanism
    if mech:
        config["sasl.mechanism"] = mech
    if mech in _PASSWORD_MECHANISMS:
        config.update({"sasl.username": s.sasl_username, "sasl.password": s.sasl_password.reveal()})
    elif mech == "OAUTHBEARER":
        config.update({"sasl.oauthbearer.method": "oidc",
                       "sasl.oauthbearer.token.endpoint.url": s.sasl_oauthbearer_token_endpoint_url,
                       "sasl.oauthbearer.client.id": s.sasl_oauthbearer_client_id,
                       "sasl.oauthbearer.client.secret": s.sasl_oauthbearer_client_secret.reveal()})
        if s.sasl_oauthbearer_scope:
            config["sasl.oauthbearer.scope"] = s.sasl_oauthbearer_scope
    elif mech == "GSSAPI":
        config["sasl.kerberos.service.name"] = s.sasl_kerberos_service_name
        if s.sasl_kerberos_principal:
            config["sasl.kerberos.principal"] = s.sasl_kerberos_principal
        if s.sasl_kerberos_keytab:
            config["sasl.kerberos.keytab"] = s.sasl_kerberos_keytab
    if s.security_protocol.endswith("SSL"):
        config["ssl.endpoint.identification.algorithm"] = "https" if s.ssl_check_hostname else "none"
        for ours, theirs in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                             ("ssl_keyfile", "ssl.key.location")):
            if getattr(s, ours):
                config[theirs] = getattr(s, ours)
        if s.ssl_key_password:
            config["ssl.key.password"] = s.ssl_key_password.reveal()
    return config

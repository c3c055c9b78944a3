"""`rnnwatch run` with inconsistent security settings: exit 2 and one line saying what to fix, before any
broker contact (the bootstrap address is a closed port: reaching for it would fail differently, later)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
RNNWATCH = [sys.executable, "-m", "rnnwatch.consumer.cli"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--security-protocol", "SASL_SSL"], {}, "security_protocol SASL_SSL needs a SASL mechanism"),
    (["--security-protocol", "SSL", "--ssl-certfile", "{cert}"], {}, "ssl_certfile is set without ssl_keyfile"),
    (["--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "svc"], {"RNNWATCH_SASL_PASSWORD": "pw"},
     "security_protocol is PLAINTEXT, which does not authenticate with SASL"),
    (["--ssl-cafile", "{cert}"], {}, "which does not use TLS: set --security-protocol SSL"),
], ids=["sasl-without-mechanism", "cert-without-key", "mechanism-with-plaintext", "tls-file-with-plaintext"])
def test_inconsistent_security_exits_2_with_one_line_before_the_broker(
        args: list[str], env: dict[str, str], needle: str, tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    argv = [*RNNWATCH, "run", "--input-topic", "t", "--group-id", "g", "--bootstrap-servers",
            f"127.0.0.1:{_closed_port()}", "--broker-wait-ms", "60000", *(a.format(cert=cert) for a in args)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, **env, "PYTHONPATH": ""})
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("rnnwatch run: error: ") and needle in lines[0], lines[0]

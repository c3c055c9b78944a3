"""The ops server (/metrics, /healthz, /readyz) on loopback: slow or idle clients cannot take it down.

Before: one thread per connection and no timeouts, so every idle or drip-fed connection held a thread
forever, and enough of them exhausted the process.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from rnnwatch.consumer.health import HealthState, OpsServer

WAIT_S = 30.0  # generous upper bound for a condition; the tests never sleep for a fixed time


@pytest.fixture
def server_factory() -> Iterator[Callable[..., OpsServer]]:
    servers: list[OpsServer] = []

    def make(**kw: float) -> OpsServer:
        registry = CollectorRegistry()
        Counter("rnnwatch_probe", "A metric to find in the scrape.", registry=registry).inc()
        health = HealthState(60.0)
        health.model_loaded = health.assigned = True
        server = OpsServer("127.0.0.1", 0, registry, health, **kw).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def _get(server: OpsServer, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=WAIT_S) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _connect(server: OpsServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_endpoints(server_factory: Callable[..., OpsServer]) -> None:
    server = server_factory()
    status, body = _get(server, "/metrics")
    assert status == 200 and b"rnnwatch_probe_total 1.0" in body
    assert _get(server, "/healthz") == (200, b"ok\n")
    assert _get(server, "/readyz?verbose=1") == (200, b"ok\n")
    status, body = _get(server, "/nope")
    assert status == 404 and b"/metrics" in body


def test_an_idle_connection_is_closed_at_the_request_timeout(server_factory: Callable[..., OpsServer]) -> None:
    server = server_factory(request_timeout_s=0.2)
    with _connect(server) as idle:
        reply = _read_until_closed(idle)  # before: blocked until the client gave up
    assert reply.startswith(b"HTTP/1.1 408")


def test_a_drip_fed_request_is_cut_at_its_deadline(server_factory: Callable[..., OpsServer]) -> None:
    """Slowloris: one byte at a time keeps a per-read timeout happy forever; the deadline is per request."""
    server = server_factory(request_timeout_s=0.3)
    with _connect(server) as drip:
        drip.settimeout(0.05)
        closed = False
        for byte in (b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 10_000):
            try:
                drip.sendall(bytes([byte]))
                closed = drip.recv(4096).startswith(b"HTTP/1.1 408")
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
            if closed:
                break
    assert closed


def test_metrics_are_served_while_slow_clients_hold_connections(server_factory: Callable[..., OpsServer]) -> None:
    server = server_factory(request_timeout_s=WAIT_S, max_connections=64)
    slow = [_connect(server) for _ in range(40)]
    for sock in slow[::2]:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    try:
        _wait_for(lambda: server.open_connections == 40)
        status, body = _get(server, "/metrics")
        assert status == 200 and b"rnnwatch_probe_total" in body
    finally:
        for sock in slow:
            sock.close()


def test_connections_beyond_the_limit_are_answered_503(server_factory: Callable[..., OpsServer]) -> None:
    server = server_factory(request_timeout_s=WAIT_S, max_connections=4)
    held = [_connect(server) for _ in range(4)]
    try:
        _wait_for(lambda: server.open_connections == 4)
        with _connect(server) as extra:
            assert _read_until_closed(extra).startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()
    _wait_for(lambda: server.open_connections == 0)
    assert _get(server, "/metrics")[0] == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"garbage\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
    ],
)
def test_bad_requests_get_a_status_not_a_hang(server_factory: Callable[..., OpsServer], request_bytes: bytes,
                                              status: bytes) -> None:
    server = server_factory()
    with _connect(server) as sock:
        sock.sendall(request_bytes)
        assert _read_until_closed(sock).split(b" ")[1] == status


def test_head_gets_headers_without_a_body(server_factory: Callable[..., OpsServer]) -> None:
    server = server_factory()
    with _connect(server) as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\n")


def test_a_large_scrape_arrives_whole(server_factory: Callable[..., OpsServer]) -> None:
    server = server_factory()
    for i in range(3000):  # a few hundred kilobytes of exposition text
        Counter(f"rnnwatch_filler_{i}", "Filler to make the scrape large.", registry=server.registry).inc()
    status, body = _get(server, "/metrics")
    assert status == 200 and len(body) > 256 * 1024
    assert b"rnnwatch_filler_2999_total 1.0" in body


def _request(server: OpsServer, path: str, method: str = "GET",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=WAIT_S) as resp:  # noqa: S310 - a loopback http URL
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def test_metrics_negotiate_openmetrics_and_gzip(server_factory: Callable[..., OpsServer]) -> None:
    import gzip

    server = server_factory()
    _, plain_headers, plain = _request(server, "/metrics")
    assert plain_headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"rnnwatch_probe_total 1.0" in plain and not plain.endswith(b"# EOF\n")
    _, om_headers, om = _request(server, "/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"})
    assert om_headers["content-type"].startswith("application/openmetrics-text")
    assert om.endswith(b"# EOF\n")
    _, gz_headers, gz = _request(server, "/metrics", headers={"Accept-Encoding": "gzip"})
    assert gz_headers["content-encoding"] == "gzip"
    assert b"rnnwatch_probe_total 1.0" in gzip.decompress(gz)
    _, _, only = _request(server, "/metrics?name[]=rnnwatch_probe_total")
    assert b"rnnwatch_probe_total" in only


def test_head_is_answered_without_a_body(server_factory: Callable[..., OpsServer]) -> None:
    server = server_factory()
    status, headers, body = _request(server, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0

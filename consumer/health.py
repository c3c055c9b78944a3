"""HTTP endpoints for operators: /metrics (Prometheus), /healthz (liveness), /readyz (readiness).

Liveness means the poll loop has run recently (a wedged loop gets the pod restarted); readiness means the
model is loaded and partitions are assigned and restored (a pod still restoring state gets no alerts about
lag it cannot yet work off). The server only reads flags the loop sets.

The server is one asyncio loop in a daemon thread, so an idle or slow connection costs a few kilobytes, not a
thread. Each connection must deliver its request head and take its response within ``request_timeout_s``
(a *deadline*, not a per-read timeout: a client dripping one byte at a time is cut off too, answered 408);
at most ``max_connections`` are open at once, more are answered 503 and closed. Request heads are limited
to 8 KiB (431). Every response closes its connection (Prometheus reconnects per scrape).

It binds to ``metrics_host``: loopback by default, ``0.0.0.0`` in the container image, where Prometheus and
the kubelet's probes connect from outside the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import socket
import threading
import time
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from rnnwatch.consumer.errors import ConfigError

__all__ = ["HealthState", "OpsServer"]

_MAX_HEAD_BYTES = 8 * 1024
_TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class HealthState:
    def __init__(self, liveness_timeout_s: float) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self.last_loop_s = time.monotonic()
        self.model_loaded = False
        self.assigned = False
        self.restoring = False
        self.broker_ok = True

    def tick(self) -> None:
        self.last_loop_s = time.monotonic()

    def live(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_loop_s
        if idle > self.liveness_timeout_s:
            return False, f"poll loop has not run for {idle:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.model_loaded:
            return False, "model not loaded"
        if not self.assigned:
            return False, "no partitions assigned"
        if self.restoring:
            return False, "restoring state"
        if not self.broker_ok:
            return False, "broker unreachable: checkpoints are postponed"
        return True, "ok"


class OpsServer:
    """Serves the registry and the health state on host:port (port 0 picks a free one)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: HealthState, *,
                 request_timeout_s: float = 10.0, max_connections: int = 64) -> None:
        self.registry = registry
        self.health = health
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        self._sock = _listen(host, port)  # bound here: a taken port fails start-up in the caller's thread
        self.port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._serve, name="rnnwatch-http", daemon=True)

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    def start(self) -> OpsServer:
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, sock=self._sock, limit=_MAX_HEAD_BYTES))
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        elif self._server is None:
            self._sock.close()
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always set inside a task
        self._tasks.add(task)
        writer.transport.set_write_buffer_limits(high=0)  # drain() returns once the kernel has every byte
        try:
            if len(self._tasks) > self.max_connections:
                await self._respond(writer, 503, b"too many connections to the ops server\n")
                return
            try:
                async with asyncio.timeout(self.request_timeout_s):
                    head = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                await self._respond(writer, 408, b"request not received in time\n")
                return
            except asyncio.LimitOverrunError:
                await self._respond(writer, 431, b"request head larger than 8 KiB\n")
                return
            except asyncio.IncompleteReadError:
                return  # the client went away
            await self._route(writer, head)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()  # the response is flushed or given up on: never wait on a slow reader

    async def _route(self, writer: asyncio.StreamWriter, head: bytes) -> None:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            await self._respond(writer, 400, b"malformed request line\n")
            return
        method, path = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            await self._respond(writer, 405, b"only GET and HEAD\n", extra=b"Allow: GET, HEAD\r\n")
            return
        extra = b""
        if path == b"/metrics":
            status = 200
            body, content_type, extra = self._metrics(_headers(head), parts[1])
        elif path in (b"/healthz", b"/readyz"):
            ok, detail = self.health.live() if path == b"/healthz" else self.health.ready()
            status, body, content_type = (200 if ok else 503), (detail + "\n").encode(), _TEXT
        else:
            status, body, content_type = 404, b"not found: try /metrics, /healthz or /readyz\n", _TEXT
        await self._respond(writer, status, b"" if method == b"HEAD" else body, content_type,
                            length=len(body), extra=extra)

    def _metrics(self, headers: dict[str, str], target: bytes) -> tuple[bytes, str, bytes]:
        """prometheus-client's own exposition: the format the scraper's Accept asks for (Prometheus text or
        OpenMetrics), gzip when its Accept-Encoding allows, ``?name[]=...`` restricting the families."""
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        query = parse_qs(target.partition(b"?")[2].decode("latin-1"))
        registry = self.registry.restricted_registry(query["name[]"]) if "name[]" in query else self.registry
        body = encoder(registry)
        if gzip_accepted(headers.get("accept-encoding", "")):
            return gzip.compress(body), content_type, b"Content-Encoding: gzip\r\nVary: Accept, Accept-Encoding\r\n"
        return body, content_type, b"Vary: Accept, Accept-Encoding\r\n"

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str = _TEXT, *,
                       length: int | None = None, extra: bytes = b"") -> None:
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n").encode()
        writer.write(head + extra + b"\r\n" + body)
        async with asyncio.timeout(self.request_timeout_s):
            await writer.drain()
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()


def _headers(head: bytes) -> dict[str, str]:
    """Request header fields by lower-case name (the last one wins; the ops server needs only a few)."""
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6, whatever the host names)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        why = "is in use by another process" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        msg = (f"metrics port {port} on {host} {why}: pick another with --metrics-port / RNNWATCH_METRICS_PORT "
               "(0 = any free port)")
        raise ConfigError(msg) from None
    return sock

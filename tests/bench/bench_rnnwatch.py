"""``rnnwatch`` as a user runs it: the console script in a subprocess, per transport, with its own memory.

Transports are names (``kafka-python``, ``confluent``, ...). Which ones exist is read from ``rnnwatch run
--help``: without a ``--transport`` option only the default (kafka-python) exists and it runs without the
flag; with one, each name is passed as ``--transport NAME`` when the help lists it. A transport that is not
offered is reported as not available, never measured with something else in its place.

Peak RSS is the process's own ``ru_maxrss`` (see ``bench_process`` for why it takes a launcher to get it);
``/proc/<pid>/status`` is also sampled while it runs, for the RSS held at the end.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.bench_peers import BenchError
from tests.bench.bench_process import Launched

__all__ = ["DEFAULT_TRANSPORT", "RunningService", "Transport", "model_info", "parse_transport_help",
           "resolve_transports", "run_until_caught_up", "run_args"]

DEFAULT_TRANSPORT = "kafka-python"
_TRANSPORT_CHOICES = re.compile(r"--transport\s+\{([^}]*)\}")


def rnnwatch_command() -> list[str]:
    """The console script installed beside this interpreter (what ``pip install rnnwatch`` gives a user)."""
    script = Path(sys.executable).with_name("rnnwatch")
    if not script.exists():
        msg = f"no rnnwatch console script beside {sys.executable}: run `make install-dev` first"
        raise BenchError(msg)
    return [str(script)]


@dataclass(frozen=True)
class Transport:
    name: str
    available: bool
    flag: tuple[str, ...] = ()  # extra arguments for `rnnwatch run`
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        if self.available:
            return {"available": True, "arguments": list(self.flag)}
        return {"available": False, "reason": self.reason}


def parse_transport_help(help_text: str) -> tuple[bool, tuple[str, ...] | None]:
    """(``--transport`` offered?, its choices if the help lists them as ``{a,b}``)."""
    found = _TRANSPORT_CHOICES.search(help_text)
    if found:
        return True, tuple(c.strip() for c in found.group(1).split(",") if c.strip())
    return bool(re.search(r"--transport\b", help_text)), None


def resolve_transports(names: list[str], help_text: str, extra: tuple[str, ...] = ()) -> list[Transport]:
    """Each name as a transport `rnnwatch run` offers (with its arguments, plus ``extra``) or not available."""
    offered, choices = parse_transport_help(help_text)
    out = []
    for name in names:
        if not offered:
            if name == DEFAULT_TRANSPORT:
                out.append(Transport(name, True, extra))
            else:
                out.append(Transport(name, False, reason="`rnnwatch run` has no --transport option: only the "
                                                          f"default {DEFAULT_TRANSPORT} transport exists"))
        elif choices is not None and name not in choices:
            out.append(Transport(name, False, reason=f"`rnnwatch run --transport` offers {', '.join(choices)}"))
        else:
            out.append(Transport(name, True, ("--transport", name, *extra)))
    return out


@functools.cache
def run_help() -> str:
    done = subprocess.run([*rnnwatch_command(), "run", "--help"], capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        msg = f"`rnnwatch run --help` failed ({done.returncode}): {done.stderr[-500:]}"
        raise BenchError(msg)
    return done.stdout


def model_info(model: str) -> dict[str, Any]:
    """`rnnwatch check --json MODEL`: name, version, architecture, sha256 and state bytes per key."""
    done = subprocess.run([*rnnwatch_command(), "check", "--json", model], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        msg = f"`rnnwatch check --json {model}` failed: {done.stderr[-500:]}"
        raise BenchError(msg)
    info = json.loads(done.stdout)
    return {"file": Path(model).name, **{k: info[k] for k in ("name", "version", "architecture", "sha256",
                                                              "state_bytes_per_key")},
            "warmup_steps": info["scoring"]["warmup_steps"]}


def run_args(bootstrap: str, topic: str, model: str, transport: Transport, *extra: str) -> list[str]:
    """`rnnwatch run` on ``topic`` with explicit output/DLQ topics and a fresh group (changelog ``<group>.state``)."""
    group = f"bench-{topic}-{transport.name}-{time.monotonic_ns()}"
    return [*rnnwatch_command(), "run", "--bootstrap-servers", bootstrap, "--input-topic", topic,
            "--output-topic", f"{topic}.anomalies", "--dead-letter-topic", f"{topic}.dlq", "--group-id", group,
            "--auto-offset-reset", "earliest",
            "--model", model, "--session-timeout-ms", "6000", "--log-level", "WARNING", *transport.flag, *extra]


def run_until_caught_up(cmd: list[str], timeout_s: float) -> dict[str, Any]:
    """Run ``cmd --until-caught-up``; its JSON summary plus its own peak RSS, wall time and last RSS sample."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        launched = Launched([*cmd, "--until-caught-up"], out, err)
        try:
            done = launched.wait(timeout_s)
        except BaseException:  # the bench itself stopped (Ctrl-C, SIGTERM): leave nothing running
            launched.kill()
            raise
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if done["exit_code"] != 0:
        why = "killed after the time limit" if done["wall_seconds"] >= timeout_s else f"exit code {done['exit_code']}"
        msg = f"`rnnwatch run --until-caught-up` failed ({why}): {stderr[-2000:]}"
        raise BenchError(msg)
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return {**summary, **{k: done[k] for k in ("peak_rss_mib", "cpu_seconds", "wall_seconds", "rss_last_sample_mib")}}


class RunningService:
    """A long-running ``rnnwatch run`` (the latency section): ready check, metrics, SIGTERM stop."""

    def __init__(self, cmd: list[str], metrics_port: int) -> None:
        self.metrics_url = f"http://127.0.0.1:{metrics_port}"
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - the process writes here until stop() closes it
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = Launched([*cmd, "--metrics-port", str(metrics_port)], self._out, self._err)

    def wait_ready(self, timeout_s: float) -> None:
        """Until /readyz answers 200 (model loaded, partitions assigned and restored)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.exited():
                msg = f"rnnwatch exited before it was ready: {self._stderr_tail()}"
                raise BenchError(msg)
            with contextlib.suppress(OSError, urllib.error.URLError), \
                    urllib.request.urlopen(f"{self.metrics_url}/readyz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
            time.sleep(0.2)
        msg = f"rnnwatch was not ready within {timeout_s:.0f} s: {self._stderr_tail()}"
        raise BenchError(msg)

    def metric(self, name: str, missing: float | None = None) -> float:
        """The sum of the samples called ``name`` on /metrics; ``missing`` when there are none (else raise).

        A labelled counter has no sample until a label value is seen, hence ``missing`` for those.
        """
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        values = [s.value for family in text_string_to_metric_families(text) for s in family.samples
                  if s.name == name]
        if values:
            return float(sum(values))
        if missing is not None:
            return missing
        msg = f"rnnwatch's /metrics has no {name}"
        raise BenchError(msg)

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM (finish the batch, checkpoint, leave) and wait; exit code, peak RSS, wall time."""
        self.process.terminate()
        done = self.process.wait(timeout_s)
        tail = self._stderr_tail()
        self._out.close()
        self._err.close()
        if done["exit_code"] != 0:
            msg = f"rnnwatch exited with {done['exit_code']} on SIGTERM: {tail}"
            raise BenchError(msg)
        return done

    def kill(self) -> None:
        """Clean-up after a failure elsewhere: end the process whatever state it is in."""
        self.process.kill()

    def _stderr_tail(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")[-2000:]

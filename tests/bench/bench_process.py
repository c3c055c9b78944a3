"""Start a command so that its peak RSS is its own, not the harness's.

Linux carries a process's ``ru_maxrss`` across ``exec``: a child forked (or vforked) from the harness starts
with the harness's high-water RSS, so ``wait4`` on a direct child reports at least what the harness ever
held (after building a million-tick feed, hundreds of MiB for a process that used 100). The command is
therefore started by a small launcher (``python -S``, about 10 MiB): the launcher inherits the harness's
figure, the command inherits only the launcher's, and the launcher hands back the command's ``wait4`` usage
in a file. The launcher forwards SIGTERM/SIGINT and exits with the command's exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["Launched"]

_LAUNCHER = """
import json, os, signal, sys
child = []
def forward(signum, frame):
    if child:
        os.kill(child[0], signum)
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, forward)
child.append(os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ))
with open(sys.argv[1] + ".pid", "w") as f:
    f.write(str(child[0]))
_, status, usage = os.wait4(child[0], 0)
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime, "exit_code": code}, f)
sys.exit(code if code >= 0 else 128 - code)
"""


class _RssSampler(threading.Thread):
    """Reads VmRSS of the command every ``interval_s`` (for the RSS it holds at the end, beside the peak)."""

    def __init__(self, pid_file: Path, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid_file = pid_file
        self.interval_s = interval_s
        self.last_kib = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        status: Path | None = None
        while not self.stop_event.wait(self.interval_s):
            if status is None:
                with contextlib.suppress(OSError, ValueError):
                    status = Path(f"/proc/{int(self.pid_file.read_text())}/status")
                continue
            try:
                text = status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    self.last_kib = int(line.split()[1])


class Launched:
    """``cmd`` running under the launcher, in its own session; stdout/stderr go to the given files."""

    def __init__(self, cmd: list[str], stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="rnnwatch-bench-")
        self._result = Path(self._dir.name) / "usage.json"
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(self._result), *cmd],
                                     stdout=stdout, stderr=stderr, start_new_session=True)
        self._sampler = _RssSampler(self._result.with_suffix(".json.pid"))
        self._sampler.start()

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def terminate(self) -> None:
        """SIGTERM, forwarded to the command by the launcher."""
        if not self.exited():
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the launcher's session (the launcher and the command), then reap the launcher."""
        if not self.exited():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the command; exit code, its own peak RSS (MiB) and CPU seconds (user + system, start-up
        included), wall time and the last RSS sample.

        Past ``timeout_s`` the command is killed and the exit code says so (-9).
        """
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._sampler.stop_event.set()
        try:
            usage = json.loads(self._result.read_text())
        except (OSError, ValueError):  # killed with the launcher: no usage was written
            usage = {"maxrss_kib": 0, "cpu_s": None, "exit_code": self.proc.returncode}
        finally:
            self._dir.cleanup()
        cpu = usage["cpu_s"]
        return {"exit_code": usage["exit_code"], "peak_rss_mib": round(usage["maxrss_kib"] / 1024, 1),
                "cpu_seconds": None if cpu is None else round(cpu, 2),
                "wall_seconds": round(time.monotonic() - self.started, 2),
                "rss_last_sample_mib": round(self._sampler.last_kib / 1024, 1)}

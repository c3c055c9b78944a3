"""Logging set-up: human text by default, one JSON object per line for log shippers.

Records about an input record, a partition or the broker pass ``extra={...}`` with the fields in
:data:`FIELDS`: ``event`` (what happened, a fixed name per kind of line: ``assigned``, ``revoked``, ``lost``,
``restored``, ``restoring``, ``restore_slow``, ``commit``, ``commit_failed``, ``broker_unreachable``,
``broker_reachable``, ``broker_error``, ``delivery_failed``, ``dead_letter``, ``state_reset``), ``topic``,
``partition``, ``partitions``, ``offset``, ``offsets`` (partition → next offset), ``key``, ``reason``,
``count``, ``seconds``. The JSON format carries them as fields of their own, so a log shipper can filter by
partition, event or reason without parsing the message; the text format shows the message only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

__all__ = ["FIELDS", "RateLimitedLog", "configure_logging"]

FIELDS = ("event", "topic", "partition", "partitions", "offset", "offsets", "key", "reason", "count", "seconds")


class RateLimitedLog:
    """Logs a recurring condition at most once per ``interval_s``, saying how many it held back since.

    For conditions a bad stream can raise on every record (one line per record would drown the log and
    cost more than the processing); the metric next to it counts every occurrence.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._next_s = float("-inf")
        self._held_back = 0

    def warning(self, msg: str, *args: object, exc_info: bool = False,
                extra: dict[str, object] | None = None) -> bool:
        """Log now (True) or count it for the next line (False)."""
        now = self.clock()
        if now < self._next_s:
            self._held_back += 1
            return False
        if self._held_back:
            msg = f"{msg} ({self._held_back} more since the last such message, not logged)"
        self.logger.warning(msg, *args, exc_info=exc_info, extra=extra)
        self._next_s = now + self.interval_s
        self._held_back = 0
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                                  "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))

"""Files a user names on the command line: read, written and published without a traceback.

Every failure a path can cause (missing, a directory, unreadable, not UTF-8, a missing output directory)
becomes a :class:`~rnnwatch.consumer.errors.ConfigError` naming the file and the flag to fix, so the CLI
entry point prints one line. Models are published with mode 0644 (``mkstemp`` creates 0600, which the
container's non-root user could not read) by an atomic rename.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import TextIO

from rnnwatch.consumer.errors import ConfigError

__all__ = ["MODEL_FILE_MODE", "open_output", "publish", "read_csv"]

MODEL_FILE_MODE = 0o644


def _why(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(exc, PermissionError):
        return "is not readable (permission denied)"
    return exc.strerror or type(exc).__name__


def read_csv(path: str | Path, what: str = "input") -> tuple[list[str], list[list[str]]]:
    """(header with names stripped, non-empty rows) of a UTF-8 CSV; ConfigError on any problem."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = [r for r in reader if r]
    except UnicodeDecodeError as exc:
        msg = f"{what} file {p} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it, e.g. iconv -t UTF-8"
        raise ConfigError(msg) from None
    except csv.Error as exc:
        msg = f"{what} file {p} is not a readable CSV: {exc}"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"{what} file {p} {_why(exc)}"
        raise ConfigError(msg) from None
    if not header:
        msg = f"{what} file {p} is empty: expected a header row"
        raise ConfigError(msg)
    return [h.strip() for h in header], rows


def open_output(path: str) -> TextIO:
    """``path`` opened for writing text (``-``: stdout, which the caller must not close)."""
    if path == "-":
        return sys.stdout
    p = Path(path)
    if not p.parent.is_dir():
        msg = f"cannot write {p}: directory {p.parent} does not exist (create it first)"
        raise ConfigError(msg)
    try:
        return p.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        msg = f"cannot write {p}: {_why(exc)}"
        raise ConfigError(msg) from None


def publish(tmp: str | Path, dest: str | Path) -> None:
    """Make ``tmp`` world-readable (0644) and move it to ``dest`` atomically (same file system)."""
    os.chmod(tmp, MODEL_FILE_MODE)
    Path(tmp).replace(dest)

"""Write a proven model: nothing appears at the destination unless the finished file passed every check.

`rnnwatch train`, `rnnwatch export` and `rnnwatch adopt` all write a step model the same way: build it as a draft
beside the destination (same file system, so the final move is an atomic rename), check it (each command its own
proof: parity against torch, against the original graph ...), let the runtime's own contract check read it as
``rnnwatch run`` will, and only then publish it (0644: the container's non-root user reads it). A failure at any
point leaves the destination untouched and removes the draft. No torch here: ``adopt`` needs only onnx.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.files import publish

__all__ = ["proven_model"]


@contextlib.contextmanager
def proven_model(path: str | Path) -> Iterator[Path]:
    """A draft path for the model ``path`` names; published there when the block ends without an exception.

    The block writes and proves the draft; on leaving it, ``load_signature`` (a ``ModelError`` if the contract is
    broken) runs before the atomic move. The destination's folder is created if missing.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        draft = Path(tmp) / "draft.onnx"
        yield draft
        load_signature(draft)  # the runtime's own contract check, before the file appears
        publish(draft, out)

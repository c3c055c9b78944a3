"""`proven_model`: the one way train, export and adopt write a model (draft, checks, contract, atomic publish)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from rnnwatch.consumer.errors import ModelError
from rnnwatch.export.proven import proven_model


def test_a_draft_that_passes_is_published_readable_and_leaves_nothing_behind(ewma_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "m.onnx"  # the folder is created
    with proven_model(out) as draft:
        assert draft.parent.parent == out.parent and not out.exists()
        shutil.copyfile(ewma_path, draft)
    assert out.read_bytes() == ewma_path.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"]


def test_a_draft_that_breaks_the_contract_never_appears(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    with pytest.raises(ModelError), proven_model(out) as draft:
        draft.write_bytes(b"not an onnx model")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_proof_inside_the_block_keeps_the_old_model(ewma_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the model in service")
    with pytest.raises(RuntimeError, match="parity"), proven_model(out) as draft:
        shutil.copyfile(ewma_path, draft)
        raise RuntimeError("parity failed")
    assert out.read_bytes() == b"the model in service"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]

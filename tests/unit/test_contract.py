"""The step-model contract: good models load, broken ones are refused with a message naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from onnx import TensorProto

from rnnwatch.consumer import contract as c
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.errors import ModelError
from tests.unit.onnx_builders import default_metadata, ewma_model


def test_good_model_signature(ewma_path: Path) -> None:
    sig = load_signature(ewma_path)
    assert sig.name == "ewma"
    assert sig.feature_names == ("price",)
    assert sig.features[0].domain == "positive"
    assert [s.name for s in sig.states] == ["m", "n"]
    assert sig.state_bytes_per_key == 8
    assert sig.has_forecast_scale and not sig.has_score
    assert sig.scoring.threshold == 0.999
    assert len(sig.sha256) == 64


def test_identity_changes_with_the_file(tmp_path: Path) -> None:
    a = load_signature(ewma_model(tmp_path / "a.onnx"))
    b = load_signature(ewma_model(tmp_path / "b.onnx", scale=2.0))
    assert a.identity != b.identity


def _refusal(path: Path) -> str:
    with pytest.raises(ModelError) as err:
        load_signature(path)
    return str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in _refusal(tmp_path / "nope.onnx")


def test_not_onnx_at_all(tmp_path: Path) -> None:
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"this is not a protobuf")
    assert "not a loadable ONNX model" in _refusal(p)


def test_no_rnnwatch_metadata(tmp_path: Path) -> None:
    p = ewma_model(tmp_path / "m.onnx", metadata={})
    assert "no rnnwatch metadata" in _refusal(p)


def test_wrong_contract_version(tmp_path: Path) -> None:
    p = ewma_model(tmp_path / "m.onnx", metadata=default_metadata(**{c.META_CONTRACT: "99"}))
    assert "contract v99" in _refusal(p)


def test_missing_state_output(tmp_path: Path) -> None:
    p = ewma_model(tmp_path / "m.onnx", drop_outputs=("state_out.n",))
    assert "no output 'state_out.n'" in _refusal(p)


def test_state_declared_but_not_in_graph(tmp_path: Path) -> None:
    states = [{"name": "m", "shape": [1]}, {"name": "n", "shape": [1]}, {"name": "extra", "shape": [4]}]
    p = ewma_model(tmp_path / "m.onnx", metadata=default_metadata(**{c.META_STATE: json.dumps(states)}))
    assert "state_in.extra" in _refusal(p)


def test_state_shape_mismatch(tmp_path: Path) -> None:
    states = [{"name": "m", "shape": [3]}, {"name": "n", "shape": [1]}]
    p = ewma_model(tmp_path / "m.onnx", metadata=default_metadata(**{c.META_STATE: json.dumps(states)}))
    assert "expected [batch, 3]" in _refusal(p)


def test_undeclared_graph_state_is_refused(tmp_path: Path) -> None:
    states = [{"name": "m", "shape": [1]}]
    p = ewma_model(tmp_path / "m.onnx", metadata=default_metadata(**{c.META_STATE: json.dumps(states)}))
    assert "contract does not know" in _refusal(p)


def test_wrong_dtype(tmp_path: Path) -> None:
    p = ewma_model(tmp_path / "m.onnx", x_dtype=TensorProto.DOUBLE)
    assert "tensor(double)" in _refusal(p)


def test_fixed_batch_dimension(tmp_path: Path) -> None:
    p = ewma_model(tmp_path / "m.onnx", batch=1)
    assert "fixed batch dimension" in _refusal(p)


@pytest.mark.parametrize(
    ("scoring", "needle"),
    [
        ({"warmup_steps": 3, "threshold": 1.5, "halflife_steps": 5, "residual_std": [1.0]}, "out of range"),
        ({"warmup_steps": 3, "threshold": 0.9, "halflife_steps": 5, "residual_std": [1.0, 2.0]}, "residual_std"),
        ({"threshold": 0.9}, "needs warmup_steps"),
    ],
)
def test_bad_scoring_metadata(tmp_path: Path, scoring: dict[str, object], needle: str) -> None:
    p = ewma_model(tmp_path / "m.onnx", metadata=default_metadata(**{c.META_SCORING: json.dumps(scoring)}))
    assert needle in _refusal(p)


def test_bad_feature_domain(tmp_path: Path) -> None:
    feats = json.dumps([{"name": "price", "domain": "imaginary"}])
    p = ewma_model(tmp_path / "m.onnx", metadata=default_metadata(**{c.META_FEATURES: feats}))
    assert "domain 'imaginary'" in _refusal(p)


def test_metadata_not_json(tmp_path: Path) -> None:
    p = ewma_model(tmp_path / "m.onnx", metadata=default_metadata(**{c.META_MODEL: "{oops"}))
    assert "not valid JSON" in _refusal(p)


def test_the_runner_runs_the_bytes_that_were_validated_not_a_file_swapped_in_later(tmp_path: Path) -> None:
    """The model file is read once: a file replaced after validation cannot run under the old identity."""
    import numpy as np

    from rnnwatch.consumer.runner import make_runner
    from rnnwatch.consumer.types import TickBatch

    path = ewma_model(tmp_path / "model.onnx", scale=1.0)
    sig = load_signature(path)
    batch = TickBatch(np.zeros(4, dtype=np.int32), np.arange(4, dtype=np.int64), [b"k"] * 4,
                      np.arange(1, 5, dtype=np.int64), np.array([[10.0], [12.0], [9.0], [15.0]], dtype=np.float32),
                      np.zeros(4, dtype=np.int64))
    before = make_runner(sig).process(batch)
    ewma_model(path, scale=50.0)  # same path, another model: a different forecast_scale, so different scores
    assert load_signature(path).sha256 != sig.sha256
    after = make_runner(sig).process(batch)
    np.testing.assert_array_equal(before.score, after.score)
    path.write_bytes(b"not a model any more")
    np.testing.assert_array_equal(make_runner(sig).process(batch).score, before.score)

"""`rnnwatch adopt` on models written with onnx.helper (no torch): mapping, wrapping, parity, calibration, refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rnnwatch.consumer.cli import main
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.offline import score_array
from rnnwatch.export.adopt import (
    AdoptError,
    AdoptOptions,
    ControlFlowError,
    ExternalDataError,
    FixedShapeError,
    InputTypeError,
    MappingError,
    MappingRequest,
    NoStateError,
    adopt_model,
)
from rnnwatch.export.adopt.guess import stem
from rnnwatch.export.calibrate import HOLDOUT, PROVISIONAL_THRESHOLD
from rnnwatch.export.validate import ShapeError
from tests.integration.helpers import write_prices
from tests.unit.onnx_builders import custom_op_model, ewma_model, gru_op_model, keras_like_gru_model, scan_ewma_model


def _adopt(source: Path, out: Path, transform: str = "level", **options: object) -> Path:
    adopt_model(AdoptOptions(source=source, output=out, transform=transform, **options))  # type: ignore[arg-type]
    return out


def test_a_gru_operator_graph_is_adopted_guessed_and_proved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = gru_op_model(tmp_path / "gru.onnx")
    assert main(["adopt", str(source), "--transform", "level", "--feature", "load", "--output",
                 str(tmp_path / "step.onnx")]) == 0
    printed = capsys.readouterr().out
    for needle in ("guessed  states initial_h -> final_h", "layout sequence-first", "forecast prediction",
                   "mapping  --input observations --layout sequence-first --state initial_h=final_h --forecast "
                   "prediction", "parity   max abs err", "NOT calibrated"):
        assert needle in printed
    sig = load_signature(tmp_path / "step.onnx")
    assert sig.architecture == "adopted:gru" and sig.feature_names == ("load",)
    assert [(s.name, s.shape) for s in sig.states] == [("h", (1, 8))]
    p = sig.provenance
    assert p["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert p["adopted_from"] == "gru.onnx" and p["calibrated"] is False
    assert p["parity"]["max_abs_error"] <= 1e-4 and p["parity"]["batch_max_abs_error"] <= 1e-5
    assert main(["check", str(tmp_path / "step.onnx")]) == 0
    assert (tmp_path / "step.onnx").stat().st_mode & 0o777 == 0o644  # readable by the container's non-root user


def test_the_original_weights_are_kept_byte_for_byte(tmp_path: Path) -> None:
    source = gru_op_model(tmp_path / "gru.onnx")
    adopted = onnx.load(str(_adopt(source, tmp_path / "step.onnx")))
    kept = {i.name: i for i in adopted.graph.initializer}
    for weight in onnx.load(str(source)).graph.initializer:
        assert kept[f"src/{weight.name}"].raw_data == weight.raw_data
        assert kept[f"src/{weight.name}"].dims == weight.dims


def test_stepping_the_adopted_model_reproduces_one_call_of_the_original(tmp_path: Path) -> None:
    """Independent of the proof's own code: the runtime's offline path vs onnxruntime on the original file."""
    source = gru_op_model(tmp_path / "gru.onnx", seed=3)
    out = _adopt(source, tmp_path / "step.onnx", "level", mean=(100.0,), std=(5.0,))
    xs = 100 + 5 * np.random.default_rng(0).standard_normal((80, 1))
    u = ((xs - 100.0) / 5.0).astype(np.float32)[:, None, :]  # [time, batch=1, F]: the operator's own layout
    original = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(
        ["prediction"], {"observations": u, "initial_h": np.zeros((1, 1, 8), np.float32)})[0][:, 0]
    np.testing.assert_allclose(score_array(out, xs).forecasts, 100.0 + 5.0 * original, rtol=1e-5, atol=1e-4)


def test_a_scan_whose_state_is_exposed_can_be_stepped(tmp_path: Path) -> None:
    out = _adopt(scan_ewma_model(tmp_path / "scan.onnx", expose_state=True), tmp_path / "step.onnx", "none")
    sig = load_signature(out)
    assert [s.name for s in sig.states] == ["s"] and not sig.has_forecast_scale
    xs = np.array([10.0, 20.0, 20.0])
    np.testing.assert_allclose(score_array(sig, xs).forecasts[:, 0], [2.0, 5.6, 8.48], rtol=1e-6)


def test_held_out_data_calibrates_the_threshold_through_the_runtime(tmp_path: Path) -> None:
    data = write_prices(tmp_path / "history.csv")
    out = _adopt(gru_op_model(tmp_path / "gru.onnx"), tmp_path / "step.onnx", "log-return", std=(0.01,),
                 features=("price",), data=data, key_column="symbol", time_column="ts")
    sig = load_signature(out)
    assert sig.scoring.threshold != PROVISIONAL_THRESHOLD and 0.99 <= sig.scoring.threshold < 0.999999
    assert sig.provenance["calibrated"] is True and sig.provenance["holdout_rows"] == 3 * 80
    assert sig.provenance["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert sig.has_forecast_scale and sig.features[0].domain == "positive"
    prices = np.loadtxt(data, delimiter=",", skiprows=1, usecols=2).reshape(-1, 3).T
    held = [score_array(sig, p).is_anomaly[int(len(p) * (1 - HOLDOUT)):] for p in prices]
    assert sum(int(h.sum()) for h in held) / sum(len(h) for h in held) <= 0.005


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    source = gru_op_model(tmp_path / "gru.onnx")
    a = _adopt(source, tmp_path / "a.onnx", adopted_at="2026-01-01T00:00:00Z")
    b = _adopt(source, tmp_path / "b.onnx", adopted_at="2026-01-01T00:00:00Z")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(("build", "error", "says"), [
    (lambda p: scan_ewma_model(p), ControlFlowError, "inside a Scan"),
    (lambda p: gru_op_model(p, state_input=False), NoStateError, "re-export it with the initial states as inputs"),
    (lambda p: gru_op_model(p, external_data=True), ExternalDataError, "merge them first"),
    (lambda p: gru_op_model(p, lengths_input=True), InputTypeError, "'sequence_lens' is int32"),
    (lambda p: gru_op_model(p, extra_input=True), MappingError, "offset [seq, batch, 1] are not mapped"),
    (lambda p: gru_op_model(p, batch=3), FixedShapeError, "fixed batch size 3"),
    (lambda p: gru_op_model(p, seq=5), FixedShapeError, "takes exactly 5 steps per call"),
    (lambda p: ewma_model(p), AdoptError, "already an rnnwatch step model"),
    (lambda p: custom_op_model(p), AdoptError, "onnxruntime cannot load it"),
])
def test_what_cannot_be_adopted_is_refused_with_what_to_do(build: object, error: type[Exception], says: str,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = build(tmp_path / "model.onnx")  # type: ignore[operator]
    with pytest.raises(error, match=None) as caught:
        _adopt(source, tmp_path / "step.onnx")
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert main(["adopt", str(source), "--transform", "level", "--output", str(tmp_path / "step.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnwatch adopt: error: ") and "Traceback" not in err
    assert not (tmp_path / "step.onnx").exists()


def test_a_wrong_layout_is_refused_by_the_proof(tmp_path: Path) -> None:
    source = gru_op_model(tmp_path / "gru.onnx")
    with pytest.raises(ShapeError, match="the layout or a state's batch axis looks wrong"):
        _adopt(source, tmp_path / "step.onnx", mapping=MappingRequest(layout="batch-first"))
    assert list(tmp_path.iterdir()) == [source]


def test_a_mapping_naming_what_the_model_lacks_lists_what_it_has(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"has no output 'hn' \(its outputs: prediction \[seq, batch, 1\]"):
        _adopt(gru_op_model(tmp_path / "gru.onnx"), tmp_path / "step.onnx",
               mapping=MappingRequest(states=(("initial_h", "hn"),)))


@pytest.mark.parametrize(("flags", "says"), [
    (["--transform", "log-return", "--feature", "spread:real"], "domain 'real' does not fit --transform log-return"),
    (["--transform", "none", "--std", "2"], "--transform none reads raw values"),
    (["--transform", "level", "--std", "1,2"], "--std takes 1 value or one per feature (1), got 2"),
    (["--transform", "level", "--feature", "a", "--feature", "b"], "the model reads 1 feature(s) per step"),
])
def test_flags_that_contradict_the_model_are_refused(flags: list[str], says: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adopt", str(gru_op_model(tmp_path / "gru.onnx")), *flags, "--output", str(tmp_path / "s.onnx")]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(("name", "expected"), [
    ("h0", "h"), ("hn", "h"), ("c_0", "c"), ("c_n", "c"), ("initial_h", "h"), ("final_h", "h"),
    ("state_in", "state"), ("state_out", "state"), ("hidden.in", "hidden"), ("x", "x"), ("input", "input"),
])
def test_state_names_pair_by_their_stem(name: str, expected: str) -> None:
    assert stem(name) == expected


def test_mapping_every_input_as_a_state_leaves_no_observation(tmp_path: Path) -> None:
    source = scan_ewma_model(tmp_path / "scan.onnx", expose_state=True)
    with pytest.raises(MappingError, match="no input is left for the observation"):
        _adopt(source, tmp_path / "step.onnx", "none", mapping=MappingRequest(states=(("s0", "sn"), ("x", "y"))))


def test_numbered_names_do_not_pair_an_observation_with_a_forecast() -> None:
    """tf2onnx names a Keras model's tensors input_1, input_2, output_1 …: the numbers say nothing about pairs."""
    assert stem("input_1") == "input_1" and stem("output_1") == "output_1"
    assert stem("layer_2_h0") == "layer.2.h"


def test_a_keras_model_converted_by_tf2onnx_is_read_batch_first(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    source = keras_like_gru_model(tmp_path / "keras.onnx")
    assert main(["adopt", str(source), "--transform", "none", "--output", str(tmp_path / "step.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "guessed  states input_2 -> gru" in printed and "layout batch-first: a Keras model" in printed
    sig = load_signature(tmp_path / "step.onnx")
    assert [(s.name, s.shape) for s in sig.states] == [("input_2", (6,))]


def test_a_layout_nothing_reveals_is_asked_for(tmp_path: Path) -> None:
    source = keras_like_gru_model(tmp_path / "anonymous.onnx", producer="somewhere")
    with pytest.raises(MappingError, match="pass --layout batch-first"):
        _adopt(source, tmp_path / "step.onnx", "none")
    sig = load_signature(_adopt(source, tmp_path / "step.onnx", "none", mapping=MappingRequest(layout="batch-first")))
    assert sig.provenance["mapping"]["layout"] == "batch-first"

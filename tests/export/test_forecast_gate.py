"""`rnnwatch train --forecast-gate`: a forecast without skill on the held-out rows is replaced by the transform's
no-change forecast, in the exported step graph (what onnxruntime computes), its scale and its metadata."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.offline import score_array
from rnnwatch.consumer.session import StepModel
from rnnwatch.export import AtolError, Scoring, StepGraph, StepSignatureSpec, Transform, check_parity
from rnnwatch.export.calibrate import holdout_start
from rnnwatch.export.cli import main
from rnnwatch.export.config import ArchOptions
from rnnwatch.export.convert import write_step_graph
from rnnwatch.export.registry import ARCHITECTURES

pytestmark = pytest.mark.export
N = 3000


@pytest.fixture(autouse=True)
def _torch_settings() -> Iterator[None]:
    """`rnnwatch train` pins torch to deterministic kernels and one thread: undo that for the next test."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def _csv(path: Path, values: np.ndarray) -> Path:
    path.write_text("value\n" + "".join(f"{v:.6f}\n" for v in values), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A positive random walk: iid log-returns, which nothing forecasts."""
    rng = np.random.default_rng(3)
    return _csv(tmp_path_factory.mktemp("walk") / "walk.csv", 50 * np.exp(np.cumsum(rng.normal(3e-4, 0.01, N))))


@pytest.fixture(scope="module")
def ar1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A strongly autocorrelated level (AR(1), phi 0.95, around 0: the level transform), which a GRU forecasts."""
    rng = np.random.default_rng(4)
    x = np.zeros(N)
    for t in range(1, N):
        x[t] = 0.95 * x[t - 1] + rng.normal()
    return _csv(tmp_path_factory.mktemp("ar1") / "ar1.csv", x)


def _train(csv: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["train", "--arch", "gru", "--input", str(csv), "--hidden", "8", "--epochs", "3",
                 "--trained-at", "2026-01-01T00:00:00Z", "--output", str(out), *extra]) == 0
    return capsys.readouterr().out


def _values(csv: Path) -> np.ndarray:
    return np.loadtxt(csv, skiprows=1, dtype=np.float64)


def test_a_random_walk_forecasts_no_change(walk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _train(walk, tmp_path / "m.onnx", capsys)
    sig = load_signature(tmp_path / "m.onnx")
    skill = sig.provenance["forecast_skill"]
    assert skill["gate"] == 3.0 and skill["weight"] == [0.0] and skill["t"][0] < 3.0
    assert skill["rows"] == N - holdout_start(N)
    said = [line for line in out.splitlines() if "forecast-gate" in line]
    assert len(said) == 1 and "value" in said[0] and f"t {skill['t'][0]:.2f} < gate 3" in said[0]
    assert "no change" in said[0] and "--forecast-gate 0 keeps" in said[0]
    # Through onnxruntime, as the runtime computes it: the next price is the last times exp(the training mean
    # log-return), the mean over the fitted rows (the first 80 %; a series' first return is the transform's 0).
    x = _values(walk)
    returns = np.log(x[1:] / x[:-1])
    mean = returns[:holdout_start(N) - 1].mean()
    forecasts = score_array(sig, x.astype(np.float32)).forecasts[:, 0]
    np.testing.assert_allclose(forecasts / x.astype(np.float32), np.exp(mean), rtol=2e-7)
    # Its scale: the held-out residual std of that forecast, not of the dropped model's.
    states = {s.name: np.broadcast_to(s.init, (1, *s.shape)).copy() for s in sig.states}
    forecast, scale, _, _ = StepModel(sig).run(x[:1].astype(np.float32)[:, None], states)
    assert scale is not None
    assert scale[0, 0] / forecast[0, 0] == pytest.approx(returns[holdout_start(N) - 1:].std(), rel=1e-5)


def test_gate_zero_keeps_the_models_forecast(walk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _train(walk, tmp_path / "m.onnx", capsys, "--forecast-gate", "0")
    assert "forecast-gate" not in out
    sig = load_signature(tmp_path / "m.onnx")
    skill = sig.provenance["forecast_skill"]
    assert skill["gate"] == 0.0 and skill["weight"] == [1.0] and skill["t"][0] < 3.0
    x = _values(walk).astype(np.float32)
    ratio = score_array(sig, x).forecasts[:, 0] / x
    assert ratio.std() > 1e-5  # the GRU's forecast moves with the inputs


def test_a_predictable_series_keeps_the_models_forecast(ar1: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = _train(ar1, tmp_path / "gated.onnx", capsys)
    assert "forecast-gate" not in out
    gated = load_signature(tmp_path / "gated.onnx")
    skill = gated.provenance["forecast_skill"]
    assert gated.provenance["transform"] == "level"
    assert skill["weight"] == [1.0] and skill["t"][0] > 10.0
    _train(ar1, tmp_path / "kept.onnx", capsys, "--forecast-gate", "0")
    x = _values(ar1).astype(np.float32)
    forecasts = score_array(gated, x).forecasts[:, 0]
    np.testing.assert_array_equal(forecasts, score_array(load_signature(tmp_path / "kept.onnx"), x).forecasts[:, 0])
    assert np.corrcoef(forecasts[:-1], x[1:])[0, 1] > 0.9


@pytest.mark.parametrize("kind", ["log-return", "diff", "level"])
def test_the_weight_is_in_the_step_graph_and_the_parity_proof_sees_it(kind: str, tmp_path: Path) -> None:
    """Feature 1's weight 0: its ONNX forecast is the transform's no-change forecast; feature 0 keeps the model's.
    The parity proof holds against the weighted torch graph and fails against the same graph unweighted."""
    torch.manual_seed(0)
    model = ARCHITECTURES["gru"].build(2, ArchOptions(hidden=6), 0)
    mean, std = np.array([0.01, 0.02]), np.array([0.5, 0.25])
    graph = StepGraph(model, Transform(kind, mean, std, np.ones(2), np.array([1.0, 0.0])))
    domain = graph.transform.domain if graph.transform is not None else ""
    spec = StepSignatureSpec(name="w", version="1", architecture="gru", features=[("a", domain), ("b", domain)],
                             states=graph.state_spec(), scoring=Scoring(residual_std=(1.0, 1.0)))
    path = tmp_path / "m.onnx"
    write_step_graph(graph, path, spec)
    check_parity(path, graph)
    with pytest.raises(AtolError):
        check_parity(path, StepGraph(model, Transform(kind, mean, std, np.ones(2))))
    x = np.array([[100.0, 40.0], [101.0, 41.0], [99.0, 38.0]], dtype=np.float32)
    forecasts = score_array(load_signature(path), x).forecasts
    no_change = {"log-return": x[:, 1] * np.exp(np.float32(0.02)), "diff": x[:, 1] + np.float32(0.02),
                 "level": np.full(3, 0.02, dtype=np.float32)}[kind]
    np.testing.assert_allclose(forecasts[:, 1], no_change, rtol=1e-6)
    with torch.no_grad():
        kept = graph.forward_sequence(torch.from_numpy(x)[None])[0, :, 0].numpy()
    np.testing.assert_allclose(forecasts[:, 0], kept, rtol=1e-5)


def test_the_default_weight_is_one() -> None:
    t = Transform("diff", np.zeros(3), np.ones(3), np.ones(3))
    assert t.weight.tolist() == [1.0, 1.0, 1.0]

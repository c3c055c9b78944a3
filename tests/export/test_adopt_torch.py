"""`rnnwatch adopt` on models exported by torch.onnx.export, as teams outside rnnwatch export them."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import Tensor, nn

from rnnwatch.consumer.cli import main
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.offline import score_array
from rnnwatch.export.adopt import (
    AdoptOptions,
    FixedShapeError,
    MappingError,
    MappingRequest,
    NoStateError,
    adopt_model,
)
from rnnwatch.export.convert import StepGraph, export_step_model
from rnnwatch.export.models.gru import GRUForecaster
from rnnwatch.export.signature import Scoring, StepSignatureSpec
from rnnwatch.export.transform import Transform
from rnnwatch.export.validate import AtolError
from tests.export.elsewhere import STD, TORCH_CASES, Forecaster, build, export, plain_export

pytestmark = pytest.mark.export
CASES = [*TORCH_CASES, "gru-op"]


def _adopt(source: Path, out: Path, transform: str = "log-return", **options: object) -> Path:
    adopt_model(AdoptOptions(source=source, output=out, transform=transform, std=(STD,), features=("price",),
                             **options))  # type: ignore[arg-type]
    return out


def _walk(steps: int = 600, shock_at: int = 450, seed: int = 5) -> np.ndarray:
    values = 50 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, STD, steps)))
    values[shock_at] *= 1.25
    return values


@pytest.mark.parametrize("case", CASES)
def test_each_model_is_adopted_checked_and_scored(case: str, adopted_models: dict[str, tuple[Path, Path]],
                                                  tmp_path: Path) -> None:
    _source, step = adopted_models[case]
    sig = load_signature(step)
    cell, batch_first, layers = TORCH_CASES.get(case, ("gru", False, 1))
    mapping = sig.provenance["mapping"]
    assert mapping["layout"] == ("batch-first" if batch_first else "sequence-first")
    assert [(s.name, s.shape) for s in sig.states] == [("t.prev", (1,)), ("t.seen", (1,)),
                                                       *((n, (layers, 8)) for n in ("h", "c")[:1 + (cell == "lstm")])]
    assert sig.provenance["parity"]["max_rel_error"] < 1e-4 and sig.provenance["calibrated"]
    assert main(["check", str(step)]) == 0
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    with src.open("w", newline="") as fh:
        csv.writer(fh).writerows([("timestamp", "price"), *((1_600_000_000 + 60 * i, f"{v:.4f}")
                                                            for i, v in enumerate(_walk()))])
    assert main(["score", "--model", str(step), "--input", str(src), "--output", str(dst)]) == 0
    with dst.open() as fh:
        flagged = [i for i, row in enumerate(csv.DictReader(fh)) if row["is_anomaly"] == "1"]
    assert 450 in flagged and len(flagged) <= 6


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_the_runtime_forecasts_what_the_torch_module_forecasts(case: str,
                                                              adopted_models: dict[str, tuple[Path, Path]]) -> None:
    """End to end, independent of the proof: torch forward over the whole series vs the runtime stepping it."""
    module, values = build(case), _walk(seed=9)
    u = torch.from_numpy(np.log(values[1:] / values[:-1]) / STD).float()[None, :, None]
    u = torch.cat([torch.zeros(1, 1, 1), u], dim=1)  # a key's first step reads "no change"
    with torch.no_grad():
        y = module(u if module.batch_first else u.transpose(0, 1), *module.zero_states(1))[0]
    y = (y if module.batch_first else y.transpose(0, 1))[0, :, 0].numpy()
    expected = values * np.exp(STD * y)
    got = score_array(adopted_models[case][1], values).forecasts[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_swapped_states_are_refused_naming_the_state_mapping(adopted_models: dict[str, tuple[Path, Path]],
                                                            tmp_path: Path) -> None:
    source = adopted_models["lstm-bf-2"][0]
    with pytest.raises(AtolError, match=r"state mapping looks wrong \(h0 -> cn, c0 -> hn\)"):
        _adopt(source, tmp_path / "step.onnx", mapping=MappingRequest(states=(("h0", "cn"), ("c0", "hn"))))
    assert not (tmp_path / "step.onnx").exists()


def test_torch_default_dynamo_export_of_a_gru_is_adopted(tmp_path: Path) -> None:
    source = export(build("gru-bf-1"), tmp_path / "dynamo-gru.onnx", dynamo=True)
    sig = load_signature(_adopt(source, tmp_path / "step.onnx"))
    assert sig.provenance["parity"]["max_rel_error"] < 1e-4


class _LSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.LSTM(1, 8, num_layers=2, batch_first=True), nn.Linear(8, 1)

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out, (h, c) = self.rnn(x, (h0, c0))
        return self.head(out), h, c


def test_torch_default_dynamo_export_of_a_two_layer_lstm_is_refused(tmp_path: Path) -> None:
    """torch 2.13's dynamo exporter feeds c0 into both initial_h and initial_c here: h0 is read by no node, so
    the model, stepped, would lose its hidden state at every message (its one-call run is fine)."""
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    h = torch.zeros(2, 3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_LSTM().eval(), (torch.randn(3, 5, 1), h, h), input_names=["x", "h0", "c0"],
                                    output_names=["y", "hn", "cn"], dynamo=True, verbose=False,
                                    dynamic_shapes={"x": {0: batch, 1: time}, "h0": {1: batch}, "c0": {1: batch}})
    source = tmp_path / "dynamo-lstm.onnx"
    onnx.save(program.model_proto, str(source))  # type: ignore[union-attr]
    with pytest.raises(NoStateError, match=r"\['h0'\] are read by no node.*dynamo=False"):
        _adopt(source, tmp_path / "step.onnx")


class _LastStep(Forecaster):
    """Forecasts only after the last step of the call: output [batch, 1]."""

    def forward(self, x: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        y, *rest = super().forward(x, *states)
        return (y[:, -1], *rest)


def test_a_last_step_only_forecast_is_adopted(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = export(_LastStep("gru", True, 2).eval(), tmp_path / "last.onnx")
    sig = load_signature(_adopt(source, tmp_path / "step.onnx"))
    assert sig.provenance["mapping"]["forecast_per_step"] is False
    assert sig.provenance["parity"]["max_rel_error"] < 1e-4


class _Hidden(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.LSTM(1, 8, batch_first=True), nn.Linear(8, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rnn(x)[0])


def test_a_model_with_its_state_inside_is_refused(tmp_path: Path) -> None:
    source = plain_export(_Hidden(), (torch.randn(2, 5, 1),), tmp_path / "hidden.onnx", ["x"], ["y"],
                          {"x": {0: "batch", 1: "time"}})
    with pytest.raises(NoStateError, match="LSTM layer starts every call from a state fixed inside the graph"):
        _adopt(source, tmp_path / "step.onnx")


def test_a_model_exported_without_dynamic_axes_is_refused(tmp_path: Path) -> None:
    model = build("gru-bf-1")
    source = plain_export(model, (torch.randn(3, 5, 1), *model.zero_states(3)), tmp_path / "fixed.onnx",
                          ["x", "h0"], ["y", "hn"])
    with pytest.raises(FixedShapeError, match=r"x \[3, 5, 1\] has a fixed batch size and sequence length"):
        _adopt(source, tmp_path / "step.onnx")


class _TwoHeads(Forecaster):
    def __init__(self) -> None:
        super().__init__("gru", True, 1)
        self.other = nn.Linear(8, 1)

    def forward(self, x: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        out, h = self.rnn(x, states[0])
        return self.head(out), self.other(out), h


def test_two_candidate_forecasts_need_a_name(tmp_path: Path) -> None:
    model = _TwoHeads().eval()
    source = plain_export(model, (torch.randn(3, 5, 1), *model.zero_states(3)), tmp_path / "two.onnx",
                          ["x", "h0"], ["mean", "median", "hn"], {"x": {0: "batch", 1: "time"}, "h0": {1: "batch"}})
    with pytest.raises(MappingError, match="pass --forecast NAME"):
        _adopt(source, tmp_path / "step.onnx")
    sig = load_signature(_adopt(source, tmp_path / "step.onnx", mapping=MappingRequest(forecast="median")))
    assert sig.provenance["mapping"]["forecast"] == "median"


class _Plain(nn.Module):
    """rnnwatch's own GRU reference model exported the plain way (no StepGraph, no transform)."""

    def __init__(self, model: GRUForecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        out, h = self.model.rnn(x, h0)
        return self.model.head(out), h


@pytest.mark.parametrize("kind", ["log-return", "diff", "level"])
def test_the_transform_equals_the_one_train_bakes_in(kind: str, tmp_path: Path) -> None:
    """adopt's ONNX transform vs the torch Transform of `rnnwatch train`: same forecasts, same scores."""
    torch.manual_seed(2)
    model = GRUForecaster(1, 8).eval()
    mean, std = {"log-return": (0.001, 0.02), "diff": (0.1, 1.5), "level": (100.0, 10.0)}[kind]
    graph = StepGraph(model, Transform(kind, np.array([mean]), np.array([std]), np.ones(1)))
    spec = StepSignatureSpec(name="trained", version="1", architecture="gru", features=[("price", "positive")],
                             states=graph.state_spec(), scoring=Scoring(residual_std=(1.0,)))
    export_step_model(graph, tmp_path / "trained.onnx", spec)
    source = plain_export(_Plain(model), (torch.randn(2, 4, 1), torch.zeros(1, 2, 8)), tmp_path / "plain.onnx",
                          ["x", "h0"], ["y", "hn"],
                          {"x": {0: "batch", 1: "time"}, "h0": {1: "batch"}, "y": {0: "batch", 1: "time"}})
    adopted = tmp_path / "adopted.onnx"
    adopt_model(AdoptOptions(source=source, output=adopted, transform=kind, mean=(mean,), std=(std,),
                             features=("price",)))
    values = _walk(300, shock_at=200)
    # the same scorer for both (adopt writes its default scorer into the model, this spec writes none)
    trained = score_array(tmp_path / "trained.onnx", values, scorer="gaussian")
    ours = score_array(adopted, values, scorer="gaussian")
    np.testing.assert_allclose(ours.forecasts, trained.forecasts, rtol=1e-5)
    np.testing.assert_allclose(ours.scores, trained.scores, rtol=1e-4, atol=1e-5)  # float32 rounding, amplified


class _Cell(nn.Module):
    """A model that already takes one step per call: GRUCell over 2 features, state [batch, H]."""

    def __init__(self) -> None:
        super().__init__()
        self.cell, self.head = nn.GRUCell(2, 6), nn.Linear(6, 2)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = self.cell(x, h)
        return self.head(h), h


def test_a_one_step_model_with_two_features_is_adopted(tmp_path: Path) -> None:
    torch.manual_seed(4)
    cell = _Cell().eval()
    names = ["obs", "state_in"], ["pred", "state_out"]
    source = plain_export(cell, (torch.randn(3, 2), torch.zeros(3, 6)), tmp_path / "cell.onnx", *names,
                          {name: {0: "batch"} for name in [*names[0], *names[1]]})
    out = tmp_path / "step.onnx"
    adopt_model(AdoptOptions(source=source, output=out, transform="level", mean=(10.0, -1.0), std=(2.0, 0.5),
                             features=("load", "temperature:real")))
    sig = load_signature(out)
    assert sig.provenance["mapping"]["layout"] == "step" and sig.feature_names == ("load", "temperature")
    assert [(s.name, s.shape) for s in sig.states] == [("state", (6,))]
    mean, std = np.array([10.0, -1.0]), np.array([2.0, 0.5])
    xs = mean + std * np.column_stack([np.sin(np.arange(50) / 5), np.cos(np.arange(50) / 7)])
    u, h, expected = torch.from_numpy((xs - mean) / std).float(), torch.zeros(1, 6), []
    with torch.no_grad():
        for t in range(len(xs)):
            y, h = cell(u[t:t + 1], h)
            expected.append(mean + std * y[0].numpy())
    np.testing.assert_allclose(score_array(sig, xs).forecasts, np.array(expected), rtol=1e-5, atol=1e-5)

"""The Scan wrapper of a step graph (consumer.sequence): one call over T steps gives the T step calls' outputs
bit for bit; graphs it cannot wrap, and wrappers that do not prove themselves, leave the model stepped call by call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnwatch.consumer import session as session_module
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.sequence import scan_wrapper
from rnnwatch.consumer.session import StepModel
from tests.unit.onnx_builders import exploding_model


def _prices(rng: np.random.Generator, steps: int, keys: int) -> np.ndarray:
    return (100 * np.exp(np.cumsum(rng.normal(0, 0.02, (steps, keys, 1)), axis=0))).astype(np.float32)


def assert_sequence_is_the_step_graph(model: StepModel, x: np.ndarray) -> None:
    """``run_sequence`` over x [T, K, F] against T calls of ``run``: every output and state, every step, same bits."""
    sig = model.signature
    states = {s.name: np.broadcast_to(s.init, (x.shape[1], *s.shape)).astype(np.float32) for s in sig.states}
    forecast, scale, score, every_state = model.run_sequence(x, states)
    for t in range(x.shape[0]):
        f, s, sc, states = model.run(x[t], states)
        assert forecast[t].tobytes() == f.tobytes(), t
        for seq, step in ((scale, s), (score, sc)):
            assert (seq is None) == (step is None)
            assert seq is None or step is None or seq[t].tobytes() == step.tobytes(), t
        for name, value in states.items():
            assert every_state[name][t].tobytes() == value.tobytes(), (t, name)


@pytest.mark.parametrize("keys", [1, 5, 17])
@pytest.mark.parametrize("model", ["bundled_model", "ewma_path"])
def test_the_sequence_of_a_step_model_is_its_step_graph_bit_for_bit(model: str, keys: int,
                                                                    request: pytest.FixtureRequest) -> None:
    m = StepModel(load_signature(request.getfixturevalue(model)))
    assert m.has_sequence(keys)  # both models get one: the wrapper must keep working
    assert_sequence_is_the_step_graph(m, _prices(np.random.default_rng(keys), 37, keys))


def test_non_finite_steps_are_in_the_sequence_as_in_the_steps(tmp_path: Path) -> None:
    m = StepModel(load_signature(exploding_model(tmp_path / "exploding.onnx")))
    x = np.full((9, 2, 1), 0.5, dtype=np.float32)
    x[3:5, 1] = 1e20  # twice in a row: key 1's state overflows to inf from step 4 on
    with np.errstate(over="ignore", invalid="ignore"):
        assert_sequence_is_the_step_graph(m, x)
        _, _, _, every_state = m.run_sequence(x, {"m": np.zeros((2, 1), np.float32)})
    assert np.isinf(every_state["m"][4:, 1]).all() and np.isfinite(every_state["m"][:, 0]).all()


def test_a_batch_over_the_model_batch_is_not_run_as_a_sequence(bundled_model: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    m = StepModel(load_signature(bundled_model))
    monkeypatch.setattr(session_module, "MAX_MODEL_BATCH", 4)
    assert m.has_sequence(4) and not m.has_sequence(5)


def test_graphs_the_wrapper_cannot_take_are_stepped_call_by_call(bundled_model: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sig = load_signature(bundled_model)
    states = [s.name for s in sig.states]
    assert scan_wrapper(sig.model_bytes, states, ["forecast", "forecast_scale"]) is not None
    assert scan_wrapper(sig.model_bytes, states, ["forecast"]) is None  # an output it does not know where to put
    assert scan_wrapper(sig.model_bytes, states[:-1], ["forecast", "forecast_scale"]) is None  # an unknown input
    monkeypatch.setattr(StepModel, "_proves", lambda self, session: False)
    assert not StepModel(sig).has_sequence(1)  # a wrapper that does not reproduce the step graph is not used

"""The onnxruntime session of a validated step model: ``StepModel.run`` steps one batch of keys.

Kept apart from the runner (which decides *which* keys step together and carries their state) so that
``rnnwatch check`` and the benchmarks can run a model without the state table or a scorer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnwatch.consumer.contract import (
    INPUT_X,
    OUTPUT_FORECAST,
    OUTPUT_SCALE,
    OUTPUT_SCORE,
    STATE_IN,
    STATE_OUT,
    StepSignature,
)
from rnnwatch.consumer.errors import ModelError
from rnnwatch.consumer.hoisted import HoistedSequence, hoisted_sequence
from rnnwatch.consumer.sequence import SEQ, same_bits, scan_wrapper

__all__ = ["MAX_MODEL_BATCH", "SPLIT_MIN_STEPS", "StepModel"]

MAX_MODEL_BATCH = 2048  # keys per onnxruntime call (see StepModel.run)
# Blocks of fewer steps run the whole step graph in a Scan (one call, ~35 us) rather than the split form
# (consumer.hoisted: four calls, ~110 us, then less per step): the two cost the same at about 6 steps.
SPLIT_MIN_STEPS = 8
_UNBUILT = object()


class StepModel:
    """An onnxruntime session for a validated step model; ``run`` steps one batch of keys."""

    def __init__(self, signature: StepSignature, threads: int = 1) -> None:
        import onnxruntime as ort

        if not signature.model_bytes:
            msg = f"{signature.path}: the signature carries no model bytes; build it with load_signature()"
            raise ModelError(msg)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.signature = signature
        self.session = ort.InferenceSession(signature.model_bytes, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self._state_names = [s.name for s in signature.states]
        self._outputs = [OUTPUT_FORECAST]
        if signature.has_forecast_scale:
            self._outputs.append(OUTPUT_SCALE)
        if signature.has_score:
            self._outputs.append(OUTPUT_SCORE)
        self._outputs.extend(STATE_OUT + n for n in self._state_names)
        self._options = options
        self._sequence: Any = _UNBUILT  # built when a block first asks (a run with many keys never does: no memory)

    def _sequence_session(self) -> Any:
        """The split form (``consumer.hoisted``, with the plain wrapper for short blocks) or else the plain Scan
        wrapper (``consumer.sequence``), whichever first gives this model's outputs bit for bit on the probe
        blocks; None when neither does (blocks are then stepped call by call)."""
        import onnxruntime as ort

        def open_session(model: bytes) -> Any:
            return ort.InferenceSession(model, sess_options=self._options, providers=["CPUExecutionProvider"])

        sig = self.signature
        outputs = [o for o in self._outputs if not o.startswith(STATE_OUT)]
        init = {s.name: np.asarray(s.init, dtype=np.float32).reshape(s.shape) for s in sig.states}
        plain = self._plain_session(open_session, outputs)
        for fuse in (True, False):  # the split form first (consumer.hoisted: less in the loop), else the whole graph
            try:
                hoisted = hoisted_sequence(sig.model_bytes, outputs, init, sig.n_features, open_session, fuse=fuse)
                if hoisted is None:
                    break
                if self._proves(hoisted):
                    hoisted.short = plain
                    return hoisted
            except Exception:  # noqa: BLE001, S110 - onnxruntime's own untyped errors: try the next form
                pass
        return plain

    def _plain_session(self, open_session: Any, outputs: list[str]) -> Any:
        """The whole step graph in a Scan (``consumer.sequence``) if it proves itself, else None."""
        wrapped = scan_wrapper(self.signature.model_bytes, self._state_names, outputs)
        if wrapped is None:
            return None
        try:
            session = open_session(wrapped)
            return session if self._proves(session) else None
        except Exception:  # noqa: BLE001 - onnxruntime's own untyped errors: the model is stepped call by call
            return None

    def _proves(self, session: Any) -> bool:
        """Step probe blocks (7 steps of 1 to 5 keys: a row's bits can depend on where it sits in a batch, e.g. in a
        kernel's 4-row tail; values of each feature's domain) both ways; all outputs identical?"""
        return all(self._proves_keys(session, keys) for keys in (3, 1, 2, 4, 5))

    def _proves_keys(self, session: Any, keys: int) -> bool:
        sig = self.signature
        steps = 7
        t = np.arange(steps * keys * sig.n_features, dtype=np.float64).reshape(steps, keys, sig.n_features)
        x = (100.0 + 10.0 * np.sin(0.7 * t + 0.3)).astype(np.float32)
        states = {s.name: np.broadcast_to(s.init, (keys, *s.shape)).astype(np.float32) for s in sig.states}
        got = self._run_sequence(session, x, states)
        want: list[list[np.ndarray]] = []
        for step in range(steps):
            forecast, scale, score, states = self._run(x[step], states)
            want.append([a for a in (forecast, scale, score) if a is not None] + list(states.values()))
        stacked = [np.stack(c) for c in zip(*want, strict=True)]
        flat = [a for a in got[:3] if a is not None] + list(got[3].values())
        return len(flat) == len(stacked) and all(same_bits(a, b) for a, b in zip(flat, stacked, strict=True))

    def has_sequence(self, batch: int) -> bool:
        """Whether :meth:`run_sequence` can step ``batch`` keys (a wrapper that proved itself; a batch that fits
        one call, see :meth:`run`)."""
        if batch > MAX_MODEL_BATCH:
            return False
        if self._sequence is _UNBUILT:
            self._sequence = self._sequence_session()
        return self._sequence is not None

    def run_sequence(self, x: np.ndarray, states: dict[str, np.ndarray]) -> tuple[
            np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
        """T steps of a batch of keys in one call (x: [T, batch, F]): forecast, scale, score ([T, batch, ...]) and
        every step's new states ([T, batch, ...]; the last step's are the states to carry). Needs
        :meth:`has_sequence`; the same numbers as T calls of :meth:`run`."""
        if not self.has_sequence(x.shape[1]):
            msg = f"{self.signature.path}: no sequence form for a batch of {x.shape[1]} keys (check has_sequence)"
            raise ModelError(msg)
        session = self._sequence
        if isinstance(session, HoistedSequence) and x.shape[0] < SPLIT_MIN_STEPS and session.short is not None:
            session = session.short  # a few steps: one call of the whole graph costs less than the split's four
        return self._run_sequence(session, x, states)

    def _run_sequence(self, session: Any, x: np.ndarray, states: dict[str, np.ndarray]) -> tuple[
            np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
        if isinstance(session, HoistedSequence):
            return session.run(x, states)
        feeds = {INPUT_X + SEQ: x, **{STATE_IN + n: states[n] for n in self._state_names}}
        names = [o + SEQ for o in self._outputs if not o.startswith(STATE_OUT)]
        names += [STATE_OUT + n + SEQ for n in self._state_names]
        out = session.run(names, feeds)
        forecast, i = out[0], 1
        scale = score = None
        if self.signature.has_forecast_scale:
            scale, i = out[i], i + 1
        if self.signature.has_score:
            score, i = out[i].reshape(out[i].shape[0], -1), i + 1
        return forecast, scale, score, dict(zip(self._state_names, out[i:], strict=True))

    def run(self, x: np.ndarray, states: dict[str, np.ndarray]) -> tuple[
            np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
        """(forecast, forecast_scale or None, score or None, new states) for a batch of keys.

        A batch larger than ``MAX_MODEL_BATCH`` keys is stepped in slices: onnxruntime keeps the memory of its
        largest call for the life of the process, and a wave of 20,000 new keys would otherwise hold tens of
        MB for good. The contract makes a key's results independent of its batch, so slicing changes nothing.
        """
        n = x.shape[0]
        if n <= MAX_MODEL_BATCH:
            return self._run(x, states)
        parts = [self._run(x[i:i + MAX_MODEL_BATCH], {k: v[i:i + MAX_MODEL_BATCH] for k, v in states.items()})
                 for i in range(0, n, MAX_MODEL_BATCH)]
        forecast = np.concatenate([p[0] for p in parts])
        scale = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
        score = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
        return forecast, scale, score, {k: np.concatenate([p[3][k] for p in parts]) for k in states}

    def _run(self, x: np.ndarray, states: dict[str, np.ndarray]) -> tuple[
            np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
        feeds = {INPUT_X: x}
        for name in self._state_names:
            feeds[STATE_IN + name] = states[name]
        out = self.session.run(self._outputs, feeds)
        forecast = out[0]
        i = 1
        scale = score = None
        if self.signature.has_forecast_scale:
            scale, i = out[i], i + 1
        if self.signature.has_score:
            score, i = out[i].reshape(-1), i + 1
        return forecast, scale, score, dict(zip(self._state_names, out[i:], strict=True))

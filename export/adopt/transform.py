"""The input transforms as ONNX nodes and their numpy twin: what `adopt` wraps around a model, without torch.

Same formulas, same state (``t.prev``, ``t.seen``) and the same outputs as the torch
:class:`rnnwatch.export.transform.Transform` (its docstring gives them), so an adopted model behaves at run
time like one from `rnnwatch train`. ``none`` passes values through: the model reads and forecasts message
units itself. The numpy twin computes in float32 in the graph's order of operations: it is the parity
reference's half of the transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnwatch.consumer import contract as c
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.export.adopt.block import Block
from rnnwatch.export.signature import DOMAIN, PREV, SEEN, TRANSFORMS

__all__ = ["KINDS", "TransformSpec"]

KINDS = ("none", *(k for k in TRANSFORMS if k != "sqrt"))  # adopt has no ONNX builder for sqrt (yet)


@dataclass(frozen=True)
class TransformSpec:
    kind: str
    mean: np.ndarray  # float32 [F]: subtracted from the transformed value
    std: np.ndarray  # float32 [F]: divides it (the model reads (z - mean) / std)
    resid_std: np.ndarray  # float32 [F]: std of the model's normalised one-step residuals (forecast_scale)

    @classmethod
    def create(cls, kind: str, n_features: int, mean: tuple[float, ...] = (), std: tuple[float, ...] = (),
               resid_std: np.ndarray | None = None) -> TransformSpec:
        if kind not in KINDS:
            msg = f"unknown transform {kind!r}; use one of {', '.join(KINDS)}"
            raise ConfigError(msg)
        if kind == "none" and (mean or std):
            msg = "--mean/--std normalise a transform (log-return, diff, level); --transform none reads raw values"
            raise ConfigError(msg)
        return cls(kind, _per_feature(mean, 0.0, n_features, "--mean"),
                   np.maximum(_per_feature(std, 1.0, n_features, "--std"), np.float32(1e-12)),
                   np.ones(n_features, np.float32) if resid_std is None else resid_std.astype(np.float32))

    @property
    def stateful(self) -> bool:
        return self.kind in ("log-return", "diff")

    @property
    def domain(self) -> str:
        return DOMAIN.get(self.kind, "real")

    def state_names(self) -> tuple[str, ...]:
        return (PREV, SEEN) if self.stateful else ()

    def encode_sequence(self, xs: np.ndarray) -> np.ndarray:
        """Raw [B, T, F] -> what the model reads, a key's first step counting as "no change"."""
        xs = xs.astype(np.float32)
        if self.kind == "none":
            return xs
        z = xs
        if self.stateful:
            prev = np.concatenate([xs[:, :1], xs[:, :-1]], axis=1)
            z = np.log(xs / prev) if self.kind == "log-return" else xs - prev
        return ((z - self.mean) / self.std).astype(np.float32)

    def decode(self, u_hat: np.ndarray, x: np.ndarray,
               s_hat: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(forecast of the next x, its std or None), message units, from the model's output at x."""
        if self.kind == "none":
            return u_hat, s_hat
        step = self.mean + self.std * u_hat
        forecast = x * np.exp(step) if self.kind == "log-return" else (x + step if self.kind == "diff" else step)
        spread = self.std * (self.resid_std if s_hat is None else s_hat)
        scale = forecast * spread if self.kind == "log-return" else np.broadcast_to(spread, forecast.shape)
        return forecast.astype(np.float32), np.asarray(scale, np.float32)

    def encode_nodes(self, b: Block, x: str) -> str:
        """Nodes from ``x`` (and the transform state) to the model's input; writes the transform's state_out."""
        if self.kind == "none":
            return x
        z = x
        if self.stateful:
            seen_in, prev_in = c.STATE_IN + SEEN, c.STATE_IN + PREV
            base = b.op("Where", [b.op("Greater", [seen_in, b.const("zero", 0.0)]), prev_in, x])
            z = b.op("Log", [b.op("Div", [x, base])]) if self.kind == "log-return" else b.op("Sub", [x, base])
            b.op("Identity", [x], c.STATE_OUT + PREV)
            b.op("Expand", [b.const("one", 1.0), b.op("Shape", [seen_in])], c.STATE_OUT + SEEN)
        return b.op("Div", [b.op("Sub", [z, b.const("mean", self.mean)]), b.const("std", self.std)])

    def decode_nodes(self, b: Block, u_hat: str, x: str, s_hat: str | None) -> None:
        """Nodes from the model's output to ``forecast`` (and ``forecast_scale`` unless there is none)."""
        if self.kind == "none":
            b.op("Identity", [u_hat], c.OUTPUT_FORECAST)
            if s_hat is not None:
                b.op("Identity", [s_hat], c.OUTPUT_SCALE)
            return
        std = b.const("out_std", self.std)
        step = b.op("Add", [b.const("out_mean", self.mean), b.op("Mul", [std, u_hat])])
        if self.kind == "log-return":
            forecast = b.op("Mul", [x, b.op("Exp", [step])], c.OUTPUT_FORECAST)
        else:
            forecast = b.op("Add" if self.kind == "diff" else "Identity", [x, step] if self.kind == "diff" else [step],
                            c.OUTPUT_FORECAST)
        spread = b.op("Mul", [std, s_hat if s_hat is not None else b.const("resid_std", self.resid_std)])
        if self.kind == "log-return":
            b.op("Mul", [forecast, spread], c.OUTPUT_SCALE)
        else:
            b.op("Expand", [spread, b.op("Shape", [x])], c.OUTPUT_SCALE)


def _per_feature(values: tuple[float, ...], default: float, n: int, flag: str) -> np.ndarray:
    if not values:
        return np.full(n, default, np.float32)
    if len(values) not in (1, n):
        msg = f"{flag} takes 1 value or one per feature ({n}), got {len(values)}"
        raise ConfigError(msg)
    return np.broadcast_to(np.asarray(values, np.float32), (n,)).copy()

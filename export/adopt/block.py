"""A few ONNX nodes with their constants, named under one prefix so they never clash with the wrapped graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["Block"]


@dataclass
class Block:
    prefix: str
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    constants: list[onnx.TensorProto] = field(default_factory=list)
    _count: int = 0

    def const(self, label: str, value: np.ndarray | float | list[int]) -> str:
        """A constant tensor (float32 unless ``value`` is an int array) named ``<prefix><label>``."""
        array = np.asarray(value)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        name = f"{self.prefix}{label}"
        self.constants.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        """Append one node; return its output's name (a fresh one unless ``output`` is given)."""
        self._count += 1
        out = output or f"{self.prefix}{op_type.lower()}{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.prefix}{op_type}{self._count}",
                                           **attrs))
        return out

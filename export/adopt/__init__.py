"""`rnnwatch adopt`: turn an existing recurrent ONNX model (torch.onnx.export of nn.LSTM/nn.GRU, a graph of the
standard LSTM/GRU/RNN operators, tf2onnx …) into a step model, without re-exporting it and without torch.

See ``core.py`` for the steps, ``mapping.py`` for what is mapped, ``errors.py`` for the refusals.
"""

from __future__ import annotations

from rnnwatch.export.adopt.core import AdoptOptions, AdoptResult, adopt_model
from rnnwatch.export.adopt.errors import (
    AdoptError,
    ControlFlowError,
    ExternalDataError,
    FixedShapeError,
    InputTypeError,
    MappingError,
    NoStateError,
)
from rnnwatch.export.adopt.mapping import LAYOUTS, Mapping, MappingRequest, StatePair

__all__ = [
    "LAYOUTS",
    "AdoptError",
    "AdoptOptions",
    "AdoptResult",
    "ControlFlowError",
    "ExternalDataError",
    "FixedShapeError",
    "InputTypeError",
    "Mapping",
    "MappingError",
    "MappingRequest",
    "NoStateError",
    "StatePair",
    "adopt_model",
]

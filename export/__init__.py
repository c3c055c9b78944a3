"""rnnwatch training side: reference recurrent models, trainer, ONNX step-graph exporter and checker.

Needs the ``[export]`` extra (torch, onnx). The runtime (``rnnwatch.consumer``) never imports this package.

Names are imported on first use (PEP 562): ``rnnwatch adopt`` lives here too and needs only ``onnx``, so
importing ``rnnwatch.export.adopt`` must not pull torch in through this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnwatch.export.adopt import AdoptOptions, adopt_model
    from rnnwatch.export.api import export_user_module
    from rnnwatch.export.convert import StepGraph, export_step_model
    from rnnwatch.export.models.base import StepModule
    from rnnwatch.export.signature import Scoring, StateSpec, StepSignatureSpec
    from rnnwatch.export.transform import Transform
    from rnnwatch.export.validate import AtolError, BatchError, ParityError, ShapeError, check_parity

__all__ = [
    "AdoptOptions",
    "AtolError",
    "BatchError",
    "ParityError",
    "Scoring",
    "ShapeError",
    "StateSpec",
    "StepGraph",
    "StepModule",
    "StepSignatureSpec",
    "Transform",
    "adopt_model",
    "check_parity",
    "export_step_model",
    "export_user_module",
]

_HOME = {
    "AdoptOptions": "adopt", "adopt_model": "adopt", "export_user_module": "api", "StepGraph": "convert",
    "export_step_model": "convert", "StepModule": "models.base", "Scoring": "signature", "StateSpec": "signature",
    "StepSignatureSpec": "signature", "Transform": "transform", "AtolError": "validate", "BatchError": "validate",
    "ParityError": "validate", "ShapeError": "validate", "check_parity": "validate",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

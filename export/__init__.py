"""rnnwatch training side: reference recurrent models, trainer, ONNX step-graph exporter and checker.

Needs the ``[export]`` extra (torch, onnx). The runtime (``rnnwatch.consumer``) never imports this package.
"""

from __future__ import annotations

from rnnwatch.export.api import export_user_module
from rnnwatch.export.convert import StepGraph, export_step_model
from rnnwatch.export.models.base import StateSpec, StepModule
from rnnwatch.export.signature import Scoring, StepSignatureSpec
from rnnwatch.export.transform import Transform
from rnnwatch.export.validate import AtolError, BatchError, ParityError, ShapeError, check_parity

__all__ = [
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
    "check_parity",
    "export_step_model",
    "export_user_module",
]

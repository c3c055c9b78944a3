"""Why a model cannot be adopted. Every refusal names the model file and says what to do instead.

    ModelError (rnnwatch.consumer.errors)
    └── AdoptError                 the file cannot be read or wrapped (opset too old, already a step model …)
        ├── ExternalDataError      weights live in external data files next to the model
        ├── NoStateError           the recurrent state is not exposed as graph inputs and outputs
        ├── ControlFlowError       a Loop/Scan runs over time inside the graph, with no state exposed
        ├── InputTypeError         an input is not float32 (token ids, lengths, masks …)
        ├── FixedShapeError        a fixed batch size or sequence length the runtime cannot feed
        └── MappingError           the mapping is ambiguous, or names something the model does not have

A mapping that resolves but computes something else is caught by the parity proof, which raises the
exporter's typed errors (``AtolError``, ``ShapeError``, ``BatchError``) saying which part looks wrong.
"""

from __future__ import annotations

from rnnwatch.consumer.errors import ModelError

__all__ = [
    "REEXPORT_HINT",
    "AdoptError",
    "ControlFlowError",
    "ExternalDataError",
    "FixedShapeError",
    "InputTypeError",
    "MappingError",
    "NoStateError",
]

REEXPORT_HINT = (
    "re-export it with the initial states as inputs and the final states as outputs, e.g. "
    "torch.onnx.export(model, (x, h0), f, input_names=['x', 'h0'], output_names=['y', 'hn'], dynamo=False), "
    "or write it as a step module and use `rnnwatch export --module`"
)


class AdoptError(ModelError):
    """A model file that `rnnwatch adopt` cannot turn into a step model."""


class ExternalDataError(AdoptError):
    pass


class NoStateError(AdoptError):
    pass


class ControlFlowError(AdoptError):
    pass


class InputTypeError(AdoptError):
    pass


class FixedShapeError(AdoptError):
    pass


class MappingError(AdoptError):
    pass

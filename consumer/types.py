"""Plain data types and label sets at the bottom of the package: they import nothing of rnnwatch.

Every module that builds, reads or counts these imports them from here, so a label is spelled once: a
``Literal`` type (mypy checks every literal use) and the tuple of its values (metrics expose each value at 0
from the start, tests check each one is produced). The data flow's hand-over types live here too, so the
decoder (``records``) does not import the ONNX runner to build its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

__all__ = [
    "ALREADY_APPLIED", "DUPLICATE", "OUT_OF_ORDER", "PROCESSED", "PRODUCE_ERROR_KINDS", "REASONS", "REBALANCE_KINDS",
    "RESET_REASONS", "STATUS", "ProduceErrorKind", "Reason", "RebalanceKind", "ResetReason", "Status", "TickBatch",
]

# -- per-record outcome of the runner (StepResults.status holds the int8 code; metrics and CSVs the label) ---------
Status = Literal["processed", "duplicate", "out_of_order", "already_applied"]
PROCESSED, DUPLICATE, OUT_OF_ORDER, ALREADY_APPLIED = 0, 1, 2, 3
STATUS: dict[int, Status] = {PROCESSED: "processed", DUPLICATE: "duplicate", OUT_OF_ORDER: "out_of_order",
                             ALREADY_APPLIED: "already_applied"}

# -- why the decoder refused a record; the dead-letter `rnnwatch-reason` header and records_failed{reason} ----------
Reason = Literal[
    "empty", "oversized", "invalid_json", "not_an_object", "missing_key", "missing_field", "non_numeric",
    "non_finite", "out_of_domain", "missing_timestamp", "bad_timestamp", "timestamp_future", "timestamp_past",
    "oversized_key", "oversized_headers", "bad_key", "decode_error",
]
REASONS: tuple[Reason, ...] = get_args(Reason)

# -- why a key's state was reset (state_resets{reason}) -------------------------------------------------------------
ResetReason = Literal["model_changed", "corrupt_snapshot", "snapshot_missing", "non_finite"]
RESET_REASONS: tuple[ResetReason, ...] = get_args(ResetReason)

# -- rebalances{kind} and produce_errors{kind} ----------------------------------------------------------------------
RebalanceKind = Literal["assigned", "revoked", "lost"]
REBALANCE_KINDS: tuple[RebalanceKind, ...] = get_args(RebalanceKind)
ProduceErrorKind = Literal["event", "dead_letter", "snapshot"]
PRODUCE_ERROR_KINDS: tuple[ProduceErrorKind, ...] = get_args(ProduceErrorKind)


@dataclass(frozen=True)
class TickBatch:
    """Decoded, valid records of one poll, in poll order (per partition: offset order)."""

    partition: np.ndarray  # int32 [n]
    offset: np.ndarray  # int64 [n]
    keys: list[bytes]
    event_ms: np.ndarray  # int64 [n], event time, ms since epoch
    x: np.ndarray  # float32 [n, n_features], message units
    timestamp_ms: np.ndarray  # int64 [n], the Kafka record timestamp (0 offline); events carry it as input.timestamp

    def __len__(self) -> int:
        return len(self.keys)

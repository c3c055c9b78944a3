"""The exception hierarchy of rnnwatch.

    RnnwatchError
    ├── ConfigError(ValueError)          bad flags / env / TOML, or a missing extra: raised at start-up, names the fix
    ├── ModelError(ValueError)           a model file breaks the step contract: names the file and the fix
    ├── StateError(RuntimeError)         a changelog snapshot cannot be used: the key is reset, not crashed
    └── BrokerError(ConnectionError)     the broker cannot be reached within the configured wait
        ├── DeliveryError                the producer gave up on a record: the process must replay
        └── RebalancedError              a commit was refused because the group rebalanced meanwhile

Start-up problems raise. A record that cannot be used is never an exception: it is a value (a ``reason``
label, ``records.Rejected``) that becomes a dead-letter record and a counted reason.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "ConfigError",
    "DeliveryError",
    "ModelError",
    "RebalancedError",
    "RnnwatchError",
    "StateError",
]


class RnnwatchError(Exception):
    """Root of every error rnnwatch raises on purpose."""


class ConfigError(RnnwatchError, ValueError):
    """A setting is missing or invalid; the message names the setting and how to set it."""


class ModelError(RnnwatchError, ValueError):
    """A model file does not follow the step-model contract (DESIGN §2)."""


class StateError(RnnwatchError, RuntimeError):
    """A state snapshot cannot be restored (corrupt, or written by another model)."""


class BrokerError(RnnwatchError, ConnectionError):
    """The Kafka cluster could not be reached or refused a required operation."""


class DeliveryError(BrokerError):
    """A record was not delivered after all retries: its offset must never be committed (restart and replay)."""


class RebalancedError(BrokerError):
    """The group rebalanced under a commit: the partitions may have a new owner (who restores from the changelog)."""

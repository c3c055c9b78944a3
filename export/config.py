"""The typed configuration of `rnnwatch train`: what to fit, on which rows, and each architecture's options.

Frozen and validated on construction (a ``ConfigError`` naming the flag, before any data is read), so the trainer,
the registry's model factories and `rnnwatch evaluate` receive values, never an ``argparse.Namespace``; the CLI
(``rnnwatch.export.cli``) is the only place that parses flags, and takes its defaults from these classes.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from rnnwatch.consumer.errors import ConfigError
from rnnwatch.export.calibrate import TARGET_FALSE_ALARM_RATE
from rnnwatch.export.skill import DEFAULT_GATE

__all__ = ["ArchOptions", "Cell", "TrainingConfig", "defaults", "parse_periods"]

Cell = Literal["elman", "lstm", "gru"]


@dataclass(frozen=True)
class ArchOptions:
    """Architecture options; each names the architectures that read it (the others ignore it)."""

    hidden: int = 32  # hidden units: every architecture but esn
    layers: int = 2  # stacked: recurrent layers
    cell: Cell = "gru"  # stacked, birnn: cell type (birnn: lstm, else gru)
    jordan_decay: float = 0.5  # jordan: decay mu of the output average
    delays: int = 8  # tdnn: window of past inputs
    input_delays: int = 4  # narx: input delay line length
    output_delays: int = 2  # narx: output delay line length
    reservoir: int = 200  # esn: reservoir size
    spectral_radius: float = 0.9  # esn: < 1
    density: float = 0.1  # esn: fraction of non-zero reservoir weights
    input_scaling: float = 1.0  # esn: input weight scale
    leak: float = 1.0  # esn: leak rate (1 = no leak)
    ridge: float = 1e-4  # esn: ridge regularisation
    periods: tuple[int, ...] = (1, 2, 4, 8)  # clockwork: module periods
    bi_window: int = 16  # birnn: trailing window length

    def __post_init__(self) -> None:
        _positive(self, ("hidden", "layers", "delays", "input_delays", "output_delays", "reservoir", "bi_window"))
        if not self.periods or min(self.periods) < 1:
            msg = f"--periods must be whole numbers >= 1 (e.g. 1,2,4,8), got {self.periods}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class TrainingConfig:
    """One `rnnwatch train` run: data, fitting, scoring defaults written into the model, and the output."""

    arch: str
    input: Path
    output: Path
    columns: tuple[str, ...] = ()  # feature columns in order; () = 'price' if the file has it, else 'value'
    key_column: str | None = None  # None = 'symbol' if the file has it; '' = one series
    time_column: str | None = None  # None = 'ts' if the file has it; '' = file order
    train_rows: int = 0  # the first N rows of each series (0 = all)
    transform: str = "auto"  # auto: sqrt for an over-dispersed count, log-return for a price, else level
    epochs: int = 40  # most epochs (early stop on held-out loss)
    window: int = 64  # truncated-BPTT window length
    batch_size: int = 32
    lr: float = 5e-3
    seed: int = 0
    warmup_steps: int = 20  # steps a key must see before it can alert
    halflife_steps: float = 250.0  # half-life of the per-key normaliser
    scorer: str = "auto"  # default scorer written into the model; auto: chosen from the data's domain
    target_rate: float = TARGET_FALSE_ALARM_RATE  # false alarms per held-out row the threshold aims at
    forecast_gate: float = DEFAULT_GATE  # held-out skill t a feature's forecast needs (export.skill); 0 keeps it
    name: str = ""  # default <csv stem>-<arch>
    model_version: str = "1"
    trained_at: str = ""  # pins the trained_at metadata ('' = SOURCE_DATE_EPOCH or now)
    options: ArchOptions = field(default_factory=ArchOptions)

    def __post_init__(self) -> None:
        _positive(self, ("epochs", "window", "batch_size"))
        o = self.options
        if self.arch == "clockwork" and o.hidden % len(o.periods):
            msg = (f"--hidden ({o.hidden}) must be a multiple of the number of --periods ({len(o.periods)}), "
                   f"e.g. --hidden {len(o.periods) * max(1, o.hidden // len(o.periods))}")
            raise ConfigError(msg)
        if not 0.0 < self.target_rate < 0.5:
            msg = f"--target-rate must be in (0, 0.5), got {self.target_rate}"
            raise ConfigError(msg)
        if not 0.0 <= self.forecast_gate < float("inf"):
            msg = f"--forecast-gate must be a t statistic >= 0 (0 keeps the model's forecast), got {self.forecast_gate}"
            raise ConfigError(msg)


def defaults(cls: type[Any]) -> dict[str, Any]:
    """Field name -> default of a config class (the CLI's flag defaults, so they are declared once)."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def parse_periods(text: str) -> tuple[int, ...]:
    """``--periods`` (comma-separated whole numbers >= 1) as a tuple."""
    try:
        periods = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        periods = ()
    if not periods or min(periods) < 1:
        msg = f"--periods must be comma-separated whole numbers >= 1 (e.g. 1,2,4,8), got {text!r}"
        raise ConfigError(msg)
    return periods


def _positive(config: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if value < 1:
            msg = f"--{name.replace('_', '-')} must be >= 1, got {value}"
            raise ConfigError(msg)

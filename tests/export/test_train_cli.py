"""`rnnwatch train` / `rnnwatch export` end to end: files the runtime accepts, reproducible bytes."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from rnnwatch.consumer.cli import main as run_cli
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.offline import score_array
from rnnwatch.export.cli import main
from rnnwatch.export.data import load_series
from rnnwatch.export.train import HOLDOUT
from tests.user_modules import SMOOTHER_MODULE

pytestmark = pytest.mark.export
CLI = [sys.executable, "-m", "rnnwatch.consumer.cli"]


@pytest.fixture
def in_process() -> Iterator[None]:
    """`rnnwatch train` pins torch to deterministic kernels and one thread: undo that for the next test."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prices_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "prices.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["symbol", "ts", "price"])
        walks = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (3, 400)), axis=1))
        for t in range(400):
            for k, sym in enumerate(["AAA", "BBB", "CCC"]):
                w.writerow([sym, 1_600_000_000 + 86_400 * t, f"{walks[k, t]:.4f}"])
    return path


def _train(csv_path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "train", "--arch", "gru", "--input", str(csv_path), "--key-column", "symbol",
                           "--time-column", "ts", "--column", "price", "--hidden", "8", "--epochs", "3",
                           "--trained-at", "2026-01-01T00:00:00Z", "--output", str(out), *extra],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def trained(prices_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `rnnwatch train` run in a fresh process, through the runtime CLI's delegation."""
    path = tmp_path_factory.mktemp("trained") / "m.onnx"
    out = _train(prices_csv, path)
    assert out.returncode == 0, out.stderr
    return path


def test_train_writes_a_calibrated_model_the_runtime_accepts(prices_csv: Path, trained: Path) -> None:
    sig = load_signature(trained)
    assert sig.architecture == "gru" and sig.feature_names == ("price",)
    assert sig.features[0].domain == "positive"  # auto transform: prices -> log-returns
    assert 0.99 <= sig.scoring.threshold <= 0.999999
    p = sig.provenance
    assert p["series"] == 3 and p["rows"] == 1200 and p["holdout_rows"] == 240 and p["seed"] == 0
    assert p["transform"] == "log-return" and p["onnx"] and p["torch"]
    assert p["data_sha256"] == hashlib.sha256(prices_csv.read_bytes()).hexdigest()
    assert p["parity"]["max_rel_error"] < 1e-4
    # Calibrated through the runtime scorer at its own threshold: held-out false alarms stay near 0.1 %
    # and the threshold is not stuck at the top of its range.
    assert sig.scoring.threshold < 0.999999
    alarms = rows = 0
    for series in load_series(prices_csv, ["price"], key_column="symbol", time_column="ts")[0]:
        flagged = score_array(sig, series.values).is_anomaly
        held = flagged[int(len(flagged) * (1 - HOLDOUT)):]
        alarms, rows = alarms + int(held.sum()), rows + len(held)
    assert alarms / rows <= 0.005


def test_same_seed_same_bytes(prices_csv: Path, trained: Path, tmp_path: Path) -> None:
    again = _train(prices_csv, tmp_path / "again.onnx")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.onnx").read_bytes() == trained.read_bytes()


def test_another_seed_other_weights(prices_csv: Path, trained: Path, tmp_path: Path, in_process: None) -> None:
    """The same-bytes test above would also pass if the seed were ignored; this one would not."""
    code = main(["train", "--arch", "gru", "--input", str(prices_csv), "--key-column", "symbol", "--time-column",
                 "ts", "--column", "price", "--hidden", "8", "--epochs", "3", "--seed", "1",
                 "--trained-at", "2026-01-01T00:00:00Z", "--output", str(tmp_path / "s1.onnx")])
    assert code == 0
    a, b = onnx.load(str(trained)), onnx.load(str(tmp_path / "s1.onnx"))
    weights = {i.name: numpy_helper.to_array(i) for i in a.graph.initializer}
    changed = [i.name for i in b.graph.initializer if not np.array_equal(numpy_helper.to_array(i), weights[i.name])]
    assert changed


def test_train_reports_a_missing_column(prices_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        in_process: None) -> None:
    code = main(["train", "--arch", "lstm", "--input", str(prices_csv), "--column", "close",
                 "--output", str(tmp_path / "m.onnx")])
    assert code == 2
    assert "no column 'close'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_export_a_user_module(tmp_path: Path) -> None:
    module = tmp_path / "my_model.py"
    module.write_text(SMOOTHER_MODULE)
    out = subprocess.run([*CLI, "export", "--module", "my_model:make", "--feature", "load:nonnegative",
                          "--name", "smoother", "--residual-std", "2.5", "--output", str(tmp_path / "s.onnx")],
                         capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    sig = load_signature(tmp_path / "s.onnx")
    assert sig.features[0].domain == "nonnegative" and not sig.has_forecast_scale
    assert sig.scoring.residual_std == (2.5,)


@pytest.mark.parametrize("arch", ["elman", "jordan", "lstm", "gru", "stacked", "deep-transition", "tdnn", "narx",
                                  "esn", "clockwork", "birnn"])
def test_every_architecture_trains_with_defaults(arch: str, prices_csv: Path, tmp_path: Path,
                                                in_process: None) -> None:
    code = main(["train", "--arch", arch, "--input", str(prices_csv), "--key-column", "symbol",
                 "--time-column", "ts", "--column", "price", "--train-rows", "200", "--hidden", "8",
                 "--epochs", "2", "--reservoir", "40", "--output", str(tmp_path / f"{arch}.onnx")])
    assert code == 0
    sig = load_signature(tmp_path / f"{arch}.onnx")
    assert sig.architecture == arch
    assert sig.provenance["parity"]["max_rel_error"] < 1e-4
    assert sig.provenance["hyperparameters"]


def test_only_the_training_rows_must_be_finite(tmp_path: Path) -> None:
    """`--train-rows N` reads the values of the first N rows (by time) only: a hole after them is for the
    scoring side to refuse row by row (as `run` does); a hole inside them is still refused by name."""
    from rnnwatch.consumer.errors import ConfigError

    path = tmp_path / "holes.csv"
    rows = [f"{i},{10 + i % 3}" for i in range(30)]
    rows[20] = "20,NaN"
    rows[25] = "25,n/a"
    path.write_text("\n".join(["ts,value", *reversed(rows)]) + "\n")  # sorted by time before cutting
    [series], _ = load_series(path, ["value"], time_column="ts", rows=20)
    assert series.values[:, 0].tolist() == [10 + i % 3 for i in range(20)]
    with pytest.raises(ConfigError, match=r"row 11: .* is not finite"):  # file row 11 holds ts=20
        load_series(path, ["value"], time_column="ts", rows=21)
    with pytest.raises(ConfigError, match="not finite"):
        load_series(path, ["value"], time_column="ts")
    rows[25] = "someday,11"  # a time that does not parse sorts last: refused once the training rows reach it
    path.write_text("\n".join(["ts,value", *rows]) + "\n")
    assert len(load_series(path, ["value"], time_column="ts", rows=20)[0][0].values) == 20
    with pytest.raises(ConfigError, match="row 27: ts 'someday' is not a timestamp"):
        load_series(path, ["value"], time_column="ts", rows=30)


def test_a_typed_config_trains_the_same_model_as_the_flags(prices_csv: Path, trained: Path, tmp_path: Path,
                                                           in_process: None) -> None:
    """The library path (no argparse): a TrainingConfig with the flags' values gives the CLI's bytes."""
    from rnnwatch.export.config import ArchOptions, TrainingConfig
    from rnnwatch.export.train import train

    out = tmp_path / "typed.onnx"
    result = train(TrainingConfig(arch="gru", input=prices_csv, output=out, columns=("price",), key_column="symbol",
                                  time_column="ts", epochs=3, trained_at="2026-01-01T00:00:00Z",
                                  options=ArchOptions(hidden=8)))
    assert result.path == out
    assert out.read_bytes() == trained.read_bytes()


def test_the_flags_defaults_are_the_configs() -> None:
    from rnnwatch.export.cli import build_parser, training_config
    from rnnwatch.export.config import TrainingConfig

    args = build_parser().parse_args(["train", "--arch", "gru", "--input", "p.csv", "--output", "m.onnx"])
    assert training_config(args) == TrainingConfig(arch="gru", input=Path("p.csv"), output=Path("m.onnx"))


@pytest.mark.parametrize(("changes", "message"), [
    ({"epochs": 0}, "--epochs must be >= 1, got 0"),
    ({"target_rate": 0.5}, r"--target-rate must be in \(0, 0.5\)"),
    ({"arch": "clockwork", "options": {"hidden": 30}}, r"--hidden \(30\) must be a multiple of the number"),
    ({"options": {"reservoir": 0}}, "--reservoir must be >= 1, got 0"),
    ({"options": {"periods": ()}}, "--periods must be whole numbers >= 1"),
])
def test_a_config_is_refused_on_construction_naming_the_flag(changes: dict[str, object], message: str) -> None:
    from rnnwatch.consumer.errors import ConfigError
    from rnnwatch.export.config import ArchOptions, TrainingConfig

    top = {k: v for k, v in changes.items() if k != "options"}
    arch = changes.get("options", {})
    with pytest.raises(ConfigError, match=message):
        TrainingConfig(**{"arch": "gru", "input": Path("p.csv"), "output": Path("m.onnx"),  # type: ignore[arg-type]
                          **top, "options": ArchOptions(**arch)})  # type: ignore[arg-type]


def test_a_daily_series_gets_its_season_and_the_seasonal_scorer(tmp_path: Path, in_process: None) -> None:
    """The trainer finds the calendar season in the training rows (export.period) and writes it into the
    model's scorer options with the seasonal default scorer; a random walk of the same length gets neither."""
    rng = np.random.default_rng(2)
    n = 700  # 5-minute rows: 2.4 days
    shapes = {"daily": 20 + 5 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 0.3, n),
              "walk": 20 + np.cumsum(rng.normal(0, 0.3, n))}
    written = {}
    for name, values in shapes.items():
        path = tmp_path / f"{name}.csv"
        path.write_text("timestamp,value\n" + "".join(
            f"2026-01-01T00:00:00Z,{v:.4f}\n".replace("00:00:00", f"{t // 12 % 24:02d}:{t % 12 * 5:02d}:00")
            .replace("01T", f"{1 + t // 288:02d}T") for t, v in enumerate(values)), encoding="utf-8")
        out = tmp_path / f"{name}.onnx"
        assert main(["train", "--arch", "gru", "--input", str(path), "--time-column", "timestamp", "--column",
                     "value", "--hidden", "8", "--epochs", "2", "--output", str(out)]) == 0
        written[name] = load_signature(out).scoring
    assert written["daily"].scorer == "gaussian+phase"
    assert dict(written["daily"].scorer_options)["season"] == {"period": 288, "step_ms": 300_000}
    assert "season" not in written["walk"].scorer_options
    assert "phase" not in written["walk"].scorer


def _transform_lines(csv_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    assert main(["train", "--arch", "gru", "--input", str(csv_path), "--hidden", "4", "--epochs", "1",
                 "--trained-at", "2026-01-01T00:00:00Z", "--output", str(tmp_path / "m.onnx"), *extra]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("transform:")]


def test_auto_log_returns_say_that_a_value_of_zero_will_be_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   in_process: None) -> None:
    """`auto` picks log-returns because every *training* value is > 0; a metric that reaches 0 later (a CPU that
    stops: NAB's grok_asg_anomaly holds 447 zeros after its training rows) has those rows dead-lettered as
    out_of_domain, so train says so, and how to avoid it, when it made that choice for the user."""
    rng = np.random.default_rng(5)
    positive = tmp_path / "positive.csv"  # a price: it wanders
    walk = 30 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    positive.write_text("value\n" + "".join(f"{v:.4f}\n" for v in walk), encoding="utf-8")
    [said] = _transform_lines(positive, tmp_path, capsys)
    assert "log-return" in said and "out_of_domain" in said and "--transform diff" in said
    assert load_signature(tmp_path / "m.onnx").provenance["transform"] == "log-return"
    assert _transform_lines(positive, tmp_path, capsys, "--transform", "log-return") == []  # the user chose it
    with_zero = tmp_path / "with_zero.csv"
    with_zero.write_text("value\n" + "".join(f"{max(v, 0):.4f}\n" for v in rng.normal(1, 1, 300)), encoding="utf-8")
    assert _transform_lines(with_zero, tmp_path, capsys) == []  # auto chose levels: every value is in its domain


def test_auto_keeps_the_levels_of_a_positive_metric_that_reverts_to_its_level(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str],
                                                                                in_process: None) -> None:
    """A CPU's utilisation is > 0 like a price, but it hovers around its level: as log-returns a value far from
    that level is one big return and its equal and opposite one, and a later 0 (the CPU stops) would be refused.
    `auto` keeps its levels (its differences are negatively correlated, -0.5 for noise around a level), and
    still picks log-returns for a price, which wanders (uncorrelated differences)."""
    rng = np.random.default_rng(11)
    cpu = tmp_path / "cpu.csv"
    cpu.write_text("value\n" + "".join(f"{v:.4f}\n" for v in 40 + 3 * rng.normal(0, 1, 300)), encoding="utf-8")
    assert _transform_lines(cpu, tmp_path, capsys) == []  # no log-return notice: levels take every value
    sig = load_signature(tmp_path / "m.onnx")
    assert sig.provenance["transform"] == "level" and sig.features[0].domain == "real"
    assert "stuck" not in sig.scoring.scorer  # the level-series default, not the price one
    price = tmp_path / "price.csv"
    walk = 40 * np.exp(np.cumsum(rng.normal(0, 0.02, 300)))
    price.write_text("value\n" + "".join(f"{v:.4f}\n" for v in walk), encoding="utf-8")
    [said] = _transform_lines(price, tmp_path, capsys)
    assert said.startswith("transform: log-return")
    assert load_signature(tmp_path / "m.onnx").features[0].domain == "positive"


def test_auto_stabilises_the_variance_of_an_overdispersed_count(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                in_process: None) -> None:
    """A count (tweets per 5 minutes, requests per minute) is noisier the higher it is: its variance grows with its
    level, so one scale fits neither its quiet nor its busy hours, and it reaches 0. `auto` models 2 sqrt(x + 3/8)
    (Anscombe: a Poisson count's variance becomes about 1 at every level), refuses only a negative count, and
    keeps plain levels for integers that are not over-dispersed counts (a speed in whole miles per hour)."""
    rng = np.random.default_rng(5)
    counts = tmp_path / "tweets.csv"
    rate = np.where(rng.random(300) < 0.1, 60.0, 8.0)  # bursts: the variance of a count grows with its level
    counts.write_text("value\n" + "".join(f"{v}\n" for v in rng.poisson(rate)), encoding="utf-8")
    assert _transform_lines(counts, tmp_path, capsys) == []
    sig = load_signature(tmp_path / "m.onnx")
    assert sig.provenance["transform"] == "sqrt" and sig.features[0].domain == "nonnegative"
    later = tmp_path / "later.csv"  # a quiet spell (0) is scored; a negative count is refused, as `run` refuses it
    later.write_text("ts,value\n" + "".join(f"2026-01-01T00:0{i}:00Z,{v}\n" for i, v in enumerate([8, 0, -1, 9])),
                     encoding="utf-8")
    scored = tmp_path / "scored.csv"
    assert run_cli(["score", "--model", str(tmp_path / "m.onnx"), "--input", str(later), "--output", str(scored)]) == 0
    status = [row.rsplit(",", 1)[1] for row in scored.read_text(encoding="utf-8").splitlines()[1:]]
    assert status == ["processed", "processed", "out_of_domain", "processed"]
    speed = tmp_path / "speed.csv"
    speed.write_text("value\n" + "".join(f"{v:.0f}\n" for v in 65 + 3 * rng.normal(0, 1, 300)), encoding="utf-8")
    _transform_lines(speed, tmp_path, capsys)
    assert load_signature(tmp_path / "m.onnx").provenance["transform"] == "level"

"""`rnnwatch score` refuses exactly what `run` refuses, row by row, and says so when most rows go unscored."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from rnnwatch.consumer.cli import main
from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.decoder import TickDecoder
from rnnwatch.consumer.demo.feed import bundled_prices_path
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.consumer.offline import score_array


def _series(path: Path, values: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ts", "price"])
        for i, v in enumerate(values):
            w.writerow([f"2020-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z", v])
    return path


def _walk(n: int = 600, spike: int = 450) -> list[float]:
    values = 50 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.01, n)))
    values[spike] *= 1.25
    return [round(float(v), 4) for v in values]


def _score(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, str]], str]:
    code = main(["score", *args])
    out, err = capsys.readouterr()
    return code, list(csv.DictReader(io.StringIO(out))), err


def _run_reason(model: Path, doc: dict[str, object]) -> str:
    """The reason `run`'s decoder dead-letters this record with."""
    sig = load_signature(model)
    decoder = TickDecoder(sig.features, list(sig.feature_names), key_field="symbol", time_field="ts")
    rec = SimpleNamespace(partition=0, offset=0, key=b"k", value=orjson.dumps(doc), timestamp=0, headers=[])
    _, _, rejected = decoder.decode([rec], 1_900_000_000_000)
    return rejected[0].reason


def test_a_nan_is_refused_and_does_not_poison_later_rows(tmp_path: Path, bundled_model: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    values = [f"{v:.4f}" for v in _walk()]
    values[300] = "nan"
    code, rows, err = _score(capsys, "--model", str(bundled_model), "--input", str(_series(tmp_path / "i.csv", values)))
    assert code == 0, err
    assert rows[300]["status"] == "non_finite" and rows[300]["anomaly_score"] == ""
    later = [float(r["anomaly_score"]) for r in rows[301:]]
    assert max(later) > 0.99 and np.mean(later) > 0.1  # scores stay alive after the NaN
    assert rows[450]["is_anomaly"] == "1"
    assert "1 non_finite" in err


def test_offline_refusals_carry_runs_reasons(tmp_path: Path, bundled_model: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    values = [f"{v:.4f}" for v in _walk()]
    values[100], values[200], values[250] = "-5", "abc", ""
    code, rows, _ = _score(capsys, "--model", str(bundled_model), "--input", str(_series(tmp_path / "i.csv", values)))
    assert code == 0
    got = [rows[i]["status"] for i in (100, 200, 250)]
    assert got == ["out_of_domain", "non_numeric", "missing_field"]
    assert got == [_run_reason(bundled_model, {"ts": 1, "price": -5}),
                   _run_reason(bundled_model, {"ts": 1, "price": "abc"}),
                   _run_reason(bundled_model, {"ts": 1})]
    assert rows[101]["status"] == "processed" and rows[101]["anomaly_score"] != ""


@pytest.mark.parametrize("threshold", ["2", "0", "1", "-0.5"])
def test_a_threshold_outside_0_1_is_refused_like_run(tmp_path: Path, bundled_model: Path, threshold: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = _series(tmp_path / "i.csv", ["1.0", "1.1"])
    code, _, err = _score(capsys, "--model", str(bundled_model), "--input", str(src), "--threshold", threshold)
    assert code == 2
    assert "threshold must be in (0, 1)" in err


def test_several_series_without_a_key_get_a_hint(bundled_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _score(capsys, "--model", str(bundled_model), "--input", str(bundled_prices_path()),
                          "--key-column", "")
    assert code == 0
    assert "warning:" in err and "pass --key-column symbol" in err


def test_bundled_prices_score_with_default_flags(bundled_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, err = _score(capsys, "--model", str(bundled_model), "--input", str(bundled_prices_path()))
    assert code == 0, err
    assert list(rows[0]) == ["symbol", "timestamp", "value", "expected", "residual", "anomaly_score", "surprise",
                             "is_anomaly", "incident", "severity", "status"]
    assert {r["status"] for r in rows} == {"processed"}
    assert "warning" not in err
    hits = [r for r in rows if r["is_anomaly"] == "1"]
    assert hits and {r["severity"] for r in hits} <= {"minor", "major", "critical"}
    assert all(r["severity"] == "" for r in rows if r["is_anomaly"] == "0")
    scored = [r for r in rows if r["expected"]]
    assert all(abs(float(r["value"]) - float(r["expected"]) - float(r["residual"])) < 1e-3 * float(r["value"])
               for r in scored[:200])


def test_output_file_uses_newline_endings(tmp_path: Path, bundled_model: Path) -> None:
    src, dst = _series(tmp_path / "i.csv", [f"{v:.4f}" for v in _walk(50, 40)]), tmp_path / "o.csv"
    assert main(["score", "--model", str(bundled_model), "--input", str(src), "--output", str(dst)]) == 0
    data = dst.read_bytes()
    assert b"\r" not in data and data.count(b"\n") == 51


def test_score_array_refuses_non_finite_and_out_of_domain(bundled_model: Path) -> None:
    values = np.array(_walk(), dtype=np.float64)
    values[300], values[301] = np.nan, -1.0
    res = score_array(bundled_model, values)
    assert res.status[300] == "non_finite" and res.status[301] == "out_of_domain"
    assert np.isnan(res.scores[300:302]).all()
    assert np.isfinite(res.scores[302:]).all() and bool(res.is_anomaly[450])
    with pytest.raises(ValueError, match="threshold"):
        score_array(bundled_model, values, threshold=2.0)


def test_incident_names_the_opening_input_row_when_earlier_rows_were_refused(
        tmp_path: Path, bundled_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = [f"{v:.4f}" for v in _walk()]
    for i in (100, 200, 300):
        values[i] = "nan"  # three rows that never reach the runner: kept-row offsets lag input rows by 3 at 450
    code, rows, err = _score(capsys, "--model", str(bundled_model), "--input", str(_series(tmp_path / "i.csv", values)))
    assert code == 0, err
    assert rows[450]["is_anomaly"] == "1" and rows[450]["incident"] == "450"
    assert all(r["incident"] == "" or rows[int(r["incident"])]["is_anomaly"] == "1" for r in rows)
    assert rows[450]["severity"] in ("minor", "major", "critical")


@pytest.mark.parametrize(("options", "says"), [("{oops", "not valid JSON"), ("[1]", "must be a JSON object")])
def test_the_library_refuses_bad_scorer_options_like_the_flags(bundled_model: Path, options: str, says: str) -> None:
    """``score_array`` is what notebooks call: a typo in the options is a ConfigError, not a JSON traceback."""
    with pytest.raises(ConfigError, match=says):
        score_array(bundled_model, np.linspace(100.0, 101.0, 50), scorer_options=options)

"""`evaluate`'s harness: the same model as `rnnwatch train`, the same scores as `rnnwatch score`, and results
that do not depend on how many processes ran the series."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnwatch.consumer.contract import load_signature
from rnnwatch.consumer.errors import ConfigError
from rnnwatch.evaluate.corpus import find_series, label_windows
from rnnwatch.evaluate.harness import ScorerSpec, TrainConfig, parse_scorer_spec, run_corpus, run_series
from rnnwatch.evaluate.nab import probation_rows
from rnnwatch.evaluate.results import corpus_scores
from tests.export.tiny_corpus import DIRTY, DIRTY_TIME, write_dirty_corpus

pytestmark = pytest.mark.export
CLI = [sys.executable, "-m", "rnnwatch.consumer.cli"]
FAST = TrainConfig(hidden=8, epochs=3)


@pytest.fixture
def in_process() -> Iterator[None]:
    """`rnnwatch train` pins torch to deterministic kernels and one thread: undo that for the next test."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def test_a_series_is_trained_and_scored_as_with_the_cli(tiny_corpus: Path, tmp_path: Path, in_process: None) -> None:
    """run_series == `rnnwatch train --train-rows <probation>` then `rnnwatch score` (no second scoring path)."""
    series = find_series(tiny_corpus, series=["sine_spike"])[0]
    run = run_series(series, FAST, [ScorerSpec()])
    model, scored = tmp_path / "m.onnx", tmp_path / "scored.csv"
    train = subprocess.run([*CLI, *FAST.argv(series.path, probation_rows(500), model)], capture_output=True,
                           text=True, timeout=300, check=False)
    assert train.returncode == 0, train.stderr
    score = subprocess.run([*CLI, "score", "--model", str(model), "--input", str(series.path), "--output",
                            str(scored)], capture_output=True, text=True, timeout=120, check=False)
    assert score.returncode == 0, score.stderr
    with scored.open() as fh:
        rows = list(csv.DictReader(fh))
    cli_scores = np.array([float(r["anomaly_score"]) if r["anomaly_score"] else np.nan for r in rows])
    cli_flags = np.array([r["is_anomaly"] == "1" for r in rows])
    ours = run.runs["model"]
    assert run.probation == 75
    np.testing.assert_allclose(ours.score, cli_scores, atol=1e-6)
    assert (ours.is_anomaly == cli_flags).all()
    assert ours.is_anomaly[330]  # the injected spike


def test_results_do_not_depend_on_the_number_of_jobs(tiny_corpus: Path, in_process: None) -> None:
    series = find_series(tiny_corpus)
    one = run_corpus(series, FAST, [ScorerSpec()], jobs=1)
    two = run_corpus(series, FAST, [ScorerSpec()], jobs=2)
    assert [r.series.name for r in two] == ["synthetic/sine_spike.csv", "synthetic/walk_shift.csv"]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a.runs["model"].score, b.runs["model"].score)
        np.testing.assert_array_equal(a.runs["model"].is_anomaly, b.runs["model"].is_anomaly)
    report = corpus_scores(two, "model")
    assert report["windows"] == 2
    assert set(report["swept"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert report["swept"]["standard"]["score"] >= report["shipped"]["standard"]["score"]
    assert report["swept"]["standard"]["score"] > 0  # the spike and the shift are found early at some threshold
    # ranking by -log10(tail) is ranking by the score, plus resolution where the score saturates at 1.0
    assert report["swept_surprise"]["standard"]["score"] >= report["swept"]["standard"]["score"]


def test_several_scorer_specs_are_scored_on_one_trained_model(tiny_corpus: Path, in_process: None) -> None:
    series = find_series(tiny_corpus, series=["walk_*"])[0]
    strict = parse_scorer_spec('model:{"threshold": 0.999999999}')
    run = run_series(series, FAST, [ScorerSpec(), strict])
    assert set(run.runs) == {"model", 'model{"threshold":0.999999999}'}
    assert run.runs[strict.label].is_anomaly.sum() <= run.runs["model"].is_anomaly.sum()


def test_unknown_scorers_and_options_are_refused_by_the_score_function(tiny_corpus: Path,
                                                                         in_process: None) -> None:
    series = find_series(tiny_corpus, series=["walk_shift"])[0]
    with pytest.raises(ConfigError, match="unknown scorer 'nope'"):
        run_series(series, FAST, [ScorerSpec("nope")])
    with pytest.raises(ConfigError, match="unknown scorer option"):
        run_series(series, FAST, [ScorerSpec(options={"colour": 1})])
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_scorer_spec("model:{oops")


def test_rows_run_would_refuse_are_refused_per_row_and_scored_as_by_score(tiny_corpus: Path, tmp_path: Path,
                                                                           in_process: None) -> None:
    """A NaN / non-numeric row does not fail its series: it is refused (as `score` and `run` refuse it), counted
    by reason in the JSON, the other rows score exactly as `rnnwatch score` scores the same file, and labels
    still land on the rows whose event times they name."""
    corpus = write_dirty_corpus(tmp_path / "dirty", tiny_corpus)
    series = find_series(corpus)[0]
    run = run_series(series, FAST, [ScorerSpec()])
    assert run.refused == {"bad_timestamp": 1, "non_finite": 2, "non_numeric": 1}
    clean = run_series(find_series(tiny_corpus, series=["sine_spike"])[0], FAST, [ScorerSpec()])

    model, scored = tmp_path / "m.onnx", tmp_path / "scored.csv"
    train = subprocess.run([*CLI, *FAST.argv(series.path, probation_rows(500), model)], capture_output=True,
                           text=True, timeout=300, check=False)
    assert train.returncode == 0, train.stderr
    score = subprocess.run([*CLI, "score", "--model", str(model), "--input", str(series.path), "--output",
                            str(scored)], capture_output=True, text=True, timeout=120, check=False)
    assert score.returncode == 0, score.stderr
    with scored.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [i for i, r in enumerate(rows) if r["status"] != "processed"] == sorted([*DIRTY, *DIRTY_TIME])
    kept = [r for r in rows if r["status"] == "processed"]
    ours = run.runs["model"]
    assert len(run.event_ms) == len(ours.score) == len(kept) == 500 - len(DIRTY) - len(DIRTY_TIME)
    np.testing.assert_allclose(ours.score, [float(r["anomaly_score"]) for r in kept], atol=1e-6)
    assert (ours.is_anomaly == np.array([r["is_anomaly"] == "1" for r in kept])).all()

    # label windows: the same first / last row times as the clean series (a refused row is never a detection)
    assert label_windows(run.event_ms.tolist(), series.windows_ms) == label_windows(clean.event_ms.tolist(),
                                                                                    series.windows_ms)
    spike_ms = int(clean.event_ms[330])
    assert ours.is_anomaly[run.event_ms.tolist().index(spike_ms)]  # the injected spike, found at its own time
    [entry] = corpus_scores([run], "model")["series"]
    assert entry["rows"] == 500 and entry["scored"] == len(kept)
    assert entry["refused"] == {"bad_timestamp": 1, "non_finite": 2, "non_numeric": 1}
    assert entry["forecast_weight"] == load_signature(model).provenance["forecast_skill"]["weight"]


def test_seeds_report_how_far_each_score_moves_with_the_trainer_seed(tiny_corpus: Path, tmp_path: Path,
                                                                      in_process: None) -> None:
    from rnnwatch.evaluate.cli import main

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--corpus", str(tiny_corpus), "--hidden", "8", "--epochs", "3", "--jobs", "1",
                 "--seed", "3", "--seeds", "2", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    [spread] = report["seed_spread"]
    assert spread["scorer"] == "model" and spread["seeds"] == [3, 4]
    main_run = report["scorers"][0]
    for block in ("swept", "shipped"):
        for profile, entry in spread[block].items():
            assert entry["per_seed"]["3"] == main_run[block][profile]["score"]  # the main blocks: the first seed
            assert entry["min"] <= entry["mean"] <= entry["max"] and entry["sd"] >= 0
    # the second seed is a real second run: what `--seed 4` alone reports
    alone = tmp_path / "seed4.json"
    assert main(["evaluate", "--corpus", str(tiny_corpus), "--hidden", "8", "--epochs", "3", "--jobs", "1",
                 "--seed", "4", "--output", str(alone)]) == 0
    seed4 = json.loads(alone.read_text())["scorers"][0]
    assert {p: e["per_seed"]["4"] for p, e in spread["swept"].items()} == {
        p: seed4["swept"][p]["score"] for p in spread["swept"]}


def test_seeds_below_one_are_refused(tiny_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rnnwatch.evaluate.cli import main

    assert main(["evaluate", "--corpus", str(tiny_corpus), "--seeds", "0"]) == 2
    assert "--seeds must be >= 1, got 0" in capsys.readouterr().err

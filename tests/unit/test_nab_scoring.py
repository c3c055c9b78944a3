"""The NAB v1.1 scorer port, checked against the test cases of NAB's own scorer (numenta/NAB
``tests/unit/scorer_test.py`` and ``tests/integration/sweeper_test.py``), plus normalisation and the optimiser."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from rnnwatch.evaluate.nab import (
    PROFILES,
    AnomalyPoint,
    CostMatrix,
    LabeledSeries,
    ThresholdScore,
    calc_score_by_threshold,
    calc_sweep_score,
    incident_openers,
    normalised,
    optimise_incident_threshold,
    optimise_threshold,
    probation_rows,
    scaled_sigmoid,
    score_at_threshold,
)

# --- numenta/NAB tests/unit/scorer_test.py (binary predictions scored at threshold 1) ---------------------------
COST = CostMatrix(tp=1.1, fp=0.11, fn=1.2)
SIG_HALF, SIG_EDGE = 0.8482836399575131, 0.9866142981514305  # scaledSigmoid(-0.5), scaledSigmoid(-1.0)


def _timestamps(n: int) -> list[dt.datetime]:
    end = dt.datetime(2016, 7, 5, 10)
    return [end - (n - i) * dt.timedelta(minutes=5) for i in range(n)]


def _score(predictions: list[int], windows: list[tuple[int, int]], probation: int) -> float:
    """Raw score of binary predictions; ``probation`` rows as a fraction NAB's rule turns back into that count."""
    ts = _timestamps(len(predictions))
    fraction = (probation + 0.5) / len(predictions) if probation else 0.0
    assert probation_rows(len(predictions), fraction) == probation
    series = LabeledSeries("f", ts, np.array(predictions, dtype=float), [(ts[a], ts[b]) for a, b in windows])
    return score_at_threshold([series], COST, 1.0, fraction).score


def test_null() -> None:
    assert _score([0] * 5, [], 0) == pytest.approx(0.0)


def test_false_positives() -> None:
    assert _score([0, 1, 0, 1, 0], [], 0) == pytest.approx(-2.0 * COST.fp)


def test_false_negatives() -> None:
    assert _score([0] * 7, [(1, 2), (4, 5)], 0) == pytest.approx(-2.0 * COST.fn)


def test_false_positives_in_probationary() -> None:
    assert _score([0, 1, 0, 1, 0], [], 4) == pytest.approx(0.0)


def test_false_positives_before_and_after_probationary() -> None:
    assert _score([0, 1, 0, 1, 0], [], 3) == pytest.approx(-1.0 * COST.fp)


def test_true_positives_1() -> None:
    assert _score([0, 0, 1, 0, 0, 0, 0], [(1, 2)], 0) == pytest.approx(SIG_HALF * COST.tp / SIG_EDGE)


def test_true_positives_1_with_fn() -> None:
    expected = SIG_HALF * COST.tp / SIG_EDGE - COST.fn
    assert _score([0, 0, 1, 0, 0, 0, 0], [(1, 2), (4, 5)], 0) == pytest.approx(expected)


def test_true_positives_2() -> None:
    assert _score([0, 0, 0, 0, 1, 0, 0], [(4, 5)], 0) == pytest.approx(SIG_EDGE * COST.tp / SIG_EDGE)


def test_true_positives_3() -> None:
    assert _score([0, 0, 0, 0, 1, 1, 0], [(4, 5)], 0) == pytest.approx(COST.tp)


def test_true_positives_multiple() -> None:
    expected = SIG_HALF * COST.tp / SIG_EDGE + COST.tp
    assert _score([0, 0, 1, 0, 1, 0, 0], [(1, 2), (4, 5)], 0) == pytest.approx(expected)


# --- numenta/NAB tests/integration/sweeper_test.py -----------------------------------------------------------------
@pytest.mark.parametrize(("rows", "fraction", "expected"), [
    (100, 0.0, 0), (100, 1.0, 100), (100, 0.1, 10), (100, 0.15, 15), (5000, 0.1, 500), (6000, 0.1, 500),
])
def test_probationary_length(rows: int, fraction: float, expected: int) -> None:
    assert probation_rows(rows, fraction) == expected


def test_sweep_score_window_interaction() -> None:
    """Scores inside a window are positive; all others negative."""
    n = 100
    windows = [(30, 39), (75, 95)]
    points = calc_sweep_score(list(range(n)), [1.0] * n, windows, "TestDataSet", PROFILES["standard"], 0.1)
    assert len(points) == n
    assert sum(p.window == "probationary" for p in points) == probation_rows(n, 0.1)
    inside = [p for p in points if p.window not in ("probationary", None)]
    assert len(inside) == (39 - 30 + 1) + (95 - 75 + 1)
    for p in points:
        assert (p.sweep_score > 0) == (p.window not in ("probationary", None))


def test_score_by_threshold_returns_expected_scores() -> None:
    fn = 5.0
    points = [
        AnomalyPoint(0, 0.5, -1000, "probationary"),  # never contributes (probationary)
        AnomalyPoint(1, 0.5, -1000, "probationary"),
        AnomalyPoint(2, 0.0, -3, None),
        AnomalyPoint(4, 0.2, 20, "windowA"),  # used instead of the next row once threshold <= 0.2
        AnomalyPoint(5, 0.3, 10, "windowA"),
        AnomalyPoint(6, 0.5, 5, "windowB"),
        AnomalyPoint(7, 0.5, -3, None),
    ]
    assert calc_score_by_threshold(points, fn) == [
        ThresholdScore(1.1, -2 * fn, 0, 2, 0, 3, 5),
        ThresholdScore(0.5, 5 - 3 - fn, 1, 1, 1, 2, 5),
        ThresholdScore(0.3, 5 - 3 + 10, 2, 1, 1, 1, 5),
        ThresholdScore(0.2, 5 - 3 + 20, 3, 1, 1, 0, 5),
        ThresholdScore(0.0, 5 - 3 + 20 - 3, 3, 0, 2, 0, 5),
    ]


# --- normalisation (numenta/NAB nab/runner.py normalize) and the corpus-wide optimiser ------------------------------
def test_scaled_sigmoid_reference_points() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(SIG_EDGE)
    assert scaled_sigmoid(-0.5) == pytest.approx(SIG_HALF)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-SIG_EDGE)
    assert scaled_sigmoid(3.0) == -1.0


def test_normalised_null_and_perfect() -> None:
    cost = PROFILES["reward_low_FN_rate"]
    assert normalised(-2.0 * 4, 4, cost) == 0.0
    assert normalised(4.0, 4, cost) == 100.0
    assert normalised(1.0, 4, cost) == pytest.approx(100 * 9 / 12)
    assert normalised(-0.3, 0, cost) is None


def _corpus() -> list[LabeledSeries]:
    """Two files: a score that peaks early in each window, a few high scores outside."""
    out = []
    for k in range(2):
        n = 200
        scores = np.full(n, 0.1)
        scores[100 + k] = 0.9  # early inside the window [100, 119]
        scores[60] = 0.5 + 0.1 * k  # false positives outside any window
        scores[150] = 0.95 if k == 0 else 0.2
        out.append(LabeledSeries(f"c/f{k}.csv", list(range(n)), scores, [(100, 119)]))
    return out


def test_optimiser_finds_the_best_threshold_over_the_whole_corpus() -> None:
    corpus, cost = _corpus(), PROFILES["standard"]
    best = optimise_threshold(corpus, cost)
    candidates = sorted({float(v) for s in corpus for v in s.scores} | {1.1})
    brute = max(candidates, key=lambda t: score_at_threshold(corpus, cost, t).score)
    assert best.score == pytest.approx(score_at_threshold(corpus, cost, brute).score)
    assert best.threshold == 0.9  # both windows caught at their second/first row, one FP (0.95) after a window
    assert (best.tp, best.fp, best.fn, best.total) == (2, 1, 38, 340)  # NAB counts rows, not windows
    assert score_at_threshold(corpus, cost, best.threshold) == best


def test_detecting_nothing_scores_the_null_detector() -> None:
    corpus = _corpus()
    for cost in PROFILES.values():
        row = score_at_threshold(corpus, cost, math.inf)
        assert normalised(row.score, 2, cost) == 0.0


def test_unbounded_scores_start_from_a_threshold_that_detects_nothing() -> None:
    """A log-scale surprise runs past NAB's 1.1 start: 'nothing detected' must still mean nothing."""
    corpus = [LabeledSeries(s.name, s.timestamps, 10 * s.scores, s.windows) for s in _corpus()]
    cost = PROFILES["standard"]
    points = calc_sweep_score(corpus[0].timestamps, corpus[0].scores.tolist(), corpus[0].windows, "f", cost)
    first = calc_score_by_threshold(points, cost.fn)[0]
    assert first.threshold == math.inf and first.tp == first.fp == 0
    best = optimise_threshold(corpus, cost)
    assert best.threshold == 9.0
    assert best.score == pytest.approx(optimise_threshold(_corpus(), cost).score)  # same ranking, same score


# --- numenta/NAB tests/integration/{true,false}_{positive,negative}_test.py (Sweeper.scoreDataSet) -----------------
FLAT = CostMatrix(tp=1.0, fp=1.0, fn=1.0)


def _generate_windows(n: int, num_windows: int, size: int) -> list[tuple[int, int]]:
    """NAB ``test_helpers.generateWindows`` on row indices (timestamps 0..n-1)."""
    gap = round((n - num_windows * size) / (num_windows + 1))
    return [(gap * (i + 1) + size * i, gap * (i + 1) + size * i + size - 1) for i in range(num_windows)]


def _score_data_set(n: int, windows: list[tuple[int, int]], detections: list[int],
                    threshold: float = 0.5) -> ThresholdScore:
    scores = np.zeros(n)
    scores[detections] = 1.0
    return score_at_threshold([LabeledSeries("testData", list(range(n)), scores, windows)], FLAT, threshold, 0.0)


def _counts(row: ThresholdScore) -> tuple[int, int, int, int]:
    return row.tn, row.tp, row.fp, row.fn


def test_first_true_positive_within_window() -> None:
    windows = _generate_windows(10, 1, 2)
    row = _score_data_set(10, windows, [windows[0][0]])
    assert row.score == pytest.approx(FLAT.tp)
    assert _counts(row) == (10 - 2, 1, 0, 2 - 1)


def test_earlier_true_positive_is_better() -> None:
    windows = _generate_windows(10, 1, 2)
    early, late = _score_data_set(10, windows, [windows[0][0]]), _score_data_set(10, windows, [windows[0][1]])
    assert early.score > late.score
    assert _counts(early) == _counts(late) == (8, 1, 0, 1)


def test_only_the_first_true_positive_within_a_window_scores() -> None:
    windows = _generate_windows(10, 1, 2)
    one, two = _score_data_set(10, windows, [windows[0][0]]), _score_data_set(10, windows, list(windows[0]))
    assert one.score == two.score
    assert _counts(one) == (8, 1, 0, 1) and _counts(two) == (8, 2, 0, 0)


def test_true_positives_with_different_window_sizes() -> None:
    w2, w3 = _generate_windows(10, 1, 2), _generate_windows(10, 1, 3)
    a, b = _score_data_set(10, w2, [w2[0][0]]), _score_data_set(10, w3, [w3[0][0]])
    assert a.score == b.score
    assert _counts(a) == (8, 1, 0, 1) and _counts(b) == (7, 1, 0, 2)


def test_true_positive_at_right_edge_of_window() -> None:
    windows = _generate_windows(1000, 1, 100)
    edge = windows[0][1]
    tp, fp = _score_data_set(1000, windows, [edge]), _score_data_set(1000, windows, [edge + 1])
    assert tp.score + fp.score + 1 == pytest.approx(0.0, abs=1e-3)  # +1: the FN of the second case
    assert _counts(tp) == (900, 1, 0, 99) and _counts(fp) == (899, 0, 1, 100)


def test_false_positive_means_negative_score() -> None:
    row = _score_data_set(1000, _generate_windows(1000, 1, 10), [0])
    assert row.score < 0
    assert _counts(row) == (989, 0, 1, 10)


def test_two_false_positives_is_worse_than_one() -> None:
    windows = _generate_windows(1000, 1, 10)
    one, two = _score_data_set(1000, windows, [0]), _score_data_set(1000, windows, [0, 1])
    assert two.score < one.score
    assert _counts(one) == (989, 0, 1, 10) and _counts(two) == (988, 0, 2, 10)


def test_one_false_positive_no_window() -> None:
    row = _score_data_set(1000, [], [0])
    assert row.score == -FLAT.fp
    assert _counts(row) == (999, 0, 1, 0)


def test_earlier_false_positive_after_window_is_better() -> None:
    windows = _generate_windows(10, 1, 2)
    after = windows[0][1] + 1
    a, b = _score_data_set(10, windows, [after]), _score_data_set(10, windows, [after + 1])
    assert a.score > b.score
    assert _counts(a) == _counts(b) == (7, 0, 1, 2)


@pytest.mark.parametrize(("n", "num_windows"), [(1000, 1), (2000, 4)])
def test_false_negatives_cost_fn_weight_per_window(n: int, num_windows: int) -> None:
    row = _score_data_set(n, _generate_windows(n, num_windows, 10), [], threshold=1.0)
    assert row.score == num_windows * -FLAT.fn
    assert _counts(row) == (n - 10 * num_windows, 0, 0, 10 * num_windows)


# --- incident openers: the product's decisions at a swept threshold --------------------------------------------
def test_incident_openers_flag_the_first_alarm_of_a_burst_only() -> None:
    scores = np.array([0.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 9.0, 0.0])
    # gap 4: the alarm at 7 is 5 steps after 2 (a new incident); 9 is 2 steps after 7 (the same incident)
    assert np.flatnonzero(incident_openers(scores, 5.0, 4)).tolist() == [1, 7]
    assert np.flatnonzero(incident_openers(scores, 6.0, 4)).tolist() == [2, 9]
    assert np.flatnonzero(incident_openers(scores, 5.0, 0)).tolist() == [1, 2, 7, 9]


def test_incident_sweep_counts_a_burst_outside_a_window_as_one_false_positive() -> None:
    n, cost = 400, PROFILES["standard"]
    scores = np.zeros(n)
    scores[200:205] = 8.0  # a burst far from the window: 5 rows, one incident
    scores[300] = 4.0  # the window's only alarm
    corpus = [LabeledSeries("c/f.csv", list(range(n)), scores, [(295, 314)])]
    rows = score_at_threshold(corpus, cost, 4.0)
    assert rows.fp == 5
    best = optimise_incident_threshold(corpus, cost, 4)
    openers = [LabeledSeries(s.name, s.timestamps, incident_openers(s.scores, best.threshold, 4).astype(float),
                             s.windows) for s in corpus]
    assert best.threshold == 4.0
    assert (best.tp, best.fp) == (1, 1)
    assert best.score == pytest.approx(score_at_threshold(openers, cost, 1.0).score)
    assert best.score > optimise_threshold(corpus, cost).score


def test_incident_sweep_agrees_with_scoring_the_openers_at_every_threshold() -> None:
    corpus, gap = _corpus(), 2
    for cost in PROFILES.values():
        best = optimise_incident_threshold(corpus, cost, gap)
        candidates = sorted({float(v) for s in corpus for v in s.scores if v > 0})

        def at(t: float, cost: CostMatrix = cost) -> float:
            ops = [LabeledSeries(s.name, s.timestamps, incident_openers(s.scores, t, gap).astype(float), s.windows)
                   for s in corpus]
            return score_at_threshold(ops, cost, 1.0).score

        assert best.score == pytest.approx(max(at(t) for t in candidates))
        assert best.score == pytest.approx(at(best.threshold))

"""`evaluate` measures the shipped decisions' false alarms where the documented rate applies: rows after the
training (probationary) rows and outside every label window."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnwatch.evaluate.corpus import CorpusSeries
from rnnwatch.evaluate.false_alarms import false_alarms, unlabeled_rows
from rnnwatch.evaluate.harness import ScoredRun, SeriesRun
from rnnwatch.evaluate.table import render_table


def _run(alarm_rows: list[int], opens: list[int]) -> SeriesRun:
    n = 100
    t = np.arange(n, dtype=np.int64) * 1000
    alarm = np.zeros(n, dtype=bool)
    alarm[alarm_rows] = True
    is_anomaly = np.zeros(n, dtype=bool)
    is_anomaly[opens] = True
    surprise = np.where(alarm, 4.0, 0.5)
    surprise[3] = np.nan  # a refused row is not a scored row
    scored = ScoredRun(1 - 10 ** -surprise, is_anomaly, surprise, alarm)
    series = CorpusSeries("c/s.csv", Path("s.csv"), ((50_000, 59_000),))
    return SeriesRun(series, n, {}, t, t.astype(np.float32), t.astype(np.float32), 20, 0.999, {"model": scored},
                     0.0, 0.0)


def test_false_alarms_count_unfitted_unlabeled_rows_only() -> None:
    # row 10 is in the probationary (training) rows, 55 inside the label window: neither is a false alarm
    run = _run([10, 30, 31, 55, 80], [10, 30, 55, 80])
    mask = unlabeled_rows(run, "model")
    assert mask.sum() == 100 - 20 - 10 and not mask[10] and not mask[55] and mask[30]
    fa = false_alarms([run, run], "model")
    assert (fa["rows"], fa["alarm_rows"], fa["incidents"]) == (140, 6, 4)
    assert fa["alarm_rate"] == round(3 / 70, 6) and fa["incident_rate"] == round(2 / 70, 6)
    assert fa["documented_rate"] == 0.001
    assert fa["windows_per_row"] == 1 / 80  # label density of the scored rows: what moves NAB's best threshold
    assert [s["incidents"] for s in fa["series"]] == [2, 2]


def test_the_table_prints_the_false_alarm_rates_beside_the_documented_one() -> None:
    block = {p: {"score": 50.0, "raw": 0.5} for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")}
    fa = false_alarms([_run([30, 80], [30, 80])], "model")
    text = render_table({"scorers": [{"scorer": "model", "options": {}, "windows": 1, "swept": block,
                                      "shipped": block, "categories": {}, "series": [], "false_alarms": fa}]})
    assert "0.028571 alarm rows and 0.028571 incidents per row (documented 0.001 alarm rows)" in text

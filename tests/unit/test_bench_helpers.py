"""The benchmark's own arithmetic (tests/bench): percentiles, pacing, ratios, transports, rendering.

The bench measures; these tests only check that what it computes from its measurements is right, and that
the README's performance tables are exactly what the committed reports render to. Nothing here is timed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.bench import (
    bench_feeds,
    bench_latency,
    bench_memory,
    bench_process,
    bench_render,
    bench_rnnwatch,
    bench_stats,
)
from tests.bench.bench_peers import BenchError
from tests.bench.bench_throughput import Feed

BENCH = Path(__file__).resolve().parents[1] / "bench"
README = Path(__file__).resolve().parents[2] / "README.md"


# -- percentiles and summaries -----------------------------------------------------------------------------
def test_percentile_is_nearest_rank_so_it_is_always_an_observed_value() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert bench_stats.percentile(values, 50) == 50.0
    assert bench_stats.percentile(values, 99) == 99.0
    assert bench_stats.percentile(values, 100) == 100.0
    assert bench_stats.percentile([7.0, 1.0, 3.0], 50) == 3.0  # unsorted input
    assert bench_stats.percentile([4.0], 99) == 4.0
    assert bench_stats.percentile([1.0, 2.0, 3.0, 4.0, 1000.0], 99) == 1000.0  # p99 of 5 is the worst one


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], 0), ([1.0], 101)])
def test_percentile_refuses_what_has_no_answer(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        bench_stats.percentile(values, q)


def test_latency_summary_counts_and_rounds() -> None:
    summary = bench_stats.latency_summary([10.04, 20.0, 30.0, 40.0, 250.06])
    assert summary == {"count": 5, "p50_ms": 30.0, "p90_ms": 250.1, "p99_ms": 250.1, "max_ms": 250.1}
    assert bench_stats.latency_summary([])["count"] == 0


def test_ratio_carries_both_numbers_and_is_none_without_a_denominator() -> None:
    r = bench_stats.ratio("rnnwatch", 123_000.0, "raw", 190_000.0)
    assert r["value"] == 0.647
    assert r["numerator"] == {"what": "rnnwatch", "records_per_second": 123_000.0}
    assert r["denominator"] == {"what": "raw", "records_per_second": 190_000.0}
    assert bench_stats.ratio("rnnwatch", 1.0, "raw confluent", None)["value"] is None
    assert bench_stats.ratio("rnnwatch", None, "raw", 2.0)["value"] is None


def test_best_run_keeps_the_fastest_and_rate_never_divides_by_zero() -> None:
    runs = [{"records_per_second": 5.0, "n": 1}, {"records_per_second": 9.0, "n": 2}, {"records_per_second": 7.0}]
    assert bench_stats.best_run(runs)["n"] == 2
    assert bench_stats.rate(100, 0.0) == 0.0
    assert bench_stats.rate(100, 0.5) == 200.0


# -- pacing ------------------------------------------------------------------------------------------------
def test_due_sends_record_i_at_i_over_rate_and_never_more_than_the_total() -> None:
    assert bench_feeds.due(-0.1, 100.0, 1000) == 0
    assert bench_feeds.due(0.0, 100.0, 1000) == 1  # record 0 is due at once
    assert bench_feeds.due(0.0999, 100.0, 1000) == 10
    assert bench_feeds.due(0.1, 100.0, 1000) == 11
    assert bench_feeds.due(60.0, 100.0, 1000) == 1000


def test_achieved_rate_counts_intervals_between_first_and_last_send() -> None:
    assert bench_feeds.achieved_rate(11, 5.0, 6.0) == 10.0  # 11 sends, 10 intervals, 1 s
    assert bench_feeds.achieved_rate(1, 5.0, 6.0) == 0.0
    assert bench_feeds.achieved_rate(10, 5.0, 5.0) == 0.0


@pytest.mark.parametrize(("every", "symbols", "expected"), [(1000, 1000, 1001), (5000, 1000, 5001), (7, 10, 7),
                                                             (10, 10, 11), (0, 4, 1)])
def test_shock_interval_is_coprime_with_the_symbol_count(every: int, symbols: int, expected: int) -> None:
    assert bench_feeds.coprime_interval(every, symbols) == expected


def test_paced_feed_shocks_walk_over_every_symbol_and_leave_the_walk_unchanged() -> None:
    shocked = bench_feeds.PacedFeed(10, seed=3, shock_every=10, shock_size=0.15, warmup_ticks=20)
    calm = bench_feeds.PacedFeed(10, seed=3, shock_every=10**9, shock_size=0.15, warmup_ticks=10**9)
    a = [shocked.record(i) for i in range(200)]
    b = [calm.record(i) for i in range(200)]
    hits = [i for i, (_, _, shock) in enumerate(a) if shock]
    assert hits[:3] == [20, 31, 42]  # every 11 ticks (coprime with 10 symbols) after the warm-up
    assert {a[i][0] for i in hits[:10]} == {f"S{k:05d}".encode() for k in range(10)}
    for i, ((key, value, shock), (calm_key, calm_value, _)) in enumerate(zip(a, b, strict=True)):
        assert key == calm_key
        if shock:
            ratio = json.loads(value)["price"] / json.loads(calm_value)["price"]
            assert ratio == pytest.approx(1.15, abs=1e-4) or ratio == pytest.approx(0.85, abs=1e-4), i
        else:
            assert value == calm_value, f"tick {i} changed although it is not a shock"


# -- transports --------------------------------------------------------------------------------------------
HELP_TODAY = "usage: rnnwatch run [-h] [--config TOML] [--bootstrap-servers SERVERS] [--until-caught-up]"
HELP_LATER = "usage: rnnwatch run [-h] [--transport {kafka-python,confluent}] [--until-caught-up]"


def test_without_a_transport_option_only_the_default_runs_and_the_rest_say_why() -> None:
    kafka_python, confluent = bench_rnnwatch.resolve_transports(["kafka-python", "confluent"], HELP_TODAY)
    assert kafka_python.available and kafka_python.flag == ()
    assert not confluent.available and "no --transport option" in confluent.reason
    assert confluent.as_dict() == {"available": False, "reason": confluent.reason}


def test_an_offered_transport_is_passed_by_name_and_an_unknown_one_is_not_faked() -> None:
    kafka_python, confluent, other = bench_rnnwatch.resolve_transports(["kafka-python", "confluent", "grpc"],
                                                                       HELP_LATER)
    assert kafka_python.flag == ("--transport", "kafka-python")
    assert confluent.available and confluent.flag == ("--transport", "confluent")
    assert not other.available and "offers kafka-python, confluent" in other.reason


# -- processes -----------------------------------------------------------------------------------------------
def test_a_launched_command_reports_its_own_peak_rss_not_the_harness_s(tmp_path: Path) -> None:
    ballast = b"x" * (300 * 1024 * 1024)  # the harness's high-water RSS is now above 300 MiB
    with (tmp_path / "out").open("w+b") as out, (tmp_path / "err").open("w+b") as err:
        done = bench_process.Launched([sys.executable, "-c", "pass"], out, err).wait(60)
    del ballast
    assert done["exit_code"] == 0
    assert 0 < done["peak_rss_mib"] < 100, "a bare interpreter's peak RSS is tens of MiB, not the harness's"


def test_the_launcher_forwards_sigterm_and_passes_the_exit_code_back(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = ("import signal, sys, time, pathlib\n"
              "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
              f"pathlib.Path({str(ready)!r}).touch()\n"
              "time.sleep(60)\n")
    with (tmp_path / "out").open("w+b") as out, (tmp_path / "err").open("w+b") as err:
        launched = bench_process.Launched([sys.executable, "-c", script], out, err)
        deadline = time.monotonic() + 30
        while not ready.exists() and not launched.exited() and time.monotonic() < deadline:
            time.sleep(0.05)
        launched.terminate()
        done = launched.wait(30)
    assert done["exit_code"] == 3


# -- rows built from measurements ----------------------------------------------------------------------------
def _fed(shocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"records": 1000, "achieved_rate": 99.9, "seconds": 10.0, "producer": "confluent-kafka", "linger_ms": 1,
            "max_behind_schedule_ms": 1.0, "queue_full_waits": 0, "shock_every": 101, "shocks": shocks,
            "undelivered": 0, "delivery_errors": []}


def _seen(events: list[dict[str, Any]]) -> Any:
    seen = bench_latency._Seen()
    seen.events.extend(events)
    seen.probes.append({"visible_ms": 1005.0, "timestamp": 1000})
    return seen


def test_latency_row_measures_reader_time_minus_the_input_timestamp() -> None:
    shock = {"key": "S00001", "partition": 1, "offset": 7, "timestamp_ms": 1000}
    events = [{"visible_ms": 1042.0, "sent_ms": 1030, "key": "S00001", "partition": 1, "offset": 7,
               "timestamp": 1000},
              {"visible_ms": 2010.0, "sent_ms": 2004, "key": "S00002", "partition": 0, "offset": 3,
               "timestamp": 2000}]
    plan = bench_latency.LatencyPlan(rate=100.0, duration_s=10.0, min_events=2)
    row = bench_latency.latency_row(plan, _fed([shock]), _seen(events), {"exit_code": 0}, 0.0)
    assert (row["events"], row["events_from_shocks"], row["shocks"]) == (2, 1, 1)
    assert row["latency"]["max_ms"] == 42.0 and row["latency"]["p50_ms"] == 10.0
    assert row["in_rnnwatch"]["max_ms"] == 30.0
    assert row["delivery"]["max_ms"] == 12.0
    assert row["floor"]["max_ms"] == 5.0


def test_latency_row_fails_loudly_when_it_cannot_stand_for_what_it_claims() -> None:
    shock = {"key": "S00001", "partition": 1, "offset": 7, "timestamp_ms": 1000}
    rewritten = [{"visible_ms": 1042.0, "sent_ms": 1030, "key": "S00001", "partition": 1, "offset": 7,
                  "timestamp": 1017}]
    plan = bench_latency.LatencyPlan(rate=100.0, duration_s=10.0, min_events=1)
    with pytest.raises(BenchError, match="rewrote record timestamps"):
        bench_latency.latency_row(plan, _fed([shock]), _seen(rewritten), {}, 0.0)
    with pytest.raises(BenchError, match="only 0 anomaly events"):
        bench_latency.latency_row(plan, _fed([shock]), _seen([]), {}, 0.0)


def test_memory_row_gives_total_and_marginal_bytes_per_key() -> None:
    row = bench_memory.memory_row(Feed(1_000_000, 1_000_000), {"peak_rss_mib": 500.0, "rss_last_sample_mib": 400.0,
                                                               "records_per_second": 1.0},
                                  Feed(100_000, 1_000), {"peak_rss_mib": 100.0, "rss_last_sample_mib": 90.0}, 136)
    assert row["bytes_per_key"] == round(500 * 1024 * 1024 / 1_000_000)
    assert row["marginal_bytes_per_key"] == round(400 * 1024 * 1024 / 999_000)
    assert row["state_bytes_per_key"] == 136 and row["baseline"]["peak_rss_mib"] == 100.0


def test_table_bytes_per_key_of_the_bundled_model_add_up_and_render() -> None:
    from rnnwatch.consumer.settings import bundled_model_path

    parts = bench_memory.table_bytes_per_key(bundled_model_path())
    assert parts["sum"] == sum(v for k, v in parts.items() if k != "sum")
    assert parts["model_state"] >= 136 and parts["scorer_state"] > 0
    text = bench_render._table_bytes({"table_bytes_per_key": parts})
    assert text.startswith(f"{parts['sum']} (") and "scorer" in text
    assert bench_render._table_bytes({}) == "-"


# -- rendering ---------------------------------------------------------------------------------------------
def _report(raw: float, ours: float) -> dict[str, Any]:
    unavailable = {"available": False, "reason": "no --transport option"}
    feed = {"name": "200,000 ticks x 1,000 symbols", "partitions": 4, "ticks_per_key": 200.0}
    peers = {"feed": feed, "raw_kafka_python": {"best": {"records_per_second": raw}},
             "raw_confluent_kafka": {"best": {"records_per_second": 900_000.0}},
             "naive_per_message": {"records": 20_000, "records_per_second": 30_000.0},
             "rnnwatch": {"kafka-python": {"records_per_second": ours,
                                           "ratio_to_raw_kafka_python": {"value": round(ours / raw, 3)}},
                          "confluent": unavailable}}
    return {"started_at": "2026-11-24T12:00:00+00:00", "seconds": 300.0, "plan": {"runs": 3},
            "machine": {"cpus": 2, "packages": {}, "load_average_at_start": [1.0]}, "load_average_at_end": [2.0],
            "transports": {"kafka-python": {"available": True, "arguments": []}, "confluent": unavailable},
            "sections": {"peers": peers, "keys": {"feeds": [peers]}}, "definitions": {"latency": "defined"},
            "errors": []}


def test_render_shows_every_run_side_by_side_and_an_unavailable_row_once() -> None:
    text = bench_render.render([_report(190_000.0, 123_500.0), _report(180_000.0, 126_000.0)])
    assert "| 190,000 / 180,000 |" in text
    assert "123,500 (0.65×) / 126,000 (0.70×)" in text
    assert "| `rnnwatch run --until-caught-up`, confluent transport (× raw confluent-kafka) | not available |" in text
    assert "confluent: not available (no --transport option)" in text
    assert "* **latency**: defined." in text


def test_render_names_the_cluster_a_bootstrap_servers_report_ran_against() -> None:
    report = _report(190_000.0, 123_500.0)
    report["machine"]["broker"] = "external: kafka:9092 (Kafka API 3.9)"
    text = bench_render.render([report])
    assert "; Kafka cluster kafka:9092 (Kafka API 3.9);" in text
    assert "Tansu" not in text


def test_replace_block_swaps_only_the_marked_block() -> None:
    begin, end = bench_render.BEGIN, bench_render.END
    text = f"before\n{begin}\nold\n{end}\nafter\n"
    assert bench_render.replace_block(text, "new\n") == f"before\n{begin}\nnew\n{end}\nafter\n"
    with pytest.raises(ValueError, match="exactly one"):
        bench_render.replace_block("no markers here", "new\n")


def test_the_readme_tables_are_what_the_committed_reports_render_to() -> None:
    reports = sorted((BENCH / "results").glob("*.json"))
    assert reports, "tests/bench/results/ holds the reports behind the README's performance section"
    block = bench_render.render([json.loads(p.read_text()) for p in reports])
    readme = README.read_text()
    assert bench_render.replace_block(readme, block) == readme, "README out of date: run `make bench-readme`"


def test_paired_timing_alternates_the_revisions_and_reports_the_median_ratio() -> None:
    calls: list[str] = []
    base_times, new_times = iter([10.0, 30.0, 20.0]), iter([5.0, 45.0, 12.0])

    def base() -> float:
        calls.append("base")
        return next(base_times)

    def new() -> float:
        calls.append("new")
        return next(new_times)

    assert bench_stats.paired(base, new, 3) == {"base_us": 20.0, "new_us": 12.0, "ratio": 0.6}
    assert calls == ["base", "new"] * 3  # alternated, so both see the same load

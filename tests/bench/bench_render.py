"""Render `make bench` JSON reports as the README's performance tables (Markdown).

    python -m tests.bench.bench_render run1.json [run2.json ...] [--readme README.md]

With several reports (runs of the same bench on the same machine) every cell shows the values in run order,
``run 1 / run 2``, so run-to-run noise is in plain sight. ``--readme`` replaces the block between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` in that file; without it the Markdown goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BEGIN", "END", "dig", "render", "replace_block"]

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
Report = dict[str, Any]
Format = Callable[[Any], str]
# The raw consume each transport is compared with: the same client library underneath.
RAW_PEER = {"kafka-python": "ratio_to_raw_kafka_python", "confluent": "ratio_to_raw_confluent_kafka"}


def dig(data: Any, *path: str | int) -> Any:
    """``data[p0][p1]...``, or None when any step is missing (a section not run, a row not available)."""
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def num(value: Any, digits: int = 0) -> str:
    """1234.5 -> '1,235'; None -> '–' (not measured)."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.{digits}f}"


def _status(row: Any) -> str | None:
    """Why a row holds no numbers (not available, failed), or None when it has them."""
    if isinstance(row, dict) and row.get("available") is False:
        return "not available"  # why: in the transports line
    if isinstance(row, dict) and "error" in row:
        return f"failed ({str(row['error'])[:160]})"
    return None


def across(reports: Sequence[Report], path: Sequence[str | int], fmt: Format) -> str:
    """One cell: ``fmt`` of the row at ``path`` in each report, joined ``run 1 / run 2``.

    A row that is not available (or failed) the same way in every report is said once.
    """
    rows = [dig(r, *path) for r in reports]
    states = {_status(row) for row in rows}
    if len(states) == 1 and (state := states.pop()) is not None:
        return state
    return " / ".join(_status(row) or ("–" if row is None else fmt(row)) for row in rows)


def first(reports: Sequence[Report], *path: str | int) -> Any:
    """The row at ``path`` of the first report that has it (for names and shapes, not numbers)."""
    return next((v for r in reports if (v := dig(r, *path)) is not None), None)


def _rate(key: str = "records_per_second") -> Format:
    return lambda row: num(dig(row, key))


def _rate_ratio(ratio_key: str) -> Format:
    return lambda row: f"{num(dig(row, 'records_per_second'))} ({num(dig(row, ratio_key, 'value'), 2)}×)"


def _broker(broker: str) -> str:
    """The cluster a report ran against: ``--bootstrap-servers`` reports say ``external: host:port``."""
    if broker.startswith("external:"):
        return f"Kafka cluster {broker.removeprefix('external:').strip()}"
    return f"embedded Tansu broker ({broker}, memory storage) on the same host"


def _machine(reports: Sequence[Report]) -> list[str]:
    m = reports[0]["machine"]
    pkgs = m.get("packages", {})
    loads = " / ".join(f"{num(dig(r, 'machine', 'load_average_at_start', 0), 2)} → "
                       f"{num(dig(r, 'load_average_at_end', 0), 2)}" for r in reports)
    runs = f"{len(reports)} runs, cells read run 1 / run 2" if len(reports) > 1 else "one run"
    return [
        f"Measured by `make bench` ({runs}; {across(reports, ['seconds'], num)} s; started "
        f"{', '.join(str(r.get('started_at')) for r in reports)}) on {m.get('cpus')} CPUs ({m.get('cpu_model')}), "
        f"{m.get('memory_gib')} GiB, Python {m.get('python')}, {m.get('platform')}; kafka-python "
        f"{pkgs.get('kafka-python')}, confluent-kafka {pkgs.get('confluent-kafka')} (librdkafka "
        f"{m.get('librdkafka')}), onnxruntime {pkgs.get('onnxruntime')}; {_broker(str(m.get('broker')))}; "
        f"commit {m.get('commit')}. The machine was shared "
        f"with other work (1-minute load average at start → end: {loads}), so expect run-to-run noise.",
        "",
        "Transports of `rnnwatch run`: " + "; ".join(
            f"{name}: " + ("measured" + (f" with `{' '.join(t['arguments'])}`" if t.get("arguments") else "")
                           if t.get("available") else f"not available ({t.get('reason')})")
            for name, t in (reports[0].get("transports") or {}).items()) + ".",
        "",
    ]


def _peers(reports: Sequence[Report]) -> list[str]:
    feed = first(reports, "sections", "peers", "feed")
    if feed is None:
        return []
    runs = first(reports, "plan", "runs")
    peers = ("sections", "peers")
    lines = [f"**Peers**, {feed['name']}, {feed['partitions']} partitions:", "",
             "| consumer | records/s | CPU µs per record |", "|---|---|---|"]
    rows = [(f"raw kafka-python, tuned (crc32c, 64 MiB fetches, 20,000 records per poll), best of {runs}",
             [*peers, "raw_kafka_python", "best"], _rate()),
            (f"raw confluent-kafka, tuned (same fetch sizes, fetch.queue.backoff.ms 10), clock includes its "
             f"prefetch, best of {runs}",
             [*peers, "raw_confluent_kafka", "best"], _rate()),
            (f"naive loop: kafka-python + `json.loads` + one onnxruntime call per message "
             f"({num(first(reports, *peers, 'naive_per_message', 'records'))} records)",
             [*peers, "naive_per_message"], _rate())]
    for name in first(reports, *peers, "rnnwatch") or {}:
        ratio_key = RAW_PEER.get(name, "ratio_to_raw_kafka_python")
        rows.append((f"`rnnwatch run --until-caught-up`, {name} transport (× raw {_client(ratio_key)})",
                     [*peers, "rnnwatch", name], _rate_ratio(ratio_key)))
    for label, path, fmt in rows:
        cpu = across(reports, path, lambda x: num(dig(x, "cpu_us_per_record"), 1))
        lines.append(f"| {label} | {across(reports, path, fmt)} | {cpu} |")
    return [*lines, ""]


def _client(ratio_key: str) -> str:
    return ratio_key.removeprefix("ratio_to_raw_").replace("_", "-")


def _keys(reports: Sequence[Report]) -> list[str]:
    feeds = first(reports, "sections", "keys", "feeds") or []
    transports = list(first(reports, "transports") or {})
    if not feeds:
        return []
    lines = ["**By key count** (records/s; each rnnwatch rate × the raw consume with the same client on the same "
             "feed):", "",
             "| feed | raw kafka-python | raw confluent-kafka | "
             + " | ".join(f"`rnnwatch run`, {t}" for t in transports) + " |",
             "|---" * (3 + len(transports)) + "|"]
    for i in range(len(feeds)):
        path = ("sections", "keys", "feeds", i)
        feed = first(reports, *path, "feed")
        name = f"{feed['name']} ({num(feed['ticks_per_key'])} ticks per key)" if feed else f"feed {i + 1}"
        cells = [name, across(reports, [*path, "raw_kafka_python", "best"], _rate()),
                 across(reports, [*path, "raw_confluent_kafka", "best"], _rate())]
        cells += [across(reports, [*path, "rnnwatch", t], _rate_ratio(RAW_PEER.get(t, "ratio_to_raw_kafka_python")))
                  for t in transports]
        if feed is None:
            cells = [name, across(reports, path, str)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _latency(reports: Sequence[Report]) -> list[str]:
    runs = first(reports, "sections", "latency", "runs") or {}
    if not runs:
        return []
    lines = ["**Latency**, produce time → anomaly event readable downstream, in ms (bundled model, 1,000 symbols, "
             "rnnwatch's default settings); the raw clients' rows are the age of every record on receipt under "
             "the same pacing:", "",
             "| consumer | target rate | achieved rate | events (from shocks) | p50 | p99 | max "
             "| in rnnwatch p50, p99 | floor p50, p99 | machine CPU busy |", "|---" * 10 + "|"]
    for client, rows in (first(reports, "sections", "latency", "raw") or {}).items():
        label = next((r["label"] for r in rows if "label" in r), client) if isinstance(rows, list) else client
        lines += _raw_latency_rows(reports, client, label, rows)
    for name, rows in runs.items():
        if isinstance(rows, dict):
            lines.append(f"| `rnnwatch run`, {name} transport | "
                         f"{across(reports, ['sections', 'latency', 'runs', name], str)} |")
            continue
        for i, row in enumerate(rows):
            path = ("sections", "latency", "runs", name, i)
            target = f"{num(row['target_rate'])}/s" if "target_rate" in row else f"run {i + 1}"
            if _status(row):
                lines.append(f"| `rnnwatch run`, {name} transport | {target} | {across(reports, path, str)} |")
                continue
            cells = [f"`rnnwatch run`, {name} transport", target, across(reports, path, _rate("achieved_rate")),
                     across(reports, path, lambda x: f"{num(x['events'])} ({num(x['events_from_shocks'])})"),
                     *(across(reports, [*path, "latency"], lambda x, k=k: num(x[k], 1))  # type: ignore[misc]
                       for k in ("p50_ms", "p99_ms", "max_ms")),
                     across(reports, [*path, "in_rnnwatch"], _p50_p99), across(reports, [*path, "floor"], _p50_p99),
                     across(reports, [*path, "cpu_during_feed"], _busy)]
            lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _raw_latency_rows(reports: Sequence[Report], client: str, label: str, rows: Any) -> list[str]:
    path: tuple[str | int, ...] = ("sections", "latency", "raw", client)
    if isinstance(rows, dict):
        return [f"| {label} | {across(reports, path, str)} |"]
    out = []
    for i, row in enumerate(rows):
        target = f"{num(row['target_rate'])}/s" if "target_rate" in row else f"run {i + 1}"
        cells = [label, target, across(reports, [*path, i], _rate("achieved_rate")), "–",
                 *(across(reports, [*path, i, "age"], lambda x, k=k: num(x[k], 1))  # type: ignore[misc]
                   for k in ("p50_ms", "p99_ms", "max_ms")), "–", "–", across(reports, [*path, i], _busy)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _busy(row: Any) -> str:
    share = dig(row, "machine_busy_share")
    return "–" if share is None else f"{share:.0%}"


def _p50_p99(summary: Any) -> str:
    return f"{num(summary['p50_ms'], 1)}, {num(summary['p99_ms'], 1)}"


def _memory(reports: Sequence[Report]) -> list[str]:
    section = first(reports, "sections", "memory") or {}
    names = [k for k, v in section.items() if isinstance(v, dict)]
    if not names:
        return []
    lines = ["**Memory** with one state row per key (bundled model):", "",
             "| transport | keys | peak RSS, MiB | bytes per key, total | bytes per key, marginal | model state "
             "bytes per key | state table bytes per key | baseline: peak RSS, MiB (keys) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        path = ("sections", "memory", name)
        row = section[name]
        if _status(row):
            lines.append(f"| {name} | {across(reports, path, str)} |")
            continue
        lines.append("| " + " | ".join([
            name, num(row["keys"]), across(reports, path, lambda x: num(x["peak_rss_mib"], 1)),
            across(reports, path, lambda x: num(x["bytes_per_key"])),
            across(reports, path, lambda x: num(x["marginal_bytes_per_key"])), num(row["state_bytes_per_key"]),
            _table_bytes(row),
            across(reports, path, lambda x: f"{num(x['baseline']['peak_rss_mib'], 1)} "
                                            f"({num(x['baseline']['keys'])})")]) + " |")
    return [*lines, ""]


def _table_bytes(row: dict[str, Any]) -> str:
    """``sum (model + scorer + bookkeeping + index + keys)``, or ``-`` for reports without it."""
    parts = row.get("table_bytes_per_key")
    if not isinstance(parts, dict):
        return "-"
    return (f"{num(parts['sum'])} ({num(parts['model_state'])} model + {num(parts['scorer_state'])} scorer + "
            f"{num(parts['bookkeeping'])} bookkeeping + {num(parts['key_index'])} index + "
            + (f"{num(parts['keys'])} key slots + the key's length)" if "keys" in parts  # packed keys
               else f"{num(parts['key_ref'])} key pointer)"))  # reports from before the packed keys


def _definitions(reports: Sequence[Report]) -> list[str]:
    defs = first(reports, "definitions") or {}
    return ["How it is measured:", "", *(f"* **{name}**: {text}." for name, text in defs.items()), ""]


def render(reports: Sequence[Report]) -> str:
    """The Markdown block (without markers) for one or more reports of the same bench."""
    if not reports:
        msg = "render needs at least one report"
        raise ValueError(msg)
    parts = [*_machine(reports), *_peers(reports), *_keys(reports), *_latency(reports), *_memory(reports),
             *_definitions(reports)]
    errors = [f"run {i + 1}: {e}" for i, r in enumerate(reports) for e in r.get("errors", [])]
    if errors:
        parts += ["Measurements that failed:", "", *(f"* {e}" for e in errors), ""]
    return "\n".join(parts).rstrip() + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with everything between the bench markers replaced by ``block`` (markers kept)."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        msg = f"expected exactly one {BEGIN} ... {END} block"
        raise ValueError(msg)
    return pattern.sub(lambda _m: f"{BEGIN}\n{block}{END}", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="JSON reports of `make bench`, in run order")
    parser.add_argument("--readme", type=Path, help="replace the bench block of this Markdown file")
    args = parser.parse_args(argv)
    block = render([json.loads(p.read_text()) for p in args.reports])
    if args.readme is None:
        sys.stdout.write(block)
        return 0
    args.readme.write_text(replace_block(args.readme.read_text(), block))
    return 0


if __name__ == "__main__":
    sys.exit(main())

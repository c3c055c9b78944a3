"""`make bench-decode`: records/s of the input decoder alone (JSON parse, field access, range checks).

The decoder sits on the hot path of every poll; ``make bench`` measures it only inside the whole service.
This isolates it: polls of 20,000 realistic ticks (Kafka key, numeric or ISO 8601 event time, one price),
handed over as a transport hands them (``Polled`` columns), decoded repeatedly, best of several rounds, one JSON
document on stdout. ``one_bad_record`` is the ISO poll with one malformed value in the middle: only its chunk
takes the careful per-record path.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace

import orjson

from rnnwatch.consumer.contract import FeatureSpec
from rnnwatch.consumer.decoder import TickDecoder
from rnnwatch.consumer.kafka.polled import Polled


@dataclass(frozen=True)
class _Rec:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp: int
    headers: list[tuple[str, bytes | None]]


def _poll(n: int, iso: bool, symbols: int = 1000) -> list[_Rec]:
    out = []
    for i in range(n):
        sym = f"S{i % symbols:04d}"
        ts: object = f"2024-01-02T00:{(i // symbols) % 60:02d}:00Z" if iso else 1_704_153_600 + i // symbols
        value = orjson.dumps({"symbol": sym, "ts": ts, "price": round(100 + (i % 977) * 0.01, 4)})
        out.append(_Rec(sym.encode(), value, i % 4, i, 1_704_153_600_000, []))
    return out


def _with_one_bad(records: list[_Rec]) -> list[_Rec]:
    middle = len(records) // 2
    return [*records[:middle], replace(records[middle], value=b'{"symbol": "S0001", "price": '), *records[middle + 1:]]


def measure(records: list[_Rec], rounds: int, repeat: int, bad: int = 0) -> float:
    decoder = TickDecoder([FeatureSpec("price", "positive")], ["price"], key_field="symbol", time_field="ts")
    now_ms = int(time.time() * 1000)
    polled = Polled.of(records, "ticks")
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            batch, _, rejected = decoder.decode(polled, now_ms)
        seconds = time.perf_counter() - start
        if len(batch) != len(records) - bad or len(rejected) != bad:
            msg = f"decoder rejected {len(rejected)} benchmark records, expected {bad}"
            raise RuntimeError(msg)
        best = max(best, len(records) * repeat / seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per poll")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=10, help="polls decoded per round")
    args = parser.parse_args()
    result = {
        "records_per_poll": args.records,
        "numeric_ts_records_per_second": round(measure(_poll(args.records, iso=False), args.rounds, args.repeat)),
        "iso_ts_records_per_second": round(measure(_poll(args.records, iso=True), args.rounds, args.repeat)),
        "one_bad_record_records_per_second": round(measure(_with_one_bad(_poll(args.records, iso=True)), args.rounds,
                                                           args.repeat, bad=1)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

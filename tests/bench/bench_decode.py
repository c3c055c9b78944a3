"""`make bench-decode`: records/s of the input decoder alone (JSON parse, field access, range checks).

The decoder sits on the hot path of every poll; ``make bench`` measures it only inside the whole service.
This isolates it: polls of 20,000 realistic ticks (Kafka key, numeric or ISO 8601 event time, one price),
decoded repeatedly, best of several rounds, one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import orjson

from rnnwatch.consumer.contract import FeatureSpec
from rnnwatch.consumer.decoder import TickDecoder


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


def measure(records: list[_Rec], rounds: int, repeat: int) -> float:
    decoder = TickDecoder([FeatureSpec("price", "positive")], ["price"], key_field="symbol", time_field="ts")
    now_ms = int(time.time() * 1000)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            batch, _, rejected = decoder.decode(records, now_ms)
        seconds = time.perf_counter() - start
        if len(batch) != len(records) or rejected:
            msg = f"decoder rejected {len(rejected)} benchmark records"
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
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""`rnnwatch produce`: replay price ticks into a topic (the feed itself: :mod:`rnnwatch.consumer.demo.feed`)."""

from __future__ import annotations

import argparse

from rnnwatch.consumer.demo.feed import inject_shocks, load_ticks, produce_ticks, shifted, synthetic_ticks

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("produce", help="Replay price ticks (bundled, a CSV, or synthetic) into a Kafka topic.")
    p.add_argument("--bootstrap-servers", default="localhost:9092", help="Kafka bootstrap servers.")
    p.add_argument("--topic", required=True, help="Topic to write ticks to.")
    p.add_argument("--input", default="", help="CSV of ticks (default: the bundled real prices).")
    p.add_argument("--key-column", default="symbol")
    p.add_argument("--time-column", default="ts")
    p.add_argument("--value-column", default="price")
    p.add_argument("--rate", type=float, default=0.0, help="Ticks per second (0 = as fast as possible).")
    p.add_argument("--shocks", type=int, default=0, help="Inject this many price shocks (printed).")
    p.add_argument("--shock-size", type=float, default=0.15, help="Relative shock size (default 0.15).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic-symbols", type=int, default=0, help="Generate a random-walk feed instead.")
    p.add_argument("--ticks", type=int, default=200_000, help="Ticks of the synthetic feed.")
    p.add_argument("--loop", action="store_true", help="Replay forever (timestamps move on each pass).")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.synthetic_symbols:
        ticks = synthetic_ticks(args.synthetic_symbols, args.ticks, seed=args.seed)
    else:
        ticks = load_ticks(args.input or None, key_column=args.key_column, time_column=args.time_column,
                           value_column=args.value_column)
    for shock in inject_shocks(ticks, count=args.shocks, size=args.shock_size, seed=args.seed):
        print(f"shock row {shock.index}: {shock.symbol} {shock.ts} {shock.old} -> {shock.new}")
    passes = 0
    while True:
        sent = produce_ticks(args.bootstrap_servers, args.topic, shifted(ticks, passes), rate=args.rate)
        print(f"sent {sent} ticks to {args.topic}")
        passes += 1
        if not args.loop:
            return 0

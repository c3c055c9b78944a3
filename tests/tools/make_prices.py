"""Regenerate consumer/data/prices.csv: the demo's bundled real daily prices (public domain).

Source: the Quandl WIKI end-of-day prices as shipped by the ``bokeh-sampledata`` package (declared public
domain by Quandl, see consumer/data/PRICES.md). We keep the split- and dividend-adjusted close of AAPL,
GOOG, IBM and MSFT from 2005-01-01 to the end of the series (2013-03-01), sorted by date then symbol, so the
replay interleaves symbols like a live feed.
"""

from __future__ import annotations

import csv
import gzip
import sys
from pathlib import Path

SYMBOLS = ("AAPL", "GOOG", "IBM", "MSFT")
START = "2005-01-01"


def main(out: Path) -> int:
    import bokeh_sampledata

    source = Path(bokeh_sampledata.__file__).parent / "_data" / "stocks.csv.gz"
    rows = []
    with gzip.open(source, "rt", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["Ticker"] in SYMBOLS and row["Date"] >= START:
                rows.append((row["Date"], row["Ticker"], float(row["Adj Close"])))
    rows.sort()
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["symbol", "ts", "price"])
        for date, symbol, price in rows:
            writer.writerow([symbol, f"{date}T00:00:00Z", f"{price:.4f}"])
    print(f"wrote {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("consumer/data/prices.csv")))

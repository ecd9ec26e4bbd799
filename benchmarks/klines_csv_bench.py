"""Kline CSV reader benchmark (issue 12: aim >= 500k rows/s): rows per second of `read_klines` on a
gzip CSV, the fast path (msgspec JSON numbers + numpy columns) against the row-by-row reader it falls
back to.

The file is synthetic (a seeded random walk in the recorded format, `--rows` rows), written to a
temporary directory; the bundled sample files are timed too. Prints figures; not a test.

    .venv/bin/python benchmarks/klines_csv_bench.py [--rows 500000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import random
import tempfile
import time
from pathlib import Path

from futures_actor.data import klines_csv

HEADER = "open_time_ms,open,high,low,close,volume,close_time_ms,quote_volume,trades,taker_buy_base,taker_buy_quote\n"
STEP = 300_000
T0 = 1_609_459_200_000
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def synthetic(path: Path, n: int) -> None:
    rng = random.Random(7)
    price = 30_000.0
    out = [HEADER]
    for i in range(n):
        t = T0 + i * STEP
        o = round(price, 1)
        c = round(o * (1 + rng.gauss(0, 0.002)), 1)
        h = round(max(o, c) * (1 + abs(rng.gauss(0, 0.001))), 1)
        lo = round(min(o, c) * (1 - abs(rng.gauss(0, 0.001))), 1)
        out.append(f"{t},{o},{h},{lo},{c},{rng.uniform(1, 900):.3f},{t + STEP - 1},,,,\n")
        price = c
    path.write_bytes(gzip.compress("".join(out).encode(), compresslevel=6))


def best(fn: object, repeat: int) -> float:
    """Best CPU time (process time: on a shared machine wall time measures the neighbours)."""
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()  # type: ignore[operator]
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "SYN-5m.csv.gz"
        synthetic(p, args.rows)
        files = [p, *sorted(SAMPLE.glob("*-5m.csv.gz"))]
        for f in files:
            n = len(klines_csv.read_klines(f, interval="5m").open_time_ms)
            fast = best(lambda f=f: klines_csv.read_klines(f, interval="5m"), args.repeat)
            slow = best(
                lambda f=f: klines_csv._read_rows(f, name=str(f), interval="5m", step=STEP, limit=None),
                max(1, args.repeat - 2),
            )
            print(
                f"{f.name:24s} rows {n:>8,d}  fast {n / fast:>12,.0f} rows/CPU-s  "
                f"row reader {n / slow:>10,.0f} rows/CPU-s  x{slow / fast:.1f}"
            )


if __name__ == "__main__":
    main()

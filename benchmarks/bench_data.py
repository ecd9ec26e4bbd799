"""Where the benchmarks read recorded data: the bundled sample by default, a larger set on request.

`FA_BENCH_DATA=DIR` points every benchmark at another data directory laid out like `data/sample/`
(`SYMBOL-5m.csv.gz`, `SYMBOL-1h.csv.gz`, `binance-payloads/`), e.g. the full recorded data set; the
figures in README say which one they were measured on.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FA_BENCH_DATA", REPO / "data" / "sample"))
KLINES = DATA / "klines" if (DATA / "klines").is_dir() else DATA
PAYLOADS = DATA / "binance-payloads"


def symbols_with(*intervals: str) -> tuple[str, ...]:
    """Symbols that have a klines file for every interval given, sorted."""
    sets = [{p.name.removesuffix(f"-{i}.csv.gz") for p in KLINES.glob(f"*-{i}.csv.gz")} for i in intervals]
    return tuple(sorted(set.intersection(*sets))) if sets else ()

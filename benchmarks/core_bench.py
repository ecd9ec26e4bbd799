"""Per-candle cost of the symbol actor's decision path on real klines.

    .venv/bin/python benchmarks/core_bench.py [--symbols BTCUSDT,ETHUSDT] [--limit N]

For every closed 5m candle of each symbol (the recorded klines in ../shared/data/klines/), times
the work the symbol actor does on a close: candle store append (validation, continuity, ring
buffer) + incremental features + regime + the three strategies' `evaluate`. The 1h candles are fed
in time order too (outside the timed section; one per twelve 5m candles). Prints the median and
p99 in µs per candle per symbol, and the median over all candles.

The risk-decision part (`bench_risk_decision`) is added by the risk engineer below the marked line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from futures_actor.core.config import BotConfig  # noqa: E402
from futures_actor.core.features import SymbolFeatureEngine  # noqa: E402
from futures_actor.core.regime import detect_regime  # noqa: E402
from futures_actor.core.types import INTERVAL_MS  # noqa: E402
from futures_actor.data.klines_csv import read_klines_candles  # noqa: E402

try:  # the strategies module is written by another engineer; the bench runs without it
    from futures_actor.core.strategies import build_strategies
except ImportError:  # pragma: no cover - hook: strategies not available yet
    build_strategies = None  # type: ignore[assignment]

KLINES = ROOT / ".." / "shared" / "data" / "klines"
SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "DOGEUSDT",
    "BNBUSDT",
    "BCHUSDT",
    "INJUSDT",
    "OPUSDT",
    "ZECUSDT",
    "HYPEUSDT",
)
MS_5M = INTERVAL_MS["5m"]
MS_1H = INTERVAL_MS["1h"]


def bench_symbol(symbol: str, config: BotConfig, limit: int | None) -> list[float]:
    """µs per closed 5m candle (store + features + regime + strategies) for one symbol."""
    five = read_klines_candles(KLINES / f"{symbol}-5m.csv.gz", interval="5m", limit=limit)
    hour = read_klines_candles(KLINES / f"{symbol}-1h.csv.gz", interval="1h")
    engine = SymbolFeatureEngine(symbol=symbol, config=config)
    strategies = build_strategies(config) if build_strategies is not None else []
    clock = time.perf_counter_ns
    out: list[float] = []
    j = 0
    n1 = len(hour)
    for c in five:
        close = c.open_time_ms + MS_5M
        while j < n1 and hour[j].open_time_ms + MS_1H <= close:
            engine.on_1h(hour[j])
            j += 1
        t0 = clock()
        f = engine.on_5m(c).features
        if f is not None:
            regime = detect_regime(f, config)
            for s in strategies:
                s.evaluate(f, regime)
        out.append((clock() - t0) / 1000.0)
    return out


def bench_candles(symbols: list[str], limit: int | None) -> None:
    config = BotConfig()
    if build_strategies is None:
        print("note: core.strategies not importable; timing store + features + regime only")
    everything: list[float] = []
    print(f"{'symbol':<10} {'candles':>8} {'median µs':>10} {'p99 µs':>8}")
    for sym in symbols:
        t = bench_symbol(sym, config, limit)
        everything.extend(t)
        q = statistics.quantiles(t, n=100)
        print(f"{sym:<10} {len(t):>8} {statistics.median(t):>10.2f} {q[98]:>8.2f}")
    print(f"{'all':<10} {len(everything):>8} {statistics.median(everything):>10.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--symbols", default=",".join(SYMBOLS), help="comma-separated symbols")
    p.add_argument("--limit", type=int, default=None, help="5m candles per symbol (default: all)")
    args = p.parse_args(argv)
    bench_candles([s.strip() for s in args.symbols.split(",") if s.strip()], args.limit)
    # ---- risk-decision benchmark (added by the risk engineer) goes below this line ----
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

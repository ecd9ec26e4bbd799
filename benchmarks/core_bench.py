"""Per-candle cost of the symbol actor's decision path on real klines.

    .venv/bin/python benchmarks/core_bench.py [--symbols BTCUSDT,ETHUSDT] [--limit N]

For every closed 5m candle of each symbol (the recorded klines of `bench_data.KLINES`: the bundled
sample, or `FA_BENCH_DATA=DIR`), times
the work the symbol actor does on a close: candle store append (validation, continuity, ring
buffer) + incremental features + regime + the three strategies' `evaluate`. The 1h candles are fed
in time order too (outside the timed section; one per twelve 5m candles). Prints the median and
p99 in µs per candle per symbol, and the median over all candles.

Then the risk decision (`bench_risk_decision`): median and p99 per decision.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_data import KLINES, symbols_with  # noqa: E402

from futures_actor.core.config import BotConfig  # noqa: E402
from futures_actor.core.features import SymbolFeatureEngine  # noqa: E402
from futures_actor.core.regime import detect_regime  # noqa: E402
from futures_actor.core.strategies import build_strategies  # noqa: E402
from futures_actor.core.types import INTERVAL_MS  # noqa: E402
from futures_actor.data.klines_csv import read_klines_candles  # noqa: E402

SYMBOLS = symbols_with("5m", "1h")
MS_5M = INTERVAL_MS["5m"]
MS_1H = INTERVAL_MS["1h"]


def bench_symbol(symbol: str, config: BotConfig, limit: int | None) -> list[float]:
    """µs per closed 5m candle (store + features + regime + strategies) for one symbol."""
    five = read_klines_candles(KLINES / f"{symbol}-5m.csv.gz", interval="5m", limit=limit)
    hour = read_klines_candles(KLINES / f"{symbol}-1h.csv.gz", interval="1h")
    engine = SymbolFeatureEngine(symbol=symbol, config=config)
    strategies = build_strategies(config)
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
    everything: list[float] = []
    print(f"{'symbol':<10} {'candles':>8} {'median µs':>10} {'p99 µs':>8}")
    for sym in symbols:
        t = bench_symbol(sym, config, limit)
        everything.extend(t)
        q = statistics.quantiles(t, n=100)
        print(f"{sym:<10} {len(t):>8} {statistics.median(t):>10.2f} {q[98]:>8.2f}")
    print(f"{'all':<10} {len(everything):>8} {statistics.median(everything):>10.2f}")


# ---------------------------------------------------------------- risk decision (risk engineer)


def bench_risk_decision(iterations: int = 20_000) -> None:
    """µs per `risk.evaluate` verdict (one position held, real 72h correlations), and per matrix build."""
    import csv
    import gzip
    from datetime import UTC, datetime
    from decimal import Decimal

    from futures_actor.core.correlation import HourlyCloses, build_correlation_matrix
    from futures_actor.core.models import Signal
    from futures_actor.core.risk import Exposure, PortfolioSnapshot, RiskContext, evaluate
    from futures_actor.core.risk_state import new_risk_state
    from futures_actor.core.types import Regime, Side, SymbolRules

    config = BotConfig()
    lookback = config.timeframes.corr_lookback_hours
    series = {}
    for sym in SYMBOLS[:6]:
        with gzip.open(KLINES / f"{sym}-1h.csv.gz", "rt") as f:
            rows = list(csv.DictReader(f))[-(lookback + 1) :]
        series[sym] = HourlyCloses(
            symbol=sym,
            last_open_time_ms=int(rows[-1]["open_time_ms"]),
            closes=tuple(float(r["close"]) for r in rows),
        )
    now = int(datetime(2026, 2, 19, 12, tzinfo=UTC).timestamp() * 1000)
    clock = time.perf_counter_ns
    builds = []
    for _ in range(50):
        t0 = clock()
        matrix = build_correlation_matrix(series, lookback=lookback, reference_symbol="BTCUSDT", as_of_ms=now)
        builds.append((clock() - t0) / 1000.0)
    rules = SymbolRules(
        symbol="SOLUSDT", tick_size=Decimal("0.01"), step_size=Decimal("0.01"), min_qty=Decimal("0.01")
    )
    entry = series["SOLUSDT"].closes[-1]
    signal = Signal(
        symbol="SOLUSDT", strategy="trend_pullback", side=Side.SHORT, regime=Regime.TREND, regime_confidence=0.7,
        candle_open_time_ms=now - INTERVAL_MS["5m"], entry_price=entry, stop_price=entry * 1.01, stop_pct=0.01,
        target_price=entry * 0.985, leverage=2.0, atr=entry * 0.003,
    )  # fmt: skip
    held = Exposure(symbol="ETHUSDT", side=Side.LONG, quantity=5.0, entry_price=2_000.0, stop_price=1_980.0)
    portfolio = PortfolioSnapshot(
        equity_usd=10_000.0,
        available_balance_usd=8_000.0,
        exposures=(held,),
        risk_state=new_risk_state(now_ms=now - 3_600_000, equity_usd=10_000.0),
    )
    ctx = RiskContext(rules=rules, now_ms=now, mid_price=entry, funding_rate=0.0001, correlations=matrix)
    verdict = evaluate(signal, portfolio, ctx, config)
    times = []
    for _ in range(iterations):
        t0 = clock()
        evaluate(signal, portfolio, ctx, config)
        times.append((clock() - t0) / 1000.0)
    q = statistics.quantiles(times, n=100)
    print(
        f"risk.evaluate: {iterations} verdicts ({type(verdict).__name__}), median {statistics.median(times):.2f} µs, p99 {q[98]:.2f} µs"
    )
    print(
        f"correlation matrix ({len(series)} symbols, {lookback}h): median {statistics.median(builds):.1f} µs"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--symbols", default=",".join(SYMBOLS), help="comma-separated symbols")
    p.add_argument("--limit", type=int, default=None, help="5m candles per symbol (default: all)")
    args = p.parse_args(argv)
    bench_candles([s.strip() for s in args.symbols.split(",") if s.strip()], args.limit)
    bench_risk_decision()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""nautilus_trader's BacktestEngine on our recorded 5m klines: the other side of `replay_vs_nautilus.py`.

Run as its own process (that is how it is timed: process start to result), on a klines directory laid
out like `data/sample/` (`SYMBOL-5m.csv.gz`; the 1h files are not read: nautilus gets the 5m bars only):

    .venv/bin/python benchmarks/nautilus_backtest.py --data DIR [--strategy trivial|ema_atr]

Needs the `bench` extra (`pip install -e '.[bench]'`, nautilus_trader). What a nautilus user would
write for this: pandas reads the CSVs, `BarDataWrangler` turns them into `Bar`s, one `CryptoPerpetual`
per symbol on a simulated BINANCE margin venue (netting, 10,000 USDT, leverage 5, taker fee 0.05 %),
one strategy instance per symbol, `engine.run()`, then the positions report and the account balance.

Strategies:
- `trivial`: counts the bars it receives (the engine's data path alone);
- `ema_atr`: a trend entry close to ours in shape: EMA(20)/EMA(50) cross on the 5m close, a market
  entry of a fixed notional with a bracket (stop-market at 2 ATR(14), take-profit limit at 3 ATR),
  one position at a time per symbol. It exercises the matching engine (market, stop and limit orders
  on every bar), the risk engine, the portfolio and the cache.

Prints one JSON line: bars, timings (import, load, run; wall and CPU) and what the run traded.
"""

from __future__ import annotations

import argparse
import json
import time

T_START = time.perf_counter()
CPU_START = time.process_time()

# ruff: noqa: E402  (the imports are timed: they are part of what a user's process pays)
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.indicators import AverageTrueRange, ExponentialMovingAverage
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, CurrencyType, OmsType, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
from nautilus_trader.model.instruments import CryptoPerpetual
from nautilus_trader.model.objects import Currency, Money, Price, Quantity
from nautilus_trader.persistence.wranglers import BarDataWrangler
from nautilus_trader.trading.strategy import Strategy

T_IMPORTED = time.perf_counter()

VENUE = Venue("BINANCE")
INITIAL_BALANCE_USDT = 10_000
LEVERAGE = Decimal(5)
TAKER_FEE = Decimal("0.0005")
MAKER_FEE = Decimal("0.0002")
MARGIN_INIT = Decimal("0.05")
MARGIN_MAINT = Decimal("0.025")
MAX_PRICE_PRECISION = 8
SIZE_PRECISION = 3
FIVE_MIN_NS = 300 * 1_000_000_000
MS_NS = 1_000_000


class CountBarsConfig(StrategyConfig, frozen=True):
    bar_type: BarType


class CountBars(Strategy):
    """Receives every bar and does nothing else: the engine's data path."""

    def __init__(self, config: CountBarsConfig) -> None:
        super().__init__(config)
        self.bar_type = config.bar_type
        self.bars = 0

    def on_start(self) -> None:
        self.subscribe_bars(self.bar_type)

    def on_bar(self, bar: Bar) -> None:
        self.bars += 1


class EmaAtrConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    bar_type: BarType
    fast: int = 20
    slow: int = 50
    atr_period: int = 14
    stop_atr: float = 2.0
    target_atr: float = 3.0
    notional_usdt: float = 500.0


class EmaAtrTrend(Strategy):
    """EMA cross entry with an ATR bracket; one position at a time."""

    def __init__(self, config: EmaAtrConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.fast = ExponentialMovingAverage(config.fast)
        self.slow = ExponentialMovingAverage(config.slow)
        self.atr = AverageTrueRange(config.atr_period)
        self.above: bool | None = None
        self.bars = 0
        self.entries = 0
        self.instrument: Any = None

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(self.cfg.instrument_id)
        for indicator in (self.fast, self.slow, self.atr):
            self.register_indicator_for_bars(self.cfg.bar_type, indicator)
        self.subscribe_bars(self.cfg.bar_type)

    def on_bar(self, bar: Bar) -> None:
        self.bars += 1
        if not (self.fast.initialized and self.slow.initialized and self.atr.initialized):
            return
        above = self.fast.value > self.slow.value
        crossed = self.above is not None and above != self.above
        self.above = above
        if not crossed or not self.portfolio.is_flat(self.cfg.instrument_id):
            return
        if self.cache.orders_open_count(instrument_id=self.cfg.instrument_id):
            return
        close = float(bar.close)
        risk = self.cfg.stop_atr * self.atr.value
        if risk <= 0.0:
            return
        qty = self.instrument.make_qty(self.cfg.notional_usdt / close)
        if qty <= 0:
            return
        side = OrderSide.BUY if above else OrderSide.SELL
        sign = 1.0 if above else -1.0
        stop = self.instrument.make_price(close - sign * risk)
        target = self.instrument.make_price(close + sign * self.cfg.target_atr * self.atr.value)
        if stop <= 0 or target <= 0:
            return
        bracket = self.order_factory.bracket(
            instrument_id=self.cfg.instrument_id,
            order_side=side,
            quantity=qty,
            sl_trigger_price=stop,
            tp_price=target,
        )
        self.submit_order_list(bracket)
        self.entries += 1

    def on_stop(self) -> None:
        self.cancel_all_orders(self.cfg.instrument_id)
        self.close_all_positions(self.cfg.instrument_id)


def _decimals(text: str) -> int:
    _, _, frac = text.partition(".")
    return len(frac.rstrip("0"))


def _price_precision(path: Path) -> int:
    """The most decimals any price in the file has (the tick the file implies), capped."""
    raw = pd.read_csv(path, usecols=["open", "high", "low", "close"], dtype=str, nrows=2000)
    return min(MAX_PRICE_PRECISION, max(_decimals(v) for col in raw.columns for v in raw[col]))


def _instrument(symbol: str, price_precision: int) -> CryptoPerpetual:
    base_code = symbol.removesuffix("USDT")
    base = Currency(base_code, 8, 0, base_code, CurrencyType.CRYPTO)
    return CryptoPerpetual(
        instrument_id=InstrumentId(Symbol(f"{symbol}-PERP"), VENUE),
        raw_symbol=Symbol(symbol),
        base_currency=base,
        quote_currency=USDT,
        settlement_currency=USDT,
        is_inverse=False,
        price_precision=price_precision,
        size_precision=SIZE_PRECISION,
        price_increment=Price(10.0**-price_precision, price_precision),
        size_increment=Quantity(10.0**-SIZE_PRECISION, SIZE_PRECISION),
        ts_event=0,
        ts_init=0,
        margin_init=MARGIN_INIT,
        margin_maint=MARGIN_MAINT,
        maker_fee=MAKER_FEE,
        taker_fee=TAKER_FEE,
    )


def _bars(path: Path, bar_type: BarType, instrument: CryptoPerpetual) -> list[Bar]:
    df = pd.read_csv(path, usecols=["open_time_ms", "open", "high", "low", "close", "volume"])
    # A bar is stamped at its close (the open time + 5m), so no strategy sees it before it closed.
    df.index = pd.to_datetime(df.pop("open_time_ms") * MS_NS + FIVE_MIN_NS, unit="ns", utc=True)
    df.index.name = "timestamp"
    bars: list[Bar] = BarDataWrangler(bar_type, instrument).process(df)
    return bars


def run(data: Path, strategy: str, log_level: str, only: list[str] | None = None) -> dict[str, Any]:
    symbols = sorted(p.name.removesuffix("-5m.csv.gz") for p in data.glob("*-5m.csv.gz"))
    if only:
        missing = sorted(set(only) - set(symbols))
        if missing:
            raise SystemExit(
                f"nautilus_backtest: --symbols {','.join(missing)}: no SYMBOL-5m.csv.gz in {data}"
            )
        symbols = sorted(only)
    if not symbols:
        raise SystemExit(f"nautilus_backtest: no SYMBOL-5m.csv.gz in {data}")
    t0, c0 = time.perf_counter(), time.process_time()
    engine = BacktestEngine(
        config=BacktestEngineConfig(
            trader_id=TraderId("BENCH-001"),
            logging=LoggingConfig(log_level=log_level),
            run_analysis=True,
        )
    )
    engine.add_venue(
        venue=VENUE,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USDT,
        starting_balances=[Money(INITIAL_BALANCE_USDT, USDT)],
        default_leverage=LEVERAGE,
    )
    strategies: list[Strategy] = []
    n_bars = 0
    for symbol in symbols:
        path = data / f"{symbol}-5m.csv.gz"
        instrument = _instrument(symbol, _price_precision(path))
        bar_type = BarType.from_str(f"{instrument.id}-5-MINUTE-LAST-EXTERNAL")
        bars = _bars(path, bar_type, instrument)
        n_bars += len(bars)
        engine.add_instrument(instrument)
        engine.add_data(bars)
        if strategy == "trivial":
            strategies.append(CountBars(CountBarsConfig(bar_type=bar_type, strategy_id=f"COUNT-{symbol}")))
        else:
            strategies.append(
                EmaAtrTrend(
                    EmaAtrConfig(instrument_id=instrument.id, bar_type=bar_type, strategy_id=f"EMA-{symbol}")
                )
            )
    engine.add_strategies(strategies)
    t1, c1 = time.perf_counter(), time.process_time()
    engine.run()
    t2, c2 = time.perf_counter(), time.process_time()
    # The result a user looks at: positions and the account.
    positions = engine.trader.generate_positions_report()
    account = engine.trader.generate_account_report(VENUE)
    balance = float(account["total"].iloc[-1]) if len(account) else float("nan")
    seen = sum(getattr(s, "bars", 0) for s in strategies)
    entries = sum(getattr(s, "entries", 0) for s in strategies)
    engine.dispose()
    t3, c3 = time.perf_counter(), time.process_time()
    return {
        "engine": "nautilus_trader",
        "strategy": strategy,
        "symbols": len(symbols),
        "bars": n_bars,
        "bars_seen": seen,
        "entries": entries,
        "positions": len(positions),
        "final_balance": balance,
        "import_s": T_IMPORTED - T_START,
        "load_s": t1 - t0,
        "load_cpu_s": c1 - c0,
        "run_s": t2 - t1,
        "run_cpu_s": c2 - c1,
        "report_s": t3 - t2,
        "in_loop_bars_per_s": n_bars / (t2 - t1) if t2 > t1 else 0.0,
        "in_loop_bars_per_cpu_s": n_bars / (c2 - c1) if c2 > c1 else 0.0,
        "process_cpu_s": c3 - CPU_START,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="klines directory (SYMBOL-5m.csv.gz)")
    ap.add_argument("--strategy", choices=("trivial", "ema_atr"), default="ema_atr")
    ap.add_argument("--symbols", default="", help="only these symbols (comma-separated; default: every file)")
    ap.add_argument(
        "--log-level", default="ERROR", help="nautilus log level (default ERROR: no console noise)"
    )
    args = ap.parse_args(argv)
    print(
        json.dumps(run(args.data, args.strategy, args.log_level, [s for s in args.symbols.split(",") if s])),
        flush=True,
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

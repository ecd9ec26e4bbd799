"""Moments of the bundled recording (`data/sample/`) at which the LIVE bot signals on the next 5m close.

Used by `test_live_wall_clock.py`, which shifts the recording so that such a candle closes a few seconds
after the bot has started. What the bot sees there is computed here exactly as it will see it:
- history: the last `market_data.history_5m_bars` closed 5m candles and `history_1h_bars` closed hours,
  the hours aggregated from the 5m candles as the fake exchange serves them (REST `klines` 1h);
- the signal candle: the one forming at start, closed live, with the book of the fake (bid = last,
  ask = last + one tick) and its funding rate (Binance's baseline, no funding file);
- the entry: a LIMIT on the passive side at the mid, which on the fake rests at the last price and
  fills only when the next candle trades through it; a moment is kept only if the next candle's path
  (`binance/sim/feed.CandlePath`) goes `FILL_MARGIN` through the close within `FILL_WITHIN_MS` of its
  open (a path one tick through the close left an entry priced five ticks below it unfilled).

`python -m tests.e2e.live_moments` prints, for each 5-minute slot of the hour, the first such moment per
symbol (the test needs one whose close falls on the slot the wall clock gives it: the recording is
shifted by whole hours, see `sim-exchange --align`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from futures_actor.binance.sim.exchange import DEFAULT_FUNDING_RATE
from futures_actor.binance.sim.feed import CandlePath
from futures_actor.binance.sim.symbols import load_exchange_info
from futures_actor.core.clock import SystemWallClock, iso_utc
from futures_actor.core.config import BotConfig, default_config, load_config_bytes
from futures_actor.core.features import SymbolFeatureEngine, compute_features
from futures_actor.core.models import Signal
from futures_actor.core.performance import PerformanceTracker
from futures_actor.core.regime import detect_regime
from futures_actor.core.strategies import build_strategies
from futures_actor.core.types import Candle, Regime, Side
from futures_actor.data.klines_csv import read_klines_candles
from futures_actor.state.journal import TradeJournal

__all__ = [
    "H1",
    "M5",
    "MOMENTS",
    "SAMPLE",
    "SYMBOL",
    "Moment",
    "bot_signals_at",
    "hours_of",
    "moments",
    "now_at_for_next_close",
    "seed_track_record",
]

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
EXCHANGE_INFO = SAMPLE / "exchangeInfo_mainnet_2024-10-02.json"
M5 = 300_000
H1 = 3_600_000
FILL_WITHIN_MS = 20_000
FILL_MARGIN = Decimal("0.0002")


SYMBOL = "BTCUSDT"
# The first BTCUSDT moment (signal candle open time, recorded) per 5-minute slot of the hour in which
# it closes, found by `python -m tests.e2e.live_moments` with the default strategy settings; each one
# signals for a bot started while the candle forms, and the next candle trades 2 bps through its
# close within 20 s (the entry, resting near the close, fills).
MOMENTS: dict[int, tuple[int, str]] = {
    0: (1736960100000, "LONG"),
    1: (1736974800000, "LONG"),
    2: (1737713100000, "LONG"),
    3: (1738465800000, "SHORT"),
    4: (1737080100000, "LONG"),
    5: (1737591600000, "SHORT"),
    6: (1737246300000, "LONG"),
    7: (1737102600000, "LONG"),
    8: (1737106500000, "LONG"),
    9: (1737171600000, "LONG"),
    10: (1737596700000, "SHORT"),
    11: (1737316200000, "LONG"),
}
# A LIVE bot trades a strategy only on a track record (BOT_SPEC §7: `min_trades_before_confidence` closed
# trades with positive expectancy; LIVE never explores). The bot's shadow book builds it in paper; here it
# is written beforehand into the shadow book's trade log, as a bot that has run a while would have it:
# per strategy, wins of `WIN_R` and losses of -1 R in this order.
TRACK_RECORD = (
    ("trend_pullback", Regime.TREND),
    ("trend_breakout", Regime.TREND),
    ("range_mean_reversion", Regime.RANGE),
)
WIN_R, WINS, LOSSES = 1.5, 14, 6


def seed_track_record(log_dir: Path) -> None:
    cfg = default_config()
    journal = TradeJournal(directory=log_dir / "shadow", cfg=cfg.logging, clock=SystemWallClock())
    t0 = int(time.time() * 1000) - 86_400_000
    n = 0
    for strategy, regime in TRACK_RECORD:
        for r in [WIN_R] * WINS + [-1.0] * LOSSES:
            n += 1
            journal.write(_shadow_trade(n, strategy, regime, r, t0 + n * 600_000))
    tracker, _ = PerformanceTracker.from_records(journal.records(), cfg=cfg.performance)
    for strategy, regime in TRACK_RECORD:
        standing = tracker.standing(strategy, regime)
        assert (standing.eligible, standing.low_sample) == (True, False), standing
        assert standing.confidence >= cfg.regime.confidence_threshold, standing


def _shadow_trade(n: int, strategy: str, regime: Regime, r: float, close_ms: int) -> dict[str, Any]:
    """One closed paper trade of the shadow book, schema-valid (`state/log_schema.py`)."""
    price, qty, risk_usd = 100_000.0, 0.01, 10.0
    return {
        "trade_id": f"00000000-0000-5000-8000-{n:012d}",
        "timestamp_open": iso_utc(close_ms - 1_800_000),
        "timestamp_close": iso_utc(close_ms),
        "mode": "PAPER_LIVE",
        "symbol": SYMBOL,
        "strategy": strategy,
        "regime": regime.value,
        "direction": "LONG",
        "confidence_score": 0.6,
        "entry_order": {
            "client_order_id": f"{cfg_prefix()}-seed{n}-E1",
            "type": "LIMIT",
            "requested_price": price,
            "filled_avg_price": price,
            "filled_qty": qty,
            "status": "FILLED",
        },
        "risk": {
            "equity_usd": 10_000,
            "risk_pct": 0.001,
            "risk_usd": risk_usd,
            "stop_pct": 0.01,
            "stop_price": price * 0.99,
            "take_profit_price": price * 1.015,
            "leverage": 1.0,
            "notional_usd": price * qty,
            "margin_used_usd": price * qty,
        },
        "costs": {"fees_usd": 0.0, "funding_usd": 0.0, "slippage_pct": 0.0},
        "result": {
            "exit_price": price * (1 + 0.01 * r),
            "pnl_usd": risk_usd * r,
            "pnl_r_multiple": r,
            "reason": "TP" if r > 0 else "SL",
        },
        "portfolio": {
            "open_positions_count": 1,
            "open_risk_pct": 0.001,
            "correlation_bucket": SYMBOL,
            "bucket_corr_max": 0.0,
        },
    }


def cfg_prefix() -> str:
    return default_config().exchange.client_id_prefix


class Moment(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    open_time_ms: int  # of the signal candle (recorded time)
    side: str
    strategy: str


def load_5m(symbol: str) -> list[Candle]:
    return read_klines_candles(SAMPLE / f"{symbol}-5m.csv.gz", interval="5m")


def hours_of(five: Sequence[Candle]) -> list[Candle]:
    """Whole hours aggregated from 5m candles, as the fake's REST klines serves them."""
    buckets: dict[int, list[Candle]] = {}
    for c in five:
        buckets.setdefault(c.open_time_ms // H1 * H1, []).append(c)
    return [
        Candle(
            open_time_ms=t,
            open=cs[0].open,
            high=max(x.high for x in cs),
            low=min(x.low for x in cs),
            close=cs[-1].close,
            volume=sum(x.volume for x in cs),
        )
        for t, cs in sorted(buckets.items())
        if len(cs) == H1 // M5
    ]


def _tick(symbol: str) -> Decimal:
    _, specs = load_exchange_info(EXCHANGE_INFO, symbols=[symbol])
    return specs[symbol].rules.tick_size


def _spread(close: float, tick: Decimal) -> float:
    bid, ask = close, float(Decimal(repr(close)) + tick)
    return (ask - bid) / ((ask + bid) / 2)


def bot_signals_at(cfg: BotConfig, symbol: str, five: Sequence[Candle], i: int) -> tuple[Signal, ...]:
    """The signals of candle `five[i]` for a bot started while it formed (exact history window)."""
    tick = _tick(symbol)
    c = five[i]
    close_ms = c.open_time_ms + M5
    hist5 = list(five[i - cfg.market_data.history_5m_bars : i])
    hours = hours_of(five[: i + 1])
    started = c.open_time_ms + 1
    closed_hours = [h for h in hours if h.open_time_ms + H1 <= started]
    hist1 = closed_hours[-cfg.market_data.history_1h_bars :]
    engine = SymbolFeatureEngine(symbol=symbol, config=cfg)
    engine.replace_history(hist5, hist1)
    for h in hours:
        if started < h.open_time_ms + H1 <= close_ms:
            engine.on_1h(h)
    step = engine.on_5m(c, spread_pct=_spread(c.close, tick), funding_rate=float(DEFAULT_FUNDING_RATE))
    if step.features is None:
        return ()
    regime = detect_regime(step.features, cfg)
    out = (s.evaluate(step.features, regime) for s in build_strategies(cfg))
    return tuple(s for s in out if isinstance(s, Signal))


def _fills_soon(nxt: Candle, side: Side, close: Decimal, tick: Decimal) -> bool:
    """The next candle trades `FILL_MARGIN` through the signal close within `FILL_WITHIN_MS` (the entry
    rests near the close; the margin covers where exactly the bot prices it)."""
    path = CandlePath(nxt, interval_ms=M5, tick=tick)
    prices = [path.price_at(off) for off in range(0, FILL_WITHIN_MS, 250)]
    if side is Side.LONG:
        return min(prices) < close * (1 - FILL_MARGIN)
    return max(prices) > close * (1 + FILL_MARGIN)


def moments(cfg: BotConfig, symbols: Sequence[str]) -> list[Moment]:
    """Every moment (in time order per symbol) whose signal the bot makes and whose entry fills soon."""
    found: list[Moment] = []
    warm = cfg.market_data.history_5m_bars + 1
    for symbol in symbols:
        tick = _tick(symbol)
        five = load_5m(symbol)
        strategies = build_strategies(cfg)
        steps = compute_features(symbol=symbol, config=cfg, candles_5m=five, candles_1h=hours_of(five))
        for i, step in enumerate(steps):
            if i < warm + cfg.market_data.history_1h_bars * 12 or i + 1 >= len(five) or step.features is None:
                continue
            regime = detect_regime(step.features, cfg)
            if not any(isinstance(s.evaluate(step.features, regime), Signal) for s in strategies):
                continue
            exact = bot_signals_at(cfg, symbol, five, i)
            if not exact:
                continue
            sig = exact[0]
            if not _fills_soon(five[i + 1], sig.side, Decimal(repr(five[i].close)), tick):
                continue
            found.append(
                Moment(
                    symbol=symbol,
                    open_time_ms=five[i].open_time_ms,
                    side=sig.side.value,
                    strategy=sig.strategy,
                )
            )
    return found


def now_at_for_next_close(now_ms: int, lead_ms: int) -> tuple[int, int, int]:
    """(`sim-exchange --now-at` value, the wall-clock close of the signal candle, its recorded open time):
    the first 5m boundary at least `lead_ms` after `now_ms` closes a `MOMENTS` candle."""
    close = -(-(now_ms + lead_ms) // M5) * M5
    open_ms, _ = MOMENTS[close % H1 // M5]
    shift = close - (open_ms + M5)  # whole hours: the slot matches
    return now_ms - shift, close, open_ms


def main(argv: list[str]) -> int:
    """`scan [CONFIG_JSON]`: the moments per slot; `next [LEAD_S]`: the `--now-at` for the next boundary at
    least LEAD_S (default 60) away; `seed LOG_DIR`: write the track record into LOG_DIR/shadow."""
    command, *rest = argv or ["scan"]
    if command == "next":
        lead_s = float(rest[0]) if rest else 60.0
        now_at, close, _ = now_at_for_next_close(int(time.time() * 1000), int(lead_s * 1000))
        print(f"{now_at}  # the signal candle closes at {iso_utc(close)}")
        return 0
    if command == "seed":
        seed_track_record(Path(rest[0]))
        return 0
    if command != "scan":
        print(main.__doc__, file=sys.stderr)
        return 2
    sections: dict[str, Any] = json.loads(rest[0]) if rest else {}
    cfg = load_config_bytes(json.dumps(sections).encode()) if sections else BotConfig()
    symbols = rest[1:] if len(rest) > 1 else ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    found = moments(cfg, symbols)
    print(f"{len(found)} moments")
    by_slot: dict[int, list[Moment]] = {}
    for m in found:
        by_slot.setdefault(((m.open_time_ms + M5) % H1) // M5, []).append(m)
    for slot in range(H1 // M5):
        first: dict[str, Moment] = {}
        for m in by_slot.get(slot, []):
            first.setdefault(m.symbol, m)
        print(slot, [msgspec.to_builtins(m) for m in first.values()])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

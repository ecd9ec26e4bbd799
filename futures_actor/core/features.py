"""Per-symbol feature engine: closed 5m and 1h candles in, `Features` per closed 5m candle out.

This module owns BOT_SPEC §4 as the live symbol actor, the replay and the `features` command all
run it (one code path). A `SymbolFeatureEngine` holds the symbol's two `CandleStore`s and the
incremental indicator state, updated in O(1) per closed candle on plain floats.

Continuity: a candle goes into the indicator state only if its store accepted it (APPENDED). A
gapped candle is not stored (see `core.candles`), so the state never spans a gap: the caller
backfills the missing candles in order and re-sends the candle, or calls `replace_history`, which
resets the stores and rebuilds every indicator from the given contiguous tail (values then differ
from a from-the-start computation only by the indicators' decaying seed, negligible after the
history sizes of `market_data`).

1h trend values: a 5m candle uses EMA20/EMA50 of the 1h candle that closes at the latest hour
boundary at or before the 5m candle's close (the 1h candle closing at the same instant included).
If that 1h candle has not been received, `ema20_1h`/`ema50_1h` are `None` (the features are not
warm, so no trade on a stale trend): callers deliver a 1h candle before the 5m candle that closes
at the same instant.

The indicator periods (RSI 14, ADX 14, ATR 14, EMA 20/50, Bollinger 20 and 2σ) are fixed by the
spec, not tunables; the z-score look-back and breakout look-back come from `BotConfig`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

import msgspec

from futures_actor.core.candles import AppendResult, AppendStatus, CandleStore
from futures_actor.core.config import BotConfig
from futures_actor.core.indicators import Adx, Atr, Ema, RollingWindowStats, Rsi, zscore_from_stats
from futures_actor.core.models import Features
from futures_actor.core.types import INTERVAL_MS, Candle

__all__ = [
    "ADX_PERIOD",
    "ATR_PERIOD",
    "BB_K",
    "BB_PERIOD",
    "EMA_FAST",
    "EMA_SLOW",
    "RSI_PERIOD",
    "SIGNAL_INTERVAL",
    "TREND_INTERVAL",
    "FeatureStep",
    "SymbolFeatureEngine",
    "compute_features",
    "feed_in_time_order",
]

# Indicator definitions of BOT_SPEC §4 (protocol facts of the spec, not tunables).
RSI_PERIOD = 14
ADX_PERIOD = 14
ATR_PERIOD = 14
EMA_FAST = 20
EMA_SLOW = 50
BB_PERIOD = 20
BB_K = 2.0

SIGNAL_INTERVAL = "5m"
TREND_INTERVAL = "1h"
_MS_5M = INTERVAL_MS[SIGNAL_INTERVAL]
_MS_1H = INTERVAL_MS[TREND_INTERVAL]
# 1h EMA values kept for the 5m look-up: the newest few are enough (a 1h candle may arrive
# just before the 5m candles of the hour that it closes).
_H1_VALUES_KEPT = 4


class FeatureStep(msgspec.Struct, frozen=True, kw_only=True):
    """Result of feeding one closed 5m candle: the store's verdict and, if APPENDED, the features."""

    append: AppendResult
    features: Features | None = None


class SymbolFeatureEngine:
    """Candle stores + incremental indicators of one symbol (see the module docstring)."""

    def __init__(
        self,
        *,
        symbol: str,
        config: BotConfig,
        capacity_5m: int | None = None,
        capacity_1h: int | None = None,
    ) -> None:
        self.symbol = symbol
        self._config = config
        self._lookback = config.timeframes.zscore_lookback
        self._breakout = config.strategies.trend_breakout.breakout_lookback_bars
        self.store_5m = CandleStore(
            symbol=symbol,
            interval=SIGNAL_INTERVAL,
            capacity=capacity_5m or config.market_data.history_5m_bars,
        )
        self.store_1h = CandleStore(
            symbol=symbol,
            interval=TREND_INTERVAL,
            capacity=capacity_1h or config.market_data.history_1h_bars,
        )
        self._reset_state()

    def _reset_state(self) -> None:
        self._reset_5m_state()
        self._reset_1h_state()

    def _reset_5m_state(self) -> None:
        self._rsi = Rsi(RSI_PERIOD)
        self._adx = Adx(ADX_PERIOD)
        self._atr = Atr(ATR_PERIOD)
        self._ema_fast = Ema(EMA_FAST)
        self._ema_slow = Ema(EMA_SLOW)
        self._bb = RollingWindowStats(BB_PERIOD)
        self._vol_stats = RollingWindowStats(self._lookback)
        self._atr_stats = RollingWindowStats(self._lookback)
        self._highs: deque[float] = deque(maxlen=self._breakout)
        self._lows: deque[float] = deque(maxlen=self._breakout)
        self.last_features: Features | None = None

    def _reset_1h_state(self) -> None:
        self._ema_fast_1h = Ema(EMA_FAST)
        self._ema_slow_1h = Ema(EMA_SLOW)
        # (open_time_ms, ema20, ema50) of the newest 1h candles, oldest first.
        self._h1_values: deque[tuple[int, float | None, float | None]] = deque(maxlen=_H1_VALUES_KEPT)

    def reset_5m(self) -> None:
        """Forget the 5m history and indicator state (1h kept): the next 5m candle starts afresh."""
        self.store_5m.reset()
        self._reset_5m_state()

    def reset_1h(self) -> None:
        """Forget the 1h history and trend state (5m kept)."""
        self.store_1h.reset()
        self._reset_1h_state()

    # -- 1h -----------------------------------------------------------------------------------

    def on_1h(self, candle: Candle) -> AppendResult:
        """Feed a closed 1h candle. Raises `CandleError` for a bad candle (nothing changes)."""
        result = self.store_1h.append(candle)
        if result.status is AppendStatus.APPENDED:
            c = candle.close
            self._h1_values.append(
                (candle.open_time_ms, self._ema_fast_1h.update(c), self._ema_slow_1h.update(c))
            )
        return result

    def _trend_values(self, close_time_ms: int) -> tuple[float | None, float | None]:
        # The 1h candle closing at the latest hour boundary <= the 5m close.
        wanted = (close_time_ms + 1) // _MS_1H * _MS_1H - _MS_1H
        for open_ms, fast, slow in reversed(self._h1_values):
            if open_ms == wanted:
                return fast, slow
            if open_ms < wanted:
                break
        return None, None

    # -- 5m -----------------------------------------------------------------------------------

    def on_5m(
        self, candle: Candle, *, spread_pct: float | None = None, funding_rate: float | None = None
    ) -> FeatureStep:
        """Feed a closed 5m candle; returns the append result and, when APPENDED, its `Features`.

        Raises `CandleError` for a bad, out-of-order or conflicting candle (nothing changes).
        """
        result = self.store_5m.append(candle)
        if result.status is not AppendStatus.APPENDED:
            return FeatureStep(append=result)
        features = self._advance(candle, spread_pct, funding_rate)
        return FeatureStep(append=result, features=features)

    def _advance(self, candle: Candle, spread_pct: float | None, funding_rate: float | None) -> Features:
        h = candle.high
        lo = candle.low
        c = candle.close
        v = candle.volume
        rsi = self._rsi.update(c)
        adx = self._adx.update(h, lo, c)
        atr = self._atr.update(h, lo, c)
        ema20 = self._ema_fast.update(c)
        ema50 = self._ema_slow.update(c)

        bb = self._bb
        bb.update(c)
        bb_upper = bb_middle = bb_lower = bb_width = None
        if bb.full:
            mid = bb.mean
            dev = BB_K * bb.std
            bb_middle = mid
            bb_upper = mid + dev
            bb_lower = mid - dev
            bb_width = (bb_upper - bb_lower) / mid

        vs = self._vol_stats
        vs.update(v)
        volume_z = zscore_from_stats(v, vs.mean, vs.std) if vs.full else None

        atr_z = None
        if atr is not None:
            ats = self._atr_stats
            ats.update(atr)
            if ats.full:
                atr_z = zscore_from_stats(atr, ats.mean, ats.std)

        highs = self._highs
        lows = self._lows
        prior_high = prior_low = None
        if len(highs) == self._breakout:
            prior_high = max(highs)
            prior_low = min(lows)
        highs.append(h)
        lows.append(lo)

        close_time = candle.open_time_ms + _MS_5M - 1
        ema20_1h, ema50_1h = self._trend_values(close_time)
        features = Features(
            symbol=self.symbol,
            open_time_ms=candle.open_time_ms,
            close_time_ms=close_time,
            open=candle.open,
            high=h,
            low=lo,
            close=c,
            volume=v,
            rsi=rsi,
            adx=adx,
            atr=atr,
            ema20=ema20,
            ema50=ema50,
            ema20_1h=ema20_1h,
            ema50_1h=ema50_1h,
            bb_upper=bb_upper,
            bb_middle=bb_middle,
            bb_lower=bb_lower,
            bb_width=bb_width,
            volume_z=volume_z,
            atr_z=atr_z,
            prior_high=prior_high,
            prior_low=prior_low,
            spread_pct=spread_pct,
            funding_rate=funding_rate,
        )
        self.last_features = features
        return features

    # -- rebuild ------------------------------------------------------------------------------

    def replace_history(
        self, candles_5m: Sequence[Candle] | Iterable[Candle], candles_1h: Sequence[Candle] | Iterable[Candle]
    ) -> Features | None:
        """Reset both stores and every indicator, then feed the given contiguous histories
        (oldest first) in time order. Returns the features of the newest 5m candle (or None).

        Raises `CandleError` if either history is malformed, out of order or not contiguous; the
        engine is then empty (reset) and must be given a valid history before use.
        """
        five = list(candles_5m)
        hour = list(candles_1h)
        self.store_5m.reset()
        self.store_1h.reset()
        self._reset_state()
        # Validate contiguity up front through a scratch store, so a bad history fails fast.
        CandleStore(symbol=self.symbol, interval=SIGNAL_INTERVAL, capacity=max(1, len(five))).replace_tail(
            five
        )
        CandleStore(symbol=self.symbol, interval=TREND_INTERVAL, capacity=max(1, len(hour))).replace_tail(
            hour
        )
        last: Features | None = None
        for step in feed_in_time_order(self, five, hour):
            if step.features is not None:
                last = step.features
        return last


def feed_in_time_order(
    engine: SymbolFeatureEngine,
    candles_5m: Sequence[Candle],
    candles_1h: Sequence[Candle],
    *,
    restart_on_gap: bool = False,
    gaps: list[AppendResult] | None = None,
) -> Iterable[FeatureStep]:
    """Feed both series to `engine` as a live feed would deliver them (every 1h candle closing at or
    before a 5m candle's close goes first); yields one `FeatureStep` per 5m candle.

    Recorded files cannot be backfilled: with `restart_on_gap`, a gap in either series restarts
    that series' state at the candle after the gap (features undefined until warm again), and the
    GAP results are appended to `gaps`. Without it, GAP steps are yielded as they come.
    """
    j = 0
    n1 = len(candles_1h)
    for c5 in candles_5m:
        close5 = c5.open_time_ms + _MS_5M
        while j < n1 and candles_1h[j].open_time_ms + _MS_1H <= close5:
            r1 = engine.on_1h(candles_1h[j])
            if r1.status is AppendStatus.GAP and restart_on_gap:
                if gaps is not None:
                    gaps.append(r1)
                engine.reset_1h()
                engine.on_1h(candles_1h[j])
            j += 1
        step = engine.on_5m(c5)
        if step.append.status is AppendStatus.GAP and restart_on_gap:
            if gaps is not None:
                gaps.append(step.append)
            engine.reset_5m()
            step = engine.on_5m(c5)
        yield step


def compute_features(
    *,
    symbol: str,
    config: BotConfig,
    candles_5m: Sequence[Candle],
    candles_1h: Sequence[Candle],
    restart_on_gap: bool = False,
    gaps: list[AppendResult] | None = None,
) -> list[FeatureStep]:
    """Batch entry point (tests, tools): a fresh engine sized to hold everything, fed in time order."""
    engine = SymbolFeatureEngine(
        symbol=symbol,
        config=config,
        capacity_5m=max(1, len(candles_5m)),
        capacity_1h=max(1, len(candles_1h)),
    )
    return list(feed_in_time_order(engine, candles_5m, candles_1h, restart_on_gap=restart_on_gap, gaps=gaps))

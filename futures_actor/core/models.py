"""Values passed between the decision stages: features → regime → signal → risk verdict → trade plan.

Each stage lives in its own module (`features`, `regime`, `strategies`, `selector`, `risk`); these
frozen Structs are the contracts between them, kept here so that no stage imports another's
internals. Floats are fine for decisions; the plan that reaches the exchange carries `Decimal`
prices and quantities already rounded to the symbol's filters.
"""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec

from futures_actor.core.types import Regime, Side

__all__ = [
    "Features",
    "RegimeResult",
    "RiskRejection",
    "Signal",
    "TradePlan",
]


class Features(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a strategy may look at, computed on one closed 5m candle (BOT_SPEC §4).

    `None` marks a value not yet defined (warm-up); a symbol trades only when none is `None`.
    `spread_pct` and `funding_rate` are `None` when no book/funding data exists (a CSV replay);
    the spread and funding rules then count as passing.
    """

    symbol: str
    open_time_ms: int
    close_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    rsi: float | None
    adx: float | None
    atr: float | None
    ema20: float | None
    ema50: float | None
    ema20_1h: float | None
    ema50_1h: float | None
    bb_upper: float | None
    bb_middle: float | None
    bb_lower: float | None
    bb_width: float | None
    volume_z: float | None
    atr_z: float | None
    # Highest high / lowest low of the previous `breakout_lookback_bars` bars, current bar excluded.
    prior_high: float | None
    prior_low: float | None
    spread_pct: float | None = None
    funding_rate: float | None = None

    @property
    def warm(self) -> bool:
        """Every indicator defined and finite (BOT_SPEC §3: not tradable until warm-up is complete).

        A NaN or infinite indicator (a degenerate input window) is "not ready" like a missing one:
        otherwise a comparison with NaN is silently false and a regime test is skipped (issue 10)."""
        values = (
            self.rsi,
            self.adx,
            self.atr,
            self.ema20,
            self.ema50,
            self.ema20_1h,
            self.ema50_1h,
            self.bb_upper,
            self.bb_middle,
            self.bb_lower,
            self.bb_width,
            self.volume_z,
            self.atr_z,
            self.prior_high,
            self.prior_low,
        )
        return all(v is not None and math.isfinite(v) for v in values)


class RegimeResult(msgspec.Struct, frozen=True, kw_only=True):
    """Output of the regime engine (BOT_SPEC §5)."""

    regime: Regime
    direction: Side | None  # TREND only
    confidence: float
    # SPREAD, FUNDING, CHOP, NO_RULE, LOW_CONFIDENCE, WARMUP, or the matched rule (TREND, RANGE, HIGH_VOL)
    reason: str
    values: dict[str, float] = msgspec.field(default_factory=dict)


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """A strategy's candidate entry. Knows nothing of equity or sizing (BOT_SPEC §6)."""

    symbol: str
    strategy: str
    side: Side
    regime: Regime
    regime_confidence: float
    candle_open_time_ms: int
    # Reference levels at the signal candle's close (logged). The plan's stop and target are measured
    # from the price of the entry order actually placed, with `stop_pct` and `target_r_multiple`
    # (BOT_SPEC §6 [resolved]), each attempt its own.
    entry_price: float
    stop_price: float
    stop_pct: float
    target_price: float | None
    leverage: float
    atr: float
    reason: str = ""
    target_r_multiple: float | None = None  # None: no fixed target (trailing only)


class RiskRejection(msgspec.Struct, frozen=True, kw_only=True):
    """A denied signal: a reason code and the numbers compared (BOT_SPEC §8)."""

    code: str
    message: str
    values: dict[str, float | str] = msgspec.field(default_factory=dict)


class TradePlan(msgspec.Struct, frozen=True, kw_only=True):
    """An approved, sized trade, rounded to the exchange filters. Execution's unit of work."""

    trade_id: str
    symbol: str
    strategy: str
    side: Side
    regime: Regime
    confidence_score: float
    candle_open_time_ms: int
    created_ms: int
    entry_price: Decimal  # limit price of the first attempt (re-priced from mid on retry)
    quantity: Decimal
    stop_price: Decimal
    target_price: Decimal | None
    leverage: float
    equity_usd: float
    risk_pct: float
    risk_usd: float
    stop_pct: float
    notional_usd: float
    margin_used_usd: float
    # Trailing rule of the strategy: activation after `trail_after_r` R, distance `atr_trail_mult`×ATR.
    trail_atr_mult: float | None = None
    trail_after_r: float | None = None
    exploration: bool = False
    correlation_bucket: str = ""
    bucket_corr_max: float = 0.0
    open_positions_count: int = 0
    open_risk_pct: float = 0.0

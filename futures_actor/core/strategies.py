"""The three entry strategies of BOT_SPEC §6: trend pullback, trend breakout, range mean reversion.

This module owns the entry conditions, stops, targets, leverage by regime and each strategy's
trailing rule. Strategies see one symbol's `Features` and its `RegimeResult`, never equity, the
portfolio or sizing. Each evaluation returns either a `Signal` or a `NoSignal` naming why not (for
the event log); `generate_signal()` is the same with `None` for "no signal".

Eligibility: a strategy fires only when enabled and when the regime is in its configured
`strategies.<name>.regimes`. `CHOP_NO_TRADE` is never traded, whatever the config says: the
regime engine uses it for failed spread/funding filters and low confidence, which are safety
filters, and no leverage is defined for it.

Inclusive bounds: RSI ranges of the pullback are closed intervals, the EMA20 band is `≤`; the
breakout and mean-reversion RSI tests are strict (`>`, `<`) and the band touches are `≤` / `≥`,
as written in the spec.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping

import msgspec

from futures_actor.core.config import (
    BotConfig,
    LeverageConfig,
    RangeMeanReversionConfig,
    TrendBreakoutConfig,
    TrendPullbackConfig,
)
from futures_actor.core.models import Features, RegimeResult, Signal
from futures_actor.core.trailing import TrailingRule
from futures_actor.core.types import Regime, Side

__all__ = [
    "NO_SIGNAL_CONDITIONS",
    "NO_SIGNAL_DIRECTION",
    "NO_SIGNAL_DISABLED",
    "NO_SIGNAL_INVALID_FEATURES",
    "NO_SIGNAL_NO_TRADE_REGIME",
    "NO_SIGNAL_REGIME",
    "NO_SIGNAL_WARMUP",
    "RANGE_MEAN_REVERSION",
    "STRATEGY_NAMES",
    "TREND_BREAKOUT",
    "TREND_PULLBACK",
    "NoSignal",
    "RangeMeanReversion",
    "Strategy",
    "StrategyInputError",
    "TrendBreakout",
    "TrendPullback",
    "build_strategies",
    "leverage_for_regime",
    "strategy_allows_regime",
]

TREND_PULLBACK = "trend_pullback"
TREND_BREAKOUT = "trend_breakout"
RANGE_MEAN_REVERSION = "range_mean_reversion"
STRATEGY_NAMES: tuple[str, ...] = (TREND_PULLBACK, TREND_BREAKOUT, RANGE_MEAN_REVERSION)

NO_SIGNAL_DISABLED = "DISABLED"
NO_SIGNAL_REGIME = "REGIME_NOT_ELIGIBLE"
NO_SIGNAL_NO_TRADE_REGIME = "NO_TRADE_REGIME"
NO_SIGNAL_WARMUP = "WARMUP"
NO_SIGNAL_INVALID_FEATURES = "INVALID_FEATURES"
NO_SIGNAL_DIRECTION = "NO_DIRECTION"
NO_SIGNAL_CONDITIONS = "CONDITIONS_NOT_MET"


class StrategyInputError(ValueError):
    """A strategy was asked something with a bad value. Names the field, value and expectation."""

    def __init__(self, *, field: str, value: object, expected: str) -> None:
        super().__init__(f"strategy input {field}: got {value!r}; expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


class NoSignal(msgspec.Struct, frozen=True, kw_only=True):
    """Why a strategy did not fire on this candle, with the values it compared."""

    strategy: str
    symbol: str
    candle_open_time_ms: int
    code: str
    message: str
    values: dict[str, float | str] = msgspec.field(default_factory=dict)


def leverage_for_regime(leverage: LeverageConfig, max_leverage: float, regime: Regime) -> float:
    """Leverage by regime (BOT_SPEC §6), never above `risk.max_leverage`."""
    match regime:
        case Regime.TREND:
            value = leverage.trend
        case Regime.RANGE:
            value = leverage.range
        case Regime.HIGH_VOL:
            value = leverage.high_vol
        case Regime.CHOP_NO_TRADE:
            raise StrategyInputError(
                field="regime",
                value=str(regime),
                expected="TREND, RANGE or HIGH_VOL (no leverage for no-trade)",
            )
    return min(value, max_leverage)


def strategy_allows_regime(cfg: BotConfig, name: str, regime: Regime) -> bool:
    """True when strategy `name` is enabled and configured for `regime` (never CHOP_NO_TRADE)."""
    section = getattr(cfg.strategies, name, None)
    if section is None or regime is Regime.CHOP_NO_TRADE:
        return False
    return bool(section.enabled) and regime.value in section.regimes


def _num(value: float | None, field: str) -> float:
    """A feature already checked by `evaluate()`; None here would be a programming error."""
    if value is None:
        raise StrategyInputError(field=field, value=value, expected="a defined (warm) feature")
    return value


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class Strategy(abc.ABC):
    """Common shape of the three strategies: eligibility, stop, target, leverage, signal building."""

    name: str

    def __init__(
        self,
        *,
        enabled: bool,
        regimes: tuple[str, ...],
        stop_pct: float,
        leverage: LeverageConfig,
        max_leverage: float,
        trailing: TrailingRule | None,
    ) -> None:
        self.enabled = enabled
        self.regimes = frozenset(Regime(r) for r in regimes)
        self.stop_pct = stop_pct
        self.trailing = trailing
        self._leverage = leverage
        self._max_leverage = max_leverage

    # -- the four operations of BOT_SPEC §6 ----------------------------------------------------

    def generate_signal(self, features: Features, regime: RegimeResult) -> Signal | None:
        """The entry signal on this closed candle, or None (see `evaluate` for the reason)."""
        result = self.evaluate(features, regime)
        return result if isinstance(result, Signal) else None

    def calculate_stop(self, entry_price: float, side: Side) -> float:
        """Stop at `stop_pct` from the entry, on the losing side."""
        _check_price("entry_price", entry_price)
        return entry_price * (1.0 - side.sign * self.stop_pct)

    @abc.abstractmethod
    def calculate_target(self, entry_price: float, stop_price: float, side: Side) -> float | None:
        """Take-profit level, or None for a strategy without a fixed target."""

    @property
    def target_r_multiple(self) -> float | None:
        """The target in R (multiples of the stop distance), or None without a fixed target."""
        return None

    def required_leverage(self, regime: Regime | RegimeResult) -> float:
        """Leverage for the regime from `leverage.*`, capped at `risk.max_leverage`."""
        key = regime.regime if isinstance(regime, RegimeResult) else regime
        return leverage_for_regime(self._leverage, self._max_leverage, key)

    # -- evaluation ------------------------------------------------------------------------------

    def is_eligible(self, regime: Regime) -> bool:
        return self.enabled and regime is not Regime.CHOP_NO_TRADE and regime in self.regimes

    def evaluate(self, features: Features, regime: RegimeResult) -> Signal | NoSignal:
        """The signal, or a `NoSignal` with a code and the compared values."""
        if not self.enabled:
            return self._no(features, NO_SIGNAL_DISABLED, f"{self.name} is disabled in config")
        if regime.regime is Regime.CHOP_NO_TRADE:
            return self._no(
                features, NO_SIGNAL_NO_TRADE_REGIME, f"regime CHOP_NO_TRADE ({regime.reason}) is never traded"
            )
        if regime.regime not in self.regimes:
            allowed = ",".join(sorted(r.value for r in self.regimes))
            return self._no(
                features,
                NO_SIGNAL_REGIME,
                f"regime {regime.regime} not in strategies.{self.name}.regimes [{allowed}]",
            )
        if not features.warm:
            return self._no(features, NO_SIGNAL_WARMUP, "features not warm (an indicator is undefined)")
        bad = self._invalid_feature(features)
        if bad is not None:
            return self._no(features, NO_SIGNAL_INVALID_FEATURES, bad)
        return self._conditions(features, regime)

    @abc.abstractmethod
    def _conditions(self, f: Features, regime: RegimeResult) -> Signal | NoSignal:
        """Entry conditions on warm, finite features."""

    # -- helpers ---------------------------------------------------------------------------------

    def _invalid_feature(self, f: Features) -> str | None:
        for field in ("close", "high", "low", "atr", "ema20", "ema50", "ema20_1h", "ema50_1h"):
            value = getattr(f, field)
            if not _finite(value) or value <= 0:
                return f"feature {field}={value!r}; expected a finite number > 0"
        for field in ("rsi", "volume_z", "bb_lower", "bb_upper", "prior_high", "prior_low"):
            value = getattr(f, field)
            if not _finite(value):
                return f"feature {field}={value!r}; expected a finite number"
        return None

    def _no(
        self, f: Features, code: str, message: str, values: Mapping[str, float | str] | None = None
    ) -> NoSignal:
        return NoSignal(
            strategy=self.name,
            symbol=f.symbol,
            candle_open_time_ms=f.open_time_ms,
            code=code,
            message=message,
            values=dict(values or {}),
        )

    def _signal(self, f: Features, regime: RegimeResult, side: Side, reason: str) -> Signal:
        entry = f.close
        stop = self.calculate_stop(entry, side)
        return Signal(
            symbol=f.symbol,
            strategy=self.name,
            side=side,
            regime=regime.regime,
            regime_confidence=regime.confidence,
            candle_open_time_ms=f.open_time_ms,
            entry_price=entry,
            stop_price=stop,
            stop_pct=self.stop_pct,
            target_price=self.calculate_target(entry, stop, side),
            leverage=self.required_leverage(regime.regime),
            atr=_num(f.atr, "atr"),
            reason=reason,
            target_r_multiple=self.target_r_multiple,
        )


def _check_price(field: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise StrategyInputError(field=field, value=value, expected="a finite price > 0")


def _r_target(entry_price: float, stop_price: float, side: Side, r_multiple: float) -> float:
    _check_price("entry_price", entry_price)
    _check_price("stop_price", stop_price)
    risk = side.sign * (entry_price - stop_price)
    if risk <= 0:
        where = "below" if side is Side.LONG else "above"
        raise StrategyInputError(
            field="stop_price", value=stop_price, expected=f"{where} entry_price {entry_price} for {side}"
        )
    return entry_price + side.sign * r_multiple * risk


def _trend_side(f: Features, regime: RegimeResult) -> Side | None:
    """1h trend direction from EMA20_1h vs EMA50_1h; None when flat or against the regime's direction."""
    ema20_1h, ema50_1h = _num(f.ema20_1h, "ema20_1h"), _num(f.ema50_1h, "ema50_1h")
    if ema20_1h > ema50_1h:
        side = Side.LONG
    elif ema20_1h < ema50_1h:
        side = Side.SHORT
    else:
        return None
    if regime.direction is not None and regime.direction is not side:
        return None
    return side


class TrendPullback(Strategy):
    """A. Trend pullback: buy the dip to EMA20 in a 1h uptrend (sell the rally in a downtrend)."""

    name = TREND_PULLBACK

    def __init__(self, *, cfg: TrendPullbackConfig, leverage: LeverageConfig, max_leverage: float) -> None:
        super().__init__(
            enabled=cfg.enabled,
            regimes=cfg.regimes,
            stop_pct=cfg.stop_pct,
            leverage=leverage,
            max_leverage=max_leverage,
            trailing=TrailingRule(atr_mult=cfg.atr_trail_mult, after_r=cfg.trail_after_r),
        )
        self.cfg = cfg

    def calculate_target(self, entry_price: float, stop_price: float, side: Side) -> float | None:
        return _r_target(entry_price, stop_price, side, self.cfg.target_r_multiple)

    @property
    def target_r_multiple(self) -> float | None:
        return self.cfg.target_r_multiple

    def _conditions(self, f: Features, regime: RegimeResult) -> Signal | NoSignal:
        c = self.cfg
        rsi, ema20, ema50, close = _num(f.rsi, "rsi"), _num(f.ema20, "ema20"), _num(f.ema50, "ema50"), f.close
        band = abs(close - ema20) / ema20
        values: dict[str, float | str] = {
            "close": close,
            "rsi": rsi,
            "ema20": ema20,
            "ema50": ema50,
            "ema20_1h": _num(f.ema20_1h, "ema20_1h"),
            "ema50_1h": _num(f.ema50_1h, "ema50_1h"),
            "ema20_band": band,
            "ema20_band_pct": c.ema20_band_pct,
        }
        side = _trend_side(f, regime)
        if side is None:
            return self._no(f, NO_SIGNAL_DIRECTION, "no 1h trend direction (or against the regime)", values)
        if side is Side.LONG:
            structure = ema20 > ema50 or close > ema50
            lo, hi = c.pullback_rsi_long_min, c.pullback_rsi_long_max
        else:
            structure = ema20 < ema50 or close < ema50
            lo, hi = c.pullback_rsi_short_min, c.pullback_rsi_short_max
        failed: list[str] = []
        if not structure:
            failed.append("5m structure (EMA20 vs EMA50 / close vs EMA50) against the trend")
        if not lo <= rsi <= hi:
            failed.append(f"RSI {rsi:.4g} outside [{lo:g}, {hi:g}]")
        if band > c.ema20_band_pct:
            failed.append(f"|close-EMA20|/EMA20 {band:.4g} > {c.ema20_band_pct:g}")
        if failed:
            return self._no(f, NO_SIGNAL_CONDITIONS, f"{side}: " + "; ".join(failed), values)
        reason = f"{side} pullback: RSI {rsi:.4g} in [{lo:g}, {hi:g}], EMA20 band {band:.4g}"
        return self._signal(f, regime, side, reason)


class TrendBreakout(Strategy):
    """B. Trend breakout: close beyond the prior N-bar extreme with volume, in the 1h trend direction."""

    name = TREND_BREAKOUT

    def __init__(self, *, cfg: TrendBreakoutConfig, leverage: LeverageConfig, max_leverage: float) -> None:
        super().__init__(
            enabled=cfg.enabled,
            regimes=cfg.regimes,
            stop_pct=cfg.stop_pct,
            leverage=leverage,
            max_leverage=max_leverage,
            trailing=TrailingRule(atr_mult=cfg.atr_trail_mult, after_r=cfg.trail_after_r),
        )
        self.cfg = cfg

    def calculate_target(self, entry_price: float, stop_price: float, side: Side) -> float | None:
        return None

    def _conditions(self, f: Features, regime: RegimeResult) -> Signal | NoSignal:
        c = self.cfg
        prior_high, prior_low = _num(f.prior_high, "prior_high"), _num(f.prior_low, "prior_low")
        volume_z, close = _num(f.volume_z, "volume_z"), f.close
        values: dict[str, float | str] = {
            "close": close,
            "prior_high": prior_high,
            "prior_low": prior_low,
            "volume_z": volume_z,
            "breakout_volume_z_min": c.breakout_volume_z_min,
        }
        side = _trend_side(f, regime)
        if side is None:
            return self._no(f, NO_SIGNAL_DIRECTION, "no 1h trend direction (or against the regime)", values)
        failed: list[str] = []
        if side is Side.LONG and not close > prior_high:
            failed.append(f"close {close:g} not above prior high {prior_high:g}")
        if side is Side.SHORT and not close < prior_low:
            failed.append(f"close {close:g} not below prior low {prior_low:g}")
        if not volume_z > c.breakout_volume_z_min:
            failed.append(f"volume z {volume_z:.4g} not > {c.breakout_volume_z_min:g}")
        if failed:
            return self._no(f, NO_SIGNAL_CONDITIONS, f"{side}: " + "; ".join(failed), values)
        level = prior_high if side is Side.LONG else prior_low
        reason = f"{side} breakout of {level:g} with volume z {volume_z:.4g}"
        return self._signal(f, regime, side, reason)


class RangeMeanReversion(Strategy):
    """C. Range mean reversion: fade an RSI extreme that touched the outer Bollinger band."""

    name = RANGE_MEAN_REVERSION

    def __init__(
        self, *, cfg: RangeMeanReversionConfig, leverage: LeverageConfig, max_leverage: float
    ) -> None:
        super().__init__(
            enabled=cfg.enabled,
            regimes=cfg.regimes,
            stop_pct=cfg.stop_pct,
            leverage=leverage,
            max_leverage=max_leverage,
            trailing=None,
        )
        self.cfg = cfg

    def calculate_target(self, entry_price: float, stop_price: float, side: Side) -> float | None:
        return _r_target(entry_price, stop_price, side, self.cfg.target_r_multiple)

    @property
    def target_r_multiple(self) -> float | None:
        return self.cfg.target_r_multiple

    def _conditions(self, f: Features, regime: RegimeResult) -> Signal | NoSignal:
        c = self.cfg
        rsi, bb_lower, bb_upper = (
            _num(f.rsi, "rsi"),
            _num(f.bb_lower, "bb_lower"),
            _num(f.bb_upper, "bb_upper"),
        )
        values: dict[str, float | str] = {
            "rsi": rsi,
            "low": f.low,
            "high": f.high,
            "bb_lower": bb_lower,
            "bb_upper": bb_upper,
            "rsi_long_extreme": c.rsi_long_extreme,
            "rsi_short_extreme": c.rsi_short_extreme,
        }
        if rsi < c.rsi_long_extreme and f.low <= bb_lower:
            reason = f"LONG reversion: RSI {rsi:.4g} < {c.rsi_long_extreme:g}, low touched lower band"
            return self._signal(f, regime, Side.LONG, reason)
        if rsi > c.rsi_short_extreme and f.high >= bb_upper:
            reason = f"SHORT reversion: RSI {rsi:.4g} > {c.rsi_short_extreme:g}, high touched upper band"
            return self._signal(f, regime, Side.SHORT, reason)
        return self._no(
            f,
            NO_SIGNAL_CONDITIONS,
            f"RSI {rsi:.4g} not beyond [{c.rsi_long_extreme:g}, {c.rsi_short_extreme:g}] with a band touch",
            values,
        )


def build_strategies(cfg: BotConfig) -> list[Strategy]:
    """The three strategies from config, in priority order (primary first). Disabled ones included:
    they report `DISABLED` rather than vanish, so the event log says why they never fire."""
    s = cfg.strategies
    lev, cap = cfg.leverage, cfg.risk.max_leverage
    return [
        TrendPullback(cfg=s.trend_pullback, leverage=lev, max_leverage=cap),
        TrendBreakout(cfg=s.trend_breakout, leverage=lev, max_leverage=cap),
        RangeMeanReversion(cfg=s.range_mean_reversion, leverage=lev, max_leverage=cap),
    ]

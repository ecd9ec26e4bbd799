"""Entry conditions, stops, targets and leverage of the three strategies (BOT_SPEC §6)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from futures_actor.core.config import (
    LeverageConfig,
    StrategiesConfig,
    TrendBreakoutConfig,
    TrendPullbackConfig,
    default_config,
)
from futures_actor.core.models import Features, RegimeResult, Signal
from futures_actor.core.strategies import (
    NO_SIGNAL_CONDITIONS,
    NO_SIGNAL_DIRECTION,
    NO_SIGNAL_DISABLED,
    NO_SIGNAL_INVALID_FEATURES,
    NO_SIGNAL_NO_TRADE_REGIME,
    NO_SIGNAL_REGIME,
    NO_SIGNAL_WARMUP,
    RANGE_MEAN_REVERSION,
    TREND_BREAKOUT,
    TREND_PULLBACK,
    NoSignal,
    RangeMeanReversion,
    StrategyInputError,
    TrendBreakout,
    TrendPullback,
    build_strategies,
)
from futures_actor.core.types import Regime, Side

CFG = default_config()
PULLBACK, BREAKOUT, REVERSION = build_strategies(CFG)

# A long trend pullback: 1h bullish, 5m EMA20 > EMA50, RSI 45, close 0.1 % under EMA20.
BASE: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "open_time_ms": 1_700_000_000_000,
    "close_time_ms": 1_700_000_299_999,
    "open": 100.2,
    "high": 100.5,
    "low": 99.5,
    "close": 100.0,
    "volume": 10.0,
    "rsi": 45.0,
    "adx": 30.0,
    "atr": 0.5,
    "ema20": 100.1,
    "ema50": 99.0,
    "ema20_1h": 101.0,
    "ema50_1h": 100.0,
    "bb_upper": 102.0,
    "bb_middle": 100.0,
    "bb_lower": 98.0,
    "bb_width": 0.04,
    "volume_z": 0.0,
    "atr_z": 0.0,
    "prior_high": 101.0,
    "prior_low": 97.0,
}
# The same candle mirrored for a short pullback: 1h bearish, EMA20 < EMA50, RSI 55.
SHORT: dict[str, Any] = {
    **BASE,
    "rsi": 55.0,
    "ema20": 99.9,
    "ema50": 101.0,
    "ema20_1h": 99.0,
    "ema50_1h": 100.0,
}


def feat(base: dict[str, Any] | None = None, **changes: Any) -> Features:
    return Features(**{**(base or BASE), **changes})


def trend(direction: Side | None = Side.LONG, confidence: float = 0.7) -> RegimeResult:
    return RegimeResult(regime=Regime.TREND, direction=direction, confidence=confidence, reason="TREND")


def ranging(confidence: float = 0.65) -> RegimeResult:
    return RegimeResult(regime=Regime.RANGE, direction=None, confidence=confidence, reason="RANGE")


def regime_of(regime: Regime) -> RegimeResult:
    return RegimeResult(regime=regime, direction=None, confidence=0.9, reason=regime.value)


def fires(result: Signal | NoSignal) -> bool:
    return isinstance(result, Signal)


class TestTrendPullback:
    """A. Trend pullback: entry conditions at their bounds, stop, target, leverage."""

    def test_long_signal_carries_exact_stop_target_and_leverage(self) -> None:
        sig = PULLBACK.generate_signal(feat(), trend())
        assert sig is not None
        assert sig.strategy == TREND_PULLBACK == "trend_pullback"
        assert sig.side is Side.LONG
        assert sig.entry_price == 100.0
        assert sig.stop_price == pytest.approx(99.0, abs=1e-12)
        assert sig.stop_pct == 0.01
        assert sig.target_price == pytest.approx(101.5, abs=1e-12)  # 1.5 R
        assert sig.leverage == 2.0
        assert sig.regime is Regime.TREND
        assert sig.regime_confidence == 0.7
        assert sig.atr == 0.5
        assert sig.candle_open_time_ms == BASE["open_time_ms"]
        assert sig.symbol == "BTCUSDT"

    @pytest.mark.parametrize(
        ("rsi", "expected"), [(40.0, True), (39.99, False), (50.0, True), (50.01, False), (45.0, True)]
    )
    def test_long_rsi_range_is_inclusive(self, rsi: float, expected: bool) -> None:
        assert fires(PULLBACK.evaluate(feat(rsi=rsi), trend())) is expected

    @pytest.mark.parametrize(
        ("rsi", "expected"), [(50.0, True), (49.99, False), (60.0, True), (60.01, False)]
    )
    def test_short_rsi_range_is_inclusive(self, rsi: float, expected: bool) -> None:
        result = PULLBACK.evaluate(feat(SHORT, rsi=rsi), trend(Side.SHORT))
        assert fires(result) is expected
        if expected:
            assert isinstance(result, Signal)
            assert result.side is Side.SHORT

    @pytest.mark.parametrize(
        ("band", "expected"), [(0.0019, True), (0.0021, False), (-0.0019, True), (-0.0021, False)]
    )
    def test_ema20_band(self, band: float, expected: bool) -> None:
        # close = ema20 * (1 + band): the distance |close - EMA20| / EMA20 is |band|.
        ema20 = 100.0
        f = feat(ema20=ema20, close=ema20 * (1 + band), ema50=99.0)
        assert fires(PULLBACK.evaluate(f, trend())) is expected
        fs = feat(SHORT, ema20=ema20, close=ema20 * (1 + band), ema50=101.0)
        assert fires(PULLBACK.evaluate(fs, trend(Side.SHORT))) is expected

    def test_long_structure_ema20_above_ema50_or_close_above_ema50(self) -> None:
        # EMA20 < EMA50 but close > EMA50: allowed by the "or".
        assert fires(PULLBACK.evaluate(feat(ema20=100.1, ema50=99.95, close=100.0), trend()))
        assert fires(PULLBACK.evaluate(feat(ema20=100.0, ema50=100.05, close=100.06), trend()))
        # EMA20 < EMA50 and close < EMA50: refused.
        result = PULLBACK.evaluate(feat(ema20=100.0, ema50=100.2, close=100.1), trend())
        assert isinstance(result, NoSignal)
        assert result.code == NO_SIGNAL_CONDITIONS

    def test_short_structure(self) -> None:
        assert fires(PULLBACK.evaluate(feat(SHORT, ema20=99.9, ema50=99.8, close=99.75), trend(Side.SHORT)))
        result = PULLBACK.evaluate(feat(SHORT, ema20=99.9, ema50=99.8, close=99.85), trend(Side.SHORT))
        assert isinstance(result, NoSignal)
        assert result.code == NO_SIGNAL_CONDITIONS

    def test_short_signal_exact_levels(self) -> None:
        sig = PULLBACK.generate_signal(feat(SHORT), trend(Side.SHORT))
        assert sig is not None
        assert sig.side is Side.SHORT
        assert sig.stop_price == pytest.approx(101.0, abs=1e-12)
        assert sig.target_price == pytest.approx(98.5, abs=1e-12)

    def test_long_conditions_do_not_fire_short(self) -> None:
        # Long pullback values under a bearish 1h trend: neither side fires.
        result = PULLBACK.evaluate(feat(ema20_1h=99.0, ema50_1h=100.0), trend(Side.SHORT))
        assert isinstance(result, NoSignal)

    def test_flat_1h_or_direction_against_regime_gives_no_direction(self) -> None:
        flat = PULLBACK.evaluate(feat(ema20_1h=100.0, ema50_1h=100.0), trend(None))
        assert isinstance(flat, NoSignal)
        assert flat.code == NO_SIGNAL_DIRECTION
        against = PULLBACK.evaluate(feat(), trend(Side.SHORT))
        assert isinstance(against, NoSignal)
        assert against.code == NO_SIGNAL_DIRECTION

    def test_no_signal_names_the_failed_conditions_and_values(self) -> None:
        result = PULLBACK.evaluate(feat(rsi=30.0), trend())
        assert isinstance(result, NoSignal)
        assert "RSI 30 outside [40, 50]" in result.message
        assert result.values["rsi"] == 30.0
        assert result.strategy == TREND_PULLBACK
        msgspec.json.encode(result)  # loggable


class TestTrendBreakout:
    """B. Trend breakout: strict close beyond the prior extreme, strict volume z, no target."""

    @pytest.mark.parametrize(
        ("close", "volume_z", "expected"),
        [(101.01, 1.01, True), (101.0, 1.01, False), (101.01, 1.0, False), (100.9, 3.0, False)],
    )
    def test_long_bounds(self, close: float, volume_z: float, expected: bool) -> None:
        f = feat(close=close, prior_high=101.0, volume_z=volume_z)
        assert fires(BREAKOUT.evaluate(f, trend())) is expected

    @pytest.mark.parametrize(
        ("close", "volume_z", "expected"),
        [(96.99, 1.01, True), (97.0, 1.01, False), (96.99, 1.0, False)],
    )
    def test_short_bounds(self, close: float, volume_z: float, expected: bool) -> None:
        f = feat(SHORT, close=close, prior_low=97.0, volume_z=volume_z)
        result = BREAKOUT.evaluate(f, trend(Side.SHORT))
        assert fires(result) is expected
        if expected:
            assert isinstance(result, Signal)
            assert result.side is Side.SHORT

    def test_breakout_needs_the_1h_trend(self) -> None:
        # Close above the prior high under a bearish 1h trend: not a long, and not a short either.
        f = feat(SHORT, close=101.5, prior_high=101.0, volume_z=2.0)
        assert not fires(BREAKOUT.evaluate(f, trend(Side.SHORT)))

    def test_levels_and_no_target(self) -> None:
        sig = BREAKOUT.generate_signal(feat(close=102.0, volume_z=2.0), trend())
        assert sig is not None
        assert sig.strategy == TREND_BREAKOUT
        assert sig.stop_price == pytest.approx(102.0 * 0.99, abs=1e-12)
        assert sig.target_price is None
        assert BREAKOUT.calculate_target(100.0, 99.0, Side.LONG) is None
        assert sig.leverage == 2.0

    def test_trailing_rule_from_config(self) -> None:
        assert BREAKOUT.trailing is not None
        assert BREAKOUT.trailing.atr_mult == 2.5
        assert BREAKOUT.trailing.after_r == 0.0
        assert PULLBACK.trailing is not None
        assert (PULLBACK.trailing.atr_mult, PULLBACK.trailing.after_r) == (2.0, 1.0)
        assert REVERSION.trailing is None


class TestRangeMeanReversion:
    """C. Range mean reversion: strict RSI extremes, band touch inclusive, 1.2 R target, RANGE leverage."""

    @pytest.mark.parametrize(
        ("rsi", "low", "expected"),
        [(24.99, 98.0, True), (25.0, 98.0, False), (24.99, 98.01, False), (10.0, 97.0, True)],
    )
    def test_long_bounds(self, rsi: float, low: float, expected: bool) -> None:
        f = feat(rsi=rsi, low=low, bb_lower=98.0, close=98.5)
        assert fires(REVERSION.evaluate(f, ranging())) is expected

    @pytest.mark.parametrize(
        ("rsi", "high", "expected"),
        [(75.01, 102.0, True), (75.0, 102.0, False), (75.01, 101.99, False)],
    )
    def test_short_bounds(self, rsi: float, high: float, expected: bool) -> None:
        f = feat(rsi=rsi, high=high, bb_upper=102.0, close=101.5)
        result = REVERSION.evaluate(f, ranging())
        assert fires(result) is expected
        if expected:
            assert isinstance(result, Signal)
            assert result.side is Side.SHORT

    def test_levels(self) -> None:
        sig = REVERSION.generate_signal(feat(rsi=20.0, low=97.9, close=100.0), ranging())
        assert sig is not None
        assert sig.strategy == RANGE_MEAN_REVERSION
        assert sig.side is Side.LONG
        assert sig.stop_price == pytest.approx(99.2, abs=1e-12)  # 0.8 %
        assert sig.target_price == pytest.approx(100.96, abs=1e-12)  # 1.2 R
        assert sig.leverage == 1.5
        short = REVERSION.generate_signal(feat(rsi=80.0, high=102.5, close=100.0), ranging())
        assert short is not None
        assert short.stop_price == pytest.approx(100.8, abs=1e-12)
        assert short.target_price == pytest.approx(99.04, abs=1e-12)


class TestEligibility:
    """Regimes from config; never HIGH_VOL or CHOP by default; disabled, warm-up and bad data."""

    @pytest.mark.parametrize("regime", [Regime.HIGH_VOL, Regime.RANGE])
    def test_trend_strategies_do_not_fire_outside_trend(self, regime: Regime) -> None:
        for strat in (PULLBACK, BREAKOUT):
            result = strat.evaluate(feat(close=102.0, volume_z=2.0), regime_of(regime))
            assert isinstance(result, NoSignal)
            assert result.code == NO_SIGNAL_REGIME

    def test_reversion_does_not_fire_in_trend_or_high_vol(self) -> None:
        f = feat(rsi=20.0, low=97.0)
        assert fires(REVERSION.evaluate(f, ranging()))
        for regime in (trend(), regime_of(Regime.HIGH_VOL)):
            result = REVERSION.evaluate(f, regime)
            assert isinstance(result, NoSignal)
            assert result.code == NO_SIGNAL_REGIME

    def test_chop_is_never_traded_even_if_configured(self) -> None:
        cfg = msgspec.structs.replace(
            CFG,
            strategies=StrategiesConfig(
                trend_pullback=TrendPullbackConfig(regimes=("TREND", "CHOP_NO_TRADE"))
            ),
        )
        pullback = build_strategies(cfg)[0]
        result = pullback.evaluate(feat(), regime_of(Regime.CHOP_NO_TRADE))
        assert isinstance(result, NoSignal)
        assert result.code == NO_SIGNAL_NO_TRADE_REGIME
        assert not pullback.is_eligible(Regime.CHOP_NO_TRADE)

    def test_configured_regimes_widen_eligibility_with_that_regimes_leverage(self) -> None:
        cfg = msgspec.structs.replace(
            CFG,
            strategies=StrategiesConfig(trend_pullback=TrendPullbackConfig(regimes=("TREND", "HIGH_VOL"))),
        )
        pullback = build_strategies(cfg)[0]
        sig = pullback.generate_signal(feat(), regime_of(Regime.HIGH_VOL))
        assert sig is not None
        assert sig.leverage == 1.0

    def test_disabled_strategy_reports_disabled(self) -> None:
        cfg = msgspec.structs.replace(
            CFG, strategies=StrategiesConfig(trend_breakout=TrendBreakoutConfig(enabled=False))
        )
        breakout = build_strategies(cfg)[1]
        result = breakout.evaluate(feat(close=102.0, volume_z=2.0), trend())
        assert isinstance(result, NoSignal)
        assert result.code == NO_SIGNAL_DISABLED
        assert breakout.generate_signal(feat(close=102.0, volume_z=2.0), trend()) is None

    def test_warmup_and_non_finite_features_give_no_signal(self) -> None:
        cold = PULLBACK.evaluate(feat(adx=None), trend())
        assert isinstance(cold, NoSignal)
        assert cold.code == NO_SIGNAL_WARMUP
        for field, value in (("rsi", math.nan), ("ema20", math.inf)):
            # A non-finite indicator is "not ready" (issue 10 #9), like a missing one.
            not_ready = PULLBACK.evaluate(feat(**{field: value}), trend())
            assert isinstance(not_ready, NoSignal), field
            assert not_ready.code == NO_SIGNAL_WARMUP
        for field, value in (("close", -1.0), ("atr", 0.0)):
            bad = PULLBACK.evaluate(feat(**{field: value}), trend())
            assert isinstance(bad, NoSignal), field
            assert bad.code == NO_SIGNAL_INVALID_FEATURES
            assert field in bad.message


class TestLeverageStopTarget:
    """Leverage by regime capped at risk.max_leverage; stop/target arithmetic and bad inputs."""

    def test_leverage_mapping(self) -> None:
        assert PULLBACK.required_leverage(Regime.TREND) == 2.0
        assert PULLBACK.required_leverage(Regime.RANGE) == 1.5
        assert PULLBACK.required_leverage(Regime.HIGH_VOL) == 1.0
        assert REVERSION.required_leverage(ranging()) == 1.5

    def test_leverage_is_capped_at_max_leverage(self) -> None:
        strat = TrendPullback(
            cfg=TrendPullbackConfig(), leverage=LeverageConfig(trend=2.0, range=1.5), max_leverage=1.2
        )
        assert strat.required_leverage(Regime.TREND) == 1.2
        assert strat.required_leverage(Regime.RANGE) == 1.2
        assert strat.required_leverage(Regime.HIGH_VOL) == 1.0
        sig = strat.generate_signal(feat(), trend())
        assert sig is not None
        assert sig.leverage == 1.2

    def test_no_leverage_for_chop(self) -> None:
        with pytest.raises(StrategyInputError, match="regime"):
            PULLBACK.required_leverage(Regime.CHOP_NO_TRADE)

    def test_stop_and_target_exact(self) -> None:
        assert PULLBACK.calculate_stop(200.0, Side.LONG) == pytest.approx(198.0, abs=1e-12)
        assert PULLBACK.calculate_stop(200.0, Side.SHORT) == pytest.approx(202.0, abs=1e-12)
        assert PULLBACK.calculate_target(200.0, 198.0, Side.LONG) == pytest.approx(203.0, abs=1e-12)
        assert PULLBACK.calculate_target(200.0, 202.0, Side.SHORT) == pytest.approx(197.0, abs=1e-12)
        assert REVERSION.calculate_target(50.0, 49.6, Side.LONG) == pytest.approx(50.48, abs=1e-12)

    def test_bad_prices_raise_naming_the_field(self) -> None:
        with pytest.raises(StrategyInputError, match="entry_price") as err:
            PULLBACK.calculate_stop(math.nan, Side.LONG)
        assert err.value.field == "entry_price"
        with pytest.raises(StrategyInputError, match="stop_price"):
            PULLBACK.calculate_target(100.0, 101.0, Side.LONG)  # stop on the wrong side
        with pytest.raises(StrategyInputError, match="stop_price"):
            REVERSION.calculate_target(100.0, 99.0, Side.SHORT)

    def test_build_strategies_order_and_names(self) -> None:
        strategies = build_strategies(CFG)
        assert [s.name for s in strategies] == ["trend_pullback", "trend_breakout", "range_mean_reversion"]
        assert isinstance(strategies[0], TrendPullback)
        assert isinstance(strategies[1], TrendBreakout)
        assert isinstance(strategies[2], RangeMeanReversion)

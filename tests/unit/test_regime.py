"""Regime engine (BOT_SPEC §5): precedence, every threshold from both sides, confidence, reason codes."""

from __future__ import annotations

import math

import msgspec
import pytest

from futures_actor.core.config import BotConfig
from futures_actor.core.models import Features
from futures_actor.core.regime import detect_regime
from futures_actor.core.types import Regime, Side

CFG = BotConfig()
RC = CFG.regime
UC = CFG.universe


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def feats(**overrides: object) -> Features:
    """Warm features that match no rule: ADX 22 (between range max 20 and trend min 25), calm ATR."""
    base = Features(
        symbol="BTCUSDT",
        open_time_ms=1_735_603_200_000,
        close_time_ms=1_735_603_499_999,
        open=100.0,
        high=101.0,
        low=99.0,
        close=100.0,
        volume=10.0,
        rsi=50.0,
        adx=22.0,
        atr=1.0,
        ema20=100.0,
        ema50=100.0,
        ema20_1h=101.0,
        ema50_1h=100.0,
        bb_upper=101.0,
        bb_middle=100.0,
        bb_lower=99.0,
        bb_width=0.02,
        volume_z=0.0,
        atr_z=0.0,
        prior_high=101.0,
        prior_low=99.0,
    )
    return msgspec.structs.replace(base, **overrides)


def cfg(**regime: object) -> BotConfig:
    return msgspec.structs.replace(CFG, regime=msgspec.structs.replace(RC, **regime))


class TestSpreadAndFunding:
    """Rule 1: a failing spread or funding filter means CHOP_NO_TRADE with confidence 1; None passes."""

    def test_spread_at_limit_passes(self) -> None:
        assert detect_regime(feats(spread_pct=UC.max_spread_pct), CFG).reason == "NO_RULE"

    @pytest.mark.parametrize("spread", [above(UC.max_spread_pct), 0.01, -1e-9, math.nan, math.inf])
    def test_spread_fails(self, spread: float) -> None:
        r = detect_regime(feats(spread_pct=spread), CFG)
        assert (r.regime, r.reason, r.confidence, r.direction) == (Regime.CHOP_NO_TRADE, "SPREAD", 1.0, None)

    @pytest.mark.parametrize("rate", [UC.max_abs_funding_rate, -UC.max_abs_funding_rate, 0.0])
    def test_funding_at_limit_passes(self, rate: float) -> None:
        assert detect_regime(feats(funding_rate=rate), CFG).reason == "NO_RULE"

    @pytest.mark.parametrize(
        "rate", [above(UC.max_abs_funding_rate), below(-UC.max_abs_funding_rate), math.nan]
    )
    def test_funding_fails(self, rate: float) -> None:
        r = detect_regime(feats(funding_rate=rate), CFG)
        assert (r.regime, r.reason, r.confidence) == (Regime.CHOP_NO_TRADE, "FUNDING", 1.0)

    def test_spread_checked_before_funding_and_trend(self) -> None:
        f = feats(spread_pct=0.01, funding_rate=0.01, adx=40.0)
        assert detect_regime(f, CFG).reason == "SPREAD"
        assert detect_regime(feats(funding_rate=0.01, adx=40.0), CFG).reason == "FUNDING"

    def test_values_logged(self) -> None:
        r = detect_regime(feats(spread_pct=0.01, funding_rate=0.0001), CFG)
        assert r.values["spread_pct"] == 0.01
        assert r.values["funding_rate"] == 0.0001
        assert r.values["adx"] == 22.0


class TestWarmup:
    """Any undefined feature means CHOP_NO_TRADE, reason WARMUP."""

    @pytest.mark.parametrize(
        "field", ["rsi", "adx", "atr_z", "ema20_1h", "ema50_1h", "bb_width", "prior_low", "volume_z"]
    )
    def test_undefined_feature(self, field: str) -> None:
        r = detect_regime(feats(**{field: None}), CFG)
        assert (r.regime, r.reason, r.confidence) == (Regime.CHOP_NO_TRADE, "WARMUP", 1.0)


class TestChop:
    """Rule 2: ADX < chop_adx_max AND BB width < chop_bb_width_max; it precedes HIGH_VOL."""

    def test_just_below_both(self) -> None:
        r = detect_regime(
            feats(adx=below(RC.chop_adx_max), bb_width=below(RC.chop_bb_width_max), atr_z=5.0), CFG
        )
        assert (r.regime, r.reason, r.confidence) == (Regime.CHOP_NO_TRADE, "CHOP", 1.0)

    @pytest.mark.parametrize(
        ("adx", "width"),
        [(RC.chop_adx_max, below(RC.chop_bb_width_max)), (below(RC.chop_adx_max), RC.chop_bb_width_max)],
    )
    def test_at_threshold_is_not_chop(self, adx: float, width: float) -> None:
        assert detect_regime(feats(adx=adx, bb_width=width), CFG).reason != "CHOP"


class TestHighVol:
    """Rule 3: ATR_Z > high_vol_atr_z; confidence 0.5 + 0.5·m((z − thr)/full_scale)."""

    def test_at_threshold_is_not_high_vol(self) -> None:
        assert detect_regime(feats(atr_z=RC.high_vol_atr_z), CFG).reason == "NO_RULE"

    def test_just_above_scores_half_and_is_low_confidence(self) -> None:
        r = detect_regime(feats(atr_z=above(RC.high_vol_atr_z)), CFG)
        assert (r.regime, r.reason) == (Regime.CHOP_NO_TRADE, "LOW_CONFIDENCE")
        assert r.confidence == pytest.approx(0.5)
        assert r.direction is None

    def test_confidence_formula(self) -> None:
        z = RC.high_vol_atr_z + 0.4 * RC.high_vol_full_scale_z
        r = detect_regime(feats(atr_z=z, adx=40.0), CFG)  # precedes TREND
        assert (r.regime, r.reason, r.direction) == (Regime.HIGH_VOL, "HIGH_VOL", None)
        assert r.confidence == pytest.approx(0.7)
        assert detect_regime(feats(atr_z=50.0), CFG).confidence == 1.0


class TestTrend:
    """Rule 4: ADX > trend_adx_min AND EMA20_1h ≠ EMA50_1h; direction from the 1h EMAs."""

    def test_at_threshold_is_not_trend(self) -> None:
        assert detect_regime(feats(adx=RC.trend_adx_min), CFG).reason == "NO_RULE"

    def test_just_above_with_tiny_separation_is_low_confidence(self) -> None:
        r = detect_regime(feats(adx=above(RC.trend_adx_min), ema20_1h=100.0 + 1e-9), CFG)
        assert r.reason == "LOW_CONFIDENCE"
        assert r.confidence == pytest.approx(0.5)

    def test_equal_emas_is_not_trend(self) -> None:
        assert detect_regime(feats(adx=40.0, ema20_1h=100.0, ema50_1h=100.0), CFG).reason == "NO_RULE"

    @pytest.mark.parametrize(("e20", "side"), [(100.5, Side.LONG), (99.5, Side.SHORT)])
    def test_direction_and_confidence(self, e20: float, side: Side) -> None:
        # ADX strength (32.5 − 25)/15 = 0.5; separation 0.005/0.01 = 0.5 ⇒ 0.5 + 0.5·0.5
        r = detect_regime(feats(adx=32.5, ema20_1h=e20, ema50_1h=100.0), CFG)
        assert (r.regime, r.reason, r.direction) == (Regime.TREND, "TREND", side)
        assert r.confidence == pytest.approx(0.75)

    def test_confidence_saturates(self) -> None:
        assert detect_regime(feats(adx=90.0, ema20_1h=150.0), CFG).confidence == 1.0


class TestRange:
    """Rule 5: ADX < range_adx_max AND w_min ≤ width ≤ w_max; confidence from ADX and centrality."""

    @pytest.mark.parametrize("width", [RC.range_bb_width_min, RC.range_bb_width_max])
    def test_width_bounds_inclusive(self, width: float) -> None:
        r = detect_regime(feats(adx=RC.range_adx_max - RC.range_adx_full_scale, bb_width=width), CFG)
        assert (r.regime, r.reason, r.direction) == (Regime.RANGE, "RANGE", None)
        assert r.confidence == pytest.approx(0.75)  # ADX strength 1, centrality 0

    @pytest.mark.parametrize("width", [below(RC.range_bb_width_min), above(RC.range_bb_width_max)])
    def test_width_outside(self, width: float) -> None:
        assert detect_regime(feats(adx=16.0, bb_width=width), CFG).reason == "NO_RULE"

    def test_adx_at_threshold_is_not_range(self) -> None:
        assert detect_regime(feats(adx=RC.range_adx_max, bb_width=0.017), CFG).reason == "NO_RULE"

    def test_adx_just_below_center_width(self) -> None:
        mid = (RC.range_bb_width_min + RC.range_bb_width_max) / 2
        r = detect_regime(feats(adx=below(RC.range_adx_max), bb_width=mid), CFG)
        assert r.regime is Regime.RANGE
        assert r.confidence == pytest.approx(0.75)  # ADX strength ~0, centrality 1

    def test_zero_width_span(self) -> None:
        c = cfg(range_bb_width_min=0.01, range_bb_width_max=0.01)
        r = detect_regime(feats(adx=10.0, bb_width=0.01), c)
        assert r.regime is Regime.RANGE
        assert r.confidence == 1.0


class TestNoRuleAndThreshold:
    """Rule 6 and the confidence threshold (a confidence equal to the threshold trades)."""

    def test_no_rule(self) -> None:
        r = detect_regime(feats(), CFG)
        assert (r.regime, r.reason, r.confidence, r.direction) == (Regime.CHOP_NO_TRADE, "NO_RULE", 1.0, None)

    def test_threshold_boundary(self) -> None:
        f = feats(adx=28.0, ema20_1h=100.2, ema50_1h=100.0)
        conf = detect_regime(f, CFG).confidence
        at = detect_regime(f, cfg(confidence_threshold=conf))
        assert (at.regime, at.reason, at.confidence) == (Regime.TREND, "TREND", conf)
        over = detect_regime(f, cfg(confidence_threshold=above(conf)))
        assert (over.regime, over.reason, over.direction) == (Regime.CHOP_NO_TRADE, "LOW_CONFIDENCE", None)
        assert over.confidence == conf
        assert over.values["matched_confidence"] == conf


class TestNonFiniteFeaturesAreNotReady:
    """Issue 10 #9: a NaN (or infinite) indicator is "not ready", never a silently skipped test."""

    @pytest.mark.parametrize("field", ["adx", "atr_z", "bb_width", "rsi", "atr", "ema20_1h", "volume_z"])
    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_not_warm(self, field: str, bad: float) -> None:
        assert not feats(**{field: bad}).warm

    def test_nan_atr_z_is_warmup_not_trend(self) -> None:
        # ADX 40 with separated 1h EMAs would be TREND at high confidence; a NaN ATR_Z must not let
        # the high-volatility test be skipped.
        r = detect_regime(feats(adx=40.0, ema20_1h=103.0, atr_z=math.nan), CFG)
        assert (r.regime, r.reason) == (Regime.CHOP_NO_TRADE, "WARMUP")

    @pytest.mark.parametrize("field", ["adx", "bb_width"])
    def test_nan_adx_or_width_is_warmup(self, field: str) -> None:
        r = detect_regime(feats(**{field: math.nan}), CFG)
        assert (r.regime, r.reason) == (Regime.CHOP_NO_TRADE, "WARMUP")

"""Rule-based regime detection (BOT_SPEC §5): `Features` in, `RegimeResult` out.

This module owns the precedence, the confidence formula and the reason codes. Rules, first match
wins:

1. spread filter fails (spread_pct > universe.max_spread_pct, or negative / not finite) ⇒
   CHOP_NO_TRADE `SPREAD`; funding filter fails (|funding_rate| > universe.max_abs_funding_rate,
   or not finite) ⇒ CHOP_NO_TRADE `FUNDING`. A `None` spread or funding rate passes.
   Features not warm (any indicator undefined) ⇒ CHOP_NO_TRADE `WARMUP`.
2. ADX < chop_adx_max and BB width < chop_bb_width_max ⇒ CHOP_NO_TRADE `CHOP`.
3. ATR_Z > high_vol_atr_z ⇒ HIGH_VOL.
4. ADX > trend_adx_min and EMA20_1h ≠ EMA50_1h ⇒ TREND (LONG if EMA20_1h > EMA50_1h, else SHORT).
5. ADX < range_adx_max and range_bb_width_min ≤ BB width ≤ range_bb_width_max ⇒ RANGE.
6. otherwise CHOP_NO_TRADE `NO_RULE`.

Confidence: 1.0 for CHOP_NO_TRADE from rules 1, 2, 6 (and WARMUP); 0.5 + 0.5·strength for a matched
regime (formulas in BOT_SPEC §5). A matched regime whose confidence is below
`regime.confidence_threshold` becomes CHOP_NO_TRADE `LOW_CONFIDENCE`, direction None, with the
computed confidence kept (also in `values["matched_confidence"]`).
"""

from __future__ import annotations

import math

from futures_actor.core.config import BotConfig
from futures_actor.core.models import Features, RegimeResult
from futures_actor.core.types import Regime, Side

__all__ = [
    "REASON_CHOP",
    "REASON_FUNDING",
    "REASON_LOW_CONFIDENCE",
    "REASON_NO_RULE",
    "REASON_SPREAD",
    "REASON_WARMUP",
    "detect_regime",
]

REASON_SPREAD = "SPREAD"
REASON_FUNDING = "FUNDING"
REASON_WARMUP = "WARMUP"
REASON_CHOP = "CHOP"
REASON_NO_RULE = "NO_RULE"
REASON_LOW_CONFIDENCE = "LOW_CONFIDENCE"

_CERTAIN = 1.0
_BASE = 0.5  # a rule that barely holds scores 0.5 (BOT_SPEC §5)


def _m(x: float) -> float:
    """clamp(x, 0, 1)."""
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def _values(f: Features) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("adx", "bb_width", "atr_z", "ema20_1h", "ema50_1h", "spread_pct", "funding_rate"):
        v = getattr(f, name)
        if v is not None:
            out[name] = v
    return out


def _no_trade(reason: str, values: dict[str, float], confidence: float = _CERTAIN) -> RegimeResult:
    return RegimeResult(
        regime=Regime.CHOP_NO_TRADE, direction=None, confidence=confidence, reason=reason, values=values
    )


def detect_regime(features: Features, config: BotConfig) -> RegimeResult:
    """Classify one closed 5m candle's features (see the module docstring for the rules)."""
    rc = config.regime
    uc = config.universe
    values = _values(features)

    spread = features.spread_pct
    if spread is not None and not (math.isfinite(spread) and 0.0 <= spread <= uc.max_spread_pct):
        return _no_trade(REASON_SPREAD, values)
    funding = features.funding_rate
    if funding is not None and not (math.isfinite(funding) and abs(funding) <= uc.max_abs_funding_rate):
        return _no_trade(REASON_FUNDING, values)
    adx = features.adx
    width = features.bb_width
    atr_z = features.atr_z
    e20 = features.ema20_1h
    e50 = features.ema50_1h
    if not features.warm or adx is None or width is None or atr_z is None or e20 is None or e50 is None:
        return _no_trade(REASON_WARMUP, values)

    if adx < rc.chop_adx_max and width < rc.chop_bb_width_max:
        return _no_trade(REASON_CHOP, values)

    regime: Regime
    direction: Side | None = None
    if atr_z > rc.high_vol_atr_z:
        regime = Regime.HIGH_VOL
        confidence = _BASE + _BASE * _m((atr_z - rc.high_vol_atr_z) / rc.high_vol_full_scale_z)
    elif adx > rc.trend_adx_min and e20 != e50:
        regime = Regime.TREND
        direction = Side.LONG if e20 > e50 else Side.SHORT
        adx_strength = _m((adx - rc.trend_adx_min) / rc.trend_adx_full_scale)
        sep_strength = _m(abs(e20 - e50) / e50 / rc.trend_ema_sep_full_scale)
        confidence = _BASE + _BASE * (adx_strength + sep_strength) / 2.0
    elif adx < rc.range_adx_max and rc.range_bb_width_min <= width <= rc.range_bb_width_max:
        regime = Regime.RANGE
        adx_strength = _m((rc.range_adx_max - adx) / rc.range_adx_full_scale)
        span = rc.range_bb_width_max - rc.range_bb_width_min
        centrality = 1.0 - abs(2.0 * (width - rc.range_bb_width_min) / span - 1.0) if span > 0.0 else 1.0
        confidence = _BASE + _BASE * (adx_strength + centrality) / 2.0
    else:
        return _no_trade(REASON_NO_RULE, values)

    values["matched_confidence"] = confidence
    if confidence < rc.confidence_threshold:
        return _no_trade(REASON_LOW_CONFIDENCE, values, confidence)
    return RegimeResult(
        regime=regime, direction=direction, confidence=confidence, reason=regime.value, values=values
    )

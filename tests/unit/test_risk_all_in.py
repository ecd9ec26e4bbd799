"""Issue 10 #2 and #3: stops and targets measured from the entry order's price; all-in sizing (BOT_SPEC §6, §8)."""

from __future__ import annotations

import decimal
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from futures_actor.core.config import BotConfig
from futures_actor.core.models import Signal, TradePlan
from futures_actor.core.risk import PortfolioSnapshot, RiskContext, evaluate
from futures_actor.core.risk_state import new_risk_state
from futures_actor.core.sizing import CostRates, SizedEntry, all_in_loss_per_unit, size_entry
from futures_actor.core.types import Regime, Side, SymbolRules

NOW = int(datetime(2025, 1, 8, 12, tzinfo=UTC).timestamp() * 1000)
CANDLE = NOW - 300_000
CFG = BotConfig()
RULES = SymbolRules(
    symbol="XUSDT",
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.001"),
    min_qty=Decimal("0.001"),
    max_qty=Decimal("100000"),
    min_notional=Decimal("5"),
    min_price=Decimal("0.01"),
)
COSTS = CostRates.from_config(CFG.execution)


def sig(
    side: Side = Side.LONG, close: float = 100.0, stop_pct: float = 0.01, target_r: float | None = 1.5
) -> Signal:
    stop = close * (1 - side.sign * stop_pct)
    return Signal(
        symbol="XUSDT",
        strategy="trend_pullback",
        side=side,
        regime=Regime.TREND,
        regime_confidence=0.7,
        candle_open_time_ms=CANDLE,
        entry_price=close,
        stop_price=stop,
        stop_pct=stop_pct,
        target_price=None if target_r is None else close + side.sign * target_r * (close - stop) * side.sign,
        target_r_multiple=target_r,
        leverage=2.0,
        atr=1.0,
    )


def book(equity: float = 10_000.0) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        equity_usd=equity,
        available_balance_usd=equity,
        risk_state=new_risk_state(now_ms=NOW - 3_600_000, equity_usd=equity),
    )


def plan_of(result: object) -> TradePlan:
    assert isinstance(result, TradePlan), result
    return result


class TestStopAndTargetFromTheEntryOrder:
    """Close 100, mid 99.80: the stop sits stop_pct from the limit price, not from the close."""

    @pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
    @pytest.mark.parametrize("mid", [99.80, 100.5])
    def test_measured_from_entry(self, side: Side, mid: float) -> None:
        p = plan_of(evaluate(sig(side), book(), RiskContext(rules=RULES, now_ms=NOW, mid_price=mid), CFG))
        entry = p.entry_price
        assert entry == Decimal(str(mid))  # offset 0 ticks: the mid on the tick
        distance = (entry - p.stop_price) * side.sign
        # The stop is stop_pct from the entry order's price, rounded away by less than one tick.
        assert entry * Decimal("0.01") <= distance < entry * Decimal("0.01") + RULES.tick_size
        assert p.stop_pct == pytest.approx(float(distance / entry))
        # The target is exactly 1.5 R from the entry, R being the (rounded) stop distance.
        assert p.target_price is not None
        r_multiple = (p.target_price - entry) * side.sign / distance
        assert abs(r_multiple - Decimal("1.5")) <= RULES.tick_size / distance

    def test_breakout_has_no_target(self) -> None:
        p = plan_of(
            evaluate(sig(target_r=None), book(), RiskContext(rules=RULES, now_ms=NOW, mid_price=99.8), CFG)
        )
        assert p.target_price is None

    def test_notional_follows_the_entry_stop_not_the_close(self) -> None:
        # Old behaviour: stop 99.00 from the close ⇒ 0.8 % from 99.80 ⇒ notional ≈ 12 475.
        p = plan_of(evaluate(sig(), book(), RiskContext(rules=RULES, now_ms=NOW, mid_price=99.80), CFG))
        all_in_pct = 0.01 + COSTS.entry_fee + COSTS.entry_slippage + COSTS.exit_fee + COSTS.stop_slippage
        assert p.notional_usd == pytest.approx(100.0 / all_in_pct, rel=2e-3)
        assert p.notional_usd < 9_980.0


class TestAllInSizing:
    """risk_usd bounds the whole loss of a stopped-out trade: fees and slippage allowances included."""

    def test_default_numbers(self) -> None:
        p = plan_of(evaluate(sig(), book(), RiskContext(rules=RULES, now_ms=NOW, mid_price=100.0), CFG))
        # 1 % stop + 0.02 % maker + 0.02 % limit slippage + 0.04 % taker + 0.1 % stop slippage.
        assert p.notional_usd == pytest.approx(100.0 / 0.0118, rel=2e-3)
        assert p.risk_usd == pytest.approx(100.0)

    @pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
    def test_realized_stop_loss_within_risk(self, side: Side) -> None:
        p = plan_of(evaluate(sig(side), book(), RiskContext(rules=RULES, now_ms=NOW, mid_price=100.0), CFG))
        q, e, s = p.quantity, p.entry_price, p.stop_price
        ex = CFG.execution
        fill = e * (1 + side.sign * Decimal(repr(ex.paper_slippage_limit_pct)))
        exit_px = s * (1 - side.sign * Decimal(repr(ex.paper_slippage_stop_pct)))
        loss = (fill - exit_px) * side.sign * q + fill * q * Decimal(repr(ex.maker_fee_pct))
        loss += exit_px * q * Decimal(repr(ex.taker_fee_pct))
        assert loss <= Decimal(repr(p.risk_usd))
        assert loss > Decimal(repr(p.risk_usd)) * Decimal("0.99")  # not needlessly small


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.sampled_from([Side.LONG, Side.SHORT]),
    entry_units=st.integers(100, 10**8),
    stop_frac=st.floats(0.001, 0.2),
    risk_usd=st.floats(1.0, 1e5),
    maker=st.floats(0.0, 0.001),
    taker=st.floats(0.0, 0.001),
    es=st.floats(0.0, 0.001),
    ss=st.floats(0.0, 0.005),
)
def test_all_in_loss_never_exceeds_risk(
    side: Side,
    entry_units: int,
    stop_frac: float,
    risk_usd: float,
    maker: float,
    taker: float,
    es: float,
    ss: float,
) -> None:
    costs = CostRates(entry_fee=maker, entry_slippage=es, exit_fee=taker, stop_slippage=ss)
    entry = RULES.tick_size * entry_units
    stop = entry * (1 - side.sign * Decimal(repr(stop_frac)))
    result = size_entry(
        side=side, entry_price=entry, stop_price=stop, risk_usd=risk_usd, rules=RULES, costs=costs
    )
    if not isinstance(result, SizedEntry):
        return
    unit = all_in_loss_per_unit(side=side, entry_price=entry, stop_price=result.stop_price, costs=costs)
    risk = Decimal(repr(risk_usd))
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        assert result.loss_to_stop_usd == result.quantity * unit <= risk
        if result.quantity < RULES.max_qty:
            assert (result.quantity + RULES.step_size) * unit > risk


def test_signal_without_target_r_keeps_compatibility() -> None:
    s = msgspec.structs.replace(sig(), target_r_multiple=None, target_price=None)
    p = plan_of(evaluate(s, book(), RiskContext(rules=RULES, now_ms=NOW, mid_price=100.0), CFG))
    assert p.target_price is None

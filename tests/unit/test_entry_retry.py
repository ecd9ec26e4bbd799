"""Issue 10 #1: a retried entry is a new decision at the new price (BOT_SPEC §9 [resolved]).

Stop, target and size are recomputed from the retry's price by the risk engine, every limit is checked
again (a rejection ends the trade), and what an earlier attempt filled counts toward the retry's risk.
Property: after any sequence of fills and retries, the all-in loss to the stop ≤ risk_usd and the open
risk ≤ the cap.
"""

from __future__ import annotations

import decimal
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from futures_actor.core.config import BotConfig
from futures_actor.core.lifecycle import (
    Command,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    PlaceOrder,
    RequestRetry,
    RetryApproved,
    RetryRejected,
    TradeLifecycle,
    TtlExpired,
)
from futures_actor.core.models import RiskRejection, Signal, TradePlan
from futures_actor.core.risk import (
    Exposure,
    PortfolioSnapshot,
    RiskContext,
    evaluate,
    evaluate_retry,
    open_risk_usd,
)
from futures_actor.core.risk_state import new_risk_state
from futures_actor.core.sizing import CostRates, all_in_loss_per_unit
from futures_actor.core.types import Regime, Side, SymbolRules

NOW = int(datetime(2025, 1, 8, 12, tzinfo=UTC).timestamp() * 1000)
CANDLE = NOW - 300_000
CFG = BotConfig()
COSTS = CostRates.from_config(CFG.execution)
ETH = SymbolRules(
    symbol="ETHUSDT",
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.001"),
    min_qty=Decimal("0.001"),
    max_qty=Decimal("10000"),
    min_notional=Decimal("20"),
    min_price=Decimal("39.86"),
)
STOP_PCT = CFG.strategies.trend_pullback.stop_pct
TARGET_R = CFG.strategies.trend_pullback.target_r_multiple


def signal(side: Side = Side.LONG, price: float = 3000.0) -> Signal:
    return Signal(
        symbol="ETHUSDT",
        strategy="trend_pullback",
        side=side,
        regime=Regime.TREND,
        regime_confidence=0.7,
        candle_open_time_ms=CANDLE,
        entry_price=price,
        stop_price=price * (1 - side.sign * STOP_PCT),
        stop_pct=STOP_PCT,
        target_price=None,
        leverage=2.0,
        atr=10.0,
        target_r_multiple=TARGET_R,
    )


def book(*exposures: Exposure, equity: float = 10_000.0) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        equity_usd=equity,
        available_balance_usd=equity,
        exposures=exposures,
        risk_state=new_risk_state(now_ms=NOW - 3_600_000, equity_usd=equity),
        wallet_balance_usd=equity,
    )


def ctx(mid: float | None = None) -> RiskContext:
    return RiskContext(rules=ETH, now_ms=NOW, mid_price=mid)


def retry(
    plan: TradePlan, mid: float, portfolio: PortfolioSnapshot, filled: float = 0.0, avg: float = 0.0
) -> TradePlan | RiskRejection:
    return evaluate_retry(
        plan,
        mid=mid,
        filled_qty=filled,
        filled_avg_price=avg,
        stop_pct=STOP_PCT,
        target_r_multiple=TARGET_R,
        portfolio=portfolio,
        ctx=ctx(),
        cfg=CFG,
    )


def loss_at_stop(side: Side, fills: list[tuple[Decimal, Decimal]], stop: Decimal) -> Decimal:
    """All-in loss of the filled quantities if the stop is hit (slippage allowances, fees)."""
    with decimal.localcontext() as c:
        c.prec = 50
        return sum(
            (
                q * all_in_loss_per_unit(side=side, entry_price=p, stop_price=stop, costs=COSTS)
                for q, p in fills
            ),
            Decimal(0),
        )


class TestIssueExample:
    """Equity 10 000, ETH long at 3000 (risk_usd 100); the limit expires; the mid moves to 3045."""

    def test_retry_is_resized_and_restopped_from_the_new_price(self) -> None:
        first = evaluate(signal(), book(), ctx(3000.0), CFG)
        assert isinstance(first, TradePlan)
        second = retry(first, 3045.0, book())
        assert isinstance(second, TradePlan)
        assert second.trade_id == first.trade_id
        assert second.entry_price == Decimal("3045.00")
        assert second.stop_price == Decimal("3014.55")  # 1 % from the retry's price, not 2970
        assert second.target_price == Decimal("3090.68")  # 1.5 R from it (3090.675 → nearest tick)
        assert second.quantity < first.quantity
        # The old behaviour: the first quantity at 3045 with the stop at 2970 loses > 2 × risk_usd
        # (2.5 × with the issue's price-only sizing, 3.333 ETH).
        old = loss_at_stop(Side.LONG, [(first.quantity, Decimal("3045.00"))], first.stop_price)
        assert old > 2 * Decimal(repr(first.risk_usd))
        new = loss_at_stop(Side.LONG, [(second.quantity, second.entry_price)], second.stop_price)
        assert new <= Decimal(repr(second.risk_usd))

    def test_limits_are_checked_again(self) -> None:
        first = evaluate(signal(), book(), ctx(3000.0), CFG)
        assert isinstance(first, TradePlan)
        # Since the first decision another position took most of the open-risk budget.
        other = Exposure(
            symbol="BTCUSDT", side=Side.SHORT, quantity=2.0, entry_price=60_000.0, stop_price=60_800.0
        )
        rejected = retry(first, 3045.0, book(other))
        assert isinstance(rejected, RiskRejection)
        assert rejected.code in ("TOTAL_OPEN_RISK", "CORRELATION", "MARGIN")

    def test_a_partial_fill_counts_toward_the_retrys_risk(self) -> None:
        first = evaluate(signal(), book(), ctx(3000.0), CFG)
        assert isinstance(first, TradePlan)
        # 1.0 filled at 3000; the retry at 2970 has its stop at 2940.30, 60 below that fill.
        second = retry(first, 2970.0, book(), filled=1.0, avg=3000.0)
        assert isinstance(second, TradePlan)
        new_part = second.quantity - Decimal("1.000")
        total = loss_at_stop(
            Side.LONG,
            [(Decimal("1.000"), Decimal("3000")), (new_part, second.entry_price)],
            second.stop_price,
        )
        assert total <= Decimal(repr(second.risk_usd))
        alone = retry(first, 2970.0, book())
        assert isinstance(alone, TradePlan)
        assert Decimal(0) < new_part < alone.quantity - Decimal("1.5")
        # A fill that alone uses the whole risk at the retry's stop: the retry is refused.
        refused = retry(first, 2970.0, book(), filled=2.0, avg=3000.0)
        assert isinstance(refused, RiskRejection)
        assert refused.code == "PER_TRADE_RISK"


def _drive(lc: TradeLifecycle, cmds: list[Command], now: int) -> tuple[list[Command], int]:
    """Acknowledge every placement (the venue accepted it)."""
    out: list[Command] = []
    for c in cmds:
        if isinstance(c, PlaceOrder):
            now += 1
            out += lc.handle(OrderAccepted(cid=c.cid), now_ms=now)
    return out, now


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.sampled_from([Side.LONG, Side.SHORT]),
    move=st.floats(-0.05, 0.05),
    fill1=st.floats(0.0, 1.0),
    fill2=st.floats(0.0, 1.0),
    other_qty=st.floats(0.0, 0.05),
)
def test_loss_to_stop_and_open_risk_bounded_after_fills_and_retries(
    side: Side, move: float, fill1: float, fill2: float, other_qty: float
) -> None:
    others = (
        (
            Exposure(
                symbol="SOLUSDT",
                side=side.opposite,
                quantity=other_qty * 100,
                entry_price=150.0,
                stop_price=150.0 * (1 + side.sign * STOP_PCT),
            ),
        )
        if other_qty > 0
        else ()
    )
    portfolio = book(*others)
    corr_free = RiskContext(rules=ETH, now_ms=NOW, mid_price=3000.0)
    first = evaluate(
        signal(side),
        PortfolioSnapshot(
            **{**{f: getattr(portfolio, f) for f in portfolio.__struct_fields__}, "exposures": ()}
        ),
        corr_free,
        CFG,
    )
    assert isinstance(first, TradePlan)
    lc = TradeLifecycle(plan=first, rules=ETH, config=CFG.execution, prefix="fa", mode="PAPER_LIVE")
    now = NOW
    cmds = lc.start(now_ms=now)
    _, now = _drive(lc, cmds, now)
    entry1 = next(c for c in cmds if isinstance(c, PlaceOrder))
    fills: list[tuple[Decimal, Decimal]] = []
    q1 = (entry1.qty * Decimal(repr(fill1 * 0.99))).quantize(ETH.step_size, rounding=decimal.ROUND_DOWN)
    if q1 > 0:
        lc.handle(
            OrderFilled(
                cid=entry1.cid,
                qty=q1,
                cum_qty=q1,
                price=entry1.price or Decimal(0),
                fee=0.0,
                is_maker=True,
                ts_ms=now,
            ),
            now_ms=now + 1,
        )
        fills.append((q1, entry1.price or Decimal(0)))
    lc.handle(TtlExpired(cid=entry1.cid), now_ms=now + 30_000)
    after_cancel = lc.handle(OrderCanceled(cid=entry1.cid), now_ms=now + 30_001)
    requests = [c for c in after_cancel if isinstance(c, RequestRetry)]
    if q1 > 0:
        assert requests == []  # a partial at TTL is kept as the position, never retried
    plan = first
    if requests:
        (req,) = requests
        mid = 3000.0 * (1 + move)
        decided = retry(
            req.plan, mid, portfolio, filled=float(req.filled_qty), avg=float(req.filled_avg_price)
        )
        if isinstance(decided, RiskRejection):
            end = lc.handle(RetryRejected(code=decided.code), now_ms=now + 30_002)
            assert lc.closed
            assert not [c for c in end if isinstance(c, PlaceOrder)]
        else:
            plan = decided
            placed = lc.handle(RetryApproved(plan=decided), now_ms=now + 30_002)
            (entry2,) = [c for c in placed if isinstance(c, PlaceOrder)]
            assert entry2.price == decided.entry_price
            q2 = (entry2.qty * Decimal(repr(fill2))).quantize(ETH.step_size, rounding=decimal.ROUND_DOWN)
            if q2 > 0:
                lc.handle(OrderAccepted(cid=entry2.cid), now_ms=now + 30_003)
                lc.handle(
                    OrderFilled(
                        cid=entry2.cid,
                        qty=q2,
                        cum_qty=q2,
                        price=entry2.price or Decimal(0),
                        fee=0.0,
                        is_maker=True,
                        ts_ms=now,
                    ),
                    now_ms=now + 30_004,
                )
                fills.append((q2, entry2.price or Decimal(0)))
    held = sum((q for q, _ in fills), Decimal(0))
    assert lc.position_qty == held
    if held > 0:
        assert loss_at_stop(side, fills, lc.stop_price) <= Decimal(repr(plan.risk_usd))
        avg = sum((q * p for q, p in fills), Decimal(0)) / held
        mine = Exposure(
            symbol="ETHUSDT",
            side=side,
            quantity=float(held),
            entry_price=float(avg),
            stop_price=float(lc.stop_price),
        )
        assert open_risk_usd((*others, mine), CFG) <= 10_000.0 * CFG.risk.max_total_open_risk_pct * (1 + 1e-9)

"""The per-trade order lifecycle: entry TTL and retry, protection, trailing, exits, kill switch, unknown outcomes."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from futures_actor.core.config import ExecutionConfig
from futures_actor.core.lifecycle import (
    Alert,
    AmendStop,
    CancelOrder,
    CancelTimer,
    Command,
    EmitTradeClosed,
    Event,
    ExchangeOrder,
    ExchangePosition,
    FundingPaid,
    Kill,
    LifecycleError,
    LifecycleState,
    MidPrice,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderFound,
    OrderNotFound,
    OrderRejected,
    OrderStatusUnknown,
    Phase,
    PlaceAlgoOrder,
    PlaceOrder,
    PositionFlat,
    QueryOrder,
    ReconcileResult,
    RequestRetry,
    RetryApproved,
    RetryRejected,
    StartTimer,
    StopEntry,
    TradeLifecycle,
    TtlExpired,
    decode_state,
    encode_state,
    reconcile,
)
from futures_actor.core.models import TradePlan
from futures_actor.core.types import OrderRole, Regime, Side, SymbolRules
from futures_actor.state.log_schema import validate_trade_record

D = Decimal


def approve_retry(request: RequestRetry, h: Harness, *, entry: str, qty: str, stop: str) -> list[Command]:
    """Risk's answer to a retry request: the plan re-decided at the new price (same trade id)."""
    plan = msgspec.structs.replace(request.plan, entry_price=D(entry), quantity=D(qty), stop_price=D(stop))
    return h.ev(RetryApproved(plan=plan))


T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CFG = ExecutionConfig()
RULES = SymbolRules(
    symbol="BTCUSDT",
    tick_size=D("0.1"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
    multiplier_up=D("1.05"),
    multiplier_down=D("0.95"),
)
TRADE_ID = "1000000a-0000-4000-8000-000000000000"


def make_plan(
    *,
    side: Side = Side.LONG,
    qty: str = "0.010",
    entry: str = "100.0",
    stop: str = "98.0",
    target: str | None = "104.0",
    trade_id: str = TRADE_ID,
    symbol: str = "BTCUSDT",
) -> TradePlan:
    return TradePlan(
        trade_id=trade_id,
        symbol=symbol,
        strategy="pullback",
        side=side,
        regime=Regime.TREND,
        confidence_score=0.7,
        candle_open_time_ms=T0 - 300_000,
        created_ms=T0,
        entry_price=D(entry),
        quantity=D(qty),
        stop_price=D(stop),
        target_price=None if target is None else D(target),
        leverage=3.0,
        equity_usd=10_000.0,
        risk_pct=0.002,
        risk_usd=20.0 * float(D(qty)) / 0.010,
        stop_pct=0.02,
        notional_usd=1000.0,
        margin_used_usd=333.3,
        correlation_bucket="majors",
        bucket_corr_max=0.8,
        open_positions_count=1,
        open_risk_pct=0.002,
    )


class Harness:
    """Drives one lifecycle and keeps every command it produced, in order."""

    def __init__(self, plan: TradePlan | None = None, config: ExecutionConfig = CFG) -> None:
        self.lc = TradeLifecycle(
            plan=plan or make_plan(), rules=RULES if plan is None else _rules(plan), config=config,
            prefix="fa", mode="PAPER_LIVE",
        )  # fmt: skip
        self.now = T0
        self.log: list[Command] = []

    def start(self) -> list[Command]:
        cmds = self.lc.start(now_ms=self.now)
        self.log += cmds
        return cmds

    def ev(self, event: Event) -> list[Command]:
        self.now += 1000
        cmds = self.lc.handle(event, now_ms=self.now)
        self.log += cmds
        return cmds

    def fill(self, cid: str, cum: str, price: str, *, fee: float = 0.01) -> list[Command]:
        o = self.lc.orders[cid]
        last = D(cum) - o.filled_qty
        return self.ev(
            OrderFilled(
                cid=cid, qty=last, cum_qty=D(cum), price=D(price), fee=fee, is_maker=True, ts_ms=self.now
            )
        )

    def placed(self) -> list[PlaceOrder | PlaceAlgoOrder]:
        return [c for c in self.log if isinstance(c, PlaceOrder | PlaceAlgoOrder)]

    def record(self) -> dict[str, object]:
        closed = [c for c in self.log if isinstance(c, EmitTradeClosed)]
        assert len(closed) == 1, closed
        rec = closed[0].record
        assert validate_trade_record(rec) == []
        return rec

    def open_long(self) -> None:
        """Entry filled in full, stop S1 and target T1 accepted."""
        (entry, _timer) = self.start()
        assert isinstance(entry, PlaceOrder)
        self.ev(OrderAccepted(cid=entry.cid))
        cmds = self.fill(entry.cid, "0.010", "100.0")
        for c in cmds:
            if isinstance(c, PlaceOrder | PlaceAlgoOrder):
                self.ev(OrderAccepted(cid=c.cid))


def _rules(plan: TradePlan) -> SymbolRules:
    return msgspec.structs.replace(RULES, symbol=plan.symbol)


def only(cmds: list[Command], kind: type) -> list:  # type: ignore[type-arg]
    return [c for c in cmds if isinstance(c, kind)]


def cid(role: str, attempt: int, trade_id: str = TRADE_ID) -> str:
    return f"fa-{trade_id.replace('-', '')[:24]}-{role}{attempt}"


class TestEntryTimeout:
    """AC5: TTL → cancel → exactly one re-priced retry with a new id → cancel → TIMEOUT, never a market order."""

    def test_two_expiries_end_in_timeout_without_market_order(self) -> None:
        h = Harness()
        first = h.start()
        assert first == [
            PlaceOrder(
                trade_id=TRADE_ID, symbol="BTCUSDT", cid=cid("E", 1), role=OrderRole.ENTRY, side="BUY",
                order_type="LIMIT", price=D("100.0"), qty=D("0.010"), reduce_only=False, time_in_force="GTC",
            ),
            StartTimer(cid=cid("E", 1), seconds=30.0),
        ]  # fmt: skip
        h.ev(OrderAccepted(cid=cid("E", 1)))
        h.ev(MidPrice(mid=D("101.07")))
        assert h.ev(TtlExpired(cid=cid("E", 1))) == [
            CancelOrder(symbol="BTCUSDT", cid=cid("E", 1), is_algo=False),
            CancelTimer(cid=cid("E", 1)),
        ]
        asked = h.ev(OrderCanceled(cid=cid("E", 1)))
        assert only(asked, PlaceOrder) == []  # a retry is a new decision: risk is asked first
        (request,) = only(asked, RequestRetry)
        assert (request.mid, request.filled_qty) == (D("101.07"), D(0))
        # Risk re-priced it from the mid (passive side: a buy rounds down) and re-sized it.
        retry = approve_retry(request, h, entry="101.0", qty="0.009", stop="99.0")
        (place,) = only(retry, PlaceOrder)
        assert place.cid == cid("E", 2)
        assert place.qty == D("0.009")
        assert h.lc.stop_price == D("99.0")
        assert place.order_type == "LIMIT"
        assert place.price == D("101.0")  # re-priced from the mid, passive side (a buy rounds down)
        assert StartTimer(cid=cid("E", 2), seconds=30.0) in retry
        h.ev(OrderAccepted(cid=cid("E", 2)))
        assert h.ev(TtlExpired(cid=cid("E", 1))) == []  # a stale timer of attempt 1 does nothing
        assert only(h.ev(TtlExpired(cid=cid("E", 2))), CancelOrder) == [
            CancelOrder(symbol="BTCUSDT", cid=cid("E", 2), is_algo=False)
        ]
        end = h.ev(OrderCanceled(cid=cid("E", 2)))
        assert only(end, PlaceOrder) == []
        assert [p.cid for p in h.placed()] == [cid("E", 1), cid("E", 2)]
        assert all(p.order_type == "LIMIT" for p in only(h.log, PlaceOrder))
        rec = h.record()
        assert rec["result"]["reason"] == "TIMEOUT"  # type: ignore[index]
        assert rec["entry_order"] == {  # type: ignore[comparison-overlap]
            "client_order_id": cid("E", 2),
            "type": "LIMIT",
            "requested_price": 101.0,
            "filled_avg_price": 0.0,
            "filled_qty": 0.0,
            "status": "CANCELED",
        }
        assert h.lc.phase is Phase.CLOSED

    def test_retry_count_zero_means_no_retry(self) -> None:
        h = Harness(config=msgspec.structs.replace(CFG, limit_retry_count=0))
        h.start()
        h.ev(TtlExpired(cid=cid("E", 1)))
        h.ev(OrderCanceled(cid=cid("E", 1)))
        assert len(h.placed()) == 1
        assert h.record()["result"]["reason"] == "TIMEOUT"  # type: ignore[index]

    def test_short_retry_is_priced_above_the_mid_with_offset(self) -> None:
        h = Harness(plan=make_plan(side=Side.SHORT, stop="102.0", target="96.0"),
                    config=msgspec.structs.replace(CFG, entry_offset_ticks=2))  # fmt: skip
        h.start()
        h.ev(MidPrice(mid=D("99.93")))
        h.ev(TtlExpired(cid=cid("E", 1)))
        (request,) = only(h.ev(OrderCanceled(cid=cid("E", 1))), RequestRetry)
        assert request.mid == D("99.93")
        (place,) = only(approve_retry(request, h, entry="100.2", qty="0.010", stop="101.2"), PlaceOrder)
        assert place.side == "SELL"
        assert place.price == D("100.2")

    def test_rejected_retry_ends_the_trade_with_timeout(self) -> None:
        h = Harness()
        h.start()
        h.ev(TtlExpired(cid=cid("E", 1)))
        (request,) = only(h.ev(OrderCanceled(cid=cid("E", 1))), RequestRetry)
        assert h.lc.retry_pending
        end = h.ev(RetryRejected(code="TOTAL_OPEN_RISK", message="open risk"))
        assert only(end, PlaceOrder) == []
        assert any(isinstance(c, Alert) and c.code == "RETRY_REJECTED" for c in end)
        assert h.lc.closed
        assert h.record()["result"]["reason"] == "TIMEOUT"  # type: ignore[index]
        # A late approval after the end changes nothing.
        assert h.ev(RetryApproved(plan=request.plan)) == []


class TestPartialFillAtTtl:
    """AC6: the rest is cancelled, the partial kept with stop and target for the filled quantity."""

    def test_partial_is_kept_protected_and_managed_to_exit(self) -> None:
        h = Harness()
        h.start()
        h.ev(OrderAccepted(cid=cid("E", 1)))
        cmds = h.fill(cid("E", 1), "0.004", "100.0")
        stop, target = only(cmds, PlaceAlgoOrder)[0], only(cmds, PlaceOrder)[0]
        assert cmds.index(stop) < cmds.index(target)  # stop first, then the take-profit
        assert stop == PlaceAlgoOrder(
            trade_id=TRADE_ID, symbol="BTCUSDT", cid=cid("S", 1), role=OrderRole.STOP, side="SELL",
            trigger_price=D("98.0"), qty=D("0.004"),
        )  # fmt: skip
        assert stop.reduce_only
        assert stop.working_type == "MARK_PRICE"
        assert stop.order_type == "STOP_MARKET"
        assert (target.cid, target.order_type, target.price, target.qty, target.reduce_only) == (
            cid("T", 1), "LIMIT", D("104.0"), D("0.004"), True,
        )  # fmt: skip
        h.ev(OrderAccepted(cid=stop.cid))
        h.ev(OrderAccepted(cid=target.cid))
        assert only(h.ev(TtlExpired(cid=cid("E", 1))), CancelOrder) == [
            CancelOrder(symbol="BTCUSDT", cid=cid("E", 1), is_algo=False)
        ]
        after = h.ev(OrderCanceled(cid=cid("E", 1)))
        assert only(after, PlaceOrder) == []
        assert only(after, PlaceAlgoOrder) == []
        assert h.lc.phase is Phase.OPEN
        assert h.lc.position_qty == D("0.004")
        end = h.fill(target.cid, "0.004", "104.0")
        assert CancelOrder(symbol="BTCUSDT", cid=stop.cid, is_algo=True) in end
        rec = h.record()
        assert rec["entry_order"]["status"] == "PARTIALLY_FILLED"  # type: ignore[index]
        assert rec["entry_order"]["filled_qty"] == 0.004  # type: ignore[index]
        assert rec["result"]["reason"] == "TP"  # type: ignore[index]
        assert rec["result"]["exit_price"] == 104.0  # type: ignore[index]
        assert rec["result"]["pnl_usd"] == pytest.approx(4.0 * 0.004 - 0.02)  # type: ignore[index]

    def test_later_fills_resize_new_first_then_cancel_old(self) -> None:
        h = Harness()
        h.start()
        h.fill(cid("E", 1), "0.004", "100.0")
        h.ev(OrderAccepted(cid=cid("S", 1)))
        h.ev(OrderAccepted(cid=cid("T", 1)))
        cmds = h.fill(cid("E", 1), "0.010", "100.0")
        assert [(type(c).__name__, getattr(c, "cid", None)) for c in cmds] == [
            ("CancelTimer", cid("E", 1)),
            ("PlaceAlgoOrder", cid("S", 2)),
            ("PlaceOrder", cid("T", 2)),
        ]  # no cancel before the new versions are accepted
        assert only(cmds, PlaceAlgoOrder)[0].qty == D("0.010")
        assert h.lc.phase is Phase.OPEN
        assert h.ev(OrderAccepted(cid=cid("S", 2))) == [
            CancelOrder(symbol="BTCUSDT", cid=cid("S", 1), is_algo=True)
        ]
        assert h.ev(OrderAccepted(cid=cid("T", 2))) == [
            CancelOrder(symbol="BTCUSDT", cid=cid("T", 1), is_algo=False)
        ]

    def test_duplicated_fill_event_is_counted_once(self) -> None:
        h = Harness()
        h.start()
        h.fill(cid("E", 1), "0.004", "100.0")
        again = OrderFilled(cid=cid("E", 1), qty=D("0.004"), cum_qty=D("0.004"), price=D("100.0"), fee=0.01,
                            is_maker=True, ts_ms=h.now)  # fmt: skip
        assert h.ev(again) == []
        assert h.lc.position_qty == D("0.004")


class TestTrailing:
    """Trailing never loosens; the new stop is placed first and the old one cancelled once it is accepted."""

    def test_tighten_then_stop_hit_is_trail(self) -> None:
        h = Harness()
        h.open_long()
        loosen = h.ev(AmendStop(new_price=D("97.0")))
        assert only(loosen, PlaceAlgoOrder) == []
        assert only(loosen, Alert)[0].code == "STOP_LOOSEN_REFUSED"
        same = h.ev(AmendStop(new_price=D("98.0")))
        assert only(same, PlaceAlgoOrder) == []
        move = h.ev(AmendStop(new_price=D("99.05")))
        (new_stop,) = only(move, PlaceAlgoOrder)
        assert new_stop.cid == cid("S", 2)
        assert new_stop.trigger_price == D("99.0")
        assert only(move, CancelOrder) == []
        assert h.ev(OrderAccepted(cid=new_stop.cid)) == [
            CancelOrder(symbol="BTCUSDT", cid=cid("S", 1), is_algo=True)
        ]
        h.ev(OrderCanceled(cid=cid("S", 1)))
        end = h.fill(new_stop.cid, "0.010", "98.9", fee=0.04)
        assert CancelOrder(symbol="BTCUSDT", cid=cid("T", 1), is_algo=False) in end  # sibling cancelled
        rec = h.record()
        assert rec["result"]["reason"] == "TRAIL"  # type: ignore[index]
        assert rec["result"]["pnl_usd"] == pytest.approx(-1.1 * 0.010 - 0.05)  # type: ignore[index]

    def test_amend_while_replacement_in_flight_waits_then_coalesces(self) -> None:
        h = Harness()
        h.open_long()
        h.ev(AmendStop(new_price=D("99.0")))
        assert only(h.ev(AmendStop(new_price=D("99.5"))), PlaceAlgoOrder) == []  # S2 not yet accepted
        cmds = h.ev(OrderAccepted(cid=cid("S", 2)))
        assert [(type(c).__name__, c.cid) for c in cmds if isinstance(c, PlaceAlgoOrder | CancelOrder)] == [
            ("PlaceAlgoOrder", cid("S", 3))
        ]
        cmds = h.ev(OrderAccepted(cid=cid("S", 3)))
        assert {c.cid for c in only(cmds, CancelOrder)} == {cid("S", 1), cid("S", 2)}

    def test_short_never_loosens_upwards(self) -> None:
        h = Harness(plan=make_plan(side=Side.SHORT, stop="102.0", target="96.0"))
        h.open_long()
        assert only(h.ev(AmendStop(new_price=D("102.5"))), PlaceAlgoOrder) == []
        (s2,) = only(h.ev(AmendStop(new_price=D("101.01"))), PlaceAlgoOrder)
        assert s2.trigger_price == D("101.1")
        assert s2.side == "BUY"

    def test_failed_move_keeps_old_stop(self) -> None:
        h = Harness()
        h.open_long()
        h.ev(AmendStop(new_price=D("99.0")))
        out = h.ev(OrderRejected(cid=cid("S", 2), code=-2021, message="Order would immediately trigger."))
        assert only(out, CancelOrder) == []
        assert only(out, PlaceAlgoOrder) == []
        assert h.lc.stop_price == D("98.0")


class TestExits:
    """Exit fills cancel the sibling; a plain stop hit is SL."""

    def test_stop_hit_cancels_target_reason_sl(self) -> None:
        h = Harness()
        h.open_long()
        h.ev(FundingPaid(amount=-0.3))
        end = h.fill(cid("S", 1), "0.010", "97.9", fee=0.04)
        assert only(end, CancelOrder) == [CancelOrder(symbol="BTCUSDT", cid=cid("T", 1), is_algo=False)]
        rec = h.record()
        assert rec["result"]["reason"] == "SL"  # type: ignore[index]
        pnl = -2.1 * 0.010 - 0.05 - 0.3
        assert rec["result"]["pnl_usd"] == pytest.approx(pnl)  # type: ignore[index]
        assert rec["result"]["pnl_r_multiple"] == pytest.approx(pnl / 20.0)  # type: ignore[index]
        assert rec["costs"] == {"fees_usd": pytest.approx(0.05), "funding_usd": -0.3, "slippage_pct": 0.0}

    def test_target_hit_cancels_stop(self) -> None:
        h = Harness()
        h.open_long()
        end = h.fill(cid("T", 1), "0.010", "104.0")
        assert only(end, CancelOrder) == [CancelOrder(symbol="BTCUSDT", cid=cid("S", 1), is_algo=True)]
        assert h.record()["result"]["reason"] == "TP"  # type: ignore[index]

    def test_exchange_flat_is_manual(self) -> None:
        h = Harness()
        h.open_long()
        end = h.ev(PositionFlat(price=D("101.0")))
        assert {c.cid for c in only(end, CancelOrder)} == {cid("S", 1), cid("T", 1)}
        rec = h.record()
        assert rec["result"]["reason"] == "MANUAL"
        assert rec["result"]["exit_price"] == 101.0

    def test_slippage_is_adverse_positive(self) -> None:
        h = Harness()
        h.start()
        h.fill(cid("E", 1), "0.010", "100.5")
        h.ev(PositionFlat(price=D("100.5")))
        assert h.record()["costs"]["slippage_pct"] == pytest.approx(0.005)  # type: ignore[index]

    def test_flat_report_without_position_is_not_a_close(self) -> None:
        h = Harness()
        h.start()
        h.ev(OrderAccepted(cid=cid("E", 1)))
        assert h.ev(PositionFlat(price=D("100.0"))) == []
        assert h.lc.phase is Phase.ENTRY_WORKING

    def test_partially_filled_stop_is_not_replaced(self) -> None:
        h = Harness(plan=make_plan(target=None))
        h.open_long()
        assert h.fill(cid("S", 1), "0.004", "97.9") == []  # the triggered stop still covers the rest
        end = h.fill(cid("S", 1), "0.010", "97.8")
        assert only(end, EmitTradeClosed)
        assert h.record()["result"]["exit_price"] == pytest.approx(97.84)

    def test_stop_hit_while_entry_rests_cancels_the_entry(self) -> None:
        h = Harness(plan=make_plan(target=None))
        h.start()
        h.ev(OrderAccepted(cid=cid("E", 1)))
        h.fill(cid("E", 1), "0.004", "100.0")
        h.ev(OrderAccepted(cid=cid("S", 1)))
        out = h.fill(cid("S", 1), "0.004", "97.9")
        assert CancelOrder(symbol="BTCUSDT", cid=cid("E", 1), is_algo=False) in out
        end = h.ev(OrderCanceled(cid=cid("E", 1)))
        assert only(end, PlaceOrder) == []  # never re-entered
        assert h.record()["result"]["reason"] == "SL"


class TestOrphanProtection:
    """A stop that cannot be placed is retried once from the plan, then the position is closed at MARKET."""

    def test_two_rejections_close_with_reduce_only_market(self) -> None:
        h = Harness()
        h.start()
        h.fill(cid("E", 1), "0.010", "100.0")
        h.ev(OrderAccepted(cid=cid("T", 1)))
        retry = h.ev(OrderRejected(cid=cid("S", 1), code=-2021, message="Order would immediately trigger."))
        (s2,) = only(retry, PlaceAlgoOrder)
        assert s2.cid == cid("S", 2)
        assert s2.trigger_price == D("98.0")
        close = h.ev(OrderRejected(cid=cid("S", 2), code=-2021, message="Order would immediately trigger."))
        (market,) = only(close, PlaceOrder)
        assert (market.cid, market.order_type, market.reduce_only, market.qty, market.side) == (
            cid("X", 1), "MARKET", True, D("0.010"), "SELL",
        )  # fmt: skip
        assert CancelOrder(symbol="BTCUSDT", cid=cid("T", 1), is_algo=False) in close
        assert only(close, Alert)
        assert h.lc.phase is Phase.EXITING
        h.fill(market.cid, "0.010", "97.5")
        # The bot's emergency flattening (BOT_SPEC §9), not a stop exit: never recorded SL (issue 9 #15).
        assert h.record()["result"]["reason"] == "KILL_SWITCH"  # type: ignore[index]
        assert len(only(h.log, PlaceAlgoOrder)) == 2


class TestKillSwitch:
    """AC10: cancel entries and targets, reduce-only MARKET close, then cancel the stops; KILL_SWITCH."""

    def test_kill_two_positions(self) -> None:
        hs = [
            Harness(plan=make_plan(trade_id="1000000a-0000-4000-8000-000000000000", symbol="BTCUSDT")),
            Harness(plan=make_plan(trade_id="2000000a-0000-4000-8000-000000000000", symbol="ETHUSDT",
                                   side=Side.SHORT, stop="102.0", target="96.0")),
        ]  # fmt: skip
        for h in hs:
            h.open_long()
            tid = h.lc.trade_id
            cmds = h.ev(Kill())
            assert [(type(c).__name__, c.cid) for c in cmds if not isinstance(c, Alert)] == [
                ("CancelOrder", cid("T", 1, tid)),
                ("PlaceOrder", cid("K", 1, tid)),
            ]
            (market,) = only(cmds, PlaceOrder)
            assert market.order_type == "MARKET"
            assert market.reduce_only
            assert market.qty == D("0.010")
            assert market.side == h.lc.side.closing_order_side
            h.ev(OrderCanceled(cid=cid("T", 1, tid)))
            end = h.fill(market.cid, "0.010", "100.0", fee=0.04)
            assert only(end, CancelOrder) == [
                CancelOrder(symbol=h.lc.symbol, cid=cid("S", 1, tid), is_algo=True)
            ]
            assert h.record()["result"]["reason"] == "KILL_SWITCH"  # type: ignore[index]

    def test_percent_price_falls_back_to_ioc_at_band_edge_then_alerts(self) -> None:
        cfg = msgspec.structs.replace(CFG, kill_switch_max_attempts=3)
        h = Harness(config=cfg)
        h.open_long()
        h.ev(MidPrice(mid=D("100.0"), mark=D("100.03")))
        h.ev(Kill())
        ioc = only(h.ev(OrderRejected(cid=cid("K", 1), code=-4131, message="PERCENT_PRICE")), PlaceOrder)
        assert [(p.cid, p.order_type, p.time_in_force, p.price, p.reduce_only) for p in ioc] == [
            (cid("K", 2), "LIMIT", "IOC", D("95.1"), True)  # 100.03 x 0.95 = 95.0285, rounded up
        ]
        again = only(h.ev(OrderExpired(cid=cid("K", 2))), PlaceOrder)
        assert [(p.cid, p.order_type) for p in again] == [(cid("K", 3), "MARKET")]
        last = h.ev(OrderRejected(cid=cid("K", 3), code=-1001, message="disconnected"))
        assert only(last, PlaceOrder) == []
        assert [a.code for a in only(last, Alert)] == [
            "CLOSE_REJECTED",
            "NOT_FLAT",
        ]
        assert h.lc.phase is Phase.KILLING
        assert not only(h.log, EmitTradeClosed)

    def test_kill_before_fill_cancels_entry_and_closes_without_position(self) -> None:
        h = Harness()
        h.start()
        h.ev(OrderAccepted(cid=cid("E", 1)))
        cmds = h.ev(Kill())
        assert only(cmds, CancelOrder) == [CancelOrder(symbol="BTCUSDT", cid=cid("E", 1), is_algo=False)]
        assert only(cmds, PlaceOrder) == []
        h.ev(OrderCanceled(cid=cid("E", 1)))
        rec = h.record()
        assert rec["result"]["reason"] == "KILL_SWITCH"
        assert rec["entry_order"]["filled_qty"] == 0.0
        assert len(h.placed()) == 1  # no retry after a kill

    def test_fill_racing_the_kill_is_closed_too(self) -> None:
        h = Harness()
        h.start()
        h.fill(cid("E", 1), "0.004", "100.0")
        cmds = h.ev(Kill())
        (k1,) = only(cmds, PlaceOrder)
        assert k1.qty == D("0.004")
        h.fill(cid("E", 1), "0.006", "100.0")  # arrives before the entry cancel
        h.ev(OrderCanceled(cid=cid("E", 1)))
        more = h.fill(k1.cid, "0.004", "99.0")
        (k2,) = only(more, PlaceOrder)
        assert k2.cid == cid("K", 2)
        assert k2.qty == D("0.002")
        h.fill(k2.cid, "0.002", "99.0")
        assert h.record()["entry_order"]["filled_qty"] == 0.006  # type: ignore[index]


class TestUnknownOutcome:
    """AC12: an unknown placement outcome is resolved by querying the client id, never by re-sending it."""

    def test_timeout_then_found_is_not_resent(self) -> None:
        h = Harness()
        h.start()
        assert h.ev(OrderStatusUnknown(cid=cid("E", 1))) == [
            QueryOrder(symbol="BTCUSDT", cid=cid("E", 1), is_algo=False)
        ]
        assert h.ev(OrderStatusUnknown(cid=cid("E", 1))) == []  # one query in flight is enough
        assert h.ev(TtlExpired(cid=cid("E", 1))) == []  # deferred until the outcome is known
        cmds = h.ev(OrderFound(cid=cid("E", 1), status="NEW"))
        assert only(cmds, CancelOrder) == [CancelOrder(symbol="BTCUSDT", cid=cid("E", 1), is_algo=False)]
        assert [p.cid for p in h.placed()] == [cid("E", 1)]

    def test_duplicate_id_reject_means_the_order_exists(self) -> None:
        h = Harness()
        h.start()
        cmds = h.ev(OrderRejected(cid=cid("E", 1), code=-4116, message="ClientOrderId is duplicated."))
        assert cmds == [QueryOrder(symbol="BTCUSDT", cid=cid("E", 1), is_algo=False)]
        cmds = h.ev(
            OrderFound(cid=cid("E", 1), status="FILLED", executed_qty=D("0.010"), avg_price=D("99.9"))
        )
        assert [p.cid for p in only(cmds, PlaceAlgoOrder)] == [cid("S", 1)]
        assert h.lc.position_qty == D("0.010")
        assert h.lc.phase is Phase.OPEN

    def test_unknown_stop_blocks_new_attempt_until_not_found(self) -> None:
        h = Harness()
        h.start()
        h.fill(cid("E", 1), "0.010", "100.0")
        assert h.ev(OrderStatusUnknown(cid=cid("S", 1))) == [
            QueryOrder(symbol="BTCUSDT", cid=cid("S", 1), is_algo=True)
        ]
        assert only(h.ev(AmendStop(new_price=D("99.0"))), PlaceAlgoOrder) == []
        (s2,) = only(h.ev(OrderNotFound(cid=cid("S", 1))), PlaceAlgoOrder)
        assert s2.cid == cid("S", 2)
        assert s2.trigger_price == D("99.0")

    def test_every_placed_cid_is_unique(self) -> None:
        h = Harness()
        h.start()
        h.ev(TtlExpired(cid=cid("E", 1)))
        (request,) = only(h.ev(OrderCanceled(cid=cid("E", 1))), RequestRetry)
        approve_retry(request, h, entry="100.0", qty="0.010", stop="98.0")
        h.fill(cid("E", 2), "0.005", "100.0")
        for k in range(3):
            h.ev(OrderAccepted(cid=cid("S", k + 1)))
            h.ev(AmendStop(new_price=D("98.5") + k))
        cids = [p.cid for p in h.placed()]
        assert len(cids) == len(set(cids)) >= 5


class TestSnapshot:
    """The lifecycle survives a restart: snapshot, encode, decode and resume with the same behaviour."""

    def test_resume_from_snapshot_behaves_identically(self) -> None:
        h = Harness()
        h.start()
        h.fill(cid("E", 1), "0.004", "100.0")
        h.ev(OrderAccepted(cid=cid("S", 1)))
        state = decode_state(encode_state(h.lc.to_state()))
        twin = TradeLifecycle.from_state(state, config=CFG)
        ev = OrderFilled(cid=cid("E", 1), qty=D("0.006"), cum_qty=D("0.010"), price=D("100.0"), fee=0.0,
                         is_maker=True, ts_ms=h.now)  # fmt: skip
        assert twin.handle(ev, now_ms=h.now) == h.lc.handle(ev, now_ms=h.now)
        assert twin.to_state() == h.lc.to_state()

    def test_corrupt_snapshot_is_a_typed_error(self) -> None:
        with pytest.raises(LifecycleError, match="LifecycleState"):
            decode_state(b'{"plan": 3}')

    def test_plan_symbol_must_match_rules(self) -> None:
        with pytest.raises(LifecycleError, match=r"rules\.symbol"):
            TradeLifecycle(
                plan=make_plan(symbol="ETHUSDT"), rules=RULES, config=CFG, prefix="fa", mode="LIVE"
            )


# ------------------------------------------------------------------------------------------ reconcile

STOP_PCT = {Side.LONG: 0.02, Side.SHORT: 0.02}
ALL_RULES = {
    s: msgspec.structs.replace(RULES, symbol=s) for s in ("BTCUSDT", "ETHUSDT", "DOGEUSDT", "XRPUSDT")
}


def ex_order(
    o_cid: str, symbol: str, *, is_algo: bool = False, qty: str = "0.010", price: str = "100.0"
) -> ExchangeOrder:
    return ExchangeOrder(symbol=symbol, cid=o_cid, is_algo=is_algo, side="SELL", order_type="LIMIT",
                         qty=D(qty), price=D(price))  # fmt: skip


class FakeExchange:
    """Applies reconcile's commands to an open-order book and feeds the results back to the lifecycles."""

    def __init__(self, orders: list[ExchangeOrder], positions: list[ExchangePosition]) -> None:
        self.orders = {o.cid: o for o in orders}
        self.positions = positions
        self.sent: list[Command] = []

    def apply(self, result: ReconcileResult) -> list[LifecycleState]:
        lcs = [TradeLifecycle.from_state(s, config=CFG) for s in result.lifecycles]
        queue = list(result.commands)
        while queue:
            cmd = queue.pop(0)
            self.sent.append(cmd)
            owner = next((lc for lc in lcs if getattr(cmd, "cid", None) in lc.orders), None)
            event: Event | None = None
            match cmd:
                case PlaceAlgoOrder():
                    self.orders[cmd.cid] = ExchangeOrder(symbol=cmd.symbol, cid=cmd.cid, is_algo=True, side=cmd.side,
                                                         order_type=cmd.order_type, qty=cmd.qty,
                                                         price=cmd.trigger_price)  # fmt: skip
                    event = OrderAccepted(cid=cmd.cid)
                case PlaceOrder():
                    self.orders[cmd.cid] = ExchangeOrder(symbol=cmd.symbol, cid=cmd.cid, is_algo=False, side=cmd.side,
                                                         order_type=cmd.order_type, qty=cmd.qty, price=cmd.price)  # fmt: skip
                    event = OrderAccepted(cid=cmd.cid)
                case CancelOrder():
                    self.orders.pop(cmd.cid, None)
                    event = OrderCanceled(cid=cmd.cid)
                case QueryOrder():
                    event = (
                        OrderFound(cid=cmd.cid, status="NEW")
                        if cmd.cid in self.orders
                        else OrderNotFound(cid=cmd.cid)
                    )
                case _:
                    pass
            if owner is not None and event is not None:
                queue += owner.handle(event, now_ms=T0 + 60_000)
        return [lc.to_state() for lc in lcs]


def run_reconcile(states: list[LifecycleState], ex: FakeExchange) -> ReconcileResult:
    return reconcile(lifecycles=states, open_orders=list(ex.orders.values()), positions=ex.positions, prefix="fa",
                     stop_pct=STOP_PCT, rules=ALL_RULES, config=CFG, mode="PAPER_LIVE", now_ms=T0 + 60_000)  # fmt: skip


class TestReconcile:
    """Start-up reconciliation with the exchange as the source of truth; idempotent."""

    def test_full_picture_and_idempotence(self) -> None:
        a = Harness(plan=make_plan(trade_id="a000000a-0000-4000-8000-000000000000", symbol="BTCUSDT"))
        a.open_long()  # S1 + T1 working in our books
        b = Harness(plan=make_plan(trade_id="b000000a-0000-4000-8000-000000000000", symbol="ETHUSDT"))
        b.start()
        b.ev(OrderAccepted(cid=cid("E", 1, b.lc.trade_id)))
        orphan = cid("S", 3, "c000000a-0000-4000-8000-000000000000")
        ex = FakeExchange(
            orders=[
                ex_order(
                    cid("T", 1, a.lc.trade_id), "BTCUSDT", price="104.0"
                ),  # S1 is gone from the exchange
                ex_order(cid("E", 1, b.lc.trade_id), "ETHUSDT"),
                ex_order(orphan, "BTCUSDT", is_algo=True),
                ex_order("web_abc123", "XRPUSDT"),
            ],
            positions=[
                ExchangePosition(symbol="BTCUSDT", side=Side.LONG, qty=D("0.010"), entry_price=D("100.0")),
                ExchangePosition(symbol="XRPUSDT", side=Side.SHORT, qty=D("50"), entry_price=D("0.5")),
                ExchangePosition(symbol="DOGEUSDT", side=Side.LONG, qty=D("100"), entry_price=D("0.25")),
            ],
        )
        first = run_reconcile([a.lc.to_state(), b.lc.to_state()], ex)
        kinds = [
            (type(c).__name__, getattr(c, "cid", None)) for c in first.commands if not isinstance(c, Alert)
        ]
        assert ("CancelOrder", orphan) in kinds
        assert ("QueryOrder", cid("S", 1, a.lc.trade_id)) in kinds
        assert ("CancelOrder", cid("E", 1, b.lc.trade_id)) in kinds
        assert all(c.cid != "web_abc123" for c in first.commands if isinstance(c, CancelOrder))
        assert [o.cid for o in first.foreign_orders] == ["web_abc123"]
        # A foreign order on the symbol no longer keeps its position unprotected (issue 9 #2): adopted.
        assert first.foreign_positions == []
        assert len(first.adopted) == 2
        assert first.next_adoption_seq == 3
        (doge_stop,) = [c for c in first.commands if isinstance(c, PlaceAlgoOrder) and c.symbol == "DOGEUSDT"]
        adopted_id = doge_stop.trade_id
        (xrp_stop,) = [c for c in first.commands if isinstance(c, PlaceAlgoOrder) and c.symbol == "XRPUSDT"]
        assert (xrp_stop.side, xrp_stop.qty) == ("BUY", D("50"))
        assert doge_stop.symbol == "DOGEUSDT"
        assert doge_stop.cid == cid("S", 1, adopted_id)
        assert doge_stop.trigger_price == D("0.2")  # 0.25 x 0.98 = 0.245, rounded away (down) to the 0.1 tick
        assert doge_stop.qty == D("100")
        assert "ADOPTED" in [c.code for c in first.commands if isinstance(c, Alert)]

        states = ex.apply(first)
        # Applying: S1 not found ⇒ S2 placed; stale entry cancelled ⇒ TIMEOUT record, no retry.
        assert cid("S", 2, a.lc.trade_id) in ex.orders
        assert cid("E", 2, b.lc.trade_id) not in {getattr(c, "cid", None) for c in ex.sent}
        closed = [c for c in ex.sent if isinstance(c, EmitTradeClosed)]
        assert [c.record["result"]["reason"] for c in closed] == ["TIMEOUT"]

        second = run_reconcile(states, ex)
        assert second.commands == []
        assert second.adopted == []
        placed = [c.cid for c in ex.sent if isinstance(c, PlaceOrder | PlaceAlgoOrder)]
        assert len(placed) == len(set(placed))

    def test_exchange_flat_closes_trade_and_cancels_its_exit_orders(self) -> None:
        a = Harness()
        a.open_long()
        ex = FakeExchange(
            orders=[ex_order(cid("S", 1), "BTCUSDT", is_algo=True), ex_order(cid("T", 1), "BTCUSDT")],
            positions=[],
        )
        first = run_reconcile([a.lc.to_state()], ex)
        assert {c.cid for c in first.commands if isinstance(c, CancelOrder)} == {cid("S", 1), cid("T", 1)}
        (closed,) = [c for c in first.commands if isinstance(c, EmitTradeClosed)]
        assert closed.record["result"]["reason"] == "MANUAL"
        states = ex.apply(first)
        assert ex.orders == {}
        assert run_reconcile(states, ex).commands == []

    def test_leftover_order_of_a_closed_trade_is_cancelled(self) -> None:
        a = Harness()
        a.open_long()
        a.fill(cid("T", 1), "0.010", "104.0")
        ex = FakeExchange(orders=[ex_order(cid("S", 1), "BTCUSDT", is_algo=True)], positions=[])
        first = run_reconcile([a.lc.to_state()], ex)
        assert first.commands == [CancelOrder(symbol="BTCUSDT", cid=cid("S", 1), is_algo=True)]

    def test_unknown_closing_order_is_queried_not_resent(self) -> None:
        a = Harness()
        a.start()
        a.fill(cid("E", 1), "0.010", "100.0")
        a.ev(OrderRejected(cid=cid("S", 1), code=-2021, message="would trigger"))
        a.ev(OrderRejected(cid=cid("S", 2), code=-1001, message="x"))  # now EXITING with X1 in flight
        ex = FakeExchange(orders=[], positions=[
            ExchangePosition(symbol="BTCUSDT", side=Side.LONG, qty=D("0.010"), entry_price=D("100.0"))])  # fmt: skip
        first = run_reconcile([a.lc.to_state()], ex)
        assert [(type(c).__name__, getattr(c, "cid", None)) for c in first.commands] == [
            ("QueryOrder", cid("X", 1)),  # T1 had a cancel requested: gone means cancelled
        ]
        found = OrderFound(cid=cid("X", 1), status="FILLED", executed_qty=D("0.010"), avg_price=D("97.0"))
        lc = TradeLifecycle.from_state(first.lifecycles[0], config=CFG)
        (closed,) = [c for c in lc.handle(found, now_ms=T0 + 61_000) if isinstance(c, EmitTradeClosed)]
        assert closed.record["result"]["exit_price"] == 97.0
        assert not [c for c in first.commands if isinstance(c, PlaceOrder | PlaceAlgoOrder)]

    def test_pending_lifecycle_is_closed_and_opposite_position_adopted(self) -> None:
        pending = Harness()  # never started: its signal is stale after a restart
        held = Harness(plan=make_plan(trade_id="e000000a-0000-4000-8000-000000000000", symbol="ETHUSDT"))
        held.open_long()
        ex = FakeExchange(
            orders=[
                ex_order(cid("S", 1, held.lc.trade_id), "ETHUSDT", is_algo=True, price="98.0"),
                ex_order(cid("T", 1, held.lc.trade_id), "ETHUSDT", price="104.0"),
            ],
            positions=[
                ExchangePosition(symbol="ETHUSDT", side=Side.LONG, qty=D("0.007"), entry_price=D("100.0"))
            ],
        )
        first = run_reconcile([pending.lc.to_state(), held.lc.to_state()], ex)
        (closed,) = [c for c in first.commands if isinstance(c, EmitTradeClosed)]
        assert closed.trade_id == pending.lc.trade_id
        assert closed.record["result"]["reason"] == "TIMEOUT"
        # Start-up: the exchange position is the truth; 0.003 left outside the bot, booked (issue 9 #3/#5).
        assert [c.code for c in first.commands if isinstance(c, Alert)] == ["POSITION_REDUCED_OUTSIDE"]
        (moved,) = [s for s in first.lifecycles if s.plan.trade_id == held.lc.trade_id]
        assert moved.entry_filled - moved.exit_filled == D("0.007")
        # The larger stop keeps protecting all of it (its resize is coalesced); the target follows at once.
        assert [c for c in first.commands if isinstance(c, PlaceAlgoOrder)] == []
        assert [c.qty for c in first.commands if isinstance(c, PlaceOrder)] == [D("0.007")]

        ex2 = FakeExchange(
            orders=[],
            positions=[
                ExchangePosition(symbol="BTCUSDT", side=Side.SHORT, qty=D("0.010"), entry_price=D("100.0"))
            ],
        )
        a = Harness()
        a.start()
        a.fill(cid("E", 1), "0.010", "100.0")  # we think we are long; the exchange is short
        result = run_reconcile([a.lc.to_state()], ex2)
        codes = [c.code for c in result.commands if isinstance(c, Alert)]
        assert "POSITION_SIDE_MISMATCH" in codes
        assert "ADOPTED" in codes
        (adopted_stop,) = [c for c in result.commands if isinstance(c, PlaceAlgoOrder)]
        assert adopted_stop.side == "BUY"
        assert adopted_stop.trigger_price == D("102.0")


class TestEntryEndsInsideTheLifecycle:
    """The entry phase ends by events alone: Execution never writes the lifecycle's state (issue 12)."""

    def test_a_rejected_entry_with_nothing_filled_ends_the_trade(self) -> None:
        h = Harness()
        h.start()
        out = h.ev(OrderRejected(cid=cid("E", 1), code=-2019, message="Margin is insufficient."))
        assert only(out, RequestRetry) == []  # a rejection is not retried
        assert h.lc.closed
        assert h.record()["result"]["reason"] == "TIMEOUT"

    def test_stop_entry_cancels_the_working_entry_and_never_retries(self) -> None:
        h = Harness()
        h.start()
        h.ev(OrderAccepted(cid=cid("E", 1)))
        assert h.ev(StopEntry()) == [
            CancelOrder(symbol="BTCUSDT", cid=cid("E", 1), is_algo=False),
            CancelTimer(cid=cid("E", 1)),
        ]
        out = h.ev(OrderCanceled(cid=cid("E", 1)))
        assert only(out, RequestRetry) == []
        assert h.lc.closed

    def test_stop_entry_while_a_retry_is_asked_for_ends_the_trade(self) -> None:
        h = Harness()
        h.start()
        h.ev(OrderAccepted(cid=cid("E", 1)))
        h.ev(TtlExpired(cid=cid("E", 1)))
        assert only(h.ev(OrderCanceled(cid=cid("E", 1))), RequestRetry)
        h.ev(StopEntry())
        assert h.lc.closed
        assert only(h.placed(), PlaceOrder) == [h.placed()[0]]  # the first attempt only

    def test_stop_entry_keeps_a_partial_fill_as_the_position(self) -> None:
        h = Harness()
        (entry, _timer) = h.start()
        h.ev(OrderAccepted(cid=entry.cid))
        h.fill(entry.cid, "0.004", "100.0")
        h.ev(StopEntry())
        h.ev(OrderCanceled(cid=entry.cid))
        assert not h.lc.closed
        assert h.lc.position_qty == D("0.004")

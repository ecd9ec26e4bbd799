"""The ExecutionMachine without trio: every request answered synchronously by the paper exchange, the real
state store and journal (`execution_driver.SyncRuntime`). The scenarios of the actor tests, read as the
effects the machine asks for: what is persisted before what is sent, which timers run, what risk hears."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from futures_actor.actors.messages import (
    AccountUpdated,
    EntryAbandoned,
    EntryFilled,
    KillSwitch,
    PositionUpdated,
    RetryDecided,
    RetryRequested,
    SubmitPlan,
    TradeClosed,
)
from futures_actor.binance import errors as bx
from futures_actor.binance.gateway import OrderRequest
from futures_actor.core import lifecycle as lcm
from futures_actor.core.ids import new_trade_id
from futures_actor.core.models import TradePlan
from futures_actor.core.types import OrderRole, Regime, Side
from futures_actor.machines.execution import (
    ADOPTION_SEQ_KEY,
    CancelOrder,
    Crash,
    ExecutionMachineError,
    GatewayCall,
    GatewayFailed,
    GatewayReplied,
    GatewayRequest,
    LoadLifecycles,
    OpenOrders,
    Persist,
    Persisted,
    PlaceOrder,
    PlaceStop,
    QueryOrder,
    ReadState,
    ReportFault,
    SendRisk,
    SetMeta,
    SetTimer,
    Start,
    TimerFired,
    WriteJournal,
    journal_key,
)
from futures_actor.runtime.venue import complete

from .execution_driver import CFG, RULES, T0, SyncRuntime

D = Decimal
TTL_S = CFG.execution.limit_ttl_seconds


def make_plan(
    *,
    symbol: str = "BTCUSDT",
    side: Side = Side.LONG,
    qty: str = "0.010",
    entry: str = "100.0",
    stop: str = "98.0",
    target: str | None = "104.0",
    candle: int = 0,
) -> TradePlan:
    return TradePlan(
        trade_id=new_trade_id(symbol=symbol, strategy="trend_pullback", candle_open_time_ms=T0 + candle),
        symbol=symbol,
        strategy="trend_pullback",
        side=side,
        regime=Regime.TREND,
        confidence_score=0.7,
        candle_open_time_ms=T0 + candle,
        created_ms=T0,
        entry_price=D(entry),
        quantity=D(qty),
        stop_price=D(stop),
        target_price=None if target is None else D(target),
        leverage=2.0,
        equity_usd=10_000.0,
        risk_pct=0.002,
        risk_usd=float(abs(D(entry) - D(stop)) * D(qty)),
        stop_pct=0.02,
        notional_usd=float(D(entry) * D(qty)),
        margin_used_usd=float(D(entry) * D(qty)) / 2,
        trail_atr_mult=2.0,
        trail_after_r=1.0,
    )


@pytest.fixture
def rt(tmp_path: Path) -> SyncRuntime:
    runtime = SyncRuntime(tmp_path)
    runtime.start()
    return runtime


def placements(rt: SyncRuntime) -> list[PlaceOrder | PlaceStop]:
    return [c for c in rt.calls() if isinstance(c, PlaceOrder | PlaceStop)]


def cid_of(call: PlaceOrder | PlaceStop) -> str:
    return call.order.client_id if isinstance(call, PlaceOrder) else call.stop.client_id


def fill_entry(rt: SyncRuntime, plan: TradePlan) -> None:
    """Submit at mid = entry + 1 tick, then trade through the entry with volume: a full fill."""
    tick = RULES[plan.symbol].tick_size
    rt.set_price(plan.symbol, str(plan.entry_price + tick))
    rt.feed(SubmitPlan(plan=plan, mid_price=plan.entry_price + tick))
    through = plan.entry_price - tick if plan.side is Side.LONG else plan.entry_price + tick
    rt.set_price(plan.symbol, str(through), volume="10")
    rt.advance(0.5)


class TestStart:
    """Start-up: journal what is pending, reconcile with the exchange, start the periodic reconcile."""

    def test_start_on_an_empty_account(self, tmp_path: Path) -> None:
        rt = SyncRuntime(tmp_path)
        rt.start()
        reads = [e.query for e in rt.of(ReadState)]
        assert reads[0] == LoadLifecycles(include_closed=True)
        assert [type(c).__name__ for c in rt.calls()] == ["OpenOrders", "Positions", "Account"]
        assert rt.timers() == {"reconcile": T0 + round(CFG.execution.reconcile_interval_seconds * 1000)}
        [account] = rt.risk()
        assert isinstance(account, AccountUpdated)
        assert not rt.machine.pending

    def test_refused_start_up_reconcile_crashes(self, tmp_path: Path) -> None:
        """The exchange refuses the start-up reads: the error is the runtime's to raise, nothing else runs."""
        rt = SyncRuntime(tmp_path)
        m = rt.machine
        effects = m.handle(Start(), now_ms=T0)
        read = effects[-1]
        assert isinstance(read, ReadState)
        effects = m.handle(rt._perform(read), now_ms=T0)  # type: ignore[arg-type]
        [call] = effects
        assert isinstance(call, GatewayCall)
        assert isinstance(call.call, OpenOrders)
        error = bx.ServerError("HTTP 503", http_status=503)
        [crash] = m.handle(GatewayFailed(request_id=call.request_id, error=error), now_ms=T0)
        assert isinstance(crash, Crash)
        assert crash.error is error
        with pytest.raises(ExecutionMachineError):
            m.handle(TimerFired(key="reconcile"), now_ms=T0)


class TestContract:
    """One request at a time: while it is pending only its answer is accepted."""

    def test_inbox_refused_while_a_call_is_pending(self, rt: SyncRuntime) -> None:
        plan = make_plan()
        rt.set_price("BTCUSDT", "100.1")
        m = rt.machine
        effects = m.handle(SubmitPlan(plan=plan, mid_price=D("100.1")), now_ms=rt.t)
        # The store is asked whether the trade is known (a restart may have it), then nothing else.
        [read] = effects
        assert isinstance(read, ReadState)
        assert m.pending
        with pytest.raises(ExecutionMachineError, match="pending"):
            m.handle(SubmitPlan(plan=make_plan(candle=1), mid_price=D("100.1")), now_ms=rt.t)
        with pytest.raises(ExecutionMachineError, match="pending"):
            m.handle(GatewayReplied(request_id=read.request_id + 1, result=None), now_ms=rt.t)
        with pytest.raises(ExecutionMachineError, match="answers request"):
            m.handle(GatewayReplied(request_id=read.request_id, result=None), now_ms=rt.t)
        assert m.pending  # a refused answer leaves the request pending

    def test_answer_without_a_request_is_refused(self, rt: SyncRuntime) -> None:
        with pytest.raises(ExecutionMachineError, match="nothing was asked"):
            rt.machine.handle(Persisted(request_id=99), now_ms=rt.t)

    def test_a_stale_timer_is_ignored(self, rt: SyncRuntime) -> None:
        assert rt.machine.handle(TimerFired(key="ttl:nobody"), now_ms=rt.t) == []


class TestEntryToStop:
    """Entry → fill → stop: every placement persisted first, the stop sized to the fill."""

    def test_full_fill_places_the_stop_and_tells_risk_and_the_symbol(self, rt: SyncRuntime) -> None:
        plan = make_plan()
        fill_entry(rt, plan)
        entry, stop, target = placements(rt)
        assert isinstance(entry, PlaceOrder)
        assert entry.order.client_id.endswith("E1")
        assert entry.order.type == "LIMIT"
        assert entry.order.quantity == plan.quantity
        assert isinstance(stop, PlaceStop)
        assert stop.stop.client_id.endswith("S1")
        assert stop.stop.side == "SELL"
        assert stop.stop.reduce_only
        assert stop.stop.quantity == plan.quantity
        assert stop.stop.trigger_price == plan.stop_price
        assert isinstance(target, PlaceOrder)
        assert target.order.price == plan.target_price
        [filled] = rt.risk(EntryFilled)
        assert filled.final
        assert filled.filled_qty == plan.quantity
        [update] = rt.symbol_msgs()
        assert update == rt.risk(PositionUpdated)[0]
        assert update.qty == plan.quantity
        assert update.stop_price == plan.stop_price
        assert rt.machine.open_trades()[0].phase is lcm.Phase.OPEN

    def test_every_placement_is_persisted_before_it_is_sent(self, rt: SyncRuntime) -> None:
        fill_entry(rt, make_plan())
        last_persist: Persist | None = None
        for effect in rt.effects:
            if isinstance(effect, Persist):
                last_persist = effect
            elif isinstance(effect, GatewayCall) and isinstance(effect.call, PlaceOrder | PlaceStop):
                assert last_persist is not None
                recorded = {
                    c.cid for c in last_persist.commands if isinstance(c, lcm.PlaceOrder | lcm.PlaceAlgoOrder)
                }
                assert cid_of(effect.call) in recorded
                assert cid_of(effect.call) in last_persist.state.orders
        assert {cid_of(p) for p in placements(rt)} == {s.cid for s in rt.store.sent_cids()}

    def test_a_cid_recorded_before_is_never_sent_again(self, rt: SyncRuntime) -> None:
        """The store refuses a client id an earlier incarnation sent: the machine queries it instead."""
        plan = make_plan()
        probe = lcm.TradeLifecycle(
            plan=plan,
            rules=RULES["BTCUSDT"],
            config=CFG.execution,
            prefix=CFG.exchange.client_id_prefix,
            mode="PAPER_LIVE",
        )
        [entry_cmd] = [c for c in probe.start(now_ms=T0) if isinstance(c, lcm.PlaceOrder)]
        rt.store.record_sent_cid(
            entry_cmd.cid, trade_id=plan.trade_id, role=OrderRole.ENTRY, attempt=1, sent_ms=T0
        )
        rt.set_price("BTCUSDT", "100.1")
        rt.feed(SubmitPlan(plan=plan, mid_price=D("100.1")))
        assert placements(rt) == []
        assert [log.fields["cid"] for log in rt.logs("cid_already_sent")] == [entry_cmd.cid]
        rt.advance(CFG.exchange.retry_wait_initial_seconds)
        queries = [c for c in rt.calls() if isinstance(c, QueryOrder)]
        assert [q.client_id for q in queries] == [entry_cmd.cid]
        assert placements(rt) == []


class TestTtlAndRetry:
    """AC5: the TTL timer cancels the entry, risk decides the retry, the retry is a new client id."""

    def test_ttl_cancel_then_retry(self, rt: SyncRuntime) -> None:
        plan = make_plan()
        rt.set_price("BTCUSDT", "101.0")
        rt.feed(SubmitPlan(plan=plan, mid_price=D("101.0")))
        [e1] = placements(rt)
        ttl_key = "ttl:" + cid_of(e1)
        assert rt.timers()[ttl_key] == T0 + round(TTL_S * 1000)
        rt.advance(TTL_S - 1)
        assert not any(isinstance(c, CancelOrder) for c in rt.calls())
        rt.advance(1)
        [cancel] = [c for c in rt.calls() if isinstance(c, CancelOrder)]
        assert cancel.client_id == cid_of(e1)
        assert not cancel.is_stop
        [request] = rt.risk(RetryRequested)
        assert request.mid == D("101.0")
        assert request.filled_qty == 0
        assert ttl_key not in rt.timers()
        retry_plan = msgspec.structs.replace(plan, entry_price=D("101.0"), stop_price=D("99.0"))
        rt.feed(RetryDecided(trade_id=plan.trade_id, plan=retry_plan, rejection=None))
        _, e2 = placements(rt)
        assert cid_of(e2).endswith("E2")
        assert isinstance(e2, PlaceOrder)
        assert e2.order.price == D("101.0")
        rt.advance(TTL_S)
        assert len(placements(rt)) == 2  # no market order, no third attempt
        [abandoned] = rt.risk(EntryAbandoned)
        assert abandoned.reason == "TIMEOUT"
        [record] = [e.record for e in rt.of(WriteJournal)]
        assert record["result"]["reason"] == "TIMEOUT"

    def test_partial_fill_is_protected_for_what_filled(self, rt: SyncRuntime) -> None:
        """AC6: 10 % participation of 0.04 fills 0.004; at the TTL the rest is cancelled, no retry."""
        plan = make_plan()
        rt.set_price("BTCUSDT", "100.1")
        rt.feed(SubmitPlan(plan=plan, mid_price=D("100.1")))
        rt.set_price("BTCUSDT", "99.9", volume="0.04")
        rt.advance(0.5)
        [first] = rt.risk(EntryFilled)
        assert not first.final
        assert D(0) < first.filled_qty < plan.quantity
        stops = [c for c in placements(rt) if isinstance(c, PlaceStop)]
        assert [s.stop.quantity for s in stops] == [first.filled_qty]
        rt.set_price("BTCUSDT", "100.5")
        rt.advance(TTL_S)
        assert rt.risk(RetryRequested) == []
        final = rt.risk(EntryFilled)[-1]
        assert final.final
        assert final.filled_qty == first.filled_qty
        [position] = complete(rt.paper.positions())
        assert position.quantity == first.filled_qty


class TestKill:
    """AC10: the kill switch closes every position with reduce-only MARKET orders, journals, tells risk."""

    def test_kill_flattens_and_journals_in_order(self, rt: SyncRuntime) -> None:
        btc = make_plan()
        eth = make_plan(symbol="ETHUSDT", side=Side.SHORT, entry="50.00", stop="51.00", target="48.00")
        fill_entry(rt, btc)
        fill_entry(rt, eth)
        assert {p.symbol for p in complete(rt.paper.positions())} == {"BTCUSDT", "ETHUSDT"}
        start = len(rt.effects)
        rt.feed(KillSwitch(reason="TEST"))
        assert complete(rt.paper.positions()) == []
        assert complete(rt.paper.open_orders()) == []
        kills = [c for c in placements(rt) if cid_of(c).endswith("K1")]
        assert len(kills) == 2
        assert all(
            isinstance(k, PlaceOrder) and k.order.type == "MARKET" and k.order.reduce_only for k in kills
        )
        # Per trade: record written, then TradeClosed to risk, then the journaled mark.
        tail = rt.effects[start:]
        for plan in (btc, eth):
            write = next(
                i for i, e in enumerate(tail) if isinstance(e, WriteJournal) and e.trade_id == plan.trade_id
            )
            closed = next(
                i
                for i, e in enumerate(tail)
                if isinstance(e, SendRisk)
                and isinstance(e.message, TradeClosed)
                and e.message.trade_id == plan.trade_id
            )
            mark = tail.index(SetMeta(key=journal_key(plan.trade_id), value="1"))
            assert write < closed < mark
            assert tail[write].record["result"]["reason"] == "KILL_SWITCH"  # type: ignore[union-attr]
        rt.feed(SubmitPlan(plan=make_plan(candle=300_000), mid_price=D("100")))
        assert rt.risk(EntryAbandoned)[-1].reason == "KILL_SWITCH"


class TestGatewayFailure:
    """A failed call is classified as the actor did: unknown outcome ⇒ query later, never re-send."""

    def test_stop_5xx_then_not_found_places_the_next_version(self, rt: SyncRuntime) -> None:
        def fault(call: GatewayRequest) -> Exception | None:
            if isinstance(call, PlaceStop) and call.stop.client_id.endswith("S1"):
                return bx.ServerError("HTTP 502", http_status=502, client_id=call.stop.client_id)
            return None

        rt.fault = fault
        plan = make_plan()
        fill_entry(rt, plan)
        [report] = rt.of(ReportFault)
        assert report.kind == "SERVER_ERROR"
        assert report.symbol == "BTCUSDT"
        assert [log.fields["cid"][-2:] for log in rt.logs("order_status_unknown")] == ["S1"]
        # The query waits `exchange.retry_wait_initial_seconds` (F8: let the venue settle).
        [deferred] = [t for t in rt.of(SetTimer) if t.key.startswith("retry:")]
        assert deferred.at_ms == T0 + round(CFG.exchange.retry_wait_initial_seconds * 1000)  # filled at T0
        rt.advance(10)
        queries = [c.client_id[-2:] for c in rt.calls() if isinstance(c, QueryOrder)]
        assert queries == ["S1"]
        stops = [cid_of(c)[-2:] for c in placements(rt) if isinstance(c, PlaceStop)]
        assert stops == ["S1", "S2"]
        [stop] = [o for o in complete(rt.paper.open_orders()) if o.is_stop]
        assert stop.quantity == plan.quantity
        assert stop.trigger_price == plan.stop_price
        sent = [s.cid for s in rt.store.sent_cids()]
        assert len(sent) == len(set(sent))


class TestReconcile:
    """Start-up reconcile: a position nobody owns is adopted and protected; risk hears of it."""

    def test_adopts_a_foreign_position_with_a_stop(self, tmp_path: Path) -> None:
        rt = SyncRuntime(tmp_path)
        rt.set_price("BTCUSDT", "100.0")
        complete(
            rt.paper.place_order(
                OrderRequest(
                    symbol="BTCUSDT", client_id="manual1", side="BUY", type="MARKET", quantity=D("0.02")
                )
            )
        )
        rt.paper.take_events()  # the machine is not running yet: it hears of it by reconciling
        rt.start()
        [position] = complete(rt.paper.positions())
        [stop_call] = [c for c in placements(rt) if isinstance(c, PlaceStop)]
        assert stop_call.stop.side == "SELL"
        assert stop_call.stop.reduce_only
        assert stop_call.stop.quantity == position.quantity
        pct = D(repr(CFG.strategies.trend_pullback.stop_pct))
        assert stop_call.stop.trigger_price <= position.entry_price * (1 - pct)
        [stop] = [o for o in complete(rt.paper.open_orders()) if o.is_stop]
        assert stop.client_id == stop_call.stop.client_id
        # The adoption's sequence number is stored before the adopted trade is persisted or sends.
        seq_at = rt.effects.index(SetMeta(key=ADOPTION_SEQ_KEY, value="2"))
        first_persist = next(i for i, e in enumerate(rt.effects) if isinstance(e, Persist))
        assert seq_at < first_persist
        [filled] = rt.risk(EntryFilled)
        assert filled.final
        assert filled.filled_qty == position.quantity
        [trade] = rt.machine.open_trades()
        assert trade.symbol == "BTCUSDT"
        assert trade.position_qty == position.quantity
        assert rt.logs("protection_violation")  # what the watchdog saw before the repair
        assert rt.logs("protection_restored")


def test_effects_are_plain_values(rt: SyncRuntime) -> None:
    """Nothing in an effect refers back to the machine's mutable state (a runtime may keep them)."""
    fill_entry(rt, make_plan())
    persists = rt.of(Persist)
    assert persists
    first: Any = persists[0].state
    assert first.phase is lcm.Phase.ENTRY_WORKING  # a snapshot, not the live state
    assert rt.machine.open_trades()[0].phase is lcm.Phase.OPEN

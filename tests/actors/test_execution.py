"""The Execution actor against the PaperExchange under the mock clock: TTL and retry (AC5), partial at TTL (AC6),
kill switch (AC10), unknown placement outcome (AC12), StopIntake (AC9), exchange faults, adoption."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.execution import Execution, journal_key
from futures_actor.actors.messages import (
    AmendStop,
    EntryAbandoned,
    EntryFilled,
    KillSwitch,
    PositionUpdated,
    RepublishPositions,
    RetryDecided,
    RetryRequested,
    StopIntake,
    SubmitPlan,
    TradeClosed,
)
from futures_actor.binance import errors as bx
from futures_actor.binance.gateway import OrderRequest, OrderState, StopRequest
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.config import BotConfig, LoggingConfig
from futures_actor.core.ids import new_trade_id
from futures_actor.core.lifecycle import OrderStatus, Phase
from futures_actor.core.models import RiskRejection, TradePlan
from futures_actor.core.types import Regime, Side, SymbolRules
from futures_actor.state.journal import TradeJournal, iter_trade_records
from futures_actor.state.store import StateStore

D = Decimal
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CFG = BotConfig()
RULES = {
    "BTCUSDT": SymbolRules(symbol="BTCUSDT", tick_size=D("0.1"), step_size=D("0.001"), min_qty=D("0.001")),
    "ETHUSDT": SymbolRules(symbol="ETHUSDT", tick_size=D("0.01"), step_size=D("0.001"), min_qty=D("0.001")),
}


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


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


class Crash(Exception):
    """Raised by a fault hook to say: crash the bot now (the harness cancels its scope)."""


Hook = Callable[[str, str, Any], Any]


class RecordingGateway:
    """Delegates to the paper exchange; records every request; injects faults and crashes.

    `hook(method, cid, phase)` is called with phase "before" and "after" (the latter with the result)
    and may raise a `BinanceError` (a fault the venue returns) or `Crash` (the bot dies at this step).
    """

    def __init__(self, inner: PaperExchange) -> None:
        self.inner = inner
        self.requests: list[tuple[str, str]] = []
        self.hook: Hook | None = None
        self.crash_scope: trio.CancelScope | None = None

    async def _call(self, method: str, cid: str, fn: Callable[[], Any]) -> Any:
        self.requests.append((method, cid))
        await self._hook(method, cid, "before", None)
        result = await fn()
        await self._hook(method, cid, "after", result)
        return result

    async def _hook(self, method: str, cid: str, phase: str, result: Any) -> None:
        if self.hook is None:
            return
        try:
            self.hook(method, cid, phase, result)  # type: ignore[call-arg]
        except Crash:
            assert self.crash_scope is not None
            self.crash_scope.cancel()
            await trio.sleep_forever()

    def placed_cids(self) -> list[str]:
        return [cid for m, cid in self.requests if m in ("place_order", "place_stop")]

    # --- the protocol
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.inner.run(task_status=task_status)

    def events(self) -> Any:
        return self.inner.events()

    async def prepare_symbol(self, symbol: str, *, leverage: int) -> None:
        await self.inner.prepare_symbol(symbol, leverage=leverage)

    async def check_account_mode(self) -> None:
        await self.inner.check_account_mode()

    async def place_order(self, req: OrderRequest) -> OrderState:
        return await self._call("place_order", req.client_id, lambda: self.inner.place_order(req))

    async def place_stop(self, req: StopRequest) -> OrderState:
        return await self._call("place_stop", req.client_id, lambda: self.inner.place_stop(req))

    async def cancel_order(self, symbol: str, client_id: str) -> OrderState | None:
        return await self._call("cancel_order", client_id, lambda: self.inner.cancel_order(symbol, client_id))

    async def cancel_stop(self, symbol: str, client_id: str) -> OrderState | None:
        return await self._call("cancel_stop", client_id, lambda: self.inner.cancel_stop(symbol, client_id))

    async def query_order(self, symbol: str, client_id: str) -> OrderState | None:
        return await self._call("query_order", client_id, lambda: self.inner.query_order(symbol, client_id))

    async def query_stop(self, symbol: str, client_id: str) -> OrderState | None:
        return await self._call("query_stop", client_id, lambda: self.inner.query_stop(symbol, client_id))

    async def open_orders(self) -> list[OrderState]:
        return await self.inner.open_orders()

    async def positions(self) -> Any:
        return await self.inner.positions()

    async def user_trades(self, symbol: str, *, start_ms: int) -> Any:
        return await self.inner.user_trades(symbol, start_ms=start_ms)

    async def account(self) -> Any:
        return await self.inner.account()


class Harness:
    """One bot incarnation (Execution + store + journal) against a paper exchange that outlives it."""

    def __init__(self, tmp: Path, clock: TrioWallClock, paper: PaperExchange | None = None) -> None:
        self.tmp = tmp
        self.clock = clock
        self.paper = paper or PaperExchange(cfg=CFG.execution, rules=RULES, now_ms=clock.now_ms)
        self.gw = RecordingGateway(self.paper)
        self.risk_msgs: list[Any] = []
        self.symbol_msgs: list[Any] = []
        self.store: StateStore | None = None
        self.ex: Execution | None = None
        self.inbox: trio.MemorySendChannel[Any] | None = None
        self.symbol_capacity = 10_000  # the symbol actors' inbox
        self.symbol_recv: trio.MemoryReceiveChannel[Any] | None = None  # set when nobody drains it
        self.drain_symbols = True

    def set_price(self, symbol: str, price: str, *, volume: str | None = None) -> None:
        p = D(price)
        tick = RULES[symbol].tick_size
        now = self.clock.now_ms()
        self.paper.on_mark(symbol, p, 0.0, now + 3_600_000, now)
        self.paper.on_trade_price(symbol, p, now, volume=None if volume is None else D(volume))
        self.paper.on_book(symbol, p - tick, p + tick, now)

    async def start(self, nursery: trio.Nursery) -> Execution:
        """Start a fresh incarnation in `nursery` (reopens the state file and the journal)."""
        self.store = StateStore.open(self.tmp / "state.sqlite")
        journal = TradeJournal(directory=self.tmp / "logs", cfg=LoggingConfig(), clock=self.clock)
        risk_send, risk_recv = trio.open_memory_channel[Any](10_000)
        sym_send, sym_recv = trio.open_memory_channel[Any](self.symbol_capacity)
        send, recv = trio.open_memory_channel[Any](16)
        self.inbox = send
        self.ex = Execution(
            cfg=CFG,
            mode="PAPER_LIVE",
            gateway=self.gw,
            store=self.store,
            journal=journal,
            rules_by_symbol=RULES,
            wall_clock=self.clock,
            risk_send=risk_send,
            symbol_sends={"BTCUSDT": sym_send, "ETHUSDT": sym_send},
            journal_in_thread=False,
        )
        nursery.start_soon(self._collect, risk_recv, self.risk_msgs)
        if self.drain_symbols:
            nursery.start_soon(self._collect, sym_recv, self.symbol_msgs)
        else:
            self.symbol_recv = sym_recv
        await nursery.start(self.ex.run, recv)
        return self.ex

    @staticmethod
    async def _collect(recv: trio.MemoryReceiveChannel[Any], into: list[Any]) -> None:
        async for msg in recv:
            into.append(msg)

    async def send(self, msg: Any) -> None:
        assert self.inbox is not None
        await self.inbox.send(msg)
        await settle()

    def records(self) -> list[dict[str, Any]]:
        files = sorted((self.tmp / "logs").glob("trades-*.jsonl"))
        return [r for _p, _n, r in iter_trade_records(files)]

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.risk_msgs if isinstance(m, kind)]

    async def open_orders(self) -> list[OrderState]:
        return await self.paper.open_orders()

    async def positions(self) -> dict[str, Any]:
        return {p.symbol: p for p in await self.paper.positions()}


async def settle(seconds: float = 0.5) -> None:
    """Let events flow (trio time; jumps under the mock clock)."""
    await trio.sleep(seconds)


async def fill_entry(h: Harness, plan: TradePlan) -> None:
    """Submit the plan at mid = entry + 1 tick, then trade through the entry: a full fill."""
    tick = RULES[plan.symbol].tick_size
    h.set_price(plan.symbol, str(plan.entry_price + tick))
    await h.send(SubmitPlan(plan=plan, mid_price=plan.entry_price + tick))
    h.set_price(plan.symbol, str(plan.entry_price - 5 * tick))
    await settle()


async def assert_protected(h: Harness, symbol: str, qty: Decimal, stop: Decimal) -> None:
    stops = [o for o in await h.open_orders() if o.symbol == symbol and o.is_stop]
    assert len(stops) == 1, stops
    assert stops[0].quantity == qty
    assert stops[0].trigger_price == stop
    assert stops[0].reduce_only


def assert_no_cid_twice(h: Harness) -> None:
    cids = h.gw.placed_cids()
    assert len(cids) == len(set(cids)), cids


@pytest.fixture
async def harness(fast_tmp: Path, autojump_clock: trio.testing.MockClock) -> Any:
    clock = TrioWallClock(T0)
    h = Harness(fast_tmp, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.paper.run)
        await h.start(nursery)
        yield h
        nursery.cancel_scope.cancel()


class TestEntryTtl:
    """AC5: TTL ⇒ cancel + exactly one retry (new client id); second expiry ⇒ cancel, no market, TIMEOUT."""

    async def test_two_expiries_end_in_timeout_record(self, harness: Harness, autojump_clock: Any) -> None:
        h = harness
        plan = make_plan()
        h.set_price("BTCUSDT", "101.0")
        await h.send(SubmitPlan(plan=plan, mid_price=D("101.0")))
        assert [cid[-2:] for cid in h.gw.placed_cids()] == ["E1"]
        await settle(CFG.execution.limit_ttl_seconds)
        # The retry is a new decision (BOT_SPEC §9): risk is asked, nothing is placed until it answers.
        assert [cid[-2:] for cid in h.gw.placed_cids()] == ["E1"]
        [request] = h.of(RetryRequested)
        assert request.plan.trade_id == plan.trade_id
        assert request.mid == D("101.0")
        assert request.filled_qty == 0
        retry_plan = msgspec.structs.replace(plan, entry_price=D("101.0"), stop_price=D("99.0"))
        await h.send(RetryDecided(trade_id=plan.trade_id, plan=retry_plan, rejection=None))
        await settle()
        placed = h.gw.placed_cids()
        assert [cid[-2:] for cid in placed] == ["E1", "E2"]
        retry = await h.paper.query_order("BTCUSDT", placed[1])
        assert retry is not None
        assert retry.price == D("101.0")
        assert ("cancel_order", placed[0]) in h.gw.requests
        await settle(CFG.execution.limit_ttl_seconds)
        assert ("cancel_order", placed[1]) in h.gw.requests
        assert len(h.gw.placed_cids()) == 2  # no market order, no third attempt
        assert await h.open_orders() == []
        [rec] = h.records()
        assert rec["result"]["reason"] == "TIMEOUT"
        assert rec["entry_order"]["status"] == "CANCELED"
        assert rec["entry_order"]["filled_qty"] == 0
        assert [m.reason for m in h.of(EntryAbandoned)] == ["TIMEOUT"]
        assert h.store is not None
        assert h.store.get_meta(journal_key(plan.trade_id)) == "1"

    async def test_rejected_retry_ends_in_timeout_record(self, harness: Harness, autojump_clock: Any) -> None:
        h = harness
        plan = make_plan()
        h.set_price("BTCUSDT", "101.0")
        await h.send(SubmitPlan(plan=plan, mid_price=D("101.0")))
        await settle(CFG.execution.limit_ttl_seconds)
        assert len(h.of(RetryRequested)) == 1
        rejection = RiskRejection(code="TOTAL_OPEN_RISK", message="open risk")
        await h.send(RetryDecided(trade_id=plan.trade_id, plan=None, rejection=rejection))
        await settle()
        assert [cid[-2:] for cid in h.gw.placed_cids()] == ["E1"]
        [rec] = h.records()
        assert rec["result"]["reason"] == "TIMEOUT"
        assert [m.reason for m in h.of(EntryAbandoned)] == ["TIMEOUT"]


class TestPartialAtTtl:
    """AC6: partial at TTL ⇒ rest cancelled; stop and target sized to the fill; managed to its exit."""

    async def test_partial_is_protected_and_exits_at_target(
        self, harness: Harness, autojump_clock: Any
    ) -> None:
        h = harness
        plan = make_plan()
        h.set_price("BTCUSDT", "100.1")
        await h.send(SubmitPlan(plan=plan, mid_price=D("100.1")))
        # Traded through the limit with little volume: 10 % participation of 0.04 = 0.004 filled.
        h.set_price("BTCUSDT", "99.9", volume="0.04")
        await settle()
        h.set_price("BTCUSDT", "100.5")
        await settle(CFG.execution.limit_ttl_seconds)
        assert len([c for c in h.gw.placed_cids() if c.endswith(("E1", "E2"))]) == 1  # no retry
        pos = (await h.positions())["BTCUSDT"]
        assert D(0) < pos.quantity < plan.quantity
        await assert_protected(h, "BTCUSDT", pos.quantity, plan.stop_price)
        [target] = [o for o in await h.open_orders() if not o.is_stop]
        assert target.quantity == pos.quantity
        assert target.price == plan.target_price
        assert target.reduce_only
        [ef] = [m for m in h.of(EntryFilled) if m.final]
        assert ef.filled_qty == pos.quantity
        h.set_price("BTCUSDT", "104.5", volume="10")
        await settle()
        assert await h.positions() == {}
        assert await h.open_orders() == []  # the sibling stop was cancelled
        [rec] = h.records()
        assert rec["result"]["reason"] == "TP"
        assert rec["entry_order"]["status"] == "PARTIALLY_FILLED"
        assert rec["entry_order"]["filled_qty"] == float(pos.quantity)
        [closed] = h.of(TradeClosed)
        assert closed.realized_pnl_usd > 0
        assert_no_cid_twice(h)


class TestKillSwitch:
    """AC10: two open positions ⇒ working orders cancelled, reduce-only MARKET closes, KILL_SWITCH records."""

    async def test_kill_with_two_positions(self, harness: Harness, autojump_clock: Any) -> None:
        h = harness
        btc = make_plan()
        eth = make_plan(symbol="ETHUSDT", side=Side.SHORT, entry="50.00", stop="51.00", target="48.00")
        await fill_entry(h, btc)
        h.set_price("ETHUSDT", "49.99")
        await h.send(SubmitPlan(plan=eth, mid_price=D("49.99")))
        h.set_price("ETHUSDT", "50.10")
        await settle()
        assert set(await h.positions()) == {"BTCUSDT", "ETHUSDT"}
        assert len(await h.open_orders()) == 4  # a stop and a target each
        await h.send(KillSwitch(reason="TEST"))
        assert await h.positions() == {}
        assert await h.open_orders() == []
        kills = [cid for cid in h.gw.placed_cids() if cid.endswith("K1")]
        assert len(kills) == 2
        records = h.records()
        assert sorted(r["symbol"] for r in records) == ["BTCUSDT", "ETHUSDT"]
        assert {r["result"]["reason"] for r in records} == {"KILL_SWITCH"}
        # Refused while halted.
        await h.send(SubmitPlan(plan=make_plan(candle=300_000), mid_price=D("100")))
        assert h.of(EntryAbandoned)[-1].reason == "KILL_SWITCH"


class TestUnknownOutcome:
    """AC12: the placement times out but the order was placed ⇒ queried by client id, never re-sent."""

    async def test_timeout_with_order_placed(self, harness: Harness, autojump_clock: Any) -> None:
        h = harness

        def hook(method: str, cid: str, phase: str, result: Any) -> None:
            if method == "place_order" and cid.endswith("E1") and phase == "after":
                raise bx.UnknownOrderStatus("timeout", endpoint="POST /fapi/v1/order", client_id=cid)

        h.gw.hook = hook
        plan = make_plan()
        h.set_price("BTCUSDT", "100.1")
        await h.send(SubmitPlan(plan=plan, mid_price=D("100.1")))
        await settle(5)
        [e1] = h.gw.placed_cids()
        assert ("query_order", e1) in h.gw.requests
        h.set_price("BTCUSDT", "99.5")
        await settle()
        await assert_protected(h, "BTCUSDT", plan.quantity, plan.stop_price)
        assert_no_cid_twice(h)
        assert h.gw.placed_cids().count(e1) == 1

    async def test_5xx_on_stop_then_not_found_places_next_version(
        self, harness: Harness, autojump_clock: Any
    ) -> None:
        h = harness

        def hook(method: str, cid: str, phase: str, result: Any) -> None:
            if method == "place_stop" and cid.endswith("S1") and phase == "before":
                raise bx.ServerError("HTTP 502", http_status=502, client_id=cid)

        h.gw.hook = hook
        plan = make_plan()
        await fill_entry(h, plan)
        await settle(10)
        await assert_protected(h, "BTCUSDT", plan.quantity, plan.stop_price)
        stops = [c for c in h.gw.placed_cids() if "-S" in c]
        assert [c[-2:] for c in stops] == ["S1", "S2"]
        assert_no_cid_twice(h)


class TestFaults:
    """Venue rejections and -2021 never leave a position without protection."""

    async def test_stop_would_trigger_twice_closes_with_market(
        self, harness: Harness, autojump_clock: Any
    ) -> None:
        h = harness
        plan = make_plan()
        tick = RULES["BTCUSDT"].tick_size
        h.set_price("BTCUSDT", "100.1")
        await h.send(SubmitPlan(plan=plan, mid_price=D("100.1")))
        # Gap straight through entry and stop: the mark is below the stop when the stop is sent.
        h.set_price("BTCUSDT", str(plan.stop_price - 10 * tick))
        await settle(5)
        assert await h.positions() == {}
        assert any(c.endswith("X1") for c in h.gw.placed_cids())
        [rec] = h.records()
        assert rec["result"]["reason"] == "KILL_SWITCH"  # emergency flattening, not a stop exit (issue 9 #15)
        assert await h.open_orders() == []

    @pytest.mark.parametrize(
        "error",
        [
            bx.MinNotional("notional too small", code=-4164),
            bx.InsufficientMargin("margin", code=-2019),
            bx.Precision("precision", code=-1111),
            bx.PostOnlyRejected("post only", code=-5022),
        ],
    )
    async def test_entry_rejection_abandons_without_record(
        self, harness: Harness, error: Exception, autojump_clock: Any
    ) -> None:
        h = harness

        def hook(method: str, cid: str, phase: str, result: Any) -> None:
            if method == "place_order" and phase == "before":
                raise error

        h.gw.hook = hook
        plan = make_plan()
        h.set_price("BTCUSDT", "100.1")
        await h.send(SubmitPlan(plan=plan, mid_price=D("100.1")))
        assert [m.reason for m in h.of(EntryAbandoned)] == ["REJECTED"]
        assert h.records() == []
        assert h.ex is not None
        assert h.ex.open_trades() == []
        assert h.store is not None
        [state] = h.store.load_lifecycles(include_closed=True)
        assert state.phase is Phase.CLOSED

    async def test_reduce_only_reject_of_target_keeps_stop(
        self, harness: Harness, autojump_clock: Any
    ) -> None:
        h = harness

        def hook(method: str, cid: str, phase: str, result: Any) -> None:
            if method == "place_order" and cid.endswith("T1") and phase == "before":
                raise bx.ReduceOnlyRejected("reduce only", code=-2022)

        h.gw.hook = hook
        plan = make_plan()
        await fill_entry(h, plan)
        await assert_protected(h, "BTCUSDT", plan.quantity, plan.stop_price)


class TestTrailingAndIntake:
    """AmendStop places the new stop first; StopIntake (AC9) cancels entries and keeps protection."""

    async def test_amend_moves_stop_new_then_old(self, harness: Harness, autojump_clock: Any) -> None:
        h = harness
        plan = make_plan()
        await fill_entry(h, plan)
        h.set_price("BTCUSDT", "102.0")
        await h.send(
            AmendStop(trade_id=plan.trade_id, symbol="BTCUSDT", new_stop=99.05, reference_price=102.0)
        )
        await assert_protected(h, "BTCUSDT", plan.quantity, D("99.0"))
        methods = [(m, c[-2:]) for m, c in h.gw.requests if "-S" in c]
        assert methods.index(("place_stop", "S2")) < methods.index(("cancel_stop", "S1"))
        # Loosening is refused.
        await h.send(
            AmendStop(trade_id=plan.trade_id, symbol="BTCUSDT", new_stop=97.0, reference_price=102.0)
        )
        await assert_protected(h, "BTCUSDT", plan.quantity, D("99.0"))
        updates = [m for m in h.symbol_msgs if isinstance(m, PositionUpdated)]
        assert updates[-1].stop_price == D("99.0")
        assert updates[-1].qty == plan.quantity

    async def test_full_symbol_inbox_delays_position_updates_never_drops_them(
        self, fast_tmp: Path, autojump_clock: Any
    ) -> None:
        """Market data can fill a symbol actor's inbox; the position updates that trailing rests on
        then wait (the latest per trade, in order) and arrive once there is room: none is lost, and
        Execution never blocks on the symbol actor meanwhile."""
        h = Harness(fast_tmp, TrioWallClock(T0))
        h.symbol_capacity, h.drain_symbols = 1, False
        async with trio.open_nursery() as nursery:
            await nursery.start(h.paper.run)
            await h.start(nursery)
            plan = make_plan()
            await fill_entry(h, plan)
            h.set_price("BTCUSDT", "102.0")
            await h.send(
                AmendStop(trade_id=plan.trade_id, symbol="BTCUSDT", new_stop=99.05, reference_price=102.0)
            )
            await assert_protected(h, "BTCUSDT", plan.quantity, D("99.0"))  # Execution went on
            assert h.symbol_recv is not None
            got: list[Any] = []
            while True:
                with trio.move_on_after(1):
                    got.append(await h.symbol_recv.receive())
                    continue
                break
            updates = [m for m in got if isinstance(m, PositionUpdated)]
            assert len(updates) >= 2
            assert updates[-1].stop_price == D("99.0")  # the latest state arrived
            assert updates[-1].qty == plan.quantity
            nursery.cancel_scope.cancel()

    async def test_republish_positions_for_a_restarted_symbol_actor(
        self, harness: Harness, autojump_clock: Any
    ) -> None:
        """A restarted symbol actor has no trailing state: execution re-sends its open position."""
        h = harness
        plan = make_plan()
        await fill_entry(h, plan)
        before = len([m for m in h.symbol_msgs if isinstance(m, PositionUpdated)])
        await h.send(RepublishPositions(symbol="ETHUSDT"))
        assert len([m for m in h.symbol_msgs if isinstance(m, PositionUpdated)]) == before
        await h.send(RepublishPositions(symbol="BTCUSDT"))
        updates = [m for m in h.symbol_msgs if isinstance(m, PositionUpdated)]
        assert len(updates) == before + 1
        assert updates[-1].trade_id == plan.trade_id
        assert updates[-1].qty == plan.quantity
        assert updates[-1].stop_price == plan.stop_price

    async def test_stop_intake_cancels_entry_keeps_stop_and_target(
        self, harness: Harness, autojump_clock: Any
    ) -> None:
        h = harness
        btc = make_plan()
        await fill_entry(h, btc)
        eth = make_plan(symbol="ETHUSDT", entry="50.00", stop="49.00", target="52.00")
        h.set_price("ETHUSDT", "50.01")
        await h.send(SubmitPlan(plan=eth, mid_price=D("50.01")))
        await h.send(StopIntake())
        orders = await h.open_orders()
        assert {(o.symbol, o.is_stop) for o in orders} == {("BTCUSDT", True), ("BTCUSDT", False)}
        await settle(2 * CFG.execution.limit_ttl_seconds)
        assert not any(c.endswith("E2") for c in h.gw.placed_cids())  # no retry after intake stopped
        assert h.store is not None
        states = {s.plan.symbol: s for s in h.store.load_lifecycles(include_closed=True)}
        assert states["BTCUSDT"].phase is Phase.OPEN
        stops = [o for o in states["BTCUSDT"].orders.values() if o.status is OrderStatus.WORKING]
        assert len(stops) == 2  # stop and target, persisted as working
        assert states["ETHUSDT"].phase is Phase.CLOSED
        assert [r["result"]["reason"] for r in h.records()] == ["TIMEOUT"]
        await h.send(SubmitPlan(plan=make_plan(symbol="ETHUSDT", candle=300_000), mid_price=D("50")))
        assert h.of(EntryAbandoned)[-1].reason == "INTAKE_STOPPED"


class TestStartup:
    """Start-up reconciliation: an unowned position is adopted and protected; risk hears of it."""

    async def test_adopts_position_without_trade(self, fast_tmp: Path, autojump_clock: Any) -> None:
        clock = TrioWallClock(T0)
        h = Harness(fast_tmp, clock)
        async with trio.open_nursery() as nursery:
            await nursery.start(h.paper.run)
            h.set_price("BTCUSDT", "100.0")
            await h.paper.place_order(
                OrderRequest(
                    symbol="BTCUSDT", client_id="manual1", side="BUY", type="MARKET", quantity=D("0.02")
                )
            )
            await settle()
            await h.start(nursery)
            await settle()
            pos = (await h.positions())["BTCUSDT"]
            [stop] = [o for o in await h.open_orders() if o.is_stop]
            assert stop.quantity == pos.quantity
            pct = D(repr(CFG.strategies.trend_pullback.stop_pct))
            assert stop.trigger_price <= pos.entry_price * (1 - pct)
            assert stop.trigger_price > pos.entry_price * (1 - pct) - RULES["BTCUSDT"].tick_size
            [ef] = h.of(EntryFilled)
            assert ef.final
            assert ef.filled_qty == pos.quantity
            nursery.cancel_scope.cancel()

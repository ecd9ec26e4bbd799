"""Parity: the same inputs through the ExecutionMachine directly (synchronous runtime, no trio) and through the
trio Execution shell (mock clock) give the same effects, in the same order, and the same exchange state.

Each seed builds a reproducible stream on two symbols: price moves (some with traded volume that fills
entries, some through stops and targets), plans submitted (some refused: symbol busy, halted, duplicate),
trailing amendments (some invalid or loosening), books and marks on the inbox, a kill switch now and
then followed by a resume, stop-intake, and waits of random millisecond lengths (TTL expiries, deferred
queries, the periodic reconcile). Every retry risk is asked for is answered (approved or rejected by its
order number). Both paths use a paper exchange of their own on the same clock; the trio path wraps the
gateway, the store, the journal and the channels to record what the shell did, in order. The direct path
records the effects the machine returned, performed by `execution_driver.SyncRuntime`.

The waits never end exactly on a timer's deadline (checked): trio runs tasks woken at the same instant
in an arbitrary order, so such a tie would have no defined order to compare.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.execution import Execution
from futures_actor.actors.messages import (
    AmendStop,
    BookUpdated,
    KillSwitch,
    MarkUpdated,
    Resume,
    RetryDecided,
    RetryRequested,
    StopIntake,
    SubmitPlan,
)
from futures_actor.binance.gateway import OrderRequest, OrderState, StopRequest
from futures_actor.binance.paper import PaperExchange
from futures_actor.core import lifecycle as lcm
from futures_actor.core.config import LoggingConfig
from futures_actor.core.models import RiskRejection
from futures_actor.core.types import Side
from futures_actor.machines.execution import (
    Account,
    CancelOrder,
    GatewayCall,
    GatewayRequest,
    GetMeta,
    LoadLifecycle,
    LoadLifecycles,
    OpenOrders,
    Persist,
    PlaceOrder,
    PlaceStop,
    Positions,
    PrepareSymbol,
    QueryOrder,
    ReadState,
    SendRisk,
    SendSymbol,
    SetMeta,
    UserTrades,
    WriteJournal,
)
from futures_actor.runtime.venue import complete
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore

from .execution_driver import CFG, RULES, T0, SyncRuntime
from .test_execution_machine import make_plan

D = Decimal
SEEDS = range(6)
STEPS = 120
RETRY_ANSWER_WAIT_MS = 211
Entry = tuple[Any, ...]

ExecutionInboxMsg = Any


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One input, then a wait. `price` moves the paper market (symbol, price, volume or None)."""

    price: tuple[str, str, str | None] | None = None
    message: Any = None
    wait_ms: int


BASE = {"BTCUSDT": D("100.0"), "ETHUSDT": D("50.00")}


def build(seed: int) -> list[Step]:
    rng = random.Random(seed)
    price = dict(BASE)
    steps: list[Step] = []
    plans: list[Any] = []
    resume_in = 0  # steps until the kill switch is resumed (0: not halted)
    for i in range(STEPS):
        wait = rng.randint(137, 12_000) if rng.random() < 0.85 else rng.randint(25_000, 45_000)
        symbol = rng.choice(sorted(RULES))
        tick = RULES[symbol].tick_size
        roll = rng.random()
        if resume_in:
            resume_in -= 1
            if not resume_in:
                steps.append(Step(message=Resume(reason="TEST"), wait_ms=wait))
                continue
        if roll < 0.55:
            price[symbol] = max(tick * 10, price[symbol] + tick * rng.randint(-25, 25))
            volume = rng.choice([None, "0.04", "10", "10"])
            steps.append(Step(price=(symbol, str(price[symbol]), volume), wait_ms=wait))
        elif roll < 0.75:
            side = rng.choice([Side.LONG, Side.SHORT])
            entry = price[symbol] - tick if side is Side.LONG else price[symbol] + tick
            risk = (entry * D("0.02")).quantize(tick)
            stop = entry - risk if side is Side.LONG else entry + risk
            target = entry + 2 * risk if side is Side.LONG else entry - 2 * risk
            plan = make_plan(
                symbol=symbol,
                side=side,
                entry=str(entry),
                stop=str(stop),
                target=str(target) if rng.random() < 0.8 else None,
                candle=i * 300_000,
            )
            plans.append(plan)
            steps.append(Step(message=SubmitPlan(plan=plan, mid_price=price[symbol]), wait_ms=wait))
        elif roll < 0.83 and plans:
            plan = rng.choice(plans)
            toward = float(price[plan.symbol]) * (0.99 if plan.side is Side.LONG else 1.01)
            new_stop = rng.choice([toward, toward, float(plan.stop_price), float("nan"), -1.0])
            msg = AmendStop(
                trade_id=plan.trade_id,
                symbol=plan.symbol,
                new_stop=new_stop,
                reference_price=float(price[plan.symbol]),
            )
            steps.append(Step(message=msg, wait_ms=wait))
        elif roll < 0.91:
            p = float(price[symbol])
            step_msg: Any = (
                BookUpdated(symbol=symbol, bid=p - float(tick), ask=p + float(tick), ts_ms=0)
                if rng.random() < 0.5
                else MarkUpdated(symbol=symbol, mark_price=p, funding_rate=0.0, next_funding_ms=0, ts_ms=0)
            )
            steps.append(Step(message=step_msg, wait_ms=wait))
        elif roll < 0.94 and plans:
            steps.append(
                Step(message=SubmitPlan(plan=rng.choice(plans), mid_price=price[symbol]), wait_ms=wait)
            )
        elif roll < 0.96 and not resume_in:
            steps.append(Step(message=KillSwitch(reason="TEST"), wait_ms=wait))
            resume_in = rng.randint(1, 4)
        elif roll < 0.97 and not resume_in:
            steps.append(Step(message=StopIntake(), wait_ms=wait))
            steps.append(Step(message=Resume(reason="TEST"), wait_ms=rng.randint(137, 900)))
        else:
            steps.append(Step(wait_ms=wait))
    return steps


def retry_answer(n: int, request: RetryRequested) -> RetryDecided:
    """The n-th retry request's answer: even ones approved (the plan as it was), odd ones rejected."""
    if n % 2 == 0:
        return RetryDecided(trade_id=request.plan.trade_id, plan=request.plan, rejection=None)
    rejection = RiskRejection(code="TOTAL_OPEN_RISK", message="open risk")
    return RetryDecided(trade_id=request.plan.trade_id, plan=None, rejection=rejection)


# --- the direct path ------------------------------------------------------------------------------------


def run_direct(steps: list[Step], tmp: Path) -> tuple[list[Entry], Any, list[int]]:
    rt = SyncRuntime(tmp)
    trace: list[Entry] = []
    held: list[Entry] = []
    started = False
    seen = 0

    def record(effects: Iterable[Any]) -> None:
        for e in effects:
            entry = direct_entry(e)
            if entry is None:
                continue
            if entry[0] in ("risk", "symbol") and not started:
                held.append(entry)  # the shell holds sends back until it is started
            else:
                trace.append(entry)

    def run(action: Any) -> None:
        before = len(rt.effects)
        action()
        record(rt.effects[before:])

    action_times: list[int] = []
    run(rt.start)
    started = True
    trace.extend(held)
    for step in steps:
        action_times.append(rt.t)
        if step.price is not None:
            symbol, price, volume = step.price
            run(lambda s=symbol, p=price, v=volume: rt.set_price(s, p, volume=v))
        if step.message is not None:
            run(lambda m=step.message: rt.feed(m))
        run(lambda w=step.wait_ms: rt.advance_to(rt.t + w))
        requests = rt.risk(RetryRequested)
        while seen < len(requests):
            action_times.append(rt.t)
            run(lambda n=seen, r=requests[seen]: rt.feed(retry_answer(n, r)))
            seen += 1
            run(lambda: rt.advance_to(rt.t + RETRY_ANSWER_WAIT_MS))
            requests = rt.risk(RetryRequested)
    assert not set(action_times) & set(rt.fired_at), "a wait ended on a timer's deadline: no defined order"
    return trace, exchange_state(rt.paper)


def direct_entry(effect: Any) -> Entry | None:
    match effect:
        case GatewayCall(call=call):
            return ("call", call)
        case Persist(state=state, commands=commands, now_ms=now_ms):
            return ("persist", lcm.encode_state(state), commands, now_ms)
        case ReadState(query=query):
            return ("read", query)
        case WriteJournal(record=record):
            return ("journal", record)
        case SetMeta(key=key, value=value):
            return ("meta", key, value)
        case SendRisk(message=message):
            return ("risk", message)
        case SendSymbol(symbol=symbol, message=message):
            return ("symbol", symbol, message)
        case _:
            return None


def exchange_state(paper: PaperExchange) -> Any:
    return (
        sorted(complete(paper.open_orders()), key=lambda o: o.client_id),
        complete(paper.positions()),
        complete(paper.account()),
    )


# --- the trio path ------------------------------------------------------------------------------------


class TracingGateway:
    """The paper exchange, every call recorded as the `GatewayRequest` it is."""

    def __init__(self, inner: PaperExchange, trace: list[Entry]) -> None:
        self.inner = inner
        self.trace = trace

    def events(self) -> Any:
        return self.inner.events()

    def _rec(self, call: GatewayRequest) -> None:
        self.trace.append(("call", call))

    async def prepare_symbol(self, symbol: str, *, leverage: int) -> None:
        self._rec(PrepareSymbol(symbol=symbol, leverage=leverage))
        await self.inner.prepare_symbol(symbol, leverage=leverage)

    async def place_order(self, req: OrderRequest) -> OrderState:
        self._rec(PlaceOrder(order=req))
        return await self.inner.place_order(req)

    async def place_stop(self, req: StopRequest) -> OrderState:
        self._rec(PlaceStop(stop=req))
        return await self.inner.place_stop(req)

    async def cancel_order(self, symbol: str, client_id: str) -> OrderState | None:
        self._rec(CancelOrder(symbol=symbol, client_id=client_id, is_stop=False))
        return await self.inner.cancel_order(symbol, client_id)

    async def cancel_stop(self, symbol: str, client_id: str) -> OrderState | None:
        self._rec(CancelOrder(symbol=symbol, client_id=client_id, is_stop=True))
        return await self.inner.cancel_stop(symbol, client_id)

    async def query_order(self, symbol: str, client_id: str) -> OrderState | None:
        self._rec(QueryOrder(symbol=symbol, client_id=client_id, is_stop=False))
        return await self.inner.query_order(symbol, client_id)

    async def query_stop(self, symbol: str, client_id: str) -> OrderState | None:
        self._rec(QueryOrder(symbol=symbol, client_id=client_id, is_stop=True))
        return await self.inner.query_stop(symbol, client_id)

    async def open_orders(self) -> Any:
        self._rec(OpenOrders())
        return await self.inner.open_orders()

    async def positions(self) -> Any:
        self._rec(Positions())
        return await self.inner.positions()

    async def account(self) -> Any:
        self._rec(Account())
        return await self.inner.account()

    async def user_trades(self, symbol: str, *, start_ms: int) -> Any:
        self._rec(UserTrades(symbol=symbol, start_ms=start_ms))
        return await self.inner.user_trades(symbol, start_ms=start_ms)


class TracingStore:
    """The state store, every write (and read the shell makes for the machine) recorded."""

    def __init__(self, inner: StateStore, trace: list[Entry]) -> None:
        self.inner = inner
        self.trace = trace

    def persist(self, state: lcm.LifecycleState, commands: Any, *, now_ms: int) -> None:
        self.trace.append(("persist", lcm.encode_state(state), tuple(commands), now_ms))
        self.inner.persist(state, commands, now_ms=now_ms)

    def load_lifecycle(self, trade_id: str) -> Any:
        self.trace.append(("read", LoadLifecycle(trade_id=trade_id)))
        return self.inner.load_lifecycle(trade_id)

    def load_lifecycles(self, *, include_closed: bool = False) -> Any:
        self.trace.append(("read", LoadLifecycles(include_closed=include_closed)))
        return self.inner.load_lifecycles(include_closed=include_closed)

    def get_meta(self, key: str) -> str | None:
        self.trace.append(("read", GetMeta(key=key)))
        return self.inner.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.trace.append(("meta", key, value))
        self.inner.set_meta(key, value)


class TracingJournal:
    def __init__(self, inner: TradeJournal, trace: list[Entry]) -> None:
        self.inner = inner
        self.trace = trace

    def write(self, record: Any) -> Any:
        self.trace.append(("journal", record))
        return self.inner.write(record)


class TracingRisk(trio.abc.SendChannel[Any]):
    def __init__(self, trace: list[Entry]) -> None:
        self.trace = trace
        self.msgs: list[Any] = []

    async def send(self, value: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.trace.append(("risk", value))
        self.msgs.append(value)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class TracingSymbol:
    def __init__(self, symbol: str, trace: list[Entry]) -> None:
        self.symbol = symbol
        self.trace = trace

    def send_nowait(self, value: Any) -> None:
        self.trace.append(("symbol", self.symbol, value))


async def run_trio(steps: list[Step], tmp: Path) -> tuple[list[Entry], Any]:
    trace: list[Entry] = []
    clock = TrioWallClock(T0)
    paper = PaperExchange(cfg=CFG.execution, rules=dict(RULES), now_ms=clock.now_ms)
    risk = TracingRisk(trace)
    store = StateStore.open(tmp / "state.sqlite")
    journal = TradeJournal(directory=tmp / "logs", cfg=LoggingConfig(), clock=clock)
    ex = Execution(
        cfg=CFG,
        mode="PAPER_LIVE",
        gateway=TracingGateway(paper, trace),  # type: ignore[arg-type]
        store=TracingStore(store, trace),  # type: ignore[arg-type]
        journal=TracingJournal(journal, trace),  # type: ignore[arg-type]
        rules_by_symbol=RULES,
        wall_clock=clock,
        risk_send=risk,
        symbol_sends={s: TracingSymbol(s, trace) for s in RULES},  # type: ignore[misc]
        journal_in_thread=False,
    )

    def set_price(symbol: str, price: str, volume: str | None) -> None:
        p = D(price)
        tick = RULES[symbol].tick_size
        now = clock.now_ms()
        paper.on_mark(symbol, p, 0.0, now + 3_600_000, now)
        paper.on_trade_price(symbol, p, now, volume=None if volume is None else D(volume))
        paper.on_book(symbol, p - tick, p + tick, now)

    seen = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(paper.run)
        send, recv = trio.open_memory_channel[Any](16)
        await nursery.start(ex.run, recv)
        for step in steps:
            if step.price is not None:
                set_price(*step.price)
            if step.message is not None:
                await send.send(step.message)
            await trio.sleep(step.wait_ms / 1000)
            requests = [m for m in risk.msgs if isinstance(m, RetryRequested)]
            while seen < len(requests):
                await send.send(retry_answer(seen, requests[seen]))
                seen += 1
                await trio.sleep(RETRY_ANSWER_WAIT_MS / 1000)
                requests = [m for m in risk.msgs if isinstance(m, RetryRequested)]
        nursery.cancel_scope.cancel()
    store.close()
    return trace, exchange_state(paper)


def first_difference(a: list[Entry], b: list[Entry]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"entry {i}:\n  direct: {x!r}\n  trio:   {y!r}"
    return f"lengths differ: direct {len(a)}, trio {len(b)}"


@pytest.mark.parametrize("seed", SEEDS)
def test_machine_and_trio_shell_agree(seed: int, tmp_path: Path) -> None:
    steps = build(seed)
    (tmp_path / "direct").mkdir()
    (tmp_path / "trio").mkdir()
    direct, direct_exchange = run_direct(steps, tmp_path / "direct")
    shell, shell_exchange = trio.run(
        run_trio, steps, tmp_path / "trio", clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert direct == shell, first_difference(direct, shell)
    assert direct_exchange == shell_exchange
    kinds = {e[0] for e in direct}
    # The stream exercises what parity is about: orders placed and cancelled, trades closed.
    assert {"call", "persist", "journal", "risk"} <= kinds, sorted(kinds)

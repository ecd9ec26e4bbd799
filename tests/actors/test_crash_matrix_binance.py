"""Crash matrix (AC2) against the fake Binance: the Execution actor drives a `SimExchange` through the real
`BinanceRestClient` + `UserStream` + `BinanceGateway`. At every step of a trade the bot is killed abruptly
(its nursery cancelled: no shutdown code runs) and a new incarnation (new REST client, new user stream, same
exchange, same state file) must find: every open position protected by exactly one algo stop at the right
trigger and size, no client id sent twice, each trade at most once in trades.jsonl, and the wallet and the
open risk it reports unchanged by the restart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stamina
import trio
import trio.testing
from test_execution import CFG, Crash, RecordingGateway, make_plan

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.execution import Execution
from futures_actor.actors.messages import AccountUpdated, AmendStop, KillSwitch, PositionUpdated, SubmitPlan
from futures_actor.binance.binance_gateway import BinanceGateway, user_stream_factory
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.sim import SimExchange, memory_connector
from futures_actor.core.config import LoggingConfig
from futures_actor.core.models import TradePlan
from futures_actor.core.secrets import Secret
from futures_actor.core.types import Side
from futures_actor.state.journal import TradeJournal, iter_trade_records
from futures_actor.state.store import StateStore
from tests.acceptance.harness import (
    SIM_API_KEY,
    SIM_API_SECRET,
    SIM_REST_BASE,
    SIM_WS_BASE,
    _FollowingTransport,
    make_sim_exchange,
    sim_rules,
)

D = Decimal
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SYMBOLS = ("BTCUSDT", "ETHUSDT")
RULES = sim_rules(SYMBOLS)  # the recorded mainnet filters the sim serves (min notional included)
BTC = make_plan(entry="60000.0", stop="58800.0", target="62400.0")
ETH = make_plan(
    symbol="ETHUSDT", side=Side.SHORT, qty="0.100", entry="3000.00", stop="3060.00", target="2880.00"
)
PLANS = {p.symbol: p for p in (BTC, ETH)}


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(autouse=True)
def _stamina_no_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


async def settle(seconds: float = 0.5) -> None:
    """Let requests, user-stream events and timers flow (trio time; jumps under the mock clock)."""
    await trio.sleep(seconds)


class SimHarness:
    """One bot incarnation (Execution + BinanceGateway + store + journal) against a `SimExchange` that
    outlives it. `gw` is a `RecordingGateway` around the real gateway (crash hooks, request log)."""

    def __init__(self, tmp: Path, sim: SimExchange | None = None) -> None:
        self.tmp = tmp
        self.clock = TrioWallClock(T0)
        self.sim = sim if sim is not None else make_sim_exchange(CFG, SYMBOLS, start_ms=T0)
        self.gw: RecordingGateway | None = None
        self.requests: list[tuple[str, str]] = []  # every incarnation's gateway calls
        self.risk_msgs: list[Any] = []
        self.store: StateStore | None = None
        self.ex: Execution | None = None
        self.inbox: trio.MemorySendChannel[Any] | None = None
        self.hook: Callable[[str, str, str, Any], None] | None = None
        self.crash_scope: trio.CancelScope | None = None
        self.listed_rules: dict[str, Any] | None = None  # every listed symbol's rules (out of universe too)
        self.metrics: Any = None  # an `actors.metrics.Metrics` to read the watchdog's gauge
        for plan in PLANS.values():
            self.set_price(plan.symbol, str(plan.entry_price))

    def set_price(self, symbol: str, price: str, *, volume: str | None = None) -> None:
        """A trade at `price` on the venue now (the mark follows it)."""
        now = self.clock.now_ms()
        if now > self.sim.now_ms:
            self.sim.advance_to(now)
        self.sim.set_price(symbol, D(price), volume=None if volume is None else D(volume))

    async def start(self, nursery: trio.Nursery) -> Execution:
        """A fresh incarnation in `nursery`: new REST client, user stream, store handle and journal."""
        self.store = StateStore.open(self.tmp / "state.sqlite")
        journal = TradeJournal(directory=self.tmp / "logs", cfg=LoggingConfig(), clock=self.clock)
        rest = BinanceRestClient(
            cfg=CFG.exchange,
            wall_clock=self.clock,
            api_key=Secret(SIM_API_KEY),
            api_secret=Secret(SIM_API_SECRET),
            transport=_FollowingTransport(self.sim, self.clock),  # type: ignore[arg-type]
            base_url=SIM_REST_BASE,
        )
        binance = BinanceGateway(
            rest=rest,
            user_stream=user_stream_factory(
                cfg=CFG.exchange,
                rest=rest,
                ws_base=SIM_WS_BASE,
                connector=memory_connector(self.sim, nursery),
            ),
        )
        gw = RecordingGateway(binance)  # type: ignore[arg-type]
        gw.requests = self.requests
        gw.hook = self.hook  # type: ignore[assignment]
        gw.crash_scope = self.crash_scope
        self.gw = gw
        await nursery.start(gw.run)
        risk_send, risk_recv = trio.open_memory_channel[Any](10_000)
        sym_send, sym_recv = trio.open_memory_channel[Any](10_000)
        send, recv = trio.open_memory_channel[Any](16)
        self.inbox = send
        self.ex = Execution(
            cfg=CFG,
            mode="LIVE",
            gateway=gw,
            store=self.store,
            journal=journal,
            rules_by_symbol=RULES,
            wall_clock=self.clock,
            risk_send=risk_send,
            symbol_sends={s: sym_send for s in SYMBOLS},
            journal_in_thread=False,
            listed_rules=self.listed_rules,
            metrics=self.metrics,
        )
        nursery.start_soon(self._collect, risk_recv, self.risk_msgs)
        nursery.start_soon(self._collect, sym_recv, [])
        await nursery.start(self.ex.run, recv)
        return self.ex

    def arm(self, hook: Callable[[str, str, str, Any], None] | None) -> None:
        self.hook = hook
        if self.gw is not None:
            self.gw.hook = hook  # type: ignore[assignment]

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

    def positions(self) -> dict[str, Decimal]:
        """Signed position amount per symbol on the venue (non-zero only)."""
        return {s: a for s in SYMBOLS if (a := self.sim.position_amount(s)) != 0}

    def stops(self, symbol: str) -> list[Any]:
        """The open algo (conditional) orders of `symbol` on the venue."""
        return list(self.sim.engine.open_algos(symbol))

    def regular_orders(self, symbol: str) -> list[Any]:
        return list(self.sim.engine.open_orders(symbol))

    def entry_price(self, symbol: str) -> Decimal:
        return D(self.sim.engine.account.position(symbol).entry_price)


def tick(symbol: str) -> Decimal:
    return RULES[symbol].tick_size


def assert_protected(h: SimHarness, symbol: str, stop: Decimal) -> None:
    """Exactly one reduce-only STOP_MARKET algo order, for the whole position, at `stop`."""
    amount = h.sim.position_amount(symbol)
    assert amount != 0, f"{symbol}: no position"
    algos = h.stops(symbol)
    assert len(algos) == 1, (symbol, algos)
    [a] = algos
    assert a.order_type == "STOP_MARKET"
    assert a.reduce_only
    assert a.quantity == abs(amount), (symbol, a.quantity, amount)
    assert a.trigger_price == stop, (symbol, a.trigger_price, stop)
    assert a.side == ("SELL" if amount > 0 else "BUY")
    assert h.sim.algo_by_client_id(a.client_algo_id) is a


def assert_unprotected_nowhere(h: SimHarness) -> None:
    """Every open position on the venue has exactly one stop of the right size and side."""
    for symbol, amount in h.positions().items():
        algos = h.stops(symbol)
        assert len(algos) == 1, (symbol, amount, algos)
        assert algos[0].quantity == abs(amount)
        assert algos[0].side == ("SELL" if amount > 0 else "BUY")


def assert_no_cid_twice(h: SimHarness) -> None:
    sent = h.sim.client_ids_sent()
    assert len(sent) == len(set(sent)), sent


def crash_at(method: str, suffix: str, phase: str, *, nth: int = 1) -> Callable[[str, str, str, Any], None]:
    seen = [0]

    def hook(m: str, cid: str, ph: str, result: Any) -> None:
        if m == method and cid.endswith(suffix) and ph == phase:
            seen[0] += 1
            if seen[0] == nth:
                raise Crash(f"{method} {cid} {phase}")

    return hook


async def submit(h: SimHarness, plan: TradePlan) -> None:
    """Submit at mid = entry + 1 tick (for a long; - 1 tick for a short): the limit rests."""
    mid = plan.entry_price + tick(plan.symbol) * plan.side.sign
    h.set_price(plan.symbol, str(mid))
    await h.send(SubmitPlan(plan=plan, mid_price=mid))


async def fill_entry(h: SimHarness, plan: TradePlan) -> None:
    """Submit, then trade through the entry: a full fill."""
    await submit(h, plan)
    h.set_price(plan.symbol, str(plan.entry_price - 5 * tick(plan.symbol) * plan.side.sign))
    await settle()


async def entry_only(h: SimHarness) -> None:
    await submit(h, BTC)


async def partial_fill(h: SimHarness) -> None:
    await submit(h, BTC)
    # Through the limit with little volume: participation of 0.04 fills part of 0.010.
    h.set_price("BTCUSDT", str(BTC.entry_price - tick("BTCUSDT")), volume="0.04")
    await settle()


async def full_fill(h: SimHarness) -> None:
    await fill_entry(h, BTC)


TRAIL_STOP = D("59400.0")


async def trailing(h: SimHarness) -> None:
    await fill_entry(h, BTC)
    h.set_price("BTCUSDT", "61200.0")
    await h.send(
        AmendStop(trade_id=BTC.trade_id, symbol="BTCUSDT", new_stop=59400.0, reference_price=61200.0)
    )


async def exit_at_target(h: SimHarness) -> None:
    await fill_entry(h, BTC)
    assert BTC.target_price is not None
    h.set_price("BTCUSDT", str(BTC.target_price + 10 * tick("BTCUSDT")), volume="10")
    await settle()


async def kill_two(h: SimHarness) -> None:
    await fill_entry(h, BTC)
    await fill_entry(h, ETH)
    await h.send(KillSwitch(reason="TEST"))


Scenario = Callable[[SimHarness], Awaitable[None]]

# step: (scenario, crash hook, expected stop per symbol still open after the restart, records expected)
MATRIX: dict[str, tuple[Scenario, Callable[[], Any], dict[str, Decimal], int]] = {
    "after_entry_sent": (entry_only, lambda: crash_at("place_order", "E1", "after"), {}, 1),
    "after_partial_fill": (
        partial_fill,
        lambda: crash_at("place_stop", "S1", "before"),
        {"BTCUSDT": BTC.stop_price},
        0,
    ),
    "after_full_fill": (
        full_fill,
        lambda: crash_at("place_stop", "S1", "before"),
        {"BTCUSDT": BTC.stop_price},
        0,
    ),
    "after_stop_placed": (
        full_fill,
        lambda: crash_at("place_stop", "S1", "after"),
        {"BTCUSDT": BTC.stop_price},
        0,
    ),
    "during_trailing_move": (
        trailing,
        lambda: crash_at("cancel_stop", "S1", "before"),
        {"BTCUSDT": TRAIL_STOP},
        0,
    ),
    "during_exit": (exit_at_target, lambda: crash_at("cancel_stop", "S1", "before"), {}, 1),
    "during_kill": (kill_two, lambda: crash_at("place_order", "K1", "after"), {"ETHUSDT": ETH.stop_price}, 1),
}


def reported_open_risk(msgs: list[Any]) -> Decimal:
    """Open risk from the exposures execution reported: the last `PositionUpdated` of each trade."""
    last: dict[str, PositionUpdated] = {}
    for m in msgs:
        if isinstance(m, PositionUpdated):
            last[m.trade_id] = m
    return sum((m.qty * abs(m.entry_price - m.stop_price) for m in last.values() if m.qty > 0), D(0))


@pytest.mark.parametrize("step", list(MATRIX))
async def test_crash_and_restart(step: str, fast_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    scenario, make_hook, expected_stops, n_records = MATRIX[step]
    h = SimHarness(fast_tmp)
    with trio.CancelScope() as crash:
        h.crash_scope = crash
        async with trio.open_nursery() as bot:
            await h.start(bot)
            h.arm(make_hook())
            await scenario(h)
            await settle(5)
            bot.cancel_scope.cancel()
    assert crash.cancelled_caught, f"{step}: the crash point was never reached"
    assert h.store is not None
    h.store.close()  # the process died: nothing but the file (and the venue) survives
    h.arm(None)
    h.crash_scope = None
    positions_at_crash = h.positions()
    wallet_at_crash = h.sim.wallet_balance()
    h.risk_msgs.clear()
    # The crash happened where the step says (the interrupted action is visible on the venue).
    at_crash = {
        "after_entry_sent": lambda: positions_at_crash == {} and len(h.regular_orders("BTCUSDT")) == 1,
        "after_partial_fill": lambda: D(0) < positions_at_crash.get("BTCUSDT", D(0)) < BTC.quantity,
        "after_full_fill": lambda: (
            positions_at_crash == {"BTCUSDT": BTC.quantity} and h.stops("BTCUSDT") == []
        ),
        "after_stop_placed": lambda: len(h.stops("BTCUSDT")) == 1 and h.regular_orders("BTCUSDT") == [],
        "during_trailing_move": lambda: len(h.stops("BTCUSDT")) == 2,
        "during_exit": lambda: positions_at_crash == {} and len(h.stops("BTCUSDT")) == 1,
        "during_kill": lambda: positions_at_crash == {"ETHUSDT": -ETH.quantity},
    }
    assert at_crash[step](), (step, positions_at_crash, h.stops("BTCUSDT"), h.regular_orders("BTCUSDT"))

    async with trio.open_nursery() as bot:
        ex = await h.start(bot)
        await settle(5)
        positions = h.positions()
        # Every open position: exactly one algo stop, for the whole position, at the right price.
        assert set(positions) == set(expected_stops), (step, positions)
        for sym, stop in expected_stops.items():
            assert_protected(h, sym, stop)
            assert h.regular_orders(sym) == [] or all(o.reduce_only for o in h.regular_orders(sym))
            [lc] = [t for t in ex.open_trades() if t.symbol == sym]
            assert lc.stop_price == stop
            assert lc.position_qty == abs(positions[sym])
        # The restart itself neither opened, grew nor realized anything.
        assert positions == {s: q for s, q in positions_at_crash.items() if s in positions}
        assert h.sim.wallet_balance() == wallet_at_crash
        [acct] = [m for m in h.risk_msgs if isinstance(m, AccountUpdated)][:1]
        assert acct.wallet_balance_usd == float(wallet_at_crash)
        # Open risk: what execution reports == what the venue holds == the plan's stops.
        expected_risk = sum(
            (abs(q) * abs(h.entry_price(s) - expected_stops[s]) for s, q in positions.items()), D(0)
        )
        venue_risk = sum(
            (abs(q) * abs(h.entry_price(s) - h.stops(s)[0].trigger_price) for s, q in positions.items()), D(0)
        )
        assert venue_risk == expected_risk
        assert reported_open_risk(h.risk_msgs) == expected_risk
        assert_no_cid_twice(h)
        ids = [r["trade_id"] for r in h.records()]
        assert len(ids) == len(set(ids)) == n_records, (step, ids)
        # Driving the market on: every remaining position still exits exactly once, through its stop.
        for sym, stop in expected_stops.items():
            side = PLANS[sym].side
            h.set_price(sym, str(stop - 10 * tick(sym) * side.sign), volume="10")
        await settle(5)
        assert h.positions() == {}
        assert all(h.stops(s) == [] for s in SYMBOLS)
        assert all(h.regular_orders(s) == [] for s in SYMBOLS)
        ids = [r["trade_id"] for r in h.records()]
        assert len(ids) == len(set(ids)) == n_records + len(expected_stops), (step, ids)
        assert_no_cid_twice(h)
        bot.cancel_scope.cancel()


async def test_restarts_send_nothing_new(fast_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Restarting with nothing changed sends no order to the venue (reconcile is idempotent)."""
    h = SimHarness(fast_tmp)
    async with trio.open_nursery() as bot:
        await h.start(bot)
        await fill_entry(h, BTC)
        bot.cancel_scope.cancel()
    placed = h.sim.client_ids_sent()
    assert [c[-2:] for c in placed] == ["E1", "S1", "T1"]
    for _ in range(2):
        assert h.store is not None
        h.store.close()
        async with trio.open_nursery() as bot:
            await h.start(bot)
            await settle(CFG.execution.limit_ttl_seconds)
            bot.cancel_scope.cancel()
    assert h.sim.client_ids_sent() == placed
    assert_protected(h, "BTCUSDT", BTC.stop_price)


@pytest.mark.parametrize(
    "step",
    [
        "after_partial_fill",
        "after_full_fill",
        "after_stop_placed",
        "during_trailing_move",
        "during_kill",
    ],
)
async def test_targets_rebuilt_after_restart(
    step: str, fast_tmp: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """AC2: every position still open after the restart has its reduce-only take-profit for the whole
    position at the plan's target (besides its stop, checked by `test_crash_and_restart`)."""
    scenario, make_hook, expected_stops, _ = MATRIX[step]
    h = SimHarness(fast_tmp)
    with trio.CancelScope() as crash:
        h.crash_scope = crash
        async with trio.open_nursery() as bot:
            await h.start(bot)
            h.arm(make_hook())
            await scenario(h)
            await settle(5)
    assert crash.cancelled_caught
    assert h.store is not None
    h.store.close()
    h.arm(None)
    h.crash_scope = None
    async with trio.open_nursery() as bot:
        await h.start(bot)
        await settle(5)
        positions = h.positions()
        assert set(positions) == set(expected_stops)
        targets = {s: h.regular_orders(s) for s in positions}
        bot.cancel_scope.cancel()
    for sym, amount in positions.items():
        assert len(targets[sym]) == 1, (sym, targets[sym])
        [t] = targets[sym]
        assert t.reduce_only
        assert t.type == "LIMIT"
        assert t.price == PLANS[sym].target_price
        assert t.orig_qty == abs(amount)

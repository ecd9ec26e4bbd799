"""Protection as an exchange-checked invariant (issue 9, BOT_SPEC §9, §10 [resolved]), tested as an outsider.

The Execution actor runs over the real `BinanceRestClient` + `UserStream` + `BinanceGateway` against a
`SimExchange`; a person trades on the same account by hand through their own REST client (client ids
without our prefix). Every check reads the fake exchange, never the bot's own state: each position has
exactly one reduce-only stop on the opposite side for its whole quantity, no order of ours sits on a flat
symbol, no client id is sent twice.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
import trio.testing
from test_crash_matrix_binance import (  # the crash matrix's harness, fixtures included
    CFG,
    T0,
    SimHarness,
    _stamina_no_waits,  # noqa: F401 (autouse fixture)
    assert_no_cid_twice,
    settle,
)
from test_http_health import snapshot

from futures_actor.actors.http_health import HealthHttpApp, HttpRequest
from futures_actor.actors.messages import KillSwitch, TradeClosed
from futures_actor.actors.metrics import UNPROTECTED_POSITIONS, Metrics
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.core.secrets import Secret
from tests.acceptance.harness import (
    SIM_API_KEY,
    SIM_API_SECRET,
    SIM_REST_BASE,
    _FollowingTransport,
    make_sim_exchange,
    sim_rules,
)

D = Decimal
LISTED = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "BNBUSDT")  # the bot's universe is BTCUSDT and ETHUSDT only
PRICES = {"BTCUSDT": "60000.0", "ETHUSDT": "3000.00", "XRPUSDT": "0.5000", "BNBUSDT": "600.000"}
STOP_PCT = D(repr(CFG.strategies.trend_pullback.stop_pct))
RECONCILE_S = CFG.execution.reconcile_interval_seconds


@pytest.fixture
async def h(fast_tmp: Path, autojump_clock: trio.testing.MockClock) -> SimHarness:
    sim = make_sim_exchange(CFG, LISTED, start_ms=T0)
    harness = SimHarness(fast_tmp, sim=sim)
    harness.listed_rules = sim_rules(LISTED)
    for symbol, price in PRICES.items():
        harness.set_price(symbol, price)
    return harness


class Hand:
    """A person trading on the bot's account by hand: their own REST client, client ids without our prefix."""

    def __init__(self, h: SimHarness) -> None:
        self._h = h
        self._n = itertools.count(1)
        self.rest = BinanceRestClient(
            cfg=CFG.exchange,
            wall_clock=h.clock,
            api_key=Secret(SIM_API_KEY),
            api_secret=Secret(SIM_API_SECRET),
            transport=_FollowingTransport(h.sim, h.clock),  # type: ignore[arg-type]
            base_url=SIM_REST_BASE,
        )

    async def market(
        self, symbol: str, side: Literal["BUY", "SELL"], qty: str, *, reduce_only: bool = False
    ) -> None:
        await self.rest.place_order(
            symbol=symbol,
            side=side,
            order_type="MARKET",
            client_order_id=f"hand{next(self._n)}",
            quantity=D(qty),
            reduce_only=reduce_only or None,
        )

    async def limit(self, symbol: str, side: Literal["BUY", "SELL"], qty: str, price: str, cid: str) -> None:
        await self.rest.place_order(
            symbol=symbol,
            side=side,
            order_type="LIMIT",
            client_order_id=cid,
            quantity=D(qty),
            price=D(price),
            time_in_force="GTC",
        )


# ------------------------------------------------------------------------------ invariants (exchange only)


async def started(h: SimHarness, bot: trio.Nursery, *, settle_s: float = 2) -> None:
    """The bot started in `bot` and run for `settle_s` simulated seconds (its start-up reconcile done)."""
    await h.start(bot)
    await settle(settle_s)


def positions(h: SimHarness) -> dict[str, Decimal]:
    """Signed position amount per listed symbol on the venue (non-zero only)."""
    return {s: a for s in LISTED if (a := h.sim.position_amount(s)) != 0}


def our_orders(h: SimHarness, symbol: str) -> list[str]:
    prefix = CFG.exchange.client_id_prefix + "-"
    regular = [o.client_order_id for o in h.sim.engine.open_orders(symbol)]
    algos = [a.client_algo_id for a in h.sim.engine.open_algos(symbol)]
    return [c for c in regular + algos if c.startswith(prefix)]


def violations(h: SimHarness) -> list[str]:
    """The protection invariant, read from the venue: [] when it holds."""
    out: list[str] = []
    for symbol, amount in positions(h).items():
        stops = [a for a in h.sim.engine.open_algos(symbol) if a.order_type == "STOP_MARKET"]
        good = [
            a
            for a in stops
            if a.reduce_only and a.quantity == abs(amount) and a.side == ("SELL" if amount > 0 else "BUY")
        ]
        if len(stops) != 1 or len(good) != 1:
            out.append(f"{symbol} {amount}: stops {[(a.side, a.quantity, a.reduce_only) for a in stops]}")
    for symbol in LISTED:
        if symbol not in positions(h) and our_orders(h, symbol):
            out.append(f"{symbol} flat with our orders {our_orders(h, symbol)}")
    return out


def trigger(h: SimHarness, symbol: str) -> Decimal:
    [a] = [a for a in h.sim.engine.open_algos(symbol) if a.order_type == "STOP_MARKET"]
    return D(a.trigger_price)


def adoption_stop(h: SimHarness, symbol: str) -> Decimal:
    """The stop the configured adoption distance gives the venue's position (rounded away, to the tick)."""
    pos = h.sim.engine.account.position(symbol)
    entry = D(pos.entry_price)
    tick = sim_rules((symbol,))[symbol].tick_size
    if pos.amount > 0:
        return (entry * (1 - STOP_PCT) / tick).to_integral_value(rounding="ROUND_FLOOR") * tick
    return (entry * (1 + STOP_PCT) / tick).to_integral_value(rounding="ROUND_CEILING") * tick


def closed(h: SimHarness) -> list[TradeClosed]:
    return [m for m in h.risk_msgs if isinstance(m, TradeClosed)]


# ------------------------------------------------------------------------------ #1 re-adoption


class TestReadoption:
    async def test_readopted_position_gets_a_new_trade_and_a_stop(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Opened by hand, adopted, its stop rejected twice (-2021: the mark is already through it), closed
        by a reduce-only MARKET; then the same long is opened by hand again: it is adopted as a NEW trade and
        protected, and no phantom close is ever booked."""
        hand = Hand(h)
        await hand.market("BTCUSDT", "BUY", "0.010")
        h.sim.set_price("BTCUSDT", D("60000.0"), mark=D("59000.0"))  # below the adoption stop 59400
        async with trio.open_nursery() as bot:
            await started(h, bot, settle_s=5)
            assert positions(h) == {}, "failed protection closes the adopted position"
            [first] = h.records()
            assert first["strategy"] == "ADOPTED"
            # A MARKET close after failed protection is not a stop exit (#15), nor a close by hand: it is
            # the bot's own emergency close, booked when its (ACK-placed) order's fill is known.
            assert first["result"]["reason"] == "KILL_SWITCH"
            assert first["risk"]["equity_usd"] > 0  # a real equity: the performance rebuild accepts it
            h.sim.set_price("BTCUSDT", D("60000.0"), mark=D("60000.0"))
            await hand.market("BTCUSDT", "BUY", "0.010")
            await settle(RECONCILE_S + 1)
            assert violations(h) == []
            assert trigger(h, "BTCUSDT") == adoption_stop(h, "BTCUSDT")
            await settle(2 * RECONCILE_S)
            assert violations(h) == []
            records = h.records()
            assert len(records) == 1, "no phantom close"
            assert len(closed(h)) == 1
            assert_no_cid_twice(h)
            bot.cancel_scope.cancel()

    async def test_readoption_survives_restarts(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Opened by hand while the bot runs, adopted; the bot dies; closed by hand while it is down; the
        next incarnation books the close at the real fills. Every adoption its own trade id, every close
        booked once, at the price it happened."""
        hand = Hand(h)
        for i in range(3):
            async with trio.open_nursery() as bot:
                await started(h, bot)
                assert len(h.records()) == i
                await hand.market("BTCUSDT", "BUY", "0.010")
                await settle(RECONCILE_S + 1)
                assert violations(h) == []
                bot.cancel_scope.cancel()
            assert h.store is not None
            h.store.close()
            h.set_price("BTCUSDT", str(60000 + 100 * (i + 1)))
            await hand.market("BTCUSDT", "SELL", "0.010", reduce_only=True)
        async with trio.open_nursery() as bot:
            await started(h, bot)
            assert violations(h) == []
            records = h.records()
            assert len(records) == 3
            assert len({r["trade_id"] for r in records}) == 3
            assert [r["result"]["reason"] for r in records] == ["MANUAL"] * 3
            for i, r in enumerate(records):  # booked at the real exit, not at the entry price
                assert abs(r["result"]["exit_price"] - (60000 + 100 * (i + 1))) < 100, r["result"]
                assert r["result"]["pnl_usd"] != 0.0
            assert_no_cid_twice(h)
            bot.cancel_scope.cancel()


# ------------------------------------------------------------------------------ #2 "foreign" positions


class TestForeignPositionsProtected:
    async def test_out_of_universe_position_is_protected(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        hand = Hand(h)
        await hand.market("XRPUSDT", "SELL", "100")
        async with trio.open_nursery() as bot:
            await started(h, bot)
            assert positions(h) == {"XRPUSDT": D("-100")}
            assert violations(h) == []
            assert trigger(h, "XRPUSDT") == adoption_stop(h, "XRPUSDT")
            bot.cancel_scope.cancel()

    async def test_position_with_unparseable_prefixed_order_is_protected(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        hand = Hand(h)
        await hand.market("ETHUSDT", "BUY", "0.100")
        await hand.limit("ETHUSDT", "BUY", "0.100", "2000.00", cid="fa-not-one-of-ours")
        await hand.limit("ETHUSDT", "SELL", "0.100", "4000.00", cid="myownorder")
        async with trio.open_nursery() as bot:
            await started(h, bot)
            assert violations(h) == []
            left = {o.client_order_id for o in h.sim.engine.open_orders("ETHUSDT")}
            assert {"fa-not-one-of-ours", "myownorder"} <= left, "orders not provably ours stay untouched"
            bot.cancel_scope.cancel()

    async def test_position_opened_by_hand_while_running(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        hand = Hand(h)
        async with trio.open_nursery() as bot:
            await h.start(bot)
            await hand.market("BNBUSDT", "BUY", "0.50")
            await settle(RECONCILE_S + 1)
            assert violations(h) == []
            bot.cancel_scope.cancel()

    async def test_position_opened_by_hand_is_protected_in_seconds(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The user stream reports the new position: the bot looks again a moment later and protects it
        then, not at the next periodic reconcile (300 s by default: five minutes naked)."""
        assert RECONCILE_S >= 60
        hand = Hand(h)
        async with trio.open_nursery() as bot:
            await started(h, bot)
            await hand.market("BNBUSDT", "BUY", "0.50")
            await hand.market("BTCUSDT", "SELL", "0.010")
            await settle(CFG.execution.position_check_delay_seconds + 3)
            assert positions(h) == {"BNBUSDT": D("0.50"), "BTCUSDT": D("-0.010")}
            assert violations(h) == []
            bot.cancel_scope.cancel()


# ------------------------------------------------------------------------------ #3 the stop follows the position


class TestStopFollowsPosition:
    async def test_grown_and_shrunk_by_hand(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Adopted 0.010 with a stop of 0.010; 0.010 more bought by hand: the stop becomes 0.020. Then
        0.005 sold by hand: the stop becomes 0.015. Each is booked into the trade, nothing closed."""
        hand = Hand(h)
        await hand.market("BTCUSDT", "BUY", "0.010")
        async with trio.open_nursery() as bot:
            await started(h, bot)
            assert violations(h) == []
            await hand.market("BTCUSDT", "BUY", "0.010")
            await settle(2 * RECONCILE_S + 1)  # a periodic reconcile acts on a difference it sees twice
            assert positions(h) == {"BTCUSDT": D("0.020")}
            assert violations(h) == []
            await hand.market("BTCUSDT", "SELL", "0.005", reduce_only=True)
            await settle(2 * RECONCILE_S + CFG.execution.stop_resize_coalesce_seconds + 1)
            assert positions(h) == {"BTCUSDT": D("0.015")}
            assert violations(h) == []
            assert h.records() == []
            assert_no_cid_twice(h)
            bot.cancel_scope.cancel()


# ------------------------------------------------------------------------------ #5 closed outside the bot


def rejected_2022(h: SimHarness) -> list[Any]:
    return [
        r for r in h.sim.requests if r.method == "POST" and r.status == 400 and b"-2022" in (r.body or b"")
    ]


class TestClosedWhileDown:
    async def test_closed_by_hand_while_down_is_booked_at_its_real_exit(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        hand = Hand(h)
        await hand.market("BTCUSDT", "BUY", "0.010")
        async with trio.open_nursery() as bot:
            await started(h, bot)
            assert violations(h) == []
            bot.cancel_scope.cancel()
        assert h.store is not None
        h.store.close()
        entry = D(h.sim.engine.account.position("BTCUSDT").entry_price)
        h.set_price("BTCUSDT", "59700.0")
        await hand.market("BTCUSDT", "SELL", "0.010", reduce_only=True)
        sent_before = len(h.sim.client_ids_sent())
        async with trio.open_nursery() as bot:
            await started(h, bot, settle_s=RECONCILE_S + 1)
            assert positions(h) == {}
            assert violations(h) == []  # the stop of the closed position is gone too
            assert h.sim.client_ids_sent()[sent_before:] == [], "no doomed orders for a closed position"
            [rec] = h.records()
            assert rec["result"]["reason"] == "MANUAL"
            assert abs(D(str(rec["result"]["exit_price"])) - D("59700")) < D("100"), rec["result"]
            assert D(str(rec["result"]["exit_price"])) != entry
            assert rec["result"]["pnl_usd"] < 0
            [tc] = closed(h)
            assert tc.realized_pnl_usd == rec["result"]["pnl_usd"]  # the loss reaches the risk calendar
            bot.cancel_scope.cancel()

    async def test_stop_cancelled_and_position_closed_by_hand_while_running(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The person cancels our stop and closes the position: the bot reads the position before
        re-protecting, books the close at its real fill, sends nothing doomed (no -2022 storm)."""
        hand = Hand(h)
        await hand.market("ETHUSDT", "SELL", "0.100")
        async with trio.open_nursery() as bot:
            await started(h, bot)
            [stop] = [a for a in h.sim.engine.open_algos("ETHUSDT")]
            sent_before = len(h.sim.client_ids_sent())
            await hand.rest.cancel_algo_order(client_algo_id=stop.client_algo_id)
            h.set_price("ETHUSDT", "3010.00")
            await hand.market("ETHUSDT", "BUY", "0.100", reduce_only=True)
            await settle(RECONCILE_S + 1)
            assert positions(h) == {}
            assert violations(h) == []
            prefix = CFG.exchange.client_id_prefix + "-"
            assert [
                c for c in h.sim.client_ids_sent()[sent_before:] if c.startswith(prefix)
            ] == []  # the bot's
            [rec] = h.records()
            assert rec["result"]["reason"] == "MANUAL"
            assert abs(D(str(rec["result"]["exit_price"])) - D("3010")) < D("10")
            bot.cancel_scope.cancel()


# ------------------------------------------------------------------------------ #14 the kill switch flattens the account


class TestKillSwitchFlattensAccount:
    async def test_kill_closes_every_position(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An adopted trade of 0.010 inside a position of 0.020 (0.010 added by hand just now) and an
        out-of-universe position opened by hand just now: the kill switch closes all of it."""
        hand = Hand(h)
        await hand.market("BTCUSDT", "BUY", "0.010")
        async with trio.open_nursery() as bot:
            await started(h, bot)
            await hand.market("BTCUSDT", "BUY", "0.010")
            await hand.market("BNBUSDT", "SELL", "0.50")
            await hand.limit("BNBUSDT", "BUY", "0.50", "500.000", cid="myownbid")
            assert h.inbox is not None
            await h.inbox.send(KillSwitch(reason="TEST"))
            await settle(5)
            assert positions(h) == {}
            for symbol in LISTED:
                assert our_orders(h, symbol) == [], symbol
            assert violations(h) == []
            assert {r["result"]["reason"] for r in h.records()} == {"KILL_SWITCH"}
            assert_no_cid_twice(h)
            bot.cancel_scope.cancel()


# ------------------------------------------------------------------------------ the watchdog


class TestWatchdog:
    async def test_unprotected_position_is_counted_until_repaired(
        self, h: SimHarness, autojump_clock: trio.testing.MockClock
    ) -> None:
        h.metrics = Metrics()
        hand = Hand(h)
        await hand.market("BTCUSDT", "BUY", "0.010")
        h.sim.faults.fail_next("/fapi/v1/algoOrder", status=503, times=10_000)
        async with trio.open_nursery() as bot:
            await started(h, bot, settle_s=5)
            assert violations(h) != []
            assert h.metrics.get(UNPROTECTED_POSITIONS) == 1
            app = HealthHttpApp(snapshot=snapshot, metrics=h.metrics)
            resp = await app.handle(HttpRequest(method="GET", target="/health"))
            assert resp.status == 503
            body = json.loads(resp.body)
            assert (body["state"], body["unprotected_positions"]) == ("DEGRADED", 1)
            assert "futures_actor_unprotected_positions 1" in h.metrics.render()
            h.sim.faults.http.clear()
            await settle(2 * RECONCILE_S + 1)
            assert violations(h) == []
            assert h.metrics.get(UNPROTECTED_POSITIONS) == 0
            resp = await app.handle(HttpRequest(method="GET", target="/health"))
            assert resp.status == 200
            assert json.loads(resp.body)["unprotected_positions"] == 0
            bot.cancel_scope.cancel()

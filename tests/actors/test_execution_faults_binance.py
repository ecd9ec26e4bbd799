"""Exchange faults against the fake Binance: the Execution actor over the real `BinanceRestClient` +
`UserStream` + `BinanceGateway` and a `SimExchange` that produces the faults itself (lost responses, 5xx,
-2021, -2022, -4164, -2019) and would refuse a stop on the regular order endpoint (-4120). After every
scenario no position is left without exactly one protective stop, and no order exists twice."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stamina
import trio
import trio.testing
from test_crash_matrix_binance import (
    BTC,
    CFG,
    ETH,
    SimHarness,
    assert_no_cid_twice,
    assert_protected,
    assert_unprotected_nowhere,
    fill_entry,
    make_plan,
    settle,
    submit,
    tick,
)

from futures_actor.actors.messages import AmendStop, EntryAbandoned, KillSwitch, TradeClosed
from futures_actor.binance.sim import NewOrder, Rejection
from futures_actor.core.lifecycle import Phase
from futures_actor.core.models import TradePlan

D = Decimal
ORDER_PATH = "/fapi/v1/order"
ALGO_PATH = "/fapi/v1/algoOrder"
CONDITIONAL = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"})


@pytest.fixture
async def h(fast_tmp: Path, autojump_clock: trio.testing.MockClock) -> SimHarness:
    return SimHarness(fast_tmp)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(autouse=True)
def _stamina_no_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


def posts(h: SimHarness, path: str, cid_suffix: str = "") -> list[Any]:
    return [
        r
        for r in h.sim.requests
        if r.method == "POST" and r.path == path and (r.client_id or "").endswith(cid_suffix)
    ]


def one_cid(h: SimHarness, suffix: str) -> str:
    cids = {c for c in h.sim.client_ids_sent() if c.endswith(suffix)}
    assert len(cids) == 1, (suffix, h.sim.client_ids_sent())
    return cids.pop()


def orders_created(h: SimHarness, cid: str) -> int:
    """How many orders (regular + algo) exist on the venue under `cid`, in any state."""
    algos = [a for a in h.sim.engine.algos.values() if a.client_algo_id == cid]
    regular = [o for o in h.sim.orders_by_client_id(cid) if o.client_order_id == cid]
    # A triggered stop's child reuses the algo client id: count the algo only.
    return len(algos) + (0 if algos else len(regular))


def assert_resends_only_when_absent(h: SimHarness) -> None:
    """A placement client id is re-sent (same id) only after the venue said it does not exist; each
    client id names at most one order on the venue."""
    by_cid: dict[str, list[Any]] = {}
    for r in h.sim.requests:
        if r.client_id is not None:
            by_cid.setdefault(r.client_id, []).append(r)
    for cid, reqs in by_cid.items():
        placements = [i for i, r in enumerate(reqs) if r.method == "POST"]
        for prev, nxt in itertools.pairwise(placements):
            assert reqs[prev].status >= 500 or reqs[prev].status == -1, (cid, reqs)
            absent = [r for r in reqs[prev + 1 : nxt] if r.method == "GET" and r.status == 400]
            assert absent, f"{cid} re-sent without a query proving it absent: {reqs}"
        assert orders_created(h, cid) <= 1, cid


class TestLostResponses:
    """The placement is executed but its answer is lost: resolved by client id, never placed twice."""

    @pytest.mark.parametrize("mode", ["timeout", "503"])
    async def test_entry_response_lost(self, h: SimHarness, mode: Any, autojump_clock: Any) -> None:
        async with trio.open_nursery() as bot:
            await h.start(bot)
            h.sim.faults.lose_response_of_next_order(mode)
            await submit(h, BTC)
            await settle(CFG.exchange.recv_window_ms / 1000 + 5)
            e1 = one_cid(h, "E1")
            lost = posts(h, ORDER_PATH, "E1")
            assert lost[0].status == (-1 if mode == "timeout" else 503)
            assert len(h.sim.orders_by_client_id(e1)) == 1
            assert [o.status for o in h.sim.orders_by_client_id(e1)] == ["NEW"]
            h.set_price("BTCUSDT", str(BTC.entry_price - 5 * tick("BTCUSDT")))
            await settle(5)
            assert_protected(h, "BTCUSDT", BTC.stop_price)
            assert h.sim.position_amount("BTCUSDT") == BTC.quantity
            assert_no_cid_twice(h)
            assert_resends_only_when_absent(h)
            assert_unprotected_nowhere(h)
            bot.cancel_scope.cancel()

    @pytest.mark.parametrize("mode", ["timeout", "503"])
    async def test_stop_response_lost(self, h: SimHarness, mode: Any, autojump_clock: Any) -> None:
        async with trio.open_nursery() as bot:
            await h.start(bot)
            await submit(h, BTC)
            h.sim.faults.lose_response_of_next_order(mode)  # the next placement is the stop
            h.set_price("BTCUSDT", str(BTC.entry_price - 5 * tick("BTCUSDT")))
            await settle(1)
            # The answer is lost but the stop was executed: the venue already protects the position
            # while the client waits out recvWindow before asking.
            assert_protected(h, "BTCUSDT", BTC.stop_price)
            await settle(CFG.exchange.recv_window_ms / 1000 + 5)
            s1 = one_cid(h, "S1")
            [lost] = posts(h, ALGO_PATH)
            assert lost.client_id == s1
            assert lost.status == (-1 if mode == "timeout" else 503)
            assert_protected(h, "BTCUSDT", BTC.stop_price)
            assert h.stops("BTCUSDT")[0].client_algo_id == s1
            assert [c[-2:] for c in h.sim.client_ids_sent()] == ["E1", "S1", "T1"]
            assert_no_cid_twice(h)
            # The stop found by query is the live one: it closes the trade, once.
            h.set_price("BTCUSDT", str(BTC.stop_price - 10 * tick("BTCUSDT")), volume="10")
            await settle(5)
            assert h.positions() == {}
            [rec] = h.records()
            assert rec["result"]["reason"] == "SL"
            assert_unprotected_nowhere(h)
            bot.cancel_scope.cancel()


class TestServerErrors:
    """5xx on the stop placement (not executed): resolved, re-sent only when proven absent, protected."""

    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_5xx_on_stop(self, h: SimHarness, status: int, autojump_clock: Any) -> None:
        async with trio.open_nursery() as bot:
            await h.start(bot)
            await submit(h, BTC)
            h.sim.faults.fail_next(ALGO_PATH, status=status, msg="Internal error; unable to process.")
            h.set_price("BTCUSDT", str(BTC.entry_price - 5 * tick("BTCUSDT")))
            await settle(10)
            # Not executed: queried (absent), then sent again with the same id (REST client policy).
            s1 = [r for r in h.sim.requests if r.path == ALGO_PATH and (r.client_id or "").endswith("S1")]
            assert [(r.method, r.status) for r in s1] == [("POST", status), ("GET", 400), ("POST", 200)]
            assert_protected(h, "BTCUSDT", BTC.stop_price)
            assert_resends_only_when_absent(h)
            assert_unprotected_nowhere(h)
            bot.cancel_scope.cancel()

    @pytest.mark.parametrize("times", [2, 4, 12])
    async def test_5xx_burst_on_algo_endpoint(self, h: SimHarness, times: int, autojump_clock: Any) -> None:
        """A burst of 5xx on every algo request (placements and queries alike) while the stop is placed:
        the outcome stays unknown for a while, but the position ends protected by exactly one stop and
        no client id names two orders."""
        async with trio.open_nursery() as bot:
            await h.start(bot)
            await submit(h, BTC)
            h.sim.faults.fail_next(ALGO_PATH, status=503, times=times)
            h.set_price("BTCUSDT", str(BTC.entry_price - 5 * tick("BTCUSDT")))
            await settle(CFG.exchange.retry_wait_max_seconds * 4 + 30)
            assert h.sim.faults.http == []  # the whole burst was consumed
            assert_protected(h, "BTCUSDT", BTC.stop_price)
            assert_resends_only_when_absent(h)
            h.set_price("BTCUSDT", str(BTC.stop_price - 10 * tick("BTCUSDT")), volume="10")
            await settle(5)
            assert h.positions() == {}
            assert h.stops("BTCUSDT") == []
            ids = [r["trade_id"] for r in h.records()]
            assert ids == [BTC.trade_id]
            assert_unprotected_nowhere(h)
            bot.cancel_scope.cancel()


class TestRejections:
    """Each venue rejection the sim produces for our orders."""

    async def test_stop_would_trigger_retries_then_market_close(
        self, h: SimHarness, autojump_clock: Any
    ) -> None:
        """-2021 on every stop attempt (the mark is already through the stop) ⇒ `protection_max_attempts`
        stop attempts, then a reduce-only MARKET close: never left open without a stop."""
        async with trio.open_nursery() as bot:
            await h.start(bot)
            await submit(h, BTC)
            # Gap straight through entry and stop: the mark is below the stop when the stop is sent.
            h.set_price("BTCUSDT", str(BTC.stop_price - 10 * tick("BTCUSDT")))
            await settle(5)
            stops = posts(h, ALGO_PATH)
            assert len(stops) == CFG.execution.protection_max_attempts
            assert len({r.client_id for r in stops}) == len(stops)  # each attempt a new client id
            assert all(r.status == 400 for r in stops)
            assert all(
                h.sim.algo_by_client_id(r.client_id or "") is None for r in stops
            )  # refused: none exists
            [close] = [r for r in posts(h, ORDER_PATH) if r.params.get("type") == "MARKET"]
            assert close.client_id is not None
            assert close.client_id.endswith("X1")
            assert close.params["reduceOnly"] == "true"
            assert close.status == 200
            assert h.positions() == {}
            assert h.stops("BTCUSDT") == []
            assert h.regular_orders("BTCUSDT") == []
            [rec] = h.records()
            assert (
                rec["result"]["reason"] == "KILL_SWITCH"
            )  # emergency flattening, not a stop exit (issue 9 #15)
            # The close is priced from the venue (a place response has no avgPrice), never at 0.
            [x1] = h.sim.orders_by_client_id(close.client_id)
            assert x1.status == "FILLED"
            assert rec["result"]["exit_price"] == pytest.approx(float(x1.avg_price))
            [closed] = [m for m in h.risk_msgs if isinstance(m, TradeClosed)]
            entry = float(rec["entry_order"]["filled_avg_price"])
            gross = float(BTC.quantity) * (float(x1.avg_price) - entry)
            assert closed.realized_pnl_usd == pytest.approx(gross - rec["costs"]["fees_usd"], abs=0.01)
            assert_no_cid_twice(h)
            assert_unprotected_nowhere(h)
            bot.cancel_scope.cancel()

    async def test_target_reduce_only_rejected_keeps_stop(self, h: SimHarness, autojump_clock: Any) -> None:
        """-2022 on the target ⇒ the stop stays, for the whole position; the trade still exits by it."""
        async with trio.open_nursery() as bot:
            await h.start(bot)

            def hook(method: str, cid: str, phase: str, result: Any) -> None:
                if method == "place_stop" and phase == "after":  # the next regular order is the target
                    h.sim.faults.fail_next(
                        ORDER_PATH, status=400, code=-2022, msg="ReduceOnly Order is rejected."
                    )

            h.arm(hook)
            await fill_entry(h, BTC)
            await settle(5)
            h.arm(None)
            [t1] = posts(h, ORDER_PATH, "T1")
            assert t1.status == 400
            assert h.sim.orders_by_client_id(t1.client_id or "") == []
            assert_protected(h, "BTCUSDT", BTC.stop_price)
            assert h.regular_orders("BTCUSDT") == []  # no target, no panic close
            assert h.sim.position_amount("BTCUSDT") == BTC.quantity
            h.set_price("BTCUSDT", str(BTC.stop_price - 10 * tick("BTCUSDT")), volume="10")
            await settle(5)
            assert h.positions() == {}
            [rec] = h.records()
            assert rec["result"]["reason"] == "SL"
            assert_no_cid_twice(h)
            assert_unprotected_nowhere(h)
            bot.cancel_scope.cancel()

    async def test_target_rejected_because_stop_already_filled(
        self, h: SimHarness, autojump_clock: Any
    ) -> None:
        """A genuine -2022 from the matching engine: the stop triggers and fills before the target is
        sent, so the reduce-only target finds no position. One SL record; nothing left on the venue."""
        async with trio.open_nursery() as bot:
            await h.start(bot)

            def hook(method: str, cid: str, phase: str, result: Any) -> None:
                if method == "place_order" and cid.endswith("T1") and phase == "before":
                    h.set_price("BTCUSDT", str(BTC.stop_price - 10 * tick("BTCUSDT")), volume="10")

            h.arm(hook)
            await fill_entry(h, BTC)
            await settle(5)
            [t1] = posts(h, ORDER_PATH, "T1")
            assert t1.status == 400
            assert h.positions() == {}
            assert h.stops("BTCUSDT") == []
            assert h.regular_orders("BTCUSDT") == []
            [rec] = h.records()
            assert rec["result"]["reason"] == "SL"
            assert h.ex is not None
            assert h.ex.open_trades() == []
            assert_no_cid_twice(h)
            assert_unprotected_nowhere(h)
            bot.cancel_scope.cancel()

    @pytest.mark.parametrize(
        ("plan", "code"),
        [
            (make_plan(qty="0.001", entry="60000.0", stop="58800.0", target="62400.0"), -4164),
            (make_plan(qty="5.000", entry="60000.0", stop="58800.0", target="62400.0"), -2019),
        ],
        ids=["min_notional_-4164", "margin_-2019"],
    )
    async def test_entry_rejected_is_abandoned(
        self, h: SimHarness, plan: TradePlan, code: int, autojump_clock: Any
    ) -> None:
        async with trio.open_nursery() as bot:
            await h.start(bot)
            await submit(h, plan)
            await settle(5)
            [e1] = posts(h, ORDER_PATH, "E1")
            assert e1.status == 400
            assert h.sim.orders_by_client_id(e1.client_id or "") == []
            abandoned = [m for m in h.risk_msgs if isinstance(m, EntryAbandoned)]
            assert [(m.trade_id, m.reason) for m in abandoned] == [(plan.trade_id, "REJECTED")]
            assert not any(isinstance(m, TradeClosed) for m in h.risk_msgs)
            assert h.positions() == {}
            assert h.stops("BTCUSDT") == []
            assert h.regular_orders("BTCUSDT") == []
            assert h.records() == []  # the entry never reached the book: no trade record
            assert h.ex is not None
            assert h.ex.open_trades() == []
            assert h.store is not None
            [state] = h.store.load_lifecycles(include_closed=True)
            assert state.phase is Phase.CLOSED
            assert len(h.sim.client_ids_sent()) == 1  # no retry of a definite rejection
            # The refusal was this code: the same request, replayed on the engine now, gets it.
            with pytest.raises(Rejection) as info:
                h.sim.engine.place_order(
                    NewOrder(
                        symbol=e1.params["symbol"],
                        side=e1.params["side"],
                        type=e1.params["type"],
                        quantity=D(e1.params["quantity"]),
                        price=D(e1.params["price"]),
                        time_in_force=e1.params["timeInForce"],
                        client_order_id=e1.client_id,
                    )
                )
            assert info.value.code == code
            assert_unprotected_nowhere(h)
            bot.cancel_scope.cancel()


class TestNoStopOnRegularEndpoint:
    """-4120: conditional orders are refused on /fapi/v1/order. The bot never sends one there."""

    async def test_sim_refuses_a_stop_on_the_order_endpoint(self, h: SimHarness, autojump_clock: Any) -> None:
        with pytest.raises(Rejection) as info:
            h.sim.engine.place_order(
                NewOrder(
                    symbol="BTCUSDT",
                    side="SELL",
                    type="STOP_MARKET",
                    quantity=D("0.010"),
                    price=None,
                    time_in_force=None,
                    reduce_only=True,
                    client_order_id="x-4120",
                )
            )
        assert info.value.code == -4120

    async def test_every_stop_goes_to_the_algo_endpoint(self, h: SimHarness, autojump_clock: Any) -> None:
        """A whole life: entries, stops, a trailing move, a partial exit by kill switch, two symbols."""
        async with trio.open_nursery() as bot:
            await h.start(bot)
            await fill_entry(h, BTC)
            await fill_entry(h, ETH)
            h.set_price("BTCUSDT", "61200.0")
            await h.send(
                AmendStop(trade_id=BTC.trade_id, symbol="BTCUSDT", new_stop=59400.0, reference_price=61200.0)
            )
            await settle(2)
            assert_protected(h, "BTCUSDT", D("59400.0"))
            assert_protected(h, "ETHUSDT", ETH.stop_price)
            await h.send(KillSwitch(reason="TEST"))
            await settle(5)
            assert h.positions() == {}
            regular = [r for r in h.sim.requests if r.path == ORDER_PATH and r.method == "POST"]
            algo = posts(h, ALGO_PATH)
            assert regular
            assert algo
            assert not [r for r in regular if r.params.get("type") in CONDITIONAL]
            assert {r.params.get("type") for r in algo} == {"STOP_MARKET"}
            assert all(r.params.get("algoType") == "CONDITIONAL" for r in algo)
            assert all(r.params.get("reduceOnly") == "true" for r in algo)
            assert all(r.params.get("workingType") == "MARK_PRICE" for r in algo)
            assert len(algo) >= 3  # BTC S1, ETH S1, BTC trailing S2
            assert_no_cid_twice(h)
            assert_unprotected_nowhere(h)
            bot.cancel_scope.cancel()

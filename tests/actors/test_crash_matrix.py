"""Crash matrix (AC2): kill the Execution actor abruptly at every step of a trade, restart from the same state
file plus the exchange, and check: every position has exactly one stop at the right price and size, no client
id was sent twice, each trade at most once in trades.jsonl, open risk and realized PnL unchanged by the restart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_execution import (
    CFG,
    RULES,
    Crash,
    Harness,
    assert_no_cid_twice,
    assert_protected,
    fill_entry,
    make_plan,
    settle,
)

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.messages import AmendStop, KillSwitch, SubmitPlan
from futures_actor.core.types import Side

D = Decimal
T0 = 1_767_225_600_000
BTC = make_plan()
ETH = make_plan(symbol="ETHUSDT", side=Side.SHORT, entry="50.00", stop="51.00", target="48.00")


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def crash_at(method: str, suffix: str, phase: str, *, nth: int = 1) -> Callable[[str, str, str, Any], None]:
    seen = [0]

    def hook(m: str, cid: str, ph: str, result: Any) -> None:
        if m == method and cid.endswith(suffix) and ph == phase:
            seen[0] += 1
            if seen[0] == nth:
                raise Crash(f"{method} {cid} {phase}")

    return hook


async def partial_fill(h: Harness) -> None:
    h.set_price("BTCUSDT", "100.1")
    await h.send(SubmitPlan(plan=BTC, mid_price=D("100.1")))
    h.set_price("BTCUSDT", "99.9", volume="0.04")
    await settle()


async def full_fill(h: Harness) -> None:
    await fill_entry(h, BTC)


async def trailing(h: Harness) -> None:
    await fill_entry(h, BTC)
    h.set_price("BTCUSDT", "102.0")
    await h.send(AmendStop(trade_id=BTC.trade_id, symbol="BTCUSDT", new_stop=99.0, reference_price=102.0))


async def exit_at_target(h: Harness) -> None:
    await fill_entry(h, BTC)
    h.set_price("BTCUSDT", "104.5", volume="10")
    await settle()


async def kill_two(h: Harness) -> None:
    await fill_entry(h, BTC)
    h.set_price("ETHUSDT", "49.99")
    await h.send(SubmitPlan(plan=ETH, mid_price=D("49.99")))
    h.set_price("ETHUSDT", "50.10")
    await settle()
    await h.send(KillSwitch(reason="TEST"))


async def entry_only(h: Harness) -> None:
    h.set_price("BTCUSDT", "100.1")
    await h.send(SubmitPlan(plan=BTC, mid_price=D("100.1")))


async def entry_expires(h: Harness) -> None:
    """The entry's TTL passes: Execution cancels it (and, answered, would ask risk for a retry)."""
    await entry_only(h)
    await settle(CFG.execution.limit_ttl_seconds + 1)


Scenario = Callable[[Harness], Awaitable[None]]

# step: (scenario, crash hook, expected stop per symbol still open after the restart, records expected)
MATRIX: dict[str, tuple[Scenario, Callable[[], Any], dict[str, Decimal], int]] = {
    "after_entry_sent": (entry_only, lambda: crash_at("place_order", "E1", "after"), {}, 1),
    # The TTL cancel reached the exchange, its answer never reached the state file: on restart the
    # reconcile sees the entry canceled, and the lifecycle asks for its retry from inside the reconcile.
    "after_entry_ttl_cancel": (entry_expires, lambda: crash_at("cancel_order", "E1", "after"), {}, 1),
    "after_partial_fill": (
        partial_fill,
        lambda: crash_at("place_stop", "S1", "before"),
        {"BTCUSDT": D("98.0")},
        0,
    ),
    "after_full_fill": (full_fill, lambda: crash_at("place_stop", "S1", "before"), {"BTCUSDT": D("98.0")}, 0),
    "after_stop_placed": (
        full_fill,
        lambda: crash_at("place_stop", "S1", "after"),
        {"BTCUSDT": D("98.0")},
        0,
    ),
    "during_trailing_move": (
        trailing,
        lambda: crash_at("cancel_stop", "S1", "before"),
        {"BTCUSDT": D("99.0")},
        0,
    ),
    "during_exit": (exit_at_target, lambda: crash_at("cancel_stop", "S1", "before"), {}, 1),
    "during_kill": (kill_two, lambda: crash_at("place_order", "K1", "after"), {"ETHUSDT": D("51.00")}, 1),
}


async def exchange_open_risk(h: Harness) -> Decimal:
    risk = D(0)
    orders = await h.open_orders()
    for sym, pos in (await h.positions()).items():
        stops = [o.trigger_price for o in orders if o.symbol == sym and o.is_stop]
        if stops:
            risk += pos.quantity * abs(pos.entry_price - stops[0])
    return risk


@pytest.mark.parametrize("step", list(MATRIX))
async def test_crash_and_restart(step: str, fast_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    scenario, make_hook, expected_stops, n_records = MATRIX[step]
    clock = TrioWallClock(T0)
    h = Harness(fast_tmp, clock)
    async with trio.open_nursery() as exchange:
        await exchange.start(h.paper.run)
        with trio.CancelScope() as crash:
            h.gw.crash_scope = crash
            async with trio.open_nursery() as bot:
                await h.start(bot)
                h.gw.hook = make_hook()
                await scenario(h)
                await settle(5)
                bot.cancel_scope.cancel()
        assert crash.cancelled_caught, f"{step}: the crash point was never reached"
        assert h.store is not None
        h.store.close()  # the process died: nothing but the file survives
        h.gw.hook = None
        positions_at_crash = {s: p.quantity for s, p in (await h.positions()).items()}
        wallet_at_crash = (await h.paper.account()).wallet_balance

        async with trio.open_nursery() as bot:
            ex = await h.start(bot)
            await settle(5)
            positions = await h.positions()
            orders = await h.open_orders()
            # Every open position: exactly one stop, for the whole position, at the right price.
            assert set(positions) == set(expected_stops), (step, positions)
            for sym, pos in positions.items():
                stops = [o for o in orders if o.symbol == sym and o.is_stop]
                assert len(stops) == 1, (step, stops)
                assert stops[0].quantity == pos.quantity
                assert stops[0].trigger_price == expected_stops[sym]
                [lc] = [t for t in ex.open_trades() if t.symbol == sym]
                assert lc.stop_price == expected_stops[sym]
                assert lc.position_qty == pos.quantity
            # The restart itself neither opened, grew nor realized anything.
            assert {s: p.quantity for s, p in positions.items()} == {
                s: q for s, q in positions_at_crash.items() if s in positions
            }
            assert (await h.paper.account()).wallet_balance == wallet_at_crash
            risk = await exchange_open_risk(h)
            expected_risk = sum(
                (p.quantity * abs(p.entry_price - expected_stops[s]) for s, p in positions.items()), D(0)
            )
            assert risk == expected_risk
            assert_no_cid_twice(h)
            ids = [r["trade_id"] for r in h.records()]
            assert len(ids) == len(set(ids)) == n_records, (step, ids)
            # Driving the market on: every remaining position still exits exactly once, protected.
            for sym in positions:
                side = BTC.side if sym == "BTCUSDT" else ETH.side
                stop = expected_stops[sym]
                away = stop - 10 * RULES[sym].tick_size * side.sign
                h.set_price(sym, str(away), volume="10")
            await settle(5)
            assert await h.positions() == {}
            assert [o for o in await h.open_orders() if o.is_stop] == []
            ids = [r["trade_id"] for r in h.records()]
            assert len(ids) == len(set(ids))
            assert_no_cid_twice(h)
            bot.cancel_scope.cancel()
        exchange.cancel_scope.cancel()


async def test_restarts_send_nothing_new(fast_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Restarting with nothing changed sends no order (reconcile is idempotent)."""
    h = Harness(fast_tmp, TrioWallClock(T0))
    async with trio.open_nursery() as exchange:
        await exchange.start(h.paper.run)
        async with trio.open_nursery() as bot:
            await h.start(bot)
            await fill_entry(h, BTC)
            bot.cancel_scope.cancel()
        placed = h.gw.placed_cids()
        assert [c[-2:] for c in placed] == ["E1", "S1", "T1"]
        for _ in range(2):
            assert h.store is not None
            h.store.close()
            async with trio.open_nursery() as bot:
                await h.start(bot)
                await settle(CFG.execution.limit_ttl_seconds)
                bot.cancel_scope.cancel()
        assert h.gw.placed_cids() == placed
        await assert_protected(h, "BTCUSDT", BTC.quantity, BTC.stop_price)
        exchange.cancel_scope.cancel()

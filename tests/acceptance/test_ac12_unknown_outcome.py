"""AC12: an order placement times out (or gets a 503) but the order WAS placed ⇒ no duplicate.

A fake-live system (the real gateway, REST client and user stream over the fake Binance exchange):
the exchange executes the placement and loses its answer. The client id must be queried before any
re-send, and it is never sent twice; the trade goes on with the order that exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import stamina
import trio
import trio.testing

from futures_actor.actors.messages import SubmitPlan
from futures_actor.binance.sim import RecordedRequest
from futures_actor.core import lifecycle as lcm
from futures_actor.core.config import default_config
from futures_actor.core.types import OrderRole, Side
from futures_actor.state.log_schema import validate_trade_record

from .harness import ScriptedRig, make_sim_exchange, trade_plan

SYMBOL = "BTCUSDT"
START_MS = 1_735_725_600_000  # 2025-01-01 10:00 UTC
# How the sim records the lost placement: no answer at all (-1), or HTTP 503 "Unknown error".
LOST_STATUS = {"timeout": -1, "503": 503}
WAIT_S = 120.0
SETTLE_S = 5.0


@pytest.fixture(autouse=True)
def _stamina_testing() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3):
        yield


def _requests_for(requests: list[RecordedRequest], cid: str) -> list[tuple[str, str, int]]:
    """(method, path, status) of every request naming `cid` (placement, query or cancel), in order."""
    return [(r.method, r.path, r.status) for r in requests if r.client_id == cid]


def _protected(lc: lcm.TradeLifecycle | None) -> bool:
    return (
        lc is not None
        and lc.phase is lcm.Phase.OPEN
        and bool(lc.live_orders(OrderRole.STOP))
        and all(o.status is lcm.OrderStatus.WORKING for o in lc.live_orders())
    )


@pytest.mark.parametrize(
    ("lost_order", "mode"),
    [("entry", "timeout"), ("entry", "503"), ("stop", "timeout"), ("stop", "503")],
)
async def test_lost_placement_response_is_resolved_by_query_never_resent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, lost_order: str, mode: str
) -> None:
    cfg = default_config()
    sim = make_sim_exchange(cfg, [SYMBOL], start_ms=START_MS)
    rig = ScriptedRig(
        root=tmp_path,
        cfg=cfg,
        symbols=[SYMBOL],
        prices={SYMBOL: Decimal("60000")},
        epoch_ms=START_MS,
        sim=sim,
    )
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            assert rig.clock is not None
            plan = trade_plan(
                symbol=SYMBOL,
                side=Side.LONG,
                qty="0.100",
                entry="60000.0",
                stop="59400.0",
                target="61200.0",
                candle_open_time_ms=START_MS,
                created_ms=rig.clock.now_ms(),
            )
            if lost_order == "entry":
                sim.faults.lose_response_of_next_order(mode)  # type: ignore[arg-type]
            await system._exec_send.send(SubmitPlan(plan=plan, mid_price=Decimal("60000")))
            await rig.wait_until(lambda: system.execution.trade(plan.trade_id) is not None, timeout=WAIT_S)
            lc = system.execution.trade(plan.trade_id)
            assert lc is not None
            await rig.wait_until(
                lambda: any(o.status is lcm.OrderStatus.WORKING for o in lc.live_orders(OrderRole.ENTRY)),
                timeout=WAIT_S,
            )
            if lost_order == "stop":
                sim.faults.lose_response_of_next_order(mode)  # type: ignore[arg-type]
            rig.set_price(SYMBOL, "59990")  # trades through the entry: the stop is placed next
            await rig.wait_until(lambda: _protected(system.execution.trade(plan.trade_id)), timeout=WAIT_S)
            await trio.sleep(cfg.execution.reconcile_interval_seconds + SETTLE_S)  # time to misbehave
            trade = system.execution.trade(plan.trade_id)
            assert trade is not None
            entry_cid = next(o.cid for o in trade.orders.values() if o.role is OrderRole.ENTRY)
            stop_cid = next(o.cid for o in trade.orders.values() if o.role is OrderRole.STOP)
            position = sim.position_amount(SYMBOL)
            phase, qty = trade.phase, trade.position_qty
            # the position is then managed to its exit as usual
            rig.set_price(SYMBOL, "61300")
            await rig.wait_until(lambda: trade.closed, timeout=WAIT_S)
            await trio.sleep(SETTLE_S)
            records = rig.trade_records()
            nursery.cancel_scope.cancel()
    finally:
        rig.close()

    lost_cid = entry_cid if lost_order == "entry" else stop_cid
    path = "/fapi/v1/order" if lost_order == "entry" else "/fapi/v1/algoOrder"
    lost_status = LOST_STATUS[mode]
    calls = _requests_for(sim.requests, lost_cid)
    # the placement executed once, its answer lost; then a query by the client id (GET), no re-send
    assert calls[0] == ("POST", path, lost_status)
    assert calls[1][:2] == ("GET", path)
    assert [c for c in calls if c[0] == "POST"] == [("POST", path, lost_status)]
    sent = sim.client_ids_sent()
    assert sent.count(lost_cid) == 1
    assert len(set(sent)) == len(sent)
    # exactly one order exists for it on the exchange, and the trade went on with it
    if lost_order == "entry":
        assert len(sim.orders_by_client_id(lost_cid)) == 1
    else:
        assert sim.algo_by_client_id(lost_cid) is not None
    assert phase is lcm.Phase.OPEN
    assert qty == Decimal("0.100")
    assert position == Decimal("0.100")
    assert [r["trade_id"] for r in records] == [plan.trade_id]
    assert validate_trade_record(records[0]) == []
    assert records[0]["result"]["reason"] == "TP"
    assert sim.position_amount(SYMBOL) == 0

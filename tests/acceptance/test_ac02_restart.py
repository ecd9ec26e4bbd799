"""AC2: open a position, kill the process hard (no shutdown code runs), restart from the same state.

Paper: the `PaperExchange` is restored from the store; fake-live: the same fake Binance exchange,
reached through the real REST client and user stream. After the restart the positions, stops,
targets and trade plans are rebuilt, no order is placed twice, no trade record is duplicated and
PortfolioRisk's open risk and daily PnL are what they were before the kill.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stamina
import trio
import trio.testing

from futures_actor.actors.messages import SubmitPlan
from futures_actor.core import lifecycle as lcm
from futures_actor.core.config import BotConfig, default_config
from futures_actor.core.types import OrderRole, Side
from futures_actor.state.log_schema import validate_trade_record

from .harness import ScriptedRig, make_sim_exchange, signal_report, trade_plan

SYMBOL = "BTCUSDT"
START_MS = 1_735_725_600_000  # 2025-01-01 10:00 UTC (a Wednesday)
FIVE_MIN_MS = 300_000
SETTLE_S = 5.0  # simulated seconds for messages between actors to settle
WAIT_S = 120.0


@pytest.fixture(autouse=True)
def _stamina_testing() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3):
        yield


def _candle_ms(rig: ScriptedRig) -> int:
    assert rig.clock is not None
    now = rig.clock.now_ms()
    return now - now % FIVE_MIN_MS


def _trade(rig: ScriptedRig, trade_id: str) -> lcm.TradeLifecycle | None:
    assert rig.system is not None
    return rig.system.execution.trade(trade_id)


def _protected(lc: lcm.TradeLifecycle | None) -> bool:
    return (
        lc is not None
        and lc.phase is lcm.Phase.OPEN
        and bool(lc.live_orders(OrderRole.STOP))
        and bool(lc.live_orders(OrderRole.TARGET))
        and all(o.status is lcm.OrderStatus.WORKING for o in lc.live_orders())
    )


async def _open(rig: ScriptedRig, *, price: str, fake_live: bool) -> str:
    """One LONG trade at `price` (paper: a signal through PortfolioRisk; fake-live: a plan straight to
    execution, since LIVE never explores a strategy without history), filled and protected."""
    system = rig.system
    assert system is not None
    assert rig.clock is not None
    candle = _candle_ms(rig)
    before = {lc.trade_id for lc in system.execution.open_trades()}
    if fake_live:
        p = Decimal(price)
        plan = trade_plan(
            symbol=SYMBOL,
            side=Side.LONG,
            qty="0.100",
            entry=price,
            stop=str(p * Decimal("0.99")),
            target=str(p * Decimal("1.02")),
            candle_open_time_ms=candle,
            created_ms=rig.clock.now_ms(),
        )
        await system._exec_send.send(SubmitPlan(plan=plan, mid_price=p))
    else:
        await system._risk_send.send(signal_report(SYMBOL, candle, side=Side.LONG, price=float(price)))
    await rig.wait_until(lambda: len(system.execution.open_trades()) > len(before), timeout=WAIT_S)
    (lc,) = [t for t in system.execution.open_trades() if t.trade_id not in before]
    await rig.wait_until(lambda: bool(lc.live_orders(OrderRole.ENTRY)), timeout=WAIT_S)
    rig.set_price(SYMBOL, str(Decimal(price) - Decimal(10)))  # trades through the entry limit
    await rig.wait_until(lambda: _protected(_trade(rig, lc.trade_id)), timeout=WAIT_S)
    await trio.sleep(SETTLE_S)
    return lc.trade_id


async def _close_at_target(rig: ScriptedRig, trade_id: str) -> None:
    lc = _trade(rig, trade_id)
    assert lc is not None
    target = lc.live_orders(OrderRole.TARGET)[0].price
    assert target is not None
    rig.set_price(SYMBOL, str(target + Decimal(50)))
    await rig.wait_until(lambda: (t := _trade(rig, trade_id)) is not None and t.closed, timeout=WAIT_S)
    await trio.sleep(SETTLE_S)


def _picture(rig: ScriptedRig, trade_id: str) -> dict[str, Any]:
    """What must survive a restart: the trade (plan, position, stop, target) and risk's view."""
    lc = _trade(rig, trade_id)
    assert lc is not None
    assert rig.system is not None
    assert rig.store is not None
    st = lc.to_state()
    stops = lc.live_orders(OrderRole.STOP)
    targets = lc.live_orders(OrderRole.TARGET)
    snap = rig.system.risk.snapshot()
    return {
        "plan": st.plan,
        "phase": st.phase,
        "position": lc.position_qty,
        "entry_cost": st.entry_cost,
        "stop_price": st.stop_price,
        "stops": sorted((o.cid, o.qty, o.price) for o in stops),
        "targets": sorted((o.cid, o.qty, o.price) for o in targets),
        "risk_positions": snap.positions,
        "risk_pending": snap.pending,
        "day_pnl_pct": snap.day_pnl_pct,
        "sent_cids": [c.cid for c in rig.store.sent_cids()],
    }


def _venue_cids(rig: ScriptedRig) -> list[str]:
    """Every client id that reached the venue, in order (paper: known only through the store)."""
    if rig.sim is not None:
        return list(rig.sim.client_ids_sent())
    assert rig.store is not None
    return [c.cid for c in rig.store.sent_cids()]


def _open_orders_on_venue(rig: ScriptedRig) -> list[str]:
    if rig.sim is not None:
        regular = [
            o.client_order_id
            for o in rig.sim.engine.orders.values()
            if o.status in ("NEW", "PARTIALLY_FILLED")
        ]
        algos = [a.client_algo_id for a in rig.sim.engine.algos.values() if a.status == "NEW"]
        return sorted(regular + algos)
    assert rig.paper is not None
    return sorted(o["client_id"] for o in _paper_open(rig))


def _paper_open(rig: ScriptedRig) -> list[dict[str, Any]]:
    import msgspec

    assert rig.paper is not None
    data = msgspec.json.decode(rig.paper.snapshot())
    return [o for o in data["open_orders"] if o["status"] in ("NEW", "PARTIALLY_FILLED")]


@pytest.mark.parametrize("venue", ["paper", "fake-live"])
async def test_hard_kill_and_restart_rebuilds_everything_without_duplicates(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, venue: str
) -> None:
    cfg: BotConfig = default_config()
    fake_live = venue == "fake-live"
    sim = make_sim_exchange(cfg, [SYMBOL], start_ms=START_MS) if fake_live else None
    prices = {SYMBOL: Decimal("60000")}
    first = ScriptedRig(
        root=tmp_path, cfg=cfg, symbols=[SYMBOL], prices=dict(prices), epoch_ms=START_MS, sim=sim
    )

    # --- first incarnation: trade A opens and closes at its target, trade B opens; then a hard kill
    async with trio.open_nursery() as nursery:
        await first.start(nursery)
        trade_a = await _open(first, price="60000", fake_live=fake_live)
        await _close_at_target(first, trade_a)
        await trio.sleep(FIVE_MIN_MS / 1000)  # the next 5m candle: a new decision
        price_b = str(first.prices[SYMBOL])
        trade_b = await _open(first, price=price_b, fake_live=fake_live)
        before = _picture(first, trade_b)
        risk_before = first.system.risk.snapshot() if first.system is not None else None
        venue_cids_before = _venue_cids(first)
        venue_open_before = _open_orders_on_venue(first)
        records_before = first.trade_records()
        kill_ms = first.clock.now_ms() if first.clock is not None else 0
        nursery.cancel_scope.cancel()  # hard kill: no orderly stop, no flush, nothing more runs

    assert first.system is not None
    assert not first.system.stop_requested.is_set()
    assert [r["trade_id"] for r in records_before] == [trade_a]
    assert before["phase"] is lcm.Phase.OPEN
    assert before["position"] > 0
    assert len(before["stops"]) == 1
    assert len(before["targets"]) == 1
    assert risk_before is not None
    assert risk_before.open_risk_usd > 0
    assert before["day_pnl_pct"] is not None
    assert before["day_pnl_pct"] > 0

    # --- second incarnation from the same state file and the same exchange state
    second = ScriptedRig(
        root=tmp_path, cfg=cfg, symbols=[SYMBOL], prices=dict(first.prices), epoch_ms=kill_ms, sim=sim
    )
    try:
        async with trio.open_nursery() as nursery:
            system = await second.start(nursery)
            await trio.sleep(SETTLE_S)
            after = _picture(second, trade_b)
            risk_after = system.risk.snapshot()
            # Give the system time to do something wrong (re-send, re-protect, re-journal).
            await trio.sleep(cfg.execution.reconcile_interval_seconds + SETTLE_S)
            cids_idle = _venue_cids(second)
            open_idle = _open_orders_on_venue(second)
            records_idle = second.trade_records()
            # The rebuilt trade is managed to its exit by the new incarnation.
            await _close_at_target(second, trade_b)
            records_end = second.trade_records()
            nursery.cancel_scope.cancel()
    finally:
        second.close()
        first.close()

    # positions, stops, targets and the trade plan rebuilt as they were
    for key in ("plan", "phase", "position", "entry_cost", "stop_price", "stops", "targets"):
        assert after[key] == before[key], key
    # no order placed twice: nothing new reached the venue while idle, and every client id is unique
    assert cids_idle == venue_cids_before
    assert len(set(cids_idle)) == len(cids_idle)
    assert open_idle == venue_open_before
    assert after["sent_cids"] == before["sent_cids"]
    # no record duplicated
    assert [r["trade_id"] for r in records_idle] == [trade_a]
    assert [r["trade_id"] for r in records_end] == [trade_a, trade_b]
    for record in records_end:
        assert validate_trade_record(record) == []
    assert records_end[1]["result"]["reason"] == "TP"
    # open risk and daily PnL unchanged
    assert risk_after.open_risk_usd == pytest.approx(risk_before.open_risk_usd, rel=1e-9)
    assert risk_after.day_pnl_pct == pytest.approx(risk_before.day_pnl_pct, rel=1e-9)
    assert (risk_after.positions, risk_after.pending) == (risk_before.positions, risk_before.pending)
    assert risk_after.positions == 1
    assert risk_after.pending == 0

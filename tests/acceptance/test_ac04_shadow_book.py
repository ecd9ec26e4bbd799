"""AC4 in LIVE: during a weekly-stop pause the bot keeps trading on paper (the shadow book, BOT_SPEC §8.9).

A LIVE system on the fake Binance exchange (`ScriptedRig` with a `SimExchange`) loses real trades
until the weekly stop pauses it. A valid signal during the pause then becomes a shadow trade: sent
to the shadow `Execution` on its own `PaperExchange` (state in `<state_dir>/shadow.sqlite`), filled
and stopped out on the shadow paper book, recorded in `<log_dir>/shadow/`, and learned from by the
performance tracker. The fake Binance receives no order, the live trade log gets no record, and
the live risk state (exposure, daily / weekly PnL, pause) is untouched by it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from futures_actor.actors.messages import BookUpdated, MarkUpdated
from futures_actor.actors.shadow_book import SHADOW_DB_FILE, SHADOW_LOG_SUBDIR
from futures_actor.core import lifecycle as lcm
from futures_actor.core.types import OrderRole, Side
from futures_actor.state.journal import TradeJournal
from futures_actor.state.log_schema import validate_trade_record

from .harness import ScriptedRig, next_candle, signal_report
from .weekly_stop import (
    HOUR_MS,
    SYMBOL,
    live_rig,
    lose_until_weekly_stop,
    slow_heartbeat_cfg,
)

TIMEOUT_S = 600.0


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def _trade_at(rig: ScriptedRig, price: Decimal) -> None:
    """A trade at `price` on the venue, published at once as market data (book and mark): the way
    the shadow paper exchange learns prices (the scripted market only publishes every `period_s`)."""
    system = rig.system
    assert system is not None
    assert rig.clock is not None
    rig.set_price(SYMBOL, str(price))
    now = rig.clock.now_ms()
    px = float(price)
    await system.router.publish(SYMBOL, BookUpdated(symbol=SYMBOL, bid=px, ask=px, ts_ms=now))
    await system.router.publish(
        SYMBOL,
        MarkUpdated(
            symbol=SYMBOL, mark_price=px, funding_rate=0.0, next_funding_ms=now + 8 * HOUR_MS, ts_ms=now
        ),
    )


async def test_ac4_live_pause_trades_the_shadow_paper_book(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = slow_heartbeat_cfg()
    rig = live_rig(tmp_path, cfg)
    sim = rig.sim
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            shadow = system.shadow
            assert shadow is not None
            losses = await lose_until_weekly_stop(rig, cfg)
            state_at_hit = system.risk.risk_state
            assert state_at_hit is not None
            sent_at_hit = list(sim.client_ids_sent())
            live_records_at_hit = len(rig.trade_records())
            window_at_hit = len(system.tracker.window("trend_pullback"))

            # A valid signal during the pause: rejected for live, approved for the shadow book.
            candle = await next_candle(rig)
            price = float(rig.prices[SYMBOL])
            await system._risk_send.send(signal_report(SYMBOL, candle, side=Side.LONG, price=price))
            await rig.wait_until(lambda: bool(shadow.execution.open_trades()), timeout=TIMEOUT_S)
            trade = shadow.execution.open_trades()[0]
            trade_id = str(trade.trade_id)
            await rig.wait_until(lambda: bool(trade.live_orders(OrderRole.ENTRY)), timeout=TIMEOUT_S)
            snap_pending = system.risk.snapshot()
            exposures_pending = system.risk.exposures
            live_open_pending = system.execution.open_trades()

            # The market trades through the entry, then through the stop (on the shadow paper book).
            await _trade_at(rig, Decimal(str(price)) * Decimal("0.999"))
            await rig.wait_until(
                lambda: trade.phase is lcm.Phase.OPEN and bool(trade.live_orders(OrderRole.STOP)),
                timeout=TIMEOUT_S,
            )
            snap_open = system.risk.snapshot()
            stop = Decimal(trade.stop_price)
            await _trade_at(rig, stop * Decimal("0.999"))

            def shadow_record() -> dict[str, Any] | None:
                return next((r for r in shadow.journal.records() if r["trade_id"] == trade_id), None)

            await rig.wait_until(lambda: shadow_record() is not None, timeout=TIMEOUT_S)
            await rig.wait_until(
                lambda: len(system.tracker.window("trend_pullback")) > window_at_hit, timeout=TIMEOUT_S
            )
            record = shadow_record()
            snap_after = system.risk.snapshot()
            state_after = system.risk.risk_state
            sent_in_pause = list(sim.client_ids_sent())[len(sent_at_hit) :]
            live_records = rig.trade_records()
            window = system.tracker.window("trend_pullback")
            system.stop_requested.set()
            await system.stopped.wait()
            nursery.cancel_scope.cancel()

        assert all(r["mode"] == "LIVE" for r in losses)
        # The signal was a shadow entry, not a live one.
        rejected = [e for e in rig.events("risk_rejected") if e["candle_open_time_ms"] == candle]
        assert [e["code"] for e in rejected] == ["WEEKLY_STOP"]
        assert rejected[0]["values"]["shadow_only"] == 1.0
        assert not [e for e in rig.events("risk_approved") if e["candle_open_time_ms"] == candle]
        entries = rig.events("shadow_entry")
        assert [(e["trade_id"], e["sent"]) for e in entries] == [(trade_id, True)]

        # Fake Binance received nothing; the live book never saw the shadow trade.
        assert sent_in_pause == []
        assert live_open_pending == []
        assert exposures_pending == ()
        for snap in (snap_pending, snap_open, snap_after):
            assert (snap.positions, snap.pending, snap.open_risk_usd) == (0, 0, 0.0)
            assert snap.paused
        assert len(live_records) == live_records_at_hit
        assert trade_id not in {r["trade_id"] for r in live_records}
        # Its loss is not in the live daily / weekly PnL, and the pause is unchanged.
        assert state_after is not None
        assert state_after.realized_pnl_week == state_at_hit.realized_pnl_week
        assert state_after.realized_pnl_day == state_at_hit.realized_pnl_day
        assert state_after.pause_until_ms == state_at_hit.pause_until_ms
        assert not state_after.already_booked(trade_id)

        # The shadow trade is recorded in <log_dir>/shadow/ as a complete paper trade record.
        assert record is not None
        assert validate_trade_record(record) == []
        assert record["mode"] == "PAPER_LIVE"
        assert record["symbol"] == SYMBOL
        assert record["result"]["reason"] == "SL"
        assert record["result"]["pnl_usd"] < 0
        assert (tmp_path / "state" / SHADOW_DB_FILE).exists()
        assert rig.clock is not None
        reopened = TradeJournal(directory=rig.log_dir / SHADOW_LOG_SUBDIR, cfg=cfg.logging, clock=rig.clock)
        try:
            assert [r["trade_id"] for r in reopened.records()] == [trade_id]
        finally:
            reopened.close()
        # ... and the performance layer learned from it.
        assert window[-1].trade_id == trade_id
        assert window[-1].pnl_usd == pytest.approx(record["result"]["pnl_usd"])
        assert [e["trade_id"] for e in rig.events("shadow_trade_recorded")] == [trade_id]
    finally:
        rig.close()

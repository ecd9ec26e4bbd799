"""AC3 (daily stop) and AC4 (weekly stop, pause, reduced risk) through the real actors.

A paper system on a scripted market (`ScriptedRig`). The losses are real: each losing trade is a
signal approved by PortfolioRisk, an entry filled by the paper exchange, then the price traded
through the stop, so the paper exchange fills the stop and execution reports the closed trade (and
its record) to risk. Nothing is fed into the risk inbox but the signals themselves.

Times: 2025-01-01 is a Wednesday; the losses of AC4 fall on Wednesday..Friday of one UTC week.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from futures_actor.core.config import BotConfig
from futures_actor.core.risk_state import DAY_MS
from futures_actor.core.types import Side
from futures_actor.state.log_schema import validate_trade_record

from .harness import ScriptedRig, next_candle, signal_report
from .weekly_stop import (
    HOUR_MS,
    MAX_LOSING_TRADES,
    PRICE,
    SETTLE_S,
    START_MS,
    SYMBOL,
    live_rig,
    lose_one,
    lose_until_weekly_stop,
    sleep_until,
    slow_heartbeat_cfg,
)


def _rig(tmp_path: Path, cfg: BotConfig) -> ScriptedRig:
    return ScriptedRig(
        root=tmp_path,
        cfg=cfg,
        symbols=[SYMBOL],
        prices={SYMBOL: PRICE},
        epoch_ms=START_MS,
        period_s=60.0,
    )


async def _signal(rig: ScriptedRig) -> tuple[int, dict[str, Any] | None, dict[str, Any] | None]:
    """A valid signal on the next candle; (candle, its risk_rejected event, its risk_approved event)."""
    system = rig.system
    assert system is not None
    candle = await next_candle(rig)
    price = float(rig.prices[SYMBOL])
    await system._risk_send.send(signal_report(SYMBOL, candle, side=Side.LONG, price=price))
    await trio.sleep(SETTLE_S)
    rejected = [e for e in rig.events("risk_rejected") if e["candle_open_time_ms"] == candle]
    approved = [e for e in rig.events("risk_approved") if e["candle_open_time_ms"] == candle]
    assert len(rejected) + len(approved) == 1, (rejected, approved)
    return candle, (rejected or [None])[0], (approved or [None])[0]


def _assert_losing_records(records: list[dict[str, Any]]) -> None:
    for r in records:
        assert validate_trade_record(r) == []
        assert r["result"]["reason"] == "SL"
        assert r["result"]["pnl_usd"] < 0
        # a loss at the stop is about one R (fees and stop slippage on top)
        assert -1.3 < r["result"]["pnl_r_multiple"] < -0.9, r["result"]


async def _cancel_working_entry(rig: ScriptedRig) -> None:
    """Let an approved entry that nobody fills run out (TTL, one retry, abandoned)."""
    system = rig.system
    assert system is not None
    await rig.wait_until(lambda: not system.execution.open_trades(), timeout=600.0)
    await rig.wait_until(lambda: system.risk.snapshot().pending == 0, timeout=60.0)


async def test_ac3_daily_stop_rejects_until_the_next_utc_day(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = slow_heartbeat_cfg()
    rig = _rig(tmp_path, cfg)
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            losses: list[dict[str, Any]] = []
            while len(losses) < MAX_LOSING_TRADES:
                losses.append(await lose_one(rig))
                day_pct = system.risk.snapshot().day_pnl_pct
                assert day_pct is not None
                if day_pct <= cfg.risk.daily_stop_pct:
                    break
            snap_at_stop = system.risk.snapshot()
            placed_at_stop = len(rig.events("order_placed"))

            # The next valid signal that day: DAILY_STOP, and nothing sent to the exchange.
            _, rejected, approved = await _signal(rig)
            assert approved is None
            assert rejected is not None
            # Still the same UTC day late in the evening.
            assert rig.clock is not None
            midnight = START_MS - START_MS % DAY_MS + DAY_MS
            await sleep_until(rig, midnight - 20 * 60_000)
            _, late_rejected, late_approved = await _signal(rig)
            placed_before_midnight = len(rig.events("order_placed"))

            # The next UTC day: entries resume at the normal risk.
            await sleep_until(rig, midnight)
            _, next_rejected, next_approved = await _signal(rig)
            await rig.wait_until(lambda: bool(system.execution.open_trades()), timeout=60.0)
            snap_next_day = system.risk.snapshot()
            await _cancel_working_entry(rig)
            system.stop_requested.set()
            await system.stopped.wait()
            nursery.cancel_scope.cancel()

        assert 3 <= len(losses) <= 5, [r["result"] for r in losses]
        _assert_losing_records(losses)
        assert snap_at_stop.day_pnl_pct is not None
        assert snap_at_stop.day_pnl_pct <= cfg.risk.daily_stop_pct
        assert rejected["code"] == "DAILY_STOP"
        assert rejected["values"]["day_pnl_pct"] <= cfg.risk.daily_stop_pct
        assert rejected["values"]["resume_ms"] == midnight
        assert late_approved is None
        assert late_rejected is not None
        assert late_rejected["code"] == "DAILY_STOP"
        assert placed_before_midnight == placed_at_stop
        assert next_rejected is None, next_rejected
        assert next_approved is not None
        assert next_approved["risk_pct"] == cfg.risk.risk_per_trade_pct
        assert snap_next_day.day_pnl_pct == 0.0
        assert snap_next_day.rejections.get("DAILY_STOP") == 2
        # the resumed entry's record (it expired unfilled) is the one trade after the losses
        records = rig.trade_records()
        assert len(records) == len(losses) + 1
        last = records[-1]
        assert validate_trade_record(last) == []
        assert last["trade_id"] == next_approved["trade_id"]
        assert last["result"]["reason"] == "TIMEOUT"
    finally:
        rig.close()


async def test_ac4_weekly_stop_pauses_7_days_then_3_days_at_reduced_risk(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = slow_heartbeat_cfg()
    risk = cfg.risk
    rig = _rig(tmp_path, cfg)
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            losses = await lose_until_weekly_stop(rig, cfg)
            assert rig.clock is not None
            hits = rig.events("weekly_stop_hit")
            assert len(hits) == 1
            hit_ms = rig.clock.now_ms()
            state = system.risk.risk_state
            assert state is not None
            pause_until, reduced_until = state.pause_until_ms, state.reduced_risk_until_ms
            placed_at_hit = len(rig.events("order_placed"))

            # Paused: each valid signal is rejected WEEKLY_STOP, up to the last hour of day 7.
            _, first, first_ok = await _signal(rig)
            await sleep_until(rig, hit_ms + 3 * DAY_MS)
            _, middle, middle_ok = await _signal(rig)
            await sleep_until(rig, pause_until - HOUR_MS)
            _, last, last_ok = await _signal(rig)
            snap_paused = system.risk.snapshot()
            placed_in_pause = len(rig.events("order_placed")) - placed_at_hit

            # Reduced risk for 3 days.
            await sleep_until(rig, pause_until)
            _, reduced_rej, reduced = await _signal(rig)
            snap_reduced = system.risk.snapshot()
            await _cancel_working_entry(rig)
            await sleep_until(rig, reduced_until - HOUR_MS)
            _, reduced_rej2, reduced2 = await _signal(rig)
            await _cancel_working_entry(rig)

            # Then normal risk again.
            await sleep_until(rig, reduced_until)
            _, normal_rej, normal = await _signal(rig)
            snap_normal = system.risk.snapshot()
            await _cancel_working_entry(rig)
            system.stop_requested.set()
            await system.stopped.wait()
            nursery.cancel_scope.cancel()

        _assert_losing_records(losses)
        week_loss = sum(r["result"]["pnl_usd"] for r in losses)
        assert week_loss / cfg.execution.paper_initial_balance_usdt <= risk.weekly_stop_pct
        # all the losses are in the week of the start (Wednesday .. Friday)
        assert all(r["timestamp_close"] < "2025-01-06" for r in losses)
        assert hits[0]["pause_until_ms"] == pause_until
        # the pause started when the last loss was booked (moments before `hit_ms`) and lasts 7 days
        pause_ms = risk.pause_days_after_weekly_stop * DAY_MS
        assert pause_ms - HOUR_MS < pause_until - hit_ms <= pause_ms
        assert reduced_until - pause_until == risk.reduced_risk_days * DAY_MS
        for rej, ok in ((first, first_ok), (middle, middle_ok), (last, last_ok)):
            assert ok is None
            assert rej is not None
            assert rej["code"] == "WEEKLY_STOP"
            assert rej["state"] == "PAUSED"  # paper: no entry at all, no shadow book
            assert rej["values"]["shadow_only"] == 0.0
        assert placed_in_pause == 0
        assert snap_paused.paused
        assert snap_paused.shadow_entries == 0
        assert not rig.events("shadow_entry")

        for rej, ok in ((reduced_rej, reduced), (reduced_rej2, reduced2)):
            assert rej is None, rej
            assert ok is not None
            assert ok["risk_pct"] == risk.reduced_risk_after_pause_pct
            assert ok["risk_usd"] == pytest.approx(ok["risk_pct"] * snap_reduced.equity_usd, rel=1e-9)
        assert snap_reduced.reduced_risk
        assert not snap_reduced.paused

        assert normal_rej is None, normal_rej
        assert normal is not None
        assert normal["risk_pct"] == risk.risk_per_trade_pct
        assert not snap_normal.reduced_risk
        assert not snap_normal.paused

        # the trade records carry the sizing of their plans
        by_id = {r["trade_id"]: r for r in rig.trade_records()}
        for ok in (reduced, reduced2, normal):
            rec = by_id[ok["trade_id"]]
            assert validate_trade_record(rec) == []
            assert rec["risk"]["risk_pct"] == ok["risk_pct"]
    finally:
        rig.close()


async def test_ac4_live_pause_is_shadow_only_on_the_fake_exchange(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """LIVE (Binance gateway over the fake exchange): during the pause a valid signal is evaluated
    for the shadow book and logged as `shadow_entry`; nothing is sent to the exchange."""
    cfg = slow_heartbeat_cfg()
    rig = live_rig(tmp_path, cfg)
    sim = rig.sim
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            losses = await lose_until_weekly_stop(rig, cfg)
            state = system.risk.risk_state
            assert state is not None
            sent_at_hit = list(sim.client_ids_sent())
            _, paused_rej, paused_ok = await _signal(rig)
            snap_paused = system.risk.snapshot()
            sent_in_pause = list(sim.client_ids_sent())[len(sent_at_hit) :]
            await sleep_until(rig, state.pause_until_ms)
            _, reduced_rej, reduced = await _signal(rig)
            await rig.wait_until(lambda: len(sim.client_ids_sent()) > len(sent_at_hit), timeout=60.0)
            await _cancel_working_entry(rig)
            system.stop_requested.set()
            await system.stopped.wait()
            nursery.cancel_scope.cancel()

        _assert_losing_records(losses)
        assert all(r["mode"] == "LIVE" for r in losses)
        assert len(system.risk.exposures) == 0
        assert paused_ok is None
        assert paused_rej is not None
        assert paused_rej["code"] == "WEEKLY_STOP"
        assert paused_rej["values"]["shadow_only"] == 1.0
        assert "state" not in paused_rej
        shadow = rig.events("shadow_entry")
        assert len(shadow) == 1
        assert shadow[0]["symbol"] == SYMBOL
        assert float(shadow[0]["quantity"]) > 0
        assert snap_paused.shadow_entries == 1
        assert sent_in_pause == []
        assert reduced_rej is None
        assert reduced is not None
        assert reduced["risk_pct"] == cfg.risk.reduced_risk_after_pause_pct
    finally:
        rig.close()

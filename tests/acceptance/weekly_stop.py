"""Shared pieces of the weekly-stop scenarios (AC3/AC4 in paper and LIVE, the LIVE shadow book).

Real losses: each losing trade is a signal approved by PortfolioRisk, an entry filled by the venue,
then the price traded through the stop, so the stop fills and execution reports the closed trade.
Times: 2025-01-01 is a Wednesday; the losses fall on Wednesday..Friday of one UTC week.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from futures_actor.core.config import BotConfig, default_config
from futures_actor.core.risk_state import DAY_MS
from futures_actor.core.types import Side

from .harness import ScriptedRig, make_sim_exchange, open_position, seed_track_record, stop_out

START_MS = 1_735_725_600_000  # Wed 2025-01-01 10:00 UTC
SYMBOL = "BTCUSDT"
PRICE = Decimal("60000")
SETTLE_S = 5.0
MAX_LOSING_TRADES = 14
HOUR_MS = 3_600_000


def slow_heartbeat_cfg() -> BotConfig:
    """Default config; nobody watches the heartbeat file here, so days of simulated time stay cheap."""
    cfg = default_config()
    return msgspec.structs.replace(
        cfg, health=msgspec.structs.replace(cfg.health, heartbeat_interval_seconds=600.0)
    )


def live_rig(tmp_path: Path, cfg: BotConfig) -> ScriptedRig:
    """A LIVE system on the fake Binance exchange with a winning track record (LIVE never explores)."""
    sim = make_sim_exchange(cfg, [SYMBOL], start_ms=START_MS)
    rig = ScriptedRig(
        root=tmp_path,
        cfg=cfg,
        symbols=[SYMBOL],
        prices={SYMBOL: PRICE},
        epoch_ms=START_MS,
        period_s=60.0,
        sim=sim,
    )
    seed_track_record(
        rig.log_dir,
        cfg,
        symbol=SYMBOL,
        before_ms=START_MS,
        trades=cfg.performance.min_trades_before_confidence + 10,
    )
    return rig


async def sleep_until(rig: ScriptedRig, ms: int) -> None:
    assert rig.clock is not None
    await trio.sleep(max(0.0, (ms - rig.clock.now_ms()) / 1000))


async def lose_one(rig: ScriptedRig) -> dict[str, Any]:
    """One real losing trade: opened, stopped out, booked by risk."""
    system = rig.system
    assert system is not None
    trade_id = await open_position(rig, SYMBOL, Side.LONG)
    record = await stop_out(rig, trade_id)
    await rig.wait_until(lambda: system.risk.snapshot().positions == 0, timeout=60.0)
    await trio.sleep(SETTLE_S)
    return record


async def lose_until_weekly_stop(rig: ScriptedRig, cfg: BotConfig) -> list[dict[str, Any]]:
    """Losing trades day after day (the daily stop ends each day) until the weekly stop pauses."""
    system = rig.system
    assert system is not None
    assert rig.clock is not None
    losses: list[dict[str, Any]] = []
    while len(losses) < MAX_LOSING_TRADES:
        losses.append(await lose_one(rig))
        snap = system.risk.snapshot()
        if snap.paused:
            return losses
        assert snap.day_pnl_pct is not None
        if snap.day_pnl_pct <= cfg.risk.daily_stop_pct:
            now = rig.clock.now_ms()
            await sleep_until(rig, now - now % DAY_MS + DAY_MS + HOUR_MS)
    pytest.fail(f"no weekly stop after {len(losses)} losing trades")

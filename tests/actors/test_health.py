"""The Health actor: safe mode to subscribers, heartbeat file, snapshot, under a mock clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.health import (
    DataReceived,
    FaultReported,
    HealthActor,
    HealthMsg,
    TradingStateChanged,
    UnwatchSymbol,
)
from futures_actor.actors.http_health import DATA_AGE_SECONDS, SAFE_MODE, Metrics
from futures_actor.actors.messages import SafeModeChanged
from futures_actor.core.config import HealthConfig
from futures_actor.core.health import FaultKind
from futures_actor.core.types import TradingState

EPOCH_MS = 1_740_000_000_000
CFG = HealthConfig(
    stale_data_seconds=90.0,
    healthy_streak_seconds=300.0,
    fault_window_seconds=300.0,
    heartbeat_interval_seconds=5.0,
)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_trio_wall_clock_follows_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioWallClock(EPOCH_MS)
    assert clock.now_ms() == EPOCH_MS
    await trio.sleep(300)
    assert clock.now_ms() == EPOCH_MS + 300_000
    with pytest.raises(ValueError, match="epoch_ms"):
        TrioWallClock(-1)


async def test_stale_stream_safe_mode_in_and_out(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    metrics = Metrics()
    sub_send, sub_recv = trio.open_memory_channel[SafeModeChanged](8)
    actor = HealthActor(
        cfg=CFG,
        state_dir=tmp_path,
        wall_clock=TrioWallClock(EPOCH_MS),
        subscribers=[sub_send],
        metrics=metrics,
    )
    send, recv = trio.open_memory_channel[HealthMsg](16)
    assert actor.snapshot() is None
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run, recv)
        t0 = trio.current_time()
        await send.send(DataReceived(symbol="BTCUSDT", stream="kline_5m", ts=t0))
        await trio.sleep(61)  # the heartbeat at +60 s has been written
        beat = json.loads((tmp_path / "heartbeat.json").read_text())
        assert beat["state"] == "HEALTHY"
        assert beat["safe_mode"] is False
        assert beat["data_age_seconds"] == {"BTCUSDT": 60.0}
        assert beat["ts"] == "2025-02-19T21:21:00.000Z"
        # No data for 90 s: stale, safe mode on within one heartbeat.
        with trio.fail_after(40):
            msg = await sub_recv.receive()
        assert msg == SafeModeChanged(on=True, reasons=("STALE_DATA:BTCUSDT/kline_5m",))
        assert 90 <= trio.current_time() - t0 <= 95
        assert metrics.get(SAFE_MODE) == 1
        await trio.sleep(5)
        snap = actor.snapshot()
        assert snap is not None
        assert snap.safe_mode
        assert snap.stale_streams == ("BTCUSDT/kline_5m",)
        assert json.loads((tmp_path / "heartbeat.json").read_text())["state"] == "SAFE_MODE"
        # Data resumes; safe mode ends only after the 300 s healthy streak.
        resumed = trio.current_time()

        async def feed() -> None:
            while True:
                await send.send(DataReceived(symbol="BTCUSDT", stream="kline_5m", ts=trio.current_time()))
                await trio.sleep(10)

        nursery.start_soon(feed)
        with trio.fail_after(320):
            msg = await sub_recv.receive()
        assert msg.on is False
        assert 300 <= trio.current_time() - resumed <= 305
        assert metrics.get(SAFE_MODE) == 0
        assert metrics.get(DATA_AGE_SECONDS, symbol="BTCUSDT") is not None
        await send.send(UnwatchSymbol(symbol="BTCUSDT"))
        await trio.sleep(1)
        assert metrics.get(DATA_AGE_SECONDS, symbol="BTCUSDT") is None
        nursery.cancel_scope.cancel()
    assert not (tmp_path / "heartbeat.json.tmp").exists()


async def test_repeated_faults_and_trading_state(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    sub_send, sub_recv = trio.open_memory_channel[SafeModeChanged](8)
    actor = HealthActor(
        cfg=CFG, state_dir=tmp_path, wall_clock=TrioWallClock(EPOCH_MS), subscribers=[sub_send]
    )
    send, recv = trio.open_memory_channel[HealthMsg](16)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run, recv)
        for _ in range(CFG.rate_limit_error_threshold - 1):
            await send.send(FaultReported(kind=FaultKind.RATE_LIMIT, detail="429"))
            await trio.sleep(1)
        assert sub_recv.statistics().current_buffer_used == 0
        await send.send(FaultReported(kind=FaultKind.RATE_LIMIT, detail="429"))
        with trio.fail_after(1):
            msg = await sub_recv.receive()
        assert msg == SafeModeChanged(on=True, reasons=("RATE_LIMIT",))
        await send.send(TradingStateChanged(state=TradingState.HALTED))
        await trio.sleep(6)
        beat = json.loads((tmp_path / "heartbeat.json").read_text())
        assert beat["trading_state"] == "HALTED"
        assert beat["reasons"] == ["RATE_LIMIT"]
        nursery.cancel_scope.cancel()


async def test_bad_input_does_not_kill_the_actor(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    actor = HealthActor(cfg=CFG, state_dir=tmp_path, wall_clock=TrioWallClock(EPOCH_MS))
    send, recv = trio.open_memory_channel[HealthMsg](16)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run, recv)
        await send.send(DataReceived(symbol="", stream="kline_5m"))
        await send.send(DataReceived(symbol="ETHUSDT", stream="kline_5m"))
        await trio.sleep(6)
        snap = actor.snapshot()
        assert snap is not None
        assert set(snap.data_age_seconds) == {"ETHUSDT"}
        nursery.cancel_scope.cancel()

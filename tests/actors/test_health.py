"""The Health actor: safe mode to subscribers, heartbeat file, snapshot, under a mock clock."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.health import (
    DataReceived,
    FaultReported,
    HealthActor,
    HealthMsg,
    KillSwitchChanged,
    SymbolsMonitored,
    TradingStateChanged,
    UnwatchSymbol,
)
from futures_actor.actors.messages import SafeModeChanged
from futures_actor.actors.metrics import (
    DATA_AGE_SECONDS,
    KILL_SWITCH,
    OPEN_POSITIONS,
    SAFE_MODE,
    SYMBOLS_MONITORED,
    UNPROTECTED_POSITIONS,
    Metrics,
)
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


async def test_heartbeat_log_line_and_file_carry_the_present(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The periodic `heartbeat` log line (every heartbeat_log_interval_seconds) and the heartbeat file
    carry the kill switch, open and unprotected positions and the symbols monitored; the line is a
    warning while a position is unprotected."""
    metrics = Metrics()
    metrics.set(OPEN_POSITIONS, 2)
    metrics.set(UNPROTECTED_POSITIONS, 1)
    cfg = msgspec.structs.replace(CFG, heartbeat_log_interval_seconds=60.0)
    actor = HealthActor(cfg=cfg, state_dir=tmp_path, wall_clock=TrioWallClock(EPOCH_MS), metrics=metrics)
    send, recv = trio.open_memory_channel[HealthMsg](16)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run, recv)
            await send.send(SymbolsMonitored(symbols=("BTCUSDT", "ETHUSDT")))
            await send.send(KillSwitchChanged(on=True, reason="TEST"))
            await trio.sleep(125)
            nursery.cancel_scope.cancel()
    beats = [e for e in logs if e["event"] == "heartbeat"]
    assert len(beats) == 3  # at 0, 60 and 120 s (heartbeats every 5 s)
    last = beats[-1]
    assert last["log_level"] == "warning"
    assert (last["unprotected_positions"], last["open_positions"]) == (1, 2)
    assert (last["kill_switch"], last["trading_state"], last["symbols_monitored"]) == (True, "REDUCING", 2)
    assert last["state"] == "DEGRADED"
    beat = json.loads((tmp_path / "heartbeat.json").read_text())
    assert (beat["unprotected_positions"], beat["open_positions"], beat["kill_switch"]) == (1, 2, True)
    assert beat["reasons"] == ["unprotected_positions=1"]
    assert metrics.get(KILL_SWITCH) == 1
    assert metrics.get(SYMBOLS_MONITORED) == 2


async def test_zero_symbols_monitored_is_a_warning(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    metrics = Metrics()
    actor = HealthActor(cfg=CFG, state_dir=tmp_path, wall_clock=TrioWallClock(EPOCH_MS), metrics=metrics)
    send, recv = trio.open_memory_channel[HealthMsg](16)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run, recv)
            await send.send(SymbolsMonitored(symbols=()))
            await trio.sleep(6)
            nursery.cancel_scope.cancel()
    assert [e["log_level"] for e in logs if e["event"] == "no_symbols_monitored"] == ["warning"]
    beat = json.loads((tmp_path / "heartbeat.json").read_text())
    assert (beat["state"], beat["symbols_monitored"]) == ("DEGRADED", 0)
    assert beat["warnings"]
    assert "no symbols monitored" in beat["warnings"][0]

"""AC11: repeated exchange errors and a stale market-data stream put the bot in safe mode.

Safe mode blocks new entries (PortfolioRisk rejects `SAFE_MODE`, nothing reaches the exchange)
while exits stay managed (an open position's stop still fills and is recorded). Safe mode is left
only after `health.healthy_streak_seconds` of passing health checks.

Faults reach the Health actor the way production reports them:
- `System.report_fault(kind, symbol, detail)`, the callback the REST client users (execution) and
  market data call, with the real kinds (-1021 TIMESTAMP, 429 RATE_LIMIT, 5xx SERVER_ERROR);
- a stale stream: the Health actor watches the symbol's book and mark streams (as the live system
  does at start) and `System.report_data` stops arriving;
- end to end in LIVE: the fake exchange answers 503 to every open-orders query, so execution's
  periodic reconcile fails through the real REST client and gateway, and execution reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import stamina
import trio
import trio.testing

from futures_actor.actors.health import WatchStream
from futures_actor.actors.universe import WATCHED_STREAMS
from futures_actor.core.config import BotConfig, default_config
from futures_actor.core.types import Side
from futures_actor.state.log_schema import validate_trade_record

from .harness import ScriptedRig, make_sim_exchange, next_candle, open_position, signal_report, stop_out

START_MS = 1_735_725_600_000  # 2025-01-01 10:00 UTC
PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000")}
SETTLE_S = 5.0
DATA_PERIOD_S = 1.0
MS = 1000


def _paper_rig(tmp_path: Path, cfg: BotConfig) -> ScriptedRig:
    return ScriptedRig(root=tmp_path, cfg=cfg, symbols=list(PRICES), prices=dict(PRICES), epoch_ms=START_MS)


async def _signal(rig: ScriptedRig, symbol: str = "ETHUSDT") -> dict[str, Any]:
    """A valid long signal on the next candle; its verdict event (risk_rejected or risk_approved)."""
    assert rig.system is not None
    candle = await next_candle(rig)
    report = signal_report(symbol, candle, side=Side.LONG, price=float(rig.prices[symbol]), stop_pct=0.02)
    await rig.system._risk_send.send(report)
    await trio.sleep(SETTLE_S)
    verdicts = [
        e
        for e in rig.events()
        if e["event"] in ("risk_rejected", "risk_approved")
        and e.get("candle_open_time_ms") == candle
        and e.get("symbol") == symbol
    ]
    assert len(verdicts) == 1, verdicts
    return verdicts[0]


def _code(verdict: dict[str, Any]) -> str:
    return "APPROVED" if verdict["event"] == "risk_approved" else str(verdict["code"])


async def _wait_safe_mode(rig: ScriptedRig, on: bool, *, timeout: float) -> int:
    """Wait until PortfolioRisk knows safe mode is `on`; the wall time (ms) it was seen."""
    system = rig.system
    assert system is not None
    assert rig.clock is not None
    await rig.wait_until(lambda: system.risk.snapshot().safe_mode is on, timeout=timeout, poll=0.5)
    return rig.clock.now_ms()


async def _sleep_until(rig: ScriptedRig, ms: int) -> None:
    assert rig.clock is not None
    await trio.sleep(max(0.0, (ms - rig.clock.now_ms()) / MS))


def _threshold(cfg: BotConfig, kind: str) -> int:
    h = cfg.health
    return {
        "TIMESTAMP": h.timestamp_error_threshold,
        "RATE_LIMIT": h.rate_limit_error_threshold,
        "SERVER_ERROR": h.server_error_threshold,
    }[kind]


FAULT_DETAILS = {
    "TIMESTAMP": "TimestampOutOfWindow: code -1021 Timestamp for this request is outside of the recvWindow.",
    "RATE_LIMIT": "RateLimited: HTTP 429 code -1003 Too many requests",
    "SERVER_ERROR": "ServerError: HTTP 503 code -1001 Service Unavailable.",
}


@pytest.mark.parametrize("kind", sorted(FAULT_DETAILS))
async def test_repeated_exchange_errors_enter_safe_mode_exits_still_managed(
    kind: str, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = default_config()
    health = cfg.health
    threshold = _threshold(cfg, kind)
    rig = _paper_rig(tmp_path, cfg)
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            assert rig.clock is not None
            btc = await open_position(rig, "BTCUSDT", Side.LONG)

            # Below the threshold: counted, no safe mode.
            first_fault_ms = rig.clock.now_ms()
            for _ in range(threshold - 1):
                system.report_fault(kind, "BTCUSDT", FAULT_DETAILS[kind])
                await trio.sleep(1.0)
            await trio.sleep(SETTLE_S)
            below = system.risk.snapshot().safe_mode
            # The threshold-th error within the window: safe mode.
            system.report_fault(kind, "BTCUSDT", FAULT_DETAILS[kind])
            last_fault_ms = rig.clock.now_ms()
            entered_ms = await _wait_safe_mode(rig, True, timeout=30.0)
            placed = len(rig.events("order_placed"))
            blocked = await _signal(rig)
            placed_blocked = len(rig.events("order_placed")) - placed

            # Exits are still managed: the open position's stop fills and is recorded.
            record = await stop_out(rig, btc)
            await rig.wait_until(lambda: system.risk.snapshot().positions == 0, timeout=60.0)
            still_safe_after_exit = system.risk.snapshot().safe_mode

            # The check fails until the threshold-th most recent error (the first of the burst)
            # leaves the fault window; then the healthy streak must run in full.
            earliest_exit_ms = first_fault_ms + int(
                (health.fault_window_seconds + health.healthy_streak_seconds) * MS
            )
            await _sleep_until(rig, earliest_exit_ms - 15 * MS)
            safe_just_before = system.risk.snapshot().safe_mode
            exited_ms = await _wait_safe_mode(rig, False, timeout=120.0)
            resumed = await _signal(rig)
            code = await _stop(rig, nursery)

        assert below is False
        assert entered_ms - last_fault_ms <= 5 * MS
        entered = rig.events("safe_mode_entered")
        assert len(entered) == 1
        assert entered[0]["reasons"] == [kind]
        assert len([e for e in rig.events("fault_reported") if e["kind"] == kind]) == threshold
        assert _code(blocked) == "SAFE_MODE"
        assert placed_blocked == 0
        assert validate_trade_record(record) == []
        assert record["result"]["reason"] == "SL"
        assert still_safe_after_exit
        assert safe_just_before
        assert (
            earliest_exit_ms
            <= exited_ms
            <= earliest_exit_ms + int(2 * health.heartbeat_interval_seconds * MS)
        )
        assert len(rig.events("safe_mode_exited")) == 1
        assert _code(resumed) == "APPROVED"
        assert code == 0
    finally:
        rig.close()


async def _stop(rig: ScriptedRig, nursery: trio.Nursery) -> int:
    assert rig.system is not None
    rig.system.stop_requested.set()
    await rig.system.stopped.wait()
    nursery.cancel_scope.cancel()
    return rig.system.exit_code


async def _pump_data(rig: ScriptedRig, symbols: list[str], flowing: Callable[[], bool]) -> None:
    """What market data does on every book / mark event: tell the Health actor (while `flowing()`)."""
    assert rig.system is not None
    while True:
        if flowing():
            for symbol in symbols:
                for stream in WATCHED_STREAMS:
                    rig.system.report_data(symbol, stream, trio.current_time())
        await trio.sleep(DATA_PERIOD_S)


async def test_stale_stream_enters_safe_mode_and_a_fault_in_the_streak_restarts_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = default_config()
    health = cfg.health
    rig = _paper_rig(tmp_path, cfg)
    flowing = [True]
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            assert rig.clock is not None
            symbols = list(PRICES)
            for symbol in symbols:
                for stream in WATCHED_STREAMS:
                    await system._health_send.send(WatchStream(symbol=symbol, stream=stream))
            nursery.start_soon(_pump_data, rig, symbols, lambda: flowing[0])
            btc = await open_position(rig, "BTCUSDT", Side.LONG)
            await trio.sleep(health.stale_data_seconds)  # data flowing: healthy
            healthy_while_flowing = not system.risk.snapshot().safe_mode

            # The WebSocket goes quiet.
            flowing[0] = False
            silent_ms = rig.clock.now_ms()
            entered_ms = await _wait_safe_mode(rig, True, timeout=health.stale_data_seconds * 2)
            blocked = await _signal(rig)
            record = await stop_out(rig, btc)

            # Data is back; a single server error in the streak (below its threshold) restarts it.
            flowing[0] = True
            back_ms = rig.clock.now_ms()
            await trio.sleep(health.healthy_streak_seconds / 3)
            system.report_fault("SERVER_ERROR", None, FAULT_DETAILS["SERVER_ERROR"])
            fault_ms = rig.clock.now_ms()
            # Without that fault the streak would be over by now.
            await _sleep_until(rig, back_ms + int(health.healthy_streak_seconds * MS) + 10 * MS)
            safe_after_first_streak = system.risk.snapshot().safe_mode
            exited_ms = await _wait_safe_mode(rig, False, timeout=health.healthy_streak_seconds * 2)
            resumed = await _signal(rig)
            code = await _stop(rig, nursery)

        assert healthy_while_flowing
        stale_ms = int(health.stale_data_seconds * MS)
        assert (
            silent_ms + stale_ms
            <= entered_ms
            <= silent_ms + stale_ms + int(2 * health.heartbeat_interval_seconds * MS)
        )
        entered = rig.events("safe_mode_entered")
        assert len(entered) == 1
        assert any(r.startswith("STALE_DATA") for r in entered[0]["reasons"]), entered[0]
        assert _code(blocked) == "SAFE_MODE"
        assert record["result"]["reason"] == "SL"
        assert validate_trade_record(record) == []
        assert safe_after_first_streak
        streak_ms = int(health.healthy_streak_seconds * MS)
        assert (
            fault_ms + streak_ms
            <= exited_ms
            <= fault_ms + streak_ms + int(2 * health.heartbeat_interval_seconds * MS)
        )
        assert _code(resumed) == "APPROVED"
        assert code == 0
    finally:
        rig.close()


async def test_live_server_errors_from_the_fake_exchange_enter_safe_mode(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """End to end: 503s injected at the fake exchange reach the Health actor through the real REST
    client, the gateway and execution's reconcile; entries stop; recovery after the streak."""
    base = default_config()
    # Reconcile often enough that the server-error threshold is reached within the fault window.
    cfg = msgspec.structs.replace(
        base, execution=msgspec.structs.replace(base.execution, reconcile_interval_seconds=20.0)
    )
    health = cfg.health
    sim = make_sim_exchange(cfg, list(PRICES), start_ms=START_MS)
    rig = ScriptedRig(
        root=tmp_path, cfg=cfg, symbols=list(PRICES), prices=dict(PRICES), epoch_ms=START_MS, sim=sim
    )
    try:
        with stamina.set_testing(True, attempts=2):
            async with trio.open_nursery() as nursery:
                system = await rig.start(nursery)
                assert rig.clock is not None
                await trio.sleep(SETTLE_S)
                assert not system.risk.snapshot().safe_mode
                sim.faults.fail_next("/fapi/v1/openOrders", status=503, times=1_000_000)
                entered_ms = await _wait_safe_mode(
                    rig, True, timeout=health.server_error_threshold * 20.0 + 60.0
                )
                sent = len(sim.client_ids_sent())
                blocked = await _signal(rig)
                sent_blocked = len(sim.client_ids_sent()) - sent
                sim.faults.http.clear()  # the exchange recovers
                recovered_ms = rig.clock.now_ms()
                exited_ms = await _wait_safe_mode(
                    rig, False, timeout=health.fault_window_seconds + health.healthy_streak_seconds + 120.0
                )
                code = await _stop(rig, nursery)

        faults = [e for e in rig.events("fault_reported") if e["kind"] == "SERVER_ERROR"]
        assert len(faults) >= health.server_error_threshold
        entered = rig.events("safe_mode_entered")
        assert len(entered) == 1
        assert entered[0]["reasons"] == ["SERVER_ERROR"]
        assert entered_ms > START_MS
        assert rig.events("reconcile_fetch_failed")
        assert _code(blocked) == "SAFE_MODE"
        assert sent_blocked == 0
        # left no earlier than a full streak after the last failing reconcile
        assert exited_ms - recovered_ms >= int(health.healthy_streak_seconds * MS)
        assert len(rig.events("safe_mode_exited")) == 1
        assert code == 0
    finally:
        rig.close()

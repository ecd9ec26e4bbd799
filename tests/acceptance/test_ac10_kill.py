"""AC10: kill switch with two open positions (paper system on a scripted market).

Every working order is cancelled, each position is closed by a reduce-only MARKET order and each
trade gets a record with reason KILL_SWITCH; new entries are refused while the switch is engaged.
Engaged through `System.engage_kill`, and through the `kill` CLI command's file, which the running
system watches (`kill_file_watch=True`).
"""

from __future__ import annotations

import io
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio
import trio.testing

from futures_actor import cli
from futures_actor.actors.messages import CandleClosed
from futures_actor.core import lifecycle as lcm
from futures_actor.core.config import BotConfig, default_config
from futures_actor.core.ids import trade_key
from futures_actor.core.types import Candle, OrderRole, Side
from futures_actor.state.log_schema import validate_trade_record

from .harness import ScriptedRig, signal_report

START_MS = 1_735_725_600_000  # 2025-01-01 10:00 UTC
HOUR_MS = 3_600_000
FIVE_MIN_MS = 300_000
PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000")}
SIDES = {"BTCUSDT": Side.LONG, "ETHUSDT": Side.SHORT}
STOP_PCT = 0.02  # two positions at 1 % risk each fit the isolated margin of a 10 000 USDT account
WAIT_S = 120.0
SETTLE_S = 5.0


def _uncorrelated_hours(symbol: str, price: float, *, seed: int, hours: int) -> list[CandleClosed]:
    """`hours` 1h closes ending just before START_MS: an independent random walk per symbol, so the
    72h correlation filter knows the pair (and finds it uncorrelated)."""
    rng = random.Random(seed)
    out: list[CandleClosed] = []
    p = price
    for i in range(hours):
        p *= 1 + rng.gauss(0.0, 0.004)
        t = START_MS - (hours - i) * HOUR_MS
        c = Candle(open_time_ms=t, open=p, high=p * 1.001, low=p * 0.999, close=p, volume=100.0)
        out.append(CandleClosed(symbol=symbol, interval="1h", candle=c, source="rest"))
    return out


async def _two_open_positions(rig: ScriptedRig, cfg: BotConfig) -> list[str]:
    """Two trades (BTC long, ETH short) approved by PortfolioRisk, filled and protected."""
    system = rig.system
    assert system is not None
    assert rig.clock is not None
    hours = cfg.timeframes.corr_lookback_hours + 2
    for seed, (symbol, price) in enumerate(PRICES.items()):
        for msg in _uncorrelated_hours(symbol, float(price), seed=seed, hours=hours):
            await system._risk_send.send(msg)
    now = rig.clock.now_ms()
    candle = now - now % FIVE_MIN_MS
    for symbol, price in PRICES.items():
        report = signal_report(symbol, candle, side=SIDES[symbol], price=float(price), stop_pct=STOP_PCT)
        await system._risk_send.send(report)
    await rig.wait_until(lambda: len(system.execution.open_trades()) == 2, timeout=WAIT_S)
    for lc in system.execution.open_trades():
        await rig.wait_until(lambda lc=lc: bool(lc.live_orders(OrderRole.ENTRY)), timeout=WAIT_S)
    for symbol, price in PRICES.items():  # trade through both entry limits
        through = price * (Decimal("0.999") if SIDES[symbol] is Side.LONG else Decimal("1.001"))
        rig.set_price(symbol, str(through))

    def protected() -> bool:
        trades = system.execution.open_trades()
        return len(trades) == 2 and all(
            t.phase is lcm.Phase.OPEN and t.live_orders(OrderRole.STOP) and t.live_orders(OrderRole.TARGET)
            for t in trades
        )

    await rig.wait_until(protected, timeout=WAIT_S)
    await trio.sleep(SETTLE_S)
    return sorted(t.trade_id for t in system.execution.open_trades())


def _paper_open_orders(rig: ScriptedRig) -> list[dict[str, Any]]:
    import msgspec

    assert rig.paper is not None
    data = msgspec.json.decode(rig.paper.snapshot())
    return [o for o in data["open_orders"] if o["status"] in ("NEW", "PARTIALLY_FILLED")]


def _assert_flattened_by_kill(rig: ScriptedRig, trade_ids: list[str], *, before_kill: int) -> None:
    """After the kill: nothing working, no position, MARKET reduce-only closes, KILL_SWITCH records."""
    assert _paper_open_orders(rig) == []
    placed = rig.events("order_placed")[before_kill:]
    closes = [e for e in placed if e["type"] == "MARKET"]
    assert sorted(e["trade_id"] for e in closes) == trade_ids
    assert all(e["reduce_only"] is True for e in closes)
    # nothing but the closes was placed after the kill (no new entry, no new stop or target)
    assert placed == closes
    records = rig.trade_records()
    assert sorted(r["trade_id"] for r in records) == trade_ids
    for r in records:
        assert validate_trade_record(r) == []
        assert r["result"]["reason"] == "KILL_SWITCH"
    cancelled = {e["cid"] for e in rig.events("order_canceled")}
    for tid in trade_ids:  # each trade's stop and target were cancelled
        key = trade_key(tid)
        assert any(cid.endswith("-S1") and key in cid for cid in cancelled), tid
        assert any(cid.endswith("-T1") and key in cid for cid in cancelled), tid


async def test_engage_kill_flattens_two_positions(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = default_config()
    rig = ScriptedRig(root=tmp_path, cfg=cfg, symbols=list(PRICES), prices=dict(PRICES), epoch_ms=START_MS)
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            trade_ids = await _two_open_positions(rig, cfg)
            assert system.risk.snapshot().positions == 2
            assert len(_paper_open_orders(rig)) == 4  # two stops, two targets
            placed_before = len(rig.events("order_placed"))
            await system.engage_kill("ACCEPTANCE_AC10")
            await rig.wait_until(lambda: not system.execution.open_trades(), timeout=WAIT_S)
            await trio.sleep(SETTLE_S)
            assert rig.paper is not None
            positions = await rig.paper.positions()
            # a new valid signal is refused while the switch is engaged
            assert rig.clock is not None
            await trio.sleep(FIVE_MIN_MS / 1000)  # the next 5m candle
            now = rig.clock.now_ms()
            later = now - now % FIVE_MIN_MS
            await system._risk_send.send(signal_report("BTCUSDT", later, side=Side.LONG, price=60_000.0))
            await trio.sleep(SETTLE_S)
            snap = system.risk.snapshot()
            code = await rig_stop(rig)
            nursery.cancel_scope.cancel()
        assert positions == []
        _assert_flattened_by_kill(rig, trade_ids, before_kill=placed_before)
        assert snap.kill_switch
        assert (snap.positions, snap.pending) == (0, 0)
        assert snap.rejections.get("KILL_SWITCH") == 1
        assert code == cli.EXIT_OK
    finally:
        rig.close()


async def rig_stop(rig: ScriptedRig) -> int:
    """Orderly stop (as on SIGTERM); the exit code."""
    assert rig.system is not None
    rig.system.stop_requested.set()
    await rig.system.stopped.wait()
    return rig.system.exit_code


async def test_kill_cli_file_is_what_the_running_system_watches(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = default_config()
    rig = ScriptedRig(
        root=tmp_path,
        cfg=cfg,
        symbols=list(PRICES),
        prices=dict(PRICES),
        epoch_ms=START_MS,
        kill_file_watch=True,
    )
    out, err = io.StringIO(), io.StringIO()
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            trade_ids = await _two_open_positions(rig, cfg)
            placed_before = len(rig.events("order_placed"))
            code_kill = cli.main(
                ["kill", "--state-dir", str(rig.state_dir), "--reason", "ac10"], stdout=out, stderr=err
            )
            assert cli.kill_file_path(rig.state_dir).exists()
            await rig.wait_until(
                lambda: system.kill_engaged, timeout=2 * cfg.health.heartbeat_interval_seconds
            )
            await rig.wait_until(lambda: not system.execution.open_trades(), timeout=WAIT_S)
            await trio.sleep(SETTLE_S)
            kill_events = rig.events("kill_switch_engaged")
            code_resume = cli.main(["resume", "--state-dir", str(rig.state_dir)], stdout=out, stderr=err)
            await rig.wait_until(
                lambda: not system.kill_engaged, timeout=2 * cfg.health.heartbeat_interval_seconds
            )
            await trio.sleep(SETTLE_S)
            resumed = not system.risk.snapshot().kill_switch
            nursery.cancel_scope.cancel()
        assert (code_kill, code_resume) == (cli.EXIT_OK, cli.EXIT_OK), err.getvalue()
        assert [e["reason"] for e in kill_events] == ["OPERATOR_KILL_FILE"]
        _assert_flattened_by_kill(rig, trade_ids, before_kill=placed_before)
        assert resumed
    finally:
        rig.close()

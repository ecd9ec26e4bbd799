"""Issue 10 #7: position and error alerts reach the log (events.jsonl) and Telegram (BOT_SPEC §11).

A whole PAPER_LIVE system on a scripted market: a position opened and stopped out gives the
Reporter's POSITION_OPENED and POSITION_CLOSED alerts; a lifecycle alert (protection) and an actor
crash (an UNEXPECTED_EXCEPTION fault) give error alerts, each offered to Telegram.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import trio
import trio.testing

from futures_actor.core.types import Side

from .harness import ScriptedRig, open_position, stop_out
from .weekly_stop import slow_heartbeat_cfg

START_MS = 1_735_725_600_000  # Wed 2025-01-01 10:00 UTC
SYMBOL = "BTCUSDT"


class _Telegram:
    """Stands in for `TelegramSender`: what the Reporter offers."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def offer(self, text: str) -> None:
        self.texts.append(text)


async def test_position_and_error_alerts(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    telegram = _Telegram()
    rig = ScriptedRig(
        root=tmp_path,
        cfg=slow_heartbeat_cfg(),
        symbols=[SYMBOL],
        prices={SYMBOL: Decimal("60000")},
        epoch_ms=START_MS,
        period_s=60.0,
    )
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            system.reporter._telegram = telegram  # type: ignore[assignment]
            trade_id = await open_position(rig, SYMBOL, Side.LONG)
            await stop_out(rig, trade_id)
            await trio.sleep(5)
            system.faults.execution_alert("PROTECTION_FAILED", SYMBOL, "stop could not be placed")
            system.report_fault("UNEXPECTED_EXCEPTION", SYMBOL, "symbol actor crashed: ValueError")
            await trio.sleep(5)
            system.stop_requested.set()
            await system.stopped.wait()
            nursery.cancel_scope.cancel()
        alerts: list[dict[str, Any]] = [e for e in rig.events("alert") if e.get("actor") == "reporter"]
    finally:
        rig.close()
    kinds = [e["kind"] for e in alerts]
    assert "POSITION_OPENED" in kinds
    assert "POSITION_CLOSED" in kinds
    assert "PROTECTION_FAILED" in kinds
    assert "ERROR" in kinds
    error = next(e for e in alerts if e["kind"] == "PROTECTION_FAILED")
    assert error["level"] == "error"
    assert error["symbol"] == SYMBOL
    assert any("Opened LONG BTCUSDT" in t for t in telegram.texts)
    assert any("Closed BTCUSDT (SL)" in t for t in telegram.texts)
    assert any("stop could not be placed" in t for t in telegram.texts)

"""Issue 9 #15: a full log disk is an alert, safe mode and an orderly stop with a clear reason.

It used to freeze market data for 85 s (the failing write raised into whichever actor logged) and then
exit 1 without saying why. Here the events file starts refusing writes with ENOSPC while the system
runs: the actors keep running, the reason goes to stderr, health enters safe mode (LOG_WRITE), the
system stops in order with exit code 1 and `stop_reason` naming the error.
"""

from __future__ import annotations

import errno
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing

from futures_actor.actors.metrics import SAFE_MODE
from futures_actor.core.config import default_config
from futures_actor.logs import current_sink, get_logger

from .harness import ScriptedRig

START_MS = 1_735_725_600_000
PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000")}


async def test_enospc_on_the_event_log_stops_in_order(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = default_config()
    rig = ScriptedRig(root=tmp_path, cfg=cfg, symbols=list(PRICES), prices=dict(PRICES), epoch_ms=START_MS)
    safe_mode_seen: list[bool] = []
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            await trio.sleep(5.0)
            sink = current_sink()
            assert sink is not None
            assert sink.events_file is not None

            def full(line: str) -> Path:
                raise OSError(
                    errno.ENOSPC, "No space left on device", str(tmp_path / "logs" / "events.jsonl")
                )

            sink.events_file.write_line = full  # type: ignore[method-assign]
            t0 = trio.current_time()
            # The next event any actor logs hits the full disk; it must not raise into the actor.
            get_logger("execution").info("order_placed", symbol="BTCUSDT")
            with trio.fail_after(cfg.shutdown.timeout_seconds + 30):
                while not system.stopped.is_set():
                    snap = system.health.snapshot()
                    safe_mode_seen.append(snap is not None and snap.safe_mode)
                    await trio.sleep(0.1)
            elapsed = trio.current_time() - t0
            nursery.cancel_scope.cancel()
    finally:
        rig.close()
    err = capsys.readouterr().err
    assert system.exit_code == 1
    assert system.stop_reason is not None
    assert "No space left on device" in system.stop_reason
    assert "log disk refuses writes" in err
    assert '"event":"log_write_failed"' in err  # the lines still reach stderr
    assert system.safe_mode_entered.is_set()
    assert system.metrics.get(SAFE_MODE) == 1
    assert elapsed < cfg.shutdown.timeout_seconds

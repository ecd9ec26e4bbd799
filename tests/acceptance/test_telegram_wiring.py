"""The Telegram commands read and act on the real system (same callbacks as POST /kill and /resume)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from futures_actor.cli import kill_file_path

from .harness import Harness, copy_real_klines


async def test_handlers_answer_from_the_running_system(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    h = Harness.create(tmp_path, symbols=["BTCUSDT"], prices={"BTCUSDT": 93_000.0})
    copy_real_klines(h.klines_dir, "BTCUSDT", days=1)
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        assert h.system is not None
        handlers = h.system._telegram_handlers()
        status = handlers.status()
        assert "kill switch off" in status
        assert "open positions 0" in status
        assert handlers.positions() == "No open positions."
        assert handlers.profit().startswith("0 closed trades, pnl +0.00 USDT")
        assert handlers.daily() == "No daily report yet."
        await handlers.kill("TELEGRAM_KILL")
        assert h.system.kill_engaged
        assert kill_file_path(h.state_dir).is_file()  # survives a restart, like POST /kill
        assert "kill switch ENGAGED" in handlers.status()
        await handlers.resume("TELEGRAM_RESUME")
        assert not h.system.kill_engaged
        assert not kill_file_path(h.state_dir).exists()
        code = await h.stop()
    h.close()
    assert code == 0

"""The harness itself: a short real-data run through every actor ends in order."""

from __future__ import annotations

from pathlib import Path

import trio

from futures_actor.actors.metrics import ORDERS

from .harness import Harness, copy_real_klines


async def test_two_days_on_real_klines_run_and_stop_cleanly(tmp_path: Path, autojump_clock) -> None:
    h = Harness.create(
        tmp_path, symbols=["BTCUSDT", "ETHUSDT"], prices={"BTCUSDT": 90_000.0, "ETHUSDT": 3_300.0}
    )
    for s in h.symbols:
        copy_real_klines(h.klines_dir, s, days=2)
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        assert h.feed is not None
        await h.feed.done.wait()
        code = await h.stop()
    h.close()
    assert code == 0
    assert not [e for e in h.events() if e["level"] in ("error", "critical")]
    # /metrics carries the order gauges by state, consistent with what execution holds.
    assert h.system is not None
    live = [o for lc in h.system.execution.open_trades() for o in lc.live_orders()]
    for state in ("SENT", "WORKING", "UNKNOWN"):
        expected = sum(1 for o in live if o.status.value == state)
        assert h.system.metrics.get(ORDERS, state=state) == expected
    assert "futures_actor_orders{" in h.system.metrics.render()

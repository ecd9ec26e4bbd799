"""Issue 9 #13: market data never waits on order I/O.

The real router, Execution and paper exchange under the mock clock: an order placement that takes 30 s
(a slow exchange) while book and mark prices stream in. Execution awaits its exchange calls one at a
time, so its inbox stops draining; the prices it gets are conflated (latest per symbol), so publishing
market data (candles to every symbol actor go through the same router) is never held up. Before the
fix each price was an awaited send into Execution's inbox and publications stalled for up to ~26 s.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import trio
import trio.testing

from futures_actor.core.config import default_config
from futures_actor.core.types import Side

from .harness import ScriptedRig, next_candle, signal_report

START_MS = 1_735_725_600_000  # 2025-01-01 10:00 UTC
PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000")}
PLACEMENT_S = 30.0
TICK_S = 0.01  # 2 symbols x (book + mark) every 10 ms: 400 prices a second
MAX_PUBLISH_S = 0.5


async def test_a_30s_order_placement_does_not_delay_market_data(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = default_config()
    rig = ScriptedRig(
        root=tmp_path, cfg=cfg, symbols=list(PRICES), prices=dict(PRICES), epoch_ms=START_MS, period_s=TICK_S
    )
    slow_calls: list[float] = []
    durations: list[float] = []
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            assert rig.paper is not None
            paper = rig.paper
            original_place = paper.place_order

            async def slow_place(req: Any) -> Any:
                slow_calls.append(trio.current_time())
                await trio.sleep(PLACEMENT_S)
                return await original_place(req)

            paper.place_order = slow_place  # type: ignore[method-assign]
            original_publish = system.router.publish

            async def timed_publish(symbol: str, msg: Any) -> None:
                t0 = trio.current_time()
                await original_publish(symbol, msg)
                durations.append(trio.current_time() - t0)

            system.router.publish = timed_publish  # type: ignore[method-assign]
            candle = await next_candle(rig)
            btc = float(PRICES["BTCUSDT"])
            await system._risk_send.send(signal_report("BTCUSDT", candle, side=Side.LONG, price=btc))
            with trio.fail_after(60):
                while not slow_calls:  # noqa: ASYNC110
                    await trio.sleep(TICK_S)
            durations.clear()
            await trio.sleep(PLACEMENT_S + 5.0)
            system.stop_requested.set()
            await system.stopped.wait()
            nursery.cancel_scope.cancel()
    finally:
        rig.close()
    assert len(durations) > 1000  # prices kept flowing during the slow placement
    assert max(durations) < MAX_PUBLISH_S, f"a publication waited {max(durations):.1f} s"
    assert system.exec_prices.replaced > 0  # superseded prices were dropped, not queued

"""The paper exchange on the event loop (`PaperVenue`) against the same exchange run by trio.

The same inputs — two candles' paths, a resting limit entry that the first path fills part-way down, a
stop on the mark that the second path triggers, a funding time — through (a) `PaperExchange.run` under
trio's mock clock and (b) `PaperVenue` on an `EventLoop`: the same events, delivered at the same
simulated millisecond.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio
import trio.lowlevel
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.binance.gateway import GatewayEvent, OrderRequest, StopRequest
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.config import ExecutionConfig
from futures_actor.core.types import Candle, SymbolRules
from futures_actor.runtime.loop import EventLoop
from futures_actor.runtime.venue import PaperVenue, VenueSuspendedError, complete

T0 = 1_750_000_200_000
FIVE_M = 300_000
SYM = "BTCUSDT"
RULES = {
    SYM: SymbolRules(
        symbol=SYM,
        tick_size=Decimal("0.1"),
        step_size=Decimal("0.001"),
        min_qty=Decimal("0.001"),
        min_notional=Decimal("5"),
    )
}
FALL = Candle(open_time_ms=T0, open=100.0, high=100.5, low=95.0, close=97.0, volume=50.0)
DROP = Candle(open_time_ms=T0 + FIVE_M, open=97.0, high=97.5, low=90.0, close=91.0, volume=50.0)
ENTRY = OrderRequest(
    symbol=SYM, side="BUY", type="LIMIT", quantity=Decimal("1"), price=Decimal("98"), client_id="e1"
)
STOP = StopRequest(
    symbol=SYM, side="SELL", quantity=Decimal("1"), trigger_price=Decimal("93"), client_id="s1"
)
FUNDING_MS = T0 + FIVE_M + 60_000


def _paper(now_ms: object) -> PaperExchange:
    return PaperExchange(cfg=ExecutionConfig(), rules=dict(RULES), now_ms=now_ms)  # type: ignore[arg-type]


def _trio_events() -> list[tuple[int, GatewayEvent]]:
    out: list[tuple[int, GatewayEvent]] = []

    async def main() -> None:
        clock = TrioWallClock(T0)
        paper = _paper(clock.now_ms)
        async with trio.open_nursery() as nursery:
            await nursery.start(paper.run)

            async def collect() -> None:
                async for ev in paper.events():
                    out.append((clock.now_ms(), ev))

            nursery.start_soon(collect)
            paper.on_path(SYM, FALL, FIVE_M)
            await paper.prepare_symbol(SYM, leverage=5)
            await paper.place_order(ENTRY)
            await trio.sleep(FIVE_M / 1000)
            paper.on_mark(SYM, 97.0, 0.0001, FUNDING_MS, T0 + FIVE_M)
            paper.on_path(SYM, DROP, FIVE_M)
            await paper.place_stop(STOP)
            await trio.sleep(FIVE_M / 1000)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return out


class _Collect:
    def __init__(self) -> None:
        self.events: list[tuple[int, GatewayEvent]] = []

    def deliver(self, message: object, loop: EventLoop) -> None:
        self.events.append((loop.now_ms, message))  # type: ignore[arg-type]


class _Script:
    """The trio test's body as timed steps on the loop."""

    def __init__(self, venue: PaperVenue) -> None:
        self.venue = venue

    def deliver(self, message: object, loop: EventLoop) -> None:
        paper = self.venue.paper
        if message == "start":
            paper.on_path(SYM, FALL, FIVE_M)
            self.venue.settle(loop)
            self.venue.call(paper.prepare_symbol(SYM, leverage=5), loop)
            self.venue.call(paper.place_order(ENTRY), loop)
        elif message == "second":
            paper.on_mark(SYM, 97.0, 0.0001, FUNDING_MS, T0 + FIVE_M)
            paper.on_path(SYM, DROP, FIVE_M)
            self.venue.settle(loop)
            self.venue.call(paper.place_stop(STOP), loop)


def _des_events() -> list[tuple[int, GatewayEvent]]:
    loop = EventLoop(start_ms=T0)
    sink = _Collect()
    venue = PaperVenue(_paper(lambda: loop.now_ms), name="paper", events_to=sink)
    script = _Script(venue)
    loop.post_at(T0, script, "start")
    loop.post_at(T0 + FIVE_M, script, "second")
    loop.run(until_ms=T0 + 2 * FIVE_M)
    return sink.events


def test_venue_delivers_the_events_trio_delivers_at_the_same_millisecond() -> None:
    trio_events = _trio_events()
    des_events = _des_events()
    kinds = [type(e).__name__ for _, e in des_events]
    assert "FundingPaid" in kinds
    assert kinds.count("OrderUpdate") >= 4  # new, fill, stop new, stop fill
    assert des_events == trio_events


def test_complete_refuses_a_coroutine_that_suspends() -> None:
    async def waits() -> None:
        await trio.lowlevel.checkpoint()

    with pytest.raises(VenueSuspendedError, match="must not wait"):
        complete(waits())

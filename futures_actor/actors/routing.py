"""Who receives which market facts and fills: the system's subscription table, declared once (issue 12).

`MarketRouter` (actors/market_data.py) delivers each market message to the inbox of its symbol's actor
and to every tap; this module declares the taps and what each does with a message:

| subscriber | receives | how |
|---|---|---|
| SymbolActor (one per symbol) | candles, book, mark of its symbol | the router's route, awaited |
| PortfolioRisk | 1h closes (correlation) | awaited (back-pressure) |
| Execution | book and mark prices | conflated: the latest per symbol and kind (`ConflatedPrices`) |
| live paper exchange | book, mark, live candle closes | called directly (`feed_paper`) |
| replay paper exchanges | recorded funding (`MarkUpdated`) | called directly (`feed_replay_funding`) |
| shadow book | prices for its paper exchange and execution, candles for its trailer | its own tap |

Execution's outputs go to PortfolioRisk; a copy of a position opened or closed goes to the Reporter
(`ReportingRiskChannel`). Each tap has its own bounded channel (`TAP_SIZE`) and task, so a slow subscriber
holds up only its own tap until the buffer is full. Market data never waits on order I/O: Execution awaits
exchange calls one at a time, so its prices are conflated and forwarded by their own task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from futures_actor.actors.execution import ExecutionInbox
from futures_actor.actors.market_data import MarketMsg, MarketRouter
from futures_actor.actors.messages import BookUpdated, CandleClosed, EntryFilled, MarkUpdated, TradeClosed
from futures_actor.actors.portfolio_risk import RiskInbox
from futures_actor.actors.reporter import ReporterMsg
from futures_actor.binance.paper import PaperExchange
from futures_actor.logs import get_logger

__all__ = [
    "TAP_SIZE",
    "ConflatedPrices",
    "MarketSubscribers",
    "MarketTap",
    "ReportingRiskChannel",
    "feed_paper",
    "feed_replay_funding",
    "open_tap",
    "run_tap",
]

# Each tap's buffer: a burst of book tickers across every symbol without blocking the router.
TAP_SIZE = 1024

_ACTORS = "actors"

log = get_logger("app")


class ConflatedPrices:
    """The price stream to Execution, conflated: only the latest book and mark price per symbol is kept.

    Market data must never wait on order I/O (BOT_SPEC §12, issue 9 #13): Execution awaits exchange calls
    one at a time, so while an order placement takes 30 s its inbox stops draining. `put` never blocks
    (a newer price replaces the one not yet delivered, per symbol and kind); `forward` delivers what is
    pending, oldest update first, waiting on Execution's inbox without holding up the market-data router.
    """

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], BookUpdated | MarkUpdated] = {}
        self._pending = trio.Event()
        self.replaced = 0  # prices superseded before delivery (for tests and logs)

    def put(self, msg: BookUpdated | MarkUpdated) -> None:
        key = (type(msg).__name__, msg.symbol)
        if self._latest.pop(key, None) is not None:
            self.replaced += 1
        self._latest[key] = msg
        self._pending.set()

    def __len__(self) -> int:
        return len(self._latest)

    async def forward(self, send: trio.abc.SendChannel[ExecutionInbox]) -> None:
        while True:
            await self._pending.wait()
            self._pending = trio.Event()
            while self._latest:
                key = next(iter(self._latest))
                await send.send(self._latest.pop(key))


def feed_paper(paper: PaperExchange, msg: MarketMsg) -> None:
    """A market fact for a live paper exchange (book, mark, a closed candle's last price); bad input
    is logged, never raised."""
    try:
        match msg:
            case BookUpdated(symbol=s, bid=bid, ask=ask, ts_ms=ts):
                paper.on_book(s, bid, ask, ts)
            case MarkUpdated(symbol=s, mark_price=m, funding_rate=r, next_funding_ms=n, ts_ms=ts):
                paper.on_mark(s, m, r, n, ts)
            case CandleClosed(symbol=s, candle=c, source=src) if src != "replay":
                paper.on_trade_price(s, c.close, c.open_time_ms, volume=None)
            case _:
                pass
    except Exception as exc:
        log.error("paper_market_input_rejected", error=str(exc))


def feed_replay_funding(paper: PaperExchange, msg: MarkUpdated) -> None:
    """Replay: a recorded funding rate (`MarkUpdated.ts_ms` is its funding time) for a paper exchange;
    the mark is not pinned (the candle path stays the mark). Bad input is logged, never raised."""
    try:
        paper.on_funding(msg.symbol, msg.funding_rate, msg.ts_ms)
    except Exception as exc:
        log.error("paper_funding_input_rejected", symbol=msg.symbol, error=str(exc))


@dataclass(frozen=True)
class MarketTap:
    """One subscriber of every market message: its name (for reading the table) and what it does with
    one message."""

    name: str
    deliver: Callable[[MarketMsg], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class MarketSubscribers:
    """The central subscribers of market data (the symbol actors get theirs through the router's routes)."""

    risk: trio.MemorySendChannel[RiskInbox]
    # The interval whose closes PortfolioRisk needs (correlation).
    trend_tf: str
    execution_prices: ConflatedPrices
    # Live paper trading: the paper exchange gets every price market data sees.
    paper: PaperExchange | None
    # Replay: the paper exchanges (the bot's and the shadow book's) that recorded funding must reach.
    replay_papers: Sequence[PaperExchange] | None

    def taps(self) -> list[MarketTap]:
        """The taps this system runs, in the order the router delivers to them."""
        taps = [MarketTap(_ACTORS, self._to_actors)]
        if self.paper is not None and self.replay_papers is None:
            taps.append(MarketTap("paper", self._to_paper))
        return taps

    def start(
        self, router: MarketRouter, nursery: trio.Nursery, execution: trio.abc.SendChannel[ExecutionInbox]
    ) -> None:
        """Open the taps on `router` and start their tasks; the forwarder of Execution's conflated prices
        starts right after the actors' tap."""
        for tap in self.taps():
            _, recv = open_tap(router)
            nursery.start_soon(run_tap, recv, tap)
            if tap.name == _ACTORS:
                nursery.start_soon(self.execution_prices.forward, execution)

    async def _to_actors(self, msg: MarketMsg) -> None:
        """1h closes to PortfolioRisk (correlation), book and mark prices to Execution (re-pricing a
        retried entry from the mid, the price band of a kill), conflated."""
        match msg:
            case CandleClosed(interval=interval) if interval == self.trend_tf:
                await self.risk.send(msg)
            case MarkUpdated() if self.replay_papers is not None:
                # Replay's recorded funding reaches the paper exchange(s) (issue 10 #4); live
                # paper gets the mark stream through its own tap.
                for paper in self.replay_papers:
                    feed_replay_funding(paper, msg)
                self.execution_prices.put(msg)
            case BookUpdated() | MarkUpdated():
                self.execution_prices.put(msg)
            case _:
                pass

    async def _to_paper(self, msg: MarketMsg) -> None:
        assert self.paper is not None
        feed_paper(self.paper, msg)


def open_tap(
    router: MarketRouter,
) -> tuple[trio.MemorySendChannel[MarketMsg], trio.MemoryReceiveChannel[MarketMsg]]:
    """A new tap of `router` (bounded, `TAP_SIZE`): every market message reaches the receive side."""
    send, recv = trio.open_memory_channel[MarketMsg](TAP_SIZE)
    router.add_tap(send)
    return send, recv


async def run_tap(recv: trio.MemoryReceiveChannel[MarketMsg], tap: MarketTap) -> None:
    """Deliver a tap's messages, in order, until the router closes it."""
    async for msg in recv:
        await tap.deliver(msg)


class ReportingRiskChannel(trio.abc.SendChannel[RiskInbox]):
    """Execution's channel to PortfolioRisk that also offers the Reporter a copy of a position opened
    (final entry fill) or closed: the Reporter's alerts (BOT_SPEC §11). The copy never blocks."""

    def __init__(
        self, risk: trio.MemorySendChannel[RiskInbox], report: trio.MemorySendChannel[ReporterMsg]
    ) -> None:
        self._risk = risk
        self._report = report

    async def send(self, value: RiskInbox) -> None:
        await self._risk.send(value)
        if isinstance(value, TradeClosed) or (isinstance(value, EntryFilled) and value.final):
            try:
                self._report.send_nowait(value)
            except trio.WouldBlock:
                log.error("reporter_inbox_full", message=type(value).__name__)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def send_nowait(self, value: RiskInbox) -> None:
        self._risk.send_nowait(value)

    def clone(self) -> trio.MemorySendChannel[RiskInbox]:
        return self._risk.clone()

    async def aclose(self) -> None:
        await self._risk.aclose()

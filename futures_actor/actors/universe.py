"""The daily universe refresh (BOT_SPEC §2): re-select the symbols on the Scheduler's UNIVERSE_REFRESH tick.

It owns the set of monitored symbols. A refresh asks the selection (`refresh`, given the symbols still
managed: a position or working orders) for the tradable symbols and their rules, then in this order:
the rules reach the paper exchanges; `UniverseChanged` reaches Execution, the shadow book (dropped if its
inbox is full) and PortfolioRisk, all before a new symbol's first report; new symbols' actors start,
symbols that left and hold nothing retire; market data follows; Health watches the new symbols' streams
(live only) and learns the monitored set. Symbols with a position or working orders stay monitored but
take no new entries. A failed selection is logged and reported as a fault; the universe stays as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from futures_actor.actors.execution import ExecutionInbox
from futures_actor.actors.health import HealthMsg, SymbolsMonitored, UnwatchSymbol, WatchStream
from futures_actor.actors.messages import UniverseChanged
from futures_actor.actors.portfolio_risk import RiskInbox
from futures_actor.actors.scheduler import ScheduledTick
from futures_actor.actors.shadow_book import ShadowBook
from futures_actor.actors.symbol_pool import FaultCallback, SymbolActors
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.types import SymbolRules
from futures_actor.logs import get_logger

__all__ = ["WATCHED_STREAMS", "RefreshUniverse", "UniverseRefresher"]

# Streams whose silence is a health fault (kline streams only deliver on a close; their silence is
# reported by the stream watchdog as STALE_DATA instead).
WATCHED_STREAMS = ("bookTicker", "markPrice")

log = get_logger("app")

RefreshUniverse = Callable[
    [Sequence[str]],
    Awaitable[tuple[list[str], dict[str, SymbolRules]] | tuple[list[str], dict[str, SymbolRules], str]],
]
"""Given the symbols still managed: the newly selected symbols and the exchange rules, and possibly the new
beta reference symbol as a third element."""


class UniverseRefresher:
    """The universe refresh of one system (see the module docstring)."""

    def __init__(
        self,
        *,
        refresh: RefreshUniverse | None,
        symbols: Sequence[str],
        managed_symbols: Callable[[], list[str]],
        actors: SymbolActors,
        paper: PaperExchange | None,
        shadow: ShadowBook | None,
        execution: trio.MemorySendChannel[ExecutionInbox],
        risk: trio.MemorySendChannel[RiskInbox],
        health: trio.MemorySendChannel[HealthMsg],
        set_market_symbols: Callable[[Sequence[str]], Awaitable[None]] | None,
        watch_streams: bool,
        on_fault: FaultCallback,
    ) -> None:
        self._refresh = refresh
        self._managed_symbols = managed_symbols
        self._actors = actors
        self._paper = paper
        self._shadow = shadow
        self._execution = execution
        self._risk = risk
        self._health = health
        self._set_market_symbols = set_market_symbols
        self._watch_streams = watch_streams
        self._on_fault = on_fault
        self.active_symbols: set[str] = set(symbols)

    async def announce(self, symbols: Sequence[str]) -> None:
        """Start-up: Health learns the monitored symbols and (live) watches their streams."""
        await self._health.send(SymbolsMonitored(symbols=tuple(sorted(self.active_symbols))))
        if self._watch_streams:
            for symbol in symbols:
                for stream in WATCHED_STREAMS:
                    await self._health.send(WatchStream(symbol=symbol, stream=stream))

    async def run(self, ticks: trio.MemoryReceiveChannel[ScheduledTick]) -> None:
        async for _tick in ticks:
            await self.refresh_now()

    async def refresh_now(self) -> None:
        """Re-select the universe: start new symbol actors, retire the ones that left and hold nothing;
        symbols with a position or working orders stay managed but take no new entries."""
        refresh = self._refresh
        if refresh is None:
            return
        managed = self._managed_symbols()
        try:
            refreshed = await refresh(managed)
        except Exception as exc:
            log.error("universe_refresh_failed", error_type=type(exc).__name__, error=str(exc))
            self._on_fault("SERVER_ERROR", None, f"universe refresh failed: {type(exc).__name__}")
            return
        selected, rules = refreshed[0], refreshed[1]
        reference = refreshed[2] if len(refreshed) == 3 else ""
        monitored = list(dict.fromkeys([*selected, *managed]))
        changed = UniverseChanged(
            tradable=tuple(selected),
            monitored=tuple(monitored),
            rules={s: rules[s] for s in monitored if s in rules},
            reference_symbol=reference,
        )
        # Rules reach the paper exchanges, execution and risk before a new symbol's first report.
        if self._paper is not None:
            self._paper.add_rules(changed.rules)
        if self._shadow is not None:
            self._shadow.add_rules(changed.rules)
        await self._execution.send(changed)
        if self._shadow is not None:
            self._shadow.offer(changed)
        await self._risk.send(changed)
        added = [s for s in monitored if s not in self.active_symbols]
        removed = sorted(self.active_symbols - set(monitored))
        for symbol in added:
            await self._actors.start(symbol)
        for symbol in removed:
            self._actors.retire(symbol)
        if self._set_market_symbols is not None:
            await self._set_market_symbols(monitored)
        if self._watch_streams:
            for symbol in added:
                for stream in WATCHED_STREAMS:
                    await self._health.send(WatchStream(symbol=symbol, stream=stream))
            for symbol in removed:
                await self._health.send(UnwatchSymbol(symbol=symbol))
        self.active_symbols = set(monitored)
        await self._health.send(SymbolsMonitored(symbols=tuple(sorted(self.active_symbols))))
        log.info(
            "universe_refreshed",
            tradable=list(selected),
            managed_only=[s for s in managed if s not in selected],
            added=added,
            retired=removed,
        )

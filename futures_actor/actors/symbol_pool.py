"""The symbol actors of one system: their inboxes, their routes in the market router and their supervision.

A symbol's inbox outlives its actor's incarnations: a crashed actor restarts (with backoff, under the
`Supervisor`) on the same inbox with fresh state, and Execution re-sends its open positions
(`RepublishPositions`) so that trailing resumes. The first incarnation gets its history from market data's
start-up backfill; a restarted one rebuilds it over REST. A symbol dropped after repeated crashes is
reported as a fault and loses its route; its positions stay managed by Execution. A retired symbol (it
left the universe and holds nothing) loses its actor, route and inbox.

`sends` is the mapping Execution sends positions through (shared, read per send: a symbol added later is
reached too).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import trio

from futures_actor.actors.execution import ExecutionInbox
from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.messages import RepublishPositions
from futures_actor.actors.portfolio_risk import RiskInbox
from futures_actor.actors.supervision import ChildDropped, Supervisor
from futures_actor.actors.symbol_actor import SymbolActor, SymbolInbox, open_symbol_inbox
from futures_actor.core.config import BotConfig
from futures_actor.core.types import Candle
from futures_actor.logs import get_logger

__all__ = ["SymbolActors"]

log = get_logger("app")

HistoryLoader = Callable[[str], Awaitable[tuple[list[Candle], list[Candle]]]]
FaultCallback = Callable[[str, str | None, str], None]


class SymbolActors:
    """The symbol actors of one system (see the module docstring)."""

    def __init__(
        self,
        *,
        cfg: BotConfig,
        router: MarketRouter,
        rng: random.Random,
        risk: trio.MemorySendChannel[RiskInbox],
        execution: trio.MemorySendChannel[ExecutionInbox],
        history: HistoryLoader | None,
        on_fault: FaultCallback,
    ) -> None:
        self._cfg = cfg
        self._router = router
        self._risk = risk
        self._execution = execution
        self._history = history
        self._on_fault = on_fault
        self._inboxes: dict[
            str, tuple[trio.MemorySendChannel[SymbolInbox], trio.MemoryReceiveChannel[SymbolInbox]]
        ] = {}
        self.sends: dict[str, trio.MemorySendChannel[SymbolInbox]] = {}
        self.supervisor = Supervisor(cfg=cfg.supervision, rng=rng, on_drop=self._on_dropped)

    def add_inbox(self, symbol: str) -> None:
        """A bounded inbox for `symbol`, routed from market data (its actor starts with `start`)."""
        send, recv = open_symbol_inbox()
        self._inboxes[symbol] = (send, recv)
        self.sends[symbol] = send
        self._router.add_symbol(symbol, send)

    async def start(self, symbol: str) -> None:
        """Start `symbol`'s actor under the supervisor (adding its inbox if it has none yet)."""
        if symbol not in self._inboxes:
            self.add_inbox(symbol)
        _, recv = self._inboxes[symbol]
        loader = self._history
        first_start = [True]

        async def history(sym: str) -> tuple[list[Candle], list[Candle]]:
            # The first incarnation gets its history from market data's start-up backfill; a
            # restarted one (fresh state after a crash) rebuilds it over REST.
            if first_start[0] or loader is None:
                first_start[0] = False
                return [], []
            return await loader(sym)

        incarnations = [0]

        def factory() -> Awaitable[None]:
            incarnations[0] += 1
            if incarnations[0] > 1:
                # A restarted actor has fresh state: execution re-sends its open positions so that
                # trailing resumes (queued in the inbox, handled once the new incarnation runs).
                try:
                    self._execution.send_nowait(RepublishPositions(symbol=symbol))
                except trio.WouldBlock:
                    log.error("republish_positions_dropped", symbol=symbol, reason="execution inbox full")
            actor = SymbolActor(
                symbol=symbol,
                cfg=self._cfg,
                risk_send=self._risk,
                execution_send=self._execution,
                history=history,
                on_fault=self._on_fault,
            )
            return actor.run(recv)

        await self.supervisor.start_child(symbol, factory)

    def retire(self, symbol: str) -> None:
        """`symbol` left the universe and holds nothing: stop its actor, drop its route and inbox."""
        self.supervisor.retire(symbol)
        self._router.remove_symbol(symbol)
        self._inboxes.pop(symbol, None)
        self.sends.pop(symbol, None)

    async def _on_dropped(self, event: ChildDropped) -> None:
        """A symbol actor crashed too often: alert; its positions stay managed by execution."""
        self._on_fault("UNEXPECTED_EXCEPTION", event.key, "symbol actor dropped after repeated crashes")
        self._router.remove_symbol(event.key)

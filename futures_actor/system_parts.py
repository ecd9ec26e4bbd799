"""What a runner gives the actor system (`SystemParts`), and what its market-data source may use of the
running system (`MarketHost`).

The runners (`live_run`, `replay_run`) and the acceptance harness build `SystemParts`; `app.System` wires
the actors from them. The market-data source is built once the system exists (its symbol routes and fault
callbacks), from the narrow `MarketHost` view rather than the whole system.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.symbol_pool import HistoryLoader
from futures_actor.actors.telegram import TelegramSender
from futures_actor.actors.universe import RefreshUniverse
from futures_actor.binance.gateway import ExchangeGateway
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.clock import WallClock
from futures_actor.core.config import BotConfig
from futures_actor.core.types import SymbolRules
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore
from futures_actor.tearsheet.equity import EquityCsvWriter

__all__ = ["MarketHost", "SystemParts"]


class MarketHost(Protocol):
    """What a market-data source uses of the running system."""

    @property
    def router(self) -> MarketRouter:
        """Delivers market messages to the symbol actors and the taps."""
        ...

    @property
    def stop_requested(self) -> trio.Event:
        """Set it to stop the system in order (a replay at its end)."""
        ...

    def report_fault(self, kind: str, symbol: str | None = None, detail: str = "") -> None:
        """A fault for Health (never blocks)."""
        ...

    def report_data(self, symbol: str, stream: str, ts: float) -> None:
        """A freshness fact for Health (never blocks)."""
        ...


@dataclass
class SystemParts:
    """Everything `app.System` needs, built by a runner (or by a test)."""

    cfg: BotConfig
    mode: str
    wall_clock: WallClock
    gateway: ExchangeGateway
    store: StateStore
    journal: TradeJournal
    rules: Mapping[str, SymbolRules]
    symbols: Sequence[str]
    log_dir: Path
    state_dir: Path
    # The market-data source for this system: given the system, a `run(task_status=...)` to start.
    market: Callable[[MarketHost], Callable[..., Awaitable[Any]]]
    router: MarketRouter | None = None
    history: HistoryLoader | None = None
    paper: PaperExchange | None = None
    replay: bool = False
    http: bool = False
    signals: bool = False
    kill_file_watch: bool = True
    telegram: TelegramSender | None = None
    # Request weight used in the current minute (live and paper: the REST client's limiter).
    api_weight: Callable[[], int] | None = None
    # Daily universe refresh (BOT_SPEC §2, `actors/universe.py`) and how market data follows it.
    refresh_universe: RefreshUniverse | None = None
    set_market_symbols: Callable[[Sequence[str]], Awaitable[None]] | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # The hedge rule's beta reference: the selected symbol of highest volume (BOT_SPEC §8.5).
    reference_symbol: str = ""
    # The health endpoint's sockets, bound before start-up (None: bind health.http_host:http_port).
    http_listeners: list[trio.SocketListener] | None = None
    # The bearer token of POST /kill and /resume ("" = none: loopback requests only).
    control_token: str = ""
    # The REST client reports every exchange error response itself (`System.report_exchange_error`),
    # so the counted kinds an actor reports after its retries gave up are not counted a second time.
    client_counts_errors: bool = False
    # Rules of every listed symbol: Execution adopts and protects positions outside the universe too.
    listed_rules: Mapping[str, SymbolRules] = field(default_factory=dict)
    # Replay: the equity.csv curve (marked to market); the daily reports take their equity and
    # drawdowns from it (`core.drawdown`), so that they agree with equity.csv, summary and report.
    equity_curve: EquityCsvWriter | None = None

"""The shadow paper book (BOT_SPEC §7, §8.9 [resolved]): in every mode, ineligible strategies keep trading
on it, and LIVE trades on it during a weekly-stop pause, so that performance keeps learning.

It owns its own paper exchange, state store (`SHADOW_DB_FILE`, never the live one, whose lifecycles the
live Execution reconciles against Binance), trade journal (under `<log_dir>/SHADOW_LOG_SUBDIR/`) and a
second `Execution` (mode PAPER_LIVE) on them. PortfolioRisk sends approved shadow plans to `inbox_send`;
of the shadow execution's outputs only closed trades reach PortfolioRisk (as `ShadowTradeClosed`) and
retries (re-decided for the shadow book), everything else is dropped. No symbol actor trails a shadow
trade (the live ones would amend live orders): the book's own `ShadowTrailer` does.

Not critical: a crash is logged and the shadow book stops (its channels close, so market data and risk
never block on it); the bot keeps running. The shadow book never touches the live bot's state: no health
faults, no metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path

import msgspec
import trio

from futures_actor.actors.execution import Execution, ExecutionInbox
from futures_actor.actors.market_data import MarketMsg
from futures_actor.actors.messages import (
    BookUpdated,
    CandleClosed,
    MarkUpdated,
    PositionUpdated,
    RetryRequested,
    ShadowTradeClosed,
    TradeClosed,
    UniverseChanged,
)
from futures_actor.actors.portfolio_risk import RiskInbox
from futures_actor.actors.routing import feed_paper
from futures_actor.actors.shadow_trailer import ShadowTrailer
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.clock import WallClock
from futures_actor.core.config import BotConfig
from futures_actor.core.types import Candle, SymbolRules
from futures_actor.logs import get_logger
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore

__all__ = ["SHADOW_DB_FILE", "SHADOW_LOG_SUBDIR", "ShadowBook"]

SHADOW_DB_FILE = "shadow.sqlite"
SHADOW_LOG_SUBDIR = "shadow"
# The shadow execution's inbox and the channels of its outputs (as the live execution's inbox).
SHADOW_CHANNEL_SIZE = 256

log = get_logger("app")

# What the shadow execution sends "to PortfolioRisk" and "to its symbol actors" (only some of it is used).
_ShadowOut = RiskInbox | PositionUpdated


class _EverySymbol(Mapping[str, trio.MemorySendChannel[_ShadowOut]]):
    """The same channel for every symbol (the shadow execution's "symbol actors": its trailer)."""

    def __init__(self, send: trio.MemorySendChannel[_ShadowOut]) -> None:
        self._send = send

    def __getitem__(self, key: str) -> trio.MemorySendChannel[_ShadowOut]:
        return self._send

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class ShadowBook:
    """The shadow paper book of one system (see the module docstring); `open` builds it, `run` runs it
    and closes its store and journal, `close` closes them if `run` never started."""

    def __init__(
        self,
        *,
        store: StateStore,
        journal: TradeJournal,
        paper: PaperExchange,
        cfg: BotConfig,
        rules: Mapping[str, SymbolRules],
        wall_clock: WallClock,
        replay: bool,
        risk_send: trio.MemorySendChannel[RiskInbox],
    ) -> None:
        self.store = store
        self.journal = journal
        self.paper = paper
        self._risk_send = risk_send
        self.inbox_send, self.inbox_recv = trio.open_memory_channel[ExecutionInbox](SHADOW_CHANNEL_SIZE)
        out_send, self._out_recv = trio.open_memory_channel[_ShadowOut](SHADOW_CHANNEL_SIZE)
        positions_send, self._positions_recv = trio.open_memory_channel[_ShadowOut](SHADOW_CHANNEL_SIZE)
        self.execution = Execution(
            cfg=cfg,
            mode="PAPER_LIVE",
            gateway=paper,
            store=store,
            journal=journal,
            rules_by_symbol=rules,
            wall_clock=wall_clock,
            risk_send=out_send,
            symbol_sends=_EverySymbol(positions_send),
            on_fault=None,
            metrics=None,
            journal_in_thread=not replay,
            actor_name="shadow_execution",
        )
        self.trailer = ShadowTrailer(interval=cfg.timeframes.signal_tf)
        # Replay feeding candle paths (`on_path`): its funding comes through the routing table's replay
        # funding; a MarkUpdated must not pin the shadow paper's mark (stops follow the path).
        self._paths_fed = False

    @classmethod
    def open(
        cls,
        *,
        cfg: BotConfig,
        rules: Mapping[str, SymbolRules],
        wall_clock: WallClock,
        state_dir: Path,
        log_dir: Path,
        replay: bool,
        risk_send: trio.MemorySendChannel[RiskInbox],
    ) -> ShadowBook:
        """Open the shadow book's store, journal and paper account (closed by `run`, or `close`)."""
        store, journal, paper = open_shadow_account(
            cfg=cfg, rules=rules, wall_clock=wall_clock, state_dir=state_dir, log_dir=log_dir, replay=replay
        )
        return cls(
            store=store,
            journal=journal,
            paper=paper,
            cfg=cfg,
            rules=rules,
            wall_clock=wall_clock,
            replay=replay,
            risk_send=risk_send,
        )

    def close(self) -> None:
        self.journal.close()
        self.store.close()

    def on_path(self, symbol: str, candle: Candle, interval_ms: int) -> None:
        """Replay: the candle about to form becomes the path of the shadow paper exchange."""
        self._paths_fed = True
        self.paper.on_path(symbol, candle, interval_ms)

    def add_rules(self, rules: Mapping[str, SymbolRules]) -> None:
        """The daily universe refresh: the rules of new symbols for the shadow paper exchange."""
        self.paper.add_rules(rules)

    def offer(self, changed: UniverseChanged) -> None:
        """The universe change for the shadow execution, dropped if its inbox is full (the shadow book
        never holds up the refresh)."""
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.inbox_send.send_nowait(changed)

    async def run(
        self,
        tap_recv: trio.MemoryReceiveChannel[MarketMsg],
        symbols: list[str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The shadow paper exchange, its execution, its market tap and the forwarder of its closed
        trades, until cancelled or crashed; closes its store and journal."""
        started = False
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.paper.run)
                nursery.start_soon(self._tap, tap_recv)
                nursery.start_soon(self._forwarder)
                nursery.start_soon(self._positions)
                await nursery.start(self.execution.run, self.inbox_recv)
                log.info("shadow_book_started", symbols=symbols)
                started = True
                task_status.started()
        except Exception as exc:
            log.error("shadow_book_crashed", error_type=type(exc).__name__, exc_info=exc)
            if not started:
                task_status.started()
        finally:
            tap_recv.close()
            self.inbox_recv.close()
            self._out_recv.close()
            self._positions_recv.close()
            self.close()

    async def _tap(self, recv: trio.MemoryReceiveChannel[MarketMsg]) -> None:
        """The shadow paper exchange gets the prices live paper trading gets; the shadow execution
        the book and mark prices (never blocking market data: a full shadow inbox drops the price)."""
        async for msg in recv:
            if not (self._paths_fed and isinstance(msg, MarkUpdated)):
                feed_paper(self.paper, msg)
            if isinstance(msg, BookUpdated | MarkUpdated):
                with contextlib.suppress(trio.WouldBlock):
                    self.inbox_send.send_nowait(msg)
            elif isinstance(msg, CandleClosed):
                for amend in self.trailer.on_candle(msg):
                    try:
                        self.inbox_send.send_nowait(amend)
                    except trio.WouldBlock:  # the next close recomputes it; market data never waits
                        log.warning("shadow_trail_dropped", trade_id=amend.trade_id, symbol=amend.symbol)

    async def _positions(self) -> None:
        """The shadow execution's messages to "its symbol actors": positions go to the shadow trailer."""
        async for msg in self._positions_recv:
            if isinstance(msg, PositionUpdated):
                self.trailer.on_position(msg)

    async def _forwarder(self) -> None:
        """Of the shadow execution's outputs only closed trades reach PortfolioRisk, as
        `ShadowTradeClosed`: shadow trades never count in live exposure, open risk or PnL."""
        async for msg in self._out_recv:
            if isinstance(msg, TradeClosed):
                log.info("shadow_trade_closed", trade_id=msg.trade_id, symbol=msg.symbol)
                await self._risk_send.send(ShadowTradeClosed(record=msg.record))
            elif isinstance(msg, RetryRequested):
                # A shadow entry's retry is re-decided too (answered to the shadow book, never reserved).
                await self._risk_send.send(msgspec.structs.replace(msg, shadow=True))


def open_shadow_account(
    *,
    cfg: BotConfig,
    rules: Mapping[str, SymbolRules],
    wall_clock: WallClock,
    state_dir: Path,
    log_dir: Path,
    replay: bool,
) -> tuple[StateStore, TradeJournal, PaperExchange]:
    """The shadow book's state store, trade journal and paper account (both runtimes open it here).

    A replay's (which always starts over) are not fsynced and its paper account is persisted once, at
    the end."""
    store = StateStore.open(state_dir / SHADOW_DB_FILE, durable=not replay)
    try:
        journal = TradeJournal(
            directory=log_dir / SHADOW_LOG_SUBDIR, cfg=cfg.logging, clock=wall_clock, durable=not replay
        )
    except BaseException:
        store.close()
        raise
    # Not capital (see `PerformanceConfig.shadow_balance_usdt`): with the live book's balance the shadow
    # account's margin rejected nearly every shadow entry (-2019) and the windows never moved.
    balance = cfg.performance.shadow_balance_usdt
    paper = PaperExchange.from_store(
        store,
        cfg=msgspec.structs.replace(cfg.execution, paper_initial_balance_usdt=balance),
        rules=dict(rules),
        now_ms=wall_clock.now_ms,
        persist_mode="on_close" if replay else "every_change",
    )
    account = paper.engine.account.state
    if account.wallet_balance < Decimal(repr(balance)):
        # A shadow account persisted by an earlier version (or drained by shadow losses).
        log.warning("shadow_balance_topped_up", wallet=str(account.wallet_balance), to=balance)
        account.wallet_balance = Decimal(repr(balance))
    return store, journal, paper

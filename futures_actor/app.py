"""The root supervisor: builds the actors, owns signal handling and the shutdown order (ARCHITECTURE.md).

`System` is the running actor system, built from `SystemParts` by a runner: `live_run.run_live` (LIVE:
Binance gateway; PAPER_LIVE: the paper exchange on live market data) or `replay_run.run_replay` (the
paper exchange on recorded klines under trio's mock clock). `System.run` starts the actors in
dependency order — execution (which reconciles with the venue before anyone may send to it), risk,
health, the symbol actors under their supervisor, market data, scheduler, reporter, the HTTP
endpoint — and waits for a stop request.

Shutdown (first SIGTERM/SIGINT, the end of a replay, or a crash of a critical actor): risk stops
deciding (REDUCING), execution cancels working entry orders and leaves stops and targets on the
exchange, state is already persisted per change, journals are flushed, connections closed. Each
phase is shielded and bounded by `shutdown.timeout_seconds`. A second signal cancels at once.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio

from futures_actor.actors.execution import Execution
from futures_actor.actors.health import (
    CLIENT_COUNTED_FAULTS,
    DataReceived,
    FaultReported,
    HealthActor,
    KillSwitchChanged,
    SymbolsMonitored,
    TradingStateChanged,
    UnwatchSymbol,
    WatchStream,
    exchange_fault_kind,
)
from futures_actor.actors.http_health import (
    ControlPolicy,
    HealthHttpApp,
    serve_http,
)
from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.messages import (
    BookUpdated,
    CandleClosed,
    EntryFilled,
    KillSwitch,
    MarkUpdated,
    PositionUpdated,
    RepublishPositions,
    Resume,
    RetryRequested,
    ShadowTradeClosed,
    StopIntake,
    TradeClosed,
    UniverseChanged,
)
from futures_actor.actors.metrics import API_WEIGHT_USED, OPEN_POSITIONS, UNPROTECTED_POSITIONS, Metrics
from futures_actor.actors.portfolio_risk import PortfolioRisk, open_risk_inbox
from futures_actor.actors.reporter import Alert, Reporter
from futures_actor.actors.scheduler import Job, Scheduler
from futures_actor.actors.shadow_trailer import ShadowTrailer
from futures_actor.actors.supervision import ChildDropped, Supervisor
from futures_actor.actors.symbol_actor import SymbolActor, open_symbol_inbox
from futures_actor.actors.telegram import (
    CommandHandlers,
    TelegramCommands,
)
from futures_actor.binance.gateway import ExchangeGateway
from futures_actor.binance.paper import PaperExchange
from futures_actor.control import EXIT_OK, EXIT_RUNTIME, kill_file_path
from futures_actor.core.clock import WallClock
from futures_actor.core.config import BotConfig
from futures_actor.core.health import FaultKind, health_report
from futures_actor.core.lifecycle import Phase
from futures_actor.core.performance import PerformanceTracker
from futures_actor.core.report import AccountSnapshot
from futures_actor.core.risk_state import closed_pnl_from_records, day_equity_bounds
from futures_actor.core.summary import REPLAY_MODE, summarize_trades
from futures_actor.core.types import Candle, SymbolRules, TradingState
from futures_actor.logs import (
    current_sink,
    get_logger,
)
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore
from futures_actor.tearsheet.equity import EquityCsvWriter

__all__ = ["System", "SystemParts", "run_system"]

HEALTH_INBOX_SIZE = 1024
EXECUTION_INBOX_SIZE = 256
REPORTER_INBOX_SIZE = 64
SCHEDULER_TICK_INBOX_SIZE = 16
PAPER_TAP_SIZE = 1024
# LIVE's shadow paper book (BOT_SPEC §8.9): its own state file (never the live one, whose lifecycles
# the live Execution reconciles against Binance) and its own trade log under `<log_dir>/shadow/`.
SHADOW_DB_FILE = "shadow.sqlite"
SHADOW_LOG_SUBDIR = "shadow"
SHUTDOWN_POLL_SECONDS = 0.05
# Replay (performance): the Scheduler re-reads the (simulated, never jumping) wall clock only when a
# slot is due.
REPLAY_SCHEDULER_MAX_SLEEP_SECONDS = 86400.0
# Streams whose silence is a health fault (kline streams only deliver on a close; their silence is
# reported by the stream watchdog as STALE_DATA instead).
WATCHED_STREAMS = ("bookTicker", "markPrice")
_ENTRY_PHASES = frozenset({Phase.PENDING_ENTRY, Phase.ENTRY_WORKING, Phase.ENTRY_CANCELING})
_MS_PER_S = 1000
_MS_PER_DAY = 86_400_000
# Lifecycle alert codes (core/lifecycle.py) that are errors for the operator; the rest are warnings.
_ERROR_ALERT_CODES = frozenset(
    {
        "PROTECTION_FAILED",
        "STOP_REJECTED",
        "STOP_GONE",
        "NOT_FLAT",
        "CLOSE_REJECTED",
        "OVERFILL",
        "ENTRY_REJECTED",
    }
)

log = get_logger("app")


@dataclass
class SystemParts:
    """Everything `run_system` needs, built by `run_bot` (or by a test)."""

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
    market: Callable[[System], Callable[..., Awaitable[Any]]]
    router: MarketRouter | None = None
    history: Callable[[str], Awaitable[tuple[list[Candle], list[Candle]]]] | None = None
    paper: PaperExchange | None = None
    replay: bool = False
    http: bool = False
    signals: bool = False
    kill_file_watch: bool = True
    telegram: Any = None
    # Request weight used in the current minute (live and paper: the REST client's limiter).
    api_weight: Callable[[], int] | None = None
    # Daily universe refresh (BOT_SPEC §2): given the symbols still managed (a position or working
    # orders), the newly selected symbols and the exchange rules; and how market data follows it.
    # It may add the new beta reference symbol as a third element.
    refresh_universe: (
        Callable[
            [Sequence[str]],
            Awaitable[
                tuple[list[str], dict[str, SymbolRules]] | tuple[list[str], dict[str, SymbolRules], str]
            ],
        ]
        | None
    ) = None
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

    async def forward(self, send: trio.MemorySendChannel[Any]) -> None:
        while True:
            await self._pending.wait()
            self._pending = trio.Event()
            while self._latest:
                key = next(iter(self._latest))
                await send.send(self._latest.pop(key))


class _StartedFlag:
    """A task status that remembers whether `started()` was called."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self._inner.started(value)


@dataclass
class ShadowBook:
    """The shadow paper book (BOT_SPEC §7, §8.9 [resolved]), in every mode: ineligible strategies keep
    trading on it, and LIVE trades on it during a weekly-stop pause, so that performance keeps learning.

    Its own paper exchange, state store and trade journal, and a second `Execution` (mode PAPER_LIVE)
    on them. PortfolioRisk sends approved shadow plans to `inbox_send`; of the execution's outputs
    only `TradeClosed` reaches PortfolioRisk (as `ShadowTradeClosed`), everything else is dropped.
    """

    store: StateStore
    journal: TradeJournal
    paper: PaperExchange
    execution: Execution
    inbox_send: trio.MemorySendChannel[Any]
    inbox_recv: trio.MemoryReceiveChannel[Any]
    out_recv: trio.MemoryReceiveChannel[Any]
    # The shadow trades' trailing (no symbol actor trails them): positions in, amendments to `inbox_send`.
    trailer: ShadowTrailer
    positions_recv: trio.MemoryReceiveChannel[Any]


class System:
    """The running actor system: its channels and actors, and the orderly stop."""

    def __init__(self, parts: SystemParts) -> None:
        self.parts = parts
        cfg = parts.cfg
        self.metrics = Metrics()
        self.router = parts.router if parts.router is not None else MarketRouter()
        self.stop_requested = trio.Event()
        self.stopped = trio.Event()
        self.exit_code = EXIT_OK
        self.kill_engaged = False
        self.started = False
        # Why the system stopped on its own (a fault that requires it), for the operator; None if asked.
        self.stop_reason: str | None = None
        self.safe_mode_entered = trio.Event()
        self._health_send, self._health_recv = trio.open_memory_channel[Any](HEALTH_INBOX_SIZE)
        self._exec_send, self._exec_recv = trio.open_memory_channel[Any](EXECUTION_INBOX_SIZE)
        self.exec_prices = ConflatedPrices()
        self._risk_send, self._risk_recv = open_risk_inbox()
        self._report_send, self._report_recv = trio.open_memory_channel[Any](REPORTER_INBOX_SIZE)
        self._symbol_inboxes: dict[str, tuple[Any, Any]] = {}
        self.symbol_sends: dict[str, Any] = {}
        for symbol in parts.symbols:
            self._add_inbox(symbol)
        self.shadow: ShadowBook | None = self._build_shadow()
        self.tracker = self._rebuild_tracker()
        self.risk = PortfolioRisk(
            cfg=cfg,
            mode=parts.mode,  # type: ignore[arg-type]
            execution_send=self._exec_send,
            symbols=parts.symbols,
            rules_by_symbol=parts.rules,
            wall_clock=parts.wall_clock,
            store=parts.store,
            tracker=self.tracker,
            metrics=self.metrics,
            closed_pnl=closed_pnl_from_records(parts.journal.records()),
            shadow_send=self.shadow.inbox_send if self.shadow is not None else None,
            reference_symbol=parts.reference_symbol,
        )
        self.execution = Execution(
            cfg=cfg,
            mode=parts.mode,
            gateway=parts.gateway,
            store=parts.store,
            journal=parts.journal,
            rules_by_symbol=parts.rules,
            wall_clock=parts.wall_clock,
            # Risk gets everything; the Reporter a copy of position opened / closed (alerts, §11).
            risk_send=_ReportingRiskChannel(self._risk_send, self._report_send),
            on_alert=self._execution_alert,
            symbol_sends=self.symbol_sends,
            on_fault=self.report_fault,
            metrics=self.metrics,
            # Replay's wall clock follows trio's clock, which a worker thread cannot read; and a
            # replay favours determinism over a non-blocking fsync.
            journal_in_thread=not parts.replay,
            listed_rules=parts.listed_rules,
        )
        self.health = HealthActor(
            cfg=cfg.health,
            state_dir=parts.state_dir,
            wall_clock=parts.wall_clock,
            subscribers=[self._risk_send, self._report_send],
            metrics=self.metrics,
            on_safe_mode=self._safe_mode_changed,
        )
        self.supervisor = Supervisor(cfg=cfg.supervision, rng=parts.rng, on_drop=self._on_symbol_dropped)
        self.reporter = Reporter(
            mode=self.run_mode,
            log_dir=parts.log_dir,
            load_records=self._records_of_day,
            account=self._account_snapshot,
            telegram=parts.telegram,
            # A replay reports only the days it covered (from its first candle's day on).
            first_day=_utc_day(parts.wall_clock.now_ms()) if parts.replay else None,
        )
        self._peak_equity = 0.0
        self._paths_fed = False  # replay: candle paths reach the paper exchanges through `feed_path`
        self._root: trio.Nursery | None = None
        self.active_symbols: set[str] = set(parts.symbols)

    # ------------------------------------------------------------------ wiring helpers

    def _add_inbox(self, symbol: str) -> None:
        send, recv = open_symbol_inbox()
        self._symbol_inboxes[symbol] = (send, recv)
        self.symbol_sends[symbol] = send
        self.router.add_symbol(symbol, send)

    def _build_shadow(self) -> ShadowBook:
        """The shadow paper book (see `ShadowBook`); closed when `run` ends."""
        parts = self.parts
        store = StateStore.open(parts.state_dir / SHADOW_DB_FILE, durable=not parts.replay)
        try:
            journal = TradeJournal(
                directory=parts.log_dir / SHADOW_LOG_SUBDIR, cfg=parts.cfg.logging, clock=parts.wall_clock
            )
        except BaseException:
            store.close()
            raise
        # Not capital (see `PerformanceConfig.shadow_balance_usdt`): with the live book's balance the shadow
        # account's margin rejected nearly every shadow entry (-2019) and the windows never moved.
        balance = parts.cfg.performance.shadow_balance_usdt
        paper = PaperExchange.from_store(
            store,
            cfg=msgspec.structs.replace(parts.cfg.execution, paper_initial_balance_usdt=balance),
            rules=dict(parts.rules),
            now_ms=parts.wall_clock.now_ms,
            persist_mode="on_close" if parts.replay else "every_change",
        )
        account = paper.engine.account.state
        if account.wallet_balance < Decimal(repr(balance)):
            # A shadow account persisted by an earlier version (or drained by shadow losses).
            log.warning("shadow_balance_topped_up", wallet=str(account.wallet_balance), to=balance)
            account.wallet_balance = Decimal(repr(balance))
        inbox_send, inbox_recv = trio.open_memory_channel[Any](EXECUTION_INBOX_SIZE)
        out_send, out_recv = trio.open_memory_channel[Any](EXECUTION_INBOX_SIZE)
        positions_send, positions_recv = trio.open_memory_channel[Any](EXECUTION_INBOX_SIZE)
        execution = Execution(
            cfg=parts.cfg,
            mode="PAPER_LIVE",
            gateway=paper,
            store=store,
            journal=journal,
            rules_by_symbol=parts.rules,
            wall_clock=parts.wall_clock,
            risk_send=out_send,
            # No symbol actor trails a shadow trade (the live ones would amend live orders): the shadow
            # book's own trailer does. No health faults and no metrics: the shadow book never touches
            # the live bot's state.
            symbol_sends=_EverySymbol(positions_send),
            on_fault=None,
            metrics=None,
            journal_in_thread=not parts.replay,
            actor_name="shadow_execution",
        )
        return ShadowBook(
            store=store,
            journal=journal,
            paper=paper,
            execution=execution,
            inbox_send=inbox_send,
            inbox_recv=inbox_recv,
            out_recv=out_recv,
            trailer=ShadowTrailer(interval=parts.cfg.timeframes.signal_tf),
            positions_recv=positions_recv,
        )

    def _rebuild_tracker(self) -> PerformanceTracker:
        """Performance windows rebuilt from the trade log at start-up (BOT_SPEC §7); in LIVE also from
        the shadow book's log, merged in closing-time order."""
        records = list(self.parts.journal.records())
        if self.shadow is not None:
            shadow_records = list(self.shadow.journal.records())
            if shadow_records:
                records = sorted([*records, *shadow_records], key=_close_key)
        tracker, report = PerformanceTracker.from_records(records, cfg=self.parts.cfg.performance)
        log.info("performance_rebuilt", **_struct_fields(report))
        return tracker

    def report_fault(self, kind: str, symbol: str | None = None, detail: str = "") -> None:
        """Synchronous fault callback for every actor; never blocks, never raises."""
        try:
            fault = FaultKind(kind)
        except ValueError:
            fault = FaultKind.UNEXPECTED_EXCEPTION
        if self.parts.client_counts_errors and fault in CLIENT_COUNTED_FAULTS:
            return  # already counted once per error response by `report_exchange_error`
        self._send_fault(fault, symbol, detail)

    def report_exchange_error(self, exc: BaseException) -> None:
        """The REST client's hook: every exchange error response counts (BOT_SPEC §12), retried or not."""
        fault = exchange_fault_kind(exc)
        if fault is not None:
            self._send_fault(fault, None, f"{type(exc).__name__}: {exc}")

    def _send_fault(self, fault: FaultKind, symbol: str | None, detail: str) -> None:
        kind = fault.value
        try:
            self._health_send.send_nowait(
                FaultReported(kind=fault, detail=f"{symbol or ''} {detail}".strip(), ts=None)
            )
        except trio.WouldBlock:
            log.error("health_inbox_full", kind=kind, symbol=symbol)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if fault is FaultKind.UNEXPECTED_EXCEPTION:
            # An error the operator must hear of (others show up as safe mode when they persist).
            text = f"Error: {f'{symbol} ' if symbol else ''}{detail}".strip()
            self._offer_report(Alert(kind="ERROR", text=text, level="error", symbol=symbol))

    def _execution_alert(self, code: str, symbol: str, message: str) -> None:
        """A trade lifecycle alert (protection, rejection, closing): to the Reporter (log, Telegram)."""
        level: Literal["warning", "error"] = "error" if code in _ERROR_ALERT_CODES else "warning"
        self._offer_report(Alert(kind=code, text=message, level=level, symbol=symbol or None))

    def _offer_report(self, msg: Any) -> None:
        """Never blocks the caller: a full reporter inbox drops the alert with a log."""
        try:
            self._report_send.send_nowait(msg)
        except trio.WouldBlock:
            log.error("reporter_inbox_full", message=type(msg).__name__)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def report_data(self, symbol: str, stream: str, ts: float) -> None:
        """Freshness fact for the health actor (a stream delivered data)."""
        try:
            self._health_send.send_nowait(DataReceived(symbol=symbol, stream=stream, ts=ts))
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _records_of_day(self, day: date) -> list[dict[str, Any]]:
        return list(self.parts.journal.records())

    @property
    def run_mode(self) -> str:
        """The mode the operator reads (reports, events): REPLAY for a replay, else `parts.mode`. Trade
        records keep `parts.mode` (the log schema's PAPER_LIVE for a replay, which trades on paper)."""
        return REPLAY_MODE if self.parts.replay else self.parts.mode

    def _account_snapshot(self, day: date) -> AccountSnapshot:
        """The account for the report of UTC `day`: its equities at 00:00 UTC starting and ending it
        (from the risk calendar, issue 10 #5), the current equity, open risk and positions."""
        snap = self.risk.snapshot()
        equity = snap.equity_usd or 0.0
        self._peak_equity = max(self._peak_equity, equity)
        day_start, day_end = equity, None
        risk_state = self.risk.risk_state
        start_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * _MS_PER_S)
        if risk_state is not None:
            bounds = day_equity_bounds(risk_state, day_start_ms=start_ms, equity_now=equity)
            if bounds is not None:
                day_start, day_end = bounds
            else:
                log.warning("report_day_equity_unknown", day=day.isoformat())
        peak = max(self._peak_equity, equity, 1e-9)
        intraday: float | None = None
        curve = self.parts.equity_curve
        on_curve = None if curve is None else curve.day_drawdown(start_ms, start_ms + _MS_PER_DAY)
        if on_curve is not None:  # a replay: the day's end on equity.csv's marked-to-market curve
            equity, peak = on_curve.equity_usd, on_curve.peak_equity_usd
            intraday = on_curve.max_intraday_drawdown_pct
        return AccountSnapshot(
            equity_usd=equity,
            unrealized_pnl_usd=0.0,
            day_start_equity_usd=day_start if day_start > 0 else max(equity, 1e-9),
            day_end_equity_usd=day_end,
            peak_equity_usd=peak,
            max_intraday_drawdown_pct=intraday,
            open_risk_usd=snap.open_risk_usd,
            open_positions=snap.positions,
            ineligible_strategies=self.risk.ineligible_strategies(),
            performance_blocked_strategies=self.risk.performance_blocked_strategies(),
        )

    async def _on_symbol_dropped(self, event: ChildDropped) -> None:
        """A symbol actor crashed too often: alert; its positions stay managed by execution."""
        self.report_fault("UNEXPECTED_EXCEPTION", event.key, "symbol actor dropped after repeated crashes")
        self.router.remove_symbol(event.key)

    async def start_symbol(self, symbol: str) -> None:
        if symbol not in self._symbol_inboxes:
            self._add_inbox(symbol)
        _, recv = self._symbol_inboxes[symbol]
        parts = self.parts

        first_start = [True]

        async def history(sym: str) -> tuple[list[Candle], list[Candle]]:
            # The first incarnation gets its history from market data's start-up backfill; a
            # restarted one (fresh state after a crash) rebuilds it over REST.
            if first_start[0] or parts.history is None:
                first_start[0] = False
                return [], []
            return await parts.history(sym)

        incarnations = [0]

        def factory() -> Awaitable[None]:
            incarnations[0] += 1
            if incarnations[0] > 1:
                # A restarted actor has fresh state: execution re-sends its open positions so that
                # trailing resumes (queued in the inbox, handled once the new incarnation runs).
                try:
                    self._exec_send.send_nowait(RepublishPositions(symbol=symbol))
                except trio.WouldBlock:
                    log.error("republish_positions_dropped", symbol=symbol, reason="execution inbox full")
            actor = SymbolActor(
                symbol=symbol,
                cfg=parts.cfg,
                risk_send=self._risk_send,
                execution_send=self._exec_send,
                history=history,
                on_fault=self.report_fault,
            )
            return actor.run(recv)

        await self.supervisor.start_child(symbol, factory)

    async def refresh_universe_now(self) -> None:
        """Re-select the universe: start new symbol actors, retire the ones that left and hold nothing;
        symbols with a position or working orders stay managed but take no new entries."""
        refresh = self.parts.refresh_universe
        if refresh is None:
            return
        managed = sorted({lc.symbol for lc in self.execution.open_trades()})
        try:
            refreshed = await refresh(managed)
        except Exception as exc:
            log.error("universe_refresh_failed", error_type=type(exc).__name__, error=str(exc))
            self.report_fault("SERVER_ERROR", None, f"universe refresh failed: {type(exc).__name__}")
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
        if self.parts.paper is not None:
            self.parts.paper.add_rules(changed.rules)
        if self.shadow is not None:
            self.shadow.paper.add_rules(changed.rules)
        await self._exec_send.send(changed)
        if self.shadow is not None:
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.shadow.inbox_send.send_nowait(changed)
        await self._risk_send.send(changed)
        added = [s for s in monitored if s not in self.active_symbols]
        removed = sorted(self.active_symbols - set(monitored))
        for symbol in added:
            await self.start_symbol(symbol)
        for symbol in removed:
            self.supervisor.retire(symbol)
            self.router.remove_symbol(symbol)
            self._symbol_inboxes.pop(symbol, None)
            self.symbol_sends.pop(symbol, None)
        if self.parts.set_market_symbols is not None:
            await self.parts.set_market_symbols(monitored)
        if not self.parts.replay:
            for symbol in added:
                for stream in WATCHED_STREAMS:
                    await self._health_send.send(WatchStream(symbol=symbol, stream=stream))
            for symbol in removed:
                await self._health_send.send(UnwatchSymbol(symbol=symbol))
        self.active_symbols = set(monitored)
        await self._health_send.send(SymbolsMonitored(symbols=tuple(sorted(self.active_symbols))))
        log.info(
            "universe_refreshed",
            tradable=list(selected),
            managed_only=[s for s in managed if s not in selected],
            added=added,
            retired=removed,
        )

    async def _universe_refresher(self, ticks: trio.MemoryReceiveChannel[Any]) -> None:
        async for _tick in ticks:
            await self.refresh_universe_now()

    # ------------------------------------------------------------------ control

    async def engage_kill(self, reason: str) -> None:
        """Operator kill switch: flatten everything (BOT_SPEC §9) and block new entries."""
        if self.kill_engaged:
            return
        self.kill_engaged = True
        log.critical("kill_switch_engaged", reason=reason)
        await self._risk_send.send(KillSwitch(reason=reason))
        await self._exec_send.send(KillSwitch(reason=reason))
        await self._report_send.send(KillSwitch(reason=reason))
        await self._health_send.send(KillSwitchChanged(on=True, reason=reason))

    async def resume(self, reason: str) -> None:
        if not self.kill_engaged:
            return
        self.kill_engaged = False
        log.warning("kill_switch_released", reason=reason)
        await self._risk_send.send(Resume(reason=reason))
        await self._exec_send.send(Resume(reason=reason))
        await self._health_send.send(KillSwitchChanged(on=False, reason=reason))

    async def _http_kill(self, reason: str) -> None:
        path = kill_file_path(self.parts.state_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'{{"reason": "{reason}", "via": "http"}}\n', encoding="utf-8")
        await self.engage_kill(reason)

    async def _http_resume(self, reason: str) -> None:
        kill_file_path(self.parts.state_dir).unlink(missing_ok=True)
        await self.resume(reason)

    def _telegram_handlers(self) -> CommandHandlers:
        """Telegram's /status, /positions, /daily, /profit, /kill, /resume, answered from this system."""

        def status() -> str:
            # What /health says (the same composition), so the two never disagree.
            snap = self.health.snapshot()
            lines = [f"mode {self.parts.mode}"]
            positions = self.metrics.get(OPEN_POSITIONS)
            if snap is not None:
                _, view = health_report(
                    snap,
                    kill_switch=self.kill_engaged,
                    open_positions=None if positions is None else int(positions),
                    unprotected_positions=int(self.metrics.get(UNPROTECTED_POSITIONS) or 0),
                )
                lines.append(
                    f"health {view['state']}, trading {view['trading_state']}, safe mode {snap.safe_mode}"
                )
                lines.extend(f"- {reason}" for reason in [*view["reasons"], *view["warnings"]])
            lines.append(f"kill switch {'ENGAGED' if self.kill_engaged else 'off'}")
            lines.append(f"open positions {0 if positions is None else int(positions)}")
            return "\n".join(lines)

        def positions() -> str:
            trades = self.execution.open_trades()
            if not trades:
                return "No open positions."
            lines = []
            for t in trades:
                st = t.to_state()
                entry = st.entry_cost / st.entry_filled if st.entry_filled else st.plan.entry_price
                lines.append(
                    f"{t.symbol} {t.side.value} qty {st.entry_filled - st.exit_filled} entry {entry:.6g} "
                    f"stop {st.stop_price} ({t.phase.value})"
                )
            return "\n".join(lines)

        def daily() -> str:
            reports = sorted(self.parts.log_dir.glob("daily-report-*.json"))
            if not reports:
                return "No daily report yet."
            r = json.loads(reports[-1].read_text(encoding="utf-8"))
            return (
                f"{r.get('day')}: realized {r.get('realized_pnl_usd', 0.0):+.2f} USDT, equity "
                f"{r.get('equity_usd', 0.0):.2f}, trades {r.get('trade_count', 0)}, win rate "
                f"{100 * r.get('win_rate', 0.0):.0f}%, fees {r.get('fees_usd', 0.0):.2f}"
            )

        def profit() -> str:
            total = summarize_trades(self.parts.journal.records(), start_equity_usd=0.0).total
            return (
                f"{total.trades} closed trades, pnl {total.pnl_usd:+.2f} USDT, win rate {100 * total.win_rate:.0f}%, "
                f"expectancy {total.expectancy_r:+.3f} R, fees {total.fees_usd:.2f}, funding {total.funding_usd:+.2f}"
            )

        return CommandHandlers(
            status=status,
            positions=positions,
            daily=daily,
            profit=profit,
            kill=self._http_kill,
            resume=self._http_resume,
        )

    def http_app(self) -> HealthHttpApp:
        """The request logic of /health, /metrics, /kill and /resume for this system."""
        return HealthHttpApp(
            snapshot=self.health.snapshot,
            metrics=self.metrics,
            on_kill=self._http_kill,
            on_resume=self._http_resume,
            control=ControlPolicy(token=self.parts.control_token, bind_host=self.parts.cfg.health.http_host),
            kill_engaged=lambda: self.kill_engaged,
        )

    async def _watch_kill_file(self) -> None:
        """`python -m futures_actor kill` writes the file; `resume` removes it (survives restarts)."""
        path = kill_file_path(self.parts.state_dir)
        while True:
            if path.exists():
                await self.engage_kill("OPERATOR_KILL_FILE")
            elif self.kill_engaged:
                await self.resume("OPERATOR_RESUME")
            await trio.sleep(self.parts.cfg.health.heartbeat_interval_seconds)

    async def _publish_api_weight(self, used: Callable[[], int]) -> None:
        """The /metrics gauge of the request weight used this minute."""
        while True:
            self.metrics.set(API_WEIGHT_USED, float(used()))
            await trio.sleep(self.parts.cfg.health.heartbeat_interval_seconds)

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not self.stop_requested.is_set():
                    log.warning("signal_received", signal=signal.Signals(signum).name, action="orderly stop")
                    self.stop_requested.set()
                else:
                    log.warning(
                        "signal_received", signal=signal.Signals(signum).name, action="immediate stop"
                    )
                    if self._root is not None:
                        self._root.cancel_scope.cancel()
                    return

    async def _paper_tap(self, recv: trio.MemoryReceiveChannel[Any]) -> None:
        """Live paper trading: every price the market-data actor sees reaches the paper exchange."""
        paper = self.parts.paper
        assert paper is not None
        async for msg in recv:
            _feed_paper(paper, msg)

    async def _run_shadow_book(
        self,
        tap_recv: trio.MemoryReceiveChannel[Any],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """LIVE: the shadow paper exchange, its execution, its market tap and the forwarder of its
        closed trades. Not critical: a crash is logged and the shadow book stops (its channels close,
        so market data and risk never block on it); the bot keeps running. Closes its store and journal."""
        shadow = self.shadow
        assert shadow is not None
        started = False
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(shadow.paper.run)
                nursery.start_soon(self._shadow_tap, tap_recv)
                nursery.start_soon(self._shadow_forwarder, shadow.out_recv)
                nursery.start_soon(self._shadow_positions, shadow.positions_recv)
                await nursery.start(shadow.execution.run, shadow.inbox_recv)
                log.info("shadow_book_started", symbols=list(self.parts.symbols))
                started = True
                task_status.started()
        except Exception as exc:
            log.error("shadow_book_crashed", error_type=type(exc).__name__, exc_info=exc)
            if not started:
                task_status.started()
        finally:
            for channel in (tap_recv, shadow.inbox_recv, shadow.out_recv, shadow.positions_recv):
                channel.close()
            shadow.journal.close()
            shadow.store.close()

    async def _shadow_tap(self, recv: trio.MemoryReceiveChannel[Any]) -> None:
        """The shadow paper exchange gets the prices live paper trading gets; the shadow execution
        the book and mark prices (never blocking market data: a full shadow inbox drops the price)."""
        shadow = self.shadow
        assert shadow is not None
        async for msg in recv:
            # A replay feeding candle paths (`feed_path`) gets its funding through `_actor_tap`: its
            # MarkUpdated must not pin the shadow paper's mark (stops follow the path).
            if not (self._paths_fed and isinstance(msg, MarkUpdated)):
                _feed_paper(shadow.paper, msg)
            if isinstance(msg, BookUpdated | MarkUpdated):
                with contextlib.suppress(trio.WouldBlock):
                    shadow.inbox_send.send_nowait(msg)
            elif isinstance(msg, CandleClosed):
                for amend in shadow.trailer.on_candle(msg):
                    try:
                        shadow.inbox_send.send_nowait(amend)
                    except trio.WouldBlock:  # the next close recomputes it; market data never waits
                        log.warning("shadow_trail_dropped", trade_id=amend.trade_id, symbol=amend.symbol)

    async def _shadow_positions(self, recv: trio.MemoryReceiveChannel[Any]) -> None:
        """The shadow execution's messages to "its symbol actors": positions go to the shadow trailer."""
        shadow = self.shadow
        assert shadow is not None
        async for msg in recv:
            if isinstance(msg, PositionUpdated):
                shadow.trailer.on_position(msg)

    async def _shadow_forwarder(self, recv: trio.MemoryReceiveChannel[Any]) -> None:
        """Of the shadow execution's outputs only closed trades reach PortfolioRisk, as
        `ShadowTradeClosed`: shadow trades never count in live exposure, open risk or PnL."""
        async for msg in recv:
            if isinstance(msg, TradeClosed):
                log.info("shadow_trade_closed", trade_id=msg.trade_id, symbol=msg.symbol)
                await self._risk_send.send(ShadowTradeClosed(record=msg.record))
            elif isinstance(msg, RetryRequested):
                # A shadow entry's retry is re-decided too (answered to the shadow book, never reserved).
                await self._risk_send.send(msgspec.structs.replace(msg, shadow=True))

    async def _actor_tap(self, recv: trio.MemoryReceiveChannel[Any]) -> None:
        """Market facts the central actors need: 1h closes to PortfolioRisk (correlation), book and
        mark prices to Execution (re-pricing a retried entry from the mid, the price band of a kill),
        conflated so that a slow exchange call in Execution never holds up market data."""
        trend_tf = self.parts.cfg.timeframes.trend_tf
        async for msg in recv:
            match msg:
                case CandleClosed(interval=interval) if interval == trend_tf:
                    await self._risk_send.send(msg)
                case MarkUpdated() if self.parts.replay:
                    # Replay's recorded funding reaches the paper exchange(s) (issue 10 #4); live
                    # paper gets the mark stream through its own tap.
                    for paper in self._replay_papers():
                        _feed_replay_funding(paper, msg)
                    self.exec_prices.put(msg)
                case BookUpdated() | MarkUpdated():
                    self.exec_prices.put(msg)
                case _:
                    pass

    def feed_path(self, symbol: str, candle: Candle, interval_ms: int) -> None:
        """Replay: the candle about to form becomes the path of every paper exchange of the system
        (the bot's and the shadow book's)."""
        self._paths_fed = True
        for paper in self._replay_papers():
            paper.on_path(symbol, candle, interval_ms)

    def _replay_papers(self) -> list[PaperExchange]:
        """The paper exchanges a replay's funding must reach: the bot's and the shadow book's."""
        papers = [] if self.parts.paper is None else [self.parts.paper]
        if self.shadow is not None:
            papers.append(self.shadow.paper)
        return papers

    # ------------------------------------------------------------------ run and stop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        parts = self.parts
        sink = current_sink()
        if sink is not None:
            token = trio.lowlevel.current_trio_token()
            # Called from whatever thread logged; run_sync_soon brings it into trio (thread-safe).
            sink.on_write_error = lambda exc: token.run_sync_soon(self._log_write_failed, exc)
        try:
            async with trio.open_nursery() as root:
                self._root = root
                if parts.signals:
                    root.start_soon(self._watch_signals)
                with trio.CancelScope() as starting:
                    root.start_soon(self._abort_start_on_stop, starting)
                    await self._start_actors(root, task_status)
                if not self.started:
                    # A stop request (signal) during start-up: nothing decided yet, everything needed
                    # to resume is persisted per change; the actors that did start are cancelled.
                    log.warning("startup_aborted", reason="stop requested during start-up")
                    log.warning("shutdown_done", exit_code=self.exit_code)
                    root.cancel_scope.cancel()
                    return
                await self.stop_requested.wait()
                await self._orderly_stop()
                root.cancel_scope.cancel()
        finally:
            if sink is not None:
                sink.on_write_error = None
            self._root = None
            if self.shadow is not None:
                # Normally closed by the shadow book's task; here if `run` ended before it started.
                self.shadow.journal.close()
                self.shadow.store.close()
            self.stopped.set()

    def _log_write_failed(self, exc: OSError) -> None:
        """The log disk refuses writes (full): alert, safe mode, then an orderly stop with exit 1.

        Trading on without an event log would hide every decision; the trade journal and the state
        store refuse loudly on their own (a closed trade whose record could not be written is
        re-written from the state file at the next start)."""
        reason = f"log disk refuses writes: {exc.filename or ''} {exc.strerror or exc}".strip()
        if self.stop_reason is None:
            self.stop_reason = reason
        print(
            f"futures-actor: {reason}; entering safe mode and stopping in order", file=sys.stderr, flush=True
        )
        log.critical("log_write_failed", error=str(exc), errno=exc.errno, action="safe mode, orderly stop")
        self.report_fault(FaultKind.LOG_WRITE.value, None, reason)
        self.exit_code = EXIT_RUNTIME
        if self._root is None:
            self.stop_requested.set()
        else:
            self._root.start_soon(self._stop_after_safe_mode)

    def _safe_mode_changed(self, on: bool) -> None:
        if on:
            self.safe_mode_entered.set()

    async def _stop_after_safe_mode(self) -> None:
        """Stop in order once health has entered safe mode (bounded: stop anyway after the timeout)."""
        with trio.move_on_after(self.parts.cfg.shutdown.timeout_seconds):
            await self.safe_mode_entered.wait()
        self.stop_requested.set()

    async def _abort_start_on_stop(self, starting: trio.CancelScope) -> None:
        await self.stop_requested.wait()
        if not self.started:
            starting.cancel()

    async def _start_actors(self, root: trio.Nursery, task_status: trio.TaskStatus[None]) -> None:
        """Start every actor in dependency order; `started` is set at the end."""
        parts = self.parts
        cfg = parts.cfg
        await root.start(parts.gateway.run)
        await root.start(self._run_critical, "execution", self.execution.run, self._exec_recv)
        await root.start(self._run_critical, "portfolio_risk", self.risk.run, self._risk_recv)
        await root.start(self.health.run, self._health_recv)
        await root.start(self.reporter.run, self._report_recv)
        tap_send, tap_recv = trio.open_memory_channel[Any](PAPER_TAP_SIZE)
        self.router.add_tap(tap_send)
        root.start_soon(self._actor_tap, tap_recv)
        root.start_soon(self.exec_prices.forward, self._exec_send)
        if parts.paper is not None and not parts.replay:
            paper_send, paper_recv = trio.open_memory_channel[Any](PAPER_TAP_SIZE)
            self.router.add_tap(paper_send)
            root.start_soon(self._paper_tap, paper_recv)
        if self.shadow is not None:
            shadow_send, shadow_recv = trio.open_memory_channel[Any](PAPER_TAP_SIZE)
            self.router.add_tap(shadow_send)
            await root.start(self._run_shadow_book, shadow_recv)
        # Market data is built first (symbol actors' history loader may use its REST client)
        # and started after the symbols, whose inboxes its start-up backfill fills.
        market_run = parts.market(self)
        await root.start(self.supervisor.run)
        for symbol in parts.symbols:
            await self.start_symbol(symbol)
        await root.start(market_run)
        await self._health_send.send(SymbolsMonitored(symbols=tuple(sorted(self.active_symbols))))
        if not parts.replay:
            for symbol in parts.symbols:
                for stream in WATCHED_STREAMS:
                    await self._health_send.send(WatchStream(symbol=symbol, stream=stream))
        tick_send, tick_recv = trio.open_memory_channel[Any](SCHEDULER_TICK_INBOX_SIZE)
        subscribers: dict[Job, list[Any]] = {Job.DAILY_REPORT: [self._report_send]}
        if parts.refresh_universe is not None:
            subscribers[Job.UNIVERSE_REFRESH] = [tick_send]
            root.start_soon(self._universe_refresher, tick_recv)
        scheduler = Scheduler(
            cfg=cfg,
            wall_clock=parts.wall_clock,
            subscribers=subscribers,
            max_sleep_s=REPLAY_SCHEDULER_MAX_SLEEP_SECONDS if parts.replay else None,
        )
        await root.start(scheduler.run)
        if parts.http and cfg.health.http_enabled:
            app = self.http_app()
            await root.start(
                lambda task_status: serve_http(
                    app,
                    host=cfg.health.http_host,
                    port=cfg.health.http_port,
                    listeners=parts.http_listeners,
                    task_status=task_status,
                )
            )
        if parts.telegram is not None and cfg.notifications.telegram_commands_enabled and not parts.replay:
            commands = TelegramCommands(
                notifier=parts.telegram.notifier,
                cfg=cfg.notifications,
                handlers=self._telegram_handlers(),
            )
            await root.start(commands.run)
        if parts.kill_file_watch:
            root.start_soon(self._watch_kill_file)
        if parts.api_weight is not None:
            root.start_soon(self._publish_api_weight, parts.api_weight)
        self.started = True
        log.info("system_started", mode=self.run_mode, symbols=list(parts.symbols))
        task_status.started()

    async def _run_critical(
        self,
        name: str,
        run: Callable[..., Awaitable[None]],
        inbox: Any,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """A critical actor: its crash is a safety fault that stops the bot in order (exit 1).

        A failure before the actor is up (Execution's start-up reconcile) propagates: the start-up
        failed, and the caller decides (a transient exchange error is retried by `run_live`)."""
        status = _StartedFlag(task_status)
        try:
            await run(inbox, task_status=status)
        except Exception as exc:
            if not status.done:
                raise
            log.critical("critical_actor_crashed", actor=name, error_type=type(exc).__name__, exc_info=exc)
            self.exit_code = EXIT_RUNTIME
            self.report_fault("UNEXPECTED_EXCEPTION", None, f"{name} crashed: {type(exc).__name__}")
            self.stop_requested.set()

    async def _wait_entries_cancelled(self) -> None:
        """Until no trade has an entry order working (execution cancels them on StopIntake)."""
        while any(lc.phase in _ENTRY_PHASES for lc in self.execution.open_trades()):  # noqa: ASYNC110
            await trio.sleep(SHUTDOWN_POLL_SECONDS)

    async def _orderly_stop(self) -> None:
        """REDUCING, cancel working entries, keep stops/targets, persist, flush (each phase bounded)."""
        timeout = self.parts.cfg.shutdown.timeout_seconds
        log.warning("shutdown_started", timeout_seconds=timeout)
        with trio.move_on_after(timeout) as scope:
            scope.shield = True
            for channel in (self._risk_send, self._exec_send):
                try:
                    channel.send_nowait(StopIntake())
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    await channel.send(StopIntake())
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._health_send.send_nowait(TradingStateChanged(state=TradingState.REDUCING))
            await self._wait_entries_cancelled()
        if scope.cancelled_caught:
            log.error("shutdown_timeout", phase="cancel working entries", timeout_seconds=timeout)
            self.exit_code = EXIT_RUNTIME
        log.warning("shutdown_done", exit_code=self.exit_code)


async def run_system(parts: SystemParts) -> System:
    """Run a whole system until it stops; returns it (exit code, actors) for inspection."""
    system = System(parts)
    await system.run()
    return system


def _struct_fields(obj: Any) -> dict[str, Any]:
    try:
        import msgspec

        data = msgspec.to_builtins(obj)
    except TypeError:
        return {"value": repr(obj)}
    return data if isinstance(data, dict) else {"value": data}


class _EverySymbol(Mapping[str, trio.MemorySendChannel[Any]]):
    """The same channel for every symbol (the shadow execution's "symbol actors": its trailer)."""

    def __init__(self, send: trio.MemorySendChannel[Any]) -> None:
        self._send = send

    def __getitem__(self, key: str) -> trio.MemorySendChannel[Any]:
        return self._send

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _feed_paper(paper: PaperExchange, msg: Any) -> None:
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


class _ReportingRiskChannel(trio.abc.SendChannel[Any]):
    """Execution's channel to PortfolioRisk that also offers the Reporter a copy of a position opened
    (final entry fill) or closed: the Reporter's alerts (BOT_SPEC §11). The copy never blocks."""

    def __init__(self, risk: trio.MemorySendChannel[Any], report: trio.MemorySendChannel[Any]) -> None:
        self._risk = risk
        self._report = report

    async def send(self, value: Any) -> None:
        await self._risk.send(value)
        if isinstance(value, TradeClosed) or (isinstance(value, EntryFilled) and value.final):
            try:
                self._report.send_nowait(value)
            except trio.WouldBlock:
                log.error("reporter_inbox_full", message=type(value).__name__)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def send_nowait(self, value: Any) -> None:
        self._risk.send_nowait(value)

    def clone(self) -> trio.MemorySendChannel[Any]:
        return self._risk.clone()

    async def aclose(self) -> None:
        await self._risk.aclose()


def _feed_replay_funding(paper: PaperExchange, msg: MarkUpdated) -> None:
    """Replay: a recorded funding rate (`MarkUpdated.ts_ms` is its funding time) for a paper exchange;
    the mark is not pinned (the candle path stays the mark). Bad input is logged, never raised."""
    try:
        paper.on_funding(msg.symbol, msg.funding_rate, msg.ts_ms)
    except Exception as exc:
        log.error("paper_funding_input_rejected", symbol=msg.symbol, error=str(exc))


def _close_key(record: Mapping[str, Any]) -> str:
    """Sort key of a trade record: its ISO close time (records without one first, in file order)."""
    value = record.get("timestamp_close")
    return value if isinstance(value, str) else ""


def _utc_day(ms: int) -> date:
    return datetime.fromtimestamp(ms / _MS_PER_S, tz=UTC).date()

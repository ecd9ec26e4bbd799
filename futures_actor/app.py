"""The root supervisor: builds the actors, owns signal handling and the shutdown order (ARCHITECTURE.md).

`run_bot(options)` is what `python -m futures_actor` runs under `trio.run`. It chooses the venue
(LIVE: Binance gateway; PAPER_LIVE: the paper exchange on live market data; replay: the paper
exchange on recorded klines under trio's mock clock), then `run_system` starts the actors in
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
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TextIO

import httpx
import msgspec
import trio

from futures_actor.actors.clock import TrioWallClock, system_wall_clock
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
    control_token_from_env,
    is_loopback_host,
    open_http_listeners,
    serve_http,
)
from futures_actor.actors.market_data import MarketData, MarketRouter
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
from futures_actor.actors.replay_feed import ReplayFeed, discover_symbols
from futures_actor.actors.reporter import Alert, Reporter
from futures_actor.actors.scheduler import Job, Scheduler
from futures_actor.actors.shadow_trailer import ShadowTrailer
from futures_actor.actors.supervision import ChildDropped, Supervisor
from futures_actor.actors.symbol_actor import SymbolActor, open_symbol_inbox
from futures_actor.actors.telegram import (
    TELEGRAM_OUTBOX_SIZE,
    CommandHandlers,
    TelegramCommands,
    TelegramNotifier,
    TelegramSender,
    TelegramText,
)
from futures_actor.binance.binance_gateway import BinanceGateway, user_stream_factory
from futures_actor.binance.errors import BinanceError
from futures_actor.binance.gateway import ExchangeGateway
from futures_actor.binance.models import usable_symbol_rules
from futures_actor.binance.paper import PaperExchange
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.urls import resolve_urls
from futures_actor.control import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, RunOptions, kill_file_path
from futures_actor.core.clock import SystemWallClock, WallClock, iso_utc
from futures_actor.core.config import BotConfig
from futures_actor.core.health import FaultKind, health_report
from futures_actor.core.lifecycle import Phase
from futures_actor.core.performance import PerformanceTracker
from futures_actor.core.report import AccountSnapshot, render_ineligible
from futures_actor.core.risk_state import closed_pnl_from_records, day_equity_bounds
from futures_actor.core.secrets import Secrets
from futures_actor.core.summary import REPLAY_MODE, count_trades, render_summary, summarize_trades
from futures_actor.core.types import Candle, SymbolRules, TradingState
from futures_actor.logs import (
    LogSink,
    configure_logging,
    current_sink,
    get_logger,
    register_secrets,
    reset_logging,
    stream_files,
)
from futures_actor.startup import (
    BAN_FILE,
    ShutdownSignals,
    StartupRetry,
    read_ban_until,
    replay_rules,
    replay_universe_selection,
    select_live_universe,
    write_ban_until,
)
from futures_actor.state.guard import (
    StateDirLocked,
    StateGuardError,
    check_exchange_clean,
    check_state_present,
    lock_state_dir,
    state_file_missing,
)
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore, StateStoreError
from futures_actor.tearsheet import REPORT_HTML, write_report, write_summary_json
from futures_actor.tearsheet.equity import EQUITY_CSV, AccountView, EquityCsvWriter, EquitySampler
from futures_actor.tearsheet.load import SUMMARY_JSON

__all__ = ["System", "SystemParts", "run_bot", "run_system"]

HEALTH_INBOX_SIZE = 1024
EXECUTION_INBOX_SIZE = 256
REPORTER_INBOX_SIZE = 64
SCHEDULER_TICK_INBOX_SIZE = 16
PAPER_TAP_SIZE = 1024
REPLAY_DB_FILE = "replay.sqlite"
# LIVE's shadow paper book (BOT_SPEC §8.9): its own state file (never the live one, whose lifecycles
# the live Execution reconciles against Binance) and its own trade log under `<log_dir>/shadow/`.
SHADOW_DB_FILE = "shadow.sqlite"
SHADOW_LOG_SUBDIR = "shadow"
SHUTDOWN_POLL_SECONDS = 0.05
REPLAY_HEARTBEAT_SECONDS = 3600.0
# Replay (performance): the paper exchange is in-process and never diverges from Execution's view,
# so the periodic reconcile (a safety net for a real exchange) runs at most once a simulated hour,
# and the Scheduler re-reads the (simulated, never jumping) wall clock only when a slot is due.
REPLAY_RECONCILE_SECONDS = 3600.0
REPLAY_SCHEDULER_MAX_SLEEP_SECONDS = 86400.0
# Streams whose silence is a health fault (kline streams only deliver on a close; their silence is
# reported by the stream watchdog as STALE_DATA instead).
WATCHED_STREAMS = ("bookTicker", "markPrice")
_ENTRY_PHASES = frozenset({Phase.PENDING_ENTRY, Phase.ENTRY_WORKING, Phase.ENTRY_CANCELING})
# Simulated seconds the replay keeps running after its last candle, so that the last decisions,
# entries and their TTLs settle before the orderly stop.
REPLAY_SETTLE_SECONDS = 300.0
# The early protection pass's messages go nowhere; a buffer so that it never waits on them.
EARLY_PROTECTION_BUFFER = 1024
# A replay's console shows only events at this level or above (on stderr); all are in events.jsonl.
REPLAY_CONSOLE_LEVEL = "error"
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


def utc_date_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / _MS_PER_S, tz=UTC).date()


# ---------------------------------------------------------------------------------------------- run_bot


async def run_bot(options: RunOptions) -> int:
    """The main command: replay, paper trading or live trading, per the options. Returns the exit code."""
    if options.replay_dir is not None:
        return await run_replay(options)
    return await run_live(options)


def _open_logging(
    options: RunOptions, clock: WallClock, log_dir: Path | None, *, replay: bool = False
) -> LogSink:
    """Live: every event to the console (pretty on a terminal, JSON otherwise) and daily files.
    Replay: one events.jsonl for the run; the console (stderr) shows errors only, so that stdout
    carries nothing but the progress lines and the summary."""
    secrets = Secrets.from_env(options.config)
    return configure_logging(
        cfg=options.config.logging,
        log_dir=log_dir,
        clock=clock,
        secrets=secrets.values(),
        console="quiet" if options.console == "quiet" else "auto",
        stream=sys.stderr if replay else None,
        console_level=REPLAY_CONSOLE_LEVEL if replay else None,
        rotate=not replay,
    )


def _seed_trio_scheduler(seed: int) -> None:
    """Make trio's run-queue order reproducible (it randomizes batches to shake out races).

    Replay promises byte-identical output for the same input; the actors do not depend on the
    scheduling order for correctness, but ties at the same simulated instant (a fill and a TTL) would
    otherwise be broken differently from run to run. This touches a private attribute of trio and is
    skipped if trio changes it.
    """
    rng = getattr(getattr(trio, "_core", None), "_run", None)
    generator = getattr(rng, "_r", None)
    if isinstance(generator, random.Random):
        generator.seed(seed)


class _RunJournal(TradeJournal):
    """The replay's journal: one trades.jsonl for the run; tells the equity sampler about each close."""

    def __init__(self, *, on_written: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_written = on_written

    def write(self, record: Mapping[str, Any] | msgspec.Struct) -> Path:
        path = super().write(record)
        self._on_written()
        return path


class _Progress:
    """The replay's progress lines (stdout): percent of the 5m close times, simulated time, trades
    counted as the summary counts them, equity, elapsed and estimated remaining wall time."""

    def __init__(self, stdout: TextIO, journal: Callable[[], TradeJournal | None]) -> None:
        self._stdout = stdout
        self._journal = journal
        self._started = time.monotonic()
        self.system: System | None = None

    def __call__(self, done: int, total: int, close_ms: int) -> None:
        journal = self._journal()
        counts = count_trades(journal.records()) if journal is not None else None
        equity = self.system.risk.snapshot().equity_usd if self.system is not None else None
        elapsed = time.monotonic() - self._started
        eta = elapsed * (total - done) / done if done else 0.0
        trades = (
            f"trades {counts.trades}  entries not filled {counts.unfilled_entries}" if counts else "trades 0"
        )
        self._stdout.write(
            f"replay {100.0 * done / total:5.1f}%  {iso_utc(close_ms)[:16].replace('T', ' ')}  {trades}  "
            f"equity {equity:.2f}  elapsed {_clock_text(elapsed)}  eta {_clock_text(eta)}\n"
            if equity is not None
            else f"replay {100.0 * done / total:5.1f}%  {iso_utc(close_ms)[:16].replace('T', ' ')}  {trades}  "
            f"elapsed {_clock_text(elapsed)}  eta {_clock_text(eta)}\n"
        )
        self._stdout.flush()


def _utc_day(ms: int) -> date:
    return datetime.fromtimestamp(ms / _MS_PER_S, tz=UTC).date()


class ReplayEquity:
    """A replay's account equity marked to market, for equity.csv (issue 13 review #6).

    Equity at time t = the paper exchange's wallet balance + Σ over open positions of
    amount × (price − entry price), where price is the close of the symbol's latest 5m candle closed by t
    (before its first close: the open of the first candle). Read through the paper exchange's public
    `engine` (its account's wallet and positions), without advancing it; the candles come from the
    replay feed's `on_path` (`on_candle`). Without a paper exchange (not yet built) there is no equity;
    a position of a symbol without a candle yet (never in a replay) counts at its entry price.
    """

    def __init__(self, paper: PaperExchange | None = None) -> None:
        self.paper = paper
        # symbol -> (the close of the candle before the latest, the latest candle, its interval)
        self._candles: dict[str, tuple[float | None, Candle, int]] = {}

    def on_candle(self, symbol: str, candle: Candle, interval_ms: int) -> None:
        """The candle starting now (the feed's look-ahead path): the one before it has closed."""
        known = self._candles.get(symbol)
        self._candles[symbol] = (None if known is None else known[1].close, candle, interval_ms)

    def price(self, symbol: str, now_ms: int) -> float | None:
        known = self._candles.get(symbol)
        if known is None:
            return None
        previous_close, candle, interval_ms = known
        if now_ms >= candle.open_time_ms + interval_ms:
            return candle.close
        return previous_close if previous_close is not None else candle.open

    def open_positions(self) -> int:
        if self.paper is None:
            return 0
        return sum(1 for pos in self.paper.engine.account.positions().values() if pos.amount != 0)

    def equity(self, now_ms: int) -> float | None:
        if self.paper is None:
            return None
        account = self.paper.engine.account
        total = Decimal(account.wallet_balance)
        for symbol, pos in account.positions().items():
            price = self.price(symbol, now_ms) if pos.amount != 0 else None
            if price is not None:
                total += pos.unrealized(Decimal(repr(price)))
        return float(total)


def _clock_text(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _replay_symbols(replay_dir: Path, wanted: tuple[str, ...] | None) -> list[str] | str:
    """The symbols to replay, or an error message."""
    try:
        found = discover_symbols(replay_dir)
    except (OSError, ValueError) as exc:
        return f"replay directory {replay_dir}: {exc}"
    if not found:
        return f"replay directory {replay_dir}: no SYMBOL-5m.csv.gz with SYMBOL-1h.csv.gz found"
    if wanted is None:
        return found
    missing = [s for s in wanted if s not in found]
    if missing:
        return f"--symbols: {', '.join(missing)} not in {replay_dir} (it has {', '.join(found)})"
    return [s for s in found if s in wanted]


async def run_replay(options: RunOptions, *, out: TextIO | None = None) -> int:
    """`--paper --replay DIR`: the full actor system on recorded klines under the mock clock.

    The log directory becomes the run directory: trades.jsonl and events.jsonl (one file each for the
    whole run), daily-report-*.json, equity.csv, summary.json and report.html. stdout gets the progress
    lines and the summary only.

    SIGTERM and SIGINT are handled from the start: the first stops the replay in order and prints the
    summary of the trades so far (exit 0); a second one exits at once (exit 1).
    """
    signals = ShutdownSignals()
    code = EXIT_RUNTIME
    try:
        lock = lock_state_dir(options.state_dir)
    except StateDirLocked as exc:
        print(f"futures-actor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    with lock:
        async with trio.open_nursery() as outer:
            await outer.start(signals.watch, outer.cancel_scope)
            with trio.CancelScope() as loading:
                signals.set_action(loading.cancel, phase="replay start-up")
                code = await _run_replay_body(options, out, signals)
            if loading.cancelled_caught:
                print("replay interrupted during start-up: no trades", file=out or sys.stdout)
                code = EXIT_OK
            outer.cancel_scope.cancel()
    if signals.immediate:
        print("futures-actor: replay stopped at once (second signal)", file=sys.stderr)
        return EXIT_RUNTIME
    return code


async def _run_replay_body(options: RunOptions, out: TextIO | None, signals: ShutdownSignals) -> int:
    stdout = out or sys.stdout
    cfg = options.config
    replay_dir = options.replay_dir
    assert replay_dir is not None
    _seed_trio_scheduler(cfg.replay.seed)
    cfg = msgspec.structs.replace(
        cfg,
        # Nobody watches a replay's heartbeat file; one a simulated hour keeps it cheap.
        health=msgspec.structs.replace(
            cfg.health,
            heartbeat_interval_seconds=max(cfg.health.heartbeat_interval_seconds, REPLAY_HEARTBEAT_SECONDS),
        ),
        execution=msgspec.structs.replace(
            cfg.execution,
            paper_initial_balance_usdt=cfg.replay.initial_balance_usdt,
            reconcile_interval_seconds=max(
                cfg.execution.reconcile_interval_seconds, REPLAY_RECONCILE_SECONDS
            ),
        ),
    )
    # Console-only logging until the data is loaded and the simulated clock exists (respects --quiet);
    # replaced below by the full set-up with events.jsonl on simulated time.
    _open_logging(options, SystemWallClock(), None, replay=True)
    found = _replay_symbols(replay_dir, options.replay_symbols)
    if isinstance(found, str):
        print(f"futures-actor: {found}", file=sys.stderr)
        return EXIT_CONFIG
    selection, prices = replay_universe_selection(replay_dir, found, cfg)
    symbols = list(selection.selected)
    if not symbols:
        print(f"futures-actor: replay: no symbol of {found} passes the universe rules", file=sys.stderr)
        return EXIT_CONFIG
    router = MarketRouter()
    rules = replay_rules(replay_dir, symbols, prices)
    log_dir = options.log_dir
    state_dir = options.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    db_path = state_dir / REPLAY_DB_FILE
    for path in (db_path, state_dir / SHADOW_DB_FILE):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)  # a replay always starts from fresh accounts
    paper_holder: dict[str, PaperExchange] = {}
    path_system: dict[str, System] = {}
    marks = ReplayEquity()

    def on_path(symbol: str, candle: Candle, interval_ms: int) -> None:
        marks.on_candle(symbol, candle, interval_ms)
        running = path_system.get("system")
        if running is not None:
            running.feed_path(symbol, candle, interval_ms)  # the shadow book's paper exchange too
        else:
            paper_holder["paper"].on_path(symbol, candle, interval_ms)

    journal: TradeJournal | None = None
    progress = _Progress(stdout, lambda: journal)
    feed = ReplayFeed(
        directory=replay_dir,
        router=router,
        symbols=symbols,
        on_path=on_path,
        on_progress=progress,
        start_ms=options.replay_start_ms,
        end_ms=options.replay_end_ms,
        warmup_1h_bars=cfg.market_data.history_1h_bars if options.replay_start_ms is not None else 0,
        cfg=cfg.replay,
    )
    try:
        feed.load()
    except (OSError, ValueError) as exc:
        print(f"futures-actor: replay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    clock = TrioWallClock(feed.epoch_ms)
    log_dir.mkdir(parents=True, exist_ok=True)
    existing = [
        p.name
        for name in (cfg.logging.trade_log_file, cfg.logging.event_log_file)
        for p in stream_files(log_dir, name)
    ]
    if existing:
        print(
            f"futures-actor: replay: {log_dir} already holds {', '.join(existing)}; "
            "give an empty --log-dir so runs do not mix",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    sink = _open_logging(options, clock, log_dir, replay=True)
    sampler: EquitySampler | None = None
    try:
        writer = EquityCsvWriter(log_dir / EQUITY_CSV)
        system_box: dict[str, System] = {}

        def account_view() -> AccountView:
            """Equity marked to market now (`ReplayEquity`); open risk and positions from risk."""
            snap = system_box["system"].risk.snapshot()
            equity = marks.equity(clock.now_ms())
            return AccountView(
                equity_usd=equity if equity is not None else cfg.replay.initial_balance_usdt,
                open_risk_usd=snap.open_risk_usd,
                open_positions=snap.positions,
            )

        sampler = EquitySampler(
            writer=writer,
            view=account_view,
            clock=clock,
            every_ms=cfg.report.equity_sample_minutes * 60_000,
        )
        journal = _RunJournal(
            directory=log_dir, cfg=cfg.logging, clock=clock, rotate=False, on_written=sampler.trade_closed
        )
        with StateStore.open(db_path, durable=False) as store:
            paper = PaperExchange.from_store(
                store, cfg=cfg.execution, rules=rules, now_ms=clock.now_ms, persist_mode="on_close"
            )
            paper_holder["paper"] = paper
            marks.paper = paper

            def market(system: System) -> Callable[..., Awaitable[Any]]:
                async def run_feed(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                    assert sampler is not None
                    async with trio.open_nursery() as nursery:
                        await nursery.start(sampler.run)
                        await feed.run(task_status=task_status)
                        # Let the last candle's decisions, orders and TTLs settle before stopping.
                        await trio.sleep(REPLAY_SETTLE_SECONDS)
                        nursery.cancel_scope.cancel()
                    system.stop_requested.set()

                return run_feed

            parts = SystemParts(
                cfg=cfg,
                mode="PAPER_LIVE",
                wall_clock=clock,
                gateway=paper,
                store=store,
                journal=journal,
                rules=rules,
                symbols=symbols,
                log_dir=log_dir,
                state_dir=state_dir,
                market=market,
                router=router,
                paper=paper,
                replay=True,
                kill_file_watch=False,
                reference_symbol=selection.reference_symbol,
                equity_curve=writer,
            )
            system = System(parts)
            system_box["system"] = system
            path_system["system"] = system
            progress.system = system
            signals.set_action(system.stop_requested.set, phase="replay")
            log.info(
                "replay_starting",
                directory=str(replay_dir),
                symbols=symbols,
                epoch=iso_utc(feed.epoch_ms),
                timerange=[options.replay_start_ms, options.replay_end_ms],
            )
            await system.run()
            sampler.finish()
            if signals.requested.is_set():
                log.warning("replay_interrupted", signal=signals.signal_name, trades_so_far=len(journal))
                stdout.write(f"replay interrupted by {signals.signal_name}: summary of the trades so far\n")
            records = list(journal.records())
            stats = feed.stats
            # The summary is the report's (one computation: trades.jsonl and equity.csv as written,
            # max drawdown on the marked-to-market curve, mode REPLAY).
            report = write_report(log_dir, cfg=cfg)
            summary = report.summary
            write_summary_json(
                log_dir,
                summary,
                report.metrics,
                {
                    "replay_dir": str(replay_dir),
                    "symbols": symbols,
                    "timerange": {
                        "start": iso_utc(options.replay_start_ms)
                        if options.replay_start_ms is not None
                        else None,
                        "end": iso_utc(options.replay_end_ms) if options.replay_end_ms is not None else None,
                    },
                    "first_close": iso_utc(stats.first_close_ms) if stats.steps else None,
                    "last_close": iso_utc(stats.last_close_ms) if stats.steps else None,
                    "candles_5m": stats.candles_5m,
                    "candles_1h": stats.candles_1h,
                    "config": str(options.config_path),
                    "initial_balance_usdt": cfg.replay.initial_balance_usdt,
                    "trade_records": len(records),
                    "counting": "trades = records whose entry filled; entries not filled are counted apart",
                    "exit_code": system.exit_code,
                },
            )
            stdout.write(render_summary(summary) + "\n")
            lockouts = (system.risk.ineligible_strategies(), system.risk.performance_blocked_strategies())
            stdout.write(render_ineligible(*lockouts) + "\n")
            stdout.write(
                f"run directory: {log_dir}\n"
                f"  {journal.link_path.name}: {len(records)} records ({summary.total.trades} trades, "
                f"{summary.unfilled_entries} entries not filled)\n"
                f"  {EQUITY_CSV}: {writer.rows} rows   {SUMMARY_JSON}   "
                f"{REPORT_HTML}: {report.size_bytes / 1024:.0f} KiB\n"
            )
            stdout.flush()
            log.info("replay_finished", trades=summary.total.trades, exit_code=system.exit_code)
            return system.exit_code
    except StateStoreError as exc:
        log.error("state_store_error", error=str(exc))
        print(f"futures-actor: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        if sampler is not None:
            sampler.close()
        if journal is not None:
            journal.close()
        sink.close()
        reset_logging()


async def run_live(options: RunOptions) -> int:
    """PAPER_LIVE (live market data, paper exchange) or LIVE (Binance gateway).

    Signals are handled from the first line (BOT_SPEC §12): a SIGTERM/SIGINT during start-up aborts it
    in order (exit 0, logged); once the system runs it stops it in order; a second signal cancels
    everything at once (exit 1).
    """
    cfg = options.config
    exchange_cfg = cfg.exchange
    if options.testnet:
        exchange_cfg = msgspec.structs.replace(exchange_cfg, environment="testnet")
        cfg = msgspec.structs.replace(cfg, exchange=exchange_cfg)
    clock = system_wall_clock()
    sink = _open_logging(options, clock, options.log_dir)
    signals = ShutdownSignals()
    code = EXIT_RUNTIME
    try:
        async with trio.open_nursery() as outer:
            await outer.start(signals.watch, outer.cancel_scope)
            code = await _run_live_guarded(options, cfg, clock, signals)
            outer.cancel_scope.cancel()
        if signals.immediate:
            log.error("stopped_immediately", signal=signals.signal_name, phase=signals.phase)
            code = EXIT_RUNTIME
        return code
    finally:
        sink.close()
        reset_logging()


def _refuse(event: str, message: str, code: int = EXIT_CONFIG, **fields: Any) -> int:
    """Log and print a start-up refusal; returns the exit code."""
    log.error(event, message=message, **fields)
    print(f"futures-actor: {message}", file=sys.stderr)
    return code


async def _run_live_guarded(
    options: RunOptions, cfg: BotConfig, clock: WallClock, signals: ShutdownSignals
) -> int:
    secrets = Secrets.from_env(cfg)
    control_token = control_token_from_env(cfg.health)
    if control_token:
        register_secrets([control_token])
    log.info("starting", mode=options.mode, testnet=options.testnet, api_key_set=bool(secrets.api_key))
    for warning in options.warnings:
        log.warning("startup_warning", message=warning)
    if options.mode == "LIVE" and not (secrets.api_key and secrets.api_secret):
        return _refuse(
            "live_refused",
            f"LIVE needs {cfg.exchange.api_key_env} and {cfg.exchange.api_secret_env} set",
        )
    if cfg.health.http_enabled and not is_loopback_host(cfg.health.http_host) and not control_token:
        return _refuse(
            "http_bind_refused",
            f"health.http_host {cfg.health.http_host!r} is not a loopback address: the kill and resume "
            f"endpoints would be reachable from the network without a token; set "
            f"{cfg.health.control_token_env} (health.control_token_env) or bind 127.0.0.1",
        )
    try:
        lock = lock_state_dir(options.state_dir)
    except StateDirLocked as exc:
        return _refuse("state_dir_locked", str(exc), state_dir=str(exc.state_dir), holder_pid=exc.holder_pid)
    with lock:
        listeners: list[trio.SocketListener] | None = None
        if cfg.health.http_enabled:
            # Bound before anything trades: a port in use stops the start here, not after reconciling.
            try:
                listeners = await open_http_listeners(cfg.health.http_host, cfg.health.http_port)
            except OSError as exc:
                return _refuse(
                    "health_port_unavailable",
                    f"health.http_port {cfg.health.http_port} on health.http_host {cfg.health.http_host}: "
                    f"{exc.strerror or exc}; choose a free port (0 picks one) or stop the process using it",
                )
        try:
            return await _run_live_locked(options, cfg, clock, signals, secrets, control_token, listeners)
        finally:
            for listener in listeners or ():
                with trio.CancelScope(shield=True):
                    await listener.aclose()


async def _run_live_locked(
    options: RunOptions,
    cfg: BotConfig,
    clock: WallClock,
    signals: ShutdownSignals,
    secrets: Secrets,
    control_token: str,
    listeners: list[trio.SocketListener] | None,
) -> int:
    exchange_cfg = cfg.exchange
    state_dir = options.state_dir
    db_path = state_dir / cfg.state.db_file
    journal: TradeJournal | None = None
    holder: dict[str, System] = {}
    try:
        journal = TradeJournal(directory=options.log_dir, cfg=cfg.logging, clock=clock)
        state_missing = state_file_missing(db_path)
        check_state_present(db_path, journal_records=len(journal), fresh=options.fresh_state)
        if state_missing and options.fresh_state:
            log.warning("state_started_afresh", file=str(db_path), flag="--fresh-state")
        with trio.CancelScope() as startup_scope:
            retry = StartupRetry(cfg=cfg.startup, wall_clock=clock)
            signals.set_action(startup_scope.cancel, phase="start-up")
            await retry.wait_for_ban(read_ban_until(state_dir), source=BAN_FILE)
            errors = _ErrorForwarder()
            async with (
                BinanceRestClient(
                    cfg=exchange_cfg,
                    wall_clock=clock,
                    api_key=secrets.api_key if secrets.api_key else None,
                    api_secret=secrets.api_secret if secrets.api_secret else None,
                    on_ban=lambda until_ms: write_ban_until(state_dir, until_ms),
                    on_error=errors,
                ) as rest,
                trio.open_nursery() as services,
            ):
                telegram = await services.start(_start_telegram, cfg, secrets)
                while True:
                    signals.set_action(startup_scope.cancel, phase="start-up")
                    try:
                        code = await _live_attempt(
                            options=options,
                            cfg=cfg,
                            clock=clock,
                            rest=rest,
                            journal=journal,
                            db_path=db_path,
                            check_exchange=state_missing
                            and options.mode == "LIVE"
                            and not options.fresh_state,
                            telegram=telegram,
                            listeners=listeners,
                            control_token=control_token,
                            errors=errors,
                            signals=signals,
                            holder=holder,
                        )
                        services.cancel_scope.cancel()
                        return code
                    except Exception as exc:
                        system = holder.pop("system", None)
                        if system is not None and system.started:
                            raise
                        await retry.after_failure(exc, phase="start-up")
        log.warning("startup_aborted", signal=signals.signal_name, reason="signal during start-up")
        return EXIT_OK
    except StateStoreError as exc:
        log.error("state_store_error", error=str(exc))
        print(f"futures-actor: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except Exception as exc:
        guard = _find_in_group(exc, StateGuardError)
        if guard is not None:
            return _refuse("state_refused", str(guard))
        store_error = _find_in_group(exc, StateStoreError)
        if store_error is not None:
            return _refuse("state_store_error", str(store_error), EXIT_RUNTIME)
        cause = _first_exchange_error(exc)
        if cause is None:
            raise
        log.error("exchange_error_at_startup", error=str(cause), error_type=type(cause).__name__)
        print(f"futures-actor: exchange error at start-up: {cause}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        if journal is not None:
            journal.close()


async def _protect_first(
    *, cfg: BotConfig, clock: WallClock, rest: BinanceRestClient, store: StateStore, journal: TradeJournal
) -> None:
    """LIVE start-up: positions that need protection are protected before anything else (issue 9 #4).

    The universe selection samples spreads for `universe.spread_sample_seconds` (a minute) and market
    data backfills history; a position left without a stop by a crash or by hand must not wait for
    that. This pass runs Execution's start-up reconcile alone (rules of every listed symbol, its own
    user stream, nobody listening to its messages) and stops it once the reconcile is done; the
    system's Execution reconciles again right after (idempotent: the state is persisted per change).
    """
    listing = await rest.exchange_info()
    rules = {info.symbol: r for info, r in usable_symbol_rules(listing.symbols)}
    gateway = BinanceGateway(
        rest=rest,
        user_stream=user_stream_factory(cfg=cfg.exchange, rest=rest, ws_base=resolve_urls(cfg.exchange).ws),
    )
    sink_send, sink_recv = trio.open_memory_channel[Any](EARLY_PROTECTION_BUFFER)
    inbox_send, inbox_recv = trio.open_memory_channel[Any](0)
    execution = Execution(
        cfg=cfg,
        mode="LIVE",
        gateway=gateway,
        store=store,
        journal=journal,
        rules_by_symbol=rules,
        wall_clock=clock,
        risk_send=sink_send,
        symbol_sends={},
        on_fault=None,
        metrics=None,
        journal_in_thread=True,
    )

    async def drain() -> None:
        async for _ in sink_recv:
            pass

    log.info("startup_protection_started")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await nursery.start(gateway.run)
        await nursery.start(execution.run, inbox_recv)
        nursery.cancel_scope.cancel()
    inbox_send.close()
    log.info("startup_protection_done", open_trades=len(execution.open_trades()))


class _ErrorForwarder:
    """The REST client's per-response error hook, forwarded to the running system's health (if any)."""

    def __init__(self) -> None:
        self.target: Callable[[BaseException], None] | None = None

    def __call__(self, exc: BaseException) -> None:
        if self.target is not None:
            self.target(exc)


async def _live_attempt(
    *,
    options: RunOptions,
    cfg: BotConfig,
    clock: WallClock,
    rest: BinanceRestClient,
    journal: TradeJournal,
    db_path: Path,
    check_exchange: bool,
    telegram: TelegramSender | None,
    listeners: list[trio.SocketListener] | None,
    control_token: str,
    errors: _ErrorForwarder,
    signals: ShutdownSignals,
    holder: dict[str, System],
) -> int:
    """One start-up attempt and, once it is up, the run. Raises on a start-up failure (retried above)."""
    exchange_cfg = cfg.exchange
    async with trio.open_nursery() as nursery:
        await nursery.start(rest.run_time_sync)
        if check_exchange:
            prefix = f"{cfg.exchange.client_id_prefix}-"
            ids = [o.client_order_id for o in await rest.open_orders()]
            ids += [a.client_algo_id for a in await rest.open_algo_orders()]
            check_exchange_clean(
                db_path, our_client_ids=[i for i in ids if i.startswith(prefix)], fresh=False
            )
        with StateStore.open(db_path) as store:
            if options.mode == "LIVE":
                await _protect_first(cfg=cfg, clock=clock, rest=rest, store=store, journal=journal)
            managed = sorted({s.plan.symbol for s in store.load_lifecycles()})
            selection, all_rules = await select_live_universe(rest, cfg, managed=managed)
            symbols = list(dict.fromkeys([*selection.selected, *selection.retained_for_management]))
            rules = {s: all_rules[s] for s in symbols if s in all_rules}
            gateway: ExchangeGateway
            paper: PaperExchange | None = None
            if options.mode == "LIVE":
                gateway = BinanceGateway(
                    rest=rest,
                    user_stream=user_stream_factory(
                        cfg=exchange_cfg, rest=rest, ws_base=resolve_urls(exchange_cfg).ws
                    ),
                )
                await gateway.check_account_mode()
            else:
                paper = PaperExchange.from_store(store, cfg=cfg.execution, rules=rules, now_ms=clock.now_ms)
                gateway = paper
            market_holder: dict[str, MarketData] = {}

            def market(system: System) -> Callable[..., Awaitable[Any]]:
                md = MarketData(
                    cfg=cfg,
                    rest=rest,
                    symbols=symbols,
                    subscribers=system.router,
                    on_fault=system.report_fault,
                    on_data=system.report_data,
                )
                market_holder["md"] = md
                return md.run

            async def refresh_universe(
                managed: Sequence[str],
            ) -> tuple[list[str], dict[str, SymbolRules], str]:
                fresh, fresh_rules = await select_live_universe(rest, cfg, managed=managed)
                return list(fresh.selected), fresh_rules, fresh.reference_symbol

            async def history(symbol: str) -> tuple[list[Candle], list[Candle]]:
                return await market_holder["md"].history(symbol)

            parts = SystemParts(
                cfg=cfg,
                mode=options.mode,
                wall_clock=clock,
                gateway=gateway,
                store=store,
                journal=journal,
                rules=rules,
                listed_rules=all_rules,
                symbols=symbols,
                log_dir=options.log_dir,
                state_dir=options.state_dir,
                market=market,
                history=history,
                paper=paper,
                http=True,
                http_listeners=listeners,
                control_token=control_token,
                api_weight=lambda: rest.limiter.used_weight,
                telegram=telegram,
                refresh_universe=refresh_universe,
                reference_symbol=selection.reference_symbol,
                set_market_symbols=lambda syms: market_holder["md"].set_symbols(syms),
                client_counts_errors=True,
            )
            system = System(parts)
            holder["system"] = system
            errors.target = system.report_exchange_error
            signals.set_action(system.stop_requested.set, phase="running")
            try:
                await system.run()
            finally:
                errors.target = None
            nursery.cancel_scope.cancel()
            return system.exit_code


async def _start_telegram(
    cfg: BotConfig, secrets: Secrets, *, task_status: trio.TaskStatus[TelegramSender | None]
) -> None:
    """The Telegram sender (daily reports and alerts), or None when disabled or not configured."""
    async with httpx.AsyncClient(timeout=cfg.notifications.telegram_timeout_seconds) as client:
        notifier = TelegramNotifier(cfg=cfg.notifications, secrets=secrets, client=client)
        if not notifier.enabled:
            if cfg.notifications.telegram_enabled:
                log.warning(
                    "telegram_disabled",
                    reason=f"{cfg.notifications.telegram_token_env} or "
                    f"{cfg.notifications.telegram_chat_id_env} is not set",
                )
            task_status.started(None)
            return
        send, recv = trio.open_memory_channel[TelegramText](TELEGRAM_OUTBOX_SIZE)
        sender = TelegramSender(notifier=notifier, outbox=send)
        task_status.started(sender)
        await sender.run(recv)


def _find_in_group(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`exc` itself or the first exception of type `kind` inside it (exception groups nest)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_in_group(inner, kind)
            if found is not None:
                return found
    return None


def _first_exchange_error(exc: BaseException) -> BaseException | None:
    """The venue error inside `exc` (possibly an exception group), or None if it is something else."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_exchange_error(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, BinanceError | httpx.TransportError | OSError):
        return exc
    return None

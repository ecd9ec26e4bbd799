"""The root supervisor: wires the actors, owns signal handling and the shutdown order (ARCHITECTURE.md).

`System` is the running actor system, built from `SystemParts` (system_parts.py) by a runner:
`live_run.run_live` (LIVE: Binance gateway; PAPER_LIVE: the paper exchange on live market data) or
`replay_run.run_replay` (the paper exchange on recorded klines under trio's mock clock). It wires the
actors with typed, bounded channels — who receives market data is the routing table of
`actors/routing.py` — and `System.run` starts them in dependency order: execution (which reconciles with
the venue before anyone may send to it), risk, health, reporter, the market taps and the shadow book, the
symbol actors under their supervisor, market data, scheduler, the HTTP endpoint, Telegram commands, the
kill-file watch; then it waits for a stop request. The kill switch, the universe refresh, the shadow book,
the symbol actors and the fault callbacks are their own modules under `actors/`; the stop request and
the shutdown order are `actors/root_supervisor.py`'s.

Shutdown (first SIGTERM/SIGINT, the end of a replay, or a crash of a critical actor): risk stops
deciding (REDUCING), execution cancels working entry orders and leaves stops and targets on the
exchange, state is already persisted per change, journals are flushed, connections closed. Each
phase is shielded and bounded by `shutdown.timeout_seconds`. A second signal cancels at once.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from futures_actor.actors.execution import Execution, ExecutionInbox
from futures_actor.actors.faults import FaultReporter
from futures_actor.actors.health import HealthActor, HealthMsg
from futures_actor.actors.http_health import ControlPolicy, HealthHttpApp, serve_http
from futures_actor.actors.kill_switch import OperatorKillSwitch
from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.metrics import API_WEIGHT_USED, Metrics
from futures_actor.actors.operator_commands import operator_commands
from futures_actor.actors.portfolio_risk import PortfolioRisk, open_risk_inbox
from futures_actor.actors.report_account import ReportAccount, rebuild_tracker, utc_day
from futures_actor.actors.reporter import Reporter, ReporterMsg
from futures_actor.actors.root_supervisor import RootSupervisor
from futures_actor.actors.routing import ConflatedPrices, MarketSubscribers, ReportingRiskChannel, open_tap
from futures_actor.actors.scheduler import Job, ScheduledTick, Scheduler
from futures_actor.actors.shadow_book import ShadowBook
from futures_actor.actors.symbol_pool import SymbolActors
from futures_actor.actors.telegram import CommandHandlers, TelegramCommands
from futures_actor.actors.universe import UniverseRefresher
from futures_actor.core.lifecycle import Phase
from futures_actor.core.risk_state import closed_pnl_from_records
from futures_actor.core.summary import REPLAY_MODE
from futures_actor.core.types import Candle
from futures_actor.logs import get_logger
from futures_actor.system_parts import SystemParts

__all__ = ["System", "run_system"]

HEALTH_INBOX_SIZE = 1024
EXECUTION_INBOX_SIZE = 256
REPORTER_INBOX_SIZE = 64
SCHEDULER_TICK_INBOX_SIZE = 16
# Replay (performance): the Scheduler re-reads the (simulated, never jumping) wall clock only when a
# slot is due.
REPLAY_SCHEDULER_MAX_SLEEP_SECONDS = 86400.0
_ENTRY_PHASES = frozenset({Phase.PENDING_ENTRY, Phase.ENTRY_WORKING, Phase.ENTRY_CANCELING})

log = get_logger("app")


class System:
    """The running actor system: its channels and actors, and the orderly stop."""

    def __init__(self, parts: SystemParts) -> None:
        self.parts = parts
        cfg = parts.cfg
        self.metrics = Metrics()
        self.router = parts.router if parts.router is not None else MarketRouter()
        self._health_send, self._health_recv = trio.open_memory_channel[HealthMsg](HEALTH_INBOX_SIZE)
        self._exec_send, self._exec_recv = trio.open_memory_channel[ExecutionInbox](EXECUTION_INBOX_SIZE)
        self.exec_prices = ConflatedPrices()
        self._risk_send, self._risk_recv = open_risk_inbox()
        self._report_send, self._report_recv = trio.open_memory_channel[ReporterMsg](REPORTER_INBOX_SIZE)
        self.faults = FaultReporter(
            health=self._health_send,
            reporter=self._report_send,
            client_counts_errors=parts.client_counts_errors,
        )
        self.report_fault = self.faults.report_fault
        self.report_exchange_error = self.faults.report_exchange_error
        self.report_data = self.faults.report_data
        self.root = RootSupervisor(
            shutdown_timeout=cfg.shutdown.timeout_seconds,
            signals=parts.signals,
            report_fault=self.report_fault,
        )
        self.stop_requested = self.root.stop_requested
        self.stopped = self.root.stopped
        self.safe_mode_entered = self.root.safe_mode_entered
        self.symbols = SymbolActors(
            cfg=cfg,
            router=self.router,
            rng=parts.rng,
            risk=self._risk_send,
            execution=self._exec_send,
            history=parts.history,
            on_fault=self.report_fault,
        )
        for symbol in parts.symbols:
            self.symbols.add_inbox(symbol)
        self.supervisor = self.symbols.supervisor
        self.shadow = ShadowBook.open(
            cfg=cfg,
            rules=parts.rules,
            wall_clock=parts.wall_clock,
            state_dir=parts.state_dir,
            log_dir=parts.log_dir,
            replay=parts.replay,
            risk_send=self._risk_send,
        )
        self.tracker = rebuild_tracker(
            parts.journal.records(), self.shadow.journal.records(), cfg=cfg.performance
        )
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
            shadow_send=self.shadow.inbox_send,
            reference_symbol=parts.reference_symbol,
            sync_with_execution=True,
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
            risk_send=ReportingRiskChannel(self._risk_send, self._report_send),
            on_alert=self.faults.execution_alert,
            symbol_sends=self.symbols.sends,
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
            on_safe_mode=self.root.safe_mode_changed,
        )
        self.kill_switch = OperatorKillSwitch(
            state_dir=parts.state_dir,
            poll_seconds=cfg.health.heartbeat_interval_seconds,
            risk=self._risk_send,
            execution=self._exec_send,
            reporter=self._report_send,
            health=self._health_send,
        )
        self.account = ReportAccount(risk=self.risk, equity_curve=parts.equity_curve)
        self.reporter = Reporter(
            mode=self.run_mode,
            log_dir=parts.log_dir,
            load_records=lambda day: list(parts.journal.records()),
            account=self.account.snapshot,
            telegram=parts.telegram,
            # A replay reports only the days it covered (from its first candle's day on).
            first_day=utc_day(parts.wall_clock.now_ms()) if parts.replay else None,
        )
        self.universe = UniverseRefresher(
            refresh=parts.refresh_universe,
            symbols=parts.symbols,
            # Reads Execution's state directly (a request/reply message is the target).
            managed_symbols=lambda: sorted({lc.symbol for lc in self.execution.open_trades()}),
            actors=self.symbols,
            paper=parts.paper,
            shadow=self.shadow,
            execution=self._exec_send,
            risk=self._risk_send,
            health=self._health_send,
            set_market_symbols=parts.set_market_symbols,
            watch_streams=not parts.replay,
            on_fault=self.report_fault,
        )
        papers = [p for p in (parts.paper, self.shadow.paper) if p is not None]
        self.market_subscribers = MarketSubscribers(
            risk=self._risk_send,
            trend_tf=cfg.timeframes.trend_tf,
            execution_prices=self.exec_prices,
            paper=parts.paper,
            replay_papers=papers if parts.replay else None,
        )

    # ------------------------------------------------------------------ what others call

    @property
    def run_mode(self) -> str:
        """The mode the operator reads (reports, events): REPLAY for a replay, else `parts.mode`. Trade
        records keep `parts.mode` (the log schema's PAPER_LIVE for a replay, which trades on paper)."""
        return REPLAY_MODE if self.parts.replay else self.parts.mode

    @property
    def started(self) -> bool:
        return self.root.started

    @property
    def exit_code(self) -> int:
        return self.root.exit_code

    @property
    def stop_reason(self) -> str | None:
        """Why the system stopped on its own (a fault that requires it), for the operator; None if asked."""
        return self.root.stop_reason

    @property
    def kill_engaged(self) -> bool:
        return self.kill_switch.engaged

    async def engage_kill(self, reason: str) -> None:
        await self.kill_switch.engage(reason)

    async def resume(self, reason: str) -> None:
        await self.kill_switch.resume(reason)

    @property
    def active_symbols(self) -> set[str]:
        return self.universe.active_symbols

    def feed_path(self, symbol: str, candle: Candle, interval_ms: int) -> None:
        """Replay: the candle about to form becomes the path of every paper exchange of the system
        (the bot's and the shadow book's)."""
        if self.parts.paper is not None:
            self.parts.paper.on_path(symbol, candle, interval_ms)
        self.shadow.on_path(symbol, candle, interval_ms)

    def _telegram_handlers(self) -> CommandHandlers:
        """Telegram's /status, /positions, /daily, /profit, /kill, /resume, answered from this system."""
        return operator_commands(
            mode=self.parts.mode,
            health=self.health,
            metrics=self.metrics,
            kill_switch=self.kill_switch,
            open_trades=self.execution.open_trades,
            log_dir=self.parts.log_dir,
            trade_records=self.parts.journal.records,
        )

    def http_app(self) -> HealthHttpApp:
        """The request logic of /health, /metrics, /kill and /resume for this system."""
        return HealthHttpApp(
            snapshot=self.health.snapshot,
            metrics=self.metrics,
            on_kill=self.kill_switch.operator_kill,
            on_resume=self.kill_switch.operator_resume,
            control=ControlPolicy(token=self.parts.control_token, bind_host=self.parts.cfg.health.http_host),
            kill_engaged=lambda: self.kill_switch.engaged,
        )

    async def _publish_api_weight(self, used: Callable[[], int]) -> None:
        """The /metrics gauge of the request weight used this minute."""
        while True:
            self.metrics.set(API_WEIGHT_USED, float(used()))
            await trio.sleep(self.parts.cfg.health.heartbeat_interval_seconds)

    # ------------------------------------------------------------------ run and stop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the actors in dependency order, run until a stop request, then stop in order."""
        await self.root.run(
            start=self._start_actors,
            orderly_stop=self._orderly_stop,
            # Normally closed by the shadow book's task; here if `run` ended before it started.
            cleanup=self.shadow.close,
            task_status=task_status,
        )

    async def _start_actors(self, root: trio.Nursery, task_status: trio.TaskStatus[None]) -> None:
        """Start every actor in dependency order; `started` is set at the end."""
        parts = self.parts
        cfg = parts.cfg
        await root.start(parts.gateway.run)
        await root.start(self.root.run_critical, "execution", self.execution.run, self._exec_recv)
        await root.start(self.root.run_critical, "portfolio_risk", self.risk.run, self._risk_recv)
        await root.start(self.health.run, self._health_recv)
        await root.start(self.reporter.run, self._report_recv)
        self.market_subscribers.start(self.router, root, self._exec_send)
        _, shadow_recv = open_tap(self.router)
        await root.start(self.shadow.run, shadow_recv, list(parts.symbols))
        # Market data is built first (symbol actors' history loader may use its REST client)
        # and started after the symbols, whose inboxes its start-up backfill fills.
        market_run = parts.market(self)
        await root.start(self.supervisor.run)
        for symbol in parts.symbols:
            await self.symbols.start(symbol)
        await root.start(market_run)
        await self.universe.announce(parts.symbols)
        tick_send, tick_recv = trio.open_memory_channel[ScheduledTick](SCHEDULER_TICK_INBOX_SIZE)
        subscribers: dict[Job, list[trio.MemorySendChannel[ScheduledTick]]] = {
            Job.DAILY_REPORT: [self._report_send]
        }
        if parts.refresh_universe is not None:
            subscribers[Job.UNIVERSE_REFRESH] = [tick_send]
            root.start_soon(self.universe.run, tick_recv)
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
            root.start_soon(self.kill_switch.watch_file)
        if parts.api_weight is not None:
            root.start_soon(self._publish_api_weight, parts.api_weight)
        self.root.started = True
        log.info("system_started", mode=self.run_mode, symbols=list(parts.symbols))
        task_status.started()

    async def _orderly_stop(self) -> None:
        await self.root.orderly_stop(
            intake=(self._risk_send, self._exec_send),
            health=self._health_send,
            # Reads Execution's state directly (an event Execution sets is the target).
            entries_working=lambda: any(lc.phase in _ENTRY_PHASES for lc in self.execution.open_trades()),
        )


async def run_system(parts: SystemParts) -> System:
    """Run a whole system until it stops; returns it (exit code, actors) for inspection."""
    system = System(parts)
    await system.run()
    return system

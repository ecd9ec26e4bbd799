"""The replay runtime: the actor machines on a discrete-event loop, fed by recorded klines (issue 12).

`ReplaySystem` is what `app.System` is to a replay under trio's mock clock, without trio: the same
machines (`SymbolMachine` per symbol, `RiskMachine`, `ExecutionMachine` for the bot's book and for the
shadow book), the same paper matching engine, the same trade journal, daily reports and equity curve,
wired the same way — but every message is a call on an `EventLoop` instead of a channel hop and a task
switch, and the paper exchanges are called directly. Given the same recorded input it writes the same
trades.jsonl as the trio runtime (`tests/runtime/test_replay_parity.py` checks it byte for byte).

The wiring (the trio runtime's, `app.System` in replay mode):

- feed step at each 5m close T: the path of the candle starting at T to both paper venues; 1h and 5m
  `CandleClosed` and funding `MarkUpdated` to the symbol's cell; from the market tap: 1h closes to
  risk, funding marks to both paper accounts (`on_funding`) and to execution (its mark price), and
  the shadow book's tap (marks to the shadow execution, 5m closes to the shadow trailer, whose stop
  amendments go to the shadow execution);
- symbol → risk: `SymbolReport` (a verdict goes back to the symbol); symbol → execution: `AmendStop`;
- risk → execution: `SubmitPlan`, `RetryDecided`; risk → shadow execution: shadow plans and retries;
- execution → risk (and a copy to the reporter's alerts): fills, closes, account, funding, retries;
  execution → symbol: `PositionUpdated`; the paper venue → execution: the gateway events;
- shadow execution → risk: `ShadowTradeClosed` and shadow retries only; → the shadow trailer: positions;
- faults → health (`HealthMonitor`: safe mode on and off → risk and the reporter);
- the daily report at each `notifications.daily_report_time_utc`; equity.csv rows every
  `report.equity_sample_minutes` and `CLOSE_SAMPLE_DELAY_SECONDS` after each trade record.

The end, as the trio runtime's: `REPLAY_SETTLE_SECONDS` after the last step, `StopIntake` to risk and
execution (REDUCING) and wait, polling every `SHUTDOWN_POLL_SECONDS` for at most
`shutdown.timeout_seconds`, until no trade has an entry order working; then the paper accounts are
flushed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec

from futures_actor.actors.messages import (
    BookUpdated,
    CandleClosed,
    EntryFilled,
    KillSwitch,
    MarkUpdated,
    PositionUpdated,
    SafeModeChanged,
    StopIntake,
    TradeClosed,
)
from futures_actor.actors.replay_feed import PathStep, ReplayFeed
from futures_actor.actors.report_account import ReportAccount, rebuild_tracker
from futures_actor.actors.reporter import Alert, Reporter
from futures_actor.actors.scheduler import Job, ScheduledTick, slots_from_config
from futures_actor.actors.shadow_trailer import ShadowTrailer
from futures_actor.binance.paper import PaperExchange
from futures_actor.core import lifecycle as lcm
from futures_actor.core.config import BotConfig
from futures_actor.core.health import FaultKind, HealthMonitor, SafeModeTransition
from futures_actor.core.risk_state import RiskState, closed_pnl_from_records
from futures_actor.core.types import SymbolRules
from futures_actor.logs import get_logger
from futures_actor.machines.execution import ExecutionMachine
from futures_actor.machines.risk import RiskMachine, RiskSnapshot
from futures_actor.machines.symbol import SymbolMachine
from futures_actor.runtime.actor_cells import ExecutionCell, RiskCell, ShadowOutlet
from futures_actor.runtime.cells import FeedCell, SymbolCell
from futures_actor.runtime.loop import EventLoop
from futures_actor.runtime.venue import PaperVenue
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore
from futures_actor.tearsheet.equity import EquityCsvWriter, EquitySampler

__all__ = ["LoopClock", "ReplayParts", "ReplaySystem"]

_MS_PER_S: Final = 1000
_MS_PER_DAY: Final = 86_400_000
_ENTRY_PHASES: Final = frozenset(
    {lcm.Phase.PENDING_ENTRY, lcm.Phase.ENTRY_WORKING, lcm.Phase.ENTRY_CANCELING}
)

log = get_logger("app")


class LoopClock:
    """The replay's wall clock (a `WallClock`): the event loop's time once the system runs, its epoch
    before (logs, the journal and the paper exchanges read it)."""

    def __init__(self, epoch_ms: int) -> None:
        self.epoch_ms = epoch_ms
        self.loop: EventLoop | None = None

    def now_ms(self) -> int:
        return self.epoch_ms if self.loop is None else self.loop.now_ms


@dataclass
class ReplayParts:
    """What `ReplaySystem` runs on, built by the replay runner (or a test)."""

    cfg: BotConfig
    clock: LoopClock
    feed: ReplayFeed
    paper: PaperExchange
    store: StateStore
    journal: TradeJournal
    shadow_paper: PaperExchange
    shadow_store: StateStore
    shadow_journal: TradeJournal
    rules: dict[str, SymbolRules]
    symbols: Sequence[str]
    reference_symbol: str
    log_dir: Path
    run_mode: str
    settle_seconds: float
    shutdown_poll_seconds: float
    sampler: EquitySampler | None = None
    equity_curve: EquityCsvWriter | None = None
    # Replay: each candle's path also marks the replay's equity (`ReplayEquity.on_candle`).
    on_path: Callable[[PathStep], None] | None = None


class _RiskView:
    """The report's view of the risk machine (`actors.report_account.RiskView`) at the loop's time."""

    def __init__(self, machine: RiskMachine, loop: EventLoop) -> None:
        self._machine = machine
        self._loop = loop

    @property
    def risk_state(self) -> RiskState | None:
        return self._machine.risk_state

    def snapshot(self) -> RiskSnapshot:
        return self._machine.snapshot(now_ms=self._loop.now_ms)

    def ineligible_strategies(self) -> dict[str, int]:
        return self._machine.ineligible_strategies()

    def performance_blocked_strategies(self) -> dict[str, int]:
        return self._machine.performance_blocked_strategies()


class _Tick(msgspec.Struct, frozen=True):
    kind: str


class ReplaySystem:
    """The replay on an `EventLoop` (see the module docstring). Build, then `run()` once."""

    def __init__(self, parts: ReplayParts) -> None:
        self.parts = parts
        cfg = parts.cfg
        feed = parts.feed
        feed.load()
        self.loop = EventLoop(start_ms=feed.epoch_ms)
        parts.clock.loop = self.loop
        self.exit_code = 0
        self.faults: dict[str, int] = {}
        self._stopping_since: int | None = None
        self._stop_requested = False
        self._sample_tick_at: int | None = None  # the time of the sampler tick on the loop
        self._log = log
        # Health: the safe-mode state machine on faults (no stream is watched in a replay).
        self._health = HealthMonitor(cfg.health)
        self._beat_ms = round(cfg.health.heartbeat_interval_seconds * _MS_PER_S)
        # The reporter: alerts (log lines) and the daily reports.
        self.reporter = Reporter(
            mode=parts.run_mode,
            log_dir=parts.log_dir,
            load_records=lambda _day: list(parts.journal.records()),
            account=lambda day: self._report_account.snapshot(day),
            first_day=datetime.fromtimestamp(feed.epoch_ms / _MS_PER_S, tz=UTC).date(),
        )
        records = list(parts.journal.records())
        tracker = rebuild_tracker(records, parts.shadow_journal.records(), cfg=cfg.performance)
        self.risk = RiskMachine(
            cfg=cfg,
            mode="PAPER_LIVE",
            symbols=parts.symbols,
            rules_by_symbol=parts.rules,
            tracker=tracker,
            closed_pnl=closed_pnl_from_records(records),
            reference_symbol=parts.reference_symbol,
            has_shadow=True,
            persists=False,
            sync_with_execution=True,
        )
        self._report_account = ReportAccount(
            risk=_RiskView(self.risk, self.loop), equity_curve=parts.equity_curve
        )
        self.execution = ExecutionMachine(cfg=cfg, mode="PAPER_LIVE", rules_by_symbol=parts.rules)
        self.shadow_execution = ExecutionMachine(cfg=cfg, mode="PAPER_LIVE", rules_by_symbol=parts.rules)
        self.trailer = ShadowTrailer(interval=cfg.timeframes.signal_tf)
        # Cells (recipients are bound after construction: the graph has cycles).
        self._reporter_cell = _ReporterCell(self.reporter)
        self._trailer_cell = _TrailerCell(self.trailer)
        self.symbol_cells: dict[str, SymbolCell] = {}
        self._exec_cell = ExecutionCell(
            machine=self.execution,
            venue=PaperVenue(parts.paper, name="paper", events_to=None),
            store=parts.store,
            journal=parts.journal,
            risk=_Later(),
            symbols=self.symbol_cells.get,
            log=get_logger("execution"),
            on_fault=self.report_fault,
            on_alert=self._alert,
            also_risk=self._reporter_cell,
        )
        self._shadow_cell = ExecutionCell(
            machine=self.shadow_execution,
            venue=PaperVenue(parts.shadow_paper, name="shadow", events_to=None),
            store=parts.shadow_store,
            journal=parts.shadow_journal,
            risk=_Later(),
            symbols=lambda _symbol: self._trailer_cell,
            log=get_logger("shadow_execution"),
        )
        self._risk_cell = RiskCell(
            machine=self.risk,
            execution=self._exec_cell,
            shadow=self._shadow_cell,
            log=get_logger("portfolio_risk"),
        )
        self._exec_cell.risk = self._risk_cell  # the wiring closes its cycles
        self._shadow_cell.risk = ShadowOutlet(self._risk_cell, log)
        self._exec_cell.venue.events_to = self._exec_cell
        self._shadow_cell.venue.events_to = self._shadow_cell
        symbol_log = get_logger("symbol")
        for symbol in parts.symbols:
            self.symbol_cells[symbol] = SymbolCell(
                symbol=symbol,
                factory=_symbol_factory(symbol, cfg),
                risk=self._risk_cell,
                execution=self._exec_cell,
                log=symbol_log.bind(symbol=symbol),
                on_fault=self.report_fault,
            )
        self._feed_cell = FeedCell(
            feed,
            symbols=dict(self.symbol_cells),
            on_path=self._on_path,
            taps=(self._actor_tap, self._shadow_tap),
            on_done=self._feed_done,
            should_stop=lambda: self._stop_requested,
        )
        self._ticks = _TickCell(self)
        self._trend_tf = cfg.timeframes.trend_tf
        self._signal_tf = cfg.timeframes.signal_tf
        self._daily = slots_from_config(cfg)[Job.DAILY_REPORT]
        self._last_daily = self._daily.latest_at_or_before(feed.epoch_ms)

    # ------------------------------------------------------------------------------------------ views

    def open_trades(self) -> list[lcm.TradeLifecycle]:
        return self.execution.open_trades()

    # ------------------------------------------------------------------------------------------ running

    def run(self) -> int:
        """Start the actors in the trio runtime's order, play the feed, stop in order. Returns the exit code."""
        loop = self.loop
        self._exec_cell.start(loop)
        self._risk_cell.start(loop)
        self._shadow_cell.start(loop)
        log.info("system_started", mode=self.parts.run_mode, symbols=list(self.parts.symbols))
        if self.parts.sampler is not None:
            self.parts.sampler.start()
            self._arm_sampler(loop)
        loop.post_at(self._daily.next_after(self._last_daily), self._ticks, _Tick("daily"))
        loop.post_at(loop.now_ms + self._beat_ms, self._ticks, _Tick("health"))
        self._feed_cell.start(loop)
        loop.run()
        self.parts.paper.flush()
        self.parts.shadow_paper.flush()
        log.warning("shutdown_done", exit_code=self.exit_code)
        return self.exit_code

    def request_stop(self) -> None:
        """Stop in order as soon as possible (from any thread: a signal handled by the trio runner).

        The feed plays no further step; the orderly stop follows at once (no settling time)."""
        self._stop_requested = True

    def _on_path(self, step: PathStep) -> None:
        loop = self.loop
        for venue in (self._exec_cell.venue, self._shadow_cell.venue):
            venue.paper.on_path(step.symbol, step.candle, step.interval_ms)
            venue.settle(loop)
        if self.parts.on_path is not None:
            self.parts.on_path(step)

    def _actor_tap(self, msg: CandleClosed | MarkUpdated, loop: EventLoop) -> None:
        """1h closes to risk; recorded funding to both paper accounts and the mark to execution."""
        if isinstance(msg, CandleClosed):
            if msg.interval == self._trend_tf:
                loop.send(self._risk_cell, msg)
            return
        for venue in (self._exec_cell.venue, self._shadow_cell.venue):
            try:
                venue.paper.on_funding(msg.symbol, msg.funding_rate, msg.ts_ms)
            except Exception as exc:
                log.error("paper_funding_input_rejected", symbol=msg.symbol, error=str(exc))
            venue.settle(loop)
        loop.send(self._exec_cell, msg)

    def _shadow_tap(self, msg: CandleClosed | MarkUpdated, loop: EventLoop) -> None:
        """The shadow execution's prices; 5m closes to the shadow trailer (its amendments follow)."""
        if isinstance(msg, MarkUpdated | BookUpdated):
            loop.send(self._shadow_cell, msg)
        else:
            for amend in self.trailer.on_candle(msg):
                loop.send(self._shadow_cell, amend)

    def _feed_done(self, loop: EventLoop) -> None:
        settle_s = 0.0 if self._stop_requested else self.parts.settle_seconds
        at = loop.now_ms + round(settle_s * _MS_PER_S)
        loop.post_at(at, self._ticks, _Tick("stop"))

    def _stop(self, loop: EventLoop) -> None:
        """The orderly stop: REDUCING, then wait until no entry order works (bounded)."""
        timeout = self.parts.cfg.shutdown.timeout_seconds
        log.warning("shutdown_started", timeout_seconds=timeout)
        self._stopping_since = loop.now_ms
        loop.send(self._risk_cell, StopIntake())
        loop.send(self._exec_cell, StopIntake())
        loop.send(self._ticks, _Tick("stop_check"))

    def _stop_check(self, loop: EventLoop) -> None:
        assert self._stopping_since is not None
        if not any(lc.phase in _ENTRY_PHASES for lc in self.execution.open_trades()):
            loop.stop()
            return
        timeout_ms = round(self.parts.cfg.shutdown.timeout_seconds * _MS_PER_S)
        if loop.now_ms - self._stopping_since >= timeout_ms:
            log.error(
                "shutdown_timeout", phase="cancel working entries", timeout_seconds=timeout_ms / _MS_PER_S
            )
            self.exit_code = 1
            loop.stop()
            return
        loop.post_at(
            loop.now_ms + round(self.parts.shutdown_poll_seconds * _MS_PER_S),
            self._ticks,
            _Tick("stop_check"),
        )

    def _daily_report(self, loop: EventLoop) -> None:
        slot = self._daily.latest_at_or_before(loop.now_ms)
        missed = (slot - self._last_daily) // self._daily.period_ms - 1
        self._last_daily = slot
        self.reporter.handle(
            ScheduledTick(job=Job.DAILY_REPORT, slot_ms=slot, fired_ms=loop.now_ms, missed=missed)
        )
        loop.post_at(self._daily.next_after(slot), self._ticks, _Tick("daily"))

    def _arm_sampler(self, loop: EventLoop) -> None:
        """A tick when the sampler's next row is due (one per distinct time)."""
        sampler = self.parts.sampler
        due = None if sampler is None else sampler.next_due_ms()
        if due is not None and due != self._sample_tick_at:
            self._sample_tick_at = due
            loop.post_at(max(due, loop.now_ms), self._ticks, _Tick("sample"))

    def _sample(self, loop: EventLoop) -> None:
        sampler = self.parts.sampler
        if sampler is None:
            return
        if self._sample_tick_at == loop.now_ms:
            self._sample_tick_at = None
        sampler.write_due()
        self._arm_sampler(loop)

    def trade_recorded(self) -> None:
        """The journal wrote a trade record: the sampler's `close` row (see `EquitySampler`)."""
        if self.parts.sampler is not None:
            self.parts.sampler.trade_closed()
            self._arm_sampler(self.loop)

    # ------------------------------------------------------------------------------------------ health

    def report_fault(self, kind: str, symbol: str | None = None, detail: str = "") -> None:
        """A fault for health (the trio runtime's `System.report_fault`); never raises."""
        try:
            fault = FaultKind(kind)
        except ValueError:
            fault = FaultKind.UNEXPECTED_EXCEPTION
        self.faults[fault.value] = self.faults.get(fault.value, 0) + 1
        self._publish(self._health.record_fault(fault, self._health_now(), detail=detail))

    def _health_now(self) -> float:
        """Health's time line: seconds since the replay's epoch (the trio runtime's trio time)."""
        return (self.loop.now_ms - self.parts.feed.epoch_ms) / _MS_PER_S

    def _publish(self, transition: SafeModeTransition | None) -> None:
        """Safe mode entered or left: logged, and told to risk and the reporter."""
        if transition is None:
            return
        if transition.on:
            log.error("safe_mode_entered", reasons=list(transition.reasons))
        else:
            log.warning("safe_mode_exited", reasons_were=list(transition.reasons))
        change = SafeModeChanged(on=transition.on, reasons=transition.reasons)
        self.loop.send(self._risk_cell, change)
        self.loop.send(self._reporter_cell, change)

    def _alert(self, code: str, symbol: str, message: str) -> None:
        self.loop.send(self._reporter_cell, Alert(kind=code, text=message, level="warning", symbol=symbol))


class _TickCell:
    """The system's own timers: daily report, equity samples, health re-checks, the stop."""

    def __init__(self, system: ReplaySystem) -> None:
        self._system = system

    def deliver(self, message: object, loop: EventLoop) -> None:
        assert isinstance(message, _Tick)
        system = self._system
        match message.kind:
            case "daily":
                system._daily_report(loop)
            case "sample":
                system._sample(loop)
            case "health":
                system._publish(system._health.evaluate(system._health_now()))
                loop.post_at(loop.now_ms + system._beat_ms, self, message)
            case "stop":
                system._stop(loop)
            case "stop_check":
                system._stop_check(loop)
            case other:
                raise ValueError(f"replay tick: unknown kind {other!r}")


class _ReporterCell:
    """The reporter's inbox: alerts, safe mode, kill switch, position opened / closed."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter

    def deliver(self, message: object, loop: EventLoop) -> None:
        if isinstance(message, Alert | SafeModeChanged | KillSwitch | TradeClosed | EntryFilled):
            self._reporter.handle(message)


class _TrailerCell:
    """The shadow trailer: positions from the shadow execution."""

    def __init__(self, trailer: ShadowTrailer) -> None:
        self._trailer = trailer

    def deliver(self, message: object, loop: EventLoop) -> None:
        if isinstance(message, PositionUpdated):
            self._trailer.on_position(message)


class _Later:
    """A recipient bound after construction (the wiring has cycles)."""

    def deliver(self, message: object, loop: EventLoop) -> None:
        raise RuntimeError("replay wiring: a recipient was used before it was bound")


def _symbol_factory(symbol: str, cfg: BotConfig) -> Callable[[], SymbolMachine]:
    return lambda: SymbolMachine(symbol=symbol, cfg=cfg, has_history=False)

"""The PortfolioRisk actor: the single writer of risk state (BOT_SPEC §7, §8, §10, §12).

It owns the equity view (`AccountUpdated`), the portfolio (open positions and pending entries: its own
approvals as reservations, execution's `EntryFilled` / `EntryAbandoned` / `TradeClosed`, and the
reconciled picture of `PortfolioSynced` with adopted and foreign positions), the 1h closes per symbol
for the correlation filter, the `RiskState` calendar (daily / weekly stop, pause, reduced risk), the
performance tracker, the strategy-selection state, the safe-mode and kill flags and the trading state
(ACTIVE, or REDUCING after `StopIntake`). Every sizing and limit decision goes through `run`, one at
a time: that is what makes "max 2 positions" hold under concurrency.

Policy:
- Decision batching: `SymbolReport`s of one 5m candle open time are collected until every monitored
  symbol has reported, `risk.decision_batch_ms` of trio time has passed since the first one, or a
  report for a newer candle arrives. The batch is then decided in descending confidence order
  (the selector's confidence score; ties by symbol name), so arrival order does not matter. Per
  symbol: safety gates (shutdown, kill, safe mode), the selector picks among its signals, then
  `core.risk.evaluate`. An approval reserves its exposure (a pending entry) before the next symbol
  is evaluated, is sent to execution as `SubmitPlan`, and adopts the selector's new state.
- Verdicts: a report with a `reply` channel gets one `Verdict` by `send_nowait`. `BrokenResourceError`
  (the asker gave up) releases nothing: the plan was already submitted and execution owns it now.
  `WouldBlock` drops the verdict with a log. A report for an already decided candle gets `LATE`; a
  second report of a symbol in the same batch gets `DUPLICATE_CANDLE`. Nothing is retried.
- Every rejection is logged as `risk_rejected` (code and numbers), every approval as `risk_approved`.
- Weekly-stop pause: PAPER_LIVE rejects `WEEKLY_STOP` (logged with `state=PAUSED`). LIVE evaluates
  again for the shadow book and logs `shadow_entry`; with a `shadow_send` channel the approved plan is
  sent there as `SubmitPlan` (by `send_nowait`: a full or gone shadow book drops it with a log, it
  never blocks risk). A shadow plan is never reserved in the exposures. `ShadowTradeClosed` feeds the
  performance tracker only (never exposure, open risk or the daily / weekly PnL).
- The calendar rolls on the wall clock (UTC days, Monday weeks) at every decision and account update,
  with the last known equity as the start equity of the new period. Risk state and selection state
  are persisted to the `StateStore` after every change (and loaded from it at start when not given).
- Bad data (a malformed signal, an undecodable trade record) is logged and rejected or skipped,
  never a crash. Any other exception propagates: risk is a critical actor (orderly shutdown).
"""

from __future__ import annotations

import math
import sqlite3
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, Protocol

import msgspec
import trio

from futures_actor.actors.messages import (
    AccountUpdated,
    CandleClosed,
    EntryAbandoned,
    EntryFilled,
    FundingBooked,
    KillSwitch,
    PortfolioSynced,
    PositionUpdated,
    Resume,
    RetryDecided,
    RetryRequested,
    SafeModeChanged,
    ShadowTradeClosed,
    StopIntake,
    SubmitPlan,
    SymbolReport,
    TradeClosed,
    UniverseChanged,
    Verdict,
)
from futures_actor.actors.metrics import (
    DECISIONS,
    EQUITY,
    OPEN_RISK_PCT,
    OPEN_RISK_USD,
    REJECTIONS,
)
from futures_actor.core.clock import WallClock
from futures_actor.core.config import BotConfig
from futures_actor.core.correlation import CorrelationMatrix, HourlyCloses, lazy_correlation_matrix
from futures_actor.core.models import RiskRejection, Signal, TradePlan
from futures_actor.core.performance import (
    PerformanceTracker,
    TradeRecordError,
    closed_trade_from_record,
)
from futures_actor.core.risk import (
    CandleDecisionGuard,
    Exposure,
    PortfolioSnapshot,
    RiskCode,
    RiskContext,
    RiskInputError,
    evaluate,
    evaluate_retry,
    open_risk_usd,
)
from futures_actor.core.risk_state import (
    ClosedPnl,
    RiskState,
    RiskStateError,
    apply_weekly_stop,
    book_funding,
    book_trade_close,
    derive_risk_state,
    new_risk_state,
    roll,
)
from futures_actor.core.rounding import RoundingInputError
from futures_actor.core.selector import (
    LOCKOUT_BELOW_THRESHOLD,
    LOCKOUT_INELIGIBLE,
    LOCKOUT_LOW_SAMPLE,
    SelectionDecision,
    SelectionInputError,
    SelectionState,
    StrategySelector,
)
from futures_actor.core.strategies import STRATEGY_NAMES, build_strategies, strategy_allows_regime
from futures_actor.core.trailing import TrailingRule
from futures_actor.core.types import INTERVAL_MS, Regime, SymbolRules, TradingState
from futures_actor.logs import get_logger
from futures_actor.state.store import BlobKind, StateStore, StateStoreError

__all__ = [
    "DUPLICATE_CANDLE",
    "INPUT_ERROR",
    "LATE",
    "NO_ACCOUNT",
    "NO_SYMBOL_RULES",
    "NO_TRADE",
    "RISK_INBOX_SIZE",
    "RISK_STATE_NAME",
    "SELECTION_STATE_NAME",
    "SHUTTING_DOWN",
    "PortfolioRisk",
    "RiskInbox",
    "RiskSnapshot",
    "open_risk_inbox",
]

Mode = Literal["PAPER_LIVE", "LIVE"]

RISK_INBOX_SIZE: Final = 64
"""Reports from every symbol of one 5m close plus fills and account updates fit without blocking."""

# Reason codes of the actor's own rejections (the engine's are `core.risk.RiskCode`).
LATE: Final = "LATE"  # the report's candle was already decided
NOT_IN_UNIVERSE: Final = "NOT_IN_UNIVERSE"  # the symbol left the universe (still managed)
STALE_CANDLE: Final = "STALE_CANDLE"  # the report's candle is older than health.stale_data_seconds
SHUTTING_DOWN: Final = "SHUTTING_DOWN"  # trading state REDUCING: no new entries
NO_ACCOUNT: Final = "NO_ACCOUNT"  # no equity known yet (no AccountUpdated received)
NO_SYMBOL_RULES: Final = "NO_SYMBOL_RULES"  # no exchange filters for the symbol
NO_TRADE: Final = "NO_TRADE"  # the selector chose nothing (values carry its code)
INPUT_ERROR: Final = "INPUT_ERROR"  # malformed signal or report (a bug upstream)
DUPLICATE_CANDLE: Final = RiskCode.DUPLICATE_CANDLE.value

RISK_STATE_NAME: Final = "risk_state"
SELECTION_STATE_NAME: Final = "strategy_selection"

_MS_5M: Final = INTERVAL_MS["5m"]
_MS_PER_S: Final = 1000.0
# 1h closes kept beyond the lookback, so that symbols whose latest hour arrives a little later than
# another's still align on `corr_lookback_hours` common returns.
_HOURLY_SLACK: Final = 24
_SHADOW_ONLY: Final = "shadow_only"
_FOREIGN_KEY_PREFIX: Final = "foreign:"

RiskInbox = (
    SymbolReport
    | CandleClosed
    | EntryFilled
    | EntryAbandoned
    | PositionUpdated
    | TradeClosed
    | RetryRequested
    | FundingBooked
    | ShadowTradeClosed
    | AccountUpdated
    | PortfolioSynced
    | SafeModeChanged
    | KillSwitch
    | Resume
    | StopIntake
    | UniverseChanged
)
"""Everything the PortfolioRisk actor accepts."""


def open_risk_inbox() -> tuple[trio.MemorySendChannel[RiskInbox], trio.MemoryReceiveChannel[RiskInbox]]:
    """The bounded inbox of the PortfolioRisk actor (size `RISK_INBOX_SIZE`)."""
    return trio.open_memory_channel[RiskInbox](RISK_INBOX_SIZE)


class MetricsSink(Protocol):
    """What the actor needs of `actors.metrics.Metrics` (duck-typed)."""

    def set(self, name: str, value: float, **labels: str) -> None: ...

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None: ...


class RiskSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The actor's state for the health / metrics endpoint."""

    equity_usd: float | None
    available_balance_usd: float | None
    open_risk_usd: float
    open_risk_pct: float | None
    positions: int
    pending: int
    foreign: int
    safe_mode: bool
    kill_switch: bool
    trading_state: TradingState
    paused: bool
    reduced_risk: bool
    day_pnl_pct: float | None
    week_pnl_pct: float | None
    approvals: int
    rejections: dict[str, int]
    shadow_entries: int
    late_reports: int


class _Mailbox:
    """A never-blocking outbox of PortfolioRisk to one actor (execution, or the shadow book).

    Why: execution awaits its sends to risk (fills, closes, retry requests) while risk sends it plans
    and retry decisions. If both awaited, a full risk inbox and a full execution inbox (execution's
    inbox also carries book prices) would leave each actor waiting on the other for good: no stop
    amended, no fill booked. So risk's decision loop never waits on execution: `post` hands the message
    over at once when the target has room and nothing is queued before it, else queues it, unbounded
    by design (one entry per decision, so it grows only while execution is busy) and `deliver`, a
    task of its own, awaits the target. Order is kept; nothing is dropped.
    """

    __slots__ = ("_queued", "_recv", "_send", "_target")

    def __init__(self, target: trio.MemorySendChannel[Any]) -> None:
        self._target = target
        self._send, self._recv = trio.open_memory_channel[Any](math.inf)
        self._queued = 0

    @property
    def queued(self) -> int:
        return self._queued

    def post(self, msg: Any) -> None:
        if self._queued == 0:
            try:
                self._target.send_nowait(msg)
                return
            except trio.WouldBlock:
                pass
        self._queued += 1
        self._send.send_nowait(msg)

    def close(self) -> None:
        self._send.close()

    async def deliver(self) -> None:
        """Until closed and drained: await the target for each queued message, in order."""
        async with self._recv:
            async for msg in self._recv:
                try:
                    await self._target.send(msg)
                finally:
                    self._queued -= 1


class _Batch:
    """Reports of one 5m candle open time, waiting to be decided."""

    __slots__ = ("deadline", "open_time_ms", "reports")

    def __init__(self, open_time_ms: int, deadline: float) -> None:
        self.open_time_ms = open_time_ms
        self.deadline = deadline
        self.reports: dict[str, SymbolReport] = {}


class _Hourly:
    """Consecutive 1h closes of one symbol (a gap restarts the series: unknown beats wrong)."""

    __slots__ = ("closes", "last_open_ms")

    def __init__(self, maxlen: int) -> None:
        self.closes: deque[float] = deque(maxlen=maxlen)
        self.last_open_ms = -1


class PortfolioRisk:
    """Decides every candidate entry against the portfolio; the only writer of risk state."""

    def __init__(
        self,
        *,
        cfg: BotConfig,
        mode: Mode,
        execution_send: trio.MemorySendChannel[Any],
        symbols: Iterable[str],
        rules_by_symbol: Mapping[str, SymbolRules],
        wall_clock: WallClock,
        store: StateStore | None = None,
        tracker: PerformanceTracker | None = None,
        selection_state: SelectionState | None = None,
        risk_state: RiskState | None = None,
        metrics: MetricsSink | None = None,
        closed_pnl: Sequence[ClosedPnl] = (),
        shadow_send: trio.MemorySendChannel[Any] | None = None,
        reference_symbol: str = "",
    ) -> None:
        if mode not in ("PAPER_LIVE", "LIVE"):
            raise ValueError(f"mode: got {mode!r}, expected PAPER_LIVE or LIVE")
        self._cfg = cfg
        self._mode: Mode = mode
        self._to_execution = _Mailbox(execution_send)
        self._to_shadow = _Mailbox(shadow_send) if shadow_send is not None else None
        self._shadow_send = shadow_send
        self._symbols: tuple[str, ...] = tuple(symbols)
        self._monitored = frozenset(self._symbols)
        self._tradable = frozenset(self._symbols)
        self._rules: dict[str, SymbolRules] = dict(rules_by_symbol)
        self._clock = wall_clock
        self._closed_pnl = tuple(closed_pnl)
        self._signal_interval_ms = INTERVAL_MS[cfg.timeframes.signal_tf]
        self._store = store
        self._tracker = tracker if tracker is not None else PerformanceTracker(cfg=cfg.performance)
        self._selector = StrategySelector(cfg=cfg, mode=mode)
        self._selection = selection_state
        self._risk_state = risk_state
        self._metrics = metrics
        self._log = get_logger("portfolio_risk")
        # BOT_SPEC §8.5: beta to the monitored symbol of highest volume, as the universe selection
        # computed it (`core.universe`); the configured one wins; the first symbol only as a fallback.
        self._reference_symbol = (
            cfg.risk.beta_reference_symbol or reference_symbol or (self._symbols[0] if self._symbols else "")
        )
        self._strategies = {s.name: s for s in build_strategies(cfg)}
        self._trailing: dict[str, TrailingRule | None] = {
            s.name: s.trailing for s in self._strategies.values()
        }

        self._equity: float | None = None
        self._available: float | None = None
        self._wallet: float | None = None
        self._unrealized = 0.0
        self._exposures: dict[str, Exposure] = {}  # trade id (or foreign:<symbol>) -> exposure
        self._hourly: dict[str, _Hourly] = {}
        self._matrix: CorrelationMatrix | None = None
        self._matrix_dirty = True
        self._batches: dict[int, _Batch] = {}
        self._decided_upto: int | None = None
        self._guard = CandleDecisionGuard()
        self._safe_mode = False
        self._kill_switch = False
        self._trading_state = TradingState.ACTIVE
        self._saved_risk: RiskState | None = None
        self._saved_selection: SelectionState | None = None
        self._approvals = 0
        self._rejections: dict[str, int] = {}
        self._shadow_entries = 0
        self._last_shadowed: dict[str, int] = {}  # strategy -> wall ms of its last lock-out shadow plan
        self._late = 0

    # -- public views -----------------------------------------------------------------------------

    @property
    def risk_state(self) -> RiskState | None:
        return self._risk_state

    @property
    def selection_state(self) -> SelectionState | None:
        return self._selection

    @property
    def exposures(self) -> tuple[Exposure, ...]:
        return tuple(self._exposures.values())

    def snapshot(self) -> RiskSnapshot:
        """Equity, open risk, positions, flags and decision counts (for /health and /metrics)."""
        exposures = tuple(self._exposures.values())
        risk_usd = open_risk_usd(exposures, self._cfg)
        now = self._clock.now_ms()
        state = self._risk_state
        return RiskSnapshot(
            equity_usd=self._equity,
            available_balance_usd=self._available,
            open_risk_usd=risk_usd,
            open_risk_pct=risk_usd / self._equity if self._equity else None,
            positions=len({e.symbol for e in exposures if not e.pending}),
            pending=len({e.symbol for e in exposures if e.pending}),
            foreign=sum(1 for e in exposures if e.foreign),
            safe_mode=self._safe_mode,
            kill_switch=self._kill_switch,
            trading_state=self._trading_state,
            paused=state.paused(now) if state is not None else False,
            reduced_risk=state.reduced_risk(now) if state is not None else False,
            day_pnl_pct=state.day_pnl_pct() if state is not None else None,
            week_pnl_pct=state.week_pnl_pct() if state is not None else None,
            approvals=self._approvals,
            rejections=dict(self._rejections),
            shadow_entries=self._shadow_entries,
            late_reports=self._late,
        )

    # -- the loop -----------------------------------------------------------------------------------

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[RiskInbox],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the inbox until it is closed. Ready (started) once persisted state is loaded."""
        self._load_persisted()
        self._refresh_eligibility(self._clock.now_ms())  # a rebuilt record may lock a strategy out
        self._persist()
        task_status.started()
        self._log.info(
            "risk_started",
            mode=self._mode,
            symbols=list(self._symbols),
            beta_reference=self._reference_symbol,
            paused=self._risk_state is not None and self._risk_state.paused(self._clock.now_ms()),
        )
        async with trio.open_nursery() as nursery:
            # The outboxes' own tasks: the loop below never waits on execution (see `_Mailbox`).
            nursery.start_soon(self._to_execution.deliver)
            if self._to_shadow is not None:
                nursery.start_soon(self._shadow_deliver, self._to_shadow)
            try:
                while True:
                    msg: RiskInbox | None = None
                    with trio.move_on_at(self._next_deadline()):
                        try:
                            msg = await inbox.receive()
                        except trio.EndOfChannel:
                            break
                    if msg is not None:
                        await self._handle(msg)
                    await self._decide_ready()
                # Inbox closed: decide what is still waiting, then persist.
                await self._decide_ready(flush=True)
                self._persist()
            except BaseException:
                nursery.cancel_scope.cancel()  # a crash or cancellation never waits on a delivery
                raise
            finally:
                # Normal end: deliver what is queued, then stop.
                self._to_execution.close()
                if self._to_shadow is not None:
                    self._to_shadow.close()

    async def _shadow_deliver(self, mailbox: _Mailbox) -> None:
        """The shadow book is not critical: its being gone never stops the risk actor."""
        try:
            await mailbox.deliver()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._log.warning("shadow_answer_dropped", reason="shadow book stopped", queued=mailbox.queued)

    def _next_deadline(self) -> float:
        if not self._batches:
            return math.inf
        return min(b.deadline for b in self._batches.values())

    async def _handle(self, msg: RiskInbox) -> None:
        match msg:
            case SymbolReport():
                self._on_report(msg)
            case CandleClosed():
                self._on_candle(msg)
            case EntryFilled():
                self._on_entry_filled(msg)
            case EntryAbandoned():
                self._on_entry_abandoned(msg)
            case PositionUpdated():
                self._on_position_updated(msg)
            case TradeClosed():
                self._on_trade_closed(msg)
            case RetryRequested():
                await self._on_retry(msg)
            case FundingBooked():
                self._on_funding_booked(msg)
            case ShadowTradeClosed():
                self._on_shadow_trade_closed(msg)
            case AccountUpdated():
                self._on_account(msg)
            case PortfolioSynced():
                self._on_synced(msg)
            case SafeModeChanged():
                self._safe_mode = msg.on
                self._log.warning("risk_safe_mode", on=msg.on, reasons=list(msg.reasons))
            case KillSwitch():
                self._kill_switch = True
                self._log.warning("risk_kill_switch", on=True, reason=msg.reason)
            case Resume():
                self._kill_switch = False
                self._log.warning("risk_kill_switch", on=False, reason=msg.reason)
            case UniverseChanged(tradable=tradable, monitored=monitored, rules=rules, reference_symbol=ref):
                self._tradable = frozenset(tradable)
                self._monitored = frozenset(monitored)
                self._symbols = tuple(monitored)
                self._rules.update(rules)
                if ref and not self._cfg.risk.beta_reference_symbol and ref != self._reference_symbol:
                    self._reference_symbol = ref
                    self._matrix_dirty = True  # betas are measured against the new reference
                self._log.info(
                    "risk_universe_changed",
                    tradable=sorted(tradable),
                    monitored=sorted(monitored),
                    beta_reference=self._reference_symbol,
                )
            case StopIntake():
                self._trading_state = TradingState.REDUCING
                self._log.warning("risk_trading_state", state=self._trading_state.value)
            case _:
                self._log.error("risk_unknown_message", type=type(msg).__name__)
        self._publish_metrics()

    # -- reports and batching -------------------------------------------------------------------------

    def _on_report(self, report: SymbolReport) -> None:
        t = report.candle_open_time_ms
        age_ms = self._clock.now_ms() - (t + self._signal_interval_ms)
        if age_ms > self._cfg.health.stale_data_seconds * _MS_PER_S:
            # A report on an old candle (start-up backfill, a late catch-up) is never traded on.
            self._late += 1
            if report.signals:
                stale = RiskRejection(
                    code=STALE_CANDLE,
                    message="the report's candle closed longer ago than health.stale_data_seconds",
                    values={
                        "candle_open_time_ms": float(t),
                        "age_seconds": age_ms / _MS_PER_S,
                        "stale_data_seconds": self._cfg.health.stale_data_seconds,
                    },
                )
                self._reply(report, None, stale, explanation=stale.message)
                self._log_rejection(report, None, stale)
            return
        if self._decided_upto is not None and t <= self._decided_upto:
            self._late += 1
            late = RiskRejection(
                code=LATE,
                message="the candle of this report was already decided",
                values={"candle_open_time_ms": float(t), "decided_upto_ms": float(self._decided_upto)},
            )
            self._reply(report, None, late, explanation=late.message)
            self._log_rejection(report, None, late)
            return
        batch = self._batches.get(t)
        if batch is None:
            deadline = trio.current_time() + self._cfg.risk.decision_batch_ms / _MS_PER_S
            batch = self._batches[t] = _Batch(t, deadline)
        if report.symbol in batch.reports:
            rejection = RiskRejection(
                code=DUPLICATE_CANDLE,
                message="a second report of this symbol for the same candle",
                values={"candle_open_time_ms": float(t)},
            )
            self._reply(report, None, rejection, explanation=rejection.message)
            self._log_rejection(report, None, rejection)
            return
        batch.reports[report.symbol] = report

    async def _decide_ready(self, *, flush: bool = False) -> None:
        """Decide, oldest first, every batch that is complete, timed out or superseded by a newer one."""
        now = trio.current_time()
        while self._batches:
            oldest = min(self._batches)
            batch = self._batches[oldest]
            complete = self._monitored <= batch.reports.keys()
            superseded = len(self._batches) > 1
            if not (flush or complete or superseded or batch.deadline <= now):
                return
            del self._batches[oldest]
            if not complete:
                self._log.warning(
                    "risk_batch_incomplete",
                    candle_open_time_ms=oldest,
                    missing=sorted(self._monitored - batch.reports.keys()),
                )
            await self._decide_batch(batch)

    async def _decide_batch(self, batch: _Batch) -> None:
        t = batch.open_time_ms
        self._decided_upto = t if self._decided_upto is None else max(self._decided_upto, t)
        now_ms = self._clock.now_ms()
        self._roll(now_ms)
        decide_ms = t + _MS_5M  # the candle's close: the selector's UTC day
        ranked: list[tuple[float, str, SymbolReport]] = []
        for symbol, report in batch.reports.items():
            if not report.signals:
                if report.reply is not None:
                    self._reply(report, None, self._no_trade_rejection(None, "no candidate signal"))
                continue
            ranked.append((-self._preliminary_confidence(report, decide_ms), symbol, report))
        ranked.sort(key=lambda item: (item[0], item[1]))
        for _, _, report in ranked:
            await self._decide_one(report, now_ms=now_ms, decide_ms=decide_ms)
        self._persist()

    def _preliminary_confidence(self, report: SymbolReport, decide_ms: int) -> float:
        """The selector's confidence for `report` against the batch-start state (the ranking key)."""
        try:
            decision = self._selector.select(
                list(report.signals), tracker=self._tracker, state=self._selection_now(), now_ms=decide_ms
            )
        except SelectionInputError:
            return 0.0
        return decision.confidence_score if decision.confidence_score is not None else 0.0

    def _selection_now(self) -> SelectionState:
        return self._selection if self._selection is not None else SelectionState()

    async def _decide_one(self, report: SymbolReport, *, now_ms: int, decide_ms: int) -> None:
        symbol = report.symbol
        gate = self._gate(report)
        if gate is not None:
            self._finish_rejection(report, None, gate)
            return
        try:
            decision = self._selector.select(
                list(report.signals), tracker=self._tracker, state=self._selection_now(), now_ms=decide_ms
            )
        except SelectionInputError as exc:
            self._finish_rejection(report, None, _input_error(exc))
            return
        signal = decision.signal
        if decision.outcome == "NO_TRADE" or signal is None:
            self._shadow_locked_out(report, decision, now_ms=now_ms)
            self._log.info(
                "selection_no_trade",
                symbol=symbol,
                candle_open_time_ms=report.candle_open_time_ms,
                code=decision.code,
                explanation=decision.message,
            )
            self._finish_rejection(report, None, self._no_trade_rejection(decision, decision.message))
            return
        if signal.candle_open_time_ms != report.candle_open_time_ms or signal.symbol != symbol:
            rejection = RiskRejection(
                code=INPUT_ERROR,
                message="the signal does not belong to the report's symbol and candle",
                values={
                    "signal_symbol": signal.symbol,
                    "signal_candle_ms": float(signal.candle_open_time_ms),
                },
            )
            self._finish_rejection(report, decision, rejection)
            return
        result = self._evaluate(report, signal, decision, now_ms=now_ms, shadow=False)
        if isinstance(result, RiskRejection) and result.values.get(_SHADOW_ONLY) == 1.0:
            # LIVE weekly-stop pause: the selected signal takes the symbol's shadow slot this candle.
            shadow = self._evaluate(report, signal, decision, now_ms=now_ms, shadow=True)
            if isinstance(shadow, TradePlan):
                self._shadow_entries += 1
                self._log.info(
                    "shadow_entry",
                    why="WEEKLY_STOP",
                    symbol=symbol,
                    trade_id=shadow.trade_id,
                    strategy=shadow.strategy,
                    side=shadow.side.value,
                    entry_price=str(shadow.entry_price),
                    quantity=str(shadow.quantity),
                    stop_price=str(shadow.stop_price),
                    risk_usd=shadow.risk_usd,
                    sent=self._send_shadow(report, shadow),
                )
            else:
                self._log.info("shadow_rejected", symbol=symbol, code=shadow.code, reason=shadow.message)
        else:
            self._shadow_locked_out(report, decision, now_ms=now_ms)
        if isinstance(result, RiskRejection):
            self._finish_rejection(report, decision, result)
            return
        await self._approve(report, decision, result)

    def _shadow_locked_out(self, report: SymbolReport, decision: SelectionDecision, *, now_ms: int) -> None:
        """BOT_SPEC §7 [resolved]: a signal of a strategy that its own record keeps from trading live
        trades on the shadow paper book, in every mode, so that its window keeps learning and it can
        come back (`StrategySelector.locked_out`):

        - INELIGIBLE: expectancy ≤ 0 on enough trades (the spec's own case).
        - BELOW_THRESHOLD: eligible on enough trades, but the strategy's confidence (score =
          expectancy_R − dd_penalty × max_dd) keeps the decision below `regime.confidence_threshold`
          while the regime's confidence meets it. The same lock-out: no live trade, so the window that
          blocks it never changes. Issue 10 #6.
        - LOW_SAMPLE when the mode never explores (LIVE, or `paper_exploration` off). Decision: these
          go to the shadow book too. LIVE can never trade them, so without it their record could never
          be built and a fresh LIVE install would never trade at all. The shadow book is
          capital-neutral (never reserved, never in the exposure, the stop calendar or equity), and
          a shadow record only makes the strategy a candidate: it must still reach
          `min_trades_before_confidence`, positive expectancy and the threshold before any live order.

        Only while the regime's own confidence meets the threshold (the regime says trade), and one
        plan per symbol and candle (the shadow book holds one position per symbol): the strategy
        shadowed least recently first, then the order above, then the strategy's priority. Sized like
        a live entry at the live equity, against no exposure and not the live margin (the shadow book is
        not capital: a live position holding the margin refused 339 shadow plans in the full replay);
        never reserved, never in the calendar."""
        if self._shadow_send is None:
            return
        locked = self._selector.locked_out(decision)
        if not locked:
            return
        signals = {sig.strategy: sig for sig in report.signals}
        order = (LOCKOUT_INELIGIBLE, LOCKOUT_BELOW_THRESHOLD, LOCKOUT_LOW_SAMPLE)
        pick = min(
            (lo for lo in locked if lo.candidate.strategy in signals),
            key=lambda lo: (
                self._last_shadowed.get(lo.candidate.strategy, -1),
                order.index(lo.why) if lo.why in order else len(order),
                _strategy_priority(lo.candidate.strategy),
            ),
            default=None,
        )
        if pick is None:
            return
        self._refresh_eligibility(now_ms)
        signal = signals[pick.candidate.strategy]
        result = self._evaluate(report, signal, decision, now_ms=now_ms, shadow=True, shadow_account=True)
        if isinstance(result, RiskRejection):
            self._log.info(
                "shadow_rejected",
                why=pick.why,
                symbol=report.symbol,
                strategy=signal.strategy,
                code=result.code,
                reason=result.message,
            )
            return
        plan = msgspec.structs.replace(result, exploration=False, confidence_score=signal.regime_confidence)
        self._shadow_entries += 1
        self._last_shadowed[plan.strategy] = now_ms
        self._log.info(
            "shadow_entry",
            why=pick.why,
            symbol=report.symbol,
            trade_id=plan.trade_id,
            strategy=plan.strategy,
            side=plan.side.value,
            entry_price=str(plan.entry_price),
            quantity=str(plan.quantity),
            stop_price=str(plan.stop_price),
            risk_usd=plan.risk_usd,
            strategy_confidence=pick.candidate.strategy_confidence,
            expectancy_r=pick.candidate.expectancy_r,
            window_n=pick.candidate.n,
            sent=self._send_shadow(report, plan),
        )

    def ineligible_strategies(self) -> dict[str, int]:
        """Strategies ineligible on their global window (expectancy ≤ 0 on enough trades): since when (ms)."""
        return dict(self._selection_now().ineligible_since)

    def performance_blocked_strategies(self) -> dict[str, int]:
        """Strategies eligible on enough trades whose own confidence is below the threshold in a regime
        they are configured for (they trade on the shadow book there): since when (ms)."""
        return dict(self._selection_now().blocked_since)

    def _refresh_eligibility(self, now_ms: int) -> None:
        """Track which strategies turned ineligible or performance-blocked (or came back) and when;
        logged on every change (`strategy_ineligible` / `strategy_eligible_again`, `strategy_blocked` /
        `strategy_unblocked`)."""
        perf = self._cfg.performance
        threshold = self._cfg.regime.confidence_threshold
        state = self._selection_now()
        since = dict(state.ineligible_since)
        blocked = dict(state.blocked_since)
        for name in self._trailing:
            stats = self._tracker.stats(name)
            ineligible = (
                perf.disable_if_expectancy_negative
                and stats.n >= perf.min_trades_before_confidence
                and stats.expectancy_r <= 0
            )
            if ineligible and name not in since:
                since[name] = now_ms
                self._log.warning(
                    "strategy_ineligible", strategy=name, n=stats.n, expectancy_r=stats.expectancy_r
                )
            elif not ineligible and name in since:
                started = since.pop(name)
                self._log.warning(
                    "strategy_eligible_again",
                    strategy=name,
                    n=stats.n,
                    expectancy_r=stats.expectancy_r,
                    ineligible_since_ms=started,
                )
            standings = [
                self._tracker.standing(name, regime)
                for regime in Regime
                if strategy_allows_regime(self._cfg, name, regime)
            ]
            low = [st for st in standings if st.eligible and not st.low_sample and st.confidence < threshold]
            is_blocked = not ineligible and bool(low)
            if is_blocked and name not in blocked:
                blocked[name] = now_ms
                self._log.warning(
                    "strategy_blocked",
                    strategy=name,
                    regimes=[st.regime.value for st in low],
                    confidence=min(st.confidence for st in low),
                    threshold=threshold,
                    n=low[0].stats.n,
                    expectancy_r=low[0].stats.expectancy_r,
                    max_drawdown_pct=low[0].stats.max_drawdown_pct,
                )
            elif not is_blocked and name in blocked:
                started = blocked.pop(name)
                self._log.warning(
                    "strategy_unblocked",
                    strategy=name,
                    ineligible=ineligible,
                    blocked_since_ms=started,
                    confidence=max((st.confidence for st in standings), default=0.0),
                    threshold=threshold,
                )
        if since != state.ineligible_since or blocked != state.blocked_since:
            self._selection = msgspec.structs.replace(state, ineligible_since=since, blocked_since=blocked)

    async def _on_retry(self, msg: RetryRequested) -> None:
        """An expired entry asks to retry: a new decision at the new price through every rule (BOT_SPEC
        §9 [resolved]). Approved: the reservation becomes the new plan's; rejected: released, and the
        trade ends with the rejection's code. Either way execution gets a `RetryDecided`."""
        plan = msg.plan
        now_ms = self._clock.now_ms()
        self._roll(now_ms)
        if msg.shadow:
            self._answer_shadow_retry(msg, now_ms)
            return
        own = self._exposures.pop(plan.trade_id, None)  # this trade's own reservation is replaced
        result = self._decide_retry(msg, now_ms)
        if isinstance(result, TradePlan):
            self._exposures[plan.trade_id] = Exposure(
                symbol=result.symbol,
                side=result.side,
                quantity=float(result.quantity),
                entry_price=float(result.entry_price),
                stop_price=float(result.stop_price),
                pending=True,
                trade_id=result.trade_id,
                leverage=result.leverage,
            )
            self._log.info(
                "retry_approved",
                symbol=result.symbol,
                trade_id=result.trade_id,
                strategy=result.strategy,
                entry_price=str(result.entry_price),
                quantity=str(result.quantity),
                stop_price=str(result.stop_price),
                target_price=None if result.target_price is None else str(result.target_price),
                risk_usd=result.risk_usd,
                notional_usd=result.notional_usd,
                open_risk_pct=result.open_risk_pct,
                filled_qty=str(msg.filled_qty),
            )
            decided = RetryDecided(trade_id=plan.trade_id, plan=result, rejection=None)
        else:
            if own is not None and msg.filled_qty > 0:
                self._exposures[plan.trade_id] = own  # the filled part stays exposed
            self._count("rejected", result.code)
            self._log.info(
                "retry_rejected",
                symbol=plan.symbol,
                trade_id=plan.trade_id,
                strategy=plan.strategy,
                code=result.code,
                reason=result.message,
                values=result.values,
            )
            decided = RetryDecided(trade_id=plan.trade_id, plan=None, rejection=result)
        self._persist()
        self._to_execution.post(decided)

    def _answer_shadow_retry(self, msg: RetryRequested, now_ms: int) -> None:
        """A shadow trade's retry: the same new decision, against no exposure, never reserved."""
        result = self._decide_retry(msg, now_ms, exposures=())
        plan = result if isinstance(result, TradePlan) else None
        rejection = result if isinstance(result, RiskRejection) else None
        self._log.info(
            "shadow_retry_decided",
            trade_id=msg.plan.trade_id,
            symbol=msg.plan.symbol,
            approved=plan is not None,
            code=None if rejection is None else rejection.code,
        )
        if self._to_shadow is None:
            return
        # Never dropped (a shadow trade waiting for it would never end), never awaited here.
        self._to_shadow.post(RetryDecided(trade_id=msg.plan.trade_id, plan=plan, rejection=rejection))

    def _decide_retry(
        self, msg: RetryRequested, now_ms: int, *, exposures: tuple[Exposure, ...] | None = None
    ) -> TradePlan | RiskRejection:
        plan = msg.plan
        equity, available, state = self._equity, self._available, self._risk_state
        if self._trading_state is not TradingState.ACTIVE:
            return RiskRejection(code=SHUTTING_DOWN, message="shutting down: no new entries")
        if equity is None or available is None or state is None:
            return RiskRejection(code=NO_ACCOUNT, message="no account update received yet: equity unknown")
        if plan.symbol not in self._tradable:
            return RiskRejection(code=NOT_IN_UNIVERSE, message="the symbol left the universe: no new entries")
        rules = self._rules.get(plan.symbol)
        strategy = self._strategies.get(plan.strategy)
        if rules is None or strategy is None:
            return RiskRejection(
                code=NO_SYMBOL_RULES if rules is None else INPUT_ERROR,
                message="no exchange rules for the symbol, or an unknown strategy",
                values={"symbol": plan.symbol, "strategy": plan.strategy},
            )
        portfolio = PortfolioSnapshot(
            equity_usd=equity,
            available_balance_usd=available,
            exposures=tuple(self._exposures.values()) if exposures is None else exposures,
            risk_state=state,
            wallet_balance_usd=self._wallet,
            unrealized_pnl_usd=self._unrealized,
        )
        ctx = RiskContext(
            rules=rules,
            now_ms=now_ms,
            mode=self._mode,
            mid_price=None,
            shadow=exposures is not None,
            correlations=self._correlations(now_ms),
            safe_mode=self._safe_mode,
            kill_switch=self._kill_switch,
        )
        try:
            return evaluate_retry(
                plan,
                mid=float(msg.mid) if msg.mid is not None else None,
                filled_qty=float(msg.filled_qty),
                filled_avg_price=float(msg.filled_avg_price),
                stop_pct=strategy.stop_pct,
                target_r_multiple=strategy.target_r_multiple,
                portfolio=portfolio,
                ctx=ctx,
                cfg=self._cfg,
            )
        except (RiskInputError, RiskStateError, RoundingInputError, ValueError, ArithmeticError) as exc:
            return _input_error(exc)

    def _send_shadow(self, report: SymbolReport, plan: TradePlan) -> bool:
        """Hand a shadow plan to the shadow book (never reserved, never blocking). True when sent."""
        if self._shadow_send is None:
            return False
        try:
            mid = Decimal(repr(float(report.mid_price)))
        except (InvalidOperation, ValueError, TypeError):
            mid = plan.entry_price
        try:
            self._shadow_send.send_nowait(SubmitPlan(plan=plan, mid_price=mid))
        except trio.WouldBlock:
            self._log.warning("shadow_plan_dropped", trade_id=plan.trade_id, reason="shadow inbox full")
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._log.warning("shadow_plan_dropped", trade_id=plan.trade_id, reason="shadow book stopped")
            return False
        return True

    def _gate(self, report: SymbolReport) -> RiskRejection | None:
        """Rejections that precede strategy selection: shutdown, kill, safe mode, missing inputs."""
        if self._trading_state is not TradingState.ACTIVE:
            return RiskRejection(
                code=SHUTTING_DOWN,
                message="shutting down: no new entries",
                values={"trading_state": self._trading_state.value},
            )
        if self._kill_switch:
            return RiskRejection(
                code=RiskCode.KILL_SWITCH.value, message="kill switch engaged: no new entries"
            )
        if self._safe_mode:
            return RiskRejection(code=RiskCode.SAFE_MODE.value, message="safe mode: no new entries")
        if self._equity is None or self._available is None or self._risk_state is None:
            return RiskRejection(code=NO_ACCOUNT, message="no account update received yet: equity unknown")
        if report.symbol not in self._tradable:
            return RiskRejection(
                code=NOT_IN_UNIVERSE,
                message="the symbol left the universe: managed until flat, no new entries",
                values={"symbol": report.symbol},
            )
        if report.symbol not in self._rules:
            return RiskRejection(
                code=NO_SYMBOL_RULES,
                message="no exchange rules for the symbol",
                values={"symbol": report.symbol},
            )
        return None

    def _evaluate(
        self,
        report: SymbolReport,
        signal: Signal,
        decision: SelectionDecision,
        *,
        now_ms: int,
        shadow: bool,
        exposures: tuple[Exposure, ...] | None = None,
        shadow_account: bool = False,
    ) -> TradePlan | RiskRejection:
        """`shadow_account`: a lock-out shadow plan (`_shadow_locked_out`), sized on the live equity but
        against the shadow book's account, not the live one: no live exposure, no live margin in use."""
        equity, available, state = self._equity, self._available, self._risk_state
        if equity is None or available is None or state is None:  # `_gate` ran first; kept for typing
            return RiskRejection(code=NO_ACCOUNT, message="no account update received yet: equity unknown")
        trailing = self._trailing.get(signal.strategy)
        portfolio = PortfolioSnapshot(
            equity_usd=equity,
            available_balance_usd=equity if shadow_account else available,
            exposures=()
            if shadow_account
            else tuple(self._exposures.values())
            if exposures is None
            else exposures,
            risk_state=state,
            wallet_balance_usd=equity if shadow_account else self._wallet,
            unrealized_pnl_usd=0.0 if shadow_account else self._unrealized,
        )
        ctx = RiskContext(
            rules=self._rules[report.symbol],
            now_ms=now_ms,
            mode=self._mode,
            mid_price=report.mid_price,
            funding_rate=report.funding_rate,
            correlations=self._correlations(now_ms),
            safe_mode=self._safe_mode,
            kill_switch=self._kill_switch,
            last_decided_candle_ms=self._guard.last(report.symbol),
            shadow=shadow,
            exploration=decision.exploration,
            trail_atr_mult=trailing.atr_mult if trailing is not None else None,
            trail_after_r=trailing.after_r if trailing is not None else None,
        )
        try:
            result = evaluate(signal, portfolio, ctx, self._cfg)
        except (RiskInputError, RiskStateError, RoundingInputError) as exc:
            return _input_error(exc)
        if isinstance(result, TradePlan) and decision.confidence_score is not None:
            result = msgspec.structs.replace(result, confidence_score=decision.confidence_score)
        return result

    async def _approve(self, report: SymbolReport, decision: SelectionDecision, plan: TradePlan) -> None:
        try:
            mid = Decimal(repr(float(report.mid_price)))
        except (InvalidOperation, ValueError, TypeError):
            mid = plan.entry_price
        # Reserve before anything else: the next candidate sees this exposure.
        self._exposures[plan.trade_id] = Exposure(
            symbol=plan.symbol,
            side=plan.side,
            quantity=float(plan.quantity),
            entry_price=float(plan.entry_price),
            stop_price=float(plan.stop_price),
            pending=True,
            trade_id=plan.trade_id,
            leverage=plan.leverage,
        )
        self._guard.mark(report.symbol, report.candle_open_time_ms)
        if not decision.exploration:
            # The decision's state carries the preference; the eligibility record is the actor's.
            current = self._selection_now()
            self._selection = msgspec.structs.replace(
                decision.state,
                ineligible_since=current.ineligible_since,
                blocked_since=current.blocked_since,
            )
        self._approvals += 1
        self._count("approved", None)
        self._log.info(
            "risk_approved",
            symbol=plan.symbol,
            trade_id=plan.trade_id,
            candle_open_time_ms=plan.candle_open_time_ms,
            strategy=plan.strategy,
            selection=decision.code,
            exploration=plan.exploration,
            side=plan.side.value,
            entry_price=str(plan.entry_price),
            quantity=str(plan.quantity),
            stop_price=str(plan.stop_price),
            target_price=None if plan.target_price is None else str(plan.target_price),
            leverage=plan.leverage,
            risk_pct=plan.risk_pct,
            risk_usd=plan.risk_usd,
            notional_usd=plan.notional_usd,
            open_positions=plan.open_positions_count,
            open_risk_pct=plan.open_risk_pct,
            correlation_bucket=plan.correlation_bucket,
            bucket_corr_max=plan.bucket_corr_max,
            confidence_score=plan.confidence_score,
        )
        self._persist()
        self._to_execution.post(SubmitPlan(plan=plan, mid_price=mid))
        self._reply(report, plan, None)

    def _finish_rejection(
        self, report: SymbolReport, decision: SelectionDecision | None, rejection: RiskRejection
    ) -> None:
        self._guard.mark(report.symbol, report.candle_open_time_ms)
        self._reply(report, None, rejection, explanation=rejection.message)
        self._log_rejection(report, decision, rejection)

    def _log_rejection(
        self, report: SymbolReport, decision: SelectionDecision | None, rejection: RiskRejection
    ) -> None:
        self._count("rejected", rejection.code)
        extra: dict[str, object] = {}
        if rejection.code == RiskCode.WEEKLY_STOP.value and self._mode == "PAPER_LIVE":
            extra["state"] = "PAUSED"
        self._log.info(
            "risk_rejected",
            symbol=report.symbol,
            candle_open_time_ms=report.candle_open_time_ms,
            code=rejection.code,
            reason=rejection.message,
            values=dict(rejection.values),
            strategy=decision.strategy if decision is not None else None,
            **extra,
        )

    def _no_trade_rejection(self, decision: SelectionDecision | None, message: str) -> RiskRejection:
        values: dict[str, float | str] = {}
        if decision is not None:
            values["selection_code"] = decision.code
            values["threshold"] = decision.threshold
            values["regime_confidence"] = decision.regime_confidence
        return RiskRejection(code=NO_TRADE, message=message, values=values)

    def _reply(
        self,
        report: SymbolReport,
        plan: TradePlan | None,
        rejection: RiskRejection | None,
        *,
        explanation: str = "",
    ) -> None:
        reply = report.reply
        if reply is None:
            return
        verdict = Verdict(
            symbol=report.symbol,
            candle_open_time_ms=report.candle_open_time_ms,
            plan=plan,
            rejection=rejection,
            explanation=explanation,
        )
        try:
            reply.send_nowait(verdict)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The asker gave up; an approved plan is already with execution, which owns it now.
            self._log.warning(
                "verdict_undeliverable",
                symbol=report.symbol,
                candle_open_time_ms=report.candle_open_time_ms,
                approved=plan is not None,
            )
        except trio.WouldBlock:
            self._log.warning(
                "verdict_dropped",
                symbol=report.symbol,
                candle_open_time_ms=report.candle_open_time_ms,
                approved=plan is not None,
            )

    def _count(self, outcome: str, code: str | None) -> None:
        if code is not None:
            self._rejections[code] = self._rejections.get(code, 0) + 1
        if self._metrics is not None:
            self._metrics.inc(DECISIONS, outcome=outcome)
            if code is not None:
                self._metrics.inc(REJECTIONS, reason=code)

    # -- correlation ----------------------------------------------------------------------------------

    def _on_candle(self, msg: CandleClosed) -> None:
        corr_tf = self._cfg.timeframes.corr_tf
        if msg.interval != corr_tf:
            return
        step = INTERVAL_MS[corr_tf]
        c = msg.candle
        if not (math.isfinite(c.close) and c.close > 0) or c.open_time_ms % step != 0:
            self._log.error(
                "risk_candle_rejected", symbol=msg.symbol, open_time_ms=c.open_time_ms, close=c.close
            )
            return
        series = self._hourly.get(msg.symbol)
        if series is None:
            series = self._hourly[msg.symbol] = _Hourly(
                self._cfg.timeframes.corr_lookback_hours + 1 + _HOURLY_SLACK
            )
        if c.open_time_ms <= series.last_open_ms:
            return  # duplicate or older: already counted
        if series.last_open_ms >= 0 and c.open_time_ms != series.last_open_ms + step:
            self._log.warning(
                "risk_hourly_gap",
                symbol=msg.symbol,
                last_open_ms=series.last_open_ms,
                open_time_ms=c.open_time_ms,
            )
            series.closes.clear()
        series.closes.append(c.close)
        series.last_open_ms = c.open_time_ms
        self._matrix_dirty = True

    def _correlations(self, now_ms: int) -> CorrelationMatrix | None:
        if self._matrix_dirty:
            series = {
                s: HourlyCloses(symbol=s, last_open_time_ms=h.last_open_ms, closes=tuple(h.closes))
                for s, h in self._hourly.items()
                if h.closes
            }
            # lazy: a decision computes only the candidate's row and the betas it needs (issue 6)
            self._matrix = lazy_correlation_matrix(
                series,
                lookback=self._cfg.timeframes.corr_lookback_hours,
                reference_symbol=self._reference_symbol,
                as_of_ms=now_ms,
            )
            self._matrix_dirty = False
        return self._matrix

    # -- portfolio ------------------------------------------------------------------------------------------

    def _on_entry_filled(self, msg: EntryFilled) -> None:
        try:
            qty, price, stop = float(msg.filled_qty), float(msg.avg_price), float(msg.stop_price)
        except (ValueError, ArithmeticError) as exc:
            self._log.error("risk_fill_rejected", trade_id=msg.trade_id, error=str(exc))
            return
        if not all(math.isfinite(v) and v > 0 for v in (qty, price)) or not math.isfinite(stop):
            self._log.error(
                "risk_fill_rejected",
                trade_id=msg.trade_id,
                filled_qty=str(msg.filled_qty),
                avg_price=str(msg.avg_price),
                stop_price=str(msg.stop_price),
            )
            return
        previous = self._exposures.get(msg.trade_id)
        if previous is None:
            self._log.warning("risk_fill_unknown_trade", trade_id=msg.trade_id, symbol=msg.symbol)
        # Until the entry is final, the still-working quantity stays reserved.
        working = previous.quantity if previous is not None and not msg.final else qty
        self._exposures[msg.trade_id] = Exposure(
            symbol=msg.symbol,
            side=msg.side,
            quantity=max(qty, working),
            entry_price=price,
            stop_price=stop if stop > 0 else None,
            pending=not msg.final,
            trade_id=msg.trade_id,
            leverage=previous.leverage if previous is not None else max(msg.leverage, 1.0),
        )
        self._log.info(
            "risk_entry_filled", trade_id=msg.trade_id, symbol=msg.symbol, filled_qty=qty, final=msg.final
        )

    def _on_position_updated(self, msg: PositionUpdated) -> None:
        """A stop moved (trailing) or the size changed: open risk is measured to the current stop."""
        current = self._exposures.get(msg.trade_id)
        if current is None or current.pending:
            return  # unknown here, or still filling: EntryFilled carries the numbers until final
        stop = float(msg.stop_price)
        qty = float(msg.qty)
        if not (math.isfinite(stop) and stop > 0 and math.isfinite(qty)) or qty <= 0:
            return  # flat (TradeClosed follows) or unusable numbers: keep the last good view
        self._exposures[msg.trade_id] = msgspec.structs.replace(current, stop_price=stop, quantity=qty)

    def _on_entry_abandoned(self, msg: EntryAbandoned) -> None:
        released = self._exposures.pop(msg.trade_id, None)
        self._log.info(
            "risk_reservation_released",
            trade_id=msg.trade_id,
            symbol=msg.symbol,
            reason=msg.reason,
            known=released is not None,
        )

    def _on_trade_closed(self, msg: TradeClosed) -> None:
        removed = self._exposures.pop(msg.trade_id, None)
        if removed is None:
            self._log.warning("risk_close_unknown_trade", trade_id=msg.trade_id, symbol=msg.symbol)
        self._check_loss_within_risk(msg)
        now_ms = self._clock.now_ms()
        pnl = msg.realized_pnl_usd
        if self._risk_state is not None and self._risk_state.already_booked(msg.trade_id):
            # Execution re-reports a closed trade after a crash; its pnl is booked once only.
            self._log.info("risk_close_already_booked", trade_id=msg.trade_id, symbol=msg.symbol)
            return
        if self._risk_state is None:
            self._log.error("risk_pnl_without_state", trade_id=msg.trade_id, realized_pnl_usd=pnl)
        elif not math.isfinite(pnl):
            self._log.error("risk_pnl_rejected", trade_id=msg.trade_id, realized_pnl_usd=pnl)
        else:
            before = self._risk_state
            # Funding was booked when paid (FundingBooked): only the rest is booked now.
            self._booked(
                before,
                book_trade_close(
                    before,
                    trade_id=msg.trade_id,
                    pnl_usd=pnl,
                    now_ms=now_ms,
                    equity_usd=self._booking_equity(before),
                    cfg=self._cfg.risk,
                ),
                "risk_pnl_recorded",
                trade_id=msg.trade_id,
                realized_pnl_usd=pnl,
            )
        try:
            trade = closed_trade_from_record(msg.record)
        except TradeRecordError as exc:
            self._log.error("risk_trade_record_rejected", trade_id=msg.trade_id, error=str(exc))
            trade = None
        if trade is not None:
            self._tracker.record(trade)
            self._refresh_eligibility(now_ms)
        self._persist()

    def _check_loss_within_risk(self, msg: TradeClosed) -> None:
        """All-in sizing bounds a stopped-out loss by risk_usd; a loss beyond it (a gap past the
        slippage allowance) is logged with the numbers (BOT_SPEC §8 [resolved])."""
        risk = msg.record.get("risk")
        risk_usd = risk.get("risk_usd") if isinstance(risk, dict) else None
        pnl = msg.realized_pnl_usd
        if not isinstance(risk_usd, int | float) or not (math.isfinite(risk_usd) and risk_usd > 0):
            return
        if math.isfinite(pnl) and -pnl > risk_usd:
            result = msg.record.get("result")
            self._log.warning(
                "loss_beyond_risk",
                trade_id=msg.trade_id,
                symbol=msg.symbol,
                pnl_usd=pnl,
                risk_usd=float(risk_usd),
                excess_usd=-pnl - float(risk_usd),
                pnl_r_multiple=pnl / float(risk_usd),
                reason=result.get("reason") if isinstance(result, dict) else None,
            )

    def _on_funding_booked(self, msg: FundingBooked) -> None:
        """Funding is realized PnL when it is paid: into today's and this week's calendar at once."""
        amount = msg.amount_usd
        if self._risk_state is None or not (isinstance(amount, int | float) and math.isfinite(amount)):
            self._log.error(
                "risk_funding_rejected", trade_id=msg.trade_id, symbol=msg.symbol, amount_usd=amount
            )
            return
        if msg.trade_id and self._risk_state.already_booked(msg.trade_id):
            # The trade's close was booked already (its record holds this funding): nothing to add.
            self._log.warning("risk_funding_after_close", trade_id=msg.trade_id, amount_usd=amount)
            return
        before = self._risk_state
        self._booked(
            before,
            book_funding(
                before,
                trade_id=msg.trade_id,
                amount_usd=float(amount),
                now_ms=self._clock.now_ms(),
                equity_usd=self._booking_equity(before),
                cfg=self._cfg.risk,
            ),
            "risk_funding_booked",
            trade_id=msg.trade_id,
            symbol=msg.symbol,
            amount_usd=float(amount),
        )
        self._persist()

    def _booking_equity(self, state: RiskState) -> float:
        """The equity a realized amount is measured against: the account's, else the day's start."""
        return self._equity if self._equity is not None else state.day_start_equity

    def _booked(self, before: RiskState, after: RiskState, event: str, **fields: Any) -> None:
        """Adopt the risk state after a realized amount was booked; log it, and a weekly stop it hit."""
        self._risk_state = after
        if after.pause_until_ms != before.pause_until_ms:
            self._log.warning(
                "weekly_stop_hit",
                week_pnl_pct=after.week_pnl_pct(),
                pause_until_ms=after.pause_until_ms,
                reduced_risk_until_ms=after.reduced_risk_until_ms,
            )
        self._log.info(event, **fields, day_pnl_pct=after.day_pnl_pct(), week_pnl_pct=after.week_pnl_pct())

    def _on_shadow_trade_closed(self, msg: ShadowTradeClosed) -> None:
        """A shadow trade ended: the performance layer learns from it; risk state is untouched."""
        try:
            trade = closed_trade_from_record(msg.record)
        except TradeRecordError as exc:
            self._log.error("shadow_trade_record_rejected", trade_id=exc.trade_id, error=str(exc))
            return
        if trade is None:
            self._log.info("shadow_trade_not_closed", trade_id=msg.record.get("trade_id"))
            return
        counted = self._tracker.record(trade)
        self._log.info(
            "shadow_trade_recorded",
            trade_id=trade.trade_id,
            strategy=trade.strategy,
            counted=counted,
            shadow=True,
            r_multiple=trade.r_multiple,
        )
        self._refresh_eligibility(self._clock.now_ms())
        self._persist()

    def _on_account(self, msg: AccountUpdated) -> None:
        values = (msg.equity_usd, msg.available_balance_usd)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            self._log.error(
                "risk_account_rejected",
                equity_usd=msg.equity_usd,
                available_balance_usd=msg.available_balance_usd,
            )
            return
        now_ms = self._clock.now_ms()
        if self._risk_state is None and self._closed_pnl:
            # No persisted calendar (a lost state file): re-derive stops and pauses from the trade log.
            self._risk_state = derive_risk_state(
                self._closed_pnl, now_ms=now_ms, equity_usd=msg.equity_usd, cfg=self._cfg.risk
            )
            self._log.warning(
                "risk_state_derived",
                trades=len(self._closed_pnl),
                day_pnl_pct=self._risk_state.day_pnl_pct(),
                week_pnl_pct=self._risk_state.week_pnl_pct(),
                pause_until_ms=self._risk_state.pause_until_ms,
            )
        elif self._risk_state is None:
            self._risk_state = new_risk_state(now_ms=now_ms, equity_usd=msg.equity_usd)
        else:
            # The previous equity is the last one seen before the boundary: the period's start equity.
            self._roll(now_ms, equity=self._equity if self._equity is not None else msg.equity_usd)
        self._equity = float(msg.equity_usd)
        self._available = float(msg.available_balance_usd)
        wallet, unrealized = msg.wallet_balance_usd, msg.unrealized_pnl_usd
        finite = all(isinstance(v, int | float) and math.isfinite(v) for v in (wallet, unrealized))
        self._wallet = float(wallet) if finite else None
        self._unrealized = float(unrealized) if finite else 0.0
        self._persist()

    def _on_synced(self, msg: PortfolioSynced) -> None:
        synced: dict[str, Exposure] = {}
        for e in msg.exposures:
            key = e.trade_id if e.trade_id else f"{_FOREIGN_KEY_PREFIX}{e.symbol}"
            known = self._exposures.get(key)
            if known is not None and e.leverage == 1.0 and known.leverage != 1.0:
                e = msgspec.structs.replace(e, leverage=known.leverage)
            synced[key] = e
        # Our reservations that execution has not seen yet stay reserved.
        for key, e in self._exposures.items():
            if e.pending and not e.foreign and e.trade_id and key not in synced:
                synced[key] = e
        self._exposures = synced
        self._log.info(
            "risk_portfolio_synced",
            exposures=len(synced),
            foreign=sum(1 for e in synced.values() if e.foreign),
            symbols=sorted({e.symbol for e in synced.values()}),
        )

    # -- risk state and persistence -----------------------------------------------------------------

    def _roll(self, now_ms: int, *, equity: float | None = None) -> None:
        if self._risk_state is None:
            return
        eq = equity if equity is not None else self._equity
        if eq is None:
            return
        state = roll(self._risk_state, now_ms=now_ms, equity_usd=eq)
        self._risk_state = apply_weekly_stop(state, now_ms=now_ms, cfg=self._cfg.risk)

    def _load_persisted(self) -> None:
        store = self._store
        if store is None:
            return
        if self._risk_state is None:
            self._risk_state = store.load_struct(BlobKind.RISK, RISK_STATE_NAME, RiskState)
        if self._selection is None:
            self._selection = store.load_struct(BlobKind.SELECTION, SELECTION_STATE_NAME, SelectionState)
        self._saved_risk, self._saved_selection = self._risk_state, self._selection

    def _persist(self) -> None:
        """Write the risk and selection state if they changed (one transaction)."""
        store = self._store
        if store is None:
            return
        risk_changed = self._risk_state is not None and self._risk_state != self._saved_risk
        sel_changed = self._selection is not None and self._selection != self._saved_selection
        if not (risk_changed or sel_changed):
            return
        now_ms = self._clock.now_ms()
        try:
            with store.transaction():
                if risk_changed and self._risk_state is not None:
                    store.save_struct(BlobKind.RISK, RISK_STATE_NAME, self._risk_state, now_ms=now_ms)
                if sel_changed and self._selection is not None:
                    store.save_struct(
                        BlobKind.SELECTION, SELECTION_STATE_NAME, self._selection, now_ms=now_ms
                    )
        except (StateStoreError, sqlite3.Error) as exc:
            self._log.error("risk_state_persist_failed", error=str(exc))
            return
        self._saved_risk, self._saved_selection = self._risk_state, self._selection

    def _publish_metrics(self) -> None:
        m = self._metrics
        if m is None:
            return
        exposures = tuple(self._exposures.values())
        risk_usd = open_risk_usd(exposures, self._cfg)
        m.set(OPEN_RISK_USD, risk_usd)
        # open_positions is Execution's: it follows the account's positions, not the risk book.
        if self._equity is not None:
            m.set(EQUITY, self._equity)
            if self._equity > 0:
                m.set(OPEN_RISK_PCT, risk_usd / self._equity)


def _strategy_priority(name: str) -> int:
    return STRATEGY_NAMES.index(name) if name in STRATEGY_NAMES else len(STRATEGY_NAMES)


def _input_error(exc: Exception) -> RiskRejection:
    values: dict[str, float | str] = {"error": str(exc)}
    field = getattr(exc, "field", None)
    if isinstance(field, str):
        values["field"] = field
    return RiskRejection(code=INPUT_ERROR, message=f"malformed input: {exc}", values=values)

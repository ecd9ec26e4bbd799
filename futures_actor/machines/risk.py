"""The portfolio's risk decisions as a pure state machine: messages in, effects out (issue 12).

`RiskMachine` is the single writer of risk state (BOT_SPEC §7, §8, §10, §12). It owns the equity view
(`AccountUpdated`), the portfolio (open positions and pending entries: its own approvals as
reservations, execution's `EntryFilled` / `EntryAbandoned` / `TradeClosed`, and the reconciled picture
of `PortfolioSynced` with adopted and foreign positions), the 1h closes per symbol for the correlation
filter, the `RiskState` calendar (daily / weekly stop, pause, reduced risk), the performance tracker,
the strategy-selection state, the open decision batches, the safe-mode and kill flags, the trading
state (ACTIVE, or REDUCING after `StopIntake`) and the shadow lock-out bookkeeping.
`handle(message, now_ms=...)` returns the effects to carry out, in order; it never awaits, never does
I/O, never reads a clock and never calls a logger or a metrics registry. `actors/portfolio_risk.py` is
its trio runtime shell.

Time. `now_ms` is wall time in ms since the Unix epoch (UTC): the injected wall clock live, the event
time in a replay. It rolls the calendar (UTC days, Monday weeks), dates the selector's decisions,
measures a report's age and stamps persisted state. The batch deadline is a timer the machine asks
for (`SetTimer(at_ms)`, on the same time line); the machine never compares `now_ms` with it: the
runtime says when it passed (`BatchDeadline`). Given the same inputs and `now_ms` values the effects
are the same (no clock, no unseeded randomness, no decision iterates over an unordered set).

Inputs (`RiskInput`), matched exhaustively:
- `Start(risk_state, selection_state)`: first, exactly once: what the state store holds (None: nothing
  stored, no store, or the machine was built with that state). A state the machine was built with
  wins. Every other input before it raises `RiskMachineError`.
- the actor's inbox (`RiskInbox`): `SymbolReport`, `CandleClosed`, `EntryFilled`, `EntryAbandoned`,
  `PositionUpdated`, `TradeClosed`, `RetryRequested`, `FundingBooked`, `ShadowTradeClosed`,
  `AccountUpdated`, `PortfolioSynced`, `SafeModeChanged`, `KillSwitch`, `Resume`, `StopIntake`,
  `UniverseChanged`. A `SymbolReport`'s `reply` is an opaque correlation token to the machine: None
  means "nobody waits for a verdict", anything else is echoed back in `ReplyVerdict.reply` (the trio
  shell passes the one-shot channel itself; a replay runtime may pass any non-None token).
- `BatchDeadline(candle_open_time_ms)`: the `SetTimer` of that batch fired. A deadline of a batch
  already decided is ignored (a cancelled timer a runtime could not take back is harmless).
- `InboxClosed()`: no more inbox messages: every open batch is decided now, state persisted.
- Answers, fed back synchronously while performing the effect they answer (before the next effect, so
  the log lines keep today's order; their effects are `Log`s only):
  `VerdictUndelivered(reply, verdict, reason)` for a `ReplyVerdict` that could not be handed over
  (`"closed"`: the asker gave up; `"full"`: its channel was full); `ShadowPlanAnswered(effect,
  dropped)` for every `SendShadowPlan`; `PersistFailed(effect, error)` for a `Persist` that failed.

Effects (`RiskEffect`), to be performed in the order returned:
- `Log`: write the record (`machines.effects.write_log`).
- `Persist(risk_state, selection_state, now_ms)`: write the non-None states to the state store in ONE
  transaction (`BlobKind.RISK` / `RISK_STATE_NAME`, `BlobKind.SELECTION` / `SELECTION_STATE_NAME`,
  stamped `now_ms`). A state is in a `Persist` only when it changed since the last one emitted; a
  `Persist` always comes before the `SendPlan` / `SendRetryDecided` it covers (persist before send).
  On failure answer `PersistFailed` (the machine logs `risk_state_persist_failed` and writes the state
  again at its next persist point) and go on: the send after it is still performed (as always).
  A runtime without a store builds the machine with `persists=False`: no `Persist` at all.
- `SendPlan(submit)` / `SendRetryDecided(decided, shadow=False)`: hand the message to execution,
  never blocking the machine and never dropping it (the trio shell queues it in an unbounded,
  order-keeping mailbox). `SendRetryDecided(shadow=True)`: the same to the shadow book.
- `SendExecutionSync(sync)`: hand the `ExecutionSync` to execution like a plan (same mailbox, in order);
  execution's `ExecutionSynced` comes back on the inbox.
- `SendShadowPlan(submit, entry_log)`: hand a shadow plan to the shadow book without blocking; when it
  cannot take it now (full or gone) it is dropped. Always answer `ShadowPlanAnswered(effect, dropped)`
  (`dropped`: None when handed over, else the reason); the machine then logs the drop and the
  `shadow_entry` line. Only emitted by a machine built with `has_shadow=True`.
- `ReplyVerdict(reply, verdict)`: deliver `verdict` to whoever waits behind `reply` (the report's
  token), without blocking. If it cannot be delivered, answer `VerdictUndelivered`: nothing is
  released (an approved plan was sent to execution first, which owns it now); it is logged.
- `SetTimer(candle_open_time_ms, at_ms)` / `CancelTimer(candle_open_time_ms)`: the batch deadline of
  that candle (`at_ms` on the `now_ms` time line = the first report's `now_ms` + `risk.decision_batch_ms`).
  When it passes, feed `BatchDeadline(candle_open_time_ms)` after any message handled at that same
  time (the trio shell: trio deadline = trio time at the `SetTimer` + (at_ms - now_ms) / 1000 s).
- `SetMetric(name, value)` / `IncMetric(name, amount, labels)`: metrics registry updates (only from a
  machine built with `emit_metrics=True`): `actors.metrics` gauges `OPEN_RISK_USD`, `EQUITY`,
  `OPEN_RISK_PCT` after every inbox message, counters `DECISIONS` / `REJECTIONS` per decision.
- `Crash(error)`: the last effect after a fault in decision code: the runtime performs the effects
  before it, then raises `error` unchanged (risk is critical: orderly shutdown). A crashed machine
  refuses further input (`RiskMachineError`).

Every effect is answerable synchronously; none needs an await.

Policy:
- Decision batching: `SymbolReport`s of one 5m candle open time are collected until every monitored
  symbol has reported, the batch deadline passed (`risk.decision_batch_ms` after the first report), a
  report for a newer candle arrives (the older batch is decided first) or the inbox closes. The batch
  is then decided in descending confidence order (the selector's confidence score; ties by symbol
  name), so arrival order does not matter. A machine built with `sync_with_execution=True` (the bot's,
  in both runtimes) decides a complete batch only once execution has answered `ExecutionSynced` to
  the `SendExecutionSync` it sent when the last report came in (or the deadline passed): every stop
  amendment a symbol sent before its report has then reached the exposures, so no decision depends on
  whether a trailed stop's `PositionUpdated` or the last report was scheduled first. Per symbol: safety gates (shutdown, kill, safe mode), the
  selector picks among its signals, then `core.risk.evaluate`. An approval reserves its exposure (a
  pending entry) before the next symbol is evaluated, is persisted, sent to execution as
  `SubmitPlan`, then answered, and adopts the selector's new state.
- Verdicts: a report with a `reply` gets one `Verdict`. A report for an already decided candle gets
  `LATE`; a report whose candle closed longer ago than `health.stale_data_seconds` is never traded on
  (`STALE_CANDLE` when it has signals); a second report of a symbol in the same batch gets
  `DUPLICATE_CANDLE`. Nothing is retried.
- Every rejection is logged as `risk_rejected` (code and numbers), every approval as `risk_approved`.
- Weekly-stop pause: PAPER_LIVE rejects `WEEKLY_STOP` (logged with `state=PAUSED`). LIVE evaluates
  again for the shadow book and logs `shadow_entry`; with a shadow book the approved plan is sent there
  (`SendShadowPlan`). A shadow plan is never reserved in the exposures. `ShadowTradeClosed` feeds the
  performance tracker only (never exposure, open risk or the daily / weekly PnL).
- The calendar rolls at every decision and account update, with the last known equity as the start
  equity of the new period. Risk and selection state are persisted after every change.
- Bad data (a malformed signal, an undecodable trade record) is logged and rejected or skipped, never
  a crash. Any other exception ends in `Crash`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, assert_never

import msgspec

from futures_actor.actors.messages import (
    AccountUpdated,
    CandleClosed,
    EntryAbandoned,
    EntryFilled,
    ExecutionSync,
    ExecutionSynced,
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
from futures_actor.machines.effects import Log, LogLevel

__all__ = [
    "DUPLICATE_CANDLE",
    "INPUT_ERROR",
    "LATE",
    "NOT_IN_UNIVERSE",
    "NO_ACCOUNT",
    "NO_SYMBOL_RULES",
    "NO_TRADE",
    "RISK_INBOX_TYPES",
    "RISK_STATE_NAME",
    "SELECTION_STATE_NAME",
    "SHUTTING_DOWN",
    "STALE_CANDLE",
    "BatchDeadline",
    "CancelTimer",
    "Crash",
    "InboxClosed",
    "IncMetric",
    "Mode",
    "Persist",
    "PersistFailed",
    "ReplyVerdict",
    "RiskEffect",
    "RiskInbox",
    "RiskInput",
    "RiskMachine",
    "RiskMachineError",
    "RiskSnapshot",
    "SendExecutionSync",
    "SendPlan",
    "SendRetryDecided",
    "SendShadowPlan",
    "SetMetric",
    "SetTimer",
    "ShadowPlanAnswered",
    "Start",
    "VerdictUndelivered",
]

Mode = Literal["PAPER_LIVE", "LIVE"]

# Reason codes of the machine's own rejections (the engine's are `core.risk.RiskCode`).
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


class RiskMachineError(RuntimeError):
    """The runtime broke the machine's contract (an input before `Start`, a second `Start`, an input
    after `Crash`): a bug in the runtime, never bad market data."""


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
    | ExecutionSynced
)
"""Everything the PortfolioRisk actor's inbox accepts."""

RISK_INBOX_TYPES: Final = (
    SymbolReport,
    CandleClosed,
    EntryFilled,
    EntryAbandoned,
    PositionUpdated,
    TradeClosed,
    RetryRequested,
    FundingBooked,
    ShadowTradeClosed,
    AccountUpdated,
    PortfolioSynced,
    SafeModeChanged,
    KillSwitch,
    Resume,
    StopIntake,
    UniverseChanged,
    ExecutionSynced,
)
"""The classes of `RiskInbox` (for a runtime checking what an untyped channel delivered)."""


# --- effects ------------------------------------------------------------------------------------------


class SendPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Hand `submit` to execution (never blocking the machine, never dropped, in order)."""

    submit: SubmitPlan


class SendRetryDecided(msgspec.Struct, frozen=True, kw_only=True):
    """Hand `decided` to execution, or to the shadow book when `shadow` (never blocking, never dropped)."""

    decided: RetryDecided
    shadow: bool


class SendExecutionSync(msgspec.Struct, frozen=True, kw_only=True):
    """Hand `sync` to execution like a plan (never blocking, never dropped, in order after the plans
    sent before it); execution answers `ExecutionSynced` on the risk inbox."""

    sync: ExecutionSync


class SendShadowPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Offer `submit` to the shadow book without blocking; answer `ShadowPlanAnswered`. `entry_log` holds
    the fields of the `shadow_entry` line the machine writes when answered."""

    submit: SubmitPlan
    entry_log: Mapping[str, object]


class ReplyVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """Deliver `verdict` to the asker behind `reply` (the report's token) without blocking; answer
    `VerdictUndelivered` when it cannot be delivered."""

    reply: Any
    verdict: Verdict


class SetTimer(msgspec.Struct, frozen=True, kw_only=True):
    """Feed `BatchDeadline(candle_open_time_ms)` when `at_ms` (the `now_ms` time line) has passed."""

    candle_open_time_ms: int
    at_ms: int


class CancelTimer(msgspec.Struct, frozen=True, kw_only=True):
    """The batch of `candle_open_time_ms` was decided: its timer is no longer needed."""

    candle_open_time_ms: int


class Persist(msgspec.Struct, frozen=True, kw_only=True):
    """Write the non-None states to the state store in one transaction, stamped `now_ms`; answer
    `PersistFailed` on failure."""

    risk_state: RiskState | None
    selection_state: SelectionState | None
    now_ms: int


class SetMetric(msgspec.Struct, frozen=True, kw_only=True):
    """Set gauge `name` to `value` (`Metrics.set(name, value, **labels)`)."""

    name: str
    value: float
    labels: Mapping[str, str] = msgspec.field(default_factory=dict)


class IncMetric(msgspec.Struct, frozen=True, kw_only=True):
    """Add `amount` to counter `name` (`Metrics.inc(name, amount, **labels)`)."""

    name: str
    amount: float = 1.0
    labels: Mapping[str, str] = msgspec.field(default_factory=dict)


class Crash(msgspec.Struct, frozen=True, kw_only=True):
    """A fault in decision code: perform the effects before this one, then raise `error` unchanged."""

    error: Exception


RiskEffect = (
    Log
    | Persist
    | SendPlan
    | SendExecutionSync
    | SendRetryDecided
    | SendShadowPlan
    | ReplyVerdict
    | SetTimer
    | CancelTimer
    | SetMetric
    | IncMetric
    | Crash
)
"""Everything `RiskMachine.handle` returns (a runtime matches it exhaustively)."""


# --- inputs a runtime feeds back -------------------------------------------------------------------


class Start(msgspec.Struct, frozen=True, kw_only=True):
    """The first input: the persisted states (None: none stored, or no store)."""

    risk_state: RiskState | None = None
    selection_state: SelectionState | None = None


class BatchDeadline(msgspec.Struct, frozen=True, kw_only=True):
    """The timer of the batch of `candle_open_time_ms` fired."""

    candle_open_time_ms: int


class InboxClosed(msgspec.Struct, frozen=True, kw_only=True):
    """The inbox ended: decide what is still waiting, persist."""


class VerdictUndelivered(msgspec.Struct, frozen=True, kw_only=True):
    """A `ReplyVerdict` could not be delivered: `closed` (the asker gave up) or `full`."""

    reply: Any
    verdict: Verdict
    reason: Literal["closed", "full"]


class ShadowPlanAnswered(msgspec.Struct, frozen=True, kw_only=True):
    """How a `SendShadowPlan` went: `dropped` None when handed over, else why it was dropped."""

    effect: SendShadowPlan
    dropped: str | None


class PersistFailed(msgspec.Struct, frozen=True, kw_only=True):
    """The `Persist` in `effect` failed with `error` (its text)."""

    effect: Persist
    error: str


RiskInput = (
    RiskInbox | Start | BatchDeadline | InboxClosed | VerdictUndelivered | ShadowPlanAnswered | PersistFailed
)
"""Everything `RiskMachine.handle` accepts."""


class RiskSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The risk state for the health / metrics endpoint."""

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


def _info(event: str, **fields: object) -> Log:
    return Log(level=LogLevel.INFO, event=event, fields=fields)


def _warning(event: str, **fields: object) -> Log:
    return Log(level=LogLevel.WARNING, event=event, fields=fields)


def _error(event: str, **fields: object) -> Log:
    return Log(level=LogLevel.ERROR, event=event, fields=fields)


class _Batch:
    """Reports of one 5m candle open time, waiting to be decided."""

    __slots__ = ("due", "open_time_ms", "reports", "sync_asked", "synced")

    def __init__(self, open_time_ms: int) -> None:
        self.open_time_ms = open_time_ms
        self.due = False  # its BatchDeadline arrived
        self.sync_asked = False  # an ExecutionSync was sent for it
        self.synced = False  # execution answered it
        self.reports: dict[str, SymbolReport] = {}


class _Hourly:
    """Consecutive 1h closes of one symbol (a gap restarts the series: unknown beats wrong)."""

    __slots__ = ("closes", "last_open_ms")

    def __init__(self, maxlen: int) -> None:
        self.closes: deque[float] = deque(maxlen=maxlen)
        self.last_open_ms = -1


class RiskMachine:
    """Decides every candidate entry against the portfolio; the only writer of risk state (pure)."""

    def __init__(
        self,
        *,
        cfg: BotConfig,
        mode: Mode,
        symbols: Iterable[str],
        rules_by_symbol: Mapping[str, SymbolRules],
        tracker: PerformanceTracker | None = None,
        selection_state: SelectionState | None = None,
        risk_state: RiskState | None = None,
        closed_pnl: Sequence[ClosedPnl] = (),
        reference_symbol: str = "",
        has_shadow: bool = False,
        persists: bool = False,
        emit_metrics: bool = False,
        sync_with_execution: bool = False,
    ) -> None:
        if mode not in ("PAPER_LIVE", "LIVE"):
            raise ValueError(f"mode: got {mode!r}, expected PAPER_LIVE or LIVE")
        self._cfg = cfg
        self._mode: Mode = mode
        self._has_shadow = has_shadow
        self._sync_with_execution = sync_with_execution
        self._persists = persists
        self._emit_metrics = emit_metrics
        self._symbols: tuple[str, ...] = tuple(symbols)
        self._monitored = frozenset(self._symbols)
        self._tradable = frozenset(self._symbols)
        self._rules: dict[str, SymbolRules] = dict(rules_by_symbol)
        self._closed_pnl = tuple(closed_pnl)
        self._signal_interval_ms = INTERVAL_MS[cfg.timeframes.signal_tf]
        self._tracker = tracker if tracker is not None else PerformanceTracker(cfg=cfg.performance)
        self._selector = StrategySelector(cfg=cfg, mode=mode)
        self._selection = selection_state
        self._risk_state = risk_state
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
        # The states last put in a `Persist` (None after a failed one: written again next time).
        self._saved_risk: RiskState | None = None
        self._saved_selection: SelectionState | None = None
        self._approvals = 0
        self._rejections: dict[str, int] = {}
        self._shadow_entries = 0
        self._last_shadowed: dict[str, int] = {}  # strategy -> wall ms of its last lock-out shadow plan
        self._late = 0
        self._started = False
        self._crashed = False
        self._out: list[RiskEffect] = []

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

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    @property
    def reference_symbol(self) -> str:
        return self._reference_symbol

    @property
    def open_batches(self) -> tuple[int, ...]:
        """The candle open times of the batches still waiting to be decided, oldest first."""
        return tuple(sorted(self._batches))

    def snapshot(self, *, now_ms: int) -> RiskSnapshot:
        """Equity, open risk, positions, flags and decision counts (for /health and /metrics)."""
        exposures = tuple(self._exposures.values())
        risk_usd = open_risk_usd(exposures, self._cfg)
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
            paused=state.paused(now_ms) if state is not None else False,
            reduced_risk=state.reduced_risk(now_ms) if state is not None else False,
            day_pnl_pct=state.day_pnl_pct() if state is not None else None,
            week_pnl_pct=state.week_pnl_pct() if state is not None else None,
            approvals=self._approvals,
            rejections=dict(self._rejections),
            shadow_entries=self._shadow_entries,
            late_reports=self._late,
        )

    def ineligible_strategies(self) -> dict[str, int]:
        """Strategies ineligible on their global window (expectancy ≤ 0 on enough trades): since when (ms)."""
        return dict(self._selection_now().ineligible_since)

    def performance_blocked_strategies(self) -> dict[str, int]:
        """Strategies eligible on enough trades whose own confidence is below the threshold in a regime
        they are configured for (they trade on the shadow book there): since when (ms)."""
        return dict(self._selection_now().blocked_since)

    def correlations(self, now_ms: int) -> CorrelationMatrix | None:
        """The correlation matrix a decision at `now_ms` would use (built lazily from the 1h closes)."""
        return self._correlations(now_ms)

    # -- the transition function ------------------------------------------------------------------

    def handle(self, message: RiskInput, *, now_ms: int) -> list[RiskEffect]:
        """The effects of `message`, in the order a runtime must perform them (module docstring).

        Raises `RiskMachineError` when the runtime breaks the contract; a fault in decision code ends
        the effects with `Crash` instead.
        """
        if self._crashed:
            raise RiskMachineError(f"the risk machine crashed; got {type(message).__name__}")
        if isinstance(message, Start) == self._started:
            raise RiskMachineError(
                "a second Start"
                if self._started
                else f"{type(message).__name__} before Start (feed Start first)"
            )
        out: list[RiskEffect] = []
        self._out = out
        try:
            self._dispatch(message, now_ms)
        except Exception as exc:
            self._crashed = True
            out.append(Crash(error=exc))
        finally:
            self._out = []
        return out

    def _dispatch(self, msg: RiskInput, now_ms: int) -> None:
        match msg:
            case Start():
                self._on_start(msg, now_ms)
                return
            case BatchDeadline():
                batch = self._batches.get(msg.candle_open_time_ms)
                if batch is not None:
                    batch.due = True
                    self._decide_ready(now_ms)
                return
            case InboxClosed():
                self._decide_ready(now_ms, flush=True)
                self._persist(now_ms)
                return
            case VerdictUndelivered():
                self._on_verdict_undelivered(msg)
                return
            case ShadowPlanAnswered():
                self._on_shadow_answered(msg)
                return
            case PersistFailed():
                self._on_persist_failed(msg)
                return
            case SymbolReport():
                self._on_report(msg, now_ms)
            case CandleClosed():
                self._on_candle(msg)
            case EntryFilled():
                self._on_entry_filled(msg)
            case EntryAbandoned():
                self._on_entry_abandoned(msg)
            case PositionUpdated():
                self._on_position_updated(msg)
            case TradeClosed():
                self._on_trade_closed(msg, now_ms)
            case RetryRequested():
                self._on_retry(msg, now_ms)
            case FundingBooked():
                self._on_funding_booked(msg, now_ms)
            case ShadowTradeClosed():
                self._on_shadow_trade_closed(msg, now_ms)
            case AccountUpdated():
                self._on_account(msg, now_ms)
            case PortfolioSynced():
                self._on_synced(msg)
            case SafeModeChanged():
                self._safe_mode = msg.on
                self._emit(_warning("risk_safe_mode", on=msg.on, reasons=list(msg.reasons)))
            case KillSwitch():
                self._kill_switch = True
                self._emit(_warning("risk_kill_switch", on=True, reason=msg.reason))
            case Resume():
                self._kill_switch = False
                self._emit(_warning("risk_kill_switch", on=False, reason=msg.reason))
            case UniverseChanged(tradable=tradable, monitored=monitored, rules=rules, reference_symbol=ref):
                self._tradable = frozenset(tradable)
                self._monitored = frozenset(monitored)
                self._symbols = tuple(monitored)
                self._rules.update(rules)
                if ref and not self._cfg.risk.beta_reference_symbol and ref != self._reference_symbol:
                    self._reference_symbol = ref
                    self._matrix_dirty = True  # betas are measured against the new reference
                self._emit(
                    _info(
                        "risk_universe_changed",
                        tradable=sorted(tradable),
                        monitored=sorted(monitored),
                        beta_reference=self._reference_symbol,
                    )
                )
            case ExecutionSynced(candle_open_time_ms=t):
                batch = self._batches.get(t)
                if batch is not None:
                    batch.synced = True
            case StopIntake():
                self._trading_state = TradingState.REDUCING
                self._emit(_warning("risk_trading_state", state=self._trading_state.value))
            case _:
                assert_never(msg)
        # An inbox message: the gauges, then every batch it made ready (complete or superseded).
        self._publish_metrics()
        self._decide_ready(now_ms)

    def _emit(self, effect: RiskEffect) -> None:
        self._out.append(effect)

    # -- start and the runtime's answers ------------------------------------------------------------

    def _on_start(self, msg: Start, now_ms: int) -> None:
        self._started = True
        if self._risk_state is None:
            self._risk_state = msg.risk_state
        if self._selection is None:
            self._selection = msg.selection_state
        self._saved_risk, self._saved_selection = self._risk_state, self._selection
        self._refresh_eligibility(now_ms)  # a rebuilt record may lock a strategy out
        self._persist(now_ms)
        self._emit(
            _info(
                "risk_started",
                mode=self._mode,
                symbols=list(self._symbols),
                beta_reference=self._reference_symbol,
                paused=self._risk_state is not None and self._risk_state.paused(now_ms),
            )
        )

    def _on_verdict_undelivered(self, msg: VerdictUndelivered) -> None:
        v = msg.verdict
        fields: dict[str, object] = {
            "symbol": v.symbol,
            "candle_open_time_ms": v.candle_open_time_ms,
            "approved": v.plan is not None,
        }
        match msg.reason:
            case "closed":
                # The asker gave up; an approved plan is already with execution, which owns it now.
                self._emit(_warning("verdict_undeliverable", **fields))
            case "full":
                self._emit(_warning("verdict_dropped", **fields))
            case _:
                assert_never(msg.reason)

    def _on_shadow_answered(self, msg: ShadowPlanAnswered) -> None:
        if msg.dropped is not None:
            self._emit(
                _warning("shadow_plan_dropped", trade_id=msg.effect.submit.plan.trade_id, reason=msg.dropped)
            )
        self._emit(_info("shadow_entry", **msg.effect.entry_log, sent=msg.dropped is None))

    def _on_persist_failed(self, msg: PersistFailed) -> None:
        self._emit(_error("risk_state_persist_failed", error=msg.error))
        # Not saved after all: the next persist point writes it again.
        if msg.effect.risk_state is not None:
            self._saved_risk = None
        if msg.effect.selection_state is not None:
            self._saved_selection = None

    # -- reports and batching -------------------------------------------------------------------------

    def _on_report(self, report: SymbolReport, now_ms: int) -> None:
        t = report.candle_open_time_ms
        age_ms = now_ms - (t + self._signal_interval_ms)
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
            batch = self._batches[t] = _Batch(t)
            self._emit(SetTimer(candle_open_time_ms=t, at_ms=now_ms + self._cfg.risk.decision_batch_ms))
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

    def _decide_ready(self, now_ms: int, *, flush: bool = False) -> None:
        """Decide, oldest first, every batch that is complete, due, superseded by a newer one (or all)."""
        while self._batches:
            oldest = min(self._batches)
            batch = self._batches[oldest]
            complete = self._monitored <= batch.reports.keys()
            superseded = len(self._batches) > 1
            if not (flush or complete or superseded or batch.due):
                return
            if (
                complete
                and self._sync_with_execution
                and not (flush or superseded or batch.due or batch.synced)
            ):
                # Every report is in: decide once execution has handled what it got before (the stop
                # amendments the symbols sent before their reports), so the exposures are current.
                if not batch.sync_asked:
                    batch.sync_asked = True
                    self._emit(SendExecutionSync(sync=ExecutionSync(candle_open_time_ms=oldest)))
                return
            del self._batches[oldest]
            if not batch.due:
                self._emit(CancelTimer(candle_open_time_ms=oldest))
            if not complete:
                self._emit(
                    _warning(
                        "risk_batch_incomplete",
                        candle_open_time_ms=oldest,
                        missing=sorted(self._monitored - batch.reports.keys()),
                    )
                )
            self._decide_batch(batch, now_ms)

    def _decide_batch(self, batch: _Batch, now_ms: int) -> None:
        t = batch.open_time_ms
        self._decided_upto = t if self._decided_upto is None else max(self._decided_upto, t)
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
            self._decide_one(report, now_ms=now_ms, decide_ms=decide_ms)
        self._persist(now_ms)

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

    def _decide_one(self, report: SymbolReport, *, now_ms: int, decide_ms: int) -> None:
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
            self._emit(
                _info(
                    "selection_no_trade",
                    symbol=symbol,
                    candle_open_time_ms=report.candle_open_time_ms,
                    code=decision.code,
                    explanation=decision.message,
                )
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
                self._send_shadow(
                    report,
                    shadow,
                    {
                        "why": "WEEKLY_STOP",
                        "symbol": symbol,
                        "trade_id": shadow.trade_id,
                        "strategy": shadow.strategy,
                        "side": shadow.side.value,
                        "entry_price": str(shadow.entry_price),
                        "quantity": str(shadow.quantity),
                        "stop_price": str(shadow.stop_price),
                        "risk_usd": shadow.risk_usd,
                    },
                )
            else:
                self._emit(_info("shadow_rejected", symbol=symbol, code=shadow.code, reason=shadow.message))
        else:
            self._shadow_locked_out(report, decision, now_ms=now_ms)
        if isinstance(result, RiskRejection):
            self._finish_rejection(report, decision, result)
            return
        self._approve(report, decision, result, now_ms)

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
        if not self._has_shadow:
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
            self._emit(
                _info(
                    "shadow_rejected",
                    why=pick.why,
                    symbol=report.symbol,
                    strategy=signal.strategy,
                    code=result.code,
                    reason=result.message,
                )
            )
            return
        plan = msgspec.structs.replace(result, exploration=False, confidence_score=signal.regime_confidence)
        self._shadow_entries += 1
        self._last_shadowed[plan.strategy] = now_ms
        self._send_shadow(
            report,
            plan,
            {
                "why": pick.why,
                "symbol": report.symbol,
                "trade_id": plan.trade_id,
                "strategy": plan.strategy,
                "side": plan.side.value,
                "entry_price": str(plan.entry_price),
                "quantity": str(plan.quantity),
                "stop_price": str(plan.stop_price),
                "risk_usd": plan.risk_usd,
                "strategy_confidence": pick.candidate.strategy_confidence,
                "expectancy_r": pick.candidate.expectancy_r,
                "window_n": pick.candidate.n,
            },
        )

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
                self._emit(
                    _warning("strategy_ineligible", strategy=name, n=stats.n, expectancy_r=stats.expectancy_r)
                )
            elif not ineligible and name in since:
                started = since.pop(name)
                self._emit(
                    _warning(
                        "strategy_eligible_again",
                        strategy=name,
                        n=stats.n,
                        expectancy_r=stats.expectancy_r,
                        ineligible_since_ms=started,
                    )
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
                self._emit(
                    _warning(
                        "strategy_blocked",
                        strategy=name,
                        regimes=[st.regime.value for st in low],
                        confidence=min(st.confidence for st in low),
                        threshold=threshold,
                        n=low[0].stats.n,
                        expectancy_r=low[0].stats.expectancy_r,
                        max_drawdown_pct=low[0].stats.max_drawdown_pct,
                    )
                )
            elif not is_blocked and name in blocked:
                started = blocked.pop(name)
                self._emit(
                    _warning(
                        "strategy_unblocked",
                        strategy=name,
                        ineligible=ineligible,
                        blocked_since_ms=started,
                        confidence=max((st.confidence for st in standings), default=0.0),
                        threshold=threshold,
                    )
                )
        if since != state.ineligible_since or blocked != state.blocked_since:
            self._selection = msgspec.structs.replace(state, ineligible_since=since, blocked_since=blocked)

    def _on_retry(self, msg: RetryRequested, now_ms: int) -> None:
        """An expired entry asks to retry: a new decision at the new price through every rule (BOT_SPEC
        §9 [resolved]). Approved: the reservation becomes the new plan's; rejected: released, and the
        trade ends with the rejection's code. Either way execution gets a `RetryDecided`."""
        plan = msg.plan
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
            self._emit(
                _info(
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
            )
            decided = RetryDecided(trade_id=plan.trade_id, plan=result, rejection=None)
        else:
            if own is not None and msg.filled_qty > 0:
                self._exposures[plan.trade_id] = own  # the filled part stays exposed
            self._count("rejected", result.code)
            self._emit(
                _info(
                    "retry_rejected",
                    symbol=plan.symbol,
                    trade_id=plan.trade_id,
                    strategy=plan.strategy,
                    code=result.code,
                    reason=result.message,
                    values=result.values,
                )
            )
            decided = RetryDecided(trade_id=plan.trade_id, plan=None, rejection=result)
        self._persist(now_ms)
        self._emit(SendRetryDecided(decided=decided, shadow=False))

    def _answer_shadow_retry(self, msg: RetryRequested, now_ms: int) -> None:
        """A shadow trade's retry: the same new decision, against no exposure, never reserved."""
        result = self._decide_retry(msg, now_ms, exposures=())
        plan = result if isinstance(result, TradePlan) else None
        rejection = result if isinstance(result, RiskRejection) else None
        self._emit(
            _info(
                "shadow_retry_decided",
                trade_id=msg.plan.trade_id,
                symbol=msg.plan.symbol,
                approved=plan is not None,
                code=None if rejection is None else rejection.code,
            )
        )
        if not self._has_shadow:
            return
        # Never dropped (a shadow trade waiting for it would never end), never awaited.
        decided = RetryDecided(trade_id=msg.plan.trade_id, plan=plan, rejection=rejection)
        self._emit(SendRetryDecided(decided=decided, shadow=True))

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

    def _send_shadow(self, report: SymbolReport, plan: TradePlan, entry_log: dict[str, object]) -> None:
        """Offer a shadow plan to the shadow book (never reserved, never blocking); `shadow_entry` is
        logged when the runtime answers (with `sent`). Without a shadow book: logged as not sent."""
        if not self._has_shadow:
            self._emit(_info("shadow_entry", **entry_log, sent=False))
            return
        try:
            mid = Decimal(repr(float(report.mid_price)))
        except (InvalidOperation, ValueError, TypeError):
            mid = plan.entry_price
        self._emit(SendShadowPlan(submit=SubmitPlan(plan=plan, mid_price=mid), entry_log=entry_log))

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

    def _approve(
        self, report: SymbolReport, decision: SelectionDecision, plan: TradePlan, now_ms: int
    ) -> None:
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
            # The decision's state carries the preference; the eligibility record is the machine's.
            current = self._selection_now()
            self._selection = msgspec.structs.replace(
                decision.state,
                ineligible_since=current.ineligible_since,
                blocked_since=current.blocked_since,
            )
        self._approvals += 1
        self._count("approved", None)
        self._emit(
            _info(
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
        )
        self._persist(now_ms)  # persist before send
        self._emit(SendPlan(submit=SubmitPlan(plan=plan, mid_price=mid)))
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
        self._emit(
            _info(
                "risk_rejected",
                symbol=report.symbol,
                candle_open_time_ms=report.candle_open_time_ms,
                code=rejection.code,
                reason=rejection.message,
                values=dict(rejection.values),
                strategy=decision.strategy if decision is not None else None,
                **extra,
            )
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
        if report.reply is None:
            return
        verdict = Verdict(
            symbol=report.symbol,
            candle_open_time_ms=report.candle_open_time_ms,
            plan=plan,
            rejection=rejection,
            explanation=explanation,
        )
        self._emit(ReplyVerdict(reply=report.reply, verdict=verdict))

    def _count(self, outcome: str, code: str | None) -> None:
        if code is not None:
            self._rejections[code] = self._rejections.get(code, 0) + 1
        if self._emit_metrics:
            self._emit(IncMetric(name=DECISIONS, labels={"outcome": outcome}))
            if code is not None:
                self._emit(IncMetric(name=REJECTIONS, labels={"reason": code}))

    # -- correlation ----------------------------------------------------------------------------------

    def _on_candle(self, msg: CandleClosed) -> None:
        corr_tf = self._cfg.timeframes.corr_tf
        if msg.interval != corr_tf:
            return
        step = INTERVAL_MS[corr_tf]
        c = msg.candle
        if not (math.isfinite(c.close) and c.close > 0) or c.open_time_ms % step != 0:
            self._emit(
                _error("risk_candle_rejected", symbol=msg.symbol, open_time_ms=c.open_time_ms, close=c.close)
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
            self._emit(
                _warning(
                    "risk_hourly_gap",
                    symbol=msg.symbol,
                    last_open_ms=series.last_open_ms,
                    open_time_ms=c.open_time_ms,
                )
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
            self._emit(_error("risk_fill_rejected", trade_id=msg.trade_id, error=str(exc)))
            return
        if not all(math.isfinite(v) and v > 0 for v in (qty, price)) or not math.isfinite(stop):
            self._emit(
                _error(
                    "risk_fill_rejected",
                    trade_id=msg.trade_id,
                    filled_qty=str(msg.filled_qty),
                    avg_price=str(msg.avg_price),
                    stop_price=str(msg.stop_price),
                )
            )
            return
        previous = self._exposures.get(msg.trade_id)
        if previous is None:
            self._emit(_warning("risk_fill_unknown_trade", trade_id=msg.trade_id, symbol=msg.symbol))
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
        self._emit(
            _info(
                "risk_entry_filled", trade_id=msg.trade_id, symbol=msg.symbol, filled_qty=qty, final=msg.final
            )
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
        self._emit(
            _info(
                "risk_reservation_released",
                trade_id=msg.trade_id,
                symbol=msg.symbol,
                reason=msg.reason,
                known=released is not None,
            )
        )

    def _on_trade_closed(self, msg: TradeClosed, now_ms: int) -> None:
        removed = self._exposures.pop(msg.trade_id, None)
        if removed is None:
            self._emit(_warning("risk_close_unknown_trade", trade_id=msg.trade_id, symbol=msg.symbol))
        self._check_loss_within_risk(msg)
        pnl = msg.realized_pnl_usd
        if self._risk_state is not None and self._risk_state.already_booked(msg.trade_id):
            # Execution re-reports a closed trade after a crash; its pnl is booked once only.
            self._emit(_info("risk_close_already_booked", trade_id=msg.trade_id, symbol=msg.symbol))
            return
        if self._risk_state is None:
            self._emit(_error("risk_pnl_without_state", trade_id=msg.trade_id, realized_pnl_usd=pnl))
        elif not math.isfinite(pnl):
            self._emit(_error("risk_pnl_rejected", trade_id=msg.trade_id, realized_pnl_usd=pnl))
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
            self._emit(_error("risk_trade_record_rejected", trade_id=msg.trade_id, error=str(exc)))
            trade = None
        if trade is not None:
            self._tracker.record(trade)
            self._refresh_eligibility(now_ms)
        self._persist(now_ms)

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
            self._emit(
                _warning(
                    "loss_beyond_risk",
                    trade_id=msg.trade_id,
                    symbol=msg.symbol,
                    pnl_usd=pnl,
                    risk_usd=float(risk_usd),
                    excess_usd=-pnl - float(risk_usd),
                    pnl_r_multiple=pnl / float(risk_usd),
                    reason=result.get("reason") if isinstance(result, dict) else None,
                )
            )

    def _on_funding_booked(self, msg: FundingBooked, now_ms: int) -> None:
        """Funding is realized PnL when it is paid: into today's and this week's calendar at once."""
        amount = msg.amount_usd
        if self._risk_state is None or not (isinstance(amount, int | float) and math.isfinite(amount)):
            self._emit(
                _error("risk_funding_rejected", trade_id=msg.trade_id, symbol=msg.symbol, amount_usd=amount)
            )
            return
        if msg.trade_id and self._risk_state.already_booked(msg.trade_id):
            # The trade's close was booked already (its record holds this funding): nothing to add.
            self._emit(_warning("risk_funding_after_close", trade_id=msg.trade_id, amount_usd=amount))
            return
        before = self._risk_state
        self._booked(
            before,
            book_funding(
                before,
                trade_id=msg.trade_id,
                amount_usd=float(amount),
                now_ms=now_ms,
                equity_usd=self._booking_equity(before),
                cfg=self._cfg.risk,
            ),
            "risk_funding_booked",
            trade_id=msg.trade_id,
            symbol=msg.symbol,
            amount_usd=float(amount),
        )
        self._persist(now_ms)

    def _booking_equity(self, state: RiskState) -> float:
        """The equity a realized amount is measured against: the account's, else the day's start."""
        return self._equity if self._equity is not None else state.day_start_equity

    def _booked(self, before: RiskState, after: RiskState, event: str, **fields: Any) -> None:
        """Adopt the risk state after a realized amount was booked; log it, and a weekly stop it hit."""
        self._risk_state = after
        if after.pause_until_ms != before.pause_until_ms:
            self._emit(
                _warning(
                    "weekly_stop_hit",
                    week_pnl_pct=after.week_pnl_pct(),
                    pause_until_ms=after.pause_until_ms,
                    reduced_risk_until_ms=after.reduced_risk_until_ms,
                )
            )
        self._emit(_info(event, **fields, day_pnl_pct=after.day_pnl_pct(), week_pnl_pct=after.week_pnl_pct()))

    def _on_shadow_trade_closed(self, msg: ShadowTradeClosed, now_ms: int) -> None:
        """A shadow trade ended: the performance layer learns from it; risk state is untouched."""
        try:
            trade = closed_trade_from_record(msg.record)
        except TradeRecordError as exc:
            self._emit(_error("shadow_trade_record_rejected", trade_id=exc.trade_id, error=str(exc)))
            return
        if trade is None:
            self._emit(_info("shadow_trade_not_closed", trade_id=msg.record.get("trade_id")))
            return
        counted = self._tracker.record(trade)
        self._emit(
            _info(
                "shadow_trade_recorded",
                trade_id=trade.trade_id,
                strategy=trade.strategy,
                counted=counted,
                shadow=True,
                r_multiple=trade.r_multiple,
            )
        )
        self._refresh_eligibility(now_ms)
        self._persist(now_ms)

    def _on_account(self, msg: AccountUpdated, now_ms: int) -> None:
        values = (msg.equity_usd, msg.available_balance_usd)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            self._emit(
                _error(
                    "risk_account_rejected",
                    equity_usd=msg.equity_usd,
                    available_balance_usd=msg.available_balance_usd,
                )
            )
            return
        if self._risk_state is None and self._closed_pnl:
            # No persisted calendar (a lost state file): re-derive stops and pauses from the trade log.
            self._risk_state = derive_risk_state(
                self._closed_pnl, now_ms=now_ms, equity_usd=msg.equity_usd, cfg=self._cfg.risk
            )
            self._emit(
                _warning(
                    "risk_state_derived",
                    trades=len(self._closed_pnl),
                    day_pnl_pct=self._risk_state.day_pnl_pct(),
                    week_pnl_pct=self._risk_state.week_pnl_pct(),
                    pause_until_ms=self._risk_state.pause_until_ms,
                )
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
        self._persist(now_ms)

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
        self._emit(
            _info(
                "risk_portfolio_synced",
                exposures=len(synced),
                foreign=sum(1 for e in synced.values() if e.foreign),
                symbols=sorted({e.symbol for e in synced.values()}),
            )
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

    def _persist(self, now_ms: int) -> None:
        """Ask for the risk and selection state to be written if they changed (one transaction)."""
        if not self._persists:
            return
        risk = (
            self._risk_state
            if self._risk_state is not None and self._risk_state != self._saved_risk
            else None
        )
        sel = (
            self._selection
            if self._selection is not None and self._selection != self._saved_selection
            else None
        )
        if risk is None and sel is None:
            return
        self._emit(Persist(risk_state=risk, selection_state=sel, now_ms=now_ms))
        self._saved_risk, self._saved_selection = self._risk_state, self._selection

    def _publish_metrics(self) -> None:
        if not self._emit_metrics:
            return
        exposures = tuple(self._exposures.values())
        risk_usd = open_risk_usd(exposures, self._cfg)
        self._emit(SetMetric(name=OPEN_RISK_USD, value=risk_usd))
        # open_positions is Execution's: it follows the account's positions, not the risk book.
        if self._equity is not None:
            self._emit(SetMetric(name=EQUITY, value=self._equity))
            if self._equity > 0:
                self._emit(SetMetric(name=OPEN_RISK_PCT, value=risk_usd / self._equity))


def _strategy_priority(name: str) -> int:
    return STRATEGY_NAMES.index(name) if name in STRATEGY_NAMES else len(STRATEGY_NAMES)


def _input_error(exc: Exception) -> RiskRejection:
    values: dict[str, float | str] = {"error": str(exc)}
    field = getattr(exc, "field", None)
    if isinstance(field, str):
        values["field"] = field
    return RiskRejection(code=INPUT_ERROR, message=f"malformed input: {exc}", values=values)

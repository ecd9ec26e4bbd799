"""Every trade's order lifecycle as a pure state machine: messages in, effects out (issue 12, BOT_SPEC §9–§11).

`ExecutionMachine` owns the per-trade `TradeLifecycle`s (`core/lifecycle.py`), the timers they ask for,
the start-up and periodic reconciliation, the protection watchdog and the order of everything that
happens when a trade closes. `handle(message, now_ms=...)` returns the effects to carry out, in order;
it never awaits, never does I/O, never reads a clock and never calls a logger. `actors/execution.py` is
its trio shell; a discrete-event replay runtime can drive the same machine by answering the same
requests synchronously (the paper engine called directly, the store and the journal written inline).

The policy (what the Execution actor did before it became a machine) is described in
`actors/execution.py`; this docstring is the runtime contract.

Inputs (`ExecutionInput`):
- `Start()`: once, first. Finishes closed trades never journaled, reconciles the persisted lifecycles
  with the exchange, rejects retries pending at the restart and starts the periodic reconcile timer.
  A runtime signals readiness (and delivers the `Send*` effects it held back, see below) once the
  procedure has ended, i.e. once `pending` is False after `Start`.
- the inbox (`ExecutionInbox`: `SubmitPlan`, `RetryDecided`, `AmendStop`, `KillSwitch`, `Resume`,
  `StopIntake`, `BookUpdated`, `MarkUpdated`, `RepublishPositions`, `UniverseChanged`) and the
  gateway's events (`OrderUpdate`, `FundingPaid`, `AccountChanged`, `PositionChanged`, `ResyncNeeded`),
  in the order the runtime merges them;
- `TimerFired(key)`: a `SetTimer` fell due (see below);
- `InboxClosed()`: every sender of the inbox is gone (only logged; the runtime stops afterwards);
- the answers to requests: `GatewayReplied` / `GatewayFailed`, `Persisted`, `StateRead`,
  `JournalWritten`.

Requests (the effect that ends a batch: nothing follows it; the machine is `pending` until answered).
While a request is pending the machine accepts only its answer (same `request_id`); anything else is
refused with `ExecutionMachineError`, so "one exchange call at a time, answered before the next inbox
message or timer" holds in every runtime. Each is answerable synchronously:
- `GatewayCall(request_id, call)`: call the exchange gateway (`ExchangeGateway`): `PrepareSymbol`
  (`prepare_symbol`), `PlaceOrder` (`place_order`), `PlaceStop` (`place_stop`), `CancelOrder`
  (`cancel_order`, or `cancel_stop` when `is_stop`), `QueryOrder` (`query_order` / `query_stop`),
  `OpenOrders`, `Positions`, `Account`, `UserTrades`. Answer `GatewayReplied(request_id, result)` with
  the method's return value (None for `prepare_symbol`, `OrderState | None` for a cancel or a query),
  or `GatewayFailed(request_id, error)` with the exception it raised (any `Exception`; the machine
  classifies it exactly as the actor did: venue rejection, unknown outcome, gone order, ...).
- `Persist(request_id, state, commands, now_ms)`: `StateStore.persist(state, commands, now_ms=now_ms)`
  in one transaction, BEFORE anything that follows. Answer `Persisted(request_id)`, or
  `Persisted(request_id, refused_cid=...)` when the store raised `DuplicateClientOrderId` (that
  placement is then never sent). Any other failure is a crash: raise it, never answer, so the
  `GatewayCall` the snapshot covers never leaves.
- `ReadState(request_id, query)`: `LoadLifecycle` (`store.load_lifecycle`), `LoadLifecycles`
  (`store.load_lifecycles(include_closed=...)`), `GetMeta` (`store.get_meta`); answer
  `StateRead(request_id, value)`. A failure is a crash.
- `WriteJournal(request_id, trade_id, record)`: append the trade record to the journal (blocking,
  fsync). Answer `JournalWritten(request_id, outcome)`: `WRITTEN`, `DUPLICATE` (`DuplicateTradeId`,
  counts as written) or `QUARANTINED` (`InvalidTradeRecord`, with its message). Any other failure is
  a crash. The record is always written before the `SendRisk(TradeClosed)` and the
  `SetMeta(journaled:<id>)` that follow it.

Effects performed without an answer, in order:
- `SetMeta(key, value)`: `store.set_meta` (a failure is a crash).
- `SetTimer(key, at_ms)`: fire `TimerFired(key)` when the clock of `now_ms` reaches `at_ms`; a second
  `SetTimer` with a live key replaces it. Timers due at the same time fire in the order they were set,
  each only while no request is pending (between inbox messages). `CancelTimer(key)`: forget it (a
  stale `TimerFired` for an unknown key is ignored).
- `SendRisk(message)`: deliver to PortfolioRisk (the trio shell awaits it: back-pressure).
  `SendSymbol(symbol, message)`: deliver the `PositionUpdated` to that symbol's actor (never blocking:
  the trio shell keeps the latest per trade when its inbox is full). Before `Start` has ended a
  runtime holds both back and delivers them, in order, once it is started.
- `Log`: write a log record (`machines.effects.write_log`).
- `ReportFault(kind, symbol, detail)`: tell health (RATE_LIMIT, TIMESTAMP, SERVER_ERROR,
  UNEXPECTED_EXCEPTION). `RaiseAlert(code, symbol, message)`: an operator alert (the lifecycle's).
- `SetGauge` / `IncCounter`: /metrics updates (only when built with `publish_metrics=True`).
- `Crash(error)`: the last effect after an exception escaped the machine (a start-up reconcile the
  exchange refused, a bug): the runtime raises `error`. A crashed machine refuses every message.

Time: `now_ms` is the wall time of the message (milliseconds since the epoch; the event time in a
replay); it stamps lifecycle transitions, persisted rows and timer deadlines (`at_ms = now_ms + delay`).
Pass the current time with every answer too (the trio shell reads its wall clock before each `handle`).

Delivery order (what the trio shell does; a replay runtime reproduces it for parity, as
`tests/machines/execution_driver.py` does and `tests/machines/test_execution_parity.py` checks):
inbox messages and gateway events in arrival order, each handled to the end (every request answered)
before the next; the exchange's events caused by a call are delivered after the message that made it
has ended, in the order the exchange emitted them; at an instant where timers are due, every due timer
fires (in deadline, then set order) before the events those timers caused are delivered.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Generator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, TypeAlias, TypeVar, assert_never, cast

import msgspec

from futures_actor.actors.messages import (
    AccountUpdated,
    AmendStop,
    BookUpdated,
    EntryAbandoned,
    EntryFilled,
    ExecutionSync,
    ExecutionSynced,
    FundingBooked,
    KillSwitch,
    MarkUpdated,
    PositionUpdated,
    RepublishPositions,
    Resume,
    RetryDecided,
    RetryRequested,
    StopIntake,
    SubmitPlan,
    TradeClosed,
    UniverseChanged,
)
from futures_actor.actors.metrics import ERRORS, OPEN_POSITIONS, ORDERS, UNPROTECTED_POSITIONS
from futures_actor.binance import errors as bx
from futures_actor.binance.gateway import (
    AccountChanged,
    AccountState,
    GatewayEvent,
    OrderRequest,
    OrderState,
    OrderUpdate,
    PositionChanged,
    PositionState,
    ResyncNeeded,
    StopRequest,
    TradeFill,
)
from futures_actor.binance.gateway import FundingPaid as GatewayFundingPaid
from futures_actor.core import lifecycle as lcm
from futures_actor.core.config import BotConfig
from futures_actor.core.ids import parse_client_order_id, trade_key
from futures_actor.core.types import OrderRole, Side, SymbolRules
from futures_actor.machines.effects import Log, LogLevel

__all__ = [
    "ADOPTION_SEQ_KEY",
    "CLOSED_TRADES_KEPT",
    "FOREIGN_PREFIX",
    "Account",
    "CancelOrder",
    "CancelTimer",
    "Crash",
    "ExecutionEffect",
    "ExecutionInbox",
    "ExecutionInput",
    "ExecutionMachine",
    "ExecutionMachineError",
    "GatewayCall",
    "GatewayFailed",
    "GatewayReplied",
    "GatewayRequest",
    "GetMeta",
    "InboxClosed",
    "IncCounter",
    "JournalWritten",
    "LoadLifecycle",
    "LoadLifecycles",
    "OpenOrders",
    "Persist",
    "Persisted",
    "PlaceOrder",
    "PlaceStop",
    "Positions",
    "PrepareSymbol",
    "QueryOrder",
    "RaiseAlert",
    "ReadState",
    "ReportFault",
    "SendRisk",
    "SendSymbol",
    "SetGauge",
    "SetMeta",
    "SetTimer",
    "Start",
    "StateRead",
    "TimerFired",
    "UserTrades",
    "WriteJournal",
    "journal_key",
]

CLOSED_TRADES_KEPT: Final = 1000  # closed lifecycles kept in memory for late events
FOREIGN_PREFIX: Final = "foreign-"
ADOPTION_SEQ_KEY: Final = "adoption_seq"  # store meta: the next adoption's sequence number (never reused)
_JOURNAL_KEY: Final = "journaled:"
_MS_PER_S: Final = 1000
_LIVE_ORDER_STATES: Final = tuple(st.value for st in lcm.OrderStatus if st.live)
_STOP_TYPES: Final = frozenset({"STOP_MARKET", "STOP"})
_ENTRY_PHASES: Final = frozenset(
    {lcm.Phase.PENDING_ENTRY, lcm.Phase.ENTRY_WORKING, lcm.Phase.ENTRY_CANCELING}
)
_REACHED: Final = frozenset(
    {lcm.OrderStatus.WORKING, lcm.OrderStatus.FILLED, lcm.OrderStatus.CANCELED, lcm.OrderStatus.EXPIRED}
)
_FOUND_STATUS: Final[dict[str, str]] = {
    "NEW": "NEW",
    "PARTIALLY_FILLED": "PARTIALLY_FILLED",
    "TRIGGERED": "NEW",  # a triggered stop's child is working in the matching engine
    "FILLED": "FILLED",
    "CANCELED": "CANCELED",
    "EXPIRED": "EXPIRED",
    "REJECTED": "REJECTED",
}
# Health fault kinds (core/health.FaultKind values) by gateway error.
_FAULT_RATE_LIMIT: Final = "RATE_LIMIT"
_FAULT_TIMESTAMP: Final = "TIMESTAMP"
_FAULT_SERVER: Final = "SERVER_ERROR"
_FAULT_UNEXPECTED: Final = "UNEXPECTED_EXCEPTION"
# Timer keys (`SetTimer.key`): one periodic reconcile, one pending position check, one TTL per entry
# order (by client id) and one key per deferred retry.
_RECONCILE: Final = "reconcile"
_POSITION_CHECK: Final = "position_check"
_TTL_PREFIX: Final = "ttl:"
_RETRY_PREFIX: Final = "retry:"


def journal_key(trade_id: str) -> str:
    """The store meta key marking a closed trade as journaled."""
    return _JOURNAL_KEY + trade_id


class ExecutionMachineError(RuntimeError):
    """The runtime broke the machine's contract (a message while a request is pending, an answer
    nobody asked for or of the wrong kind, a message after `Crash`): a bug in the runtime."""


# --- inputs -----------------------------------------------------------------------------------------


class Start(msgspec.Struct, frozen=True, kw_only=True):
    """Run the start-up procedure (journal what is pending, reconcile, start the reconcile timer)."""


class TimerFired(msgspec.Struct, frozen=True, kw_only=True):
    """The timer set with `SetTimer(key)` fell due."""

    key: str


class InboxClosed(msgspec.Struct, frozen=True, kw_only=True):
    """Every sender of the inbox is gone."""


class GatewayReplied(msgspec.Struct, frozen=True, kw_only=True):
    """The gateway call `request_id` returned `result`."""

    request_id: int
    result: object


class GatewayFailed(msgspec.Struct, frozen=True, kw_only=True):
    """The gateway call `request_id` raised `error`."""

    request_id: int
    error: Exception


class Persisted(msgspec.Struct, frozen=True, kw_only=True):
    """The `Persist` is written; or nothing was, because `refused_cid` had been recorded before."""

    request_id: int
    refused_cid: str | None = None


class StateRead(msgspec.Struct, frozen=True, kw_only=True):
    """The store's answer to a `ReadState` (a `LifecycleState | None`, a list of them, a `str | None`)."""

    request_id: int
    value: object


JournalOutcome = Literal["WRITTEN", "DUPLICATE", "QUARANTINED"]


class JournalWritten(msgspec.Struct, frozen=True, kw_only=True):
    """How a `WriteJournal` ended (`error`: the quarantine reason)."""

    request_id: int
    outcome: JournalOutcome
    error: str = ""


ExecutionInbox: TypeAlias = (
    SubmitPlan
    | RetryDecided
    | AmendStop
    | KillSwitch
    | Resume
    | StopIntake
    | BookUpdated
    | MarkUpdated
    | RepublishPositions
    | UniverseChanged
    | ExecutionSync
)
Answer: TypeAlias = GatewayReplied | GatewayFailed | Persisted | StateRead | JournalWritten
ExecutionInput: TypeAlias = ExecutionInbox | GatewayEvent | Start | TimerFired | InboxClosed | Answer
_ANSWERS: Final = (GatewayReplied, GatewayFailed, Persisted, StateRead, JournalWritten)


# --- gateway requests -------------------------------------------------------------------------------


class PrepareSymbol(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    leverage: int


class PlaceOrder(msgspec.Struct, frozen=True, kw_only=True):
    order: OrderRequest


class PlaceStop(msgspec.Struct, frozen=True, kw_only=True):
    stop: StopRequest


class CancelOrder(msgspec.Struct, frozen=True, kw_only=True):
    """`cancel_stop` when `is_stop`, else `cancel_order`; answered `OrderState | None`."""

    symbol: str
    client_id: str
    is_stop: bool


class QueryOrder(msgspec.Struct, frozen=True, kw_only=True):
    """`query_stop` when `is_stop`, else `query_order`; answered `OrderState | None` (None: not found)."""

    symbol: str
    client_id: str
    is_stop: bool


class OpenOrders(msgspec.Struct, frozen=True, kw_only=True):
    """Every open order, regular and algo (`list[OrderState]`)."""


class Positions(msgspec.Struct, frozen=True, kw_only=True):
    """Every non-zero position (`list[PositionState]`)."""


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """The account balances (`AccountState`)."""


class UserTrades(msgspec.Struct, frozen=True, kw_only=True):
    """The account's executions on `symbol` since `start_ms` (`list[TradeFill]`)."""

    symbol: str
    start_ms: int


GatewayRequest: TypeAlias = (
    PrepareSymbol
    | PlaceOrder
    | PlaceStop
    | CancelOrder
    | QueryOrder
    | OpenOrders
    | Positions
    | Account
    | UserTrades
)


# --- store reads ------------------------------------------------------------------------------------


class LoadLifecycle(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: str


class LoadLifecycles(msgspec.Struct, frozen=True, kw_only=True):
    include_closed: bool = False


class GetMeta(msgspec.Struct, frozen=True, kw_only=True):
    key: str


StateQuery: TypeAlias = LoadLifecycle | LoadLifecycles | GetMeta


# --- effects ----------------------------------------------------------------------------------------


class GatewayCall(msgspec.Struct, frozen=True, kw_only=True):
    request_id: int
    call: GatewayRequest


class Persist(msgspec.Struct, frozen=True, kw_only=True):
    request_id: int
    state: lcm.LifecycleState
    commands: tuple[lcm.Command, ...]
    now_ms: int


class ReadState(msgspec.Struct, frozen=True, kw_only=True):
    request_id: int
    query: StateQuery


class WriteJournal(msgspec.Struct, frozen=True, kw_only=True):
    request_id: int
    trade_id: str
    record: dict[str, Any]


class SetMeta(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    value: str


class SetTimer(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    at_ms: int


class CancelTimer(msgspec.Struct, frozen=True, kw_only=True):
    key: str


RiskMessage: TypeAlias = (
    EntryFilled
    | EntryAbandoned
    | PositionUpdated
    | TradeClosed
    | AccountUpdated
    | RetryRequested
    | FundingBooked
    | ExecutionSynced
)


class SendRisk(msgspec.Struct, frozen=True, kw_only=True):
    message: RiskMessage


class SendSymbol(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    message: PositionUpdated


class ReportFault(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    symbol: str
    detail: str


class RaiseAlert(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    symbol: str
    message: str


class SetGauge(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class IncCounter(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    labels: tuple[tuple[str, str], ...] = ()


class Crash(msgspec.Struct, frozen=True, kw_only=True):
    error: Exception


ExecutionEffect: TypeAlias = (
    GatewayCall
    | Persist
    | ReadState
    | WriteJournal
    | SetMeta
    | SetTimer
    | CancelTimer
    | SendRisk
    | SendSymbol
    | Log
    | ReportFault
    | RaiseAlert
    | SetGauge
    | IncCounter
    | Crash
)


# --- procedures -------------------------------------------------------------------------------------


class _PersistCall(msgspec.Struct, frozen=True, kw_only=True):
    state: lcm.LifecycleState
    commands: tuple[lcm.Command, ...]


class _JournalCall(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: str
    record: dict[str, Any]


_Call: TypeAlias = GatewayRequest | StateQuery | _PersistCall | _JournalCall
_T = TypeVar("_T")
Proc: TypeAlias = Generator[_Call, object, _T]
"""A procedure: plain code that `yield`s a request and gets its answer back (the suspended generator is
the machine's pending state). A failed gateway call is thrown in at the `yield`, like the raising
`await` it replaces."""


class _Pending(msgspec.Struct, kw_only=True):
    request_id: int
    proc: Proc[None]
    call: _Call


class _Sent(msgspec.Struct, kw_only=True):
    """What the other actors were last told about one trade."""

    entry_filled: Decimal = Decimal(0)
    entry_final: bool = False
    position: tuple[Decimal, Decimal] = (Decimal(0), Decimal(0))


class _Timer(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["ttl", "retry", "reconcile", "position_check"]
    cid: str = ""
    trade_id: str = ""
    command: lcm.CancelOrder | lcm.QueryOrder | lcm.SyncPosition | None = None
    attempt: int = 0


def _entry_reached_exchange(state: lcm.LifecycleState) -> bool:
    if state.entry_filled > 0:
        return True
    return any(o.role is OrderRole.ENTRY and o.status in _REACHED for o in state.orders.values())


def _entry_rejected(state: lcm.LifecycleState) -> bool:
    return any(
        o.role is OrderRole.ENTRY and o.status is lcm.OrderStatus.REJECTED for o in state.orders.values()
    )


def _log(level: LogLevel, event: str, **fields: object) -> Log:
    return Log(level=level, event=event, fields=fields)


class ExecutionMachine:
    """The single owner of every trade's orders, as a pure machine (see the module docstring)."""

    def __init__(
        self,
        *,
        cfg: BotConfig,
        mode: str,
        rules_by_symbol: Mapping[str, SymbolRules],
        listed_rules: Mapping[str, SymbolRules] | None = None,
        publish_metrics: bool = False,
    ) -> None:
        self._cfg = cfg
        self._xcfg = cfg.execution
        self._mode = mode
        self._rules = dict(rules_by_symbol)
        # Rules of every listed symbol: a position outside the universe is adopted and protected too.
        self._listed_rules = dict(listed_rules or {})
        self._metrics = publish_metrics
        self._prefix = cfg.exchange.client_id_prefix
        stop_pct = max(
            cfg.strategies.trend_pullback.stop_pct,
            cfg.strategies.trend_breakout.stop_pct,
            cfg.strategies.range_mean_reversion.stop_pct,
        )
        self._adopt_stop_pct = {Side.LONG: stop_pct, Side.SHORT: stop_pct}
        self._trades: dict[str, lcm.TradeLifecycle] = {}  # open trades
        self._closed: OrderedDict[str, lcm.TradeLifecycle] = OrderedDict()
        self._by_key: dict[str, str] = {}  # trade key (in client ids) -> trade id
        self._sent: dict[str, _Sent] = {}
        self._persisted: dict[str, bytes] = {}
        self._timers: dict[str, _Timer] = {}  # live timers by key
        self._retry_seq = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._foreign: dict[str, EntryFilled] = {}
        self._mid: dict[str, Decimal] = {}
        self._mark: dict[str, Decimal] = {}
        self._prepared: set[tuple[str, int]] = set()
        self._intake_stopped = False
        self._halted = False
        # Positions the user stream reported changed since the last look (signed amounts), and whether
        # that look is scheduled: see `_on_position_changed`.
        self._reported_amount: dict[str, Decimal] = {}
        self._position_check_due = False
        self.unprotected: list[str] = []  # the watchdog's last finding: positions without a full stop
        # Symbols with a position on the account at the last exchange read (our trades' or anyone's);
        # a symbol leaves it when our last trade on it closes. With the open trades: `open_positions`.
        self._account_positions: set[str] = set()
        self._pending: _Pending | None = None
        self._crashed: Exception | None = None
        self._now_ms = 0
        self._out: list[ExecutionEffect] = []

    # ------------------------------------------------------------------------------------- views

    def open_trades(self) -> list[lcm.TradeLifecycle]:
        """The open trades (read-only use: tests, health)."""
        return list(self._trades.values())

    def trade(self, trade_id: str) -> lcm.TradeLifecycle | None:
        return self._trades.get(trade_id) or self._closed.get(trade_id)

    @property
    def pending(self) -> bool:
        """A request is unanswered: only its answer may come next."""
        return self._pending is not None

    # ------------------------------------------------------------------------------------- handle

    def handle(self, message: ExecutionInput, *, now_ms: int) -> list[ExecutionEffect]:
        """The effects of `message` at wall time `now_ms`, in the order a runtime must perform them.

        Raises `ExecutionMachineError` when the runtime breaks the contract (see the module docstring).
        """
        if self._crashed is not None:
            raise ExecutionMachineError(f"the machine crashed; got {type(message).__name__}")
        self._now_ms = now_ms
        out: list[ExecutionEffect] = []
        self._out = out
        pending = self._pending
        if pending is not None:
            self._pending = None
            try:
                value, error = self._answer_of(pending, message)
            except ExecutionMachineError:
                self._pending = pending
                raise
            self._step(pending.proc, value, error)
        elif isinstance(message, _ANSWERS):
            raise ExecutionMachineError(f"{type(message).__name__} {message.request_id}: nothing was asked")
        else:
            try:
                proc = self._dispatch(message)
            except Exception as exc:
                self._crash(exc)
                proc = None
            if proc is not None:
                self._step(proc, None, None)
        return out

    def _answer_of(self, pending: _Pending, message: ExecutionInput) -> tuple[object, Exception | None]:
        """The value (or the error to throw in) that `message` answers the pending request with."""
        call = pending.call
        rid = pending.request_id
        if not isinstance(message, _ANSWERS) or message.request_id != rid:
            raise ExecutionMachineError(
                f"{type(message).__name__} while request {rid} ({type(call).__name__}) is pending"
            )
        if isinstance(call, _PersistCall):
            if isinstance(message, Persisted):
                return message.refused_cid, None
        elif isinstance(call, _JournalCall):
            if isinstance(message, JournalWritten):
                return message, None
        elif isinstance(call, LoadLifecycle | LoadLifecycles | GetMeta):
            if isinstance(message, StateRead):
                return message.value, None
        elif isinstance(message, GatewayReplied):
            return message.result, None
        elif isinstance(message, GatewayFailed):
            return None, message.error
        raise ExecutionMachineError(
            f"{type(message).__name__} answers request {rid}, a {type(call).__name__}"
        )

    def _step(self, proc: Proc[None], value: object, error: Exception | None) -> None:
        """Run `proc` until it asks for something (then pending) or ends."""
        try:
            call = proc.send(value) if error is None else proc.throw(error)
        except StopIteration:
            return
        except Exception as exc:
            self._crash(exc)
            return
        rid = next(self._request_ids)
        self._pending = _Pending(request_id=rid, proc=proc, call=call)
        self._out.append(self._request(rid, call))

    def _request(self, rid: int, call: _Call) -> ExecutionEffect:
        match call:
            case _PersistCall(state=state, commands=commands):
                return Persist(request_id=rid, state=state, commands=commands, now_ms=self._now_ms)
            case _JournalCall(trade_id=trade_id, record=record):
                return WriteJournal(request_id=rid, trade_id=trade_id, record=record)
            case LoadLifecycle() | LoadLifecycles() | GetMeta():
                return ReadState(request_id=rid, query=call)
            case _:
                return GatewayCall(request_id=rid, call=call)

    def _crash(self, exc: Exception) -> None:
        self._crashed = exc
        self._out.append(Crash(error=exc))

    def _dispatch(self, item: ExecutionInput) -> Proc[None] | None:
        """The procedure for `item`, or None when it was handled at once."""
        match item:
            case SubmitPlan():
                return self._on_submit(item)
            case RetryDecided():
                return self._on_retry_decided(item)
            case AmendStop():
                return self._on_amend(item)
            case KillSwitch(reason=reason):
                return self._on_kill(reason)
            case StopIntake():
                return self._on_stop_intake()
            case Resume(reason=reason):
                self._halted = False
                self._intake_stopped = False
                self._info("execution_resumed", reason=reason)
            case BookUpdated(symbol=symbol, bid=bid, ask=ask):
                if bid > 0 and ask >= bid and math.isfinite(ask):
                    self._mid[symbol] = Decimal(repr((bid + ask) / 2))
                    self._feed_prices(symbol)
            case MarkUpdated(symbol=symbol, mark_price=mark):
                if mark > 0 and math.isfinite(mark):
                    self._mark[symbol] = Decimal(repr(mark))
                    self._feed_prices(symbol)
            case UniverseChanged(rules=rules):
                self._rules.update(rules)
            case ExecutionSync(candle_open_time_ms=t):
                self._send_risk(ExecutionSynced(candle_open_time_ms=t))
            case RepublishPositions(symbol=symbol):
                for lc in list(self._trades.values()):
                    if lc.symbol == symbol and not lc.closed and lc.position_qty > 0:
                        self._position_update(lc.to_state(), lc.position_qty)
            case OrderUpdate():
                return self._on_order_update(item)
            case GatewayFundingPaid():
                return self._on_funding(item)
            case AccountChanged(account=account):
                self._send_risk(self._account_msg(account))
            case PositionChanged():
                self._on_position_changed(item)
            case ResyncNeeded(reason=reason):
                self._warning("resync_needed", reason=reason)
                return self._reconcile(startup=False)
            case Start():
                return self._start()
            case TimerFired(key=key):
                return self._on_timer(key)
            case InboxClosed():
                self._info("execution_inbox_closed", open_trades=len(self._trades))
            case GatewayReplied() | GatewayFailed() | Persisted() | StateRead() | JournalWritten():
                raise ExecutionMachineError(f"{type(item).__name__}: nothing was asked")
            case _:
                assert_never(item)
        return None

    # ------------------------------------------------------------------------------------- start-up

    def _start(self) -> Proc[None]:
        yield from self._journal_pending()
        yield from self._reconcile(startup=True)
        for lc in list(self._trades.values()):
            if lc.retry_pending:
                # The decision asked for before the restart is stale (like a stale entry): no retry.
                yield from self._drive(
                    lc, lcm.RetryRejected(code="RESTART", message="retry pending at restart")
                )
        self._schedule(_RECONCILE, self._xcfg.reconcile_interval_seconds, _Timer(kind="reconcile"))
        self._publish_order_counts()

    def _journal_pending(self) -> Proc[None]:
        """Start-up: finish closed trades whose record was not confirmed written."""
        for state in (yield from self._load_lifecycles(include_closed=True)):
            if state.phase is not lcm.Phase.CLOSED:
                continue
            tid = state.plan.trade_id
            if (yield from self._get_meta(journal_key(tid))) is not None:
                continue
            lc = lcm.TradeLifecycle.from_state(state, config=self._xcfg)
            self._warning("trade_record_pending", trade_id=tid, symbol=state.plan.symbol)
            self._register(lc)
            yield from self._finish_trade(state, lc.trade_record())

    # ------------------------------------------------------------------------------------- timers

    def _schedule(self, key: str, delay_s: float, timer: _Timer) -> None:
        self._timers[key] = timer
        self._out.append(SetTimer(key=key, at_ms=self._now_ms + round(delay_s * _MS_PER_S)))

    def _cancel_timer(self, key: str) -> None:
        if self._timers.pop(key, None) is not None:
            self._out.append(CancelTimer(key=key))

    def _on_timer(self, key: str) -> Proc[None] | None:
        timer = self._timers.pop(key, None)
        if timer is None:
            return None  # cancelled or superseded
        match timer.kind:
            case "ttl":
                lc = self._lc_for_cid(timer.cid)
                if lc is None:
                    return None
                self._info("entry_ttl_expired", trade_id=lc.trade_id, symbol=lc.symbol, cid=timer.cid)
                return self._drive(lc, lcm.TtlExpired(cid=timer.cid))
            case "retry":
                return self._retry(timer)
            case "position_check":
                return self._check_positions()
            case "reconcile":
                return self._periodic_reconcile()
            case _:
                assert_never(timer.kind)

    def _periodic_reconcile(self) -> Proc[None]:
        yield from self._reconcile(startup=False)
        self._schedule(_RECONCILE, self._xcfg.reconcile_interval_seconds, _Timer(kind="reconcile"))

    def _on_position_changed(self, ev: PositionChanged) -> None:
        """The user stream says a position changed. Our own fills say so too (and their order update may
        come just before or after): look again `execution.position_check_delay_seconds` later, once."""
        self._reported_amount[ev.symbol] = ev.amount
        if not self._position_check_due:
            self._position_check_due = True
            self._schedule(
                _POSITION_CHECK, self._xcfg.position_check_delay_seconds, _Timer(kind="position_check")
            )

    def _held_amount(self, symbol: str) -> Decimal:
        """The signed position our open trades account for on `symbol` (adopted ones included)."""
        return sum(
            (
                t.position_qty * t.side.sign
                for t in self._trades.values()
                if t.symbol == symbol and not t.closed
            ),
            Decimal(0),
        )

    def _check_positions(self) -> Proc[None]:
        """A reported position our trades do not account for (opened, grown or shrunk by hand, or a trade
        of ours gone wrong): reconcile now, so the watchdog protects it in seconds, not at the next
        periodic reconcile (`execution.reconcile_interval_seconds`)."""
        self._position_check_due = False
        unexplained = {
            symbol: amount
            for symbol, amount in sorted(self._reported_amount.items())
            if amount != self._held_amount(symbol)
        }
        self._reported_amount.clear()
        if not unexplained:
            return
        self._warning(
            "position_changed_outside",
            positions={s: str(a) for s, a in unexplained.items()},
            held={s: str(self._held_amount(s)) for s in unexplained},
        )
        yield from self._reconcile(startup=False)

    def _backoff(self, attempt: int) -> float:
        x = self._cfg.exchange
        return float(min(x.retry_wait_initial_seconds * 2 ** max(attempt - 1, 0), x.retry_wait_max_seconds))

    def _retry(self, timer: _Timer) -> Proc[None]:
        lc = self.trade(timer.trade_id)
        cmd = timer.command
        if cmd is None:
            return
        if lc is None:
            if isinstance(cmd, lcm.CancelOrder):  # an order no trade owns
                yield from self._cancel(None, cmd, timer.attempt)
            return
        if isinstance(cmd, lcm.SyncPosition):
            if not lc.closed and lc.sync_requested:
                ev = yield from self._execute(lc, cmd, attempt=timer.attempt)
                if ev is not None:
                    yield from self._drive(lc, ev)
            return
        order = lc.orders.get(cmd.cid)
        if order is None or not order.status.live:
            return  # resolved meanwhile (an event, a reconcile)
        ev = yield from self._execute(lc, cmd, attempt=timer.attempt)
        if ev is not None:
            yield from self._drive(lc, ev)

    def _defer(
        self, trade_id: str, cmd: lcm.CancelOrder | lcm.QueryOrder | lcm.SyncPosition, attempt: int
    ) -> None:
        self._schedule(
            f"{_RETRY_PREFIX}{next(self._retry_seq)}",
            self._backoff(attempt),
            _Timer(kind="retry", trade_id=trade_id, command=cmd, attempt=attempt + 1),
        )

    # ------------------------------------------------------------------------------------- registry

    def _register(self, lc: lcm.TradeLifecycle) -> None:
        tid = lc.trade_id
        self._by_key[trade_key(tid)] = tid
        if lc.closed:
            self._trades.pop(tid, None)
            self._closed[tid] = lc
            self._closed.move_to_end(tid)
            while len(self._closed) > CLOSED_TRADES_KEPT:
                old, _ = self._closed.popitem(last=False)
                if self._by_key.get(trade_key(old)) == old:
                    del self._by_key[trade_key(old)]
                self._sent.pop(old, None)
                self._persisted.pop(old, None)
        else:
            self._closed.pop(tid, None)
            self._trades[tid] = lc
        if lc.closed and self._open_on_symbol(lc.symbol) is None:
            self._account_positions.discard(lc.symbol)
        self._publish_open_positions()

    def _publish_open_positions(self) -> None:
        """The `open_positions` gauge: symbols with a position now, per our trades and the last read."""
        if self._metrics:
            held = {t.symbol for t in self._trades.values() if t.position_qty > 0}
            self._out.append(SetGauge(name=OPEN_POSITIONS, value=float(len(held | self._account_positions))))

    def _publish_order_counts(self) -> None:
        """The /metrics gauge of our live orders by state (SENT, WORKING, UNKNOWN)."""
        if not self._metrics:
            return
        counts = dict.fromkeys(_LIVE_ORDER_STATES, 0)
        for trade in self._trades.values():
            for order in trade.live_orders():
                counts[order.status.value] = counts.get(order.status.value, 0) + 1
        for state, n in counts.items():
            self._out.append(SetGauge(name=ORDERS, value=float(n), labels=(("state", state),)))

    def _lc_for_cid(self, cid: str) -> lcm.TradeLifecycle | None:
        parsed = parse_client_order_id(cid, prefix=self._prefix)
        if parsed is None:
            return None
        tid = self._by_key.get(parsed.trade_key)
        return None if tid is None else self.trade(tid)

    def _open_on_symbol(self, symbol: str) -> lcm.TradeLifecycle | None:
        for lc in self._trades.values():
            if lc.symbol == symbol and not lc.closed:
                return lc
        return None

    # ------------------------------------------------------------------------------------- inbox handlers

    def _refuse(self, msg: SubmitPlan, reason: str) -> None:
        plan = msg.plan
        self._warning("plan_refused", trade_id=plan.trade_id, symbol=plan.symbol, reason=reason)
        self._send_risk(EntryAbandoned(trade_id=plan.trade_id, symbol=plan.symbol, reason=reason))

    def _on_submit(self, msg: SubmitPlan) -> Proc[None]:
        plan = msg.plan
        if self._halted:
            self._refuse(msg, "KILL_SWITCH")
            return
        if self._intake_stopped:
            self._refuse(msg, "INTAKE_STOPPED")
            return
        known = self.trade(plan.trade_id)
        stored = (yield from self._load_lifecycle(plan.trade_id)) if known is None else known.to_state()
        if stored is not None:
            self._warning("plan_duplicate", trade_id=plan.trade_id, symbol=plan.symbol, phase=stored.phase)
            if stored.phase is lcm.Phase.CLOSED:
                self._send_risk(
                    EntryAbandoned(trade_id=plan.trade_id, symbol=plan.symbol, reason="DUPLICATE")
                )
            return
        if self._open_on_symbol(plan.symbol) is not None:
            self._refuse(msg, "SYMBOL_BUSY")
            return
        rules = self._rules.get(plan.symbol)
        if rules is None:
            self._refuse(msg, "NO_SYMBOL_RULES")
            return
        try:
            lc = lcm.TradeLifecycle(
                plan=plan, rules=rules, config=self._xcfg, prefix=self._prefix, mode=self._mode
            )
        except lcm.LifecycleError as exc:
            self._error("plan_invalid", trade_id=plan.trade_id, symbol=plan.symbol, error=str(exc))
            self._refuse(msg, "INVALID_PLAN")
            return
        yield from self._prepare(plan.symbol, plan.leverage)
        mid = msg.mid_price if msg.mid_price > 0 else self._mid.get(plan.symbol)
        if mid is not None:
            lc.handle(lcm.MidPrice(mid=mid, mark=self._mark.get(plan.symbol)), now_ms=self._now_ms)
        self._register(lc)
        self._sent[lc.trade_id] = _Sent()
        self._info(
            "plan_accepted",
            trade_id=plan.trade_id,
            symbol=plan.symbol,
            side=plan.side.value,
            qty=str(plan.quantity),
            entry=str(plan.entry_price),
            stop=str(plan.stop_price),
        )
        yield from self._commit(lc, lc.start(now_ms=self._now_ms))

    def _on_retry_decided(self, msg: RetryDecided) -> Proc[None]:
        lc = self._trades.get(msg.trade_id)
        if lc is None:
            self._info("retry_decision_ignored", trade_id=msg.trade_id, why="no such open trade")
            return
        if msg.plan is not None:
            yield from self._prepare(msg.plan.symbol, msg.plan.leverage)
            yield from self._drive(lc, lcm.RetryApproved(plan=msg.plan))
        else:
            rejection = msg.rejection
            code = rejection.code if rejection is not None else "REJECTED"
            text = rejection.message if rejection is not None else ""
            yield from self._drive(lc, lcm.RetryRejected(code=code, message=text))

    def _prepare(self, symbol: str, leverage: float) -> Proc[None]:
        lev = max(1, math.ceil(leverage))
        if (symbol, lev) in self._prepared:
            return
        try:
            yield PrepareSymbol(symbol=symbol, leverage=lev)
            self._prepared.add((symbol, lev))
        except bx.BinanceError as exc:
            self._fault(exc, symbol)
            self._error("prepare_symbol_failed", symbol=symbol, leverage=lev, error=str(exc))

    def _on_amend(self, msg: AmendStop) -> Proc[None]:
        lc = self._trades.get(msg.trade_id)
        if lc is None or lc.symbol != msg.symbol:
            self._info("amend_ignored", trade_id=msg.trade_id, symbol=msg.symbol, why="no such open trade")
            return
        try:
            price = Decimal(repr(msg.new_stop))
        except InvalidOperation:
            price = Decimal(0)
        if not price.is_finite() or price <= 0:
            self._error("amend_invalid", trade_id=msg.trade_id, symbol=msg.symbol, new_stop=msg.new_stop)
            return
        before = lc.stop_price
        yield from self._drive(lc, lcm.AmendStop(new_price=price))
        if lc.stop_price != before:
            self._info(
                "stop_moved",
                trade_id=lc.trade_id,
                symbol=lc.symbol,
                old=str(before),
                new=str(lc.stop_price),
                reason=msg.reason,
            )

    def _on_kill(self, reason: str) -> Proc[None]:
        """Close every position on the account (BOT_SPEC §9), not only our trades' quantities.

        Each round first adopts what no trade owns and sizes every trade to its exchange position, then
        runs every trade's closing loop; it repeats (at most `kill_switch_max_attempts` rounds) while the
        exchange still shows a position that no closing trade is working on."""
        self._halted = True
        self._warning("kill_switch", reason=reason, open_trades=len(self._trades))
        rest: list[PositionState] = []
        for round_no in range(1, self._xcfg.kill_switch_max_attempts + 1):
            yield from self._reconcile(startup=False, flatten=True)
            for lc in list(self._trades.values()):
                if lc.phase is not lcm.Phase.KILLING and not lc.closed:
                    yield from self._drive(lc, lcm.Kill())
            try:
                left = [p for p in (yield from self._positions()) if p.quantity > 0]
            except Exception as exc:
                self._fault(exc, "")
                self._error("kill_switch_positions_failed", round=round_no, error=str(exc))
                return
            self._account_positions = {p.symbol for p in left}
            self._publish_open_positions()
            killing = {lc.symbol for lc in self._trades.values() if lc.phase is lcm.Phase.KILLING}
            rest = [p for p in left if p.symbol not in killing]
            self._info(
                "kill_switch_round",
                round=round_no,
                open_positions=[f"{p.symbol} {p.side} {p.quantity}" for p in left],
            )
            if not rest:
                return
        self._error(
            "alert",
            code="KILL_NOT_FLAT",
            message=f"positions left after the kill switch: {[p.symbol for p in rest]}",
        )

    def _on_stop_intake(self) -> Proc[None]:
        """Cancel every working entry (no retry); stops and targets stay on the exchange."""
        self._intake_stopped = True
        self._info("intake_stopped", open_trades=len(self._trades))
        for lc in list(self._trades.values()):
            if lc.phase not in _ENTRY_PHASES:
                continue
            for o in lc.live_orders(OrderRole.ENTRY):
                self._cancel_timer(_TTL_PREFIX + o.cid)
            yield from self._drive(lc, lcm.StopEntry())

    def _feed_prices(self, symbol: str) -> None:
        mid = self._mid.get(symbol)
        mark = self._mark.get(symbol)
        ref = mid if mid is not None else mark
        if ref is None:
            return
        for lc in self._trades.values():
            if lc.symbol == symbol:
                lc.handle(lcm.MidPrice(mid=ref, mark=mark), now_ms=self._now_ms)

    # ------------------------------------------------------------------------------------- gateway events

    def _on_order_update(self, ev: OrderUpdate) -> Proc[None]:
        o = ev.order
        lc = self._lc_for_cid(o.client_id)
        if lc is None:
            if parse_client_order_id(o.client_id, prefix=self._prefix) is not None:
                self._warning("order_update_unowned", cid=o.client_id, symbol=o.symbol, status=o.status)
            return
        event: lcm.Event
        if ev.last_fill_qty > 0:
            event = lcm.OrderFilled(
                cid=o.client_id,
                qty=ev.last_fill_qty,
                cum_qty=o.executed_qty,
                price=ev.last_fill_price,
                fee=float(ev.fee),
                is_maker=ev.is_maker,
                ts_ms=ev.ts_ms or self._now_ms,
            )
            self._info(
                "order_filled",
                trade_id=lc.trade_id,
                symbol=lc.symbol,
                cid=o.client_id,
                qty=str(ev.last_fill_qty),
                cum_qty=str(o.executed_qty),
                price=str(ev.last_fill_price),
            )
        elif o.status in ("NEW", "PARTIALLY_FILLED", "TRIGGERED"):
            event = lcm.OrderAccepted(cid=o.client_id)
        elif o.status == "REJECTED":
            event = lcm.OrderRejected(cid=o.client_id, code=0, message=ev.reject_reason)
        else:
            event = self._found(o)
            self._info("order_done", trade_id=lc.trade_id, symbol=lc.symbol, cid=o.client_id, status=o.status)
        yield from self._drive(lc, event)

    def _on_funding(self, ev: GatewayFundingPaid) -> Proc[None]:
        lc = next((t for t in self._trades.values() if t.symbol == ev.symbol and t.position_qty > 0), None)
        booked = FundingBooked(
            trade_id="" if lc is None else lc.trade_id,
            symbol=ev.symbol,
            amount_usd=float(ev.amount),
            ts_ms=ev.ts_ms or self._now_ms,
        )
        if lc is None:
            self._info("funding_unowned", symbol=ev.symbol, amount=str(ev.amount))
            self._send_risk(booked)
            return
        self._info("funding_paid", trade_id=lc.trade_id, symbol=ev.symbol, amount=str(ev.amount))
        yield from self._drive(lc, lcm.FundingPaid(amount=float(ev.amount)))
        # After the lifecycle holds it: risk books funding when paid (issue 10 #4).
        self._send_risk(booked)

    # ------------------------------------------------------------------------------------- driving

    def _drive(self, lc: lcm.TradeLifecycle, event: lcm.Event) -> Proc[None]:
        """Apply `event` to `lc`, then persist, execute and feed back until the trade is quiet."""
        queue: deque[lcm.Event] = deque([event])
        while queue:
            ev = queue.popleft()
            try:
                cmds = lc.handle(ev, now_ms=self._now_ms)
            except lcm.LifecycleError as exc:
                self._error("lifecycle_refused", trade_id=lc.trade_id, symbol=lc.symbol, error=str(exc))
                continue
            yield from self._commit(lc, cmds, queue)

    def _commit(
        self, lc: lcm.TradeLifecycle, cmds: list[lcm.Command], queue: deque[lcm.Event] | None = None
    ) -> Proc[None]:
        """Persist the transition (before any send), carry out `cmds`, notify the other actors."""
        own_queue = queue is None
        if queue is None:
            queue = deque()
        state = lc.to_state()
        cmds = yield from self._persist(lc, state, cmds, queue)
        self._register(lc)
        for cmd in cmds:
            ev = yield from self._execute(lc, cmd)
            if ev is not None:
                queue.append(ev)
        self._notify(lc, state)
        self._publish_order_counts()
        if own_queue:
            while queue:
                yield from self._drive(lc, queue.popleft())

    def _persist(
        self,
        lc: lcm.TradeLifecycle,
        state: lcm.LifecycleState,
        cmds: list[lcm.Command],
        queue: deque[lcm.Event],
    ) -> Proc[list[lcm.Command]]:
        placements = [c for c in cmds if isinstance(c, lcm.PlaceOrder | lcm.PlaceAlgoOrder)]
        blob = lcm.encode_state(state)
        if not placements and self._persisted.get(lc.trade_id) == blob:
            return cmds
        while True:
            refused = yield _PersistCall(state=state, commands=tuple(cmds))
            if refused is None:
                break
            # Already sent by an earlier incarnation: never again; resolve it by a query.
            cid = str(refused)
            self._error("cid_already_sent", trade_id=lc.trade_id, symbol=lc.symbol, cid=cid)
            cmds = [
                c for c in cmds if not (isinstance(c, lcm.PlaceOrder | lcm.PlaceAlgoOrder) and c.cid == cid)
            ]
            queue.append(lcm.OrderStatusUnknown(cid=cid))
        self._persisted[lc.trade_id] = blob
        return cmds

    def _execute(
        self, lc: lcm.TradeLifecycle | None, cmd: lcm.Command, *, attempt: int = 1
    ) -> Proc[lcm.Event | None]:
        match cmd:
            case lcm.PlaceOrder():
                req = OrderRequest(
                    symbol=cmd.symbol,
                    client_id=cmd.cid,
                    side="BUY" if cmd.side == "BUY" else "SELL",
                    type=cmd.order_type,
                    quantity=cmd.qty,
                    price=cmd.price,
                    reduce_only=cmd.reduce_only,
                    time_in_force=cmd.time_in_force,
                )
                try:
                    st = yield from self._order_call(PlaceOrder(order=req))
                except Exception as exc:
                    return self._placement_failed(cmd.trade_id, cmd.symbol, cmd.cid, exc)
                self._info(
                    "order_placed",
                    trade_id=cmd.trade_id,
                    symbol=cmd.symbol,
                    cid=cmd.cid,
                    role=cmd.role.name,
                    type=cmd.order_type,
                    side=cmd.side,
                    qty=str(cmd.qty),
                    price=None if cmd.price is None else str(cmd.price),
                    reduce_only=cmd.reduce_only,
                )
                return self._placed(st)
            case lcm.PlaceAlgoOrder():
                sreq = StopRequest(
                    symbol=cmd.symbol,
                    client_id=cmd.cid,
                    side="BUY" if cmd.side == "BUY" else "SELL",
                    trigger_price=cmd.trigger_price,
                    quantity=cmd.qty,
                    working_type=cmd.working_type,
                    reduce_only=cmd.reduce_only,
                )
                try:
                    st = yield from self._order_call(PlaceStop(stop=sreq))
                except Exception as exc:
                    return self._placement_failed(cmd.trade_id, cmd.symbol, cmd.cid, exc)
                self._info(
                    "stop_placed",
                    trade_id=cmd.trade_id,
                    symbol=cmd.symbol,
                    cid=cmd.cid,
                    side=cmd.side,
                    qty=str(cmd.qty),
                    trigger=str(cmd.trigger_price),
                )
                return self._placed(st)
            case lcm.CancelOrder():
                return (yield from self._cancel(lc, cmd, attempt))
            case lcm.QueryOrder():
                if lc is not None:
                    order = lc.orders.get(cmd.cid)
                    if attempt == 1 and order is not None and order.status is lcm.OrderStatus.UNKNOWN:
                        # Give the venue time to settle (F8): query later, never re-send.
                        self._defer(lc.trade_id, cmd, attempt)
                        return None
                return (yield from self._query(lc, cmd, attempt))
            case lcm.StartTimer(cid=cid, seconds=seconds):
                self._schedule(_TTL_PREFIX + cid, seconds, _Timer(kind="ttl", cid=cid))
                return None
            case lcm.CancelTimer(cid=cid):
                self._cancel_timer(_TTL_PREFIX + cid)
                return None
            case lcm.EmitTradeClosed(trade_id=trade_id, record=record):
                if lc is not None:
                    yield from self._finish_trade(lc.to_state(), record)
                else:
                    self._error("trade_closed_without_trade", trade_id=trade_id)
                return None
            case lcm.RequestRetry():
                # A retry is a new decision (BOT_SPEC §9): risk answers with RetryDecided.
                self._info("entry_retry_requested", trade_id=cmd.trade_id, symbol=cmd.symbol)
                self._send_risk(
                    RetryRequested(
                        plan=cmd.plan,
                        mid=cmd.mid if cmd.mid is not None else self._mid.get(cmd.symbol),
                        filled_qty=cmd.filled_qty,
                        filled_avg_price=cmd.filled_avg_price,
                    )
                )
                return None
            case lcm.Alert(trade_id=trade_id, code=code, message=message):
                self._warning("alert", trade_id=trade_id, code=code, message=message)
                self._out.append(
                    RaiseAlert(code=code, symbol="" if lc is None else lc.symbol, message=message)
                )
                return None
            case lcm.SyncPosition():
                return (yield from self._sync_position(lc, cmd, attempt))
            case _:
                assert_never(cmd)

    def _sync_position(
        self, lc: lcm.TradeLifecycle | None, cmd: lcm.SyncPosition, attempt: int
    ) -> Proc[lcm.Event | None]:
        """Read the exchange position of the trade's symbol (and the fills that reduced it)."""
        try:
            positions = yield from self._positions()
        except Exception as exc:
            self._fault(exc, cmd.symbol)
            self._warning("position_sync_failed", symbol=cmd.symbol, attempt=attempt, error=str(exc))
            if lc is not None:
                self._defer(lc.trade_id, cmd, attempt)
            return None
        pos = next((p for p in positions if p.symbol == cmd.symbol), None)
        side = None if pos is None else Side(pos.side)
        qty = Decimal(0) if pos is None else pos.quantity
        held_now = qty if side is cmd.side else Decimal(0)
        fills = None
        if held_now < cmd.held_qty:
            fills = yield from self._exit_fills(cmd.symbol, cmd.side, cmd.held_qty - held_now, cmd.since_ms)
        self._info(
            "position_synced",
            trade_id=cmd.trade_id,
            symbol=cmd.symbol,
            held=str(cmd.held_qty),
            exchange=str(qty),
            exchange_side=None if side is None else side.value,
        )
        return lcm.PositionSnapshot(
            side=side,
            qty=qty,
            entry_price=Decimal(0) if pos is None else pos.entry_price,
            exits=fills,
            confirmed=True,
        )

    def _exit_fills(self, symbol: str, side: Side, qty: Decimal, since_ms: int) -> Proc[lcm.ExitFills | None]:
        """The newest closing-side executions on `symbol` covering `qty`: what closed it outside our orders."""
        try:
            rows = yield from self._user_trades(symbol, since_ms)
        except Exception as exc:
            self._fault(exc, symbol)
            self._warning("user_trades_failed", symbol=symbol, error=str(exc))
            return None
        closing = side.closing_order_side
        need = qty
        cost = Decimal(0)
        fee = Decimal(0)
        last_ms = 0
        for r in reversed(rows):
            if need <= 0:
                break
            if r.side != closing or r.qty <= 0:
                continue
            take = min(r.qty, need)
            cost += take * r.price
            fee += r.fee * take / r.qty
            last_ms = max(last_ms, r.time_ms)
            need -= take
        got = qty - max(need, Decimal(0))
        if got <= 0:
            self._warning("exit_fills_missing", symbol=symbol, qty=str(qty), since_ms=since_ms)
            return None
        return lcm.ExitFills(qty=got, price=cost / got, fee=float(fee), ts_ms=last_ms)

    def _placed(self, st: OrderState | None) -> lcm.Event:
        if st is None:
            raise ExecutionMachineError("a placement was answered None (expected an OrderState)")
        if st.status in ("NEW", "PARTIALLY_FILLED", "TRIGGERED") and st.executed_qty == 0:
            return lcm.OrderAccepted(cid=st.client_id)
        return self._found(st)

    def _found(self, st: OrderState) -> lcm.OrderFound:
        status: Any = _FOUND_STATUS.get(st.status, "NEW")
        return lcm.OrderFound(
            cid=st.client_id, status=status, executed_qty=st.executed_qty, avg_price=st.avg_price
        )

    def _placement_failed(self, trade_id: str, symbol: str, cid: str, exc: Exception) -> lcm.Event:
        self._fault(exc, symbol)
        if isinstance(exc, bx.ApiError):
            code = exc.code if exc.code is not None else 0
            if isinstance(exc, bx.DuplicateClientId):
                code = lcm.ERR_DUPLICATE_CID
            self._warning(
                "order_rejected", trade_id=trade_id, symbol=symbol, cid=cid, code=code, error=exc.message
            )
            return lcm.OrderRejected(cid=cid, code=code, message=exc.message)
        self._warning(
            "order_status_unknown",
            trade_id=trade_id,
            symbol=symbol,
            cid=cid,
            error=f"{type(exc).__name__}: {exc}",
        )
        return lcm.OrderStatusUnknown(cid=cid)

    def _cancel(
        self, lc: lcm.TradeLifecycle | None, cmd: lcm.CancelOrder, attempt: int
    ) -> Proc[lcm.Event | None]:
        try:
            st = yield from self._order_call(
                CancelOrder(symbol=cmd.symbol, client_id=cmd.cid, is_stop=cmd.is_algo)
            )
        except bx.UnknownOrder:
            st = None
        except Exception as exc:
            self._fault(exc, cmd.symbol)
            self._warning("cancel_failed", symbol=cmd.symbol, cid=cmd.cid, attempt=attempt, error=str(exc))
            if attempt < self._cfg.exchange.max_retry_attempts:
                self._defer("" if lc is None else lc.trade_id, cmd, attempt)
            else:
                self._error("cancel_gave_up", symbol=cmd.symbol, cid=cmd.cid, attempts=attempt)
            return None
        self._info(
            "order_canceled",
            trade_id=None if lc is None else lc.trade_id,
            symbol=cmd.symbol,
            cid=cmd.cid,
            gone=st is None,
        )
        if lc is None:
            return None
        if st is None:
            # Already gone: maybe filled. Learn how it ended before the lifecycle moves on.
            return (
                yield from self._query(
                    lc, lcm.QueryOrder(symbol=cmd.symbol, cid=cmd.cid, is_algo=cmd.is_algo), 1
                )
            )
        return self._found(st)

    def _query(
        self, lc: lcm.TradeLifecycle | None, cmd: lcm.QueryOrder, attempt: int
    ) -> Proc[lcm.Event | None]:
        try:
            st = yield from self._order_call(
                QueryOrder(symbol=cmd.symbol, client_id=cmd.cid, is_stop=cmd.is_algo)
            )
        except Exception as exc:
            self._fault(exc, cmd.symbol)
            self._warning("query_failed", symbol=cmd.symbol, cid=cmd.cid, attempt=attempt, error=str(exc))
            if lc is not None:
                self._defer(lc.trade_id, cmd, max(attempt, 1))
            return None
        self._info("order_queried", symbol=cmd.symbol, cid=cmd.cid, status=None if st is None else st.status)
        if st is None:
            return lcm.OrderNotFound(cid=cmd.cid)
        return self._found(st)

    # ------------------------------------------------------------------------------------- closing a trade

    def _finish_trade(self, state: lcm.LifecycleState, record: dict[str, Any]) -> Proc[None]:
        """Journal (if the entry reached the exchange), tell risk, then mark the trade journaled."""
        plan = state.plan
        tid = plan.trade_id
        if _entry_reached_exchange(state):
            yield from self._write_record(tid, record)
        self._info(
            "trade_closed",
            trade_id=tid,
            symbol=plan.symbol,
            reason=record["result"]["reason"],
            pnl_usd=record["result"]["pnl_usd"],
        )
        msg: TradeClosed | EntryAbandoned
        if state.entry_filled > 0:
            msg = TradeClosed(
                trade_id=tid,
                symbol=plan.symbol,
                record=record,
                realized_pnl_usd=float(record["result"]["pnl_usd"]),
                close_ms=state.closed_ms,
            )
        else:
            reason = "REJECTED" if _entry_rejected(state) else str(record["result"]["reason"])
            msg = EntryAbandoned(trade_id=tid, symbol=plan.symbol, reason=reason)
        self._send_risk(msg)
        self._out.append(SetMeta(key=journal_key(tid), value="1"))

    def _write_record(self, trade_id: str, record: dict[str, Any]) -> Proc[None]:
        written = yield _JournalCall(trade_id=trade_id, record=record)
        if not isinstance(written, JournalWritten):
            raise ExecutionMachineError(f"journal write answered {written!r}")
        match written.outcome:
            case "WRITTEN":
                pass
            case "DUPLICATE":
                self._info("trade_record_already_written", trade_id=trade_id)
            case "QUARANTINED":  # quarantined by the journal, never dropped
                self._error("trade_record_quarantined", trade_id=trade_id, error=written.error)
            case _:
                assert_never(written.outcome)

    # ------------------------------------------------------------------------------------- notifications

    def _notify(self, lc: lcm.TradeLifecycle, state: lcm.LifecycleState) -> None:
        tid = lc.trade_id
        sent = self._sent.setdefault(tid, _Sent())
        plan = state.plan
        entry_done = state.phase not in _ENTRY_PHASES
        if state.entry_filled > 0 and (
            state.entry_filled != sent.entry_filled or (entry_done and not sent.entry_final)
        ):
            sent.entry_filled = state.entry_filled
            sent.entry_final = entry_done
            self._send_risk(
                EntryFilled(
                    trade_id=tid,
                    symbol=plan.symbol,
                    side=plan.side,
                    filled_qty=state.entry_filled,
                    avg_price=state.entry_cost / state.entry_filled,
                    stop_price=state.stop_price,
                    final=entry_done,
                    leverage=plan.leverage,
                )
            )
        pos = lc.position_qty if not lc.closed else Decimal(0)
        key = (pos, state.stop_price if pos > 0 else Decimal(0))
        if key != sent.position and (pos > 0 or sent.position[0] > 0):
            sent.position = key
            self._position_update(state, pos)

    def _position_update(self, state: lcm.LifecycleState, pos: Decimal) -> None:
        plan = state.plan
        msg = PositionUpdated(
            trade_id=plan.trade_id,
            symbol=plan.symbol,
            side=plan.side,
            qty=pos,
            entry_price=state.entry_cost / state.entry_filled if state.entry_filled > 0 else plan.entry_price,
            stop_price=state.stop_price,
            initial_stop_price=plan.stop_price,
            trail_atr_mult=plan.trail_atr_mult,
            trail_after_r=plan.trail_after_r,
        )
        self._send_risk(msg)
        self._out.append(SendSymbol(symbol=plan.symbol, message=msg))

    def _send_risk(self, msg: RiskMessage) -> None:
        self._out.append(SendRisk(message=msg))

    def _account_msg(self, a: AccountState) -> AccountUpdated:
        return AccountUpdated(
            equity_usd=float(a.equity),
            wallet_balance_usd=float(a.wallet_balance),
            available_balance_usd=float(a.available_balance),
            unrealized_pnl_usd=float(a.unrealized_pnl),
            ts_ms=a.ts_ms or self._now_ms,
        )

    # ------------------------------------------------------------------------------------- reconcile

    def _reconcile(self, *, startup: bool, flatten: bool = False) -> Proc[None]:
        """Bring the lifecycles in line with the exchange (the source of truth), then check protection.

        `flatten` (kill switch): quantity differences are acted on at once and every position is adopted,
        even one a stop of someone else's covers, so that the kill switch can close it."""
        try:
            orders = yield from self._open_orders()
            positions = yield from self._positions()
            account = yield from self._account()
        except bx.BinanceError as exc:
            if startup:
                raise
            self._fault(exc, "")
            self._error("reconcile_fetch_failed", error=str(exc))
            return
        found = self._watch(orders, positions)
        if startup:
            states = yield from self._load_lifecycles(include_closed=False)
            busy_keys: set[str] = set()
            busy_symbols: set[str] = set()
        else:
            busy = [lc for lc in self._trades.values() if lc.phase in _ENTRY_PHASES]
            busy_keys = {trade_key(lc.trade_id) for lc in busy}
            busy_symbols = {lc.symbol for lc in busy}
            states = [lc.to_state() for lc in self._trades.values() if lc.phase not in _ENTRY_PHASES]
        ex_orders: list[lcm.ExchangeOrder] = []
        for o in orders:
            parsed = parse_client_order_id(o.client_id, prefix=self._prefix)
            if parsed is not None and parsed.trade_key in busy_keys:
                continue
            ex_orders.append(
                lcm.ExchangeOrder(
                    symbol=o.symbol,
                    cid=o.client_id,
                    is_algo=o.is_stop,
                    side=o.side,
                    order_type=o.type,
                    qty=o.quantity,
                    price=(o.trigger_price if o.is_stop else o.price) or None,
                    status=o.status,
                    executed_qty=o.executed_qty,
                    reduce_only=o.reduce_only,
                )
            )
        ex_positions = [
            lcm.ExchangePosition(
                symbol=p.symbol, side=Side(p.side), qty=p.quantity, entry_price=p.entry_price
            )
            for p in positions
            if p.symbol not in busy_symbols
        ]
        if flatten:  # a stop placed by hand does not keep the kill switch off a position: adopt it all
            ex_orders = [o for o in ex_orders if parse_client_order_id(o.cid, prefix=self._prefix)]
        exits = yield from self._exits_for(states, ex_positions)
        seq = yield from self._next_adoption_seq()
        result = lcm.reconcile(
            lifecycles=states,
            open_orders=ex_orders,
            positions=ex_positions,
            prefix=self._prefix,
            stop_pct=self._adopt_stop_pct,
            rules={**self._listed_rules, **self._rules},
            config=self._xcfg,
            mode=self._mode,
            now_ms=self._now_ms,
            startup=startup or flatten,
            adoption_seq=seq,
            equity_usd=float(account.equity),
            exits=exits,
        )
        if result.next_adoption_seq != seq:  # before any adopted trade is persisted or sends anything
            self._out.append(SetMeta(key=ADOPTION_SEQ_KEY, value=str(result.next_adoption_seq)))
        by_trade: dict[str, list[lcm.Command]] = {}
        unowned: list[lcm.CancelOrder] = []
        lcs: dict[str, lcm.TradeLifecycle] = {}
        for st in result.lifecycles:
            lc = lcm.TradeLifecycle.from_state(st, config=self._xcfg)
            lcs[lc.trade_id] = lc
            by_trade[lc.trade_id] = []
            self._by_key[trade_key(lc.trade_id)] = lc.trade_id
        key_to_tid = {trade_key(t): t for t in lcs}
        for cmd in result.commands:
            tid = self._command_trade(cmd, key_to_tid)
            if tid is not None and tid in lcs:
                by_trade[tid].append(cmd)
            elif isinstance(cmd, lcm.CancelOrder):
                unowned.append(cmd)
            else:
                self._warning("reconcile_command_unowned", command=type(cmd).__name__)
        # A cancel we had asked for but that never reached the exchange (crash before it left): the
        # lifecycle will not ask again, so repeat it (cancels are idempotent).
        open_cids = {o.client_id for o in orders}
        for tid, lc in lcs.items():
            asked = {c.cid for c in by_trade[tid] if isinstance(c, lcm.CancelOrder)}
            for tracked in lc.live_orders():
                if tracked.cancel_requested and tracked.cid in open_cids and tracked.cid not in asked:
                    by_trade[tid].append(
                        lcm.CancelOrder(symbol=lc.symbol, cid=tracked.cid, is_algo=tracked.is_algo)
                    )
        for cmd in unowned:
            self._warning("order_unowned_cancel", symbol=cmd.symbol, cid=cmd.cid)
            yield from self._cancel(None, cmd, 1)
        for tid, lc in lcs.items():
            if startup or tid not in self._sent:
                self._sent[tid] = _Sent()
            self._persisted.pop(tid, None)  # reconcile may have changed it: persist unconditionally
            yield from self._commit(lc, by_trade[tid])
        self._track_foreign(result.foreign_positions)
        for foreign in result.foreign_orders:
            self._info("foreign_order", symbol=foreign.symbol, cid=foreign.cid, type=foreign.order_type)
        self._info(
            "reconcile_done",
            startup=startup,
            trades=len(lcs),
            adopted=len(result.adopted),
            foreign_positions=len(result.foreign_positions),
            foreign_orders=len(result.foreign_orders),
            commands=len(result.commands),
        )
        if startup:
            self._send_risk(self._account_msg(account))
        if found:
            yield from self._verify_protection()

    def _next_adoption_seq(self) -> Proc[int]:
        raw = yield from self._get_meta(ADOPTION_SEQ_KEY)
        try:
            return max(1, int(raw)) if raw is not None else 1
        except ValueError:
            self._error("adoption_seq_invalid", value=raw, expected="a positive integer")
            return 1

    def _exits_for(
        self, states: list[lcm.LifecycleState], positions: list[lcm.ExchangePosition]
    ) -> Proc[dict[str, lcm.ExitFills]]:
        """The real fills of trades the exchange shows smaller or flat (closed or reduced outside the bot)."""
        by_symbol = {p.symbol: p for p in positions}
        out: dict[str, lcm.ExitFills] = {}
        for st in states:
            if st.phase is lcm.Phase.CLOSED:
                continue
            held = st.entry_filled - st.exit_filled
            if held <= 0:
                continue
            p = by_symbol.get(st.plan.symbol)
            now_held = p.qty if p is not None and p.side is st.plan.side else Decimal(0)
            if now_held >= held:
                continue
            since = st.opened_ms or st.plan.created_ms
            fills = yield from self._exit_fills(st.plan.symbol, st.plan.side, held - now_held, since)
            if fills is not None:
                out[st.plan.symbol] = fills
        return out

    # ------------------------------------------------------------------------------------- protection watchdog

    def _watch(self, orders: list[OrderState], positions: list[PositionState]) -> bool:
        """Check the protection invariant on what the exchange shows; log, alert and count violations.

        Every position has exactly one reduce-only stop on the closing side for its whole quantity; no
        exit order of ours sits on a flat symbol. Returns whether anything was violated (the reconcile
        that follows repairs it: adopt, place, resize, cancel)."""
        unprotected: list[str] = []
        violations = 0
        held = {p.symbol for p in positions if p.quantity > 0}
        self._account_positions = set(held)
        self._publish_open_positions()
        for p in positions:
            if p.quantity <= 0:
                continue
            closing = Side(p.side).closing_order_side
            stops = [o for o in orders if o.symbol == p.symbol and o.is_stop and o.type in _STOP_TYPES]
            good = [o for o in stops if o.reduce_only and o.side == closing and o.quantity == p.quantity]
            covering = [o for o in stops if o.reduce_only and o.side == closing and o.quantity >= p.quantity]
            if len(stops) == 1 and good:
                continue
            violations += 1
            if not covering:
                unprotected.append(p.symbol)
            self._warning(
                "protection_violation",
                symbol=p.symbol,
                side=p.side,
                position_qty=str(p.quantity),
                stops=[f"{o.side} {o.quantity}{' reduce-only' if o.reduce_only else ''}" for o in stops],
                unprotected=not covering,
            )
        for o in orders:
            if o.symbol in held or not o.reduce_only:
                continue
            if parse_client_order_id(o.client_id, prefix=self._prefix) is None:
                continue
            violations += 1
            self._warning(
                "protection_violation", symbol=o.symbol, position_qty="0", order=o.client_id, flat=True
            )
        if unprotected:
            self._error(
                "alert",
                code="UNPROTECTED_POSITIONS",
                message=f"positions without a full stop: {', '.join(sorted(unprotected))}; repairing",
            )
        self._set_unprotected(unprotected)
        return violations > 0

    def _verify_protection(self) -> Proc[None]:
        """After a repair: look again, so that /metrics and /health say whether it worked."""
        try:
            orders = yield from self._open_orders()
            positions = yield from self._positions()
        except Exception as exc:
            self._fault(exc, "")
            self._warning("protection_verify_failed", error=str(exc))
            return
        if self._watch(orders, positions):
            self._warning("protection_not_yet_restored", unprotected=self.unprotected)
        else:
            self._info("protection_restored")

    def _set_unprotected(self, symbols: list[str]) -> None:
        self.unprotected = sorted(symbols)
        if self._metrics:
            self._out.append(SetGauge(name=UNPROTECTED_POSITIONS, value=float(len(symbols))))

    def _command_trade(self, cmd: lcm.Command, key_to_tid: dict[str, str]) -> str | None:
        match cmd:
            case (
                lcm.PlaceOrder()
                | lcm.PlaceAlgoOrder()
                | lcm.EmitTradeClosed()
                | lcm.Alert()
                | lcm.SyncPosition()
                | lcm.RequestRetry()
            ):
                return cmd.trade_id
            case lcm.CancelOrder() | lcm.QueryOrder() | lcm.StartTimer() | lcm.CancelTimer():
                parsed = parse_client_order_id(cmd.cid, prefix=self._prefix)
                return None if parsed is None else key_to_tid.get(parsed.trade_key)
            case _:
                assert_never(cmd)

    def _track_foreign(self, positions: list[lcm.ExchangePosition]) -> None:
        seen: set[str] = set()
        for p in positions:
            seen.add(p.symbol)
            pct = Decimal(repr(self._adopt_stop_pct[p.side]))
            stop = p.entry_price * (1 - pct) if p.side is Side.LONG else p.entry_price * (1 + pct)
            msg = EntryFilled(
                trade_id=FOREIGN_PREFIX + p.symbol,
                symbol=p.symbol,
                side=p.side,
                filled_qty=p.qty,
                avg_price=p.entry_price,
                stop_price=stop,
                final=True,
            )
            if self._foreign.get(p.symbol) != msg:
                self._foreign[p.symbol] = msg
                self._warning("foreign_position", symbol=p.symbol, side=p.side.value, qty=str(p.qty))
                self._send_risk(msg)
        for symbol in [s for s in self._foreign if s not in seen]:
            del self._foreign[symbol]
            self._send_risk(
                EntryAbandoned(trade_id=FOREIGN_PREFIX + symbol, symbol=symbol, reason="FOREIGN_GONE")
            )

    # ------------------------------------------------------------------------------------- typed requests

    def _order_call(self, call: PlaceOrder | PlaceStop | CancelOrder | QueryOrder) -> Proc[OrderState | None]:
        result = yield call
        if result is not None and not isinstance(result, OrderState):
            raise ExecutionMachineError(f"{type(call).__name__} answered {type(result).__name__}")
        return result

    def _open_orders(self) -> Proc[list[OrderState]]:
        return cast(list[OrderState], (yield from self._list_call(OpenOrders())))

    def _positions(self) -> Proc[list[PositionState]]:
        return cast(list[PositionState], (yield from self._list_call(Positions())))

    def _user_trades(self, symbol: str, start_ms: int) -> Proc[list[TradeFill]]:
        return cast(
            list[TradeFill], (yield from self._list_call(UserTrades(symbol=symbol, start_ms=start_ms)))
        )

    def _list_call(self, call: OpenOrders | Positions | UserTrades) -> Proc[list[object]]:
        result = yield call
        if not isinstance(result, list):
            raise ExecutionMachineError(f"{type(call).__name__} answered {type(result).__name__}")
        return result

    def _account(self) -> Proc[AccountState]:
        result = yield Account()
        if not isinstance(result, AccountState):
            raise ExecutionMachineError(f"Account answered {type(result).__name__}")
        return result

    def _load_lifecycle(self, trade_id: str) -> Proc[lcm.LifecycleState | None]:
        result = yield LoadLifecycle(trade_id=trade_id)
        if result is not None and not isinstance(result, lcm.LifecycleState):
            raise ExecutionMachineError(f"LoadLifecycle answered {type(result).__name__}")
        return result

    def _load_lifecycles(self, *, include_closed: bool) -> Proc[list[lcm.LifecycleState]]:
        result = yield LoadLifecycles(include_closed=include_closed)
        if not isinstance(result, list):
            raise ExecutionMachineError(f"LoadLifecycles answered {type(result).__name__}")
        return cast(list[lcm.LifecycleState], result)

    def _get_meta(self, key: str) -> Proc[str | None]:
        result = yield GetMeta(key=key)
        if result is not None and not isinstance(result, str):
            raise ExecutionMachineError(f"GetMeta answered {type(result).__name__}")
        return result

    # ------------------------------------------------------------------------------------- faults, logs

    def _fault(self, exc: BaseException, symbol: str) -> None:
        if isinstance(exc, bx.RateLimited | bx.IpBanned):
            kind = _FAULT_RATE_LIMIT
        elif isinstance(exc, bx.TimestampOutOfWindow):
            kind = _FAULT_TIMESTAMP
        elif isinstance(exc, bx.ServerError | bx.UnknownOrderStatus | bx.TransportError):
            kind = _FAULT_SERVER
        elif isinstance(exc, bx.BinanceError):
            kind = ""  # a definite venue answer (rejection): not a health fault
        else:
            kind = _FAULT_UNEXPECTED
            self._error(
                "gateway_exception", symbol=symbol, error=f"{type(exc).__name__}: {exc}", exc_info=exc
            )
        if self._metrics:
            code = getattr(exc, "code", None)
            self._out.append(
                IncCounter(
                    name=ERRORS, labels=(("code", str(code if code is not None else type(exc).__name__)),)
                )
            )
        if kind:
            self._out.append(ReportFault(kind=kind, symbol=symbol, detail=f"{type(exc).__name__}: {exc}"))

    def _info(self, event: str, **fields: object) -> None:
        self._out.append(_log(LogLevel.INFO, event, **fields))

    def _warning(self, event: str, **fields: object) -> None:
        self._out.append(_log(LogLevel.WARNING, event, **fields))

    def _error(self, event: str, **fields: object) -> None:
        self._out.append(_log(LogLevel.ERROR, event, **fields))

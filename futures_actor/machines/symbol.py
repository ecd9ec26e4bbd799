"""One symbol's decision loop as a pure state machine: messages in, effects out (issue 12, first step).

`SymbolMachine` owns everything a symbol decides on (BOT_SPEC §3–§6, ARCHITECTURE "SymbolActor"): its
`SymbolFeatureEngine` (candle stores and indicators), its strategies, the last book (bid/ask), the last
mark price and funding rate, and the trailing state of its open positions. `handle(message, now_ms=...)`
returns the effects to carry out, in order; it never awaits, never does I/O, never reads a clock and
never calls a logger (log records are `Log` effects). `actors/symbol_actor.py` is its trio runtime
shell; a discrete-event replay runtime can drive the same machine by interpreting the same effects.

Inputs (`SymbolInput`): the actor's inbox (`SymbolInbox`: `CandleClosed`, `BookUpdated`,
`MarkUpdated`, `PositionUpdated`, `Verdict`) plus the answers a runtime feeds back: `HistoryLoaded`
(the start-up history), `HistoryFetched` / `HistoryFetchFailed` (the answer to a `FetchHistory`),
`VerdictTimedOut` / `VerdictChannelClosed` (how a verdict wait ended without a verdict).

Effects (`SymbolEffect`), to be performed in the order returned:
- `SendAmendStop`: send the `AmendStop` to execution.
- `SendReport`: send the `SymbolReport` to the risk actor. `verdict_timeout_s` is None for a report
  without signals; otherwise the runtime attaches a one-shot reply, waits for the `Verdict` at most
  that long (a timer) and feeds the outcome back: the `Verdict` itself, `VerdictTimedOut` or
  `VerdictChannelClosed`. The machine only logs verdicts: it keeps no state for them, so a runtime may
  feed them back at any time, even while a `FetchHistory` is pending.
- `FetchHistory`: fetch recent closed candles for the symbol and answer with `HistoryFetched` or
  `HistoryFetchFailed` before delivering any other inbox message (the machine is mid-candle: it
  refuses inbox messages with `SymbolMachineError` until the answer arrives).
- `Log`: write a log record.
- `ReportFault`: tell health about a fault (`UNEXPECTED_EXCEPTION` in decision code).
- `Crash`: the last effect after a fault: the runtime raises `error` (unchanged) so the supervisor
  restarts the actor with a fresh machine. A crashed machine refuses every further message.

Policy, per message (what the actor did before it became a machine; the tests pin it down):

- `CandleClosed` 1h: fed to the engine. A gap is repaired (history rebuild, else trend-state reset).
- `CandleClosed` 5m: fed to the engine, then exactly one `SymbolReport` goes to the risk actor for
  every newly stored 5m close, with or without signals and before warm-up too (regime reason
  `WARMUP`), so the risk actor's batching knows this symbol reported. A duplicate candle is a no-op
  (no second report). A malformed, out-of-order or conflicting candle (`CandleError`) is logged and
  skipped: no report. A gapped candle is logged, the engine repaired (rebuilt from history when the
  runtime has a history source, else its 5m state restarts at this candle), and the report for it
  carries no signals (reason `GAP`): no decision is made on a candle that follows a hole.
- Data freshness at decision time. Decision time is the candle's close (open + 5m, wall time in ms,
  comparable with the book's `ts_ms`); `now_ms` is not used, so a replay decides exactly as live
  did. A book older than `health.stale_data_seconds` ⇒ no signals, reason `STALE_BOOK`; a candle that
  closed more than that before the newest book (a late, replayed candle) ⇒ no signals, reason
  `STALE_CANDLE`. A symbol that never had a book (replay, `features`) has no book data source: the
  spread rule passes and `spread_pct` is None. `mid_price` is the last book mid, or the candle close
  when there is no book.
- Trailing: `PositionUpdated` (from execution, authoritative) starts, updates or (qty 0) clears the
  trailing state of that trade. On each stored 5m close with warm ATR, `update_trailing` runs with
  the close, the ATR and the mark price as the trigger price (when fresh, else the close); on MOVED an
  `AmendStop` goes to execution (which rounds it and re-checks it never loosens), before any
  strategy code runs. Trailing runs in every regime and with a stale book: it only protects. A
  gapped candle moves no stop.
- Faults: an exception raised by regime, strategy or trailing code gives `Log decision_exception`,
  `ReportFault(UNEXPECTED_EXCEPTION)` and `Crash(error)`; the stop amendments already decided for that
  candle stay in the effects before them (protection first), the report does not (the trade is
  skipped).

History: `HistoryLoaded` (start) and `HistoryFetched` (gap) replace the engine's candles; a malformed
history is logged and the engine keeps (start: starts with) what it had. An empty gap answer (no
history source, e.g. replay) never wipes the 1h history. A fresh machine has no trailing state until
execution sends the position again (`PositionUpdated`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal, assert_never

import msgspec

from futures_actor.actors.messages import (
    AmendStop,
    BookUpdated,
    CandleClosed,
    MarkUpdated,
    PositionUpdated,
    SymbolReport,
    Verdict,
)
from futures_actor.core.candles import AppendResult, AppendStatus, CandleError
from futures_actor.core.config import BotConfig
from futures_actor.core.features import SIGNAL_INTERVAL, TREND_INTERVAL, FeatureStep, SymbolFeatureEngine
from futures_actor.core.models import Features, RegimeResult, Signal
from futures_actor.core.regime import detect_regime
from futures_actor.core.strategies import NoSignal, Strategy, build_strategies
from futures_actor.core.trailing import (
    TRAIL_MOVED,
    TrailingInputError,
    TrailingRule,
    TrailingState,
    start_trailing,
    update_trailing,
)
from futures_actor.core.types import INTERVAL_MS, Candle, Regime, Side
from futures_actor.machines.effects import Log, LogLevel

__all__ = [
    "FAULT_UNEXPECTED_EXCEPTION",
    "REASON_GAP",
    "REASON_STALE_BOOK",
    "REASON_STALE_CANDLE",
    "Crash",
    "FetchHistory",
    "HistoryFetchFailed",
    "HistoryFetched",
    "HistoryLoaded",
    "ReportFault",
    "SendAmendStop",
    "SendReport",
    "SymbolEffect",
    "SymbolInbox",
    "SymbolInput",
    "SymbolMachine",
    "SymbolMachineError",
    "VerdictChannelClosed",
    "VerdictTimedOut",
]

REASON_STALE_BOOK: Final = "STALE_BOOK"
REASON_STALE_CANDLE: Final = "STALE_CANDLE"
REASON_GAP: Final = "GAP"
FAULT_UNEXPECTED_EXCEPTION: Final = "UNEXPECTED_EXCEPTION"

_MS_5M: Final = INTERVAL_MS[SIGNAL_INTERVAL]
_MS_PER_S: Final = 1000.0
_NO_TRADE_CONFIDENCE: Final = 1.0

HistoryWhy = Literal["start", "gap"]


class SymbolMachineError(RuntimeError):
    """The runtime broke the machine's contract (a message while a `FetchHistory` is unanswered, an
    answer nobody asked for, a message after `Crash`): a bug in the runtime, never bad market data."""


# --- inputs a runtime feeds back ------------------------------------------------------------------


class HistoryLoaded(msgspec.Struct, frozen=True, kw_only=True):
    """The start-up history (before the first inbox message): closed 5m and 1h candles, oldest first."""

    five: Sequence[Candle]
    hour: Sequence[Candle]


class HistoryFetched(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to `FetchHistory`: closed 5m and 1h candles, oldest first (may be empty)."""

    five: Sequence[Candle]
    hour: Sequence[Candle]


class HistoryFetchFailed(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to `FetchHistory` when the fetch raised; `error` is the exception's repr."""

    error: str


class VerdictTimedOut(msgspec.Struct, frozen=True, kw_only=True):
    """No verdict for the report of `candle_open_time_ms` within `timeout_s` (the reply was closed)."""

    candle_open_time_ms: int
    timeout_s: float


class VerdictChannelClosed(msgspec.Struct, frozen=True, kw_only=True):
    """The risk actor closed the reply of the report of `candle_open_time_ms` without a verdict."""

    candle_open_time_ms: int


SymbolInbox = CandleClosed | BookUpdated | MarkUpdated | PositionUpdated | Verdict
"""Everything a SymbolActor's inbox accepts."""

SymbolInput = (
    SymbolInbox | HistoryLoaded | HistoryFetched | HistoryFetchFailed | VerdictTimedOut | VerdictChannelClosed
)
"""Everything `SymbolMachine.handle` accepts (matched exhaustively)."""


# --- effects ----------------------------------------------------------------------------------------


class SendReport(msgspec.Struct, frozen=True, kw_only=True):
    """Send `report` (its `reply` is None) to the risk actor; with `verdict_timeout_s`, attach a one-shot
    reply and wait for the verdict at most that long (see the module docstring)."""

    report: SymbolReport
    verdict_timeout_s: float | None


class SendAmendStop(msgspec.Struct, frozen=True, kw_only=True):
    """Send `amend` to execution."""

    amend: AmendStop


class FetchHistory(msgspec.Struct, frozen=True, kw_only=True):
    """Fetch recent closed candles of `symbol` to repair a gap; answer `HistoryFetched` or
    `HistoryFetchFailed` before any other inbox message."""

    symbol: str


class ReportFault(msgspec.Struct, frozen=True, kw_only=True):
    """Report a fault to health: `(kind, symbol, detail)`."""

    kind: str
    symbol: str
    detail: str


class Crash(msgspec.Struct, frozen=True, kw_only=True):
    """Raise `error` out of the actor (last effect of a fault; the supervisor restarts the actor)."""

    error: Exception


SymbolEffect = SendReport | SendAmendStop | FetchHistory | Log | ReportFault | Crash
"""Everything `SymbolMachine.handle` returns (matched exhaustively by a runtime)."""


def _debug(event: str, **fields: object) -> Log:
    return Log(level=LogLevel.DEBUG, event=event, fields=fields)


def _info(event: str, **fields: object) -> Log:
    return Log(level=LogLevel.INFO, event=event, fields=fields)


def _warning(event: str, **fields: object) -> Log:
    return Log(level=LogLevel.WARNING, event=event, fields=fields)


def _error(event: str, **fields: object) -> Log:
    return Log(level=LogLevel.ERROR, event=event, fields=fields)


class _Trail(msgspec.Struct, kw_only=True):
    """Trailing view of one open trade: its rule and state (mutable, owned by the machine)."""

    rule: TrailingRule
    state: TrailingState


class _PendingGap(msgspec.Struct, frozen=True, kw_only=True):
    """A gapped candle waiting for the history answer before it is fed again (and, 5m, reported)."""

    interval: str
    candle: Candle
    missing_count: int


class SymbolMachine:
    """One symbol's candles → features → regime → signals → `SendReport`; trailing → `SendAmendStop`.

    See the module docstring for the policy. `has_history` says whether the runtime has a history
    source (a gap is then repaired through `FetchHistory`; without one the series restarts at once).
    """

    def __init__(
        self,
        *,
        symbol: str,
        cfg: BotConfig,
        has_history: bool,
        strategies: Sequence[Strategy] | None = None,
    ) -> None:
        self._symbol = symbol
        self._cfg = cfg
        self._has_history = has_history
        self._engine = SymbolFeatureEngine(symbol=symbol, config=cfg)
        self._strategies: tuple[Strategy, ...] = tuple(
            strategies if strategies is not None else build_strategies(cfg)
        )
        self._stale_ms = cfg.health.stale_data_seconds * _MS_PER_S
        self._verdict_timeout = cfg.risk.verdict_timeout_seconds
        # Last book and mark (None: never received).
        self._bid: float | None = None
        self._ask: float | None = None
        self._book_ts_ms: int | None = None
        self._mark_price: float | None = None
        self._funding_rate: float | None = None
        self._mark_ts_ms: int | None = None
        self._trails: dict[str, _Trail] = {}
        self._pending: _PendingGap | None = None
        self._crashed = False

    # -- read-only views (tests, health) ----------------------------------------------------------

    @property
    def symbol(self) -> str:
        return self._symbol

    @property
    def engine(self) -> SymbolFeatureEngine:
        return self._engine

    @property
    def awaiting_history(self) -> bool:
        """True while a `FetchHistory` is unanswered."""
        return self._pending is not None

    def trailing_state(self, trade_id: str) -> TrailingState | None:
        trail = self._trails.get(trade_id)
        return None if trail is None else trail.state

    # -- the transition function -----------------------------------------------------------------

    def handle(self, message: SymbolInput, *, now_ms: int) -> list[SymbolEffect]:
        """The effects of `message`, in the order a runtime must perform them.

        `now_ms` is the runtime's time (kept for the common machine contract): this machine decides on
        message timestamps only. Raises `SymbolMachineError` when the runtime breaks the contract.
        """
        if self._crashed:
            raise SymbolMachineError(f"{self._symbol}: the machine crashed; got {type(message).__name__}")
        out: list[SymbolEffect] = []
        match message:
            case CandleClosed():
                self._require_idle(message)
                if message.symbol != self._symbol:
                    out.append(_warning("foreign_message", kind="CandleClosed", got_symbol=message.symbol))
                elif message.interval == SIGNAL_INTERVAL:
                    self._on_5m(message.candle, out)
                elif message.interval == TREND_INTERVAL:
                    self._on_1h(message.candle, out)
                else:
                    out.append(
                        _warning(
                            "candle_interval_ignored",
                            interval=message.interval,
                            expected=[SIGNAL_INTERVAL, TREND_INTERVAL],
                        )
                    )
            case BookUpdated():
                self._require_idle(message)
                self._on_book(message, out)
            case MarkUpdated():
                self._require_idle(message)
                self._on_mark(message, out)
            case PositionUpdated():
                self._require_idle(message)
                self._on_position(message, out)
            case Verdict():
                out.append(_verdict_log(message))
            case VerdictTimedOut():
                out.append(
                    _warning(
                        "verdict_timeout",
                        candle_open_time_ms=message.candle_open_time_ms,
                        timeout_s=message.timeout_s,
                    )
                )
            case VerdictChannelClosed():
                out.append(
                    _warning("verdict_channel_closed", candle_open_time_ms=message.candle_open_time_ms)
                )
            case HistoryLoaded():
                self._require_idle(message)
                self._replace_history(message.five, message.hour, why="start", out=out)
            case HistoryFetched():
                pending = self._take_pending(message)
                if (
                    message.five
                ):  # an empty answer (no history source, e.g. replay) must not wipe the 1h history
                    self._replace_history(message.five, message.hour, why="gap", out=out)
                self._finish_gap(pending, out)
            case HistoryFetchFailed():
                pending = self._take_pending(message)
                out.append(_error("history_failed", why="gap", error=message.error))
                self._finish_gap(pending, out)
            case _:
                assert_never(message)
        return out

    def _require_idle(self, message: SymbolInput) -> None:
        if self._pending is not None:
            raise SymbolMachineError(
                f"{self._symbol}: {type(message).__name__} delivered while FetchHistory is unanswered "
                "(answer it with HistoryFetched or HistoryFetchFailed first)"
            )

    def _take_pending(self, message: SymbolInput) -> _PendingGap:
        pending = self._pending
        if pending is None:
            raise SymbolMachineError(f"{self._symbol}: {type(message).__name__} without a FetchHistory")
        self._pending = None
        return pending

    # -- history -----------------------------------------------------------------------------------

    def _replace_history(
        self, five: Sequence[Candle], hour: Sequence[Candle], *, why: HistoryWhy, out: list[SymbolEffect]
    ) -> None:
        try:
            last = self._engine.replace_history(five, hour)
        except CandleError as exc:
            out.append(
                _error(
                    "history_rejected",
                    why=why,
                    error=str(exc),
                    field=exc.field,
                    interval=exc.interval,
                    bars_5m=len(five),
                    bars_1h=len(hour),
                )
            )
            return
        out.append(
            _info(
                "history_loaded",
                why=why,
                bars_5m=len(five),
                bars_1h=len(hour),
                warm=bool(last is not None and last.warm),
                last_open_time_ms=None if last is None else last.open_time_ms,
            )
        )

    # -- market data -----------------------------------------------------------------------------

    def _on_book(self, msg: BookUpdated, out: list[SymbolEffect]) -> None:
        bid, ask = msg.bid, msg.ask
        if not (math.isfinite(bid) and math.isfinite(ask) and 0.0 < bid <= ask):
            out.append(_warning("book_rejected", bid=bid, ask=ask, expected="finite prices, 0 < bid <= ask"))
            return
        if self._book_ts_ms is not None and msg.ts_ms < self._book_ts_ms:
            return  # older than what we have: the newer book stays
        self._bid, self._ask, self._book_ts_ms = bid, ask, msg.ts_ms

    def _on_mark(self, msg: MarkUpdated, out: list[SymbolEffect]) -> None:
        if not (math.isfinite(msg.mark_price) and msg.mark_price > 0.0 and math.isfinite(msg.funding_rate)):
            out.append(
                _warning(
                    "mark_rejected",
                    mark_price=msg.mark_price,
                    funding_rate=msg.funding_rate,
                    expected="a finite mark price > 0 and a finite funding rate",
                )
            )
            return
        if self._mark_ts_ms is not None and msg.ts_ms < self._mark_ts_ms:
            return
        self._mark_price, self._funding_rate, self._mark_ts_ms = msg.mark_price, msg.funding_rate, msg.ts_ms

    def _on_1h(self, candle: Candle, out: list[SymbolEffect]) -> None:
        try:
            result = self._engine.on_1h(candle)
        except CandleError as exc:
            out.append(_rejected(TREND_INTERVAL, candle, exc))
            return
        if result.status is AppendStatus.GAP:
            self._start_gap(TREND_INTERVAL, candle, result, out)

    def _on_5m(self, candle: Candle, out: list[SymbolEffect]) -> None:
        decision_ms = candle.open_time_ms + _MS_5M
        spread_pct = self._spread_pct()
        try:
            step = self._engine.on_5m(candle, spread_pct=spread_pct, funding_rate=self._funding_rate)
        except CandleError as exc:
            out.append(_rejected(SIGNAL_INTERVAL, candle, exc))
            return
        match step.append.status:
            case AppendStatus.DUPLICATE:
                out.append(
                    _debug("candle_duplicate", interval=SIGNAL_INTERVAL, open_time_ms=candle.open_time_ms)
                )
                return
            case AppendStatus.GAP:
                self._start_gap(SIGNAL_INTERVAL, candle, step.append, out)
                return
            case AppendStatus.APPENDED:
                pass
            case _:
                assert_never(step.append.status)
        stale = self._staleness(decision_ms)
        try:
            features = _require_features(step, self._symbol)
            amends = self._trail(features, out)
        except Exception as exc:
            self._fault(exc, candle, out)
            return
        # Protection first: the stop amendments leave before any strategy code runs.
        out.extend(SendAmendStop(amend=amend) for amend in amends)
        try:
            regime, signals, no_signals = self._decide(features, stale, out)
        except Exception as exc:
            self._fault(exc, candle, out)
            return
        out.append(_decision_log(features, regime, signals, no_signals))
        out.append(self._report(candle, regime, signals))

    # -- gaps ---------------------------------------------------------------------------------------

    def _start_gap(
        self,
        interval: str,
        candle: Candle,
        result: AppendResult,
        out: list[SymbolEffect],
    ) -> None:
        out.append(
            _warning(
                "candle_gap",
                interval=interval,
                open_time_ms=candle.open_time_ms,
                missing_from_ms=result.missing_from_ms,
                missing_to_ms=result.missing_to_ms,
                missing_count=result.missing_count,
                repair="history" if self._has_history else "reset",
            )
        )
        pending = _PendingGap(interval=interval, candle=candle, missing_count=result.missing_count)
        if self._has_history:
            self._pending = pending
            out.append(FetchHistory(symbol=self._symbol))
            return
        self._finish_gap(pending, out)

    def _finish_gap(self, pending: _PendingGap, out: list[SymbolEffect]) -> None:
        candle = pending.candle
        try:
            if pending.interval == SIGNAL_INTERVAL:
                if self._engine.on_5m(candle).append.status is AppendStatus.GAP:
                    # Still a hole (no history, or it did not reach): restart the 5m series here.
                    self._engine.reset_5m()
                    self._engine.on_5m(candle)
            elif self._engine.on_1h(candle).status is AppendStatus.GAP:
                self._engine.reset_1h()
                self._engine.on_1h(candle)
        except CandleError as exc:
            # History already holds this open time with other values (REST corrected it): keep history.
            out.append(_warning("gap_candle_not_refed", interval=pending.interval, error=str(exc)))
        if pending.interval != SIGNAL_INTERVAL:
            return
        regime = RegimeResult(
            regime=Regime.CHOP_NO_TRADE,
            direction=None,
            confidence=_NO_TRADE_CONFIDENCE,
            reason=REASON_GAP,
            values={"missing_count": float(pending.missing_count)},
        )
        out.append(_debug("decision", regime=regime.regime, reason=REASON_GAP, close=candle.close))
        out.append(self._report(candle, regime, ()))

    # -- decisions (synchronous, core) -------------------------------------------------------------

    def _decide(
        self, features: Features, stale: tuple[str, float] | None, out: list[SymbolEffect]
    ) -> tuple[RegimeResult, tuple[Signal, ...], list[NoSignal]]:
        regime = detect_regime(features, self._cfg)
        if stale is not None:
            reason, age_s = stale
            values = dict(regime.values)
            values["book_age_s"] = age_s
            regime = RegimeResult(
                regime=Regime.CHOP_NO_TRADE,
                direction=None,
                confidence=_NO_TRADE_CONFIDENCE,
                reason=reason,
                values=values,
            )
        signals: list[Signal] = []
        no_signals: list[NoSignal] = []
        for strategy in self._strategies:
            result = strategy.evaluate(features, regime)
            if isinstance(result, Signal):
                signals.append(result)
            else:
                no_signals.append(result)
        if signals and regime.regime is Regime.CHOP_NO_TRADE:
            # Defence in depth: a no-trade regime never yields a candidate, whatever a strategy says.
            out.append(
                _error(
                    "signal_in_no_trade_regime",
                    reason=regime.reason,
                    strategies=[s.strategy for s in signals],
                )
            )
            signals = []
        return regime, tuple(signals), no_signals

    def _trail(self, features: Features, out: list[SymbolEffect]) -> list[AmendStop]:
        atr = features.atr
        if not self._trails or atr is None:
            return []
        price = self._fresh_mark(features.close_time_ms + 1)
        amends: list[AmendStop] = []
        for trade_id, trail in self._trails.items():
            update = update_trailing(
                trail.state, trail.rule, close=features.close, atr=atr, current_price=price
            )
            trail.state = update.state
            if update.code == TRAIL_MOVED and update.new_stop is not None:
                amends.append(
                    AmendStop(
                        trade_id=trade_id,
                        symbol=self._symbol,
                        new_stop=update.new_stop,
                        reference_price=features.close,
                    )
                )
                out.append(_info("trail_moved", trade_id=trade_id, new_stop=update.new_stop, **update.values))
            else:
                out.append(_debug("trail_unchanged", trade_id=trade_id, code=update.code))
        return amends

    def _fault(self, exc: Exception, candle: Candle, out: list[SymbolEffect]) -> None:
        detail = f"{type(exc).__name__}: {exc} (5m candle open_time_ms={candle.open_time_ms})"
        out.append(_error("decision_exception", error=detail, exc_info=exc))
        out.append(ReportFault(kind=FAULT_UNEXPECTED_EXCEPTION, symbol=self._symbol, detail=detail))
        out.append(Crash(error=exc))
        self._crashed = True

    # -- positions -------------------------------------------------------------------------------

    def _on_position(self, msg: PositionUpdated, out: list[SymbolEffect]) -> None:
        if msg.symbol != self._symbol:
            out.append(_warning("foreign_message", kind="PositionUpdated", got_symbol=msg.symbol))
            return
        if msg.qty == 0:
            if self._trails.pop(msg.trade_id, None) is not None:
                out.append(_info("trail_cleared", trade_id=msg.trade_id))
            return
        if msg.trail_atr_mult is None or msg.trail_after_r is None:
            self._trails.pop(msg.trade_id, None)
            out.append(_debug("position_without_trailing", trade_id=msg.trade_id))
            return
        try:
            rule = TrailingRule(atr_mult=msg.trail_atr_mult, after_r=msg.trail_after_r)
            entry = float(msg.entry_price)
            stop = float(msg.stop_price)
            state = start_trailing(side=msg.side, entry_price=entry, stop_price=float(msg.initial_stop_price))
            # Execution is authoritative for the live stop; activation stays sticky for the trade.
            existing = self._trails.get(msg.trade_id)
            active = existing is not None and existing.state.side is msg.side and existing.state.active
            state = msgspec.structs.replace(state, stop_price=stop, active=active)
            _check_stop_side(msg.side, entry=entry, stop=stop, initial=state.initial_stop)
        except (TrailingInputError, ValueError, ArithmeticError) as exc:
            # Bad data: keep whatever trailing state we had, and say so loudly.
            out.append(
                _error(
                    "position_rejected",
                    trade_id=msg.trade_id,
                    error=str(exc),
                    entry_price=str(msg.entry_price),
                    stop_price=str(msg.stop_price),
                    initial_stop_price=str(msg.initial_stop_price),
                )
            )
            return
        self._trails[msg.trade_id] = _Trail(rule=rule, state=state)
        out.append(
            _info(
                "trail_tracking",
                trade_id=msg.trade_id,
                side=msg.side,
                entry_price=entry,
                stop_price=stop,
                active=state.active,
            )
        )

    # -- reports ---------------------------------------------------------------------------------

    def _report(self, candle: Candle, regime: RegimeResult, signals: tuple[Signal, ...]) -> SendReport:
        mid = self._mid()
        report = SymbolReport(
            symbol=self._symbol,
            candle_open_time_ms=candle.open_time_ms,
            regime=regime,
            signals=signals,
            mid_price=candle.close if mid is None else mid,
            spread_pct=self._spread_pct(),
            funding_rate=self._funding_rate,
        )
        return SendReport(report=report, verdict_timeout_s=self._verdict_timeout if signals else None)

    # -- helpers ---------------------------------------------------------------------------------

    def _mid(self) -> float | None:
        if self._bid is None or self._ask is None:
            return None
        return (self._bid + self._ask) / 2.0

    def _spread_pct(self) -> float | None:
        mid = self._mid()
        if mid is None or self._bid is None or self._ask is None:
            return None
        return (self._ask - self._bid) / mid

    def _staleness(self, decision_ms: int) -> tuple[str, float] | None:
        """(reason, book age in s) when the book is too old for a decision at `decision_ms`."""
        if self._book_ts_ms is None:
            return None  # no book data source: nothing to be stale
        age_ms = decision_ms - self._book_ts_ms
        if age_ms > self._stale_ms:
            return REASON_STALE_BOOK, age_ms / _MS_PER_S
        if -age_ms > self._stale_ms:
            return REASON_STALE_CANDLE, age_ms / _MS_PER_S
        return None

    def _fresh_mark(self, decision_ms: int) -> float | None:
        if self._mark_ts_ms is None or abs(decision_ms - self._mark_ts_ms) > self._stale_ms:
            return None
        return self._mark_price


def _verdict_log(verdict: Verdict) -> Log:
    if verdict.plan is not None:
        return _info(
            "verdict",
            candle_open_time_ms=verdict.candle_open_time_ms,
            approved=True,
            trade_id=verdict.plan.trade_id,
            strategy=verdict.plan.strategy,
            side=verdict.plan.side,
        )
    rejection = verdict.rejection
    return _info(
        "verdict",
        candle_open_time_ms=verdict.candle_open_time_ms,
        approved=False,
        code=None if rejection is None else rejection.code,
        explanation=verdict.explanation,
    )


def _rejected(interval: str, candle: Candle, exc: CandleError) -> Log:
    return _warning(
        "candle_rejected",
        interval=interval,
        open_time_ms=candle.open_time_ms,
        error_type=type(exc).__name__,
        field=exc.field,
        value=repr(exc.value),
        error=str(exc),
    )


def _decision_log(
    f: Features, regime: RegimeResult, signals: tuple[Signal, ...], no_signals: list[NoSignal]
) -> Log:
    """`decision`: INFO with the signals and the ATR, DEBUG (the same fields but those) when there are none."""
    common: dict[str, object] = {
        "candle_open_time_ms": f.open_time_ms,
        "regime": regime.regime,
        "direction": regime.direction,
        "confidence": regime.confidence,
        "reason": regime.reason,
        "values": regime.values,
        "close": f.close,
        "rsi": f.rsi,
    }
    no_signal = {n.strategy: n.code for n in no_signals}
    if signals:
        entries = [(s.strategy, s.side, s.entry_price, s.stop_price) for s in signals]
        return _info("decision", **common, atr=f.atr, signals=entries, no_signal=no_signal)
    return _debug("decision", **common, no_signal=no_signal)


def _require_features(step: FeatureStep, symbol: str) -> Features:
    """The engine returns features for every APPENDED candle; anything else is a bug (a fault)."""
    if step.features is None:
        raise RuntimeError(f"{symbol}: feature engine gave no features for an appended candle")
    return step.features


def _check_stop_side(side: Side, *, entry: float, stop: float, initial: float) -> None:
    """The live stop must be a finite price > 0 and never looser than the initial stop."""
    if not (math.isfinite(stop) and stop > 0.0):
        raise TrailingInputError(field="stop_price", value=stop, expected="a finite price > 0")
    if side.sign * (stop - initial) < 0:
        raise TrailingInputError(
            field="stop_price",
            value=stop,
            expected=f"at or tighter than the initial stop {initial} for a {side} position (entry {entry})",
        )

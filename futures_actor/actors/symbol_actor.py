"""The SymbolActor: one per monitored symbol, turning closed candles into reports and stop amendments.

This module owns a symbol's decision loop (BOT_SPEC §3–§6, ARCHITECTURE "SymbolActor"): its
`SymbolFeatureEngine` (candle stores and indicators), its strategies, the last book (bid/ask), the
last mark price and funding rate, and the trailing state of its open position. Everything it decides
is a synchronous `core/` function; `await` appears only to send to other actors and to fetch history.

Policy, per inbox message:

- `CandleClosed` 1h: fed to the engine. A gap is repaired (history rebuild, else trend-state reset).
- `CandleClosed` 5m: fed to the engine, then exactly one `SymbolReport` goes to the risk actor for
  every newly stored 5m close, with or without signals and before warm-up too (regime reason
  `WARMUP`), so the risk actor's batching knows this symbol reported. A duplicate candle is a no-op
  (no second report). A malformed, out-of-order or conflicting candle (`CandleError`) is logged and
  skipped: no report, the actor stays alive. A gapped candle is logged, the engine repaired (rebuilt
  from `history` when given, else its 5m state restarts at this candle), and the report for it carries
  no signals (reason `GAP`): no decision is made on a candle that follows a hole.
- Data freshness at decision time. Decision time is the candle's close (open + 5m, wall time in ms,
  comparable with the book's `ts_ms`). A book older than `health.stale_data_seconds` ⇒ no signals,
  reason `STALE_BOOK`; a candle that closed more than that before the newest book (a late, replayed
  candle) ⇒ no signals, reason `STALE_CANDLE`. A symbol that never had a book (replay, `features`)
  has no book data source: the spread rule passes and `spread_pct` is None. `mid_price` is the last
  book mid, or the candle close when there is no book.
- Trailing: `PositionUpdated` (from execution, authoritative) starts, updates or (qty 0) clears the
  trailing state of that trade. On each stored 5m close with warm ATR, `update_trailing` runs with
  the close, the ATR and the mark price as the trigger price (when fresh, else the close); on MOVED an
  `AmendStop` goes to execution (which rounds it and re-checks it never loosens), before any
  strategy code runs. Trailing runs in every regime and with a stale book: it only protects. A
  gapped candle moves no stop.
- Verdicts: a report that carries signals also carries the send side of a fresh one-shot channel
  (size 1) in `reply`; a child task waits for the `Verdict` at most `risk.verdict_timeout_seconds`
  (trio time), logs it and closes its receive side (on a timeout too, so the risk actor's
  `send_nowait` gets `BrokenResourceError` and releases its reservation). The actor loop never
  waits for a verdict. A report without signals has `reply=None`. A `Verdict` arriving on the inbox
  is accepted and logged the same way. Approved plans go from the risk actor straight to execution.
- Faults: an exception raised by regime, strategy or trailing code calls
  `on_fault("UNEXPECTED_EXCEPTION", symbol, detail)` and then propagates out of `run()` unchanged,
  so the supervisor restarts the actor with fresh state (the candle's trade is skipped).

Start and restart: `history(symbol)` (optional) returns recent closed 5m and 1h candles (oldest
first) and is awaited before `task_status.started()`, so a new incarnation is warm at once. A failing
`history` call propagates (the supervisor retries with backoff); a malformed history is logged and
the engine starts empty. `run()` never closes its inbox: the supervisor owns it and hands the same
inbox to the next incarnation. A fresh incarnation has no trailing state until execution sends the
position again (`PositionUpdated`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, assert_never

import msgspec
import trio

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
from futures_actor.logs import get_logger

__all__ = [
    "FAULT_UNEXPECTED_EXCEPTION",
    "REASON_GAP",
    "REASON_STALE_BOOK",
    "REASON_STALE_CANDLE",
    "SYMBOL_INBOX_SIZE",
    "FaultCallback",
    "HistoryLoader",
    "SymbolActor",
    "SymbolInbox",
    "open_symbol_inbox",
]

# Book tickers arrive many times per second; a few hundred messages of slack absorb a burst
# without blocking MarketData, and a full inbox is back-pressure (logged by the sender).
SYMBOL_INBOX_SIZE: Final = 256
# One verdict per report at most.
_REPLY_CHANNEL_SIZE: Final = 1

REASON_STALE_BOOK: Final = "STALE_BOOK"
REASON_STALE_CANDLE: Final = "STALE_CANDLE"
REASON_GAP: Final = "GAP"
FAULT_UNEXPECTED_EXCEPTION: Final = "UNEXPECTED_EXCEPTION"

_MS_5M: Final = INTERVAL_MS[SIGNAL_INTERVAL]
_MS_PER_S: Final = 1000.0
_NO_TRADE_CONFIDENCE: Final = 1.0

SymbolInbox = CandleClosed | BookUpdated | MarkUpdated | PositionUpdated | Verdict
"""Everything a SymbolActor accepts (matched exhaustively in `run`)."""

HistoryLoader = Callable[[str], Awaitable[tuple[Sequence[Candle], Sequence[Candle]]]]
"""`(symbol) -> (closed 5m candles, closed 1h candles)`, each oldest first and contiguous."""

FaultCallback = Callable[[str, str, str], None]
"""`(fault_kind, symbol, detail)`, synchronous (use `send_nowait` inside if it forwards)."""


def open_symbol_inbox() -> tuple[trio.MemorySendChannel[SymbolInbox], trio.MemoryReceiveChannel[SymbolInbox]]:
    """A bounded inbox for one SymbolActor (size `SYMBOL_INBOX_SIZE`)."""
    return trio.open_memory_channel[SymbolInbox](SYMBOL_INBOX_SIZE)


class _Trail(msgspec.Struct, kw_only=True):
    """Trailing view of one open trade: its rule and state (mutable, owned by `run`)."""

    rule: TrailingRule
    state: TrailingState


class SymbolActor:
    """One symbol's candles → features → regime → signals → `SymbolReport`; trailing → `AmendStop`.

    See the module docstring for the policy. Construct one per incarnation (the constructor takes
    keyword arguments only, so a supervisor can use a `functools.partial` as its factory).
    """

    def __init__(
        self,
        *,
        symbol: str,
        cfg: BotConfig,
        risk_send: trio.abc.SendChannel[Any],
        execution_send: trio.abc.SendChannel[Any],
        history: HistoryLoader | None = None,
        on_fault: FaultCallback | None = None,
        log: Any = None,
        strategies: Sequence[Strategy] | None = None,
    ) -> None:
        self._symbol = symbol
        self._cfg = cfg
        self._risk_send = risk_send
        self._execution_send = execution_send
        self._history = history
        self._on_fault = on_fault
        base = log if log is not None else get_logger("symbol")
        self._log = base.bind(symbol=symbol)
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
        self._reports_sent = 0

    # -- read-only views (tests, health) ----------------------------------------------------------

    @property
    def symbol(self) -> str:
        return self._symbol

    @property
    def engine(self) -> SymbolFeatureEngine:
        return self._engine

    @property
    def reports_sent(self) -> int:
        return self._reports_sent

    def trailing_state(self, trade_id: str) -> TrailingState | None:
        trail = self._trails.get(trade_id)
        return None if trail is None else trail.state

    # -- the loop --------------------------------------------------------------------------------

    async def run(
        self,
        inbox: trio.abc.ReceiveChannel[SymbolInbox],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Rebuild from history, signal readiness, then handle the inbox until it ends.

        Returns when every sender of `inbox` is closed (pending verdict waits are cancelled). Does not
        close `inbox`. An exception in decision code propagates (after `on_fault`).
        """
        await self._load_history()
        fault: Exception | None = None
        async with trio.open_nursery() as nursery:
            task_status.started()
            try:
                async for msg in inbox:
                    await self._handle(msg, nursery)
            except Exception as exc:
                # Re-raised bare below, not wrapped in the nursery's ExceptionGroup.
                fault = exc
            nursery.cancel_scope.cancel()
        if fault is not None:
            raise fault

    async def _handle(self, msg: SymbolInbox, nursery: trio.Nursery) -> None:
        match msg:
            case CandleClosed():
                if msg.symbol != self._symbol:
                    self._log.warning("foreign_message", kind="CandleClosed", got_symbol=msg.symbol)
                elif msg.interval == SIGNAL_INTERVAL:
                    await self._on_5m(msg.candle, nursery)
                elif msg.interval == TREND_INTERVAL:
                    await self._on_1h(msg.candle)
                else:
                    self._log.warning(
                        "candle_interval_ignored",
                        interval=msg.interval,
                        expected=[SIGNAL_INTERVAL, TREND_INTERVAL],
                    )
            case BookUpdated():
                self._on_book(msg)
            case MarkUpdated():
                self._on_mark(msg)
            case PositionUpdated():
                self._on_position(msg)
            case Verdict():
                self._log_verdict(msg)
            case _:
                assert_never(msg)

    # -- start-up --------------------------------------------------------------------------------

    async def _load_history(self) -> None:
        if self._history is None:
            return
        five, hour = await self._history(self._symbol)
        self._replace_history(five, hour, why="start")

    def _replace_history(self, five: Sequence[Candle], hour: Sequence[Candle], *, why: str) -> bool:
        try:
            last = self._engine.replace_history(five, hour)
        except CandleError as exc:
            self._log.error(
                "history_rejected",
                why=why,
                error=str(exc),
                field=exc.field,
                interval=exc.interval,
                bars_5m=len(five),
                bars_1h=len(hour),
            )
            return False
        self._log.info(
            "history_loaded",
            why=why,
            bars_5m=len(five),
            bars_1h=len(hour),
            warm=bool(last is not None and last.warm),
            last_open_time_ms=None if last is None else last.open_time_ms,
        )
        return True

    # -- market data -----------------------------------------------------------------------------

    def _on_book(self, msg: BookUpdated) -> None:
        bid, ask = msg.bid, msg.ask
        if not (math.isfinite(bid) and math.isfinite(ask) and 0.0 < bid <= ask):
            self._log.warning("book_rejected", bid=bid, ask=ask, expected="finite prices, 0 < bid <= ask")
            return
        if self._book_ts_ms is not None and msg.ts_ms < self._book_ts_ms:
            return  # older than what we have: the newer book stays
        self._bid, self._ask, self._book_ts_ms = bid, ask, msg.ts_ms

    def _on_mark(self, msg: MarkUpdated) -> None:
        if not (math.isfinite(msg.mark_price) and msg.mark_price > 0.0 and math.isfinite(msg.funding_rate)):
            self._log.warning(
                "mark_rejected",
                mark_price=msg.mark_price,
                funding_rate=msg.funding_rate,
                expected="a finite mark price > 0 and a finite funding rate",
            )
            return
        if self._mark_ts_ms is not None and msg.ts_ms < self._mark_ts_ms:
            return
        self._mark_price, self._funding_rate, self._mark_ts_ms = msg.mark_price, msg.funding_rate, msg.ts_ms

    async def _on_1h(self, candle: Candle) -> None:
        try:
            result = self._engine.on_1h(candle)
        except CandleError as exc:
            self._log_rejected(TREND_INTERVAL, candle, exc)
            return
        if result.status is AppendStatus.GAP:
            await self._repair_gap(TREND_INTERVAL, candle, result)

    async def _on_5m(self, candle: Candle, nursery: trio.Nursery) -> None:
        decision_ms = candle.open_time_ms + _MS_5M
        spread_pct = self._spread_pct()
        try:
            step = self._engine.on_5m(candle, spread_pct=spread_pct, funding_rate=self._funding_rate)
        except CandleError as exc:
            self._log_rejected(SIGNAL_INTERVAL, candle, exc)
            return
        match step.append.status:
            case AppendStatus.DUPLICATE:
                self._log.debug(
                    "candle_duplicate", interval=SIGNAL_INTERVAL, open_time_ms=candle.open_time_ms
                )
                return
            case AppendStatus.GAP:
                await self._repair_gap(SIGNAL_INTERVAL, candle, step.append)
                regime = RegimeResult(
                    regime=Regime.CHOP_NO_TRADE,
                    direction=None,
                    confidence=_NO_TRADE_CONFIDENCE,
                    reason=REASON_GAP,
                    values={"missing_count": float(step.append.missing_count)},
                )
                self._log.debug("decision", regime=regime.regime, reason=REASON_GAP, close=candle.close)
                await self._report(candle, regime, (), nursery)
                return
            case AppendStatus.APPENDED:
                pass
            case _:
                assert_never(step.append.status)
        stale = self._staleness(decision_ms)
        try:
            features = _require_features(step, self._symbol)
            amends = self._trail(features)
        except Exception as exc:
            self._fault(exc, candle)
            raise
        # Protection first: the stop amendments leave before any strategy code runs.
        for amend in amends:
            await self._execution_send.send(amend)
        try:
            regime, signals, no_signals = self._decide(features, stale)
        except Exception as exc:
            self._fault(exc, candle)
            raise
        self._log_decision(features, regime, signals, no_signals)
        await self._report(candle, regime, signals, nursery)

    # -- decisions (synchronous, core) -------------------------------------------------------------

    def _decide(
        self, features: Features, stale: tuple[str, float] | None
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
            out = strategy.evaluate(features, regime)
            if isinstance(out, Signal):
                signals.append(out)
            else:
                no_signals.append(out)
        if signals and regime.regime is Regime.CHOP_NO_TRADE:
            # Defence in depth: a no-trade regime never yields a candidate, whatever a strategy says.
            self._log.error(
                "signal_in_no_trade_regime",
                reason=regime.reason,
                strategies=[s.strategy for s in signals],
            )
            signals = []
        return regime, tuple(signals), no_signals

    def _trail(self, features: Features) -> list[AmendStop]:
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
                self._log.info("trail_moved", trade_id=trade_id, new_stop=update.new_stop, **update.values)
            else:
                self._log.debug("trail_unchanged", trade_id=trade_id, code=update.code)
        return amends

    # -- positions -------------------------------------------------------------------------------

    def _on_position(self, msg: PositionUpdated) -> None:
        if msg.symbol != self._symbol:
            self._log.warning("foreign_message", kind="PositionUpdated", got_symbol=msg.symbol)
            return
        if msg.qty == 0:
            if self._trails.pop(msg.trade_id, None) is not None:
                self._log.info("trail_cleared", trade_id=msg.trade_id)
            return
        if msg.trail_atr_mult is None or msg.trail_after_r is None:
            self._trails.pop(msg.trade_id, None)
            self._log.debug("position_without_trailing", trade_id=msg.trade_id)
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
            self._log.error(
                "position_rejected",
                trade_id=msg.trade_id,
                error=str(exc),
                entry_price=str(msg.entry_price),
                stop_price=str(msg.stop_price),
                initial_stop_price=str(msg.initial_stop_price),
            )
            return
        self._trails[msg.trade_id] = _Trail(rule=rule, state=state)
        self._log.info(
            "trail_tracking",
            trade_id=msg.trade_id,
            side=msg.side,
            entry_price=entry,
            stop_price=stop,
            active=state.active,
        )

    # -- reports and verdicts --------------------------------------------------------------------

    async def _report(
        self,
        candle: Candle,
        regime: RegimeResult,
        signals: tuple[Signal, ...],
        nursery: trio.Nursery,
    ) -> None:
        mid = self._mid()
        reply_send: trio.MemorySendChannel[Verdict] | None = None
        if signals:
            reply_send, reply_recv = trio.open_memory_channel[Verdict](_REPLY_CHANNEL_SIZE)
            nursery.start_soon(self._await_verdict, reply_recv, candle.open_time_ms)
        report = SymbolReport(
            symbol=self._symbol,
            candle_open_time_ms=candle.open_time_ms,
            regime=regime,
            signals=signals,
            mid_price=candle.close if mid is None else mid,
            spread_pct=self._spread_pct(),
            funding_rate=self._funding_rate,
            reply=reply_send,
        )
        await self._risk_send.send(report)
        self._reports_sent += 1

    async def _await_verdict(self, receive: trio.MemoryReceiveChannel[Verdict], open_time_ms: int) -> None:
        with receive:
            verdict: Verdict | None = None
            with trio.move_on_after(self._verdict_timeout):
                try:
                    verdict = await receive.receive()
                except trio.EndOfChannel:
                    self._log.warning("verdict_channel_closed", candle_open_time_ms=open_time_ms)
                    return
        if verdict is None:
            self._log.warning(
                "verdict_timeout",
                candle_open_time_ms=open_time_ms,
                timeout_s=self._verdict_timeout,
            )
            return
        self._log_verdict(verdict)

    def _log_verdict(self, verdict: Verdict) -> None:
        if verdict.plan is not None:
            self._log.info(
                "verdict",
                candle_open_time_ms=verdict.candle_open_time_ms,
                approved=True,
                trade_id=verdict.plan.trade_id,
                strategy=verdict.plan.strategy,
                side=verdict.plan.side,
            )
        else:
            rejection = verdict.rejection
            self._log.info(
                "verdict",
                candle_open_time_ms=verdict.candle_open_time_ms,
                approved=False,
                code=None if rejection is None else rejection.code,
                explanation=verdict.explanation,
            )

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

    async def _repair_gap(self, interval: str, candle: Candle, result: AppendResult) -> None:
        self._log.warning(
            "candle_gap",
            interval=interval,
            open_time_ms=candle.open_time_ms,
            missing_from_ms=result.missing_from_ms,
            missing_to_ms=result.missing_to_ms,
            missing_count=result.missing_count,
            repair="history" if self._history is not None else "reset",
        )
        if self._history is not None:
            try:
                five, hour = await self._history(self._symbol)
            except Exception as exc:
                self._log.error("history_failed", why="gap", error=repr(exc))
            else:
                if five:  # an empty answer (no history source, e.g. replay) must not wipe the 1h history
                    self._replace_history(five, hour, why="gap")
        try:
            if interval == SIGNAL_INTERVAL:
                if self._engine.on_5m(candle).append.status is AppendStatus.GAP:
                    # Still a hole (no history, or it did not reach): restart the 5m series here.
                    self._engine.reset_5m()
                    self._engine.on_5m(candle)
            elif self._engine.on_1h(candle).status is AppendStatus.GAP:
                self._engine.reset_1h()
                self._engine.on_1h(candle)
        except CandleError as exc:
            # History already holds this open time with other values (REST corrected it): keep history.
            self._log.warning("gap_candle_not_refed", interval=interval, error=str(exc))

    def _log_rejected(self, interval: str, candle: Candle, exc: CandleError) -> None:
        self._log.warning(
            "candle_rejected",
            interval=interval,
            open_time_ms=candle.open_time_ms,
            error_type=type(exc).__name__,
            field=exc.field,
            value=repr(exc.value),
            error=str(exc),
        )

    def _log_decision(
        self,
        f: Features,
        regime: RegimeResult,
        signals: tuple[Signal, ...],
        no_signals: list[NoSignal],
    ) -> None:
        if signals:
            self._log.info(
                "decision",
                candle_open_time_ms=f.open_time_ms,
                regime=regime.regime,
                direction=regime.direction,
                confidence=regime.confidence,
                reason=regime.reason,
                values=regime.values,
                close=f.close,
                rsi=f.rsi,
                atr=f.atr,
                signals=[(s.strategy, s.side, s.entry_price, s.stop_price) for s in signals],
                no_signal={n.strategy: n.code for n in no_signals},
            )
        else:
            self._log.debug(
                "decision",
                candle_open_time_ms=f.open_time_ms,
                regime=regime.regime,
                direction=regime.direction,
                confidence=regime.confidence,
                reason=regime.reason,
                values=regime.values,
                close=f.close,
                rsi=f.rsi,
                no_signal={n.strategy: n.code for n in no_signals},
            )

    def _fault(self, exc: Exception, candle: Candle) -> None:
        detail = f"{type(exc).__name__}: {exc} (5m candle open_time_ms={candle.open_time_ms})"
        self._log.error("decision_exception", error=detail, exc_info=exc)
        if self._on_fault is None:
            return
        try:
            self._on_fault(FAULT_UNEXPECTED_EXCEPTION, self._symbol, detail)
        except Exception as cb_exc:
            self._log.error("on_fault_failed", error=repr(cb_exc))


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

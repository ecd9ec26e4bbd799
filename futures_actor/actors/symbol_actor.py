"""The SymbolActor: the trio runtime shell of one symbol's `SymbolMachine` (one actor per monitored symbol).

Every decision lives in `futures_actor.machines.symbol.SymbolMachine` (pure: messages in, effects out;
its docstring states the policy: reports, freshness, gaps, trailing, faults). This module owns only
what needs trio: the inbox loop, the sends, the history fetches, the verdict waits and the fault
callback. For each inbox message it calls `machine.handle(message, now_ms=trio time in ms)` and
performs the effects in order:

- `Log`: written on the actor's structlog logger (bound with `symbol`).
- `SendAmendStop` / `SendReport`: `await send(...)` to execution / the risk actor (a full inbox is
  back-pressure). A report that expects a verdict gets the send side of a fresh one-shot channel
  (size 1) in `reply`; a child task waits for the `Verdict` at most `verdict_timeout_s` (trio time),
  feeds the outcome back to the machine (which logs it) and closes its receive side (on a timeout too,
  so the risk actor's `send_nowait` gets `BrokenResourceError` and releases its reservation). The
  actor loop never waits for a verdict. A `Verdict` arriving on the inbox is handled the same way.
- `FetchHistory`: `await history(symbol)`, answered to the machine (`HistoryFetched`, or
  `HistoryFetchFailed` with the exception's repr) before the next inbox message is read.
- `ReportFault`: `on_fault(kind, symbol, detail)`; an exception from the callback is logged
  (`on_fault_failed`) and does not mask the fault.
- `Crash`: the exception propagates out of `run()` unchanged, so the supervisor restarts the actor
  with a fresh machine (the candle's trade is skipped).

Start and restart: `history(symbol)` (optional) returns recent closed 5m and 1h candles (oldest
first) and is awaited before `task_status.started()` (fed to the machine as `HistoryLoaded`), so a
new incarnation is warm at once. A failing `history` call propagates (the supervisor retries with
backoff). `run()` never closes its inbox: the supervisor owns it and hands the same inbox to the next
incarnation. A fresh incarnation has no trailing state until execution sends the position again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, assert_never

import msgspec
import trio

from futures_actor.actors.messages import AmendStop, SymbolReport, Verdict
from futures_actor.core.config import BotConfig
from futures_actor.core.features import SymbolFeatureEngine
from futures_actor.core.strategies import Strategy
from futures_actor.core.trailing import TrailingState
from futures_actor.core.types import Candle
from futures_actor.logs import get_logger
from futures_actor.machines.effects import Log, write_log
from futures_actor.machines.symbol import (
    FAULT_UNEXPECTED_EXCEPTION,
    REASON_GAP,
    REASON_STALE_BOOK,
    REASON_STALE_CANDLE,
    Crash,
    FetchHistory,
    HistoryFetched,
    HistoryFetchFailed,
    HistoryLoaded,
    ReportFault,
    SendAmendStop,
    SendReport,
    SymbolEffect,
    SymbolInbox,
    SymbolInput,
    SymbolMachine,
    SymbolMachineError,
    VerdictChannelClosed,
    VerdictTimedOut,
)

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
_MS_PER_S: Final = 1000

HistoryLoader = Callable[[str], Awaitable[tuple[Sequence[Candle], Sequence[Candle]]]]
"""`(symbol) -> (closed 5m candles, closed 1h candles)`, each oldest first and contiguous."""

FaultCallback = Callable[[str, str, str], None]
"""`(fault_kind, symbol, detail)`, synchronous (use `send_nowait` inside if it forwards)."""


def open_symbol_inbox() -> tuple[trio.MemorySendChannel[SymbolInbox], trio.MemoryReceiveChannel[SymbolInbox]]:
    """A bounded inbox for one SymbolActor (size `SYMBOL_INBOX_SIZE`)."""
    return trio.open_memory_channel[SymbolInbox](SYMBOL_INBOX_SIZE)


class SymbolActor:
    """Runs one symbol's `SymbolMachine` on trio: inbox in, effects performed (see the module docstring).

    Construct one per incarnation (the constructor takes keyword arguments only, so a supervisor can
    use a `functools.partial` as its factory); each incarnation has a fresh machine.
    """

    def __init__(
        self,
        *,
        symbol: str,
        cfg: BotConfig,
        risk_send: trio.abc.SendChannel[SymbolReport],
        execution_send: trio.abc.SendChannel[AmendStop],
        history: HistoryLoader | None = None,
        on_fault: FaultCallback | None = None,
        log: Any = None,
        strategies: Sequence[Strategy] | None = None,
    ) -> None:
        self._symbol = symbol
        self._risk_send = risk_send
        self._execution_send = execution_send
        self._history = history
        self._on_fault = on_fault
        base = log if log is not None else get_logger("symbol")
        self._log = base.bind(symbol=symbol)
        self._machine = SymbolMachine(
            symbol=symbol, cfg=cfg, has_history=history is not None, strategies=strategies
        )
        self._reports_sent = 0

    # -- read-only views (tests, health) ----------------------------------------------------------

    @property
    def symbol(self) -> str:
        return self._symbol

    @property
    def machine(self) -> SymbolMachine:
        return self._machine

    @property
    def engine(self) -> SymbolFeatureEngine:
        return self._machine.engine

    @property
    def reports_sent(self) -> int:
        return self._reports_sent

    def trailing_state(self, trade_id: str) -> TrailingState | None:
        return self._machine.trailing_state(trade_id)

    # -- the loop --------------------------------------------------------------------------------

    async def run(
        self,
        inbox: trio.abc.ReceiveChannel[SymbolInbox],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Rebuild from history, signal readiness, then handle the inbox until it ends.

        Returns when every sender of `inbox` is closed (pending verdict waits are cancelled). Does not
        close `inbox`. A `Crash` effect (a fault in decision code) propagates its exception.
        """
        if self._history is not None:
            five, hour = await self._history(self._symbol)
            self._perform_now(self._machine.handle(HistoryLoaded(five=five, hour=hour), now_ms=_now_ms()))
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

    async def _handle(self, msg: SymbolInput, nursery: trio.Nursery) -> None:
        """One message through the machine, its effects performed in order."""
        await self._perform(self._machine.handle(msg, now_ms=_now_ms()), nursery)

    async def _perform(self, effects: list[SymbolEffect], nursery: trio.Nursery) -> None:
        for effect in effects:
            match effect:
                case Log():
                    write_log(self._log, effect)
                case SendAmendStop():
                    await self._execution_send.send(effect.amend)
                case SendReport():
                    await self._send_report(effect, nursery)
                case FetchHistory():
                    await self._handle(await self._fetch_history(effect), nursery)
                case ReportFault():
                    self._report_fault(effect)
                case Crash():
                    raise effect.error
                case _:
                    assert_never(effect)

    def _perform_now(self, effects: list[SymbolEffect]) -> None:
        """Perform effects that need no await (the machine answers history and verdicts with logs)."""
        for effect in effects:
            if not isinstance(effect, Log):
                raise SymbolMachineError(f"{self._symbol}: {type(effect).__name__} where only logs fit")
            write_log(self._log, effect)

    # -- effects ---------------------------------------------------------------------------------

    async def _fetch_history(self, effect: FetchHistory) -> HistoryFetched | HistoryFetchFailed:
        if self._history is None:
            raise SymbolMachineError(f"{self._symbol}: FetchHistory without a history loader")
        try:
            five, hour = await self._history(effect.symbol)
        except Exception as exc:
            return HistoryFetchFailed(error=repr(exc))
        return HistoryFetched(five=five, hour=hour)

    async def _send_report(self, effect: SendReport, nursery: trio.Nursery) -> None:
        report = effect.report
        if effect.verdict_timeout_s is not None:
            reply_send, reply_recv = trio.open_memory_channel[Verdict](_REPLY_CHANNEL_SIZE)
            nursery.start_soon(
                self._await_verdict, reply_recv, report.candle_open_time_ms, effect.verdict_timeout_s
            )
            report = msgspec.structs.replace(report, reply=reply_send)
        await self._risk_send.send(report)
        self._reports_sent += 1

    async def _await_verdict(
        self, receive: trio.MemoryReceiveChannel[Verdict], open_time_ms: int, timeout_s: float
    ) -> None:
        outcome: Verdict | VerdictTimedOut | VerdictChannelClosed
        with receive:
            outcome = VerdictTimedOut(candle_open_time_ms=open_time_ms, timeout_s=timeout_s)
            with trio.move_on_after(timeout_s):
                try:
                    outcome = await receive.receive()
                except trio.EndOfChannel:
                    outcome = VerdictChannelClosed(candle_open_time_ms=open_time_ms)
        self._perform_now(self._machine.handle(outcome, now_ms=_now_ms()))

    def _report_fault(self, effect: ReportFault) -> None:
        if self._on_fault is None:
            return
        try:
            self._on_fault(effect.kind, effect.symbol, effect.detail)
        except Exception as cb_exc:
            self._log.error("on_fault_failed", error=repr(cb_exc))


def _now_ms() -> int:
    """The runtime's time for `handle` (trio time in ms; the symbol machine decides on message times)."""
    return int(trio.current_time() * _MS_PER_S)

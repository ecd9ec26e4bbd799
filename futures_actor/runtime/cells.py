"""Cells: the replay runtime's hosts of one machine each (what a trio shell is to the trio runtime).

A cell is a `Recipient` of the `EventLoop`: `deliver(message, loop)` hands the message to its machine
with `now_ms = loop.now_ms` and performs the effects in order, synchronously. Where a trio shell
awaits a send, a cell posts the message to the recipient cell for now (`loop.send`): it is delivered
after everything already posted, before the clock moves, in the order it was posted.

- `FeedCell`: plays a `ReplayFeed`'s steps, one per 5m close time: paths to the paper venues, candles
  and funding marks to the symbol cells and to the subscribers of the market-data tap.
- `SymbolCell`: one `SymbolMachine` (the policy of `actors/symbol_actor.py`, without trio).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, assert_never

import msgspec

from futures_actor.actors.messages import CandleClosed, MarkUpdated, Verdict
from futures_actor.actors.replay_feed import FeedEvent, PathStep, ReplayFeed
from futures_actor.machines.effects import Log, LogSink, write_log
from futures_actor.machines.symbol import (
    Crash,
    FetchHistory,
    ReportFault,
    SendAmendStop,
    SendReport,
    SymbolInput,
    SymbolMachine,
    SymbolMachineError,
    VerdictTimedOut,
)
from futures_actor.runtime.loop import EventLoop, Recipient

__all__ = ["FaultSink", "FeedCell", "FeedStep", "PathSink", "SymbolCell", "VerdictReply"]

_MS_PER_S: Final = 1000.0

PathSink = Callable[[PathStep], None]
"""Receives a step's look-ahead path (the paper venues' `on_path`), synchronously."""

FaultSink = Callable[[str, str, str], None]
"""`(fault_kind, symbol, detail)`: a fault for health (the trio runtime's `on_fault`)."""


class FeedStep(msgspec.Struct, frozen=True):
    """The feed cell's own timer: play the step at `close_ms`."""

    close_ms: int


@dataclass(frozen=True, slots=True)
class VerdictReply:
    """Where the verdict on a report goes: the symbol cell that sent it (the trio runtime's one-shot
    reply channel). The risk cell answers with `loop.send(reply.cell, verdict)`."""

    cell: SymbolCell
    candle_open_time_ms: int

    def answer(self, verdict: Verdict, loop: EventLoop) -> None:
        """Deliver `verdict` to the reporting cell (cancels its verdict timer)."""
        self.cell.verdict(verdict, loop)


class FeedCell:
    """Plays `feed.steps()` on the loop: each step at its close time T (see `ReplayFeed`).

    A step's events go out in the feed's order: a `PathStep` to `on_path` at once (the paper venues
    are plain objects), a `CandleClosed` / `MarkUpdated` to the symbol's cell, then to every tap
    (the trio runtime's market-router taps: 1h closes to risk, marks to execution and the paper
    venues' funding). The next step is posted for its own close time after this one is played.
    """

    def __init__(
        self,
        feed: ReplayFeed,
        *,
        symbols: dict[str, Recipient],
        on_path: PathSink,
        taps: Sequence[Callable[[CandleClosed | MarkUpdated, EventLoop], None]] = (),
        on_done: Callable[[EventLoop], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self._feed = feed
        self._steps: Iterator[tuple[int, Iterator[FeedEvent]]] | None = None
        self._symbols = symbols
        self._on_path = on_path
        self._taps = tuple(taps)
        self._on_done = on_done
        self._should_stop = should_stop
        self._pending: tuple[int, Iterator[FeedEvent]] | None = None

    def start(self, loop: EventLoop) -> None:
        """Post the first step (at its close time)."""
        self._steps = self._feed.steps()
        self._post_next(loop)

    def _post_next(self, loop: EventLoop) -> None:
        assert self._steps is not None
        stop = self._should_stop is not None and self._should_stop()
        nxt = None if stop else next(self._steps, None)
        if nxt is None:
            self._feed.finish()
            if self._on_done is not None:
                self._on_done(loop)
            return
        self._pending = nxt
        loop.post_at(max(nxt[0], loop.now_ms), self, FeedStep(nxt[0]))

    def deliver(self, message: object, loop: EventLoop) -> None:
        if not isinstance(message, FeedStep) or self._pending is None or self._pending[0] != message.close_ms:
            raise TypeError(f"FeedCell: unexpected message {message!r}")
        _, events = self._pending
        self._pending = None
        for event in events:
            if isinstance(event, PathStep):
                self._on_path(event)
                continue
            cell = self._symbols.get(event.symbol)
            if cell is not None:
                loop.send(cell, event)
            for tap in self._taps:
                tap(event, loop)
        self._feed.step_done()
        self._post_next(loop)


class SymbolCell:
    """One `SymbolMachine` on the loop (the replay runtime's `SymbolActor`).

    Effects: `Log` written on `log`; `SendReport` posted to `risk` now (with a `VerdictReply` in
    `reply` when it expects a verdict, and a verdict timer at now + `verdict_timeout_s` that feeds
    `VerdictTimedOut` back unless the verdict comes first); `SendAmendStop` posted to `execution`;
    `ReportFault` to `on_fault`; `Crash`: the machine is replaced by a fresh one built by `factory`
    (the supervisor's restart, without its backoff: the replay has no history source, so the fresh
    machine is cold either way) and `crashes` counts it. A replay has no history source, so a
    `FetchHistory` is a contract breach (`SymbolMachineError`).
    """

    def __init__(
        self,
        *,
        symbol: str,
        factory: Callable[[], SymbolMachine],
        risk: Recipient,
        execution: Recipient,
        log: LogSink,
        on_fault: FaultSink | None = None,
    ) -> None:
        self.symbol = symbol
        self._factory = factory
        self.machine = factory()
        self._risk = risk
        self._execution = execution
        self._log = log
        self._on_fault = on_fault
        self.reports_sent = 0
        self.crashes = 0

    def deliver(self, message: object, loop: EventLoop) -> None:
        effects = self.machine.handle(_as_input(message), now_ms=loop.now_ms)
        for effect in effects:
            match effect:
                case Log():
                    write_log(self._log, effect)
                case SendReport():
                    self._send_report(effect, loop)
                case SendAmendStop():
                    loop.send(self._execution, effect.amend)
                case FetchHistory():
                    raise SymbolMachineError(f"{self.symbol}: FetchHistory in a replay (no history source)")
                case ReportFault():
                    if self._on_fault is not None:
                        self._on_fault(effect.kind, effect.symbol, effect.detail)
                case Crash():
                    self.crashes += 1
                    self._log.error("symbol_machine_restarted", error=repr(effect.error))
                    self.machine = self._factory()
                case _:
                    assert_never(effect)

    def _send_report(self, effect: SendReport, loop: EventLoop) -> None:
        report = effect.report
        if effect.verdict_timeout_s is not None:
            open_ms = report.candle_open_time_ms
            report = msgspec.structs.replace(
                report, reply=VerdictReply(cell=self, candle_open_time_ms=open_ms)
            )
            at_ms = loop.now_ms + round(effect.verdict_timeout_s * _MS_PER_S)
            loop.set_timer(
                (id(self), open_ms),
                at_ms,
                self,
                _VerdictDeadline(candle_open_time_ms=open_ms, timeout_s=effect.verdict_timeout_s),
            )
        loop.send(self._risk, report)
        self.reports_sent += 1

    def verdict(self, verdict: Verdict, loop: EventLoop) -> None:
        """The risk cell's answer to a report: cancels its timer and feeds the verdict to the machine."""
        loop.cancel_timer((id(self), verdict.candle_open_time_ms))
        loop.send(self, verdict)


class _VerdictDeadline(msgspec.Struct, frozen=True, kw_only=True):
    candle_open_time_ms: int
    timeout_s: float


def _as_input(message: Any) -> SymbolInput:
    if isinstance(message, _VerdictDeadline):
        return VerdictTimedOut(candle_open_time_ms=message.candle_open_time_ms, timeout_s=message.timeout_s)
    return message  # type: ignore[no-any-return]

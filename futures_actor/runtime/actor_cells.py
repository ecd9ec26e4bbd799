"""The replay runtime's cells for the two central machines: `RiskCell` (PortfolioRisk) and
`ExecutionCell` (Execution), each what its trio shell is, without trio.

Both perform their machine's effects in order, synchronously, as their machine docstrings ask
(`machines/risk.py`, `machines/execution.py`): a request (`GatewayCall`, `Persist`, `ReadState`,
`WriteJournal`) is answered at once and the answer fed back before anything else is delivered; a
message for another actor is posted on the loop for now (`loop.send`), delivered after everything
already posted; a timer is a loop timer under the cell's own key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, assert_never

import msgspec

from futures_actor.actors.execution import answer_journal, answer_persist, answer_read, call_gateway
from futures_actor.actors.messages import RetryRequested, ShadowTradeClosed, TradeClosed
from futures_actor.machines import execution as xm
from futures_actor.machines import risk as rm
from futures_actor.machines.effects import Log, LogSink, write_log
from futures_actor.runtime.cells import FaultSink, VerdictReply
from futures_actor.runtime.loop import EventLoop, Recipient
from futures_actor.runtime.venue import PaperVenue
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore

__all__ = ["AlertSink", "ExecutionCell", "RiskCell", "ShadowOutlet"]

AlertSink = Callable[[str, str, str], None]
"""`(code, symbol, message)`: an operator alert (the trio runtime's `on_alert`)."""

_MS_PER_S: Final = 1000


class _BatchDeadline(msgspec.Struct, frozen=True):
    candle_open_time_ms: int


class RiskCell:
    """A `RiskMachine` on the loop. `execution` gets `SubmitPlan` / `RetryDecided`; `shadow` (the
    shadow book's execution cell, if any) shadow plans and shadow retry decisions. A verdict goes back
    through the report's `VerdictReply`. The machine is built with `persists=False`: a replay starts
    from a fresh account and never resumes, so its risk state lives in memory only."""

    def __init__(
        self, *, machine: rm.RiskMachine, execution: Recipient, shadow: Recipient | None, log: LogSink
    ) -> None:
        self.machine = machine
        self._execution = execution
        self._shadow = shadow
        self._log = log
        self._timer_prefix = ("risk", id(self))

    def start(self, loop: EventLoop) -> None:
        self._perform(self.machine.handle(rm.Start(), now_ms=loop.now_ms), loop)

    def deliver(self, message: object, loop: EventLoop) -> None:
        msg: rm.RiskInput
        if isinstance(message, _BatchDeadline):
            msg = rm.BatchDeadline(candle_open_time_ms=message.candle_open_time_ms)
        elif isinstance(message, (*rm.RISK_INBOX_TYPES, rm.InboxClosed)):
            msg = message
        else:
            self._log.error("risk_unknown_message", type=type(message).__name__)
            return
        self._perform(self.machine.handle(msg, now_ms=loop.now_ms), loop)

    def _perform(self, effects: list[rm.RiskEffect], loop: EventLoop) -> None:
        for effect in effects:
            match effect:
                case Log():
                    write_log(self._log, effect)
                case rm.Persist():
                    pass  # never emitted: built with persists=False
                case rm.SendPlan():
                    loop.send(self._execution, effect.submit)
                case rm.SendExecutionSync():
                    loop.send(self._execution, effect.sync)
                case rm.SendRetryDecided():
                    if not effect.shadow:
                        loop.send(self._execution, effect.decided)
                    elif self._shadow is not None:
                        loop.send(self._shadow, effect.decided)
                case rm.SendShadowPlan():
                    dropped = None
                    if self._shadow is None:
                        dropped = "no shadow book"
                    else:
                        loop.send(self._shadow, effect.submit)
                    answer = rm.ShadowPlanAnswered(effect=effect, dropped=dropped)
                    self._perform(self.machine.handle(answer, now_ms=loop.now_ms), loop)
                case rm.ReplyVerdict():
                    reply = effect.reply
                    if isinstance(reply, VerdictReply):
                        reply.answer(effect.verdict, loop)
                case rm.SetTimer():
                    key = (*self._timer_prefix, effect.candle_open_time_ms)
                    loop.set_timer(key, effect.at_ms, self, _BatchDeadline(effect.candle_open_time_ms))
                case rm.CancelTimer():
                    loop.cancel_timer((*self._timer_prefix, effect.candle_open_time_ms))
                case rm.SetMetric() | rm.IncMetric():
                    pass  # a replay has no /metrics
                case rm.Crash():
                    raise effect.error
                case _:
                    assert_never(effect)


class ShadowOutlet:
    """What the shadow book's execution sends "to risk": of its messages only a closed trade (as
    `ShadowTradeClosed`) and a retry request (marked shadow) reach the risk cell; the rest is dropped,
    as in the trio runtime's shadow forwarder."""

    def __init__(self, risk: Recipient, log: LogSink) -> None:
        self._risk = risk
        self._log = log

    def deliver(self, message: object, loop: EventLoop) -> None:
        if isinstance(message, TradeClosed):
            self._log.info("shadow_trade_closed", trade_id=message.trade_id, symbol=message.symbol)
            loop.send(self._risk, ShadowTradeClosed(record=message.record))
        elif isinstance(message, RetryRequested):
            loop.send(self._risk, msgspec.structs.replace(message, shadow=True))


class ExecutionCell:
    """An `ExecutionMachine` on the loop, trading on `venue` (see the module docstring).

    `risk` gets `SendRisk` messages (and `also_risk`, e.g. the reporter, a copy); `symbols(symbol)`
    says where a `SendSymbol` goes (None: dropped, logged as the trio shell does). Until `start` has
    ended, sends are held back and delivered in order afterwards (the machine's contract)."""

    def __init__(
        self,
        *,
        machine: xm.ExecutionMachine,
        venue: PaperVenue,
        store: StateStore,
        journal: TradeJournal,
        risk: Recipient,
        symbols: Callable[[str], Recipient | None],
        log: LogSink,
        on_fault: FaultSink | None = None,
        on_alert: AlertSink | None = None,
        also_risk: Recipient | None = None,
    ) -> None:
        self.machine = machine
        self.venue = venue
        self._store = store
        self._journal = journal
        self.risk = risk
        self._also_risk = also_risk
        self._symbols = symbols
        self._log = log
        self._on_fault = on_fault
        self._on_alert = on_alert
        self._started = False
        self._held: list[xm.SendRisk | xm.SendSymbol] = []
        self._timer_prefix = ("execution", id(self))

    def start(self, loop: EventLoop) -> None:
        self._handle(xm.Start(), loop)
        self._started = True
        held, self._held = self._held, []
        for effect in held:
            self._send(effect, loop)

    def deliver(self, message: object, loop: EventLoop) -> None:
        if isinstance(message, _Timer):
            self._handle(xm.TimerFired(key=message.key), loop)
        else:
            self._handle(message, loop)  # type: ignore[arg-type]

    def _handle(self, message: xm.ExecutionInput, loop: EventLoop) -> None:
        item: xm.ExecutionInput | None = message
        while item is not None:
            answer: xm.ExecutionInput | None = None
            for effect in self.machine.handle(item, now_ms=loop.now_ms):
                if answer is not None:
                    raise xm.ExecutionMachineError(f"{type(effect).__name__} after a request")
                answer = self._perform(effect, loop)
            item = answer

    def _perform(self, effect: xm.ExecutionEffect, loop: EventLoop) -> xm.ExecutionInput | None:
        match effect:
            case Log():
                write_log(self._log, effect)
            case xm.GatewayCall(request_id=rid, call=call):
                try:
                    result = self.venue.call(call_gateway(self.venue.paper, call), loop)
                except Exception as exc:
                    return xm.GatewayFailed(request_id=rid, error=exc)
                return xm.GatewayReplied(request_id=rid, result=result)
            case xm.Persist():
                return answer_persist(self._store, effect)
            case xm.ReadState():
                return answer_read(self._store, effect)
            case xm.WriteJournal():
                return answer_journal(self._journal, effect)
            case xm.SetMeta(key=key, value=value):
                self._store.set_meta(key, value)
            case xm.SetTimer(key=key, at_ms=at_ms):
                loop.set_timer((*self._timer_prefix, key), at_ms, self, _Timer(key))
            case xm.CancelTimer(key=key):
                loop.cancel_timer((*self._timer_prefix, key))
            case xm.SendRisk() | xm.SendSymbol():
                if self._started:
                    self._send(effect, loop)
                else:
                    self._held.append(effect)
            case xm.ReportFault(kind=kind, symbol=symbol, detail=detail):
                if self._on_fault is not None:
                    self._on_fault(kind, symbol, detail)
            case xm.RaiseAlert(code=code, symbol=symbol, message=message):
                if self._on_alert is not None:
                    self._on_alert(code, symbol, message)
            case xm.SetGauge() | xm.IncCounter():
                pass  # a replay has no /metrics
            case xm.Crash(error=error):
                raise error
            case _:
                assert_never(effect)
        return None

    def _send(self, effect: xm.SendRisk | xm.SendSymbol, loop: EventLoop) -> None:
        if isinstance(effect, xm.SendRisk):
            loop.send(self.risk, effect.message)
            if self._also_risk is not None:
                loop.send(self._also_risk, effect.message)
            return
        target = self._symbols(effect.symbol)
        if target is None:
            self._log.info(
                "symbol_actor_missing", symbol=effect.symbol, message=type(effect.message).__name__
            )
            return
        loop.send(target, effect.message)


class _Timer(msgspec.Struct, frozen=True):
    key: str

"""A synchronous runtime for the ExecutionMachine tests (no trio here): the paper exchange answers at once.

`SyncRuntime` plays the part a discrete-event replay runtime plays: it feeds a message to the machine,
performs the effects in order, answers every request synchronously (the `PaperExchange`'s gateway
methods never await: `runtime.venue.complete` runs them to the end; the state store and the journal are
the real ones on a temporary directory), keeps the timers as a heap on its own millisecond clock and
delivers the paper exchange's events once the machine is idle. `advance_to(t)` moves the clock, firing
timers and the exchange's scheduled events in time order, as the trio shell does under the mock clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, assert_never

from futures_actor.actors.execution import answer_journal, answer_persist, answer_read, call_gateway
from futures_actor.actors.messages import PositionUpdated
from futures_actor.binance.gateway import GatewayEvent
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.config import BotConfig, LoggingConfig
from futures_actor.core.types import SymbolRules
from futures_actor.machines.effects import Log
from futures_actor.machines.execution import (
    CancelTimer,
    Crash,
    ExecutionEffect,
    ExecutionInput,
    ExecutionMachine,
    GatewayCall,
    GatewayFailed,
    GatewayReplied,
    GatewayRequest,
    IncCounter,
    Persist,
    RaiseAlert,
    ReadState,
    ReportFault,
    SendRisk,
    SendSymbol,
    SetGauge,
    SetMeta,
    SetTimer,
    Start,
    TimerFired,
    WriteJournal,
)
from futures_actor.runtime.venue import complete
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore

D = Decimal
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CFG = BotConfig()
RULES = {
    "BTCUSDT": SymbolRules(symbol="BTCUSDT", tick_size=D("0.1"), step_size=D("0.001"), min_qty=D("0.001")),
    "ETHUSDT": SymbolRules(symbol="ETHUSDT", tick_size=D("0.01"), step_size=D("0.001"), min_qty=D("0.001")),
}

Fault = Callable[[GatewayRequest], Exception | None]


class SyncRuntime:
    """One machine, its paper exchange, state store and journal, driven synchronously (module docstring)."""

    def __init__(
        self,
        tmp: Path,
        *,
        cfg: BotConfig = CFG,
        rules: dict[str, SymbolRules] | None = None,
        start_ms: int = T0,
        paper: PaperExchange | None = None,
    ) -> None:
        self.cfg = cfg
        self.rules = dict(RULES if rules is None else rules)
        self.t = start_ms
        self.paper = paper or PaperExchange(cfg=cfg.execution, rules=self.rules, now_ms=self.now_ms)
        self.store = StateStore.open(tmp / "state.sqlite")
        self.journal = TradeJournal(directory=tmp / "logs", cfg=LoggingConfig(), clock=self)
        self.machine = ExecutionMachine(cfg=cfg, mode="PAPER_LIVE", rules_by_symbol=self.rules)
        self.effects: list[ExecutionEffect] = []  # every effect, in order
        self.fault: Fault | None = None  # answers a gateway call with this error instead
        self._timers: list[tuple[int, int, str]] = []
        self._timer_seq: dict[str, int] = {}
        self._seq = itertools.count()
        self.fired_at: list[int] = []  # when each timer fired

    def now_ms(self) -> int:
        return self.t

    # --- driving

    def start(self) -> None:
        self.feed(Start())

    def feed(self, msg: ExecutionInput) -> None:
        """One message through the machine, every request answered; then the exchange's events."""
        self._handle(msg)
        self.deliver_events()

    def deliver_events(self) -> None:
        while events := self.paper.take_events():  # what `PaperExchange.run` would send (no trio here)
            for event in events:
                self._handle(event)

    def advance_to(self, t: int) -> None:
        """Move the clock to `t`: the exchange's scheduled events and the timers fire in time order.

        Like the trio shell: every timer due at an instant fires (each fully answered) before the events
        those timers caused are delivered."""
        while True:
            due = [self._timers[0][0]] if self._timers else []
            nxt = self.paper.next_event_ms()
            if nxt is not None:
                due.append(nxt)
            step = min([*due, t])
            self.t = max(self.t, step)
            self.paper.advance_to(self.t)
            self.deliver_events()
            while self._timers and self._timers[0][0] <= self.t:
                _, seq, key = heapq.heappop(self._timers)
                if self._timer_seq.get(key) != seq:
                    continue
                del self._timer_seq[key]
                self.fired_at.append(self.t)
                self._handle(TimerFired(key=key))
            self.deliver_events()
            if step >= t:
                return

    def advance(self, seconds: float) -> None:
        self.advance_to(self.t + round(seconds * 1000))

    def set_price(self, symbol: str, price: str, *, volume: str | None = None) -> None:
        """Mark, last trade and a one-tick book around `price` (as the actor tests' harness does)."""
        p = D(price)
        tick = self.rules[symbol].tick_size
        self.paper.on_mark(symbol, p, 0.0, self.t + 3_600_000, self.t)
        self.paper.on_trade_price(symbol, p, self.t, volume=None if volume is None else D(volume))
        self.paper.on_book(symbol, p - tick, p + tick, self.t)
        self.deliver_events()

    # --- what happened

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]

    def risk(self, kind: type | None = None) -> list[Any]:
        msgs = [e.message for e in self.effects if isinstance(e, SendRisk)]
        return msgs if kind is None else [m for m in msgs if isinstance(m, kind)]

    def calls(self) -> list[GatewayRequest]:
        return [e.call for e in self.effects if isinstance(e, GatewayCall)]

    def symbol_msgs(self) -> list[PositionUpdated]:
        return [e.message for e in self.effects if isinstance(e, SendSymbol)]

    def logs(self, event: str) -> list[Log]:
        return [e for e in self.effects if isinstance(e, Log) and e.event == event]

    # --- the runtime's part

    def _handle(self, msg: ExecutionInput | GatewayEvent) -> None:
        item: ExecutionInput = msg
        while True:
            answer: ExecutionInput | None = None
            for effect in self.machine.handle(item, now_ms=self.t):
                assert answer is None, f"{effect} after a request"
                self.effects.append(effect)
                answer = self._perform(effect)
            if answer is None:
                return
            item = answer

    def _perform(self, effect: ExecutionEffect) -> ExecutionInput | None:
        match effect:
            case GatewayCall(request_id=rid, call=call):
                error = None if self.fault is None else self.fault(call)
                if error is not None:
                    return GatewayFailed(request_id=rid, error=error)
                try:
                    return GatewayReplied(request_id=rid, result=complete(call_gateway(self.paper, call)))
                except Exception as exc:
                    return GatewayFailed(request_id=rid, error=exc)
            case Persist():
                return answer_persist(self.store, effect)
            case ReadState():
                return answer_read(self.store, effect)
            case WriteJournal():
                return answer_journal(self.journal, effect)
            case SetMeta(key=key, value=value):
                self.store.set_meta(key, value)
            case SetTimer(key=key, at_ms=at_ms):
                seq = next(self._seq)
                self._timer_seq[key] = seq
                heapq.heappush(self._timers, (at_ms, seq, key))
            case CancelTimer(key=key):
                self._timer_seq.pop(key, None)
            case Crash(error=error):
                raise error
            case SendRisk() | SendSymbol() | Log() | ReportFault() | RaiseAlert() | SetGauge() | IncCounter():
                pass
            case _:
                assert_never(effect)
        return None

    def timers(self) -> dict[str, int]:
        """The live timers: key -> at_ms."""
        live = {key: seq for key, seq in self._timer_seq.items()}
        return {key: at for at, seq, key in self._timers if live.get(key) == seq}

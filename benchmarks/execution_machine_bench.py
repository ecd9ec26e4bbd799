"""ExecutionMachine alone, no trio: the trade loop of `execution_bench.py` driven synchronously.

Each trade: price 100.1, `SubmitPlan` (entry LIMIT 100.0), the price trades through the entry (fill →
stop and target placed), then through the target (exit, journal record, `TradeClosed`). Every request
is answered at once: the `PaperExchange` gateway methods (they never suspend), the real `StateStore`
and `TradeJournal` on tmpfs. Prints trades/s for the whole synchronous loop, the time spent inside
`ExecutionMachine.handle` per trade, and (like `execution_bench.py`) SubmitPlan → entry request and
entry fill → stop request, here measured as wall time inside this loop (no task switches to pay).

    .venv/bin/python benchmarks/execution_machine_bench.py [N]   (default 10000)
"""

from __future__ import annotations

import heapq
import itertools
import logging
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from futures_actor.actors.execution import call_gateway
from futures_actor.actors.messages import SubmitPlan
from futures_actor.binance.gateway import OrderUpdate
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.config import BotConfig, LoggingConfig
from futures_actor.core.ids import new_trade_id
from futures_actor.core.models import TradePlan
from futures_actor.core.types import Regime, Side, SymbolRules
from futures_actor.machines.execution import (
    CancelTimer,
    ExecutionInput,
    ExecutionMachine,
    GatewayCall,
    GatewayFailed,
    GatewayReplied,
    GetMeta,
    JournalWritten,
    LoadLifecycle,
    LoadLifecycles,
    Persist,
    Persisted,
    PlaceOrder,
    PlaceStop,
    ReadState,
    SetMeta,
    SetTimer,
    Start,
    StateRead,
    TimerFired,
    WriteJournal,
)
from futures_actor.runtime.venue import complete
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore

D = Decimal
T0 = 1_767_225_600_000
SYMBOL = "BTCUSDT"
RULES = {SYMBOL: SymbolRules(symbol=SYMBOL, tick_size=D("0.1"), step_size=D("0.001"), min_qty=D("0.001"))}
CFG = BotConfig()
DEFAULT_TRADES = 10_000
STEP_MS = 100


def plan(i: int) -> TradePlan:
    return TradePlan(
        trade_id=new_trade_id(symbol=SYMBOL, strategy="bench", candle_open_time_ms=T0 + i),
        symbol=SYMBOL,
        strategy="trend_pullback",
        side=Side.LONG,
        regime=Regime.TREND,
        confidence_score=0.7,
        candle_open_time_ms=T0 + i,
        created_ms=T0,
        entry_price=D("100.0"),
        quantity=D("0.010"),
        stop_price=D("98.0"),
        target_price=D("104.0"),
        leverage=2.0,
        equity_usd=10_000.0,
        risk_pct=0.002,
        risk_usd=0.02,
        stop_pct=0.02,
        notional_usd=1.0,
        margin_used_usd=0.5,
    )


class Bench:
    def __init__(self, directory: Path) -> None:
        self.t = T0
        self.paper = PaperExchange(cfg=CFG.execution, rules=dict(RULES), now_ms=lambda: self.t)
        self.store = StateStore.open(directory / "state.sqlite")
        self.journal = TradeJournal(directory=directory / "logs", cfg=LoggingConfig(), clock=self)
        self.machine = ExecutionMachine(cfg=CFG, mode="PAPER_LIVE", rules_by_symbol=RULES)
        self.in_machine = 0.0
        self.timers: list[tuple[int, int, str]] = []
        self.live: dict[str, int] = {}
        self.seq = itertools.count()
        self.entry_sent: dict[str, float] = {}
        self.stop_sent: dict[str, float] = {}
        self.fill_seen: dict[str, float] = {}

    def now_ms(self) -> int:
        return self.t

    def handle(self, msg: ExecutionInput) -> None:
        item: ExecutionInput | None = msg
        while item is not None:
            start = time.perf_counter()
            effects = self.machine.handle(item, now_ms=self.t)
            self.in_machine += time.perf_counter() - start
            item = None
            for effect in effects:
                item = self.perform(effect)

    def perform(self, effect: Any) -> ExecutionInput | None:
        match effect:
            case GatewayCall(request_id=rid, call=call):
                if isinstance(call, PlaceOrder) and call.order.client_id.endswith("E1"):
                    self.entry_sent[call.order.client_id[:-3]] = time.perf_counter()
                if isinstance(call, PlaceStop) and call.stop.client_id.endswith("S1"):
                    self.stop_sent[call.stop.client_id[:-3]] = time.perf_counter()
                try:
                    return GatewayReplied(request_id=rid, result=complete(call_gateway(self.paper, call)))  # type: ignore[arg-type]
                except Exception as exc:
                    return GatewayFailed(request_id=rid, error=exc)
            case Persist(request_id=rid):
                self.store.persist(effect.state, effect.commands, now_ms=effect.now_ms)
                return Persisted(request_id=rid)
            case ReadState(request_id=rid, query=LoadLifecycle(trade_id=tid)):
                return StateRead(request_id=rid, value=self.store.load_lifecycle(tid))
            case ReadState(request_id=rid, query=LoadLifecycles(include_closed=closed)):
                return StateRead(request_id=rid, value=self.store.load_lifecycles(include_closed=closed))
            case ReadState(request_id=rid, query=GetMeta(key=key)):
                return StateRead(request_id=rid, value=self.store.get_meta(key))
            case WriteJournal(request_id=rid, record=record):
                self.journal.write(record)
                return JournalWritten(request_id=rid, outcome="WRITTEN")
            case SetMeta(key=key, value=value):
                self.store.set_meta(key, value)
            case SetTimer(key=key, at_ms=at_ms):
                seq = next(self.seq)
                self.live[key] = seq
                heapq.heappush(self.timers, (at_ms, seq, key))
            case CancelTimer(key=key):
                self.live.pop(key, None)
        return None

    def events(self) -> None:
        while events := self.paper.take_events():
            for ev in events:
                if isinstance(ev, OrderUpdate) and ev.last_fill_qty > 0 and ev.order.client_id.endswith("E1"):
                    self.fill_seen[ev.order.client_id[:-3]] = time.perf_counter()
                self.handle(ev)

    def advance(self, ms: int) -> None:
        self.t += ms
        self.paper.advance_to(self.t)
        self.events()
        while self.timers and self.timers[0][0] <= self.t:
            _, seq, key = heapq.heappop(self.timers)
            if self.live.get(key) == seq:
                del self.live[key]
                self.handle(TimerFired(key=key))
        self.events()

    def price(self, p: str, volume: str | None = None) -> None:
        x = D(p)
        self.paper.on_mark(SYMBOL, x, 0.0, self.t + 3_600_000, self.t)
        self.paper.on_trade_price(SYMBOL, x, self.t, volume=None if volume is None else D(volume))
        self.paper.on_book(SYMBOL, x - D("0.1"), x + D("0.1"), self.t)
        self.events()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TRADES
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as d:
        b = Bench(Path(d))
        submit: dict[str, float] = {}
        start = time.perf_counter()
        b.handle(Start())
        for i in range(n):
            p = plan(i)
            b.price("100.1")
            key = f"{CFG.exchange.client_id_prefix}-{p.trade_id.replace('-', '')[:24]}"
            submit[key] = time.perf_counter()
            b.handle(SubmitPlan(plan=p, mid_price=D("100.1")))
            b.events()
            b.advance(STEP_MS)
            b.price("99.5", "1")
            b.advance(STEP_MS)
            b.price("104.5", "1")
            b.advance(STEP_MS)
        total = time.perf_counter() - start
        b.store.close()
    a = [(b.entry_sent[k] - t) * 1e6 for k, t in submit.items() if k in b.entry_sent]
    s = [(b.stop_sent[k] - t) * 1e6 for k, t in b.fill_seen.items() if k in b.stop_sent]
    print(
        f"trades: {n} in {total:.1f} s wall ({n / total:.0f} trades/s), synchronous, store + journal on tmpfs"
    )
    print(f"inside ExecutionMachine.handle: {b.in_machine:.1f} s ({b.in_machine / n * 1e6:.0f} us a trade)")
    print(
        f"SubmitPlan -> entry request: median {statistics.median(a):.0f} us, p99 {pct(a, 0.99):.0f} us (n={len(a)})"
    )
    print(
        f"entry fill -> stop request:  median {statistics.median(s):.0f} us, p99 {pct(s, 0.99):.0f} us (n={len(s)})"
    )


if __name__ == "__main__":
    main()

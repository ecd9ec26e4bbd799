"""Execution actor latency on the in-process PaperExchange (mock clock, state file and journal on tmpfs).

Measures, per trade: SubmitPlan sent → entry request reaching the gateway, and entry fill event handed to
Execution → stop request reaching the gateway. Prints median and p99 (microseconds) over N trades.

    .venv/bin/python benchmarks/execution_bench.py [N]   (default 10000)
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.execution import Execution
from futures_actor.actors.messages import SubmitPlan
from futures_actor.binance.gateway import OrderRequest, OrderState, OrderUpdate, StopRequest
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.config import BotConfig, LoggingConfig
from futures_actor.core.ids import new_trade_id
from futures_actor.core.models import TradePlan
from futures_actor.core.types import Regime, Side, SymbolRules
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore

D = Decimal
T0 = 1_767_225_600_000
SYMBOL = "BTCUSDT"
RULES = {SYMBOL: SymbolRules(symbol=SYMBOL, tick_size=D("0.1"), step_size=D("0.001"), min_qty=D("0.001"))}
CFG = BotConfig()
DEFAULT_TRADES = 10_000


class TimedGateway:
    """Stamps the moment each entry / stop request reaches the gateway and each entry fill leaves it."""

    def __init__(self, inner: PaperExchange) -> None:
        self.inner = inner
        self.entry_sent: dict[str, float] = {}
        self.stop_sent: dict[str, float] = {}
        self.fill_seen: dict[str, float] = {}
        self._send, self._recv = trio.open_memory_channel[Any](256)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            await n.start(self.inner.run)
            task_status.started()
            async for ev in self.inner.events():
                if isinstance(ev, OrderUpdate) and ev.last_fill_qty > 0 and ev.order.client_id.endswith("E1"):
                    self.fill_seen[ev.order.client_id[:-3]] = time.perf_counter()
                await self._send.send(ev)

    def events(self) -> Any:
        return self._recv

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def place_order(self, req: OrderRequest) -> OrderState:
        if req.client_id.endswith("E1"):
            self.entry_sent[req.client_id[:-3]] = time.perf_counter()
        return await self.inner.place_order(req)

    async def place_stop(self, req: StopRequest) -> OrderState:
        if req.client_id.endswith("S1"):
            self.stop_sent[req.client_id[:-3]] = time.perf_counter()
        return await self.inner.place_stop(req)


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


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def bench(n: int, directory: Path) -> tuple[list[float], list[float]]:
    clock = TrioWallClock(T0)
    paper = PaperExchange(cfg=CFG.execution, rules=RULES, now_ms=clock.now_ms)
    gw = TimedGateway(paper)
    store = StateStore.open(directory / "state.sqlite")
    journal = TradeJournal(directory=directory / "logs", cfg=LoggingConfig(), clock=clock)
    risk_send, risk_recv = trio.open_memory_channel[Any](100_000)
    inbox_send, inbox_recv = trio.open_memory_channel[Any](16)
    ex = Execution(
        cfg=CFG,
        mode="PAPER_LIVE",
        gateway=gw,  # type: ignore[arg-type]
        store=store,
        journal=journal,
        rules_by_symbol=RULES,
        wall_clock=clock,
        risk_send=risk_send,
        symbol_sends={},
        journal_in_thread=False,
    )
    submit: dict[str, float] = {}

    def price(p: str, volume: str | None = None) -> None:
        now = clock.now_ms()
        x = D(p)
        paper.on_mark(SYMBOL, x, 0.0, now + 3_600_000, now)
        paper.on_trade_price(SYMBOL, x, now, volume=None if volume is None else D(volume))
        paper.on_book(SYMBOL, x - D("0.1"), x + D("0.1"), now)

    async with trio.open_nursery() as nursery:
        await nursery.start(gw.run)
        await nursery.start(ex.run, inbox_recv)
        nursery.start_soon(_drain, risk_recv)
        for i in range(n):
            p = plan(i)
            price("100.1")
            key = f"{CFG.exchange.client_id_prefix}-{p.trade_id.replace('-', '')[:24]}"
            submit[key] = time.perf_counter()
            await inbox_send.send(SubmitPlan(plan=p, mid_price=D("100.1")))
            await trio.sleep(0.1)
            price("99.5", "1")
            await trio.sleep(0.1)
            price("104.5", "1")
            await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    store.close()
    a = [(gw.entry_sent[k] - t) * 1e6 for k, t in submit.items() if k in gw.entry_sent]
    b = [(gw.stop_sent[k] - t) * 1e6 for k, t in gw.fill_seen.items() if k in gw.stop_sent]
    return a, b


async def _drain(recv: trio.MemoryReceiveChannel[Any]) -> None:
    async for _ in recv:
        pass


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TRADES
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as d:
        start = time.perf_counter()
        a, b = trio.run(bench, n, Path(d), clock=trio.testing.MockClock(autojump_threshold=0))
        total = time.perf_counter() - start
    print(f"trades: {n} in {total:.1f} s wall ({n / total:.0f} trades/s)")
    print(
        f"SubmitPlan -> entry request: median {statistics.median(a):.0f} us, p99 {pct(a, 0.99):.0f} us (n={len(a)})"
    )
    print(
        f"entry fill -> stop request:  median {statistics.median(b):.0f} us, p99 {pct(b, 0.99):.0f} us (n={len(b)})"
    )


if __name__ == "__main__":
    main()

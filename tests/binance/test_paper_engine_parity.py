"""One engine: the paper exchange and the fake exchange's matching engine give the same fills.

The same orders over the same price path: a seeded random walk of 5m candles, each opening at the
previous close (no gap), with volume large enough that the participation cap never binds (the cap
is the engine's too, but the fake credits a candle's volume at its start while the paper exchange
spreads it over the candle, so capped fills differ in time by design). Entries are resting limits,
protected by reduce-only MARK_PRICE stops and reduce-only limit targets, some closed by MARKET.
The engine side is driven candle by candle (`on_candle`, as the fake does); the paper side by the
timed path under trio's mock clock. Every fill must agree: order, quantity, price, maker flag, fee
and realized PnL."""

from __future__ import annotations

import random
from decimal import Decimal

import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.binance.gateway import GatewayEvent, OrderRequest, OrderUpdate, StopRequest
from futures_actor.binance.paper import PaperExchange
from futures_actor.binance.sim.account import Account
from futures_actor.binance.sim.matching import (
    MatchingEngine,
    NewAlgoOrder,
    NewOrder,
    OrderEvent,
)
from futures_actor.binance.sim.symbols import SymbolSpec
from futures_actor.core.config import ExecutionConfig
from futures_actor.core.types import Candle, SymbolRules

T0 = 1_750_000_200_000
FIVE_M = 300_000
SYM = "ETHUSDT"
TICK = Decimal("0.01")
RULES = SymbolRules(
    symbol=SYM,
    tick_size=TICK,
    step_size=Decimal("0.001"),
    min_qty=Decimal("0.001"),
    min_notional=Decimal("5"),
)
CFG = ExecutionConfig()
CANDLES = 120
HUGE_VOLUME = 1e9

Fill = tuple[str, Decimal, Decimal, bool, Decimal, Decimal]


def walk(seed: int) -> list[Candle]:
    rng = random.Random(seed)
    out: list[Candle] = []
    close = 2500.0
    for i in range(CANDLES):
        o = close
        c = round(o * (1 + rng.gauss(0, 0.004)), 2)
        h = round(max(o, c) * (1 + abs(rng.gauss(0, 0.002))), 2)
        lo = round(min(o, c) * (1 - abs(rng.gauss(0, 0.002))), 2)
        out.append(Candle(open_time_ms=T0 + i * FIVE_M, open=o, high=h, low=lo, close=c, volume=HUGE_VOLUME))
        close = c
    return out


def tick(x: float) -> Decimal:
    return (Decimal(repr(x)) / TICK).quantize(Decimal(1)) * TICK


class Both:
    """Applies each action to the engine (synchronously) and to the paper exchange (awaited)."""

    def __init__(self, eng: MatchingEngine, paper: PaperExchange) -> None:
        self.eng = eng
        self.paper = paper
        self.engine_fills: list[Fill] = []

    def _keep(self, events: list[object]) -> None:
        for ev in events:
            if isinstance(ev, OrderEvent) and ev.execution == "TRADE":
                self.engine_fills.append(
                    (
                        ev.order.client_order_id,
                        ev.last_qty,
                        ev.last_price,
                        ev.maker,
                        ev.commission,
                        ev.realized_pnl,
                    )
                )

    async def limit(self, cid: str, side: str, qty: str, price: Decimal, reduce_only: bool = False) -> None:
        _, ev = self.eng.place_order(
            NewOrder(
                symbol=SYM,
                side=side,
                type="LIMIT",
                quantity=Decimal(qty),
                price=price,
                time_in_force="GTC",
                reduce_only=reduce_only,
                client_order_id=cid,
            )
        )
        self._keep(list(ev))
        await self.paper.place_order(
            OrderRequest(
                symbol=SYM,
                client_id=cid,
                side=side,  # type: ignore[arg-type]
                type="LIMIT",
                quantity=Decimal(qty),
                price=price,
                reduce_only=reduce_only,
            )
        )

    async def market(self, cid: str, side: str, qty: Decimal) -> None:
        _, ev = self.eng.place_order(
            NewOrder(
                symbol=SYM, side=side, type="MARKET", quantity=qty, reduce_only=True, client_order_id=cid
            )
        )
        self._keep(list(ev))
        await self.paper.place_order(
            OrderRequest(symbol=SYM, client_id=cid, side=side, type="MARKET", quantity=qty, reduce_only=True)  # type: ignore[arg-type]
        )

    async def stop(self, cid: str, side: str, qty: Decimal, trigger: Decimal) -> None:
        _, ev = self.eng.place_algo(
            NewAlgoOrder(
                symbol=SYM,
                side=side,
                type="STOP_MARKET",
                quantity=qty,
                trigger_price=trigger,
                working_type="MARK_PRICE",
                reduce_only=True,
                client_algo_id=cid,
            )
        )
        self._keep(list(ev))
        await self.paper.place_stop(
            StopRequest(symbol=SYM, client_id=cid, side=side, trigger_price=trigger, quantity=qty)  # type: ignore[arg-type]
        )

    async def cancel_all(self) -> None:
        for o in self.eng.open_orders(SYM):
            if not o.algo_id:
                self._keep(list(self.eng.cancel_order(SYM, order_id=o.order_id)[1]))
                await self.paper.cancel_order(SYM, o.client_order_id)
        for a in self.eng.open_algos(SYM):
            self._keep(list(self.eng.cancel_algo(algo_id=a.algo_id)[1]))
            await self.paper.cancel_stop(SYM, a.client_algo_id)


async def run_parity(seed: int) -> tuple[list[Fill], list[Fill]]:
    candles = walk(seed)
    eng = MatchingEngine(
        execution=CFG,
        symbols={SYM: SymbolSpec(rules=RULES)},
        account=Account(initial_balance=Decimal(repr(CFG.paper_initial_balance_usdt))),
        now_ms=T0,
    )
    eng.set_leverage(SYM, 2)
    eng.on_price(SYM, Decimal(repr(candles[0].open)))
    clock = TrioWallClock(T0)
    paper = PaperExchange(cfg=CFG, rules={SYM: RULES}, now_ms=clock.now_ms)
    events: list[GatewayEvent] = []

    async def collect() -> None:
        async for ev in paper.events():
            events.append(ev)

    both = Both(eng, paper)
    async with trio.open_nursery() as nursery:
        await nursery.start(paper.run)
        nursery.start_soon(collect)
        await paper.prepare_symbol(SYM, leverage=2)
        paper.on_trade_price(SYM, candles[0].open, T0 - 1)
        rng = random.Random(seed + 1)
        for i, c in enumerate(candles):
            paper.on_path(SYM, c, FIVE_M)
            eng.now_ms = c.open_time_ms
            last = c.open
            pos = eng.account.position(SYM).amount
            if pos == 0:
                await both.cancel_all()
                side = "BUY" if rng.random() < 0.5 else "SELL"
                offset = rng.uniform(0.0005, 0.004)
                price = tick(last * (1 - offset) if side == "BUY" else last * (1 + offset))
                await both.limit(f"e{i}", side, "0.5", price)
            elif not eng.open_algos(SYM):
                await both.cancel_all()
                exit_side = "SELL" if pos > 0 else "BUY"
                sign = 1 if pos > 0 else -1
                await both.stop(f"s{i}", exit_side, abs(pos), tick(last * (1 - sign * 0.004)))
                await both.limit(
                    f"t{i}", exit_side, str(abs(pos)), tick(last * (1 + sign * 0.005)), reduce_only=True
                )
            elif i % 9 == 0:
                await both.cancel_all()
                await both.market(f"x{i}", "SELL" if pos > 0 else "BUY", abs(pos))
            both._keep(list(eng.on_candle(SYM, c)))
            await trio.sleep((c.open_time_ms + FIVE_M - clock.now_ms()) / 1000)
            await trio.sleep(1e-6)
        nursery.cancel_scope.cancel()
    paper_fills: list[Fill] = [
        (e.order.client_id, e.last_fill_qty, e.last_fill_price, e.is_maker, e.fee, e.realized_pnl)
        for e in events
        if isinstance(e, OrderUpdate) and e.last_fill_qty > 0
    ]
    return both.engine_fills, paper_fills


async def test_same_orders_same_path_same_fills(autojump_clock: trio.testing.MockClock) -> None:
    for seed in (1, 2, 3):
        engine_fills, paper_fills = await run_parity(seed)
        kinds = {cid[0] for cid, *_ in engine_fills}
        assert {"e", "s", "t"} <= kinds, f"seed {seed}: the scenario must fill entries, stops and targets"
        assert paper_fills == engine_fills, f"seed {seed}"

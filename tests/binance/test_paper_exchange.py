"""PaperExchange under the mock clock: path fills through the price, TTL, volume caps, slippage, fees,
stops on the mark, funding, reduce-only and margin errors, persistence and determinism.

The fill rules are the matching engine's (tests/sim/test_sim_matching.py): slippage is rounded to the
tick away from the trader, and without a live book a taker meets the last price on either side."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.binance import errors as E
from futures_actor.binance.gateway import (
    AccountChanged,
    FundingPaid,
    GatewayEvent,
    OrderRequest,
    OrderUpdate,
    StopRequest,
)
from futures_actor.binance.paper import PaperExchange, PaperInputError
from futures_actor.core.config import ExecutionConfig
from futures_actor.core.types import Candle, SymbolRules
from futures_actor.state.store import StateStore

T0 = 1_750_000_200_000  # a 5 m boundary
FIVE_M = 300_000
SYM = "BTCUSDT"
RULES = {
    SYM: SymbolRules(
        symbol=SYM,
        tick_size=Decimal("0.1"),
        step_size=Decimal("0.001"),
        min_qty=Decimal("0.001"),
        min_notional=Decimal("5"),
    )
}
CFG = ExecutionConfig()
D = Decimal


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Rig:
    """A started paper exchange, its wall clock and every event it delivered."""

    def __init__(self, paper: PaperExchange, clock: TrioWallClock) -> None:
        self.paper = paper
        self.clock = clock
        self.events: list[GatewayEvent] = []
        self.blobs: list[bytes] = []

    async def collect(self) -> None:
        async for ev in self.paper.events():
            self.events.append(ev)

    async def until(self, ms: int) -> None:
        """Let trio (mock) time run to wall time `ms`, then let every task settle."""
        await trio.sleep(max(0, ms - self.clock.now_ms()) / 1000)
        await settle()

    def fills(self) -> list[OrderUpdate]:
        return [e for e in self.events if isinstance(e, OrderUpdate) and e.last_fill_qty > 0]

    def updates(self, cid: str) -> list[str]:
        return [
            e.order.status for e in self.events if isinstance(e, OrderUpdate) and e.order.client_id == cid
        ]


async def settle() -> None:
    await trio.sleep(1e-6)  # under a millisecond: the wall clock does not move


async def open_rig(nursery: trio.Nursery, *, restore: bytes | None = None, cfg: ExecutionConfig = CFG) -> Rig:
    clock = TrioWallClock(T0)
    rig: Rig
    paper = PaperExchange(
        cfg=cfg, rules=RULES, now_ms=clock.now_ms, persist=lambda b: rig.blobs.append(b), restore=restore
    )
    rig = Rig(paper, clock)
    await nursery.start(paper.run)
    nursery.start_soon(rig.collect)
    await settle()
    return rig


def candle(t: int, o: float, h: float, lo: float, c: float, v: float = 1000.0) -> Candle:
    return Candle(open_time_ms=t, open=o, high=h, low=lo, close=c, volume=v)


def limit(cid: str, side: str, qty: str, price: str, **kw: object) -> OrderRequest:
    return OrderRequest(
        symbol=SYM, client_id=cid, side=side, type="LIMIT", quantity=D(qty), price=D(price), **kw
    )  # type: ignore[arg-type]


def market(cid: str, side: str, qty: str, reduce_only: bool = False) -> OrderRequest:
    return OrderRequest(
        symbol=SYM, client_id=cid, side=side, type="MARKET", quantity=D(qty), reduce_only=reduce_only
    )  # type: ignore[arg-type]


def stop(cid: str, side: str, qty: str, trigger: str) -> StopRequest:
    return StopRequest(symbol=SYM, client_id=cid, side=side, trigger_price=D(trigger), quantity=D(qty))  # type: ignore[arg-type]


class TestLimitThroughThePrice:
    async def test_touch_does_not_fill_but_trading_through_does(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """A low equal to the limit is a touch (no fill); a low below it fills at the limit + slippage."""
        rig = await open_rig(nursery)
        rig.paper.on_path(SYM, candle(T0, 100, 101, 99, 100.5), FIVE_M)
        await rig.paper.place_order(limit("e1", "BUY", "1", "99"))
        await rig.until(T0 + FIVE_M)
        assert rig.fills() == []
        rig.paper.on_path(SYM, candle(T0 + FIVE_M, 100.5, 101, 98.9, 100), FIVE_M)
        await rig.until(T0 + 2 * FIVE_M)
        (fill,) = rig.fills()
        assert fill.last_fill_qty == D("1")
        assert fill.last_fill_price == D("99.1")  # 99 × 1.0002, adverse for a buy: up to the tick
        assert fill.is_maker
        assert fill.fee == D("99.1") * D("1") * D("0.0002")
        assert fill.order.status == "FILLED"

    async def test_fill_time_is_the_first_ms_strictly_through(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """Open 100, high 100.5 at T+100 s, low 98 at T+200 s: 99.5 is touched at T+140 s exactly."""
        rig = await open_rig(nursery)
        rig.paper.on_path(SYM, candle(T0, 100, 100.5, 98, 99), FIVE_M)
        await rig.until(T0 + 1000)
        await rig.paper.place_order(limit("e1", "BUY", "1", "99.5"))
        await rig.until(T0 + FIVE_M)
        (fill,) = rig.fills()
        assert fill.ts_ms == T0 + 140_001

    async def test_ttl_cancel_before_the_crossing_means_no_fill(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """Placed at T+1 s, cancelled at T+31 s; the path crosses only at T+140 s."""
        rig = await open_rig(nursery)
        rig.paper.on_path(SYM, candle(T0, 100, 100.5, 98, 99), FIVE_M)
        await rig.until(T0 + 1000)
        await rig.paper.place_order(limit("e1", "BUY", "1", "99.5"))
        await rig.until(T0 + 31_000)
        cancelled = await rig.paper.cancel_order(SYM, "e1")
        assert cancelled is not None
        assert cancelled.status == "CANCELED"
        await rig.until(T0 + FIVE_M)
        assert rig.fills() == []
        assert rig.updates("e1") == ["NEW", "CANCELED"]
        assert await rig.paper.positions() == []
        assert await rig.paper.cancel_order(SYM, "e1") is None  # already gone: success

    async def test_partial_fill_capped_by_traded_volume(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """Volume 10 over the candle, participation 0.1: at most 0.1 × volume since placement fills."""
        rig = await open_rig(nursery)
        rig.paper.on_path(SYM, candle(T0, 100, 101, 95, 100, v=10), FIVE_M)
        await rig.paper.place_order(limit("e1", "BUY", "2", "99.5"))
        await rig.until(T0 + FIVE_M)
        fills = rig.fills()
        # High first (nearer the open) at +100 s, low 95 at +200 s: 99.5 is crossed at +125 001 ms
        # (volume 10×125 001/300 000 → cap 0.416). While the path stays below 99.5 (it climbs back
        # through it at +289 999.1 ms) the order is offered the new volume at least every second (and at
        # the low knot); the last offer, at +290 000 ms, covers a move that was still below 99.5 for
        # most of its second: cap 0.966 (10×290 000/300 000 × 0.1, floored to the step).
        assert fills[0].last_fill_qty == D("0.416")
        assert fills[0].ts_ms == T0 + 125_001
        times = [f.ts_ms for f in fills]
        assert times == sorted(set(times))
        assert all(b - a <= 1_000 for a, b in itertools.pairwise(times))
        assert times[-1] == T0 + 290_000
        assert sum((f.last_fill_qty for f in fills), D(0)) == D("0.966")
        (working,) = await rig.paper.open_orders()
        assert working.status == "PARTIALLY_FILLED"
        assert working.executed_qty == D("0.966")
        (pos,) = await rig.paper.positions()
        assert pos.side == "LONG"
        assert pos.quantity == D("0.966")


class TestMarketAndStops:
    async def test_market_slippage_is_adverse_for_both_sides_with_taker_fee(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        rig = await open_rig(nursery)
        rig.paper.on_trade_price(SYM, 100.0, T0)
        await rig.paper.place_order(market("m1", "BUY", "1"))
        await rig.paper.place_order(market("m2", "SELL", "1"))
        await settle()
        buy, sell = rig.fills()
        assert buy.last_fill_price == D("100.1")  # 100 × 1.0008 = 100.08, up to the tick
        assert sell.last_fill_price == D("99.9")  # bid 100 × 0.9992 = 99.92, down to the tick
        assert not buy.is_maker
        assert buy.fee == D("100.1") * D("1") * D("0.0004")
        assert sell.realized_pnl == (D("99.9") - D("100.1"))
        assert await rig.paper.positions() == []
        acct = await rig.paper.account()
        expected = D(10_000) + sell.realized_pnl - buy.fee - sell.fee
        assert acct.wallet_balance == expected
        assert acct.available_balance == expected

    async def test_sell_limit_slippage_and_marketable_limit_is_taker(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        rig = await open_rig(nursery)
        rig.paper.on_trade_price(SYM, 100.0, T0)
        await rig.paper.place_order(limit("l1", "SELL", "1", "99"))  # marketable: takes at 100 − slippage
        await settle()
        (taker,) = rig.fills()
        assert taker.last_fill_price == D("99.9")  # the bid 100 × 0.9992, down to the tick
        assert not taker.is_maker
        await rig.paper.place_order(limit("l2", "SELL", "1", "101"))
        rig.paper.on_trade_price(SYM, 101.5, T0 + 1000)
        await settle()
        maker = rig.fills()[1]
        assert maker.last_fill_price == D("100.9")  # 101 × 0.9998 = 100.9798, down to the tick
        assert maker.is_maker
        with pytest.raises(E.PostOnlyRejected):
            await rig.paper.place_order(limit("l3", "BUY", "1", "102", time_in_force="GTX"))

    async def test_stop_triggers_on_the_mark_and_fills_worse_of_trigger_and_price(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        rig = await open_rig(nursery)
        rig.paper.on_trade_price(SYM, 100.0, T0)
        rig.paper.on_mark(SYM, 100.0, 0.0001, T0 + 8 * 3_600_000, T0)
        await rig.paper.place_order(market("e1", "BUY", "1"))
        with pytest.raises(E.WouldTriggerImmediately):
            await rig.paper.place_stop(stop("s0", "SELL", "1", "100.5"))
        placed = await rig.paper.place_stop(stop("s1", "SELL", "1", "98"))
        assert placed.is_stop
        assert placed.status == "NEW"
        rig.paper.on_mark(SYM, 98.5, 0.0001, T0 + 8 * 3_600_000, T0 + 1000)
        await settle()
        assert len(rig.fills()) == 1
        rig.paper.on_book(SYM, 96.9, 97.0, T0 + 1500)  # the book gaps below the trigger
        rig.paper.on_mark(SYM, 97.9, 0.0001, T0 + 8 * 3_600_000, T0 + 2000)
        await settle()
        assert rig.updates("s1") == ["NEW", "TRIGGERED", "FILLED"]
        fill = rig.fills()[-1]
        assert fill.order.is_stop
        assert fill.order.client_id == "s1"
        assert fill.ts_ms == T0 + 2000
        # worse of trigger 98 and bid 96.9, × 0.999 = 96.8031, down to the tick
        assert fill.last_fill_price == D("96.8")
        assert await rig.paper.positions() == []
        assert await rig.paper.open_orders() == []

    async def test_buy_stop_on_replay_path_fills_above_the_trigger(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """Replay (no mark stream): the path is the mark; a short's BUY stop triggers on the way up."""
        rig = await open_rig(nursery)
        rig.paper.on_path(SYM, candle(T0, 100, 100.2, 99.9, 100.1), FIVE_M)
        await rig.paper.place_order(market("e1", "SELL", "1"))
        await rig.paper.place_stop(stop("s1", "BUY", "1", "102"))
        await rig.until(T0 + FIVE_M)
        rig.paper.on_path(SYM, candle(T0 + FIVE_M, 100.1, 104, 100, 103), FIVE_M)
        await rig.until(T0 + 2 * FIVE_M)
        fill = rig.fills()[-1]
        assert fill.order.client_id == "s1"
        assert fill.order.side == "BUY"
        assert fill.last_fill_price >= D("102") * D("1.001")
        # 100.1 at T+5m−1 → 100 at +100 s → 104 at +200 s: 102 reached at +150 s.
        assert fill.ts_ms == T0 + FIVE_M + 150_000

    async def test_reduce_only_stop_with_position_gone_is_rejected(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        rig = await open_rig(nursery)
        rig.paper.on_trade_price(SYM, 100.0, T0)
        await rig.paper.place_order(market("e1", "BUY", "1"))
        await rig.paper.place_stop(stop("s1", "SELL", "1", "95"))
        await rig.paper.place_order(market("x1", "SELL", "1", reduce_only=True))
        rig.paper.on_trade_price(SYM, 94.0, T0 + 1000)
        await settle()
        assert rig.updates("s1")[-1] == "REJECTED"
        assert await rig.paper.positions() == []


class TestFunding:
    @pytest.mark.parametrize(
        ("side", "rate", "expected"),
        [("BUY", "0.0001", "-0.01"), ("SELL", "0.0001", "0.01"), ("BUY", "-0.0003", "0.03")],
    )
    async def test_funding_sign_and_once_per_time(
        self,
        autojump_clock: trio.testing.MockClock,
        nursery: trio.Nursery,
        side: str,
        rate: str,
        expected: str,
    ) -> None:
        rig = await open_rig(nursery)
        funding_at = T0 + 60_000
        rig.paper.on_trade_price(SYM, 100.0, T0)
        rig.paper.on_mark(SYM, D("100"), D(rate), funding_at, T0)
        await rig.paper.place_order(market("e1", side, "1"))
        before = (await rig.paper.account()).wallet_balance
        await rig.until(funding_at + 1000)
        rig.paper.on_mark(SYM, D("100"), D(rate), funding_at, funding_at + 1000)  # a late repeat
        await rig.until(funding_at + 5000)
        (paid,) = [e for e in rig.events if isinstance(e, FundingPaid)]
        assert paid.amount == D(expected)
        assert paid.ts_ms == funding_at
        assert paid.symbol == SYM
        assert (await rig.paper.account()).wallet_balance == before + D(expected)


class TestRejections:
    async def test_reduce_only_margin_filters_and_duplicates(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        rig = await open_rig(nursery)
        rig.paper.on_trade_price(SYM, 100.0, T0)
        with pytest.raises(E.ReduceOnlyRejected) as ro:
            await rig.paper.place_order(market("x1", "SELL", "1", reduce_only=True))
        assert ro.value.code == -2022
        assert ro.value.client_id == "x1"
        await rig.paper.prepare_symbol(SYM, leverage=1)
        with pytest.raises(E.InsufficientMargin):
            await rig.paper.place_order(limit("e1", "BUY", "102", "99"))  # 10 098 > 10 000
        await rig.paper.prepare_symbol(SYM, leverage=2)
        big = await rig.paper.place_order(limit("e2", "BUY", "150", "99"))  # 14 850 / 2 = 7 425 reserved
        assert big.status == "NEW"
        assert (await rig.paper.account()).available_balance == D(10_000) - D("7425")
        with pytest.raises(E.InsufficientMargin):
            await rig.paper.place_order(limit("e3", "BUY", "60", "99"))
        with pytest.raises(E.Precision) as tick:
            await rig.paper.place_order(limit("e4", "BUY", "1", "99.05"))
        assert "tickSize" in str(tick.value)
        with pytest.raises(E.Precision):
            await rig.paper.place_order(limit("e5", "BUY", "1.0005", "99"))
        with pytest.raises(E.MinNotional):
            await rig.paper.place_order(limit("e6", "BUY", "0.04", "99"))
        with pytest.raises(E.ApiError) as unknown:
            await rig.paper.place_order(
                OrderRequest(symbol="NOPE", client_id="z", side="BUY", type="MARKET", quantity=D(1))
            )
        assert unknown.value.code == -1121
        again = await rig.paper.place_order(limit("e2", "BUY", "150", "99"))  # same client id: the same order
        assert again == big
        assert len(await rig.paper.open_orders()) == 1
        await rig.paper.place_order(market("e7", "BUY", "1"))
        with pytest.raises(E.ReduceOnlyRejected):  # a reduce-only BUY would add to the long
            await rig.paper.place_stop(stop("s1", "BUY", "1", "110"))

    async def test_reduce_only_stop_larger_than_the_position_closes_only_the_position(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """As on Binance: accepted, and clipped to the position when it executes (never flips it)."""
        rig = await open_rig(nursery)
        rig.paper.on_trade_price(SYM, 100.0, T0)
        await rig.paper.place_order(market("e1", "BUY", "1"))
        placed = await rig.paper.place_stop(stop("s1", "SELL", "2", "95"))
        assert placed.status == "NEW"
        rig.paper.on_trade_price(SYM, 94.0, T0 + 1000)
        await settle()
        fill = rig.fills()[-1]
        assert fill.order.client_id == "s1"
        assert fill.last_fill_qty == D("1")
        assert await rig.paper.positions() == []

    async def test_bad_market_input_names_the_field(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        rig = await open_rig(nursery)
        with pytest.raises(PaperInputError, match=r"candle\.high"):
            rig.paper.on_path(SYM, candle(T0, 100, float("nan"), 99, 100), FIVE_M)
        with pytest.raises(PaperInputError, match="expected low <= open"):
            rig.paper.on_path(SYM, candle(T0, 100, 99, 98, 100), FIVE_M)
        with pytest.raises(PaperInputError, match=r"bid=.*ask"):
            rig.paper.on_book(SYM, 101.0, 100.0, T0)


class TestPersistence:
    async def test_restart_mid_position_resumes_account_orders_and_stop(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with trio.open_nursery() as n1:
            rig = await open_rig(n1)
            rig.paper.on_trade_price(SYM, 100.0, T0)
            await rig.paper.place_order(market("e1", "BUY", "1"))
            await rig.paper.place_stop(stop("s1", "SELL", "1", "95"))
            await rig.paper.place_order(limit("t1", "SELL", "1", "110", reduce_only=True))
            acct1, pos1, open1 = (
                await rig.paper.account(),
                await rig.paper.positions(),
                await rig.paper.open_orders(),
            )
            blob = rig.blobs[-1]
            n1.cancel_scope.cancel()
        async with trio.open_nursery() as n2:
            rig2 = await open_rig(n2, restore=blob)
            rig2.paper.on_trade_price(SYM, 100.0, rig2.clock.now_ms())  # market data is re-fed
            assert await rig2.paper.positions() == pos1
            assert await rig2.paper.open_orders() == open1
            assert (await rig2.paper.account()).wallet_balance == acct1.wallet_balance
            rig2.paper.on_trade_price(SYM, 94.0, rig2.clock.now_ms())
            await settle()
            assert rig2.updates("s1") == ["TRIGGERED", "FILLED"]
            assert await rig2.paper.positions() == []
            n2.cancel_scope.cancel()

    async def test_corrupt_snapshot_is_a_precise_error(self) -> None:
        with pytest.raises(PaperInputError, match="paper snapshot"):
            PaperExchange(cfg=CFG, rules=RULES, now_ms=lambda: T0, restore=b"{not json")


class TestDeterminism:
    async def test_same_inputs_same_event_sequence(self, autojump_clock: trio.testing.MockClock) -> None:
        async def scenario() -> bytes:
            async with trio.open_nursery() as n:
                rig = await open_rig(n)
                for i, (o, h, lo, c) in enumerate(
                    [(100, 101, 98, 99), (99, 100, 97, 98.5), (98.5, 103, 98, 102)]
                ):
                    rig.paper.on_path(SYM, candle(T0 + i * FIVE_M, o, h, lo, c, v=50), FIVE_M)
                    if i == 0:
                        await rig.paper.place_order(limit("e1", "BUY", "3", "98.5"))
                    await rig.until(T0 + (i + 1) * FIVE_M)
                n.cancel_scope.cancel()
            assert rig.fills(), "the scenario must produce fills"
            assert any(isinstance(e, AccountChanged) for e in rig.events)
            return msgspec.json.encode(rig.events)

        first = await scenario()
        assert first == await scenario()


class TestStateStore:
    async def test_account_survives_in_the_sqlite_store(self, tmp_path: Path) -> None:
        """`from_store` persists into the StateStore blob and a second instance resumes from it."""
        with StateStore.open(tmp_path / "state.sqlite") as store:
            first = PaperExchange.from_store(store, cfg=CFG, rules=RULES, now_ms=lambda: T0)
            first.on_trade_price(SYM, 100.0, T0)
            await first.place_order(market("e1", "BUY", "1"))
            second = PaperExchange.from_store(store, cfg=CFG, rules=RULES, now_ms=lambda: T0)
            (pos,) = await second.positions()
            assert pos.quantity == D("1")
            assert (await second.account()).wallet_balance == (await first.account()).wallet_balance


class TestPersistencePolicy:
    async def test_on_close_writes_once_when_run_ends_and_resumes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Replay mode: nothing is written while trading, the whole account once at the end."""
        clock = TrioWallClock(T0)
        blobs: list[bytes] = []
        paper = PaperExchange(
            cfg=CFG, rules=RULES, now_ms=clock.now_ms, persist=blobs.append, persist_mode="on_close"
        )
        async with trio.open_nursery() as n:
            await n.start(paper.run)
            paper.on_trade_price(SYM, 100.0, T0)
            await paper.place_order(market("e1", "BUY", "1"))
            await paper.place_stop(stop("s1", "SELL", "1", "95"))
            assert blobs == []
            n.cancel_scope.cancel()
        (blob,) = blobs
        again = PaperExchange(cfg=CFG, rules=RULES, now_ms=clock.now_ms, restore=blob)
        (pos,) = await again.positions()
        assert pos.quantity == D("1")
        assert [o.client_id for o in await again.open_orders()] == ["s1"]

    async def test_snapshot_stays_bounded_however_long_the_account_trades(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """Closed orders and the account's income / trade rows are trimmed: the blob does not grow
        with the number of trades (it used to be re-encoded whole, growing, on every change)."""
        rig = await open_rig(nursery)
        rig.paper.on_trade_price(SYM, 100.0, T0)
        sizes: list[int] = []
        for i in range(1_500):
            await rig.paper.place_order(market(f"b{i}", "BUY", "1"))
            await rig.paper.place_order(market(f"s{i}", "SELL", "1", reduce_only=True))
            if i % 500 == 499:
                sizes.append(len(rig.paper.snapshot()))
        assert sizes[-1] <= sizes[0] * 1.5, sizes
        state = msgspec.json.decode(rig.paper.snapshot())
        assert len(state["closed_orders"]) <= 2 * 500
        assert await rig.paper.positions() == []


class TestBookAndMarkOnly:
    async def test_a_venue_fed_only_book_and_mark_fills_entries_and_triggers_stops(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """The live shadow book sees book and mark updates and no trade price: a limit is placed
        against the mark, fills when the book goes through it, and the stop triggers on the mark
        (the engine used to need a last trade price for both)."""
        rig = await open_rig(nursery)
        rig.paper.on_book(SYM, 100.0, 100.0, T0)
        rig.paper.on_mark(SYM, 100.0, 0.0, T0 + 8 * 3_600_000, T0)
        await rig.paper.place_order(limit("e1", "BUY", "1", "99.9"))
        rig.paper.on_book(SYM, 99.8, 99.8, T0 + 1000)
        await settle()
        assert [f.order.client_id for f in rig.fills()] == ["e1"]
        await rig.paper.place_stop(stop("s1", "SELL", "1", "98"))
        rig.paper.on_book(SYM, 97.5, 97.5, T0 + 2000)
        rig.paper.on_mark(SYM, 97.5, 0.0, T0 + 8 * 3_600_000, T0 + 2000)
        await settle()
        assert rig.updates("s1")[-1] == "FILLED"
        assert rig.fills()[-1].last_fill_price == D("97.4")  # bid 97.5 × 0.999, down to the tick
        assert await rig.paper.positions() == []

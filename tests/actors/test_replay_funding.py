"""Issue 10 #4: replay books funding (the recorded rates reach the paper exchange without pinning the
mark) and risk books funding in the daily / weekly calendar when it is paid, not at the trade's close."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.binance.gateway import FundingPaid, GatewayEvent, OrderRequest, StopRequest
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.config import BotConfig, ExecutionConfig, default_config
from futures_actor.core.risk_state import book_funding, book_trade_close, new_risk_state
from futures_actor.core.types import Candle, SymbolRules
from futures_actor.data.klines_csv import read_klines_candles

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
D = Decimal


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def _paper(nursery: trio.Nursery) -> tuple[PaperExchange, TrioWallClock, list[GatewayEvent]]:
    clock = TrioWallClock(T0)
    paper = PaperExchange(cfg=ExecutionConfig(), rules=RULES, now_ms=clock.now_ms)
    events: list[GatewayEvent] = []

    async def collect() -> None:
        async for ev in paper.events():
            events.append(ev)

    await nursery.start(paper.run)
    nursery.start_soon(collect)
    await trio.sleep(1e-6)
    return paper, clock, events


class TestPaperOnFunding:
    async def test_applied_at_its_time_and_the_mark_follows_the_path(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        paper, clock, events = await _paper(nursery)
        paper.on_path(
            SYM, Candle(open_time_ms=T0, open=100, high=100, low=100, close=100, volume=1e6), FIVE_M
        )
        await paper.place_order(
            OrderRequest(symbol=SYM, client_id="e1", side="BUY", type="MARKET", quantity=D("1"))
        )
        await paper.place_stop(
            StopRequest(symbol=SYM, client_id="s1", side="SELL", trigger_price=D("95"), quantity=D("1"))
        )
        funding_at = T0 + FIVE_M
        await trio.sleep((funding_at - clock.now_ms()) / 1000)
        # The next candle falls through the stop; the recorded funding of its open time arrives.
        paper.on_path(
            SYM, Candle(open_time_ms=funding_at, open=100, high=100, low=90, close=92, volume=1e6), FIVE_M
        )
        paper.on_funding(SYM, 0.0001, funding_at)
        paper.on_funding(SYM, 0.0001, funding_at)  # a repeat is applied once
        await trio.sleep(FIVE_M / 1000)
        (paid,) = [e for e in events if isinstance(e, FundingPaid)]
        assert paid.amount == D("-0.01")  # long pays rate × mark (100) × 1
        assert paid.ts_ms == funding_at
        # The mark was not pinned at 100: the stop triggered on the candle path.
        assert (await paper.positions()) == [] or all(p.quantity == 0 for p in await paper.positions())


class TestCalendar:
    def test_funding_booked_when_paid_and_not_twice_at_close(self) -> None:
        cfg = BotConfig().risk
        s = new_risk_state(now_ms=T0, equity_usd=10_000.0)
        s = book_funding(s, trade_id="t1", amount_usd=-3.0, now_ms=T0 + 1, equity_usd=10_000.0, cfg=cfg)
        assert s.realized_pnl_day == -3.0
        assert s.funding_booked_for("t1") == -3.0
        # The trade's net PnL (its record) includes that funding: only the rest is booked now.
        s = book_trade_close(s, trade_id="t1", pnl_usd=-53.0, now_ms=T0 + 2, equity_usd=10_000.0, cfg=cfg)
        assert s.realized_pnl_day == pytest.approx(-53.0)
        assert s.funding_booked_for("t1") == 0.0
        assert s.already_booked("t1")

    def test_funding_of_an_unowned_position_is_booked(self) -> None:
        cfg = BotConfig().risk
        s = new_risk_state(now_ms=T0, equity_usd=10_000.0)
        s = book_funding(s, trade_id="", amount_usd=2.5, now_ms=T0 + 1, equity_usd=10_000.0, cfg=cfg)
        assert s.realized_pnl_week == 2.5
        assert s.funding_booked == ()


def _copy_sample(sample_dir: Path, klines: Path, symbols: list[str], days: int) -> None:
    from tests.acceptance.harness import write_klines

    for symbol in symbols:
        five = read_klines_candles(sample_dir / f"{symbol}-5m.csv.gz", interval="5m", limit=days * 288)
        hours = read_klines_candles(sample_dir / f"{symbol}-1h.csv.gz", interval="1h", limit=days * 24)
        write_klines(klines, symbol, "5m", five)
        write_klines(klines, symbol, "1h", hours)
        (klines / "funding").mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_dir / "funding" / f"{symbol}.csv", klines / "funding" / f"{symbol}.csv")


async def test_replay_books_funding_in_records_and_calendar(
    tmp_path: Path, sample_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from tests.acceptance.harness import Harness

    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    h = Harness.create(tmp_path, cfg=default_config(), symbols=symbols)
    _copy_sample(sample_dir, h.klines_dir, symbols, days=14)
    try:
        async with trio.open_nursery() as nursery:
            await h.start(nursery)
            assert h.feed is not None
            await h.feed.done.wait()
            await trio.sleep(600)
            assert await h.stop() == 0
            nursery.cancel_scope.cancel()
        records = h.trade_records()
        paid = h.events("funding_paid")
        booked = h.events("risk_funding_booked")
    finally:
        h.close()
    assert paid, "no position was held across a funding time"
    by_trade: dict[str, float] = {}
    for e in paid:
        by_trade[e["trade_id"]] = by_trade.get(e["trade_id"], 0.0) + float(e["amount"])
    journaled: dict[str, Any] = {r["trade_id"]: r for r in records}
    closed_with_funding = [tid for tid in by_trade if tid in journaled]
    assert closed_with_funding
    for tid in closed_with_funding:
        assert journaled[tid]["costs"]["funding_usd"] == pytest.approx(by_trade[tid])
    assert sum(r["costs"]["funding_usd"] for r in records) != 0.0
    # Booked in the risk calendar as paid, one booking per payment.
    assert [(e["trade_id"], e["amount_usd"]) for e in booked] == [
        (e["trade_id"], float(e["amount"])) for e in paid
    ]

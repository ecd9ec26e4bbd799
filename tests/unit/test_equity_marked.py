"""Issue 13 review #6: the replay's equity curve marks open positions to market at every sample.

A synthetic replay on the paper exchange: a long of 10 BTC at 100 while the 5m candles fall to 70 over
three hours and recover to 105 over the next three, then the position is closed. Before, equity.csv
took the equity of the last account report (sent at fills and funding only), so the curve stayed
flat at ~10,000 while the position was 300 USD under water; now every sample values the position at
the close of the latest 5m candle, and the drawdown shows.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import trio

from futures_actor.actors.clock import TrioWallClock
from futures_actor.binance.gateway import AccountChanged, OrderRequest
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.config import ExecutionConfig
from futures_actor.core.drawdown import max_drawdown
from futures_actor.core.types import Candle, SymbolRules
from futures_actor.replay_run import ReplayEquity
from futures_actor.tearsheet.equity import AccountView, EquityCsvWriter, EquitySampler, read_equity_csv

HOUR = 3_600_000
FIVE_M = 300_000
T0 = 1_750_003_200_000  # an hour boundary
SYM = "BTCUSDT"
RULES = {
    SYM: SymbolRules(
        symbol=SYM,
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.001"),
        min_qty=Decimal("0.001"),
        min_notional=Decimal("5"),
    )
}
QTY = 10


def price_at(step: int) -> float:
    """Close of 5m candle `step` (0..71): 100 -> 70 over 36 candles, then -> 105 over 36."""
    if step < 36:
        return 100.0 - 30.0 * (step + 1) / 36
    return 70.0 + 35.0 * (step - 35) / 36


def candle(step: int) -> Candle:
    o = 100.0 if step == 0 else price_at(step - 1)
    c = price_at(step)
    return Candle(open_time_ms=T0 + step * FIVE_M, open=o, high=max(o, c), low=min(o, c), close=c, volume=1e6)


async def test_the_curve_shows_the_open_loss(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioWallClock(T0)
    paper = PaperExchange(cfg=ExecutionConfig(), rules=RULES, now_ms=clock.now_ms, persist=lambda b: None)
    marks = ReplayEquity(paper)
    reported: list[float] = []  # the equity of the account reports (what equity.csv showed before)

    async def collect() -> None:
        async for ev in paper.events():
            if isinstance(ev, AccountChanged):
                reported.append(float(ev.account.equity))

    writer = EquityCsvWriter(tmp_path / "equity.csv")
    sampler = EquitySampler(
        writer=writer,
        view=lambda: AccountView(
            equity_usd=marks.equity(clock.now_ms()), open_risk_usd=0.0, open_positions=marks.open_positions()
        ),
        clock=clock,
        every_ms=HOUR,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(paper.run)
        nursery.start_soon(collect)

        def feed(step: int) -> None:
            c = candle(step)
            paper.on_path(SYM, c, FIVE_M)
            marks.on_candle(SYM, c, FIVE_M)

        feed(0)
        await nursery.start(sampler.run)
        buy = OrderRequest(symbol=SYM, client_id="b1", side="BUY", type="MARKET", quantity=Decimal(QTY))
        await paper.place_order(buy)
        for step in range(1, 72):
            await trio.sleep((T0 + step * FIVE_M - clock.now_ms()) / 1000)
            feed(step)
        await trio.sleep((T0 + 72 * FIVE_M - clock.now_ms()) / 1000)
        last = candle(71)
        paper.on_path(
            SYM,
            Candle(
                open_time_ms=T0 + 72 * FIVE_M,
                open=last.close,
                high=last.close,
                low=last.close,
                close=last.close,
                volume=1e6,
            ),
            FIVE_M,
        )
        sell = OrderRequest(
            symbol=SYM, client_id="s1", side="SELL", type="MARKET", quantity=Decimal(QTY), reduce_only=True
        )
        await paper.place_order(sell)
        sampler.trade_closed()
        await trio.sleep(5)
        sampler.finish()
        nursery.cancel_scope.cancel()

    rows = read_equity_csv(tmp_path / "equity.csv")
    equity = [r.equity_usd for r in rows]
    start = equity[0]
    assert start == pytest.approx(10_000.0)
    # Hourly samples while the position is open follow the candles: the low at hour 3 is ~300 down.
    at_low = next(r for r in rows if r.time_ms == T0 + 3 * HOUR)
    assert at_low.open_positions == 1
    assert at_low.equity_usd == pytest.approx(start - QTY * (100.0 - 70.0), abs=5.0)
    assert at_low.drawdown_pct == pytest.approx((max(equity[:4]) - at_low.equity_usd) / max(equity[:4]))
    assert max_drawdown(equity) > 0.029
    assert max(r.drawdown_pct for r in rows) == pytest.approx(max_drawdown(equity), abs=1e-8)
    # Recovered and closed: flat, the wallet is the start plus ~50 USD less costs.
    assert rows[-1].open_positions == 0
    assert rows[-1].equity_usd == pytest.approx(start + QTY * 5.0, abs=5.0)
    # The account reports (the old source of the curve) never saw the open loss.
    assert reported
    assert min(reported) > start - 5.0

"""`trade_fill`: one conversion of a `userTrades` row for both venues (the wire's row, the paper account's)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from futures_actor.binance.gateway import TradeFill, trade_fill
from futures_actor.binance.models import UserTrade
from futures_actor.binance.sim.account import TradeRow

D = Decimal


@pytest.mark.parametrize(("side", "expected"), [("BUY", "BUY"), ("SELL", "SELL")])
def test_wire_and_paper_rows_give_the_same_fill(side: str, expected: str) -> None:
    wire = UserTrade(
        symbol="BTCUSDT", id=7, order_id=70, side=side, price=D("60000.1"), qty=D("0.010"),
        realized_pnl=D("0"), quote_qty=D("600.001"), commission=D("0.24"), commission_asset="USDT",
        time=1_735_689_600_123,
    )  # fmt: skip
    paper = TradeRow(
        id=7, order_id=70, symbol="BTCUSDT", side=side, price=D("60000.1"), qty=D("0.010"),
        realized_pnl=D("0"), commission=D("0.24"), maker=False, time=1_735_689_600_123,
    )  # fmt: skip
    fill = TradeFill(
        symbol="BTCUSDT", side=expected, price=D("60000.1"), qty=D("0.010"), fee=D("0.24"),  # type: ignore[arg-type]
        time_ms=1_735_689_600_123,
    )  # fmt: skip
    assert trade_fill(wire) == fill
    assert trade_fill(paper) == fill

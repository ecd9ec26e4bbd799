"""Exact exchange rounding against the real mainnet exchangeInfo filters (BTCUSDT, ETHUSDT, 1000PEPEUSDT)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from futures_actor.core.rounding import (
    RoundingInputError,
    passive_entry_price,
    round_price_down,
    round_price_nearest,
    round_price_up,
    round_qty_down,
    round_stop_away,
    to_decimal,
)
from futures_actor.core.types import Side, SymbolRules

EXCHANGE_INFO = "exchangeInfo_mainnet_2024-10-02.json"  # in the bundled data/sample


def rules_from_exchange_info(sample_dir: Path, symbol: str) -> SymbolRules:
    """SymbolRules read straight from the recorded exchangeInfo filters."""
    data = json.loads((sample_dir / EXCHANGE_INFO).read_text())
    info = next(s for s in data["symbols"] if s["symbol"] == symbol)
    f = {x["filterType"]: x for x in info["filters"]}
    return SymbolRules(
        symbol=symbol,
        tick_size=Decimal(f["PRICE_FILTER"]["tickSize"]),
        step_size=Decimal(f["LOT_SIZE"]["stepSize"]),
        min_qty=Decimal(f["LOT_SIZE"]["minQty"]),
        max_qty=Decimal(f["LOT_SIZE"]["maxQty"]),
        min_notional=Decimal(f["MIN_NOTIONAL"]["notional"]),
        min_price=Decimal(f["PRICE_FILTER"]["minPrice"]),
        max_price=Decimal(f["PRICE_FILTER"]["maxPrice"]),
        multiplier_up=Decimal(f["PERCENT_PRICE"]["multiplierUp"]),
        multiplier_down=Decimal(f["PERCENT_PRICE"]["multiplierDown"]),
        price_precision=info["pricePrecision"],
        quantity_precision=info["quantityPrecision"],
    )


@pytest.fixture
def btc(sample_dir: Path) -> SymbolRules:
    return rules_from_exchange_info(sample_dir, "BTCUSDT")


@pytest.fixture
def pepe(sample_dir: Path) -> SymbolRules:
    return rules_from_exchange_info(sample_dir, "1000PEPEUSDT")


class TestRealFilters:
    """The recorded filters are what the brief says they are."""

    def test_btcusdt_filters(self, btc: SymbolRules) -> None:
        assert btc.tick_size == Decimal("0.10")
        assert btc.step_size == Decimal("0.001")
        assert btc.min_notional == Decimal("100")


class TestQuantity:
    """Quantities are rounded down to the step, never up."""

    def test_btc_qty_rounded_down(self, btc: SymbolRules) -> None:
        assert round_qty_down(Decimal("0.0149999"), btc.step_size) == Decimal("0.014")
        assert round_qty_down(Decimal("0.015"), btc.step_size) == Decimal("0.015")

    def test_below_one_step_is_zero(self, btc: SymbolRules) -> None:
        assert round_qty_down(Decimal("0.0009"), btc.step_size) == 0

    def test_integral_step(self, pepe: SymbolRules) -> None:
        q = round_qty_down(Decimal("12345.99"), pepe.step_size)
        assert q == Decimal(12345)
        assert str(q) == "12345"

    def test_result_is_exact_multiple_with_step_decimals(self, btc: SymbolRules) -> None:
        q = round_qty_down(Decimal("1.23456789"), btc.step_size)
        assert str(q) == "1.234"
        assert q % btc.step_size == 0

    def test_negative_qty_refused(self, btc: SymbolRules) -> None:
        with pytest.raises(RoundingInputError) as ei:
            round_qty_down(Decimal("-1"), btc.step_size)
        assert ei.value.field == "quantity"


class TestPrices:
    """Prices go to the tick in the direction asked."""

    def test_down_up_nearest(self, btc: SymbolRules) -> None:
        p = Decimal("67012.34")
        assert round_price_down(p, btc.tick_size) == Decimal("67012.30")
        assert round_price_up(p, btc.tick_size) == Decimal("67012.40")
        assert round_price_nearest(p, btc.tick_size) == Decimal("67012.30")
        assert round_price_nearest(Decimal("67012.35"), btc.tick_size) == Decimal("67012.40")

    def test_on_tick_unchanged(self, btc: SymbolRules) -> None:
        for f in (round_price_down, round_price_up, round_price_nearest):
            assert f(Decimal("67000.1"), btc.tick_size) == Decimal("67000.1")

    def test_tiny_tick(self, pepe: SymbolRules) -> None:
        assert round_price_down(Decimal("0.012345678"), pepe.tick_size) == Decimal("0.0123456")
        assert round_price_up(Decimal("0.012345678"), pepe.tick_size) == Decimal("0.0123457")

    def test_stop_rounded_away_from_entry(self, btc: SymbolRules) -> None:
        # A long's stop is below the entry: rounding down moves it away.
        assert round_stop_away(Decimal("66330.05"), side=Side.LONG, tick=btc.tick_size) == Decimal("66330.00")
        # A short's stop is above the entry: rounding up moves it away.
        assert round_stop_away(Decimal("67670.01"), side=Side.SHORT, tick=btc.tick_size) == Decimal(
            "67670.10"
        )

    def test_zero_tick_refused(self) -> None:
        with pytest.raises(RoundingInputError) as ei:
            round_price_down(Decimal("1.0"), Decimal(0))
        assert ei.value.field == "tick_size"
        assert "> 0" in str(ei.value)


class TestPassiveEntry:
    """Entry limit price sits on the passive side of the mid, offset in ticks."""

    def test_long_at_or_below_mid(self, btc: SymbolRules) -> None:
        mid = Decimal("67000.05")
        assert passive_entry_price(mid=mid, side=Side.LONG, rules=btc, offset_ticks=0) == Decimal("67000.00")
        assert passive_entry_price(mid=mid, side=Side.LONG, rules=btc, offset_ticks=2) == Decimal("66999.80")

    def test_short_at_or_above_mid(self, btc: SymbolRules) -> None:
        mid = Decimal("67000.05")
        assert passive_entry_price(mid=mid, side=Side.SHORT, rules=btc, offset_ticks=0) == Decimal("67000.10")
        assert passive_entry_price(mid=mid, side=Side.SHORT, rules=btc, offset_ticks=3) == Decimal("67000.40")

    def test_mid_on_tick(self, btc: SymbolRules) -> None:
        mid = Decimal("67000.0")
        assert passive_entry_price(mid=mid, side=Side.LONG, rules=btc, offset_ticks=0) == mid
        assert passive_entry_price(mid=mid, side=Side.SHORT, rules=btc, offset_ticks=0) == mid

    def test_below_min_price_refused(self, btc: SymbolRules) -> None:
        with pytest.raises(RoundingInputError) as ei:
            passive_entry_price(mid=Decimal("500"), side=Side.LONG, rules=btc, offset_ticks=0)
        assert ei.value.field == "entry_price"
        assert "556.80" in str(ei.value)

    def test_negative_offset_refused(self, btc: SymbolRules) -> None:
        with pytest.raises(RoundingInputError) as ei:
            passive_entry_price(mid=Decimal("67000"), side=Side.LONG, rules=btc, offset_ticks=-1)
        assert ei.value.field == "offset_ticks"


class TestToDecimal:
    """Floats become the Decimal of their shortest repr; non-finite is refused."""

    def test_shortest_repr(self) -> None:
        assert to_decimal(0.1, field="x") == Decimal("0.1")
        assert to_decimal(3, field="x") == Decimal(3)

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), Decimal("NaN"), "1.0", True])
    def test_refused(self, bad: object) -> None:
        with pytest.raises(RoundingInputError) as ei:
            to_decimal(bad, field="price")  # type: ignore[arg-type]
        assert ei.value.field == "price"

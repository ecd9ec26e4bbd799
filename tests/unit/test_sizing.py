"""Sizing from risk_usd, worst-case loss and round-trip cost (BOT_SPEC §8.1, §8.2, §8.6, §8.12)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from futures_actor.core.config import BotConfig
from futures_actor.core.sizing import (
    BELOW_EXCHANGE_MINIMUM,
    PER_TRADE_RISK,
    STOP_INVALID,
    SizedEntry,
    SizingRejected,
    round_trip_cost_pct,
    size_entry,
    worst_case_loss_usd,
)
from futures_actor.core.types import Side, SymbolRules

EXCHANGE_INFO = "exchangeInfo_mainnet_2024-10-02.json"  # in the bundled data/sample


@pytest.fixture
def btc(sample_dir: Path) -> SymbolRules:
    data = json.loads((sample_dir / EXCHANGE_INFO).read_text())
    info = next(s for s in data["symbols"] if s["symbol"] == "BTCUSDT")
    f = {x["filterType"]: x for x in info["filters"]}
    return SymbolRules(
        symbol="BTCUSDT",
        tick_size=Decimal(f["PRICE_FILTER"]["tickSize"]),
        step_size=Decimal(f["LOT_SIZE"]["stepSize"]),
        min_qty=Decimal(f["LOT_SIZE"]["minQty"]),
        max_qty=Decimal(f["LOT_SIZE"]["maxQty"]),
        min_notional=Decimal(f["MIN_NOTIONAL"]["notional"]),
        min_price=Decimal(f["PRICE_FILTER"]["minPrice"]),
        max_price=Decimal(f["PRICE_FILTER"]["maxPrice"]),
    )


def sized(result: SizedEntry | SizingRejected) -> SizedEntry:
    assert isinstance(result, SizedEntry), result
    return result


class TestSizeEntry:
    """quantity = risk_usd / rounded stop distance, rounded down; minimums enforced."""

    def test_btc_long_worked_example(self, btc: SymbolRules) -> None:
        # equity 10 000 × 1 % = 100 USD; entry 67 000, stop 1 % below = 66 330 → distance 670.
        s = sized(
            size_entry(
                side=Side.LONG,
                entry_price=Decimal("67000.0"),
                stop_price=Decimal("66330.0"),
                risk_usd=100.0,
                rules=btc,
            )
        )
        assert s.stop_distance == Decimal("670.0")
        # 100 / 670 = 0.14925… → 0.149
        assert s.quantity == Decimal("0.149")
        assert s.loss_to_stop_usd == Decimal("99.8300")
        assert s.notional_usd == Decimal("9983.0000")
        assert s.stop_pct == pytest.approx(0.01)

    def test_stop_rounded_away_then_size_recomputed(self, btc: SymbolRules) -> None:
        # Stop 66 330.05 rounds down to 66 330.00 (away from a long entry): distance grows.
        s = sized(
            size_entry(
                side=Side.LONG,
                entry_price=Decimal("67000.0"),
                stop_price=Decimal("66330.05"),
                risk_usd=100.0,
                rules=btc,
            )
        )
        assert s.stop_price == Decimal("66330.00")
        assert s.loss_to_stop_usd <= Decimal(100)

    def test_short_stop_rounded_up(self, btc: SymbolRules) -> None:
        s = sized(
            size_entry(
                side=Side.SHORT,
                entry_price=Decimal("67000.0"),
                stop_price=Decimal("67670.01"),
                risk_usd=100.0,
                rules=btc,
            )
        )
        assert s.stop_price == Decimal("67670.10")
        assert s.stop_distance == Decimal("670.10")
        assert s.quantity * s.stop_distance <= Decimal(100)

    def test_below_min_notional_rejected(self, btc: SymbolRules) -> None:
        # risk 1 USD over a 670 distance → 0.001 BTC = 67 USD notional < MIN_NOTIONAL 100.
        r = size_entry(
            side=Side.LONG,
            entry_price=Decimal("67000.0"),
            stop_price=Decimal("66330.0"),
            risk_usd=1.0,
            rules=btc,
        )
        assert isinstance(r, SizingRejected)
        assert r.code == BELOW_EXCHANGE_MINIMUM
        assert r.values["min_notional"] == "100"

    def test_below_min_qty_rejected_never_rounded_up(self, btc: SymbolRules) -> None:
        r = size_entry(
            side=Side.LONG,
            entry_price=Decimal("67000.0"),
            stop_price=Decimal("66330.0"),
            risk_usd=0.5,
            rules=btc,
        )
        assert isinstance(r, SizingRejected)
        assert r.code == BELOW_EXCHANGE_MINIMUM
        assert r.values["quantity"] == "0.000"

    def test_capped_at_max_qty(self, btc: SymbolRules) -> None:
        s = sized(
            size_entry(
                side=Side.LONG,
                entry_price=Decimal("67000.0"),
                stop_price=Decimal("66999.9"),
                risk_usd=1_000_000.0,
                rules=btc,
            )
        )
        assert s.quantity == btc.max_qty

    @pytest.mark.parametrize(
        ("side", "stop"), [(Side.LONG, "67000.0"), (Side.LONG, "67100"), (Side.SHORT, "66900")]
    )
    def test_stop_on_wrong_side_rejected(self, btc: SymbolRules, side: Side, stop: str) -> None:
        r = size_entry(
            side=side, entry_price=Decimal("67000.0"), stop_price=Decimal(stop), risk_usd=100.0, rules=btc
        )
        assert isinstance(r, SizingRejected)
        assert r.code == STOP_INVALID

    def test_no_risk_budget(self, btc: SymbolRules) -> None:
        r = size_entry(
            side=Side.LONG,
            entry_price=Decimal("67000.0"),
            stop_price=Decimal("66330.0"),
            risk_usd=0.0,
            rules=btc,
        )
        assert isinstance(r, SizingRejected)
        assert r.code == PER_TRADE_RISK


class TestWorstCaseLoss:
    """Loss at the stop with adverse slippage plus the exit taker fee."""

    def test_long(self) -> None:
        # exit at 99 × (1 − 0.001) = 98.901; loss (100 − 98.901) × 10 + 98.901 × 10 × 0.0004
        loss = worst_case_loss_usd(
            side=Side.LONG,
            quantity=10,
            entry_price=100,
            stop_price=99,
            exit_fee_pct=0.0004,
            stop_slippage_pct=0.001,
        )
        assert loss == pytest.approx(10.99 + 0.395604)

    def test_short(self) -> None:
        loss = worst_case_loss_usd(
            side=Side.SHORT,
            quantity=10,
            entry_price=100,
            stop_price=101,
            exit_fee_pct=0.0004,
            stop_slippage_pct=0.001,
        )
        assert loss == pytest.approx(11.01 + 101.101 * 10 * 0.0004)

    def test_no_stop_means_whole_notional(self) -> None:
        loss = worst_case_loss_usd(
            side=Side.LONG,
            quantity=2,
            entry_price=50,
            stop_price=None,
            exit_fee_pct=0.0004,
            stop_slippage_pct=0.001,
        )
        assert loss == pytest.approx(100 * 1.0004)

    def test_stop_in_profit_costs_only_the_fee(self) -> None:
        loss = worst_case_loss_usd(
            side=Side.LONG,
            quantity=1,
            entry_price=100,
            stop_price=105,
            exit_fee_pct=0.0004,
            stop_slippage_pct=0.0,
        )
        assert loss == pytest.approx(105 * 0.0004)


class TestCost:
    """Round-trip cost: maker + taker + stop slippage + one funding period."""

    def test_defaults(self) -> None:
        ex = BotConfig().execution
        assert round_trip_cost_pct(ex, funding_rate=None) == pytest.approx(0.0002 + 0.0004 + 0.001)
        assert round_trip_cost_pct(ex, funding_rate=-0.0003) == pytest.approx(0.0019)

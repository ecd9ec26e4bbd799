"""Universe selection (BOT_SPEC §2): eligibility with a reason for every exclusion, ranking, retention."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pytest

from futures_actor.core.config import BotConfig, RiskConfig, UniverseConfig
from futures_actor.core.indicators import atr
from futures_actor.core.universe import (
    SymbolListing,
    UniverseInputs,
    atr_ratio,
    average_spread_pct,
    select_universe,
)

REST = "binance-payloads/rest"  # in the bundled data/sample


def cfg(**universe: object) -> BotConfig:
    return msgspec.structs.replace(BotConfig(), universe=UniverseConfig(**universe))  # type: ignore[arg-type]


def listing(
    symbol: str, *, contract: str = "PERPETUAL", status: str = "TRADING", quote: str = "USDT"
) -> SymbolListing:
    return SymbolListing(
        symbol=symbol, contract_type=contract, status=status, quote_asset=quote, tick_size=Decimal("0.01")
    )


def inputs(symbols: dict[str, dict[str, float]], **kw: object) -> UniverseInputs:
    """Each symbol passes every default rule unless overridden."""
    base = {"volume": 5e8, "price": 100.0, "spread": 0.0002, "funding": 0.0001, "atr": 0.01}
    rows = {s: {**base, **over} for s, over in symbols.items()}

    def col(name: str) -> dict[str, float]:
        return {s: r[name] for s, r in rows.items() if not math.isnan(r[name])}

    return UniverseInputs(
        listings=tuple(listing(s) for s in symbols),
        quote_volume_24h=col("volume"),
        last_price=col("price"),
        avg_spread_pct=col("spread"),
        funding_rate=col("funding"),
        atr_ratio=col("atr"),
        **kw,  # type: ignore[arg-type]
    )


MISSING = math.nan


class TestRules:
    """Each rule excludes with its own code and the numbers compared."""

    @pytest.mark.parametrize(
        ("override", "code"),
        [
            ({"volume": 9.9e7}, "LOW_VOLUME"),
            ({"spread": 0.0006}, "SPREAD"),
            ({"spread": -0.0001}, "SPREAD"),
            ({"funding": -0.002}, "FUNDING"),
            ({"atr": 0.004}, "LOW_ATR"),
            ({"volume": MISSING}, "MISSING_VOLUME"),
            ({"price": MISSING}, "MISSING_PRICE"),
            ({"spread": MISSING}, "MISSING_SPREAD"),
            ({"funding": MISSING}, "MISSING_FUNDING"),
            ({"atr": MISSING}, "MISSING_ATR"),
            ({"volume": math.inf}, "INVALID_INPUT"),
            ({"price": 0.0}, "INVALID_INPUT"),
        ],
    )
    def test_exclusion(self, override: dict[str, float], code: str) -> None:
        sel = select_universe(inputs({"AAAUSDT": override, "BBBUSDT": {}}), cfg())
        assert sel.selected == ("BBBUSDT",)
        (ex,) = sel.excluded
        assert (ex.symbol, ex.code) == ("AAAUSDT", code)
        assert ex.message

    def test_boundaries_pass(self) -> None:
        sel = select_universe(
            inputs({"AAAUSDT": {"volume": 1e8, "spread": 0.0005, "funding": -0.0015, "atr": 0.005}}), cfg()
        )
        assert sel.selected == ("AAAUSDT",)

    def test_numbers_reported(self) -> None:
        sel = select_universe(inputs({"AAAUSDT": {"volume": 5e7}}), cfg())
        assert sel.excluded[0].values == {"quote_volume_24h": 5e7, "min_24h_volume_usdt": 1e8}

    @pytest.mark.parametrize(
        ("kw", "code"),
        [
            ({"contract": "CURRENT_QUARTER"}, "NOT_PERPETUAL"),
            ({"status": "SETTLING"}, "NOT_TRADING"),
            ({"quote": "USDC"}, "NOT_USDT"),
        ],
    )
    def test_listing_filters(self, kw: dict[str, str], code: str) -> None:
        base = inputs({"AAAUSDT": {}})
        ins = msgspec.structs.replace(base, listings=(listing("AAAUSDT", **kw),))
        sel = select_universe(ins, cfg())
        assert sel.selected == ()
        assert sel.excluded[0].code == code

    def test_whitelist_and_blacklist(self) -> None:
        ins = inputs({"AAAUSDT": {}, "BBBUSDT": {}, "CCCUSDT": {}})
        sel = select_universe(ins, cfg(whitelist=("AAAUSDT", "BBBUSDT"), blacklist=("BBBUSDT",)))
        assert sel.selected == ("AAAUSDT",)
        assert {(e.symbol, e.code) for e in sel.excluded} == {
            ("BBBUSDT", "BLACKLISTED"),
            ("CCCUSDT", "NOT_WHITELISTED"),
        }

    def test_no_book_data_spread_passes(self) -> None:
        ins = inputs({"AAAUSDT": {"spread": MISSING}}, has_book_data=False)
        sel = select_universe(ins, cfg())
        assert sel.selected == ("AAAUSDT",)
        # Score uses one tick / price: 5e8 / (0.01 / 100).
        assert sel.scores["AAAUSDT"] == pytest.approx(5e8 / 1e-4)

    def test_no_funding_data_funding_passes(self) -> None:
        ins = inputs({"AAAUSDT": {"funding": MISSING}}, has_funding_data=False)
        assert select_universe(ins, cfg()).selected == ("AAAUSDT",)


class TestRanking:
    """Score = volume / max(spread, tick/price); top N; the rest excluded as RANK."""

    def test_score_order_and_cut(self) -> None:
        ins = inputs(
            {
                "AAAUSDT": {"volume": 2e8, "spread": 0.0002},  # 1e12
                "BBBUSDT": {"volume": 9.3e8, "spread": 0.0003},  # 3.1e12
                "CCCUSDT": {"volume": 3e8, "spread": 0.00005},  # spread below tick/price 1e-4 → 3e12
                "DDDUSDT": {"volume": 1.5e8, "spread": 0.0003},  # 5e11
            }
        )
        sel = select_universe(ins, cfg(max_monitored_symbols=3))
        assert sel.selected == ("BBBUSDT", "CCCUSDT", "AAAUSDT")
        assert sel.scores["CCCUSDT"] == pytest.approx(3e8 / 1e-4)
        (ranked_out,) = sel.excluded
        assert (ranked_out.symbol, ranked_out.code, ranked_out.values["rank"]) == ("DDDUSDT", "RANK", 4.0)

    def test_tie_broken_by_name(self) -> None:
        sel = select_universe(inputs({"BBBUSDT": {}, "AAAUSDT": {}}), cfg(max_monitored_symbols=1))
        assert sel.selected == ("AAAUSDT",)
        assert sel.excluded[0].symbol == "BBBUSDT"

    def test_reference_symbol_is_top_volume(self) -> None:
        ins = inputs(
            {"AAAUSDT": {"volume": 2e8, "spread": 0.0001}, "BBBUSDT": {"volume": 9e8, "spread": 0.0005}}
        )
        sel = select_universe(ins, cfg())
        assert sel.selected[0] == "AAAUSDT"
        assert sel.reference_symbol == "BBBUSDT"

    def test_configured_reference_symbol(self) -> None:
        c = msgspec.structs.replace(cfg(), risk=RiskConfig(beta_reference_symbol="BTCUSDT"))
        assert select_universe(inputs({"AAAUSDT": {}}), c).reference_symbol == "BTCUSDT"


class TestManagement:
    """A symbol with a position or working orders stays managed even out of the universe."""

    def test_retained(self) -> None:
        ins = inputs(
            {"AAAUSDT": {}, "BBBUSDT": {"volume": 1.0}}, managed_symbols={"BBBUSDT", "AAAUSDT", "ZZZUSDT"}
        )
        sel = select_universe(ins, cfg())
        assert sel.selected == ("AAAUSDT",)
        assert sel.retained_for_management == ("BBBUSDT", "ZZZUSDT")


class TestHelpers:
    """Spread averaging and ATR(14)/close."""

    def test_average_spread(self) -> None:
        samples = [(99.99, 100.01), (99.98, 100.02), (math.nan, 100.0), (0.0, 1.0)]
        assert average_spread_pct(samples) == pytest.approx((0.0002 + 0.0004) / 2)
        assert average_spread_pct([]) is None

    def test_atr_ratio_uses_wilder_atr14(self) -> None:
        rng = np.random.default_rng(3)
        close = 100 + np.cumsum(rng.normal(0, 1, 60))
        high, low = close + 0.5, close - 0.5
        assert atr_ratio(high, low, close) == pytest.approx(atr(high, low, close, 14)[-1] / close[-1])
        assert atr_ratio(high[:14], low[:14], close[:14]) is None


class TestRecordedExchange:
    """On the recorded testnet exchangeInfo and 24h tickers: every symbol gets one verdict."""

    def test_every_symbol_accounted_for(self, sample_dir: Path) -> None:
        info = json.loads((sample_dir / REST / "exchangeInfo_testnet_2025-01-09.json").read_text())
        tickers = json.loads((sample_dir / REST / "ticker24hr_all_testnet_2025-01-11.json").read_text())
        listings = tuple(
            SymbolListing(
                symbol=s["symbol"],
                contract_type=s["contractType"],
                status=s["status"],
                quote_asset=s["quoteAsset"],
                tick_size=Decimal(
                    next(f["tickSize"] for f in s["filters"] if f["filterType"] == "PRICE_FILTER")
                ),
            )
            for s in info["symbols"]
        )
        volume = {t["symbol"]: float(t["quoteVolume"]) for t in tickers}
        price = {t["symbol"]: float(t["lastPrice"]) for t in tickers}
        ins = UniverseInputs(
            listings=listings,
            quote_volume_24h=volume,
            last_price=price,
            avg_spread_pct={},
            funding_rate={},
            atr_ratio=dict.fromkeys(volume, 0.01),
            has_book_data=False,
            has_funding_data=False,
        )
        sel = select_universe(ins, cfg(min_24h_volume_usdt=1e6, max_monitored_symbols=5))
        verdicts = [*sel.selected, *(e.symbol for e in sel.excluded)]
        assert sorted(verdicts) == sorted({x.symbol for x in listings})
        by_symbol = {x.symbol: x for x in listings}
        assert len(sel.selected) == 5
        for s in sel.selected:
            x = by_symbol[s]
            assert (x.contract_type, x.status, x.quote_asset) == ("PERPETUAL", "TRADING", "USDT")
            assert volume[s] >= 1e6
        scores = [sel.scores[s] for s in sel.selected]
        assert scores == sorted(scores, reverse=True)
        codes = {e.code for e in sel.excluded}
        assert {"NOT_PERPETUAL", "NOT_USDT", "LOW_VOLUME", "RANK"} <= codes

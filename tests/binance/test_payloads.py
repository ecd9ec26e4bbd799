"""Every recorded payload for an endpoint or event we model parses into its typed Struct."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from futures_actor.binance.errors import PayloadError
from futures_actor.binance.market_ws import BookTicker, KlineClosed, decode_market_frame
from futures_actor.binance.models import (
    AccountInfo,
    AlgoUpdate,
    BookTickerRest,
    ExchangeInfo,
    FundingRateRow,
    LeverageBracket,
    Order,
    PositionMode,
    PositionRisk,
    PremiumIndex,
    RestKline,
    Ticker24h,
    TradeLite,
    UserTrade,
    decode_payload,
    symbol_rules_from,
)
from futures_actor.binance.user_stream import decode_user_event

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"  # bundled recorded data
DATA = SAMPLE / "binance-payloads"
REST = DATA / "rest"
WS = DATA / "ws"

REST_FILES: list[tuple[str, Any]] = [
    ("../../exchangeInfo_mainnet_2024-10-02.json", ExchangeInfo),
    ("exchangeInfo_testnet_2025-01-09.json", ExchangeInfo),
    ("exchangeInfo_testnet_2022-02-19_trimmed_nautilus.json", ExchangeInfo),
    ("ticker24hr_all_testnet_2025-01-11.json", list[Ticker24h]),
    ("premiumIndex_all_mainnet_2025-06-17.json", list[PremiumIndex]),
    ("leverageBracket_reconstructed_2024-10.json", list[LeverageBracket]),
    ("userTrades_ETHUSDT_2022-02-27_nautilus.json", list[UserTrade]),
    ("docs-examples/klines_docs_example_nautilus.json", list[RestKline]),
    ("docs-examples/continuousKlines_docs_example_nautilus.json", list[RestKline]),
    ("docs-examples/markPriceKlines_docs_example_nautilus.json", list[RestKline]),
    ("docs-examples/indexPriceKlines_docs_example_nautilus.json", list[RestKline]),
    ("docs-examples/premiumIndex_BTCUSDT_docs_example_nautilus.json", PremiumIndex),
    ("docs-examples/fundingRate_docs_example_nautilus.json", list[FundingRateRow]),
    ("docs-examples/ticker_24hr_docs_example_nautilus.json", Ticker24h),
    ("docs-examples/ticker_bookTicker_docs_example_nautilus.json", BookTickerRest),
    ("docs-examples/positionRisk_one_way_docs_example_nautilus.json", list[PositionRisk]),
    ("docs-examples/positionRisk_hedge_docs_example_nautilus.json", list[PositionRisk]),
    ("docs-examples/openOrders_trailing_stop_docs_example_nautilus.json", list[Order]),
    ("docs-examples/positionSide_dual_docs_example_nautilus.json", PositionMode),
]

CCXT_TYPES: dict[str, Any] = {
    "POST /fapi/v1/batchOrders": list[Order],
    "GET /fapi/v1/openOrder": Order,
    "GET /fapi/v3/positionRisk": list[PositionRisk],
    "GET /fapi/v3/account": AccountInfo,
    "GET /fapi/v2/account": AccountInfo,
    "GET /fapi/v1/userTrades": list[UserTrade],
    "GET /fapi/v1/klines": list[RestKline],
}


class TestRestPayloads:
    """Recorded REST responses decode without loss of the fields we use."""

    @pytest.mark.parametrize(("name", "type_"), REST_FILES, ids=[n for n, _ in REST_FILES])
    def test_file_parses(self, name: str, type_: Any) -> None:
        result = decode_payload(type_, (REST / name).read_bytes(), endpoint=name)
        assert result is not None
        if isinstance(result, list):
            assert result

    @pytest.mark.parametrize("name", [n for n, t in REST_FILES if t is ExchangeInfo])
    def test_every_symbol_has_rules(self, name: str) -> None:
        info = decode_payload(ExchangeInfo, (REST / name).read_bytes(), endpoint=name)
        for symbol in info.symbols:
            rules = symbol_rules_from(symbol)
            assert rules.tick_size > 0
            assert rules.step_size > 0
            assert rules.min_qty >= 0

    def test_ccxt_recordings(self) -> None:
        entries = json.loads((REST / "ccxt_static_binance_usdm_responses.json").read_text())["entries"]
        seen = set()
        for entry in entries:
            endpoint = entry["endpoint_inferred"].split("?")[0]
            if endpoint not in CCXT_TYPES:
                continue
            seen.add(endpoint)
            decode_payload(
                CCXT_TYPES[endpoint], json.dumps(entry["httpResponse"]).encode(), endpoint=endpoint
            )
        assert seen == set(CCXT_TYPES)

    def test_ints_as_strings(self) -> None:
        """ccxt's recorder stores ints as strings; both forms decode to int."""
        entries = json.loads((REST / "ccxt_static_binance_usdm_responses.json").read_text())["entries"]
        raw = next(
            e["httpResponse"] for e in entries if e["endpoint_inferred"].startswith("GET /fapi/v1/openOrder")
        )
        order = decode_payload(Order, json.dumps(raw).encode(), endpoint="GET /fapi/v1/openOrder")
        assert order.order_id == 664082074
        assert order.time == 1707907323983

    def test_mismatch_names_field(self) -> None:
        with pytest.raises(PayloadError) as info:
            decode_payload(
                list[RestKline], b'[[1,"1","1","1","1","1",2,"1",3,"1"]]', endpoint="GET /fapi/v1/klines"
            )
        assert info.value.endpoint == "GET /fapi/v1/klines"
        assert info.value.field == "[0]"
        with pytest.raises(PayloadError) as info2:
            decode_payload(
                ExchangeInfo, b'{"symbols":[{"symbol":"X"}]}', endpoint="GET /fapi/v1/exchangeInfo"
            )
        assert info2.value.field == "symbols[0]"
        assert "status" in str(info2.value)


class TestWsPayloads:
    """Recorded stream and user-data messages decode."""

    def test_kline_and_book_ticker_recordings(self) -> None:
        for name, cls in (
            ("fstream_kline_1m_mainnet_2021-07-22.json", KlineClosed),
            ("fstream_bookTicker_mainnet_2021-07-22.json", BookTicker),
        ):
            messages = json.loads((WS / name).read_text())["messages"]
            for m in messages:
                raw = json.dumps(m["msg"])
                event = decode_market_frame(raw)
                if cls is KlineClosed and not m["msg"]["data"]["k"]["x"]:
                    assert event is None
                else:
                    assert isinstance(event, cls)

    def test_docs_book_ticker(self) -> None:
        data = json.loads((WS / "docs-examples" / "bookTicker_docs_example_nautilus.json").read_text())
        data = data.get("data", data)
        event = decode_market_frame(json.dumps({"stream": "bnbusdt@bookTicker", "data": data}))
        assert isinstance(event, BookTicker)

    @pytest.mark.parametrize(
        "name",
        [
            "algo_update_triggering_nautilus.json",
            "algo_update_triggered_nautilus.json",
            "algo_update_finished_nautilus.json",
            "algo_update_finished_canceled_nautilus.json",
            "trade_lite_nautilus.json",
        ],
    )
    def test_user_data_recordings(self, name: str) -> None:
        raw = json.loads((WS / name).read_text())
        event = decode_user_event(json.dumps(raw.get("data", raw)))
        assert isinstance(event, AlgoUpdate | TradeLite)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_market_decoder_never_raises(raw: bytes | str) -> None:
    """Arbitrary bytes never crash the decoder (they are skipped, or a valid frame)."""
    decode_market_frame(raw)

"""Two Binance clients we did not write (ccxt, the official `binance-futures-connector`) drive `sim-exchange`
on loopback through a realistic session. Where the fake and our own client share a wrong assumption, our
tests pass and these fail. Test-only: the bot never imports either client.

Real sockets on the real clock (bounded): the fake's clock follows the wall clock, so the clients'
own timestamps pass its recvWindow check.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt  # type: ignore[import-untyped]
import pytest
import trio
from binance.um_futures import UMFutures  # type: ignore[import-untyped]

from futures_actor.binance.models import (
    AccountInfo,
    AlgoOrder,
    ExchangeInfo,
    LeverageBracket,
    Order,
    PositionRisk,
    RestKline,
    decode_payload,
)
from futures_actor.binance.sim import SimExchange, load_exchange_info, serve_http
from futures_actor.core.config import BotConfig
from futures_actor.core.types import Candle

pytestmark = pytest.mark.realclock

KEY = "oracle-key-0123456789abcdef0123456789abcdef0123456789abcdef01234567"
SECRET = "oracle-secret-0123456789abcdef0123456789abcdef0123456789abcdef0123"
FIVE_MIN_MS = 300_000
HISTORY_BARS = 48
CLOCK_TICK_S = 0.05
SESSION_TIMEOUT_S = 60.0
EXCHANGE_INFO = (
    Path(__file__).resolve().parents[2] / "data" / "sample" / "exchangeInfo_mainnet_2024-10-02.json"
)
D = Decimal


def _history(now_ms: int, start_price: float) -> list[Candle]:
    """Closed 5m candles up to the last boundary before `now_ms`, a gentle deterministic zig-zag."""
    last_open = now_ms // FIVE_MIN_MS * FIVE_MIN_MS - FIVE_MIN_MS
    out: list[Candle] = []
    price = start_price
    for i in range(HISTORY_BARS):
        t = last_open - (HISTORY_BARS - 1 - i) * FIVE_MIN_MS
        nxt = price * (1.001 if i % 3 else 0.999)
        out.append(
            Candle(
                open_time_ms=t,
                open=price,
                high=max(price, nxt) * 1.0005,
                low=min(price, nxt) * 0.9995,
                close=round(nxt, 1),
                volume=10.0 + i,
                quote_volume=(10.0 + i) * nxt,
                trades=100 + i,
            )
        )
        price = round(nxt, 1)
    return out


@pytest.fixture
async def venue() -> AsyncIterator[tuple[SimExchange, str]]:
    """`sim-exchange` on 127.0.0.1 with its clock on the wall clock; yields (exchange, base URL)."""
    info, specs = load_exchange_info(EXCHANGE_INFO, symbols=["BTCUSDT", "ETHUSDT"])
    now = int(time.time() * 1000)
    ex = SimExchange(
        exchange_info=info,
        specs=specs,
        execution=BotConfig().execution,
        api_key=KEY,
        api_secret=SECRET,
        start_ms=now,
    )
    ex.load_candles("BTCUSDT", _history(now, 60_000.0))
    ex.load_candles("ETHUSDT", _history(now, 3_000.0))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_http(ex, port=0, task_status=task_status))

        async def follow_wall_clock() -> None:
            while True:
                await trio.sleep(CLOCK_TICK_S)
                ex.advance_to(max(ex.now_ms, int(time.time() * 1000)))

        nursery.start_soon(follow_wall_clock)
        yield ex, f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def in_thread(fn: Callable[[], Any]) -> Any:
    with trio.fail_after(SESSION_TIMEOUT_S):
        return await trio.to_thread.run_sync(fn)


def _ccxt(base: str) -> Any:
    client = ccxt.binanceusdm(
        {
            "apiKey": KEY,
            "secret": SECRET,
            "options": {"fetchMarkets": {"types": ["linear"]}, "fetchCurrencies": False},
        }
    )

    def local(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: local(x) for k, x in v.items()}
        if isinstance(v, str):
            return v.replace("https://fapi.binance.com", base).replace("https://api.binance.com", base)
        return v

    client.urls["api"] = local(client.urls["api"])
    return client


class TestCcxtSession:
    """ccxt's binanceusdm through market data, account, configuration and the order life cycle."""

    async def test_session(self, venue: tuple[SimExchange, str]) -> None:
        ex, base = venue
        symbol = "BTC/USDT:USDT"

        def session() -> dict[str, Any]:
            c = _ccxt(base)
            out: dict[str, Any] = {"time": c.fetch_time(), "markets": c.load_markets()}
            out["ohlcv"] = c.fetch_ohlcv(symbol, "5m", limit=20)
            out["book"] = c.fetch_order_book(symbol, 5)
            out["funding"] = c.fetch_funding_rate(symbol)
            out["funding_history"] = c.fetch_funding_rate_history(symbol)
            out["balance"] = c.fetch_balance()
            out["tiers"] = c.fetch_leverage_tiers([symbol])
            out["margin"] = c.set_margin_mode("isolated", symbol)
            out["leverage"] = c.set_leverage(3, symbol)
            out["limit"] = c.create_order(symbol, "limit", "buy", 0.01, 55_000, {"clientOrderId": "cx-l1"})
            out["market"] = c.create_order(symbol, "market", "buy", 0.01, None, {"clientOrderId": "cx-m1"})
            out["stop"] = c.create_order(
                symbol,
                "STOP_MARKET",
                "sell",
                0.01,
                None,
                {"stopPrice": 50_000, "reduceOnly": True, "clientOrderId": "cx-s1"},
            )
            out["query"] = c.fetch_order(None, symbol, {"origClientOrderId": "cx-l1"})
            out["open"] = c.fetch_open_orders(symbol)
            out["cancel"] = c.cancel_order(None, symbol, {"origClientOrderId": "cx-l1"})
            out["cancel_stop"] = c.cancel_order(None, symbol, {"clientAlgoId": "cx-s1", "trigger": True})
            out["positions"] = c.fetch_positions([symbol])
            return out

        out = await in_thread(session)
        assert abs(out["time"] - ex.now_ms) < 5_000
        assert {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(out["markets"])
        assert len(out["ohlcv"]) == 20
        assert out["ohlcv"][-1][0] > out["ohlcv"][0][0]
        assert out["book"]["bids"][0][0] < out["book"]["asks"][0][0]
        assert out["funding"]["fundingRate"] == pytest.approx(0.0001)
        assert out["balance"]["USDT"]["total"] == pytest.approx(float(ex.wallet_balance()), rel=1e-3)
        tiers = out["tiers"][symbol]
        assert tiers[0]["maxLeverage"] >= tiers[-1]["maxLeverage"]
        # ccxt hands numbers back as strings when orjson is absent: compare the value, not the JSON type
        assert int(out["leverage"]["leverage"]) == 3
        assert out["limit"]["status"] == "open"
        assert out["market"]["status"] == "closed"
        assert out["stop"]["clientOrderId"] == "cx-s1"
        assert out["query"]["clientOrderId"] == "cx-l1"
        assert [o["clientOrderId"] for o in out["open"]] == ["cx-l1"]
        assert out["cancel"]["status"] == "canceled"
        (pos,) = out["positions"]
        assert pos["contracts"] == pytest.approx(0.01)
        assert pos["side"] == "long"
        assert ex.position_amount("BTCUSDT") == D("0.01")
        assert ex.algo_by_client_id("cx-s1").status == "CANCELED"  # type: ignore[union-attr]
        assert all(r.status < 500 for r in ex.requests)


class TestConnectorSession:
    """The official connector: every answer also decodes with our own wire models."""

    async def test_session(self, venue: tuple[SimExchange, str]) -> None:
        ex, base = venue

        def session() -> dict[str, Any]:
            c = UMFutures(key=KEY, secret=SECRET, base_url=base)
            stop = {
                "algoType": "CONDITIONAL",
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "STOP_MARKET",
                "triggerPrice": "50000",
                "workingType": "MARK_PRICE",
                "quantity": "0.010",
                "reduceOnly": "true",
                "clientAlgoId": "bc-s1",
            }
            out: dict[str, Any] = {"time": c.time(), "info": c.exchange_info()}
            out["klines"] = c.klines("BTCUSDT", "5m", limit=10)
            out["depth"] = c.depth("BTCUSDT", limit=10)
            out["mark"] = c.mark_price("BTCUSDT")
            out["funding"] = c.funding_rate("BTCUSDT")
            out["funding_info"] = c.funding_info()
            out["balance"] = c.balance()
            out["account"] = c.account()
            out["brackets"] = c.leverage_brackets(symbol="BTCUSDT")
            out["margin"] = c.change_margin_type("BTCUSDT", "ISOLATED")
            out["leverage"] = c.change_leverage("BTCUSDT", 2)
            out["commission"] = c.commission_rate("BTCUSDT")
            out["config"] = c.futures_account_configuration()
            out["symbol_config"] = c.symbol_configuration(symbol="BTCUSDT")
            out["limit"] = c.new_order(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                quantity=0.01,
                price=55000,
                timeInForce="GTC",
                newClientOrderId="bc-l1",
            )
            out["market"] = c.new_order(
                symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.01, newClientOrderId="bc-m1"
            )
            out["stop"] = c.sign_request("POST", "/fapi/v1/algoOrder", stop)
            out["query"] = c.query_order("BTCUSDT", origClientOrderId="bc-l1")
            out["cancel"] = c.cancel_order("BTCUSDT", origClientOrderId="bc-l1")
            out["algo_query"] = c.sign_request("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "bc-s1"})
            out["algo_cancel"] = c.sign_request("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "bc-s1"})
            out["risk_v3"] = c.get_position_risk(symbol="BTCUSDT")
            out["risk_v2"] = c.sign_request("GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})
            out["all_orders"] = c.get_all_orders(symbol="BTCUSDT")
            out["listen_key"] = c.new_listen_key()
            c.renew_listen_key(out["listen_key"]["listenKey"])
            return out

        out = await in_thread(session)

        def ours(type_: Any, key: str) -> Any:
            import msgspec

            return decode_payload(type_, msgspec.json.encode(out[key]), endpoint=key)

        assert abs(out["time"]["serverTime"] - ex.now_ms) < 5_000
        assert {s.symbol for s in ours(ExchangeInfo, "info").symbols} == {"BTCUSDT", "ETHUSDT"}
        assert len(ours(list[RestKline], "klines")) == 10
        assert len(out["depth"]["bids"]) == 10
        assert D(out["mark"]["markPrice"]) > 0
        assert out["funding_info"] == []
        assert ours(AccountInfo, "account").total_wallet_balance > 0
        assert ours(LeverageBracket, "brackets").symbol == "BTCUSDT"
        assert out["margin"] == {"code": 200, "msg": "success"}
        assert out["leverage"]["leverage"] == 2
        assert out["config"]["dualSidePosition"] is False
        assert out["symbol_config"][0]["marginType"] == "ISOLATED"
        assert ours(Order, "limit").status == "NEW"
        market = ours(Order, "market")
        assert (market.status, market.executed_qty) == ("NEW", 0)  # ACK: the fill comes on the stream
        assert ours(AlgoOrder, "stop").client_algo_id == "bc-s1"
        assert ours(Order, "query").client_order_id == "bc-l1"
        assert ours(Order, "cancel").status == "CANCELED"
        assert ours(AlgoOrder, "algo_query").algo_status == "NEW"
        assert out["algo_cancel"]["code"] == "200"
        (v3,) = ours(list[PositionRisk], "risk_v3")
        (v2,) = ours(list[PositionRisk], "risk_v2")
        assert v3.position_amt == v2.position_amt == D("0.010")
        assert (v3.leverage, v2.leverage) == (None, 2)
        assert [o["clientOrderId"] for o in out["all_orders"]] == ["bc-l1", "bc-m1"]
        assert out["listen_key"]["listenKey"] == ex.listen_key
        assert all(r.status < 500 for r in ex.requests)

"""The fake exchange over httpx.MockTransport: auth, endpoints, Binance error codes, faults, introspection."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import pytest
import trio.testing

from futures_actor.binance.sim import SimExchange, mock_transport
from futures_actor.core.types import Candle
from tests.sim.conftest import API_KEY, T0, signed_query

BASE = "https://fapi.binance.com"


def client(ex: SimExchange) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=BASE, transport=mock_transport(ex))


async def call(
    ex: SimExchange,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    key: str | None = API_KEY,
    ts: int | None = None,
    signed: bool = True,
) -> httpx.Response:
    query = signed_query(params or {}, timestamp=ex.now_ms if ts is None else ts) if signed else ""
    headers = {"X-MBX-APIKEY": key} if key else {}
    async with client(ex) as c:
        return await c.request(method, f"{path}?{query}" if query else path, headers=headers)


class TestAuth:
    """Signatures, API key and timestamp are checked like Binance, on the exchange clock."""

    async def test_binance_doc_signature_vector(self) -> None:
        secret = b"2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
        payload = b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943"
        assert hmac.new(secret, payload, hashlib.sha256).hexdigest() == (
            "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
        )

    async def test_signed_request_with_query_and_body(self, ex: SimExchange) -> None:
        # part in the query, part in the form body: signed over query + body with no '&' between
        q = f"symbol=BTCUSDT&timestamp={ex.now_ms}"
        body = "side=BUY&type=MARKET&quantity=0.01&newClientOrderId=qb1"
        sig = hmac.new(b"sim-test-secret", (q + body).encode(), hashlib.sha256).hexdigest()
        async with client(ex) as c:
            r = await c.post(
                f"/fapi/v1/order?{q}",
                content=f"{body}&signature={sig}",
                headers={"X-MBX-APIKEY": API_KEY, "content-type": "application/x-www-form-urlencoded"},
            )
        assert r.status_code == 200, r.text
        assert r.json()["clientOrderId"] == "qb1"

    @pytest.mark.parametrize(
        ("kw", "status", "code"),
        [
            ({"key": None}, 401, -2014),
            ({"key": "wrong"}, 401, -2015),
            ({"ts": T0 - 5001}, 400, -1021),
            ({"ts": T0 + 1000}, 400, -1021),
        ],
    )
    async def test_auth_errors(self, ex: SimExchange, kw: dict[str, Any], status: int, code: int) -> None:
        r = await call(ex, "GET", "/fapi/v2/balance", **kw)
        assert (r.status_code, r.json()["code"]) == (status, code)

    async def test_bad_signature(self, ex: SimExchange) -> None:
        async with client(ex) as c:
            r = await c.get(
                f"/fapi/v2/balance?timestamp={T0}&signature=00ff", headers={"X-MBX-APIKEY": API_KEY}
            )
        assert r.json() == {"code": -1022, "msg": "Signature for this request is not valid."}

    async def test_timestamp_follows_the_exchange_clock(self, ex: SimExchange) -> None:
        ex.advance_to(T0 + 60_000)
        assert (await call(ex, "GET", "/fapi/v2/balance", ts=T0)).json()["code"] == -1021
        assert (await call(ex, "GET", "/fapi/v2/balance")).status_code == 200


class TestEndpoints:
    """Happy paths of every endpoint and their error codes."""

    async def test_market_data(self, ex: SimExchange) -> None:
        for i in range(24):
            t = T0 + i * 300_000
            ex.advance_to(t)
            ex.push_candle(
                "BTCUSDT",
                Candle(open_time_ms=t, open=60000 + i, high=60100 + i, low=59900, close=60050, volume=5.0),
            )
        async with client(ex) as c:
            assert (await c.get("/fapi/v1/time")).json() == {"serverTime": ex.now_ms}
            rows = (await c.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1h"})).json()
            assert [r[0] for r in rows] == [T0, T0 + 3_600_000]
            assert float(rows[0][5]) == 60.0
            assert float(rows[0][1]) == 60000
            info = (await c.get("/fapi/v1/exchangeInfo")).json()
            assert {s["symbol"] for s in info["symbols"]} == {"BTCUSDT", "ETHUSDT", "HYPEUSDT"}
            prem = (await c.get("/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"})).json()
            assert prem["nextFundingTime"] == T0 + 8 * 3_600_000
            assert prem["lastFundingRate"] == "0.0001"
            book = (await c.get("/fapi/v1/ticker/bookTicker", params={"symbol": "BTCUSDT"})).json()
            assert float(book["askPrice"]) > float(book["bidPrice"])
            t24 = (await c.get("/fapi/v1/ticker/24hr", params={"symbol": "BTCUSDT"})).json()
            assert float(t24["volume"]) == 120.0
            bad = await c.get("/fapi/v1/klines", params={"symbol": "NOPE", "interval": "1h"})
            assert (bad.status_code, bad.json()["code"]) == (400, -1121)

    async def test_order_lifecycle(self, ex: SimExchange) -> None:
        p = {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "59000",
            "newClientOrderId": "ent-1",
        }
        r = await call(ex, "POST", "/fapi/v1/order", p)
        assert r.status_code == 200
        assert r.json()["status"] == "NEW"
        assert "avgPrice" not in r.json()
        dup = await call(ex, "POST", "/fapi/v1/order", p)
        assert dup.json()["code"] == -4116
        q = await call(ex, "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "ent-1"})
        assert q.json()["avgPrice"] == "0"
        assert len((await call(ex, "GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})).json()) == 1
        c = await call(ex, "DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "ent-1"})
        assert c.json()["status"] == "CANCELED"
        again = await call(
            ex, "DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "ent-1"}
        )
        assert again.json()["code"] == -2011
        missing = await call(ex, "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "nope"})
        assert missing.json()["code"] == -2013
        await call(ex, "POST", "/fapi/v1/order", {**p, "newClientOrderId": "ent-2"})
        done = await call(ex, "DELETE", "/fapi/v1/allOpenOrders", {"symbol": "BTCUSDT"})
        assert done.json()["code"] == 200
        assert ex.engine.open_orders() == []

    async def test_stop_on_regular_endpoint_is_4120(self, ex: SimExchange) -> None:
        r = await call(
            ex,
            "POST",
            "/fapi/v1/order",
            {
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "STOP_MARKET",
                "quantity": "0.01",
                "stopPrice": "59000",
            },
        )
        assert r.status_code == 400
        assert r.json() == {
            "code": -4120,
            "msg": "Order type not supported for this endpoint. "
            "Please use the Algo Order API endpoints instead.",
        }

    async def test_algo_lifecycle(self, ex: SimExchange) -> None:
        await call(
            ex,
            "POST",
            "/fapi/v1/order",
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"},
        )
        p = {
            "algoType": "CONDITIONAL",
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "59000",
            "closePosition": "true",
            "workingType": "MARK_PRICE",
            "clientAlgoId": "stp-1",
        }
        r = await call(ex, "POST", "/fapi/v1/algoOrder", p)
        assert r.json()["algoStatus"] == "NEW"
        assert r.json()["orderType"] == "STOP_MARKET"
        assert (await call(ex, "POST", "/fapi/v1/algoOrder", p)).json()["code"] == -4116
        assert (
            await call(ex, "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "stp-1"})
        ).json()["code"] == -2013
        assert len((await call(ex, "GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})).json()) == 1
        q = await call(ex, "GET", "/fapi/v1/algoOrder", {"clientAlgoId": "stp-1"})
        assert q.json()["workingType"] == "MARK_PRICE"
        c = await call(ex, "DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "stp-1"})
        assert c.json() == {
            "algoId": q.json()["algoId"],
            "clientAlgoId": "stp-1",
            "code": "200",
            "msg": "success",
        }
        imm = await call(
            ex, "POST", "/fapi/v1/algoOrder", {**p, "triggerPrice": "61000", "clientAlgoId": "stp-2"}
        )
        assert imm.json()["code"] == -2021

    async def test_account_endpoints(self, ex: SimExchange) -> None:
        isolated = {"symbol": "BTCUSDT", "marginType": "ISOLATED"}
        assert (await call(ex, "POST", "/fapi/v1/marginType", isolated)).json() == {
            "code": 200,
            "msg": "success",
        }
        assert (await call(ex, "POST", "/fapi/v1/marginType", isolated)).json()["code"] == -4046
        assert (await call(ex, "POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": 2})).json()[
            "leverage"
        ] == 2
        assert (await call(ex, "POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": 200})).json()[
            "code"
        ] == -4028
        assert (await call(ex, "GET", "/fapi/v1/positionSide/dual")).json() == {"dualSidePosition": False}
        await call(
            ex,
            "POST",
            "/fapi/v1/order",
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"},
        )
        risk = (await call(ex, "GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})).json()
        assert risk[0]["positionAmt"] == "0.01"
        assert risk[0]["marginType"] == "isolated"
        acct = (await call(ex, "GET", "/fapi/v3/account")).json()
        assert acct["positions"][0]["symbol"] == "BTCUSDT"
        bal = (await call(ex, "GET", "/fapi/v2/balance")).json()
        assert float(bal[0]["availableBalance"]) < 10000
        fees = (await call(ex, "GET", "/fapi/v1/income", {"incomeType": "COMMISSION"})).json()
        assert len(fees) == 1
        assert float(fees[0]["income"]) < 0
        assert len((await call(ex, "GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"})).json()) == 1


class TestFaults:
    """Injected failures look exactly like Binance's."""

    async def test_fail_next_then_recover(self, ex: SimExchange) -> None:
        ex.faults.fail_next("/fapi/v1/time", status=503, times=2)
        async with client(ex) as c:
            codes = [(await c.get("/fapi/v1/time")).status_code for _ in range(3)]
        assert codes == [503, 503, 200]

    async def test_rate_limit_and_ban(self, ex: SimExchange) -> None:
        ex.faults.rate_limit_next(retry_after_s=7)
        ex.faults.ban_until(T0 + 120_000)
        async with client(ex) as c:
            r = await c.get("/fapi/v1/time")
            assert (r.status_code, r.headers["retry-after"]) == (418, "120")
            ex.advance_to(T0 + 120_000)
            r = await c.get("/fapi/v1/time")
            assert (r.status_code, r.headers["retry-after"], r.json()["code"]) == (429, "7", -1003)
            assert (await c.get("/fapi/v1/time")).status_code == 200

    async def test_timestamp_burst(self, ex: SimExchange) -> None:
        ex.faults.timestamp_errors(2)
        codes = [(await call(ex, "GET", "/fapi/v2/balance")).status_code for _ in range(3)]
        assert codes == [400, 400, 200]

    async def test_lost_response_order_still_exists(self, ex: SimExchange) -> None:
        ex.faults.lose_response_of_next_order("timeout")
        p = {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "59000",
            "newClientOrderId": "lost-1",
        }
        with pytest.raises(httpx.ReadTimeout):
            await call(ex, "POST", "/fapi/v1/order", p)
        assert [o.status for o in ex.orders_by_client_id("lost-1")] == ["NEW"]
        ex.faults.lose_response_of_next_order("503")
        r = await call(ex, "POST", "/fapi/v1/order", {**p, "newClientOrderId": "lost-2"})
        assert r.status_code == 503
        assert "Unknown error" in r.json()["msg"]
        assert ex.orders_by_client_id("lost-2")
        assert ex.client_ids_sent() == ["lost-1", "lost-2"]
        assert len(set(ex.client_ids_sent())) == len(ex.client_ids_sent())

    async def test_latency_uses_trio_time(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.set_latency(3.0)
        t = trio.current_time()
        async with client(ex) as c:
            await c.get("/fapi/v1/ping")
        assert trio.current_time() - t == pytest.approx(3.0)


async def test_listen_key_lifecycle(ex: SimExchange) -> None:
    async with client(ex) as c:
        h = {"X-MBX-APIKEY": API_KEY}
        key = (await c.post("/fapi/v1/listenKey", headers=h)).json()["listenKey"]
        assert (await c.post("/fapi/v1/listenKey", headers=h)).json()["listenKey"] == key
        assert (await c.put("/fapi/v1/listenKey", headers=h)).json() == {}
        ex.advance_to(T0 + 3_600_000)
        assert ex.user_events[-1] == {"e": "listenKeyExpired", "E": T0 + 3_600_000, "listenKey": key}
        r = await c.put("/fapi/v1/listenKey", headers=h)
        assert r.json()["code"] == -1125
        assert (await c.post("/fapi/v1/listenKey")).json()["code"] == -2014

"""The fake exchange as a venue model (issue 11, fake-exchange gaps 1, 2, 4, 5, 6, 7): rate limits with
their headers, 429 and 418; newOrderRespType; margin types; the endpoints real clients call and their
shapes; user-event faults, server pings and the 24 h cut; the admin endpoint."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from futures_actor.binance.models import (
    AccountInfo,
    AlgoOrder,
    FundingRateRow,
    LeverageBracket,
    Order,
    PositionRisk,
    decode_payload,
)
from futures_actor.binance.sim import SimExchange, memory_connector, mock_transport
from futures_actor.binance.sim.exchange import Subscriber
from tests.sim.test_sim_rest import call

D = Decimal
MARKET = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"}


def limit(cid: str, price: str = "59000", **kw: str) -> dict[str, str]:
    return {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.01",
        "price": price,
        "newClientOrderId": cid,
        **kw,
    }


async def public(ex: SimExchange, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
    """An unsigned request with its parameters (market data)."""
    query = f"?{urlencode(params)}" if params else ""
    async with httpx.AsyncClient(base_url="https://fapi.binance.com", transport=mock_transport(ex)) as c:
        return await c.get(f"{path}{query}")


class TestRateLimits:
    """Weight and order counts as Binance documents them, with headers, 429 and escalating 418 bans."""

    async def test_weight_headers_follow_the_endpoint_table(self, ex: SimExchange) -> None:
        r1 = await public(ex, "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "5m", "limit": 1000})
        r2 = await public(ex, "/fapi/v1/ticker/24hr")
        r3 = await public(ex, "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 100})
        assert [r.headers["x-mbx-used-weight-1m"] for r in (r1, r2, r3)] == ["5", "45", "50"]
        placed = await call(ex, "POST", "/fapi/v1/order", MARKET)
        assert placed.headers["x-mbx-used-weight-1m"] == "50"  # placements weigh 0 ...
        assert (placed.headers["x-mbx-order-count-10s"], placed.headers["x-mbx-order-count-1m"]) == ("1", "1")
        assert "x-mbx-order-count-10s" not in r1.headers
        ex.advance_to(ex.now_ms + 60_000)
        fresh = await public(ex, "/fapi/v1/time")
        assert fresh.headers["x-mbx-used-weight-1m"] == "1"  # a new server minute

    async def test_429_then_418_on_repeated_violation(self, ex: SimExchange) -> None:
        ex.limits.weight_limit = 10
        for _ in range(2):
            assert (await public(ex, "/fapi/v1/ticker/bookTicker")).status_code == 200
        over = await public(ex, "/fapi/v1/ticker/bookTicker")
        assert over.status_code == 429
        assert over.json()["code"] == -1003
        to_minute = 60 - (ex.now_ms // 1000) % 60
        assert over.headers["retry-after"] == str(to_minute)
        again = await public(ex, "/fapi/v1/time")  # ignoring Retry-After
        assert again.status_code == 418
        assert f"banned until {ex.now_ms + 120_000}" in again.json()["msg"]
        ex.advance_to(ex.now_ms + 119_000)
        assert (await public(ex, "/fapi/v1/time")).status_code == 418
        ex.advance_to(ex.now_ms + 1_000)
        assert (await public(ex, "/fapi/v1/time")).status_code == 200
        # The next ban is twice as long.
        for _ in range(5):
            await public(ex, "/fapi/v1/ticker/bookTicker")
        banned = await public(ex, "/fapi/v1/time")
        assert banned.status_code == 418
        assert f"banned until {ex.now_ms + 240_000}" in banned.json()["msg"]

    async def test_order_count_limit(self, ex: SimExchange) -> None:
        ex.limits.orders_per_10s = 2
        codes = [
            (await call(ex, "POST", "/fapi/v1/order", limit(f"oc{i}"))).json().get("code") for i in range(3)
        ]
        assert codes[:2] == [None, None]
        assert codes[2] == -1015
        ex.advance_to(ex.now_ms + 10_000)
        assert "code" not in (await call(ex, "POST", "/fapi/v1/order", limit("oc9"))).json()


class TestResponseType:
    """`newOrderRespType`: ACK answers the accepted order (NEW); RESULT the final state."""

    async def test_ack_and_result(self, ex: SimExchange) -> None:
        ack = (await call(ex, "POST", "/fapi/v1/order", {**MARKET, "newClientOrderId": "a1"})).json()
        assert (ack["status"], ack["executedQty"]) == ("NEW", "0")
        assert "avgPrice" not in ack
        assert ex.orders_by_client_id("a1")[0].status == "FILLED"  # filled, told on the user stream
        fills = [e for e in ex.user_events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["c"] == "a1"]
        assert [e["o"]["X"] for e in fills] == ["NEW", "FILLED"]
        res = (
            await call(
                ex,
                "POST",
                "/fapi/v1/order",
                {**MARKET, "newClientOrderId": "r1", "newOrderRespType": "RESULT"},
            )
        ).json()
        assert (res["status"], res["executedQty"]) == ("FILLED", "0.01")
        bad = await call(ex, "POST", "/fapi/v1/order", {**MARKET, "newOrderRespType": "FULL"})
        assert bad.json()["code"] == -1116


class TestMarginType:
    """A fresh account is cross margin; the documented refusals and the success body."""

    async def test_rules(self, ex: SimExchange) -> None:
        cfg = (await call(ex, "GET", "/fapi/v1/symbolConfig", {"symbol": "BTCUSDT"})).json()
        assert cfg[0]["marginType"] == "CROSSED"

        def margin(sym: str, kind: str) -> Any:
            return call(ex, "POST", "/fapi/v1/marginType", {"symbol": sym, "marginType": kind})

        await call(ex, "POST", "/fapi/v1/order", limit("mt1"))
        assert (await margin("BTCUSDT", "ISOLATED")).json()["code"] == -4047  # an open order
        await call(ex, "DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "mt1"})
        await call(ex, "POST", "/fapi/v1/order", MARKET)
        assert (await margin("BTCUSDT", "ISOLATED")).json()["code"] == -4048  # a position
        ok = await margin("ETHUSDT", "ISOLATED")
        assert (ok.status_code, ok.json()) == (200, {"code": 200, "msg": "success"})
        assert (await margin("ETHUSDT", "ISOLATED")).json()["code"] == -4046
        ex.multi_assets = True
        assert (await margin("ETHUSDT", "CROSSED")).status_code == 200
        refused = await margin("ETHUSDT", "ISOLATED")
        assert (refused.status_code, refused.json()["code"]) == (400, -4168)


class TestEndpoints:
    """The endpoints real clients call, in Binance's shapes (decoded by our own wire models)."""

    async def test_leverage_bracket_depth_commission_configs(self, ex: SimExchange) -> None:
        one = await call(ex, "GET", "/fapi/v1/leverageBracket", {"symbol": "BTCUSDT"})
        bracket = decode_payload(LeverageBracket, one.content, endpoint="x")
        assert bracket.symbol == "BTCUSDT"
        caps = [b.notional_cap for b in bracket.brackets]
        assert caps == sorted(caps)
        assert [b.notional_floor for b in bracket.brackets[1:]] == caps[:-1]
        every = await call(ex, "GET", "/fapi/v1/leverageBracket")
        assert {b.symbol for b in decode_payload(list[LeverageBracket], every.content, endpoint="x")} >= {
            "BTCUSDT",
            "ETHUSDT",
        }
        depth = (await public(ex, "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 5})).json()
        assert set(depth) == {"lastUpdateId", "E", "T", "bids", "asks"}
        assert len(depth["bids"]) == len(depth["asks"]) == 5
        assert D(depth["bids"][0][0]) < D(depth["asks"][0][0])
        bad = await public(ex, "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 7})
        assert bad.json()["code"] == -1130
        fee = (await call(ex, "GET", "/fapi/v1/commissionRate", {"symbol": "BTCUSDT"})).json()
        assert set(fee) == {"symbol", "makerCommissionRate", "takerCommissionRate", "rpiCommissionRate"}
        acfg = (await call(ex, "GET", "/fapi/v1/accountConfig")).json()
        assert (acfg["dualSidePosition"], acfg["multiAssetsMargin"], acfg["canTrade"]) == (False, False, True)
        restr = (await call(ex, "GET", "/sapi/v1/account/apiRestrictions")).json()
        assert (restr["enableFutures"], restr["enableWithdrawals"], restr["ipRestrict"]) == (
            True,
            False,
            True,
        )

    async def test_funding_history_and_info(self, ex: SimExchange) -> None:
        assert (await public(ex, "/fapi/v1/fundingRate", {"symbol": "BTCUSDT"})).json() == []
        ex.advance_to(ex.now_ms + 2 * 8 * 3_600_000)
        rows = decode_payload(
            list[FundingRateRow],
            (await public(ex, "/fapi/v1/fundingRate", {"symbol": "BTCUSDT"})).content,
            endpoint="x",
        )
        assert len(rows) == 2
        assert rows[0].funding_time < rows[1].funding_time <= ex.now_ms
        assert (await public(ex, "/fapi/v1/fundingInfo")).json() == []

    async def test_order_queries_batch_and_modify(self, ex: SimExchange) -> None:
        await call(ex, "POST", "/fapi/v1/order", limit("q1"))
        await call(ex, "POST", "/fapi/v1/order", {**MARKET, "newClientOrderId": "q2"})
        live = await call(ex, "GET", "/fapi/v1/openOrder", {"symbol": "BTCUSDT", "origClientOrderId": "q1"})
        assert decode_payload(Order, live.content, endpoint="x").status == "NEW"
        done = await call(ex, "GET", "/fapi/v1/openOrder", {"symbol": "BTCUSDT", "origClientOrderId": "q2"})
        assert done.json()["code"] == -2013
        every = decode_payload(
            list[Order],
            (await call(ex, "GET", "/fapi/v1/allOrders", {"symbol": "BTCUSDT"})).content,
            endpoint="x",
        )
        assert [o.client_order_id for o in every] == ["q1", "q2"]
        batch = [limit("b1", "58000"), {**limit("b2"), "price": "58000.05"}]  # the second is off tick
        answer = (await call(ex, "POST", "/fapi/v1/batchOrders", {"batchOrders": json.dumps(batch)})).json()
        assert answer[0]["clientOrderId"] == "b1"
        assert answer[1]["code"] == -4014
        too_many = json.dumps([limit(f"x{i}") for i in range(6)])
        assert (await call(ex, "POST", "/fapi/v1/batchOrders", {"batchOrders": too_many})).json()[
            "code"
        ] == -1130
        before = ex.orders_by_client_id("q1")[0].order_id
        mod = await call(
            ex,
            "PUT",
            "/fapi/v1/order",
            {
                "symbol": "BTCUSDT",
                "origClientOrderId": "q1",
                "side": "BUY",
                "quantity": "0.02",
                "price": "58500",
            },
        )
        m = decode_payload(Order, mod.content, endpoint="x")
        assert (m.order_id, m.client_order_id, m.price, m.orig_qty) == (before, "q1", D("58500"), D("0.02"))
        amend = [e for e in ex.user_events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "AMENDMENT"]
        assert amend[-1]["o"]["p"] == "58500"

    async def test_all_algo_orders(self, ex: SimExchange) -> None:
        await call(ex, "POST", "/fapi/v1/order", MARKET)
        stop = {
            "algoType": "CONDITIONAL",
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "59000",
            "quantity": "0.01",
            "reduceOnly": "true",
            "clientAlgoId": "al1",
        }
        await call(ex, "POST", "/fapi/v1/algoOrder", stop)
        await call(ex, "DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "al1"})
        rows = decode_payload(
            list[AlgoOrder],
            (await call(ex, "GET", "/fapi/v1/allAlgoOrders", {"symbol": "BTCUSDT"})).content,
            endpoint="x",
        )
        assert [(a.client_algo_id, a.algo_status) for a in rows] == [("al1", "CANCELED")]

    async def test_position_risk_v2_v3_and_account_v2_v3(self, ex: SimExchange) -> None:
        await call(ex, "POST", "/fapi/v1/order", MARKET)
        v2 = (await call(ex, "GET", "/fapi/v2/positionRisk")).json()
        v3 = (await call(ex, "GET", "/fapi/v3/positionRisk")).json()
        assert {r["symbol"] for r in v2} == set(ex.markets)
        assert [r["symbol"] for r in v3] == ["BTCUSDT"]
        assert "leverage" not in v3[0]
        assert "marginType" not in v3[0]
        assert {"initialMargin", "maintMargin", "marginAsset", "adl"} <= set(v3[0])
        decode_payload(list[PositionRisk], msgspec.json.encode(v3), endpoint="x")
        a2 = decode_payload(AccountInfo, (await call(ex, "GET", "/fapi/v2/account")).content, endpoint="x")
        a3 = decode_payload(AccountInfo, (await call(ex, "GET", "/fapi/v3/account")).content, endpoint="x")
        assert {p.symbol for p in a2.positions} == set(ex.markets)  # flat symbols too
        assert [p.symbol for p in a3.positions] == ["BTCUSDT"]
        assert a2.positions[0].leverage is not None


class TestUserEventFaults:
    """Dropped, duplicated and reordered user events; server pings; the 24 h cut."""

    async def _events(self, ex: SimExchange, cid: str) -> list[str]:
        key = (await call(ex, "POST", "/fapi/v1/listenKey", signed=False)).json()["listenKey"]
        sub = Subscriber(route="private", combined=False, streams=set(), listen_keys={key})
        ex.subscribe(sub)
        await call(ex, "POST", "/fapi/v1/order", {**MARKET, "newClientOrderId": cid})
        got: list[str] = []
        while True:
            try:
                raw = sub.receive.receive_nowait()
            except trio.WouldBlock:
                break
            e = msgspec.json.decode(raw)
            got.append(f"{e['e']}:{e['o']['x']}" if e["e"] == "ORDER_TRADE_UPDATE" else e["e"])
        ex.unsubscribe(sub)
        return got

    async def test_faults_shape_the_stream(self, ex: SimExchange) -> None:
        clean = await self._events(ex, "u0")
        assert clean == ["ORDER_TRADE_UPDATE:NEW", "ORDER_TRADE_UPDATE:TRADE", "TRADE_LITE", "ACCOUNT_UPDATE"]
        ex.faults.user_events("drop")
        assert await self._events(ex, "u1") == clean[1:]
        ex.faults.user_events("duplicate")
        assert await self._events(ex, "u2") == [clean[0], *clean]
        ex.faults.user_events("reorder")
        assert await self._events(ex, "u3") == [clean[1], clean[0], *clean[2:]]
        assert len([e for e in ex.user_events if e.get("o", {}).get("c") == "u1"]) == 2  # still recorded

    async def test_server_pings_and_24h_cut(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.server_pings()
        ex.faults.cut_ws_after()

        async def read_until_closed(ws: Any) -> None:
            while True:
                await ws.get_message()

        async with trio.open_nursery() as nursery:
            connect = memory_connector(ex, nursery)
            async with connect("wss://fstream.binance.com/market/stream?streams=btcusdt@markPrice") as ws:
                t0 = trio.current_time()
                with pytest.raises(ConnectionClosed):
                    await read_until_closed(ws)
                lived = trio.current_time() - t0
        assert 86_400.0 <= lived < 86_400.0 + 1.0
        assert ex.ws_pings_sent >= 86_400 // 180 - 1


class TestAdmin:
    """The loopback admin endpoint arms faults and shows the request log (off unless enabled)."""

    async def test_admin(self, ex: SimExchange) -> None:
        async with httpx.AsyncClient(base_url="http://127.0.0.1", transport=mock_transport(ex)) as c:
            assert (await c.get("/admin/state")).status_code == 404
            ex.admin_enabled = True
            q = urlencode({"kind": "fail_next", "path": "/fapi/v1/time", "status": 503, "times": 2})
            assert (await c.post(f"/admin/faults?{q}")).json() == {"armed": "fail_next"}
            codes = [(await c.get("/fapi/v1/time")).status_code for _ in range(3)]
            assert codes == [503, 503, 200]
            log = (await c.get("/admin/requests?since=0")).json()
            assert [(r["path"], r["status"]) for r in log] == [("/fapi/v1/time", 503)] * 2 + [
                ("/fapi/v1/time", 200)
            ]
            state = (await c.get("/admin/state")).json()
            assert state["now_ms"] == ex.now_ms
            assert state["requests"] == 3
            bad = await c.post("/admin/faults?kind=nonsense")
            assert bad.status_code == 400
            assert "nonsense" in bad.json()["msg"]
            await c.post("/admin/price?symbol=BTCUSDT&price=61000")
            assert ex.engine.last_price("BTCUSDT") == D("61000")

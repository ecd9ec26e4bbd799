"""BinanceGateway against a small in-process fapi (httpx.MockTransport) and a memory WebSocket user stream:
routing of regular vs algo orders, gone-order mapping, lost responses, and event conversion."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection

from futures_actor.binance.binance_gateway import BinanceGateway, HedgeModeEnabled, user_stream_factory
from futures_actor.binance.gateway import (
    AccountChanged,
    FundingPaid,
    GatewayEvent,
    OrderRequest,
    OrderUpdate,
    PositionChanged,
    ResyncNeeded,
    StopRequest,
)
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.ws_conn import memory_connector
from futures_actor.core.config import ExchangeConfig
from futures_actor.core.secrets import Secret

START_MS = 1_750_000_020_000
D = Decimal


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Clock:
    def now_ms(self) -> int:
        return START_MS + int(trio.current_time() * 1000)


def ok(payload: Any) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(payload).encode())


def err(status: int, code: int, msg: str) -> httpx.Response:
    return httpx.Response(status, content=json.dumps({"code": code, "msg": msg}).encode())


class MiniFapi:
    """Just enough of fapi for the gateway: regular and algo orders by client id, account endpoints."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.algos: dict[str, dict[str, Any]] = {}
        self.posts: list[tuple[str, str]] = []  # (path, client id)
        self.lose_next_response = False
        self.hedge = False
        self.multi_assets = False
        self.next_id = 1

    def __call__(self, request: httpx.Request) -> httpx.Response:
        p = dict(parse_qsl(request.url.query.decode()))
        key = (request.method, request.url.path)
        if key == ("GET", "/fapi/v1/time"):
            return ok({"serverTime": Clock().now_ms()})
        if key == ("POST", "/fapi/v1/listenKey"):
            return ok({"listenKey": "lk1"})
        if key == ("PUT", "/fapi/v1/listenKey"):
            return ok({})
        if key == ("POST", "/fapi/v1/order"):
            cid = p["newClientOrderId"]
            self.posts.append((request.url.path, cid))
            if p["type"] not in ("LIMIT", "MARKET"):
                return err(400, -4120, "Order type not supported for this endpoint.")
            if cid in self.orders and self.orders[cid]["status"] == "NEW":
                return err(400, -4116, "ClientOrderId is duplicated.")
            self.orders[cid] = {
                "orderId": self.next_id,
                "symbol": p["symbol"],
                "status": "NEW",
                "clientOrderId": cid,
                "price": p.get("price", "0"),
                "origQty": p["quantity"],
                "executedQty": "0",
                "type": p["type"],
                "side": p["side"],
                "reduceOnly": p.get("reduceOnly") == "true",
                "updateTime": Clock().now_ms(),
            }
            self.next_id += 1
            if self.lose_next_response:
                self.lose_next_response = False
                raise httpx.ReadTimeout("lost", request=request)
            return ok(self.orders[cid])
        if key == ("GET", "/fapi/v1/order"):
            o = self.orders.get(p["origClientOrderId"])
            return ok(o) if o else err(400, -2013, "Order does not exist.")
        if key == ("DELETE", "/fapi/v1/order"):
            o = self.orders.get(p["origClientOrderId"])
            if o is None or o["status"] != "NEW":
                return err(400, -2011, "Unknown order sent.")
            o["status"] = "CANCELED"
            return ok(o)
        if key == ("GET", "/fapi/v1/openOrders"):
            return ok([o for o in self.orders.values() if o["status"] == "NEW"])
        if key == ("POST", "/fapi/v1/algoOrder"):
            cid = p["clientAlgoId"]
            self.posts.append((request.url.path, cid))
            assert (p["algoType"], p["type"], p["workingType"], p["reduceOnly"]) == (
                "CONDITIONAL",
                "STOP_MARKET",
                "MARK_PRICE",
                "true",
            )
            self.algos[cid] = {
                "algoId": self.next_id,
                "clientAlgoId": cid,
                "algoType": "CONDITIONAL",
                "orderType": p["type"],
                "symbol": p["symbol"],
                "side": p["side"],
                "algoStatus": "NEW",
                "quantity": p["quantity"],
                "triggerPrice": p["triggerPrice"],
                "workingType": p["workingType"],
                "reduceOnly": True,
                "createTime": Clock().now_ms(),
            }
            self.next_id += 1
            if self.lose_next_response:
                self.lose_next_response = False
                raise httpx.ReadTimeout("lost", request=request)
            return ok(self.algos[cid])
        if key == ("GET", "/fapi/v1/algoOrder"):
            a = self.algos.get(p["clientAlgoId"])
            return ok(a) if a else err(400, -2013, "Order does not exist.")
        if key == ("DELETE", "/fapi/v1/algoOrder"):
            a = self.algos.get(p["clientAlgoId"])
            if a is None or a["algoStatus"] != "NEW":
                return err(400, -2011, "Unknown order sent.")
            a["algoStatus"] = "CANCELED"
            return ok(
                {"algoId": a["algoId"], "clientAlgoId": a["clientAlgoId"], "code": "200", "msg": "success"}
            )
        if key == ("GET", "/fapi/v1/openAlgoOrders"):
            return ok([a for a in self.algos.values() if a["algoStatus"] == "NEW"])
        if key == ("GET", "/fapi/v2/positionRisk"):
            row = {
                "symbol": "BTCUSDT",
                "entryPrice": "0",
                "markPrice": "100",
                "unRealizedProfit": "0",
                "liquidationPrice": "0",
            }
            return ok(
                [
                    {**row, "positionAmt": "0"},
                    {
                        **row,
                        "symbol": "ETHUSDT",
                        "positionAmt": "-0.5",
                        "entryPrice": "2000",
                        "leverage": "2",
                    },
                ]
            )
        if key == ("GET", "/fapi/v3/account"):
            return ok(
                {
                    "totalWalletBalance": "1000",
                    "totalUnrealizedProfit": "5",
                    "totalMarginBalance": "1005",
                    "availableBalance": "900",
                    "assets": [
                        {
                            "asset": "USDT",
                            "walletBalance": "1000",
                            "unrealizedProfit": "5",
                            "availableBalance": "900",
                        }
                    ],
                }
            )
        if key == ("GET", "/fapi/v1/positionSide/dual"):
            return ok({"dualSidePosition": self.hedge})
        if key == ("GET", "/fapi/v1/multiAssetsMargin"):
            return ok({"multiAssetsMargin": self.multi_assets})
        if key == ("POST", "/fapi/v1/marginType"):
            return err(400, -4046, "No need to change margin type.")
        if key == ("POST", "/fapi/v1/leverage"):
            return ok({"symbol": p["symbol"], "leverage": int(p["leverage"]), "maxNotionalValue": "1000000"})
        return err(404, -1121, f"no route {key}")


def make(fapi: MiniFapi, nursery: trio.Nursery, frames: list[dict[str, Any]]) -> BinanceGateway:
    cfg = ExchangeConfig()
    rest = BinanceRestClient(
        cfg=cfg,
        wall_clock=Clock(),
        api_key=Secret("k"),
        api_secret=Secret("s"),
        transport=httpx.MockTransport(fapi),
        base_url="https://fapi.test",
    )

    async def serve(url: str, ws: WebSocketConnection) -> None:
        assert url.endswith("/private/ws/lk1")
        for frame in frames:
            await ws.send_message(json.dumps(frame))
        await trio.sleep_forever()

    factory = user_stream_factory(
        cfg=cfg, rest=rest, ws_base="wss://fstream.test", connector=memory_connector(nursery, serve)
    )
    return BinanceGateway(rest=rest, user_stream=factory)


def req(cid: str, **kw: Any) -> OrderRequest:
    base: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": D("0.010"),
        "price": D("100"),
    }
    return OrderRequest(client_id=cid, **(base | kw))


def stop_req(cid: str) -> StopRequest:
    return StopRequest(
        symbol="BTCUSDT", client_id=cid, side="SELL", trigger_price=D("95"), quantity=D("0.010")
    )


class TestOrders:
    async def test_place_cancel_query_both_kinds(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """Regular orders use /order, stops the algo endpoint (never -4120); gone means None."""
        fapi = MiniFapi()
        gw = make(fapi, nursery, [])
        placed = await gw.place_order(req("fa-1-E1"))
        assert (placed.status, placed.is_stop, placed.price) == ("NEW", False, D("100"))
        stop = await gw.place_stop(stop_req("fa-1-S1"))
        assert (stop.is_stop, stop.type, stop.trigger_price) == (True, "STOP_MARKET", D("95"))
        assert fapi.posts == [("/fapi/v1/order", "fa-1-E1"), ("/fapi/v1/algoOrder", "fa-1-S1")]
        assert {(o.client_id, o.is_stop) for o in await gw.open_orders()} == {
            ("fa-1-E1", False),
            ("fa-1-S1", True),
        }
        assert (await gw.query_stop("BTCUSDT", "fa-1-S1")).status == "NEW"  # type: ignore[union-attr]
        assert await gw.query_order("BTCUSDT", "nope") is None
        assert await gw.query_stop("BTCUSDT", "nope") is None
        cancelled = await gw.cancel_stop("BTCUSDT", "fa-1-S1")
        assert cancelled is not None
        assert cancelled.status == "CANCELED"
        assert cancelled.is_stop
        assert await gw.cancel_stop("BTCUSDT", "fa-1-S1") is None
        assert (await gw.cancel_order("BTCUSDT", "fa-1-E1")).status == "CANCELED"  # type: ignore[union-attr]
        assert await gw.cancel_order("BTCUSDT", "fa-1-E1") is None
        assert await gw.open_orders() == []

    async def test_lost_response_resolves_without_duplicate(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        fapi = MiniFapi()
        gw = make(fapi, nursery, [])
        fapi.lose_next_response = True
        placed = await gw.place_order(req("fa-2-E1"))
        assert placed.client_id == "fa-2-E1"
        assert placed.status == "NEW"
        fapi.lose_next_response = True
        stop = await gw.place_stop(stop_req("fa-2-S1"))
        assert stop.client_id == "fa-2-S1"
        assert fapi.posts == [("/fapi/v1/order", "fa-2-E1"), ("/fapi/v1/algoOrder", "fa-2-S1")]

    async def test_account_positions_and_modes(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        fapi = MiniFapi()
        gw = make(fapi, nursery, [])
        (pos,) = await gw.positions()
        assert (pos.symbol, pos.side, pos.quantity, pos.leverage) == ("ETHUSDT", "SHORT", D("0.5"), 2)
        acct = await gw.account()
        assert (acct.wallet_balance, acct.available_balance, acct.equity) == (D(1000), D(900), D(1005))
        await gw.prepare_symbol("BTCUSDT", leverage=2)  # -4046 "no need to change" is success
        await gw.check_account_mode()
        fapi.hedge = True
        with pytest.raises(HedgeModeEnabled, match="dualSidePosition"):
            await gw.check_account_mode()


def otu(
    cid: str, x: str, status: str, *, o: str = "LIMIT", ot: str = "LIMIT", last: str = "0", **kw: Any
) -> dict[str, Any]:
    body = {
        "s": "BTCUSDT", "c": cid, "S": "SELL", "o": o, "ot": ot, "f": "GTC", "q": "0.010", "p": "0", "ap": "94.9",
        "sp": "95", "x": x, "X": status, "i": 9, "l": last, "z": last, "L": "94.9", "N": "USDT", "n": "0.0004",
        "T": START_MS + 5, "t": 77, "m": False, "R": True, "rp": "-0.05", "ps": "BOTH",
    }  # fmt: skip
    return {"e": "ORDER_TRADE_UPDATE", "E": START_MS + 6, "T": START_MS + 5, "o": body | kw}


def algo(cid: str, status: str, **kw: Any) -> dict[str, Any]:
    body = {"caid": cid, "aid": 3, "at": "CONDITIONAL", "o": "STOP_MARKET", "s": "BTCUSDT", "S": "SELL", "ps": "BOTH",
            "f": "GTC", "q": "0.010", "X": status, "ai": "", "ap": "0", "aq": "0", "act": "0", "tp": "95", "p": "0",
            "wt": "MARK_PRICE", "R": True, "tt": 0, "rm": ""}  # fmt: skip
    return {"e": "ALGO_UPDATE", "T": START_MS + 4, "E": START_MS + 4, "o": body | kw}


class TestEvents:
    async def test_stop_trigger_sequence_funding_and_resync(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        """ALGO NEW → TRIGGERED → child NEW → TRADE → ALGO FINISHED: one fill, `is_stop`, the stop's id."""
        frames = [
            algo("fa-3-S1", "NEW"),
            algo("fa-3-S1", "TRIGGERED", ai="9"),
            otu("fa-3-S1", "NEW", "NEW", o="MARKET", ot="STOP_MARKET"),
            otu("fa-3-S1", "TRADE", "FILLED", o="MARKET", ot="STOP_MARKET", last="0.010"),
            {
                "e": "TRADE_LITE",
                "E": 1,
                "T": 1,
                "s": "BTCUSDT",
                "q": "0.010",
                "p": "0",
                "m": False,
                "c": "fa-3-S1",
                "S": "SELL",
                "L": "94.9",
                "l": "0.010",
                "t": 77,
                "i": 9,
            },
            algo("fa-3-S1", "FINISHED", aq="0.010", ap="94.9"),
            {
                "e": "ACCOUNT_UPDATE",
                "E": START_MS + 8,
                "T": START_MS + 8,
                "a": {
                    "m": "FUNDING_FEE",
                    "S": "BTCUSDT",
                    "B": [{"a": "USDT", "wb": "999.9", "cw": "0", "bc": "-0.1"}],
                    "P": [
                        {
                            "s": "BTCUSDT",
                            "pa": "0",
                            "ep": "0",
                            "up": "0",
                            "mt": "isolated",
                            "iw": "0",
                            "ps": "BOTH",
                        }
                    ],
                },
            },
            otu("fa-3-E1", "NEW", "WEIRD_STATUS"),
        ]
        gw = make(MiniFapi(), nursery, frames)
        await nursery.start(gw.run)
        got: list[GatewayEvent] = [await gw.events().receive() for _ in range(10)]
        assert got[0] == ResyncNeeded(reason="connected")
        updates = [e for e in got if isinstance(e, OrderUpdate)]
        assert [(u.order.status, u.order.is_stop, u.order.client_id) for u in updates] == [
            ("NEW", True, "fa-3-S1"),
            ("TRIGGERED", True, "fa-3-S1"),
            ("NEW", True, "fa-3-S1"),
            ("FILLED", True, "fa-3-S1"),
            ("FILLED", True, "fa-3-S1"),
        ]
        fills = [u for u in updates if u.last_fill_qty > 0]
        assert len(fills) == 1  # TRADE_LITE and ALGO FINISHED never double-count the fill
        (fill,) = fills
        assert (fill.last_fill_price, fill.fee, fill.realized_pnl, fill.order.type) == (
            D("94.9"), D("0.0004"), D("-0.05"), "STOP_MARKET",
        )  # fmt: skip
        funding = [e for e in got if isinstance(e, FundingPaid)]
        assert funding == [FundingPaid(symbol="BTCUSDT", amount=D("-0.1"), ts_ms=START_MS + 8)]
        (changed,) = [e for e in got if isinstance(e, AccountChanged)]
        assert changed.account.wallet_balance == D("999.9")
        # ... and the position it carries, for Execution's check of positions changed outside the bot.
        assert [(e.symbol, e.amount) for e in got if isinstance(e, PositionChanged)] == [("BTCUSDT", D(0))]
        assert isinstance(got[-1], ResyncNeeded)
        assert "WEIRD_STATUS" in got[-1].reason

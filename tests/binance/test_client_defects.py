"""The client's error edges found by driving independent clients against the fake (issue 11, client
defects 1-6): each test is the scenario that went wrong, against small `httpx.MockTransport` fakes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import msgspec
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs
from test_binance_gateway import MiniFapi, make, stop_req
from test_client_rest import (
    ALGO,
    ORDER,
    PLACE_KW,
    START_MS,
    Fake,
    OrderBook,
    err,
    make_client,
    ok,
    qs,
)
from trio_websocket import WebSocketConnection

from futures_actor.binance import errors as E
from futures_actor.binance.binance_gateway import BinanceGateway, MultiAssetsModeEnabled
from futures_actor.binance.models import (
    AlgoOrder,
    AlgoUpdate,
    ExchangeInfo,
    IncomeRow,
    decode_payload,
    usable_symbol_rules,
)
from futures_actor.binance.user_stream import ResyncNeeded, UserStream, UserStreamEvent, decode_user_event
from futures_actor.binance.ws_conn import memory_connector
from futures_actor.core.config import ExchangeConfig

D = Decimal


class TestUnknownOutcomes:
    """408 and non-JSON 5xx/408 on a placement are an unknown outcome: query by client id first."""

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (408, b""),
            (408, b"<html>Request Timeout</html>"),
            (502, b"<html><body>Bad Gateway</body></html>"),
            (504, b"upstream timed out"),
        ],
    )
    async def test_placement_resolved_by_query(
        self, autojump_clock: trio.testing.MockClock, status: int, body: bytes
    ) -> None:
        fake = Fake()
        book = OrderBook(fake)

        def place(r: httpx.Request) -> httpx.Response:
            cid = qs(r)["newClientOrderId"]
            book.orders[cid] = {**ORDER, "clientOrderId": cid, "status": "FILLED", "executedQty": "0.010"}
            return httpx.Response(status, content=body)  # the order filled; the answer got lost

        fake.route("POST", "/fapi/v1/order", place)
        async with make_client(fake) as client:
            order = await client.place_order_resolved(**PLACE_KW)
        assert order.status == "FILLED"
        assert fake.count("POST", "/fapi/v1/order") == 1
        assert fake.count("GET", "/fapi/v1/order") == 1

    @pytest.mark.parametrize("status", [408, 500, 502, 503])
    def test_non_json_body_is_unknown_outcome(self, status: int) -> None:
        exc = E.error_from_response(status, b"<html>oops</html>", {}, endpoint="POST /fapi/v1/order")
        assert isinstance(exc, E.UnknownOrderStatus)
        assert exc.http_status == status

    def test_408_with_json_body_is_unknown_outcome(self) -> None:
        exc = E.error_from_response(408, b'{"code":-1007,"msg":"Timeout"}', {}, endpoint="x")
        assert isinstance(exc, E.UnknownOrderStatus)

    def test_json_5xx_service_unavailable_stays_a_failure(self) -> None:
        exc = E.error_from_response(503, b'{"code":-1001,"msg":"Service Unavailable."}', {}, endpoint="x")
        assert type(exc) is E.ServerError

    async def test_get_retried_on_unknown_error_503(self, autojump_clock: trio.testing.MockClock) -> None:
        """A 503 "Unknown error" on a read is retried (reads are idempotent)."""
        fake = Fake()
        answers = [
            httpx.Response(
                503,
                content=b'{"code":-1000,"msg":"Unknown error, please check your request or try again later."}',
            ),
            ok([]),
        ]
        fake.route("GET", "/fapi/v1/openOrders", lambda r: answers.pop(0))
        async with make_client(fake) as client:
            assert await client.open_orders("BTCUSDT") == []
        assert fake.count("GET", "/fapi/v1/openOrders") == 2


BAN_MSG = "Way too many requests; IP(127.0.0.1) banned until {until}. Please use the websocket for live updates to avoid bans."


class TestIpBan:
    """A 418 blocks every request until the ban end named in the -1003 message."""

    def test_ban_end_parsed_from_message(self) -> None:
        until = START_MS + 3 * 86_400_000
        body = json.dumps({"code": -1003, "msg": BAN_MSG.format(until=until)}).encode()
        exc = E.error_from_response(418, body, {}, endpoint="GET /fapi/v1/klines", now_ms=START_MS)
        assert isinstance(exc, E.IpBanned)
        assert exc.until_ms == until

    def test_retry_after_longer_than_message_wins(self) -> None:
        body = json.dumps({"code": -1003, "msg": BAN_MSG.format(until=START_MS + 1000)}).encode()
        exc = E.error_from_response(418, body, {"retry-after": "600"}, endpoint="x", now_ms=START_MS)
        assert isinstance(exc, E.IpBanned)
        assert exc.until_ms == START_MS + 600_000

    def test_banned_message_on_429_is_a_ban(self) -> None:
        until = START_MS + 7_200_000
        body = json.dumps({"code": -1003, "msg": BAN_MSG.format(until=until)}).encode()
        exc = E.error_from_response(429, body, {}, endpoint="x", now_ms=START_MS)
        assert isinstance(exc, E.IpBanned)
        assert exc.until_ms == until

    async def test_nothing_sent_before_ban_end(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        until = START_MS + 2 * 3_600_000  # two hours, far beyond the 60 s default
        sent_at: list[int] = []
        answers = [
            httpx.Response(
                418, content=json.dumps({"code": -1003, "msg": BAN_MSG.format(until=until)}).encode()
            ),
        ]

        def handler(r: httpx.Request) -> httpx.Response:
            sent_at.append(fake.server_ms())
            return answers.pop(0) if answers else ok([])

        fake.route("GET", "/fapi/v1/openOrders", handler)
        bans: list[int] = []
        async with make_client(fake, on_ban=bans.append) as client:
            with pytest.raises(E.IpBanned):
                await client.open_orders("BTCUSDT")
            await client.open_orders("BTCUSDT")
        assert bans == [until]
        assert len(sent_at) == 2
        assert sent_at[1] >= until


class TestUserStreamLiveness:
    """The user-data stream detects a half-open connection (ping without pong, silence) and reconnects."""

    async def test_no_pong_reconnects_with_resync(self, autojump_clock: trio.testing.MockClock) -> None:
        connects: list[float] = []

        async def server(url: str, ws: WebSocketConnection) -> None:
            connects.append(trio.current_time())
            if len(connects) == 1:
                ws._reader_running = False  # type: ignore[attr-defined]  # pings go unanswered
            await trio.sleep_forever()

        class Keys:
            async def create_listen_key(self) -> str:
                return "lk"

            async def keepalive_listen_key(self) -> None:
                return None

        send, receive = trio.open_memory_channel[UserStreamEvent](10)
        cfg = ExchangeConfig(ws_ping_interval_seconds=10.0)
        async with trio.open_nursery() as nursery:
            stream = UserStream(
                cfg=cfg,
                rest=Keys(),
                ws_base="wss://x",
                send=send,
                connector=memory_connector(nursery, server),
            )
            await nursery.start(stream.run)
            first = await receive.receive()
            second = await receive.receive()
            nursery.cancel_scope.cancel()
        assert first == ResyncNeeded(reason="connected")
        assert isinstance(second, ResyncNeeded)
        assert second.reason == "reconnected"
        assert len(connects) == 2
        assert connects[1] - connects[0] <= 3 * cfg.ws_ping_interval_seconds

    async def test_idle_timeout_when_nothing_is_heard(self, autojump_clock: trio.testing.MockClock) -> None:
        """Pings stuck in a full send buffer never time out on their own: the idle timer catches it."""
        connects: list[float] = []

        async def server(url: str, ws: WebSocketConnection) -> None:
            connects.append(trio.current_time())
            await trio.sleep_forever()

        class Keys:
            async def create_listen_key(self) -> str:
                return "lk"

            async def keepalive_listen_key(self) -> None:
                return None

        send, receive = trio.open_memory_channel[UserStreamEvent](10)
        cfg = ExchangeConfig(ws_ping_interval_seconds=10.0, user_stream_idle_timeout_seconds=25.0)
        async with trio.open_nursery() as nursery:
            stream = UserStream(
                cfg=cfg,
                rest=Keys(),
                ws_base="wss://x",
                send=send,
                connector=memory_connector(nursery, server),
            )

            async def stuck_pinger(ws: WebSocketConnection, heard: object) -> None:
                await trio.sleep_forever()  # a ping stuck in a full send buffer never times out

            stream._pinger = stuck_pinger  # type: ignore[method-assign,assignment]
            await nursery.start(stream.run)
            await receive.receive()
            second = await receive.receive()
            nursery.cancel_scope.cancel()
        assert isinstance(second, ResyncNeeded)
        assert second.reason == "reconnected"
        assert 25.0 <= connects[1] - connects[0] <= 40.0


class TestLenientFieldTypes:
    """Every documented JSON type (number, string, null) is accepted for the loosely typed fields."""

    @pytest.mark.parametrize(
        ("raw", "expected"), [(123456, 123456), ("123456", 123456), ("", None), (None, None)]
    )
    def test_actual_order_id(self, raw: Any, expected: int | None) -> None:
        body = json.dumps({**ALGO, "actualOrderId": raw}).encode()
        algo = decode_payload(AlgoOrder, body, endpoint="GET /fapi/v1/algoOrder")
        assert algo.actual_order_id == expected

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [("101.5", D("101.5")), (101.5, D("101.5")), (100, D(100)), ("", None), (None, None)],
    )
    def test_activate_price_and_callback_rate(self, raw: Any, expected: Decimal | None) -> None:
        body = json.dumps({**ALGO, "activatePrice": raw, "callbackRate": raw}).encode()
        algo = decode_payload(AlgoOrder, body, endpoint="GET /fapi/v1/algoOrder")
        assert algo.activate_price == expected
        assert algo.callback_rate == expected

    def test_open_algo_orders_with_numbers(self) -> None:
        rows = [
            {**ALGO, "actualOrderId": 5, "activatePrice": 1.5, "callbackRate": 1},
            {**ALGO, "actualOrderId": None},
        ]
        parsed = decode_payload(list[AlgoOrder], json.dumps(rows).encode(), endpoint="x")
        assert [a.actual_order_id for a in parsed] == [5, None]

    @pytest.mark.parametrize(("raw", "expected"), [(987, 987), ("987", 987), ("", None), (None, None)])
    def test_algo_update_actual_order_id(self, raw: Any, expected: int | None) -> None:
        frame = {
            "e": "ALGO_UPDATE",
            "E": 1,
            "T": 1,
            "o": {
                "caid": "c",
                "aid": 1,
                "o": "STOP_MARKET",
                "s": "BTCUSDT",
                "S": "SELL",
                "X": "TRIGGERED",
                "ai": raw,
            },
        }
        event = decode_user_event(json.dumps(frame))
        assert isinstance(event, AlgoUpdate)
        assert event.order.actual_order_id == expected

    @pytest.mark.parametrize(("raw", "expected"), [(55, "55"), ("55", "55"), ("", ""), (None, "")])
    def test_income_trade_id(self, raw: Any, expected: str) -> None:
        row = {
            "symbol": "BTCUSDT",
            "incomeType": "REALIZED_PNL",
            "income": "1.2",
            "asset": "USDT",
            "time": 1,
            "tranId": 9,
            "tradeId": raw,
        }
        (parsed,) = decode_payload(list[IncomeRow], json.dumps([row]).encode(), endpoint="x")
        assert parsed.trade_id == expected


class TestCancelTriggeringStop:
    """Cancelling a stop in the middle of its trigger: -4117 is waited out, the child found by actualOrderId."""

    async def test_triggering_then_child_cancelled_by_actual_order_id(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        fapi = MiniFapi()
        gw = make(fapi, nursery, [])
        await gw.place_stop(stop_req("fa-9-S1"))
        a = fapi.algos["fa-9-S1"]
        a["algoStatus"] = "TRIGGERING"
        # The child lives in the matching engine under its own client id (not the algo's).
        child = {
            "orderId": 777,
            "symbol": "BTCUSDT",
            "status": "NEW",
            "clientOrderId": "autogen-child-1",
            "price": "0",
            "origQty": "0.010",
            "executedQty": "0",
            "type": "MARKET",
            "origType": "STOP_MARKET",
            "side": "SELL",
            "reduceOnly": True,
            "updateTime": 1,
        }
        deletes: list[dict[str, str]] = []
        inner = fapi.__call__

        def routed(request: httpx.Request) -> httpx.Response:
            p = dict(parse_qsl(request.url.query.decode()))
            key = (request.method, request.url.path)
            if key == ("DELETE", "/fapi/v1/algoOrder"):
                # The trigger completes while we are told to try again later.
                a["algoStatus"] = "TRIGGERED"
                a["actualOrderId"] = "777"
                return err(400, -4117, "Stop order is in triggering process. Please try again later.")
            if key == ("DELETE", "/fapi/v1/order"):
                deletes.append(p)
                if p.get("orderId") == "777":
                    return ok({**child, "status": "CANCELED"})
                return err(400, -2011, "Unknown order sent.")
            return inner(request)

        gw._rest._http._transport = httpx.MockTransport(routed)  # type: ignore[attr-defined]
        state = await gw.cancel_stop("BTCUSDT", "fa-9-S1")
        assert state is not None
        assert state.status == "CANCELED"
        assert state.client_id == "fa-9-S1"
        assert state.is_stop
        assert deletes == [{**deletes[0], "orderId": "777"}]
        assert "origClientOrderId" not in deletes[0]

    def test_4117_is_its_own_error(self) -> None:
        exc = E.error_from_response(
            400,
            b'{"code":-4117,"msg":"Stop order is in triggering process. Please try again later."}',
            {},
            endpoint="x",
        )
        assert isinstance(exc, E.StopTriggering)


class TestOrderCountLimits:
    """Orders are paced against both the 10 s and the 1 min order counts, local and from the headers."""

    async def test_minute_budget_paces_orders(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        sent: list[float] = []

        def place(r: httpx.Request) -> httpx.Response:
            sent.append(trio.current_time())
            return ok({**ORDER, "clientOrderId": qs(r)["newClientOrderId"]})

        fake.route("POST", "/fapi/v1/order", place)
        cfg = ExchangeConfig(order_limit_per_10s=1000, order_limit_per_minute=100, weight_budget_pct=0.5)
        async with make_client(fake, cfg=cfg) as client:
            for i in range(60):
                await client.place_order(**{**PLACE_KW, "client_order_id": f"fa-x-E{i}"})
        first_minute = [t for t in sent if t < sent[0] + 60.0 - 1e-9]
        assert len(first_minute) <= 50
        assert len(sent) == 60

    async def test_minute_header_from_other_sessions_counts(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        fake = Fake()
        sent: list[float] = []

        def place(r: httpx.Request) -> httpx.Response:
            sent.append(trio.current_time())
            return ok(
                {**ORDER, "clientOrderId": qs(r)["newClientOrderId"]},
                headers={"X-MBX-ORDER-COUNT-10S": "1", "X-MBX-ORDER-COUNT-1M": "1190"},
            )

        fake.route("POST", "/fapi/v1/order", place)
        async with make_client(fake) as client:
            await client.place_order(**PLACE_KW)
            await client.place_order(**{**PLACE_KW, "client_order_id": "fa-x-E2"})
        assert sent[0] < 60.0 <= sent[1]  # the second waited for the next server minute


class TestMultiAssetsMode:
    """Multi-Assets mode refuses isolated margin: checked at start like the position mode."""

    async def test_multi_assets_refused(
        self, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
    ) -> None:
        fapi = MiniFapi()
        gw: BinanceGateway = make(fapi, nursery, [])
        await gw.check_account_mode()
        fapi.multi_assets = True
        with pytest.raises(MultiAssetsModeEnabled, match="multiAssetsMargin"):
            await gw.check_account_mode()


class TestUniverseRules:
    """One broken exchangeInfo symbol is skipped and logged, never aborting the rest."""

    def test_symbol_without_filters_skipped(self) -> None:
        info = {
            "symbols": [
                {
                    "symbol": "GOODUSDT",
                    "status": "TRADING",
                    "contractType": "PERPETUAL",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "tickSize": "0.01",
                            "minPrice": "0.01",
                            "maxPrice": "1000",
                        },
                        {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "100"},
                    ],
                },
                {"symbol": "BROKENUSDT", "status": "TRADING", "contractType": "PERPETUAL", "filters": []},
            ]
        }
        parsed = msgspec.json.decode(json.dumps(info).encode(), type=ExchangeInfo)
        with capture_logs() as logs:
            usable = usable_symbol_rules(parsed.symbols)
        assert [s.symbol for s, _ in usable] == ["GOODUSDT"]
        assert any(e["event"] == "exchange_info_symbol_skipped" and e["symbol"] == "BROKENUSDT" for e in logs)

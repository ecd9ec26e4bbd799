"""The REST client against small `httpx.MockTransport` handlers: signing, time sync, errors, retries,
placement resolution, endpoint decoding."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import stamina
import structlog
import structlog.testing
import trio
import trio.testing

from futures_actor.binance import errors as E
from futures_actor.binance.auth import SECURITY_EXTENSION, BinanceAuth, hmac_signature
from futures_actor.binance.rest import BinanceRestClient, kline_weight
from futures_actor.core.config import ExchangeConfig
from futures_actor.core.secrets import Secret

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"  # bundled recorded data
PAYLOADS = SAMPLE / "binance-payloads"
KEY = "test-api-key"
SECRET = "test-secret-value-0123456789"
START_MS = 1_750_000_020_000  # a whole minute


class TrioWallClock:
    """Wall time that follows trio's (mock) clock."""

    def __init__(self, start_ms: int = START_MS, skew_ms: int = 0) -> None:
        self.start_ms = start_ms + skew_ms

    def now_ms(self) -> int:
        return self.start_ms + int(trio.current_time() * 1000)


Handler = Callable[[httpx.Request], httpx.Response]


class Fake:
    """A tiny fapi: routes by (method, path), verifies signatures, records requests."""

    def __init__(self, *, server_offset_ms: int = 0) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[httpx.Request] = []
        self.server_offset_ms = server_offset_ms
        self.route("GET", "/fapi/v1/time", lambda r: ok({"serverTime": self.server_ms()}))

    def server_ms(self) -> int:
        return START_MS + int(trio.current_time() * 1000) + self.server_offset_ms

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path == path)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        query = request.url.query
        if b"signature=" in query:
            signed, _, sig = query.rpartition(b"&signature=")
            expected = hmac.new(SECRET.encode(), signed + request.content, hashlib.sha256).hexdigest()
            if sig.decode() != expected:
                return err(400, -1022, "Signature for this request is not valid.")
            if request.headers.get("X-MBX-APIKEY") != KEY:
                return err(401, -2015, "Invalid API-key")
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return err(404, -1121, f"no route {request.method} {request.url.path}")
        return handler(request)


def ok(payload: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(payload).encode(), headers=headers)


def err(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=json.dumps({"code": code, "msg": msg}).encode(), headers=headers)


def qs(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.url.query.decode()))


def make_client(fake: Fake, *, cfg: ExchangeConfig | None = None, **kw: Any) -> BinanceRestClient:
    return BinanceRestClient(
        cfg=cfg or ExchangeConfig(),
        wall_clock=TrioWallClock(),
        api_key=Secret(KEY),
        api_secret=Secret(SECRET),
        transport=httpx.MockTransport(fake),
        base_url="https://fapi.test",
        **kw,
    )


ORDER = {
    "orderId": 42,
    "symbol": "BTCUSDT",
    "status": "NEW",
    "clientOrderId": "fa-abc-E1",
    "price": "100.0",
    "origQty": "0.010",
    "executedQty": "0",
    "timeInForce": "GTC",
    "type": "LIMIT",
    "side": "BUY",
    "updateTime": 1,
}
ALGO = {
    "algoId": 7,
    "clientAlgoId": "fa-abc-S1",
    "algoType": "CONDITIONAL",
    "orderType": "STOP_MARKET",
    "symbol": "BTCUSDT",
    "side": "SELL",
    "algoStatus": "NEW",
    "triggerPrice": "90.0",
    "closePosition": True,
    "workingType": "MARK_PRICE",
    "activatePrice": "",
    "callbackRate": "",
}


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(autouse=True)
def _stamina_testing() -> Any:
    with stamina.set_testing(True, attempts=3):
        yield


class TestSigning:
    """HMAC-SHA256 signing as an httpx.Auth."""

    def test_official_vector(self) -> None:
        """The signature example from Binance's General Info page."""
        secret = Secret("2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9")
        payload = (
            b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
            b"&recvWindow=5000&timestamp=1591702613943"
        )
        assert (
            hmac_signature(secret, payload)
            == "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
        )

    def test_body_is_signed_after_query(self) -> None:
        """totalParams = query + body with no separator; signature goes last in the query."""
        auth = BinanceAuth(
            api_key=Secret(KEY), api_secret=Secret(SECRET), recv_window_ms=5000, timestamp_ms=lambda: 7
        )
        req = httpx.Request(
            "POST",
            "https://x/fapi/v1/order?symbol=BTCUSDT",
            data={"quantity": "1"},
            extensions={SECURITY_EXTENSION: "SIGNED"},
        )
        flow = auth.sync_auth_flow(req)
        signed = next(flow)
        query = signed.url.query
        assert query.startswith(b"symbol=BTCUSDT&timestamp=7&recvWindow=5000&signature=")
        sig = query.rpartition(b"&signature=")[2].decode()
        expected = hmac.new(
            SECRET.encode(), b"symbol=BTCUSDT&timestamp=7&recvWindow=5000quantity=1", hashlib.sha256
        )
        assert sig == expected.hexdigest()
        assert signed.headers["X-MBX-APIKEY"] == KEY

    async def test_signed_request_carries_server_timestamp_and_recv_window(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Signed GETs carry timestamp (server time), recvWindow from config, signature last, API key."""
        fake = Fake(server_offset_ms=3000)
        fake.route("GET", "/fapi/v3/balance", lambda r: ok([]))
        async with make_client(fake, cfg=ExchangeConfig(recv_window_ms=4000)) as client:
            await client.sync_time()
            assert client.offset_ms == 3000
            await client.balance()
        req = fake.requests[-1]
        q = qs(req)
        assert q["recvWindow"] == "4000"
        assert int(q["timestamp"]) == fake.server_ms()
        assert list(q)[-1] == "signature"
        assert req.headers["X-MBX-APIKEY"] == KEY

    async def test_public_and_key_only_requests(self, autojump_clock: trio.testing.MockClock) -> None:
        """Public requests carry no key; listenKey requests carry the key but no signature."""
        fake = Fake()
        fake.route("POST", "/fapi/v1/listenKey", lambda r: ok({"listenKey": "LK1"}))
        async with make_client(fake) as client:
            await client.server_time()
            assert await client.create_listen_key() == "LK1"
        public, keyed = fake.requests
        assert "X-MBX-APIKEY" not in public.headers
        assert keyed.headers["X-MBX-APIKEY"] == KEY
        assert b"signature" not in keyed.url.query

    async def test_secret_never_leaks(self, autojump_clock: trio.testing.MockClock) -> None:
        """The secret is in no repr and no exception text."""
        fake = Fake()
        fake.route(
            "GET", "/fapi/v3/balance", lambda r: err(400, -1022, "Signature for this request is not valid.")
        )
        async with make_client(fake) as client:
            with pytest.raises(E.InvalidSignature) as info:
                await client.balance()
            texts = [repr(client), str(info.value), repr(info.value), repr(client._http.auth)]
        assert not any(SECRET in t for t in texts)


class TestTimeSync:
    """Server-time offset: measured at start, refreshed periodically and on -1021."""

    async def test_resync_and_retry_on_1021(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake(server_offset_ms=0)
        calls = {"n": 0}

        def balance(r: httpx.Request) -> httpx.Response:
            calls["n"] += 1
            if abs(int(qs(r)["timestamp"]) - fake.server_ms()) > 1000:
                return err(400, -1021, "Timestamp for this request is outside of the recvWindow.")
            return ok([{"asset": "USDT", "balance": "10", "availableBalance": "9"}])

        fake.route("GET", "/fapi/v3/balance", balance)
        async with make_client(fake) as client:
            await client.sync_time()
            fake.server_offset_ms = 60_000  # the server clock jumps
            rows = await client.balance()
        assert rows[0].balance == Decimal("10")
        assert calls["n"] == 2
        assert client.offset_ms == 60_000

    async def test_post_retried_once_on_1021(self, autojump_clock: trio.testing.MockClock) -> None:
        """-1021 means not executed, so even a placement is retried after the resync."""
        fake = Fake()
        answers = [err(400, -1021, "Timestamp outside recvWindow"), ok(ORDER)]
        fake.route("POST", "/fapi/v1/order", lambda r: answers.pop(0))
        async with make_client(fake) as client:
            order = await client.place_order(
                symbol="BTCUSDT",
                side="BUY",
                order_type="LIMIT",
                client_order_id="fa-abc-E1",
                quantity=Decimal("0.010"),
                price=Decimal("100.0"),
                time_in_force="GTC",
            )
        assert order.order_id == 42
        assert fake.count("GET", "/fapi/v1/time") == 1

    async def test_periodic_refresh(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake(server_offset_ms=100)
        cfg = ExchangeConfig(time_sync_interval_seconds=30.0)
        async with make_client(fake, cfg=cfg) as client, trio.open_nursery() as nursery:
            await nursery.start(client.run_time_sync)
            assert client.offset_ms == 100
            fake.server_offset_ms = 900
            await trio.sleep(31)
            assert client.offset_ms == 900
            assert fake.count("GET", "/fapi/v1/time") == 2
            nursery.cancel_scope.cancel()


class TestErrorMapping:
    """Binance codes and HTTP statuses map to the typed tree with code, endpoint and client id."""

    @pytest.mark.parametrize(
        ("status", "code", "cls"),
        [
            (400, -1021, E.TimestampOutOfWindow),
            (400, -1022, E.InvalidSignature),
            (400, -2019, E.InsufficientMargin),
            (400, -2021, E.WouldTriggerImmediately),
            (400, -2022, E.ReduceOnlyRejected),
            (400, -4118, E.ReduceOnlyRejected),
            (400, -4164, E.MinNotional),
            (400, -1111, E.Precision),
            (400, -4014, E.Precision),
            (400, -5022, E.PostOnlyRejected),
            (400, -4116, E.DuplicateClientId),
            (400, -2011, E.UnknownOrder),
            (400, -2013, E.UnknownOrder),
            (400, -4120, E.OrderTypeNotSupported),
            (400, -1125, E.ListenKeyExpired),
            (400, -1007, E.UnknownOrderStatus),
            (400, -1006, E.UnknownOrderStatus),
            (503, -1008, E.Throttled),
            (400, -1121, E.ApiError),
            (502, 0, E.ServerError),
            (401, -2015, E.AuthError),
        ],
    )
    def test_code_to_class(self, status: int, code: int, cls: type[E.BinanceError]) -> None:
        body = json.dumps({"code": code, "msg": "m"}).encode()
        exc = E.error_from_response(status, body, {}, endpoint="POST /fapi/v1/order", client_id="cid-1")
        assert type(exc) is cls
        assert (exc.code, exc.endpoint, exc.client_id, exc.http_status) == (
            code,
            "POST /fapi/v1/order",
            "cid-1",
            status,
        )
        assert "cid-1" in str(exc)
        assert "POST /fapi/v1/order" in str(exc)

    def test_503_by_message(self) -> None:
        unknown = E.error_from_response(503, b'{"code":-1000,"msg":"x"}', {}, endpoint="e")
        assert isinstance(unknown, E.UnknownOrderStatus)
        text_unknown = E.error_from_response(
            503, b"Unknown error, please check your request or try again later.", {}, endpoint="e"
        )
        assert isinstance(text_unknown, E.UnknownOrderStatus)
        unavailable = E.error_from_response(503, b"Service Unavailable.", {}, endpoint="e")
        assert type(unavailable) is E.ServerError

    def test_429_and_418(self) -> None:
        limited = E.error_from_response(429, b"{}", {"retry-after": "7"}, endpoint="e")
        assert isinstance(limited, E.RateLimited)
        assert limited.retry_after_s == 7.0
        banned = E.error_from_response(418, b"{}", {"retry-after": "120"}, endpoint="e", now_ms=1_000)
        assert isinstance(banned, E.IpBanned)
        assert banned.until_ms == 121_000


class TestRetries:
    """Idempotent requests are retried within max_retry_attempts; placements are not."""

    async def test_get_retried_on_server_error(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        answers = [
            err(500, -1001, "Internal error"),
            err(503, 0, "Service Unavailable."),
            ok({"serverTime": 5}),
        ]
        fake.route("GET", "/fapi/v1/time", lambda r: answers.pop(0))
        async with make_client(fake) as client:
            assert await client.server_time() == 5

    async def test_get_gives_up(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        fake.route("GET", "/fapi/v1/time", lambda r: err(500, -1001, "Internal error"))
        async with make_client(fake) as client:
            with pytest.raises(E.ServerError):
                await client.server_time()
        assert fake.count("GET", "/fapi/v1/time") == 3

    async def test_placement_not_retried_on_5xx(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        fake.route("POST", "/fapi/v1/order", lambda r: err(500, 0, "boom"))
        async with make_client(fake) as client:
            with pytest.raises(E.ServerError):
                await client.place_order(
                    symbol="BTCUSDT",
                    side="BUY",
                    order_type="MARKET",
                    client_order_id="c1",
                    quantity=Decimal("1"),
                )
        assert fake.count("POST", "/fapi/v1/order") == 1

    async def test_definite_rejection_not_retried(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        fake.route("POST", "/fapi/v1/order", lambda r: err(400, -2019, "Margin is insufficient."))
        async with make_client(fake) as client:
            with pytest.raises(E.InsufficientMargin) as info:
                await client.place_order_resolved(
                    symbol="BTCUSDT",
                    side="BUY",
                    order_type="MARKET",
                    client_order_id="c1",
                    quantity=Decimal("1"),
                )
        assert info.value.client_id == "c1"
        assert fake.count("POST", "/fapi/v1/order") == 1
        assert fake.count("GET", "/fapi/v1/order") == 0

    async def test_cancel_of_gone_order_is_success(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        fake.route("DELETE", "/fapi/v1/order", lambda r: err(400, -2011, "Unknown order sent."))
        fake.route("DELETE", "/fapi/v1/algoOrder", lambda r: err(400, -2013, "Order does not exist."))
        async with make_client(fake) as client:
            assert await client.cancel_order("BTCUSDT", orig_client_order_id="c1") is None
            assert await client.cancel_algo_order(client_algo_id="c2") is None

    async def test_no_need_to_change_is_success(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        fake.route("POST", "/fapi/v1/marginType", lambda r: err(400, -4046, "No need to change margin type."))
        fake.route(
            "POST",
            "/fapi/v1/positionSide/dual",
            lambda r: err(400, -4059, "No need to change position side."),
        )
        async with make_client(fake) as client:
            await client.set_margin_type("BTCUSDT", "ISOLATED")
            await client.set_position_mode(hedge=False)
        assert qs(fake.requests[0])["marginType"] == "ISOLATED"
        assert qs(fake.requests[1])["dualSidePosition"] == "false"

    async def test_other_margin_type_error_raises(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        fake.route("POST", "/fapi/v1/marginType", lambda r: err(400, -4048, "position exists"))
        async with make_client(fake) as client:
            with pytest.raises(E.ApiError) as info:
                await client.set_margin_type("BTCUSDT", "ISOLATED")
        assert info.value.code == -4048


class OrderBook:
    """Fake order storage keyed by client id, with an injectable placement fault."""

    def __init__(self, fake: Fake, *, algo: bool = False) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.faults: list[str] = []
        path = "/fapi/v1/algoOrder" if algo else "/fapi/v1/order"
        self.id_param = "clientAlgoId" if algo else "newClientOrderId"
        self.query_param = "clientAlgoId" if algo else "origClientOrderId"
        self.template = ALGO if algo else ORDER
        self.id_field = "clientAlgoId" if algo else "clientOrderId"
        fake.route("POST", path, self.place)
        fake.route("GET", path, self.query)

    def place(self, r: httpx.Request) -> httpx.Response:
        cid = qs(r)[self.id_param]
        fault = self.faults.pop(0) if self.faults else "none"
        if fault == "lost":  # the request never reached the engine, answer is unknown
            return err(400, -1007, "Timeout waiting for response from backend server.")
        if cid in self.orders:
            return err(400, -4116, "ClientOrderId is duplicated.")
        self.orders[cid] = {**self.template, self.id_field: cid}
        if fault == "timeout":
            raise httpx.ReadTimeout("read timed out", request=r)
        if fault == "unknown503":
            return httpx.Response(
                503, content=b'{"code":-1000,"msg":"Unknown error, please check your request"}'
            )
        return ok(self.orders[cid])

    def query(self, r: httpx.Request) -> httpx.Response:
        cid = qs(r)[self.query_param]
        if cid not in self.orders:
            return err(400, -2013, "Order does not exist.")
        return ok(self.orders[cid])


PLACE_KW: dict[str, Any] = dict(
    symbol="BTCUSDT",
    side="BUY",
    order_type="LIMIT",
    client_order_id="fa-abc-E1",
    quantity=Decimal("0.010"),
    price=Decimal("100.0"),
    time_in_force="GTC",
)
ALGO_KW: dict[str, Any] = dict(
    symbol="BTCUSDT",
    side="SELL",
    order_type="STOP_MARKET",
    client_algo_id="fa-abc-S1",
    trigger_price=Decimal("90.0"),
    close_position=True,
    working_type="MARK_PRICE",
)


class TestPlacementResolution:
    """An unknown placement outcome is resolved by client id before anything is re-sent."""

    async def test_timeout_after_accept_resolved_by_query(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        fake = Fake()
        book = OrderBook(fake)
        book.faults = ["timeout"]
        async with make_client(fake) as client:
            order = await client.place_order_resolved(**PLACE_KW)
        assert order.client_order_id == "fa-abc-E1"
        assert fake.count("POST", "/fapi/v1/order") == 1
        assert qs(fake.requests[-1])["origClientOrderId"] == "fa-abc-E1"

    async def test_lost_order_is_resent_after_query_proves_absence(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        fake = Fake()
        book = OrderBook(fake)
        book.faults = ["lost"]
        async with make_client(fake) as client:
            order = await client.place_order_resolved(**PLACE_KW)
        assert order.order_id == 42
        assert len(book.orders) == 1
        methods = [(r.method, r.url.path) for r in fake.requests]
        assert methods == [("POST", "/fapi/v1/order"), ("GET", "/fapi/v1/order"), ("POST", "/fapi/v1/order")]

    async def test_duplicate_means_it_exists(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        book = OrderBook(fake)
        book.orders["fa-abc-E1"] = {**ORDER, "orderId": 99}
        async with make_client(fake) as client:
            order = await client.place_order_resolved(**PLACE_KW)
        assert order.order_id == 99
        assert len(book.orders) == 1

    async def test_algo_unknown_503_resolved_by_client_algo_id(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        fake = Fake()
        book = OrderBook(fake, algo=True)
        book.faults = ["unknown503"]
        async with make_client(fake) as client:
            algo = await client.place_algo_order_resolved(**ALGO_KW)
        assert algo.client_algo_id == "fa-abc-S1"
        assert algo.close_position
        assert fake.count("POST", "/fapi/v1/algoOrder") == 1
        sent = qs(fake.requests[0])
        assert sent["algoType"] == "CONDITIONAL"
        assert sent["type"] == "STOP_MARKET"
        assert sent["triggerPrice"] == "90.0"
        assert sent["closePosition"] == "true"
        assert "quantity" not in sent
        assert "reduceOnly" not in sent

    async def test_gives_up_after_bounded_attempts(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        book = OrderBook(fake)
        book.faults = ["lost"] * 10
        async with make_client(fake, cfg=ExchangeConfig(max_retry_attempts=2)) as client:
            with pytest.raises(E.UnknownOrderStatus):
                await client.place_order_resolved(**PLACE_KW)
        assert fake.count("POST", "/fapi/v1/order") == 2


class TestRateLimits:
    """Weight pacing, 429 Retry-After and 418 bans."""

    async def test_backfill_200_symbols_never_gets_429(self, autojump_clock: trio.testing.MockClock) -> None:
        """A handler enforcing 2400 weight per server minute never answers 429 to a 200-symbol backfill."""
        fake = Fake()
        state = {"minute": -1, "used": 0, "429": 0}

        def klines(r: httpx.Request) -> httpx.Response:
            minute = fake.server_ms() // 60_000
            if minute != state["minute"]:
                state["minute"], state["used"] = minute, 0
            state["used"] += kline_weight(int(qs(r)["limit"]))
            headers = {"X-MBX-USED-WEIGHT-1M": str(state["used"])}
            if state["used"] > 2400:
                state["429"] += 1
                return err(429, -1003, "Too many requests", {"Retry-After": "10"})
            start = int(qs(r)["startTime"])
            return ok([[start, "1", "1", "1", "1", "1", start + 299_999, "1", 1, "0", "0", "0"]], headers)

        fake.route("GET", "/fapi/v1/klines", klines)
        async with make_client(fake) as client:
            t0 = trio.current_time()
            for i in range(200):
                rows = await client.klines(f"S{i}USDT", "5m", start_ms=0, limit=1500)
                assert len(rows) == 1
            elapsed = trio.current_time() - t0
        assert state["429"] == 0
        assert client.limiter.waits >= 1
        # 200 x 10 weight at a 1680/min budget needs the next minute, and no more than two.
        assert 0 < elapsed <= 120

    async def test_headers_from_other_users_of_the_ip_count(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        fake = Fake()
        fake.route("GET", "/fapi/v1/time", lambda r: ok({"serverTime": 1}, {"X-MBX-USED-WEIGHT-1M": "1680"}))
        async with make_client(fake) as client:
            await client.server_time()
            assert client.limiter.used_weight == 1680
            t0 = trio.current_time()
            with structlog.testing.capture_logs() as logs:
                await client.server_time()
            assert trio.current_time() - t0 > 0  # had to wait for the next minute
        # ... and said so, once, with the figures (a silent wait of up to a minute looks like a hang).
        [wait] = [e for e in logs if e["event"] == "binance_budget_wait"]
        assert (wait["budget"], wait["used"], wait["limit"]) == ("weight_1m", 1680, 1680)
        assert 0 < wait["wait_s"] <= 60

    async def test_429_waits_retry_after(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        times: list[float] = []

        def handler(r: httpx.Request) -> httpx.Response:
            times.append(trio.current_time())
            if len(times) == 1:
                return err(429, -1003, "Too many requests", {"Retry-After": "7"})
            return ok({"serverTime": 1})

        fake.route("GET", "/fapi/v1/time", handler)
        async with make_client(fake) as client:
            assert await client.server_time() == 1
        assert times[1] - times[0] >= 7

    async def test_418_stops_all_requests_and_reports(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        bans: list[int] = []
        times: list[float] = []

        def handler(r: httpx.Request) -> httpx.Response:
            times.append(trio.current_time())
            if len(times) == 1:
                return err(418, -1003, "Way too many requests; IP banned", {"Retry-After": "120"})
            return ok({"serverTime": 1})

        fake.route("GET", "/fapi/v1/time", handler)
        async with make_client(fake, on_ban=bans.append) as client:
            with pytest.raises(E.IpBanned) as info:
                await client.server_time()
            assert bans == [info.value.until_ms]
            assert client.limiter.banned_until_ms == info.value.until_ms
            await client.server_time()  # waits for the ban to end before sending
        assert times[1] - times[0] >= 120


def _load(name: str) -> bytes:
    """A recorded REST response; the mainnet exchangeInfo sits at the sample's top (the replay reads it)."""
    for directory in (PAYLOADS / "rest", SAMPLE):
        if (directory / name).is_file():
            return (directory / name).read_bytes()
    raise FileNotFoundError(f"{name}: no such recorded payload under {SAMPLE}")


class TestEndpoints:
    """Every endpoint sends the right request and decodes real recorded responses."""

    async def test_exchange_info_to_symbol_rules(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        fake.route(
            "GET",
            "/fapi/v1/exchangeInfo",
            lambda r: httpx.Response(200, content=_load("exchangeInfo_mainnet_2024-10-02.json")),
        )
        async with make_client(fake) as client:
            rules = await client.symbol_rules()
        btc = rules["BTCUSDT"]
        assert (btc.tick_size, btc.step_size, btc.min_qty) == (
            Decimal("0.10"),
            Decimal("0.001"),
            Decimal("0.001"),
        )
        assert (btc.min_notional, btc.multiplier_up, btc.multiplier_down) == (
            Decimal(100),
            Decimal("1.0500"),
            Decimal("0.9500"),
        )
        assert btc.market_max_qty == Decimal(120)
        assert all(r.symbol == s for s, r in rules.items())
        # The recorded file, cut to 14 symbols: every perpetual that is trading, not the pending listing.
        recorded = json.loads(_load("exchangeInfo_mainnet_2024-10-02.json"))["symbols"]
        assert len(recorded) == 14
        assert set(rules) == {
            s["symbol"] for s in recorded if (s["contractType"], s["status"]) == ("PERPETUAL", "TRADING")
        }
        assert "BTCSTUSDT" not in rules  # PENDING_TRADING
        assert len(rules) == 13

    async def test_klines_range_pages(self, autojump_clock: trio.testing.MockClock) -> None:
        """A 3,500-candle span is fetched in three pages with no gap and no duplicate."""
        fake = Fake()
        step = 300_000

        def klines(r: httpx.Request) -> httpx.Response:
            q = qs(r)
            start, end, limit = int(q["startTime"]), int(q["endTime"]), int(q["limit"])
            rows = []
            t = start
            while t <= end and len(rows) < limit:
                rows.append([t, "1.5", "2", "1", "1.75", "10", t + step - 1, "15", 3, "4", "6", "0"])
                t += step
            return ok(rows)

        fake.route("GET", "/fapi/v1/klines", klines)
        async with make_client(fake) as client:
            rows = await client.klines_range("BTCUSDT", "5m", start_ms=0, end_ms=3499 * step, page_limit=1500)
        assert [k.open_time_ms for k in rows] == [i * step for i in range(3500)]
        assert fake.count("GET", "/fapi/v1/klines") == 3
        candle = rows[0].to_candle()
        assert (candle.open, candle.close, candle.trades, candle.quote_volume) == (1.5, 1.75, 3, 15.0)

    async def test_market_endpoints(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        fake.route(
            "GET",
            "/fapi/v1/ticker/24hr",
            lambda r: httpx.Response(200, content=_load("ticker24hr_all_testnet_2025-01-11.json")),
        )
        fake.route(
            "GET",
            "/fapi/v1/premiumIndex",
            lambda r: httpx.Response(200, content=_load("premiumIndex_all_mainnet_2025-06-17.json")),
        )
        fake.route(
            "GET",
            "/fapi/v1/ticker/bookTicker",
            lambda r: httpx.Response(
                200, content=_load("docs-examples/ticker_bookTicker_docs_example_nautilus.json")
            ),
        )
        fake.route(
            "GET",
            "/fapi/v1/fundingRate",
            lambda r: httpx.Response(
                200, content=_load("docs-examples/fundingRate_docs_example_nautilus.json")
            ),
        )
        fake.route(
            "GET",
            "/fapi/v1/fundingInfo",
            lambda r: ok(
                [
                    {
                        "symbol": "HYPEUSDT",
                        "adjustedFundingRateCap": "0.02",
                        "adjustedFundingRateFloor": "-0.02",
                        "fundingIntervalHours": 4,
                        "disclaimer": False,
                    }
                ]
            ),
        )
        async with make_client(fake) as client:
            tickers = await client.ticker_24h()
            premium = await client.premium_index()
            book = await client.book_ticker("BTCUSDT")
            funding = await client.funding_rate_history("BTCUSDT", start_ms=0)
            info = await client.funding_info()
        assert len(tickers) == len(json.loads(_load("ticker24hr_all_testnet_2025-01-11.json"))) == 23
        assert len(premium) == len(json.loads(_load("premiumIndex_all_mainnet_2025-06-17.json"))) == 12
        hype = next(p for p in premium if p.symbol == "HYPEUSDT")
        assert hype.funding_rate is not None
        assert hype.next_funding_time > 0
        assert book[0].bid_price == Decimal("4.00000000")
        assert funding[0].funding_rate == Decimal("-0.03750000")
        assert info[0].funding_interval_hours == 4

    async def test_account_endpoints(self, autojump_clock: trio.testing.MockClock) -> None:
        ccxt = json.loads(_load("ccxt_static_binance_usdm_responses.json"))["entries"]
        by = {e["endpoint_inferred"].split("?")[0]: e["httpResponse"] for e in ccxt}
        fake = Fake()
        fake.route("GET", "/fapi/v3/account", lambda r: ok(by["GET /fapi/v3/account"]))
        fake.route(
            "GET",
            "/fapi/v2/positionRisk",
            lambda r: httpx.Response(
                200, content=_load("docs-examples/positionRisk_hedge_docs_example_nautilus.json")
            ),
        )
        fake.route("GET", "/fapi/v1/userTrades", lambda r: ok(by["GET /fapi/v1/userTrades"]))
        fake.route("GET", "/fapi/v1/positionSide/dual", lambda r: ok({"dualSidePosition": True}))
        fake.route(
            "GET",
            "/fapi/v1/leverageBracket",
            lambda r: httpx.Response(200, content=_load("leverageBracket_reconstructed_2024-10.json")),
        )
        fake.route(
            "POST",
            "/fapi/v1/leverage",
            lambda r: ok({"leverage": 2, "maxNotionalValue": "1000000", "symbol": "BTCUSDT"}),
        )
        fake.route(
            "GET",
            "/fapi/v1/income",
            lambda r: ok(
                [
                    {
                        "symbol": "BTCUSDT",
                        "incomeType": "FUNDING_FEE",
                        "income": "-0.0123",
                        "asset": "USDT",
                        "info": "FUNDING_FEE",
                        "time": 1,
                        "tranId": 9,
                        "tradeId": "",
                    }
                ]
            ),
        )
        fake.route(
            "GET",
            "/fapi/v1/openOrders",
            lambda r: httpx.Response(
                200, content=_load("docs-examples/openOrders_trailing_stop_docs_example_nautilus.json")
            ),
        )
        fake.route("GET", "/fapi/v1/openAlgoOrders", lambda r: ok([ALGO]))
        fake.route("DELETE", "/fapi/v1/allOpenOrders", lambda r: ok({"code": 200, "msg": "done"}))
        fake.route("DELETE", "/fapi/v1/algoOpenOrders", lambda r: ok({"code": 200, "msg": "done"}))
        fake.route(
            "DELETE",
            "/fapi/v1/algoOrder",
            lambda r: ok({"algoId": 7, "clientAlgoId": "c", "code": "200", "msg": "success"}),
        )
        fake.route("PUT", "/fapi/v1/listenKey", lambda r: err(400, -1125, "This listenKey does not exist."))
        async with make_client(fake) as client:
            account = await client.account()
            positions = await client.position_risk()
            trades = await client.user_trades("BTCUSDT")
            hedge = await client.position_mode()
            brackets = await client.leverage_brackets()
            lev = await client.set_leverage("BTCUSDT", 2)
            income = await client.income(income_type="FUNDING_FEE")
            opened = await client.open_orders("BTCUSDT")
            algos = await client.open_algo_orders()
            await client.cancel_all_orders("BTCUSDT")
            await client.cancel_all_algo_orders("BTCUSDT")
            cancelled = await client.cancel_algo_order(algo_id=7)
            with pytest.raises(E.ListenKeyExpired):
                await client.keepalive_listen_key()
        assert account.total_wallet_balance == Decimal("25.72610060")
        assert positions[0].leverage == 10
        assert positions[0].margin_type == "isolated"
        assert trades[0].id == 272536245
        assert trades[0].order_id == 3524852987
        assert hedge is True
        assert lev.leverage == 2
        assert brackets[0].brackets[0].initial_leverage == 75  # numbers sent as strings
        assert income[0].income == Decimal("-0.0123")
        assert opened[0].type == "TRAILING_STOP_MARKET"
        assert algos[0].algo_id == 7
        assert cancelled is not None
        assert cancelled.algo_id == 7
        sent = {r.url.path: qs(r) for r in fake.requests}
        assert sent["/fapi/v1/openOrders"]["symbol"] == "BTCUSDT"
        assert sent["/fapi/v1/income"]["incomeType"] == "FUNDING_FEE"
        assert "symbol" not in sent["/fapi/v1/openAlgoOrders"]

    async def test_payload_mismatch_names_endpoint_and_field(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        fake = Fake()
        fake.route(
            "GET",
            "/fapi/v3/balance",
            lambda r: ok([{"asset": "USDT", "balance": "x", "availableBalance": "1"}]),
        )
        async with make_client(fake) as client:
            with pytest.raises(E.PayloadError) as info:
                await client.balance()
        assert info.value.endpoint == "GET /fapi/v3/balance"
        assert info.value.field == "[0].balance"


class TestPlacementRateLimit:
    """A 429 on a placement is a definite rejection: sent again after Retry-After."""

    async def test_429_placement_resent_after_wait(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = Fake()
        times: list[float] = []

        def place(r: httpx.Request) -> httpx.Response:
            times.append(trio.current_time())
            if len(times) == 1:
                return err(429, -1003, "Too many requests", {"Retry-After": "5"})
            return ok(ORDER)

        fake.route("POST", "/fapi/v1/order", place)
        async with make_client(fake) as client:
            order = await client.place_order_resolved(**PLACE_KW)
        assert order.order_id == 42
        assert times[1] - times[0] >= 5
        assert fake.count("GET", "/fapi/v1/order") == 0

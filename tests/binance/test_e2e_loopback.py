"""End to end over real loopback sockets and the real clock (short bounds): the fake exchange served by
`serve_http` / `serve_ws` on 127.0.0.1, the real `BinanceRestClient`, `UserStream` and `MarketStreams`
with the production WebSocket connector."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from futures_actor.binance.market_ws import KlineClosed, MarketEvent, MarketStreams, StreamGap
from futures_actor.binance.models import OrderTradeUpdate
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.sim import SimExchange, load_exchange_info, serve_http, serve_ws
from futures_actor.binance.user_stream import ResyncNeeded, UserStream, UserStreamEvent
from futures_actor.core.clock import SystemWallClock
from futures_actor.core.config import BotConfig, ExchangeConfig
from futures_actor.core.secrets import Secret
from futures_actor.core.types import Candle

pytestmark = pytest.mark.realclock

# The recorded mainnet exchangeInfo bundled with the repository (data/sample/README.md).
EXCHANGE_INFO = (
    Path(__file__).resolve().parents[2] / "data" / "sample" / "exchangeInfo_mainnet_2024-10-02.json"
)
API_KEY = "e2e-key"
API_SECRET = "e2e-secret-0123456789"
BOUND_S = 8.0  # every test finishes well inside this
CLOCK_FOLLOW_S = 0.02  # how often the exchange clock is moved up to the wall clock
D = Decimal


class Loopback:
    """The running fake exchange: its REST and WS base URLs."""

    def __init__(self, ex: SimExchange, http_port: int, ws_port: int) -> None:
        self.ex = ex
        self.rest_url = f"http://127.0.0.1:{http_port}"
        self.ws_url = f"ws://127.0.0.1:{ws_port}"


@asynccontextmanager
async def open_loopback() -> AsyncIterator[tuple[Loopback, trio.Nursery]]:
    """A sim on 127.0.0.1 (ports chosen by the OS) whose clock follows the wall clock."""
    wall = SystemWallClock()
    info, specs = load_exchange_info(EXCHANGE_INFO, symbols=["BTCUSDT", "ETHUSDT"])
    ex = SimExchange(
        exchange_info=info,
        specs=specs,
        execution=BotConfig().execution,
        api_key=API_KEY,
        api_secret=API_SECRET,
        start_ms=wall.now_ms(),
    )
    ex.set_price("BTCUSDT", "60000")
    ex.set_price("ETHUSDT", "3000")

    async def follow_wall_clock() -> None:
        while True:
            ex.advance_to(max(ex.now_ms, wall.now_ms()))
            await trio.sleep(CLOCK_FOLLOW_S)

    with trio.fail_after(BOUND_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow_wall_clock)
            http_port = await nursery.start(serve_http, ex)
            ws_port = await nursery.start(serve_ws, ex)
            yield Loopback(ex, http_port, ws_port), nursery
            nursery.cancel_scope.cancel()


def make_client(lb: Loopback, cfg: ExchangeConfig) -> BinanceRestClient:
    return BinanceRestClient(
        cfg=cfg,
        wall_clock=SystemWallClock(),
        api_key=Secret(API_KEY),
        api_secret=Secret(API_SECRET),
        base_url=lb.rest_url,
    )


async def wait_subscribed(ex: SimExchange, route: str) -> None:
    """Until the server has registered a subscriber on `route` (it does so just after the handshake)."""
    for _ in range(int(BOUND_S / CLOCK_FOLLOW_S)):
        if any(s.route == route for s in ex.subscribers):
            return
        await trio.sleep(CLOCK_FOLLOW_S)
    raise AssertionError(f"no subscriber on route {route!r}")


async def next_order_event(receive: trio.MemoryReceiveChannel[UserStreamEvent]) -> OrderTradeUpdate:
    while True:
        ev = await receive.receive()
        if isinstance(ev, OrderTradeUpdate):
            return ev


async def test_signed_order_placed_and_cancelled_with_its_user_events() -> None:
    cfg = ExchangeConfig()
    async with open_loopback() as (lb, nursery), make_client(lb, cfg) as rest:
        await rest.sync_time()
        assert abs(rest.offset_ms) < 1000
        send, receive = trio.open_memory_channel[UserStreamEvent](100)
        stream = UserStream(cfg=cfg, rest=rest, ws_base=lb.ws_url, send=send)
        await nursery.start(stream.run)
        assert await receive.receive() == ResyncNeeded(reason="connected")
        await wait_subscribed(lb.ex, "private")

        placed = await rest.place_order(
            symbol="BTCUSDT",
            side="BUY",
            order_type="LIMIT",
            client_order_id="e2e-E1",
            quantity=D("0.010"),
            price=D("55000"),
            time_in_force="GTC",
        )
        new_event = await next_order_event(receive)
        (listed,) = await rest.open_orders("BTCUSDT")
        cancelled = await rest.cancel_order("BTCUSDT", orig_client_order_id="e2e-E1")
        cancel_event = await next_order_event(receive)
        remaining = await rest.open_orders()
    assert (placed.status, placed.client_order_id, placed.price) == ("NEW", "e2e-E1", D("55000"))
    assert listed.order_id == placed.order_id
    assert cancelled is not None
    assert cancelled.status == "CANCELED"
    assert remaining == []
    assert (new_event.order.client_order_id, new_event.order.status) == ("e2e-E1", "NEW")
    assert (cancel_event.order.client_order_id, cancel_event.order.status) == ("e2e-E1", "CANCELED")
    signed = [r for r in lb.ex.requests if r.path == "/fapi/v1/order"]
    assert [(r.method, r.status) for r in signed] == [("POST", 200), ("DELETE", 200)]


async def test_market_stream_delivers_a_pushed_kline() -> None:
    candle = Candle(
        open_time_ms=1_735_689_600_000, open=60000, high=60200, low=59900, close=60150, volume=4.5
    )
    async with open_loopback() as (lb, nursery):
        send, receive = trio.open_memory_channel[MarketEvent](100)
        streams = MarketStreams(
            cfg=ExchangeConfig(),
            ws_base=lb.ws_url,
            streams=["btcusdt@kline_5m"],
            send=send,
            stale_after_seconds=60.0,
        )
        await nursery.start(streams.run)
        gap = await receive.receive()
        await wait_subscribed(lb.ex, "market")
        lb.ex.push_candle("BTCUSDT", candle)
        got: Any = await receive.receive()
    assert isinstance(gap, StreamGap)
    assert gap.reason == "connected"
    assert isinstance(got, KlineClosed)
    assert (got.symbol, got.interval, got.candle) == ("BTCUSDT", "5m", candle)


async def test_lost_response_on_a_real_socket_is_resolved_without_a_duplicate() -> None:
    """The server executes the order and drops the connection: the client asks before re-sending."""
    cfg = ExchangeConfig(recv_window_ms=500, retry_wait_initial_seconds=0.05)
    async with open_loopback() as (lb, _nursery), make_client(lb, cfg) as rest:
        await rest.sync_time()
        lb.ex.faults.lose_response_of_next_order("timeout")
        order = await rest.place_order_resolved(
            symbol="ETHUSDT",
            side="BUY",
            order_type="MARKET",
            client_order_id="e2e-lost-1",
            quantity=D("0.010"),
        )
    assert (order.client_order_id, order.status) == ("e2e-lost-1", "FILLED")
    assert lb.ex.client_ids_sent() == ["e2e-lost-1"]
    on_path = [(r.method, r.status) for r in lb.ex.requests if r.path == "/fapi/v1/order"]
    assert on_path == [("POST", -1), ("GET", 200)]  # -1: executed, connection dropped unanswered
    assert lb.ex.position_amount("ETHUSDT") == D("0.010")

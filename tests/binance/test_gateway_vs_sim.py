"""Streams and the gateway against the fake exchange (`binance.sim`) in-process, under a mock clock:
`MarketStreams` and `UserStream` over the sim's in-memory WebSockets, and `BinanceGateway` over the
real REST client and user stream (entry, fill, protective stop on the algo endpoint, stop fill)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import stamina
import trio
import trio.testing

from futures_actor.binance.binance_gateway import BinanceGateway, user_stream_factory
from futures_actor.binance.gateway import (
    GatewayEvent,
    OrderRequest,
    OrderUpdate,
    ResyncNeeded,
    StopRequest,
)
from futures_actor.binance.market_ws import (
    BookTicker,
    KlineClosed,
    MarketEvent,
    MarketStreams,
    MarkPrice,
    StreamGap,
    StreamStale,
)
from futures_actor.binance.models import AlgoUpdate, ListenKeyExpiredEvent, OrderTradeUpdate
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.sim import (
    SimExchange,
    SymbolSpec,
    load_exchange_info,
    memory_connector,
    mock_transport,
)
from futures_actor.binance.user_stream import ResyncNeeded as StreamResync
from futures_actor.binance.user_stream import UserStream, UserStreamEvent
from futures_actor.core.config import BotConfig, ExchangeConfig
from futures_actor.core.secrets import Secret
from futures_actor.core.types import Candle

# The recorded mainnet exchangeInfo bundled with the repository (data/sample/README.md).
EXCHANGE_INFO = (
    Path(__file__).resolve().parents[2] / "data" / "sample" / "exchangeInfo_mainnet_2024-10-02.json"
)
API_KEY = "gw-sim-key"
API_SECRET = "gw-sim-secret-0123456789"
START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC
WS_BASE = "wss://fstream.binance.com"
CFG = ExchangeConfig()
HOUR_S = 3600.0
D = Decimal
E = TypeVar("E")


class TrioWallClock:
    def now_ms(self) -> int:
        return START_MS + int(trio.current_time() * 1000)


class FollowingTransport(httpx.AsyncBaseTransport):
    """The sim's `mock_transport`, with the exchange clock moved up to trio time before each request."""

    def __init__(self, ex: SimExchange) -> None:
        self._ex = ex
        self._inner = mock_transport(ex)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = START_MS + int(trio.current_time() * 1000)
        if target > self._ex.now_ms:
            self._ex.advance_to(target)
        return await self._inner.handle_async_request(request)


@pytest.fixture(scope="session")
def info_specs() -> tuple[dict[str, Any], dict[str, SymbolSpec]]:
    return load_exchange_info(EXCHANGE_INFO, symbols=["BTCUSDT", "ETHUSDT"])


@pytest.fixture
def ex(info_specs: tuple[dict[str, Any], dict[str, SymbolSpec]]) -> SimExchange:
    info, specs = info_specs
    exchange = SimExchange(
        exchange_info=info,
        specs=specs,
        execution=BotConfig().execution,
        api_key=API_KEY,
        api_secret=API_SECRET,
        start_ms=START_MS,
    )
    exchange.set_price("BTCUSDT", "60000")
    exchange.set_price("ETHUSDT", "3000")
    return exchange


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(autouse=True)
def _stamina_no_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


def make_client(ex: SimExchange) -> BinanceRestClient:
    return BinanceRestClient(
        cfg=CFG,
        wall_clock=TrioWallClock(),
        api_key=Secret(API_KEY),
        api_secret=Secret(API_SECRET),
        transport=FollowingTransport(ex),
        base_url="https://fapi.binance.com",
    )


async def receive_until(
    receive: trio.MemoryReceiveChannel[Any], done: Callable[[Any], bool], *, limit: int = 200
) -> list[Any]:
    """Events up to and including the first one for which `done` is true (bounded in count)."""
    got: list[Any] = []
    for _ in range(limit):
        ev = await receive.receive()
        got.append(ev)
        if done(ev):
            return got
    raise AssertionError(f"no matching event among {len(got)}: {[type(e).__name__ for e in got]}")


def of_type(events: list[Any], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


async def settle() -> None:
    """Let every task run until all are blocked (the server registers its subscription)."""
    await trio.sleep(0.01)


CANDLE = Candle(open_time_ms=START_MS, open=60000, high=60150, low=59950, close=60100, volume=12.5)


class TestMarketStreams:
    """MarketStreams over the sim's in-memory WebSockets."""

    async def test_closed_klines_mark_and_book_arrive(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        send, receive = trio.open_memory_channel[MarketEvent](100)
        async with trio.open_nursery() as nursery:
            streams = MarketStreams(
                cfg=CFG,
                ws_base=WS_BASE,
                streams=["btcusdt@kline_5m", "btcusdt@markPrice", "btcusdt@bookTicker"],
                send=send,
                stale_after_seconds=90.0,
                connector=memory_connector(ex, nursery),
            )
            await nursery.start(streams.run)
            gaps = [await receive.receive(), await receive.receive()]  # one per route
            await settle()
            ex.set_price("BTCUSDT", "60100")  # a trade: the forming kline (x=false) is not delivered
            ex.push_candle("BTCUSDT", CANDLE)
            # set_price: mark + book; push_candle: kline + mark + book (the forming kline is skipped)
            events = [await receive.receive() for _ in range(5)]
            nursery.cancel_scope.cancel()
        assert all(isinstance(g, StreamGap) and g.reason == "connected" for g in gaps)
        assert {s for g in of_type(gaps, StreamGap) for s in g.streams} == {
            "btcusdt@kline_5m",
            "btcusdt@markPrice",
            "btcusdt@bookTicker",
        }
        (kline,) = of_type(events, KlineClosed)
        assert (kline.symbol, kline.interval, kline.candle) == ("BTCUSDT", "5m", CANDLE)
        assert kline.event_time_ms == START_MS
        marks = of_type(events, MarkPrice)
        assert len(marks) == 2
        assert marks[-1].mark_price == D("60100")
        books = of_type(events, BookTicker)
        assert len(books) == 2
        assert (books[-1].bid_price, books[-1].ask_price) == (D("60100"), D("60100.1"))
        assert of_type(events, StreamGap) == []

    async def test_dropped_connection_gives_a_gap_after_reconnecting(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        send, receive = trio.open_memory_channel[MarketEvent](100)
        async with trio.open_nursery() as nursery:
            streams = MarketStreams(
                cfg=CFG,
                ws_base=WS_BASE,
                streams=["btcusdt@kline_5m"],
                send=send,
                stale_after_seconds=900.0,
                connector=memory_connector(ex, nursery),
            )
            await nursery.start(streams.run)
            first = await receive.receive()
            await settle()
            t0 = trio.current_time()
            assert ex.drop_subscribers("market") == 1
            regap = await receive.receive()
            waited = trio.current_time() - t0
            await settle()
            ex.push_candle("BTCUSDT", CANDLE)
            after = await receive.receive()
            nursery.cancel_scope.cancel()
        assert isinstance(first, StreamGap)
        assert first.reason == "connected"
        assert isinstance(regap, StreamGap)
        assert (regap.reason, regap.streams) == ("reconnected", ("btcusdt@kline_5m",))
        assert waited >= CFG.ws_reconnect_backoff_initial_seconds  # backed off before reconnecting
        assert isinstance(after, KlineClosed)  # the new connection delivers
        assert streams.connects == 2

    async def test_silent_stream_is_reported_stale(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Mark prices every 5 s; the route goes silent at t=60 s: StreamStale ~30 s later (not before),
        the connection is recycled (a gap), and frames flow again once the route speaks."""
        stale_after = 30.0
        send, receive = trio.open_memory_channel[MarketEvent](1000)

        async def ticker() -> None:
            price = 60000
            while True:
                await trio.sleep(5)
                price += 1
                ex.set_mark("BTCUSDT", str(price))

        async with trio.open_nursery() as nursery:
            streams = MarketStreams(
                cfg=CFG,
                ws_base=WS_BASE,
                streams=["btcusdt@markPrice"],
                send=send,
                stale_after_seconds=stale_after,
                connector=memory_connector(ex, nursery),
            )
            await nursery.start(streams.run)
            t0 = trio.current_time()
            nursery.start_soon(ticker)
            before: list[MarketEvent] = []
            with trio.move_on_after(60):
                while True:
                    before.append(await receive.receive())
            ex.faults.silence_ws("market")
            stale = await receive_until(receive, lambda e: isinstance(e, StreamStale))
            stale_at = trio.current_time() - t0
            regap = await receive.receive()
            ex.faults.unsilence_ws("market")
            resumed = await receive.receive()
            nursery.cancel_scope.cancel()
        assert of_type(before, StreamStale) == []
        assert len(of_type(before, MarkPrice)) >= 10
        assert isinstance(stale[-1], StreamStale)
        assert stale[-1].stream == "btcusdt@markPrice"
        assert stale[-1].silent_seconds >= stale_after
        assert 60 + stale_after - 5 <= stale_at <= 60 + stale_after + stale_after / 2
        assert isinstance(regap, StreamGap)
        assert regap.reason == "reconnected"
        assert isinstance(resumed, MarkPrice)


class TestUserStream:
    """UserStream with the real REST client's listenKey calls, over the sim's private route."""

    async def test_events_of_a_triggered_stop_arrive(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        send, receive = trio.open_memory_channel[UserStreamEvent](200)
        async with make_client(ex) as rest, trio.open_nursery() as nursery:
            stream = UserStream(
                cfg=CFG, rest=rest, ws_base=WS_BASE, send=send, connector=memory_connector(ex, nursery)
            )
            await nursery.start(stream.run)
            first = await receive.receive()
            await settle()
            await rest.place_order(
                symbol="BTCUSDT",
                side="BUY",
                order_type="MARKET",
                client_order_id="us-E1",
                quantity=D("0.010"),
            )
            await rest.place_algo_order(
                symbol="BTCUSDT",
                side="SELL",
                order_type="STOP_MARKET",
                client_algo_id="us-S1",
                trigger_price=D("59000"),
                quantity=D("0.010"),
                working_type="MARK_PRICE",
                reduce_only=True,
            )
            ex.set_price("BTCUSDT", "58900")
            events = await receive_until(
                receive, lambda e: isinstance(e, AlgoUpdate) and e.order.status == "FINISHED"
            )
            nursery.cancel_scope.cancel()
        assert first == StreamResync(reason="connected")
        algo = [e.order.status for e in of_type(events, AlgoUpdate) if e.order.client_algo_id == "us-S1"]
        assert algo == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
        orders = [
            (e.order.client_order_id, e.order.execution_type, e.order.status)
            for e in of_type(events, OrderTradeUpdate)
        ]
        assert orders == [
            ("us-E1", "NEW", "NEW"),
            ("us-E1", "TRADE", "FILLED"),
            ("us-S1", "NEW", "NEW"),  # the triggered stop's child reuses the algo client id
            ("us-S1", "TRADE", "FILLED"),
        ]
        child_fill = of_type(events, OrderTradeUpdate)[-1].order
        assert (child_fill.orig_type, child_fill.last_filled_qty, child_fill.reduce_only) == (
            "STOP_MARKET",
            D("0.010"),
            True,
        )
        assert ex.position_amount("BTCUSDT") == 0

    async def test_expired_listen_key_is_replaced_and_resync_sent(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        send, receive = trio.open_memory_channel[UserStreamEvent](200)
        async with make_client(ex) as rest, trio.open_nursery() as nursery:
            stream = UserStream(
                cfg=CFG, rest=rest, ws_base=WS_BASE, send=send, connector=memory_connector(ex, nursery)
            )
            await nursery.start(stream.run)
            assert await receive.receive() == StreamResync(reason="connected")
            old_key = stream.listen_key
            ex.expire_listen_key()
            expired = await receive.receive()
            resync = await receive.receive()
            new_key = stream.listen_key
            await settle()
            await rest.place_order(
                symbol="ETHUSDT",
                side="BUY",
                order_type="MARKET",
                client_order_id="us-E2",
                quantity=D("0.010"),
            )
            after = await receive.receive()
            nursery.cancel_scope.cancel()
        assert isinstance(expired, ListenKeyExpiredEvent)
        assert resync == StreamResync(reason="listen_key_expired")
        assert old_key is not None
        assert new_key not in (None, old_key)
        assert new_key == ex.listen_key
        assert isinstance(after, OrderTradeUpdate)  # events flow on the new key
        assert after.order.client_order_id == "us-E2"
        assert stream.connects == 2

    async def test_keepalive_holds_the_key_for_hours(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Without keepalives the sim expires a key after 60 min; with them it lives on."""
        send, receive = trio.open_memory_channel[UserStreamEvent](200)
        hours = 3
        async with make_client(ex) as rest, trio.open_nursery() as nursery:
            stream = UserStream(
                cfg=CFG, rest=rest, ws_base=WS_BASE, send=send, connector=memory_connector(ex, nursery)
            )
            await nursery.start(stream.run)
            key = stream.listen_key
            run_s = hours * HOUR_S + 60  # off the keepalive grid: no tie with the last keepalive
            await trio.sleep(run_s)
            ex.advance_to(START_MS + int(run_s * 1000))  # any expiry due by now happens here
            nursery.cancel_scope.cancel()
        assert key is not None
        assert ex.listen_key == key
        assert stream.connects == 1
        keepalives = [r for r in ex.requests if (r.method, r.path) == ("PUT", "/fapi/v1/listenKey")]
        assert len(keepalives) == int(hours * HOUR_S // CFG.listen_key_keepalive_seconds)
        assert receive.receive_nowait() == StreamResync(reason="connected")
        with pytest.raises(trio.WouldBlock):
            receive.receive_nowait()


async def wait_update(
    events: trio.MemoryReceiveChannel[GatewayEvent], client_id: str, *, filled: bool
) -> list[GatewayEvent]:
    return await receive_until(
        events,
        lambda e: (
            isinstance(e, OrderUpdate)
            and e.order.client_id == client_id
            and (e.order.status == "FILLED") == filled
        ),
    )


class TestGateway:
    """BinanceGateway over the real REST client and user stream, served by the sim."""

    async def test_entry_fill_stop_and_stop_fill(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with make_client(ex) as rest, trio.open_nursery() as nursery:
            gw = BinanceGateway(
                rest=rest,
                user_stream=user_stream_factory(
                    cfg=CFG, rest=rest, ws_base=WS_BASE, connector=memory_connector(ex, nursery)
                ),
            )
            await gw.check_account_mode()
            await gw.prepare_symbol("BTCUSDT", leverage=2)
            await nursery.start(gw.run)
            events = gw.events()
            assert await events.receive() == ResyncNeeded(reason="connected")
            await settle()

            entry = await gw.place_order(
                OrderRequest(
                    symbol="BTCUSDT",
                    client_id="gw-E1",
                    side="BUY",
                    type="LIMIT",
                    quantity=D("0.010"),
                    price=D("59900"),
                )
            )
            ex.set_price("BTCUSDT", "59800")  # trades through the entry
            entry_events = await wait_update(events, "gw-E1", filled=True)
            stop = await gw.place_stop(
                StopRequest(
                    symbol="BTCUSDT",
                    client_id="gw-S1",
                    side="SELL",
                    trigger_price=D("59000"),
                    quantity=D("0.010"),
                )
            )
            open_now = await gw.open_orders()
            (long,) = await gw.positions()
            ex.set_mark("BTCUSDT", "58950")  # the mark crosses the stop
            stop_events = await wait_update(events, "gw-S1", filled=True)
            await settle()
            while True:
                try:
                    stop_events.append(events.receive_nowait())
                except trio.WouldBlock:
                    break
            positions = await gw.positions()
            open_after = await gw.open_orders()
            nursery.cancel_scope.cancel()

        assert (entry.status, entry.type, entry.price, entry.is_stop) == ("NEW", "LIMIT", D("59900"), False)
        entry_fill = entry_events[-1]
        assert isinstance(entry_fill, OrderUpdate)
        # the sim's paper fills are pessimistic: a limit fill pays `paper_slippage_limit_pct`, on the tick
        slip = D(repr(BotConfig().execution.paper_slippage_limit_pct))
        entry_px = (D("59900") * (1 + slip)).quantize(D("0.1"), rounding=ROUND_CEILING)
        assert (entry_fill.last_fill_qty, entry_fill.last_fill_price) == (D("0.010"), entry_px)
        assert (stop.status, stop.is_stop, stop.trigger_price, stop.reduce_only) == (
            "NEW",
            True,
            D("59000"),
            True,
        )
        assert [(o.client_id, o.is_stop) for o in open_now] == [("gw-S1", True)]
        assert (long.side, long.quantity, long.entry_price) == ("LONG", D("0.010"), entry_px)
        fills = [e for e in stop_events if isinstance(e, OrderUpdate) and e.last_fill_qty > 0]
        assert len(fills) == 1  # reported exactly once (ALGO_UPDATE and TRADE_LITE carry no fill)
        (fill,) = fills
        assert (fill.order.client_id, fill.order.is_stop, fill.order.type) == ("gw-S1", True, "STOP_MARKET")
        assert fill.last_fill_qty == D("0.010")
        assert fill.last_fill_price < D("59800")  # a market exit at the last price, minus slippage
        assert fill.realized_pnl < 0
        assert positions == []
        assert open_after == []
        assert ex.position_amount("BTCUSDT") == 0
        assert [cid for cid in ex.client_ids_sent()] == ["gw-E1", "gw-S1"]
        algo_posts = [r.params for r in ex.requests if (r.method, r.path) == ("POST", "/fapi/v1/algoOrder")]
        assert [(p["type"], p["workingType"], p["reduceOnly"]) for p in algo_posts] == [
            ("STOP_MARKET", "MARK_PRICE", "true")
        ]

    async def test_lost_stop_response_makes_no_duplicate(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with make_client(ex) as rest:
            gw = BinanceGateway(
                rest=rest, user_stream=user_stream_factory(cfg=CFG, rest=rest, ws_base=WS_BASE)
            )
            await gw.place_order(
                OrderRequest(
                    symbol="BTCUSDT", client_id="gw-E2", side="BUY", type="MARKET", quantity=D("0.010")
                )
            )
            ex.faults.lose_response_of_next_order("timeout")
            stop = await gw.place_stop(
                StopRequest(
                    symbol="BTCUSDT",
                    client_id="gw-S2",
                    side="SELL",
                    trigger_price=D("59000"),
                    quantity=D("0.010"),
                )
            )
            open_now = await gw.open_orders()
            queried = await gw.query_stop("BTCUSDT", "gw-S2")
            cancelled = await gw.cancel_stop("BTCUSDT", "gw-S2")
            again = await gw.cancel_stop("BTCUSDT", "gw-S2")
        assert (stop.client_id, stop.status, stop.is_stop) == ("gw-S2", "NEW", True)
        assert ex.client_ids_sent().count("gw-S2") == 1
        assert [o.client_id for o in open_now] == ["gw-S2"]
        assert queried == stop
        assert cancelled is not None
        assert cancelled.status == "CANCELED"
        assert again is None
        assert ex.position_amount("BTCUSDT") == D("0.010")  # the stop never fired

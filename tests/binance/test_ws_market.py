"""Market streams over in-memory WebSockets under the mock clock: routes, decoding, broken frames,
gaps after reconnects, staleness, planned reconnects."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection

from futures_actor.binance.market_ws import (
    BookTicker,
    KlineClosed,
    MarketEvent,
    MarketStreams,
    MarkPrice,
    StreamGap,
    StreamStale,
    decode_market_frame,
    plan_connections,
)
from futures_actor.binance.urls import combined_stream_url, resolve_urls, route_for_stream, user_stream_url
from futures_actor.binance.ws_conn import memory_connector
from futures_actor.core.config import ExchangeConfig

WS = Path(__file__).resolve().parents[2] / "data" / "sample" / "binance-payloads" / "ws"


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def kline_frame(symbol: str, open_ms: int, *, closed: bool = True, close: str = "101.5") -> str:
    k = {
        "t": open_ms,
        "T": open_ms + 299_999,
        "s": symbol,
        "i": "5m",
        "f": 1,
        "L": 2,
        "o": "100.0",
        "c": close,
        "h": "102.0",
        "l": "99.0",
        "v": "12.5",
        "n": 40,
        "x": closed,
        "q": "1260.0",
        "V": "6",
        "Q": "600",
        "B": "0",
    }
    data = {"e": "kline", "E": open_ms + 300_000, "s": symbol, "k": k}
    return json.dumps({"stream": f"{symbol.lower()}@kline_5m", "data": data})


def mark_frame(symbol: str, *, rate: str = "0.0001", price: str = "100.5") -> str:
    data = {
        "e": "markPriceUpdate",
        "E": 1,
        "s": symbol,
        "p": price,
        "ap": price,
        "i": "100.4",
        "P": "100.3",
        "r": rate,
        "T": 1_750_000_800_000,
    }
    return json.dumps({"stream": f"{symbol.lower()}@markPrice", "data": data})


class TestRoutesAndPlan:
    """Streams go to their 2026 route and are chunked per connection."""

    def test_routes(self) -> None:
        assert route_for_stream("btcusdt@bookTicker") == "public"
        assert route_for_stream("btcusdt@depth@100ms") == "public"
        assert route_for_stream("btcusdt@kline_5m") == "market"
        assert route_for_stream("btcusdt@markPrice") == "market"

    def test_urls(self) -> None:
        urls = resolve_urls(ExchangeConfig())
        assert (urls.rest, urls.ws) == ("https://fapi.binance.com", "wss://fstream.binance.com")
        demo = resolve_urls(ExchangeConfig(environment="demo"))
        assert demo.rest == "https://demo-fapi.binance.com"
        custom = resolve_urls(
            ExchangeConfig(rest_base_url="http://127.0.0.1:9000/", ws_base_url="ws://127.0.0.1:9001")
        )
        assert (custom.rest, custom.ws) == ("http://127.0.0.1:9000", "ws://127.0.0.1:9001")
        assert (
            combined_stream_url(urls.ws, "market", ["btcusdt@kline_5m", "btcusdt@markPrice"])
            == "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_5m/btcusdt@markPrice"
        )
        assert user_stream_url(urls.ws, "abc") == "wss://fstream.binance.com/private/ws/abc"
        with pytest.raises(ValueError, match="does not belong"):
            combined_stream_url(urls.ws, "market", ["btcusdt@bookTicker"])

    def test_plan_chunks_by_route(self) -> None:
        streams = [f"s{i}usdt@kline_5m" for i in range(5)] + ["s0usdt@bookTicker", "s0usdt@kline_5m"]
        plan = plan_connections(streams, 2)
        assert plan == [
            ("market", ("s0usdt@kline_5m", "s1usdt@kline_5m")),
            ("market", ("s2usdt@kline_5m", "s3usdt@kline_5m")),
            ("market", ("s4usdt@kline_5m",)),
            ("public", ("s0usdt@bookTicker",)),
        ]


class TestDecoding:
    """Frames decode into typed events; broken frames are skipped."""

    def test_recorded_kline_stream(self) -> None:
        frames = json.loads((WS / "fstream_kline_1m_mainnet_2021-07-22.json").read_text())["messages"]
        events = [decode_market_frame(json.dumps(m["msg"])) for m in frames]
        closed = [e for e in events if e is not None]
        assert len(frames) == 67
        assert len(closed) == 4
        assert all(isinstance(e, KlineClosed) and e.interval == "1m" for e in closed)
        first = closed[0]
        assert isinstance(first, KlineClosed)
        assert first.candle.high >= max(first.candle.open, first.candle.close)
        assert first.candle.trades >= 0

    def test_recorded_book_ticker_stream(self) -> None:
        frames = json.loads((WS / "fstream_bookTicker_mainnet_2021-07-22.json").read_text())["messages"]
        events = [decode_market_frame(json.dumps(m["msg"])) for m in frames]
        assert len(events) == 120  # the first 120 frames of the recording are bundled
        assert all(isinstance(e, BookTicker) for e in events)
        assert all(e.bid_price <= e.ask_price for e in events if isinstance(e, BookTicker))

    def test_mark_price(self) -> None:
        event = decode_market_frame(mark_frame("BTCUSDT"))
        assert event == MarkPrice(
            symbol="BTCUSDT",
            mark_price=Decimal("100.5"),
            index_price=Decimal("100.4"),
            funding_rate=Decimal("0.0001"),
            next_funding_time_ms=1_750_000_800_000,
            event_time_ms=1,
        )

    @pytest.mark.parametrize(
        "raw",
        [
            "not json",
            '{"stream":"x","data":{"e":"kline","E":1}}',
            kline_frame("BTCUSDT", 0, close="NaN"),
            kline_frame("BTCUSDT", 0, close="-1"),
            mark_frame("BTCUSDT", price="NaN"),
            '{"stream":"x","data":{"e":"aggTrade","E":1}}',
            '{"result":null,"id":1}',
        ],
    )
    def test_broken_frames_skipped(self, raw: str) -> None:
        assert decode_market_frame(raw) is None


async def collect(receive: trio.MemoryReceiveChannel[MarketEvent], n: int) -> list[MarketEvent]:
    return [await receive.receive() for _ in range(n)]


class TestConnections:
    """Reconnects, gap signals, staleness and planned reconnects."""

    async def test_events_and_gap_after_reconnect(self, autojump_clock: trio.testing.MockClock) -> None:
        urls: list[str] = []

        async def server(url: str, ws: WebSocketConnection) -> None:
            urls.append(url)
            n = len(urls)
            await ws.send_message("garbage")  # skipped, never a crash
            await ws.send_message(kline_frame("BTCUSDT", n * 300_000))
            await ws.send_message(kline_frame("BTCUSDT", n * 300_000 + 1, closed=False))
            await ws.send_message(mark_frame("BTCUSDT"))
            if n == 1:
                return  # the server drops the connection
            await trio.sleep_forever()

        send, receive = trio.open_memory_channel[MarketEvent](100)
        cfg = ExchangeConfig(ws_reconnect_backoff_initial_seconds=1.0)
        async with trio.open_nursery() as nursery:
            streams = MarketStreams(
                cfg=cfg,
                ws_base="wss://fstream.test",
                streams=["btcusdt@kline_5m", "btcusdt@markPrice"],
                send=send,
                stale_after_seconds=90.0,
                connector=memory_connector(nursery, server),
            )
            await nursery.start(streams.run)
            t0 = trio.current_time()
            events = await collect(receive, 6)
            elapsed = trio.current_time() - t0
            nursery.cancel_scope.cancel()
        assert urls[0] == "wss://fstream.test/market/stream?streams=btcusdt@kline_5m/btcusdt@markPrice"
        kinds = [type(e).__name__ for e in events]
        assert kinds == ["StreamGap", "KlineClosed", "MarkPrice", "StreamGap", "KlineClosed", "MarkPrice"]
        gaps = [e for e in events if isinstance(e, StreamGap)]
        assert [g.reason for g in gaps] == ["connected", "reconnected"]
        assert elapsed >= 1.0  # backoff before reconnecting

    async def test_stale_stream_reported_then_recycled(self, autojump_clock: trio.testing.MockClock) -> None:
        connections: list[float] = []

        async def server(url: str, ws: WebSocketConnection) -> None:
            connections.append(trio.current_time())
            await ws.send_message(kline_frame("BTCUSDT", 0, closed=False))
            await trio.sleep_forever()  # then silence

        send, receive = trio.open_memory_channel[MarketEvent](100)
        async with trio.open_nursery() as nursery:
            streams = MarketStreams(
                cfg=ExchangeConfig(),
                ws_base="wss://x",
                streams=["btcusdt@kline_5m"],
                send=send,
                stale_after_seconds=30.0,
                connector=memory_connector(nursery, server),
            )
            await nursery.start(streams.run)
            events = await collect(receive, 3)
            nursery.cancel_scope.cancel()
        gap, stale, regap = events
        assert isinstance(gap, StreamGap)
        assert isinstance(stale, StreamStale)
        assert isinstance(regap, StreamGap)
        assert stale.stream == "btcusdt@kline_5m"
        assert stale.silent_seconds >= 30.0
        assert len(connections) == 2
        assert connections[1] - connections[0] >= 30.0

    async def test_planned_reconnect_keeps_candles_once(self, autojump_clock: trio.testing.MockClock) -> None:
        """Before the 24 h cut the connection is renewed; a candle replayed on the new one is not repeated."""
        count = {"n": 0}

        async def server(url: str, ws: WebSocketConnection) -> None:
            count["n"] += 1
            await ws.send_message(kline_frame("BTCUSDT", 0))  # replayed on every connection
            if count["n"] > 1:
                await ws.send_message(kline_frame("BTCUSDT", 300_000))
            while True:
                await trio.sleep(20)
                await ws.send_message(kline_frame("BTCUSDT", 0, closed=False))

        send, receive = trio.open_memory_channel[MarketEvent](100)
        cfg = ExchangeConfig(ws_planned_reconnect_hours=1.0, ws_ping_interval_seconds=60.0)
        async with trio.open_nursery() as nursery:
            streams = MarketStreams(
                cfg=cfg,
                ws_base="wss://x",
                streams=["btcusdt@kline_5m"],
                send=send,
                stale_after_seconds=90.0,
                connector=memory_connector(nursery, server),
            )
            await nursery.start(streams.run)
            t0 = trio.current_time()
            events = await collect(receive, 4)
            elapsed = trio.current_time() - t0
            nursery.cancel_scope.cancel()
        assert [type(e).__name__ for e in events] == ["StreamGap", "KlineClosed", "StreamGap", "KlineClosed"]
        assert isinstance(events[2], StreamGap)
        assert events[2].reason == "planned"
        closed = [e.candle.open_time_ms for e in events if isinstance(e, KlineClosed)]
        assert closed == [0, 300_000]
        assert 3600 <= elapsed < 3700

    async def test_dead_link_without_pong_is_recycled(self, autojump_clock: trio.testing.MockClock) -> None:
        """A connection whose pings get no pong is replaced."""
        count = {"n": 0}

        async def server(url: str, ws: WebSocketConnection) -> None:
            count["n"] += 1
            if count["n"] == 1:
                # Stop the server reader (trio-websocket internals) so our pings go unanswered.
                ws._reader_running = False  # type: ignore[attr-defined]
            await trio.sleep_forever()

        send, receive = trio.open_memory_channel[MarketEvent](100)
        async with trio.open_nursery() as nursery:
            streams = MarketStreams(
                cfg=ExchangeConfig(ws_ping_interval_seconds=10.0),
                ws_base="wss://x",
                streams=["btcusdt@markPrice"],
                send=send,
                stale_after_seconds=1000.0,
                connector=memory_connector(nursery, server),
            )
            await nursery.start(streams.run)
            events = await collect(receive, 2)
            nursery.cancel_scope.cancel()
        assert [e.reason for e in events if isinstance(e, StreamGap)] == ["connected", "reconnected"]

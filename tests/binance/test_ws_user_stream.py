"""User-data stream: typed events, listenKey lifecycle, resync after every (re)connect."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs
from trio_websocket import WebSocketConnection

from futures_actor.binance.errors import ListenKeyExpired
from futures_actor.binance.models import (
    AccountUpdate,
    AlgoUpdate,
    ListenKeyExpiredEvent,
    MarginCall,
    OrderTradeUpdate,
    TradeLite,
)
from futures_actor.binance.user_stream import ResyncNeeded, UserStream, UserStreamEvent, decode_user_event
from futures_actor.binance.ws_conn import memory_connector
from futures_actor.core.config import ExchangeConfig

WS = Path(__file__).resolve().parents[2] / "data" / "sample" / "binance-payloads" / "ws"

ORDER_UPDATE = {
    "e": "ORDER_TRADE_UPDATE",
    "E": 1568879465651,
    "T": 1568879465650,
    "o": {
        "s": "BTCUSDT",
        "c": "fa-abc-E1",
        "S": "BUY",
        "o": "LIMIT",
        "f": "GTC",
        "q": "0.001",
        "p": "7000",
        "ap": "7000",
        "sp": "0",
        "x": "TRADE",
        "X": "FILLED",
        "i": 8886774,
        "l": "0.001",
        "z": "0.001",
        "L": "7000",
        "N": "USDT",
        "n": "0.0028",
        "T": 1568879465650,
        "t": 12,
        "b": "0",
        "a": "0",
        "m": True,
        "R": False,
        "wt": "CONTRACT_PRICE",
        "ot": "LIMIT",
        "ps": "BOTH",
        "cp": False,
        "rp": "0",
        "pP": False,
        "si": 0,
        "ss": 0,
        "V": "EXPIRE_TAKER",
        "pm": "NONE",
        "gtd": 0,
        "er": "0",
    },
}
ACCOUNT_UPDATE = {
    "e": "ACCOUNT_UPDATE",
    "E": 1564745798939,
    "T": 1564745798938,
    "a": {
        "m": "FUNDING_FEE",
        "S": "BTCUSDT",
        "B": [{"a": "USDT", "wb": "122624.12345678", "cw": "100.12345678", "bc": "50.12345678"}],
        "P": [
            {
                "s": "BTCUSDT",
                "pa": "0.5",
                "ep": "7000",
                "bep": "7001",
                "cr": "200",
                "up": "1",
                "mt": "isolated",
                "iw": "10",
                "ps": "BOTH",
            }
        ],
    },
}
MARGIN_CALL = {
    "e": "MARGIN_CALL",
    "E": 1587727187525,
    "cw": "3.16812045",
    "p": [
        {
            "s": "ETHUSDT",
            "ps": "LONG",
            "pa": "1.327",
            "mt": "CROSSED",
            "iw": "0",
            "mp": "187.17127",
            "up": "-1.166074",
            "mm": "1.614445",
        }
    ],
}


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class TestDecoding:
    """Every user event type decodes; unknown and broken ones are skipped."""

    @pytest.mark.parametrize("name", ["triggering", "triggered", "finished", "finished_canceled"])
    def test_recorded_algo_updates(self, name: str) -> None:
        data = json.loads((WS / f"algo_update_{name}_nautilus.json").read_text())["data"]
        event = decode_user_event(json.dumps(data))
        assert isinstance(event, AlgoUpdate)
        assert event.order.client_algo_id.startswith("O-20251211-053131-TEST-000-")
        assert event.order.order_type == "STOP_MARKET"
        assert event.order.trigger_price == Decimal("0.13855")
        assert event.order.status in {"TRIGGERING", "TRIGGERED", "FINISHED", "CANCELED"}

    def test_recorded_trade_lite(self) -> None:
        event = decode_user_event((WS / "trade_lite_nautilus.json").read_bytes())
        assert isinstance(event, TradeLite)
        assert event.order_id == 8389765739703625592
        assert event.last_filled_price == Decimal("2631.90")

    def test_documented_events(self) -> None:
        order = decode_user_event(json.dumps(ORDER_UPDATE))
        assert isinstance(order, OrderTradeUpdate)
        assert (order.order.status, order.order.commission, order.order.expiry_reason) == (
            "FILLED",
            Decimal("0.0028"),
            0,
        )
        account = decode_user_event(json.dumps(ACCOUNT_UPDATE))
        assert isinstance(account, AccountUpdate)
        assert account.account.symbol == "BTCUSDT"
        assert account.account.positions[0].position_amt == Decimal("0.5")
        margin = decode_user_event(json.dumps(MARGIN_CALL))
        assert isinstance(margin, MarginCall)
        assert margin.positions[0].maint_margin == Decimal("1.614445")
        for e_value in (1736996475556, "1736996475556"):  # a string before 2026-05, an int since
            expired = decode_user_event(json.dumps({"e": "listenKeyExpired", "E": e_value, "listenKey": "k"}))
            assert isinstance(expired, ListenKeyExpiredEvent)
            assert expired.event_time_ms == 1736996475556

    def test_unknown_and_broken_events_are_skipped(self) -> None:
        with capture_logs() as logs:
            assert decode_user_event('{"e":"ACCOUNT_CONFIG_UPDATE","E":1,"ac":{"s":"X","l":2}}') is None
            assert decode_user_event('{"e":"ORDER_TRADE_UPDATE","E":1}') is None
            assert decode_user_event("{not json") is None
        events = [entry["event"] for entry in logs]
        assert events == [
            "user_event_unknown_type_skipped",
            "user_event_malformed_skipped",
            "user_event_skipped",
        ]


class FakeKeys:
    """listenKey endpoints: counts calls; keepalive fails with -1125 when `dead`."""

    def __init__(self) -> None:
        self.created = 0
        self.keepalives: list[float] = []
        self.dead = False

    async def create_listen_key(self) -> str:
        self.created += 1
        self.dead = False
        return f"key{self.created}"

    async def keepalive_listen_key(self) -> None:
        self.keepalives.append(trio.current_time())
        if self.dead:
            raise ListenKeyExpired(
                "This listenKey does not exist.", code=-1125, endpoint="PUT /fapi/v1/listenKey"
            )


async def collect(receive: trio.MemoryReceiveChannel[UserStreamEvent], n: int) -> list[UserStreamEvent]:
    return [await receive.receive() for _ in range(n)]


class TestLifecycle:
    """listenKey keepalive and renewal; resync after every (re)connect."""

    async def test_events_keepalive_and_key_loss(self, autojump_clock: trio.testing.MockClock) -> None:
        keys = FakeKeys()
        urls: list[str] = []

        async def server(url: str, ws: WebSocketConnection) -> None:
            urls.append(url)
            await ws.send_message(json.dumps(ORDER_UPDATE))
            await ws.send_message('{"e":"STRATEGY_UPDATE","E":1}')
            await trio.sleep(1000)
            keys.dead = True  # the key vanished server-side: the next keepalive gets -1125
            await trio.sleep_forever()

        send, receive = trio.open_memory_channel[UserStreamEvent](100)
        cfg = ExchangeConfig(listen_key_keepalive_seconds=600.0)
        async with trio.open_nursery() as nursery:
            stream = UserStream(
                cfg=cfg,
                rest=keys,
                ws_base="wss://fstream.test",
                send=send,
                connector=memory_connector(nursery, server),
            )
            await nursery.start(stream.run)
            events = await collect(receive, 4)
            nursery.cancel_scope.cancel()
        assert urls == ["wss://fstream.test/private/ws/key1", "wss://fstream.test/private/ws/key2"]
        assert events[0] == ResyncNeeded(reason="connected")
        assert isinstance(events[1], OrderTradeUpdate)
        assert events[2] == ResyncNeeded(reason="listen_key_expired")
        assert isinstance(events[3], OrderTradeUpdate)
        assert keys.keepalives[:2] == [600.0, 1200.0]  # the second found the key gone

    async def test_listen_key_expired_event_renews(self, autojump_clock: trio.testing.MockClock) -> None:
        keys = FakeKeys()

        async def server(url: str, ws: WebSocketConnection) -> None:
            if url.endswith("key1"):
                await ws.send_message('{"e":"listenKeyExpired","E":"1736996475556","listenKey":"key1"}')
            await trio.sleep_forever()

        send, receive = trio.open_memory_channel[UserStreamEvent](100)
        async with trio.open_nursery() as nursery:
            stream = UserStream(
                cfg=ExchangeConfig(),
                rest=keys,
                ws_base="wss://x",
                send=send,
                connector=memory_connector(nursery, server),
            )
            await nursery.start(stream.run)
            events = await collect(receive, 3)
            nursery.cancel_scope.cancel()
        assert isinstance(events[1], ListenKeyExpiredEvent)
        assert events[2] == ResyncNeeded(reason="listen_key_expired")
        assert keys.created == 2

    async def test_disconnect_reconnects_with_resync(self, autojump_clock: trio.testing.MockClock) -> None:
        keys = FakeKeys()
        count = {"n": 0}

        async def server(url: str, ws: WebSocketConnection) -> None:
            count["n"] += 1
            await ws.send_message(json.dumps(MARGIN_CALL))
            if count["n"] > 1:
                await trio.sleep_forever()

        send, receive = trio.open_memory_channel[UserStreamEvent](100)
        async with trio.open_nursery() as nursery:
            stream = UserStream(
                cfg=ExchangeConfig(),
                rest=keys,
                ws_base="wss://x",
                send=send,
                connector=memory_connector(nursery, server),
            )
            await nursery.start(stream.run)
            t0 = trio.current_time()
            events = await collect(receive, 4)
            elapsed = trio.current_time() - t0
            nursery.cancel_scope.cancel()
        assert [type(e).__name__ for e in events] == [
            "ResyncNeeded",
            "MarginCall",
            "ResyncNeeded",
            "MarginCall",
        ]
        assert events[2] == ResyncNeeded(reason="reconnected")
        assert elapsed >= 1.0


class TestKeepaliveFailure:
    """A transient keepalive failure keeps the socket; the next keepalive is tried on schedule."""

    async def test_transient_keepalive_error_keeps_connection(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        from futures_actor.binance.errors import ServerError

        class Flaky(FakeKeys):
            async def keepalive_listen_key(self) -> None:
                self.keepalives.append(trio.current_time())
                if len(self.keepalives) == 1:
                    raise ServerError(
                        "Service Unavailable.", endpoint="PUT /fapi/v1/listenKey", http_status=503
                    )

        keys = Flaky()

        async def server(url: str, ws: WebSocketConnection) -> None:
            await trio.sleep(1500)
            await ws.send_message(json.dumps(MARGIN_CALL))
            await trio.sleep_forever()

        send, receive = trio.open_memory_channel[UserStreamEvent](100)
        async with trio.open_nursery() as nursery:
            stream = UserStream(
                cfg=ExchangeConfig(listen_key_keepalive_seconds=600.0),
                rest=keys,
                ws_base="wss://x",
                send=send,
                connector=memory_connector(nursery, server),
            )
            await nursery.start(stream.run)
            events = await collect(receive, 2)
            nursery.cancel_scope.cancel()
        assert isinstance(events[1], MarginCall)
        assert keys.created == 1
        assert keys.keepalives == [600.0, 1200.0]

"""User-data and market streams over in-memory WebSockets (mock clock) and over real loopback sockets."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from futures_actor.binance.sim import SimExchange, memory_connector, mock_transport, serve_http, serve_ws
from futures_actor.core.types import Candle
from tests.sim.conftest import API_KEY, T0, signed_query


async def _post(c: httpx.AsyncClient, ex: SimExchange, path: str, params: dict[str, Any]) -> httpx.Response:
    return await c.post(
        f"{path}?{signed_query(params, timestamp=ex.now_ms)}", headers={"X-MBX-APIKEY": API_KEY}
    )


async def test_user_events_in_order_for_a_triggered_stop(
    ex: SimExchange, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(base_url="https://fapi.binance.com", transport=mock_transport(ex)) as c,
    ):
        key = (await c.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": API_KEY})).json()["listenKey"]
        connect = memory_connector(ex, nursery)
        async with connect(f"wss://fstream.binance.com/private/ws/{key}") as ws:
            await trio.sleep(0.1)
            await _post(
                c,
                ex,
                "/fapi/v1/order",
                {
                    "symbol": "BTCUSDT",
                    "side": "BUY",
                    "type": "MARKET",
                    "quantity": "0.01",
                    "newClientOrderId": "e1",
                },
            )
            await _post(
                c,
                ex,
                "/fapi/v1/algoOrder",
                {
                    "algoType": "CONDITIONAL",
                    "symbol": "BTCUSDT",
                    "side": "SELL",
                    "type": "STOP_MARKET",
                    "triggerPrice": "59000",
                    "closePosition": "true",
                    "clientAlgoId": "s1",
                },
            )
            ex.set_price("BTCUSDT", "58000")
            got: list[str] = []
            with trio.move_on_after(5):
                while len(got) < 13:
                    msg = json.loads(await ws.get_message())
                    x = (
                        msg["o"].get("x") or msg["o"].get("X")
                        if "o" in msg
                        else msg["a"]["m"]
                        if "a" in msg
                        else ""
                    )
                    got.append(f"{msg['e']}:{x}")
            assert (
                got
                == [
                    "ORDER_TRADE_UPDATE:NEW",
                    "ORDER_TRADE_UPDATE:TRADE",
                    "TRADE_LITE:",
                    "ACCOUNT_UPDATE:ORDER",
                    "ALGO_UPDATE:NEW",
                    "ALGO_UPDATE:TRIGGERING",
                    "ALGO_UPDATE:TRIGGERED",
                    "ORDER_TRADE_UPDATE:NEW",
                    "ORDER_TRADE_UPDATE:TRADE",
                    "TRADE_LITE:",
                    "ACCOUNT_UPDATE:ORDER",
                    "ALGO_UPDATE:FINISHED",
                    "ALGO_UPDATE:EXPIRED",
                ][: len(got)]
            )
            assert len(got) >= 12
            # the stop's algo FINISHED carries the child's fill
            fin = next(e for e in ex.user_events if e["e"] == "ALGO_UPDATE" and e["o"]["X"] == "FINISHED")
            assert fin["o"]["caid"] == "s1"
            assert float(fin["o"]["aq"]) == 0.01
        nursery.cancel_scope.cancel()


async def test_funding_and_listen_key_expiry_pushed(
    ex: SimExchange, autojump_clock: trio.testing.MockClock
) -> None:
    ex.set_funding_rate("BTCUSDT", __import__("decimal").Decimal("-0.001"))
    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(base_url="https://fapi.binance.com", transport=mock_transport(ex)) as c,
    ):
        key = (await c.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": API_KEY})).json()["listenKey"]
        await _post(
            c,
            ex,
            "/fapi/v1/order",
            {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.1"},
        )
        async with memory_connector(ex, nursery)(f"wss://x/private/stream?listenKey={key}") as ws:
            await trio.sleep(0.1)
            ex.advance_to(T0 + 8 * 3_600_000)  # listenKey expires at +60 min, before the funding at 08:00
            first = json.loads(await ws.get_message())
            assert first["stream"] == key
            assert first["data"]["e"] == "listenKeyExpired"
            with trio.move_on_after(1) as scope:
                await ws.get_message()
            assert scope.cancelled_caught  # nothing after expiry
        funding = [e for e in ex.engine.account.income if e.income_type == "FUNDING_FEE"]
        assert len(funding) == 1
        assert funding[0].income < 0
        nursery.cancel_scope.cancel()


async def test_market_streams_and_routes(ex: SimExchange, autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        connect = memory_connector(ex, nursery)
        url = "wss://x/market/stream?streams=btcusdt@kline_5m/btcusdt@markPrice/btcusdt@bookTicker"
        async with connect(url) as market, connect("wss://x/public/ws/btcusdt@bookTicker") as public:
            await trio.sleep(0.1)
            ex.push_candle(
                "BTCUSDT", Candle(open_time_ms=T0, open=60000, high=60100, low=59900, close=60050, volume=3)
            )
            frames = [json.loads(await market.get_message()) for _ in range(2)]
            assert [f["stream"] for f in frames] == ["btcusdt@kline_5m", "btcusdt@markPrice"]
            assert frames[0]["data"]["k"]["x"] is True
            assert frames[0]["data"]["k"]["c"] == "60050"
            book = json.loads(await public.get_message())
            assert book["e"] == "bookTicker"
            assert book["b"] == "60050"
            await market.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
            reply = json.loads(await market.get_message())
            assert reply == {
                "result": ["btcusdt@kline_5m", "btcusdt@markPrice"],
                "id": 7,
            }  # bookTicker: wrong route
            assert ex.drop_subscribers("public") == 1
            with trio.fail_after(2), pytest.raises(ConnectionClosed):
                await public.get_message()
        nursery.cancel_scope.cancel()


async def test_end_to_end_over_loopback_sockets(ex: SimExchange) -> None:
    """Real sockets, real clock, short bounds: REST order + user stream frame over 127.0.0.1."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(lambda task_status: serve_http(ex, port=0, task_status=task_status))
            ws_port = await nursery.start(lambda task_status: serve_ws(ex, port=0, task_status=task_status))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                assert (await c.get("/fapi/v1/time")).json() == {"serverTime": ex.now_ms}
                key = (await c.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": API_KEY})).json()[
                    "listenKey"
                ]
                async with open_websocket_url(f"ws://127.0.0.1:{ws_port}/private/ws/{key}") as ws:
                    await trio.sleep(0.2)  # let the server register the subscription
                    r = await _post(
                        c,
                        ex,
                        "/fapi/v1/order",
                        {
                            "symbol": "ETHUSDT",
                            "side": "BUY",
                            "type": "MARKET",
                            "quantity": "0.01",
                            "newClientOrderId": "lb-1",
                        },
                    )
                    assert r.status_code == 200, r.text
                    ev = json.loads(await ws.get_message())
                    assert ev["e"] == "ORDER_TRADE_UPDATE"
                    assert ev["o"]["c"] == "lb-1"
                bad = await c.get(
                    "/fapi/v2/balance",
                    params={"timestamp": ex.now_ms, "signature": "00"},
                    headers={"X-MBX-APIKEY": API_KEY},
                )
                assert bad.status_code == 400
                assert bad.json()["code"] == -1022
            nursery.cancel_scope.cancel()


def test_cli_refuses_without_credentials(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from futures_actor.tools.sim_exchange_cmd import run_sim_exchange

    monkeypatch.delenv("BINANCE_API_KEY", raising=False)
    monkeypatch.delenv("BINANCE_API_SECRET", raising=False)
    argv = ["--port", "0", "--klines", str(tmp_path), "--exchange-info", str(tmp_path / "x.json")]
    assert run_sim_exchange(argv) == 2
    monkeypatch.setenv("BINANCE_API_KEY", "k")
    monkeypatch.setenv("BINANCE_API_SECRET", "s")
    assert run_sim_exchange(argv) == 2  # no klines files in the directory

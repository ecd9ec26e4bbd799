"""MarketData under the mock clock: REST backfill then live streams, continuity (duplicates, gaps,
out of order), reconnect backfill, staleness faults, book/mark forwarding, universe changes, and the
MarketRouter's delivery rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import pytest
import stamina
import structlog
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.market_data import MarketData, MarketRouter, kline_stream_names, split_stream_name
from futures_actor.actors.messages import BookUpdated, CandleClosed, MarkUpdated
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.sim import SimExchange, load_exchange_info, mock_transport
from futures_actor.binance.sim import memory_connector as sim_connector
from futures_actor.binance.ws_conn import memory_connector
from futures_actor.core.config import BotConfig
from futures_actor.core.types import INTERVAL_MS, Candle
from futures_actor.data.klines_csv import read_klines_candles

HOUR = 3_600_000
M5 = 300_000
START_MS = 486_111 * HOUR + 10_000  # 10 s past a whole hour
REST_BASE = "https://fapi.test"
WS_BASE = "wss://fstream.test"
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"  # bundled recorded data


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(autouse=True)
def _fast_retries() -> Any:
    with stamina.set_testing(True, attempts=2):
        yield


def make_cfg(*, stale_s: float = 7200.0) -> BotConfig:
    cfg = BotConfig()
    return msgspec.structs.replace(
        cfg,
        health=msgspec.structs.replace(cfg.health, stale_data_seconds=stale_s),
        market_data=msgspec.structs.replace(cfg.market_data, history_5m_bars=60, history_1h_bars=50),
    )


def price_at(open_ms: int) -> float:
    return 100.0 + (open_ms // M5) % 37


def kline_row(open_ms: int, step: int) -> list[Any]:
    p = price_at(open_ms)
    return [
        open_ms,
        str(p),
        str(p + 1),
        str(p - 1),
        str(p + 0.5),
        "10",
        open_ms + step - 1,
        "1000",
        5,
        "5",
        "500",
    ]


def server_ms() -> int:
    return START_MS + int(trio.current_time() * 1000)


@dataclass
class FakeRest:
    """A tiny `/fapi/v1/klines` (+ time): candles for any symbol, in-progress ones included."""

    failing: set[str] = field(default_factory=set)
    holes: set[tuple[str, str, int]] = field(default_factory=set)
    requests: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fapi/v1/time":
            return httpx.Response(200, json={"serverTime": server_ms()})
        assert request.url.path == "/fapi/v1/klines", request.url.path
        q = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        self.requests.append(q)
        symbol, tf = q["symbol"], q["interval"]
        if symbol in self.failing:
            return httpx.Response(503, json={"code": -1001, "msg": "Internal error"})
        step = INTERVAL_MS[tf]
        start = int(q["startTime"])
        end = min(int(q["endTime"]), server_ms())
        first = -(-start // step) * step
        rows = [kline_row(t, step) for t in range(first, end + 1, step) if (symbol, tf, t) not in self.holes][
            : int(q["limit"])
        ]
        return httpx.Response(200, json=rows)

    def count(self, symbol: str, tf: str) -> int:
        return sum(1 for q in self.requests if q["symbol"] == symbol and q["interval"] == tf)


@dataclass
class FakeWs:
    """Server side of the memory WebSocket: records connections; tests push frames to them."""

    conns: list[tuple[str, WebSocketConnection]] = field(default_factory=list)
    closers: list[trio.Event] = field(default_factory=list)

    async def handler(self, url: str, ws: WebSocketConnection) -> None:
        close = trio.Event()
        self.conns.append((url, ws))
        self.closers.append(close)

        async def drain() -> None:
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed:
                close.set()

        async with trio.open_nursery() as n:
            n.start_soon(drain)
            await close.wait()
            n.cancel_scope.cancel()

    def streams(self, index: int = -1) -> list[str]:
        url = self.conns[index][0]
        return parse_qs(urlsplit(url).query)["streams"][0].split("/")

    def conn_for(self, stream: str) -> WebSocketConnection:
        for url, ws in reversed(self.conns):
            if stream in parse_qs(urlsplit(url).query)["streams"][0].split("/"):
                return ws
        raise AssertionError(f"no connection serves {stream}")

    async def push(self, frame: str) -> None:
        stream = json.loads(frame)["stream"]
        await self.conn_for(stream).send_message(frame)

    def drop_all(self) -> None:
        for ev in self.closers:
            ev.set()


def kline_frame(symbol: str, tf: str, open_ms: int, *, close: float | None = None) -> str:
    step = INTERVAL_MS[tf]
    p = price_at(open_ms)
    c = p + 0.5 if close is None else close
    k = {
        "t": open_ms,
        "T": open_ms + step - 1,
        "s": symbol,
        "i": tf,
        "f": 1,
        "L": 2,
        "o": str(p),
        "c": str(c),
        "h": str(max(p + 1, c)),
        "l": str(min(p - 1, c)),
        "v": "10",
        "n": 5,
        "x": True,
        "q": "1000",
        "V": "5",
        "Q": "500",
        "B": "0",
    }
    data = {"e": "kline", "E": open_ms + step, "s": symbol, "k": k}
    return json.dumps({"stream": f"{symbol.lower()}@kline_{tf}", "data": data})


def book_frame(symbol: str, bid: str, ask: str) -> str:
    data = {"e": "bookTicker", "u": 1, "E": 5, "T": 5, "s": symbol, "b": bid, "B": "1", "a": ask, "A": "2"}
    return json.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data})


def mark_frame(symbol: str, price: str, rate: str, next_ms: int) -> str:
    data = {
        "e": "markPriceUpdate",
        "E": 7,
        "s": symbol,
        "p": price,
        "i": price,
        "P": price,
        "r": rate,
        "T": next_ms,
    }
    return json.dumps({"stream": f"{symbol.lower()}@markPrice", "data": data})


class Recorder:
    """A tap collecting every routed message in order."""

    def __init__(self) -> None:
        self.send, self._recv = trio.open_memory_channel[Any](100_000)

    def drain(self) -> list[Any]:
        out = []
        while True:
            try:
                out.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                return out


def candles(msgs: list[Any], symbol: str, tf: str, source: str | None = None) -> list[CandleClosed]:
    return [
        m
        for m in msgs
        if isinstance(m, CandleClosed)
        and m.symbol == symbol
        and m.interval == tf
        and (source is None or m.source == source)
    ]


def assert_contiguous(cs: list[CandleClosed], step: int) -> None:
    times = [c.candle.open_time_ms for c in cs]
    assert times == list(range(times[0], times[0] + step * len(times), step)), times


@dataclass
class Rig:
    md: MarketData
    rest: FakeRest
    ws: FakeWs
    tap: Recorder
    router: MarketRouter
    faults: list[tuple[str, str, str]]
    data: list[tuple[str, str, float]]


@asynccontextmanager
async def running(
    symbols: list[str], *, cfg: BotConfig | None = None, rest: FakeRest | None = None
) -> AsyncIterator[Rig]:
    cfg = cfg or make_cfg()
    fake = rest or FakeRest()
    fws = FakeWs()
    tap = Recorder()
    router = MarketRouter()
    router.add_tap(tap.send)
    faults: list[tuple[str, str, str]] = []
    data: list[tuple[str, str, float]] = []
    async with trio.open_nursery() as nursery:
        client = BinanceRestClient(
            cfg=cfg.exchange,
            wall_clock=TrioWallClock(START_MS),
            transport=httpx.MockTransport(fake),
            base_url=REST_BASE,
        )
        md = MarketData(
            cfg=cfg,
            rest=client,
            symbols=symbols,
            subscribers=router,
            connector=memory_connector(nursery, fws.handler),
            ws_base=WS_BASE,
            on_fault=lambda k, s, d: faults.append((str(k), s, d)),
            on_data=lambda s, st, ts: data.append((s, st, ts)),
        )
        await nursery.start(md.run)
        await trio.testing.wait_all_tasks_blocked()
        yield Rig(md, fake, fws, tap, router, faults, data)
        nursery.cancel_scope.cancel()
    await client.aclose()


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


# ---------------------------------------------------------------------------------------- tests


class TestStartup:
    """Start-up backfill over REST, then live streams."""

    async def test_backfill_then_live_in_order(self, autojump_clock: trio.testing.MockClock) -> None:
        async with running(["BTCUSDT", "ETHUSDT"]) as rig:
            msgs = rig.tap.drain()
            for sym in ("BTCUSDT", "ETHUSDT"):
                five = candles(msgs, sym, "5m", "rest")
                hour = candles(msgs, sym, "1h", "rest")
                assert len(five) == 60
                assert len(hour) == 50
                assert_contiguous(five, M5)
                assert_contiguous(hour, HOUR)
                # only closed candles: the one in progress at START_MS is not there
                assert five[-1].candle.open_time_ms + M5 <= START_MS < five[-1].candle.open_time_ms + 2 * M5
                assert hour[-1].candle.open_time_ms + HOUR <= START_MS
            # per symbol, 1h history first, then 5m
            kinds = [(m.symbol, m.interval) for m in msgs]
            assert kinds.index(("BTCUSDT", "5m")) > max(
                i for i, k in enumerate(kinds) if k == ("BTCUSDT", "1h")
            )
            # streams: every kind for every symbol, split by route
            subscribed = sorted(s for i in range(len(rig.ws.conns)) for s in rig.ws.streams(i))
            want = sorted(
                kline_stream_names("BTCUSDT", ["1h", "5m"]) + kline_stream_names("ETHUSDT", ["1h", "5m"])
            )
            assert subscribed == want
            await trio.sleep(M5 / 1000)  # the candle in progress at start closes
            nxt = candles(msgs, "BTCUSDT", "5m")[-1].candle.open_time_ms + M5
            await rig.ws.push(kline_frame("BTCUSDT", "5m", nxt))
            await settle()
            live = rig.tap.drain()
            assert [(m.source, m.candle.open_time_ms) for m in live] == [("ws", nxt)]
            assert rig.md.last_open_time_ms("BTCUSDT", "5m") == nxt
            assert ("BTCUSDT", "kline_5m") in [(s, st) for s, st, _ in rig.data]

    async def test_rest_failure_of_one_symbol_is_a_fault_not_a_crash(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        fake = FakeRest(failing={"ETHUSDT"})
        async with running(["BTCUSDT", "ETHUSDT"], rest=fake) as rig:
            msgs = rig.tap.drain()
            assert len(candles(msgs, "BTCUSDT", "5m")) == 60
            assert candles(msgs, "ETHUSDT", "5m") == []
            assert {(k, s) for k, s, _ in rig.faults} == {("SERVER_ERROR", "ETHUSDT")}
            # the exchange recovers; the next live candle brings the history first, then itself
            fake.failing.clear()
            await trio.sleep(M5 / 1000)
            t = (server_ms() // M5 - 1) * M5
            await rig.ws.push(kline_frame("ETHUSDT", "5m", t))
            await settle()
            eth = candles(rig.tap.drain(), "ETHUSDT", "5m")
            assert len(eth) == 61
            assert eth[-1].source == "ws"
            assert eth[-1].candle.open_time_ms == t
            assert all(c.source == "rest" for c in eth[:-1])
            assert_contiguous(eth, M5)

    async def test_history_loader_returns_closed_candles(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with running(["BTCUSDT"]) as rig:
            five, hour = await rig.md.history("BTCUSDT")
            assert len(five) == 60
            assert len(hour) == 50
            assert all(isinstance(c, Candle) for c in five)
            assert five[-1].open_time_ms + M5 <= server_ms()
            assert hour[-1].open_time_ms + HOUR <= server_ms() < hour[-1].open_time_ms + 2 * HOUR


class TestContinuity:
    """Duplicates, out-of-order and malformed candles dropped; gaps backfilled first."""

    async def test_duplicate_of_backfilled_candle_dropped(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with running(["BTCUSDT"]) as rig:
            last = candles(rig.tap.drain(), "BTCUSDT", "5m")[-1].candle.open_time_ms
            await rig.ws.push(kline_frame("BTCUSDT", "5m", last))
            await settle()
            assert rig.tap.drain() == []
            assert rig.md.last_open_time_ms("BTCUSDT", "5m") == last

    async def test_out_of_order_dropped_and_logged(self, autojump_clock: trio.testing.MockClock) -> None:
        async with running(["BTCUSDT"]) as rig:
            last = candles(rig.tap.drain(), "BTCUSDT", "5m")[-1].candle.open_time_ms
            with structlog.testing.capture_logs() as logs:
                await rig.ws.push(kline_frame("BTCUSDT", "5m", last - 3 * M5))
                await settle()
            assert rig.tap.drain() == []
            assert any(e["event"] == "kline_out_of_order" for e in logs)

    async def test_malformed_live_candle_rejected(self, autojump_clock: trio.testing.MockClock) -> None:
        async with running(["BTCUSDT"]) as rig:
            last = candles(rig.tap.drain(), "BTCUSDT", "5m")[-1].candle.open_time_ms
            await trio.sleep(M5 / 1000)
            frame = json.loads(kline_frame("BTCUSDT", "5m", last + M5))
            frame["data"]["k"]["h"] = "1"  # high below open and close
            with structlog.testing.capture_logs() as logs:
                await rig.ws.push(json.dumps(frame))
                await settle()
            assert rig.tap.drain() == []
            assert any(e["event"] == "kline_rejected" and e["symbol"] == "BTCUSDT" for e in logs)

    async def test_gap_backfilled_over_rest_before_the_new_candle(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with running(["BTCUSDT"]) as rig:
            last = candles(rig.tap.drain(), "BTCUSDT", "5m")[-1].candle.open_time_ms
            await trio.sleep(4 * M5 / 1000)
            before = rig.rest.count("BTCUSDT", "5m")
            await rig.ws.push(kline_frame("BTCUSDT", "5m", last + 3 * M5))
            await settle()
            got = [(m.source, m.candle.open_time_ms) for m in rig.tap.drain()]
            assert got == [("rest", last + M5), ("rest", last + 2 * M5), ("ws", last + 3 * M5)]
            assert rig.rest.count("BTCUSDT", "5m") == before + 1

    async def test_unfillable_gap_holds_the_candle_back_until_rest_has_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        fake = FakeRest()
        async with running(["BTCUSDT"], rest=fake) as rig:
            last = candles(rig.tap.drain(), "BTCUSDT", "5m")[-1].candle.open_time_ms
            fake.holes.add(("BTCUSDT", "5m", last + M5))
            await trio.sleep(4 * M5 / 1000)
            await rig.ws.push(kline_frame("BTCUSDT", "5m", last + 3 * M5))
            await settle()
            assert rig.tap.drain() == []  # never a candle after a hole
            assert rig.faults
            assert rig.faults[-1][1] == "BTCUSDT"
            assert rig.md.last_open_time_ms("BTCUSDT", "5m") == last
            fake.holes.clear()
            await rig.ws.push(kline_frame("BTCUSDT", "5m", last + 4 * M5))
            await settle()
            got = [m.candle.open_time_ms for m in rig.tap.drain()]
            assert got == [last + k * M5 for k in range(1, 5)]


async def walk_to_hour(rig: Rig) -> int:
    """Push the live 5m candles of the current hour up to (not including) the one closing on the hour;
    returns the open time of that last one. 1h candles are not pushed."""
    last = rig.md.last_open_time_ms("BTCUSDT", "5m")
    assert last is not None
    t = last + M5
    while (t + M5) % HOUR:
        await trio.sleep(M5 / 1000)
        await rig.ws.push(kline_frame("BTCUSDT", "5m", t))
        t += M5
    await trio.sleep(M5 / 1000)
    return t


class TestTimeframeOrder:
    """A 1h candle goes out before the 5m candle closing with it."""

    async def test_5m_on_the_hour_waits_for_the_1h(self, autojump_clock: trio.testing.MockClock) -> None:
        async with running(["BTCUSDT"]) as rig:
            rig.tap.drain()
            t = await walk_to_hour(rig)
            assert len(rig.tap.drain()) == 11
            await rig.ws.push(kline_frame("BTCUSDT", "5m", t))
            await trio.sleep(1)  # shorter than market_data.trend_close_wait_seconds
            assert rig.tap.drain() == []
            await rig.ws.push(kline_frame("BTCUSDT", "1h", t + M5 - HOUR))
            await trio.sleep(1)
            got = [(m.interval, m.source, m.candle.open_time_ms) for m in rig.tap.drain()]
            assert got == [("1h", "ws", t + M5 - HOUR), ("5m", "ws", t)]

    async def test_late_1h_fetched_over_rest(self, autojump_clock: trio.testing.MockClock) -> None:
        async with running(["BTCUSDT"]) as rig:
            rig.tap.drain()
            t = await walk_to_hour(rig)
            rig.tap.drain()
            with structlog.testing.capture_logs() as logs:
                await rig.ws.push(kline_frame("BTCUSDT", "5m", t))
                await trio.sleep(make_cfg().market_data.trend_close_wait_seconds + 1)
            got = [(m.interval, m.source, m.candle.open_time_ms) for m in rig.tap.drain()]
            assert got == [("1h", "rest", t + M5 - HOUR), ("5m", "ws", t)]
            assert any(e["event"] == "trend_close_late" for e in logs)

    async def test_5m_gap_brings_the_missed_1h_first(self, autojump_clock: trio.testing.MockClock) -> None:
        async with running(["BTCUSDT"]) as rig:
            last = candles(rig.tap.drain(), "BTCUSDT", "5m")[-1].candle.open_time_ms
            await trio.sleep(HOUR / 1000 + 60)
            t = last + 13 * M5  # closes 5 minutes after the next hour
            await rig.ws.push(kline_frame("BTCUSDT", "5m", t))
            await trio.sleep(1)
            got = [(m.interval, m.source, m.candle.open_time_ms) for m in rig.tap.drain()]
            assert got[0] == ("1h", "rest", last + M5)
            assert [g[2] for g in got[1:]] == [last + k * M5 for k in range(1, 14)]
            assert got[-1] == ("5m", "ws", t)


class TestReconnectAndStaleness:
    """StreamGap backfills; silent streams raise a fault."""

    async def test_reconnect_backfills_missed_candles(self, autojump_clock: trio.testing.MockClock) -> None:
        async with running(["BTCUSDT"]) as rig:
            last5 = candles(rig.tap.drain(), "BTCUSDT", "5m")[-1].candle.open_time_ms
            await trio.sleep(16 * 60 + 7)  # three 5m candles close (off the 60 s ping beat)
            connects = rig.md.streams.connects if rig.md.streams else 0
            rig.ws.drop_all()
            await trio.sleep(120)  # reconnect backoff
            await settle()
            assert rig.md.streams is not None
            assert rig.md.streams.connects > connects
            got = [(m.source, m.interval, m.candle.open_time_ms) for m in rig.tap.drain()]
            assert got == [("rest", "5m", last5 + k * M5) for k in range(1, 4)]

    async def test_stale_stream_reports_fault(self, autojump_clock: trio.testing.MockClock) -> None:
        async with running(["BTCUSDT"], cfg=make_cfg(stale_s=90.0)) as rig:
            await rig.ws.push(book_frame("BTCUSDT", "100.0", "100.1"))
            await trio.sleep(100)
            await settle()
            stale = [(k, s, d) for k, s, d in rig.faults if k == "STALE_DATA"]
            assert stale
            assert all(s == "BTCUSDT" for _, s, _ in stale)
            assert any("markPrice" in d for _, _, d in stale)


class TestForwarding:
    """Book and mark events reach the router as BookUpdated / MarkUpdated."""

    async def test_book_and_mark(self, autojump_clock: trio.testing.MockClock) -> None:
        inbox_send, inbox_recv = trio.open_memory_channel[Any](10_000)
        async with running(["BTCUSDT", "ETHUSDT"]) as rig:
            rig.router.add_symbol("ETHUSDT", inbox_send)
            rig.tap.drain()
            await rig.ws.push(book_frame("ETHUSDT", "2500.5", "2500.6"))
            await rig.ws.push(mark_frame("ETHUSDT", "2500.55", "-0.0002", 1_750_003_200_000))
            await rig.ws.push(book_frame("BTCUSDT", "100000", "100000.1"))
            await settle()
            mine = [inbox_recv.receive_nowait() for _ in range(2)]
            assert mine[0] == BookUpdated(symbol="ETHUSDT", bid=2500.5, ask=2500.6, ts_ms=5)
            assert mine[1] == MarkUpdated(
                symbol="ETHUSDT",
                mark_price=2500.55,
                funding_rate=-0.0002,
                next_funding_ms=1_750_003_200_000,
                ts_ms=7,
            )
            with pytest.raises(trio.WouldBlock):
                inbox_recv.receive_nowait()  # BTC's book went to the tap only
            assert len(rig.tap.drain()) == 3
            assert {(s, st) for s, st, _ in rig.data} >= {("ETHUSDT", "bookTicker"), ("ETHUSDT", "markPrice")}


class TestUniverse:
    """set_symbols backfills new symbols first, then resubscribes."""

    async def test_add_and_remove(self, autojump_clock: trio.testing.MockClock) -> None:
        async with running(["BTCUSDT"]) as rig:
            rig.tap.drain()
            first_conns = len(rig.ws.conns)
            await rig.md.set_symbols(["ETHUSDT"])
            await settle()
            msgs = rig.tap.drain()
            assert len(candles(msgs, "ETHUSDT", "5m", "rest")) == 60
            assert len(candles(msgs, "ETHUSDT", "1h", "rest")) == 50
            assert candles(msgs, "BTCUSDT", "5m") == []
            new = sorted(s for i in range(first_conns, len(rig.ws.conns)) for s in rig.ws.streams(i))
            assert new == sorted(kline_stream_names("ETHUSDT", ["1h", "5m"]))
            assert rig.md.symbols == ["ETHUSDT"]
            assert rig.md.last_open_time_ms("BTCUSDT", "5m") is None
            # the old connections are gone: BTC events no longer arrive (and would be ignored)
            await rig.ws.push(book_frame("ETHUSDT", "1", "2"))
            await settle()
            assert [type(m) for m in rig.tap.drain()] == [BookUpdated]


class _Broken(trio.abc.SendChannel[Any]):
    async def send(self, value: Any) -> None:
        raise trio.BrokenResourceError

    async def aclose(self) -> None:
        return None


class TestRouter:
    """Routes per symbol, taps for all, broken inboxes removed, high fill logged."""

    async def test_routing(self, autojump_clock: trio.testing.MockClock) -> None:
        router = MarketRouter()
        a_send, a_recv = trio.open_memory_channel[Any](10)
        tap_send, tap_recv = trio.open_memory_channel[Any](10)
        router.add_symbol("AUSDT", a_send)
        router.add_tap(tap_send)
        msg = BookUpdated(symbol="AUSDT", bid=1.0, ask=2.0, ts_ms=1)
        other = BookUpdated(symbol="BUSDT", bid=1.0, ask=2.0, ts_ms=1)
        await router.publish("AUSDT", msg)
        await router.publish("BUSDT", other)
        assert a_recv.receive_nowait() == msg
        with pytest.raises(trio.WouldBlock):
            a_recv.receive_nowait()
        assert [tap_recv.receive_nowait(), tap_recv.receive_nowait()] == [msg, other]
        router.remove_symbol("AUSDT")
        assert router.symbols == []

    async def test_broken_inbox_removed_and_logged(self, autojump_clock: trio.testing.MockClock) -> None:
        router = MarketRouter()
        router.add_symbol("AUSDT", _Broken())
        with structlog.testing.capture_logs() as logs:
            await router.publish("AUSDT", BookUpdated(symbol="AUSDT", bid=1.0, ask=2.0, ts_ms=1))
        assert router.symbols == []
        assert logs[0]["event"] == "market_route_closed"
        assert logs[0]["symbol"] == "AUSDT"

    async def test_high_fill_logged_once(self, autojump_clock: trio.testing.MockClock) -> None:
        router = MarketRouter()
        send, _recv = trio.open_memory_channel[Any](5)
        router.add_symbol("AUSDT", send)
        msg = BookUpdated(symbol="AUSDT", bid=1.0, ask=2.0, ts_ms=1)
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                await router.publish("AUSDT", msg)
        assert [e["event"] for e in logs] == ["inbox_fill_high"]
        assert logs[0]["used"] == 4
        assert logs[0]["size"] == 5

    def test_stream_names(self) -> None:
        assert split_stream_name("btcusdt@kline_5m") == ("BTCUSDT", "kline_5m")
        assert kline_stream_names("BTCUSDT", ["5m"]) == [
            "btcusdt@kline_5m",
            "btcusdt@bookTicker",
            "btcusdt@markPrice",
        ]


class TestAgainstSim:
    """The real REST client and streams against the fake exchange replaying recorded BTCUSDT candles."""

    async def test_recorded_candles_flow_through(self, autojump_clock: trio.testing.MockClock) -> None:
        first, n_hist, n_live = 1_735_603_200_000, 720, 24  # 2024-12-31 00:00 UTC; 60 h of history
        recorded = read_klines_candles(SAMPLE / "BTCUSDT-5m.csv.gz", interval="5m", limit=n_hist + n_live)
        start = first + n_hist * M5 + 10_000
        info, specs = load_exchange_info(
            SAMPLE / "exchangeInfo_mainnet_2024-10-02.json",
            symbols=["BTCUSDT"],
        )
        ex = SimExchange(
            exchange_info=info,
            specs=specs,
            execution=BotConfig().execution,
            api_key="k",
            api_secret="s",
            start_ms=start,
        )
        ex.load_candles("BTCUSDT", recorded)
        cfg = make_cfg()
        tap = Recorder()
        router = MarketRouter()
        router.add_tap(tap.send)
        async with trio.open_nursery() as nursery:
            wall = TrioWallClock(start)
            client = BinanceRestClient(
                cfg=cfg.exchange, wall_clock=wall, transport=mock_transport(ex), base_url=REST_BASE
            )
            md = MarketData(
                cfg=cfg,
                rest=client,
                symbols=["BTCUSDT"],
                subscribers=router,
                connector=sim_connector(ex, nursery),
                ws_base=WS_BASE,
            )
            await nursery.start(md.run)
            for _ in range(n_live):
                await trio.sleep(M5 / 1000)
                ex.advance_to(wall.now_ms())
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
        await client.aclose()
        msgs = [m for m in tap.drain() if isinstance(m, CandleClosed)]
        rest5 = candles(msgs, "BTCUSDT", "5m", "rest")
        assert [c.candle for c in rest5] == recorded[n_hist - 60 : n_hist]
        assert len(candles(msgs, "BTCUSDT", "1h", "rest")) == 50
        live = [m for m in msgs if m.source == "ws"]
        assert [m.candle for m in live if m.interval == "5m"] == recorded[n_hist:]
        hours = [i for i, m in enumerate(live) if m.interval == "1h"]
        assert len(hours) == 2
        for i in hours:  # each 1h right before the 5m candle closing with it
            nxt = live[i + 1]
            assert nxt.interval == "5m"
            assert nxt.candle.open_time_ms + M5 == live[i].candle.open_time_ms + HOUR
        assert live[hours[0]].candle.high == max(c.high for c in recorded[n_hist : n_hist + 12])

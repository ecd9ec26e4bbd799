"""Intra-candle market data of the fake exchange (issue 11, gap 3): a recorded candle streams like Binance.

The frames of one candle reproduce it exactly; the cadences follow the exchange clock; REST `klines` ends
with the forming candle; the bot's own market-data path acts only on closed candles and its stale-data
watchdog stays quiet at speed 1.
"""

from __future__ import annotations

import itertools
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.market_data import MarketData, MarketRouter
from futures_actor.actors.messages import BookUpdated, CandleClosed, MarkUpdated
from futures_actor.binance.market_ws import decode_market_frame
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.sim import (
    NewOrder,
    SimExchange,
    load_exchange_info,
    memory_connector,
    mock_transport,
)
from futures_actor.binance.sim.exchange import Subscriber
from futures_actor.binance.sim.feed import CandlePath, KlineState, MarketFeed, candle_stats
from futures_actor.core.config import BotConfig
from futures_actor.core.types import Candle
from futures_actor.data.klines_csv import read_klines_candles
from tests.sim.conftest import API_KEY, API_SECRET, EXCHANGE_INFO

M5 = 300_000
HOUR = 3_600_000
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
FEED = MarketFeed()
TICK = Decimal("0.1")
LOT = Decimal("0.001")
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC (a whole hour)


def random_candle(rng: random.Random, t: int) -> Candle:
    """A random candle on BTCUSDT's tick and lot (one in five flat or one tick wide)."""
    base = rng.randint(500_000, 700_000)
    kind = rng.random()
    if kind < 0.1:
        o = h = lo = c = base
    elif kind < 0.2:
        lo, h = base, base + 1
        o, c = rng.choice((lo, h)), rng.choice((lo, h))
    else:
        lo, h = base, base + rng.randint(2, 3000)
        o, c = rng.randint(lo, h), rng.randint(lo, h)
    vol = rng.choice((0, rng.randint(1, 2_000_000)))
    return Candle(
        open_time_ms=t,
        open=o / 10,
        high=h / 10,
        low=lo / 10,
        close=c / 10,
        volume=vol / 1000,
    )


def states_of(c: Candle) -> list[KlineState]:
    """The running kline at every kline frame of `c`, then the closed one."""
    path = CandlePath(c, interval_ms=M5, feed=FEED, tick=TICK, lot=LOT)
    return [path.state_at(off) for off in [*range(0, M5 - 1, FEED.kline_ms), M5 - 1]]


def runs(flags: list[bool]) -> int:
    """How many separate runs of True there are."""
    return sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))


class TestCandlePath:
    """A candle's frames: its exact OHLCV at the close, a plausible path before it."""

    def test_frames_reproduce_the_candle_exactly(self) -> None:
        """Property over 150 seeded random candles (flat, one-tick and wide ones)."""
        rng = random.Random(11)
        for n in range(150):
            c = random_candle(rng, T0 + n * M5)
            states = states_of(c)
            frames = [s.candle for s in states]
            assert len(frames) == M5 // FEED.kline_ms + 1
            assert frames[-1] == c  # the closed frame is the recorded candle, exact
            assert states[-1].stats == candle_stats(c, FEED)
            assert all(f.open == c.open for f in frames)
            assert all(f.open_time_ms == c.open_time_ms for f in frames)
            for a, b in itertools.pairwise(states):
                assert b.candle.high >= a.candle.high
                assert b.candle.low <= a.candle.low
                assert b.candle.volume >= a.candle.volume
                assert b.stats.quote_volume >= a.stats.quote_volume
                assert b.stats.trades >= a.stats.trades
                assert b.stats.taker_buy_volume >= a.stats.taker_buy_volume
            for f in frames:
                assert c.low <= f.low <= f.close <= f.high <= c.high
                assert f.volume <= c.volume
            assert max(f.high for f in frames) == c.high
            assert min(f.low for f in frames) == c.low
            if c.high > c.low:  # the high and the low are each reached once (one run of frames)
                assert runs([f.close == c.high for f in frames[:-1]]) <= 1
                assert runs([f.close == c.low for f in frames[:-1]]) <= 1
                assert any(f.close == c.high for f in frames)
                assert any(f.close == c.low for f in frames)

    def test_path_visits_the_nearer_extreme_first(self) -> None:
        c = Candle(open_time_ms=T0, open=100.0, high=101.0, low=95.0, close=97.0, volume=30.0)
        path = CandlePath(c, interval_ms=M5, feed=FEED, tick=TICK, lot=LOT)
        assert [p for _, p in path.corners] == [
            Decimal("100.0"),
            Decimal("101.0"),
            Decimal("95.0"),
            Decimal("97.0"),
        ]
        (_, _), (t1, _), (t2, _), (t3, _) = path.corners
        assert 0 < t1 < t2 < t3 == M5 - 1  # constant speed: 1, 6 and 2 points take 1/9, 6/9, 2/9
        assert (t1 % FEED.kline_ms, t2 % FEED.kline_ms) == (0, 0)
        assert abs(t1 - (M5 - 1) / 9) <= FEED.kline_ms
        assert abs(t2 - 7 * (M5 - 1) / 9) <= FEED.kline_ms
        assert (path.price_at(t1), path.price_at(t2)) == (Decimal("101.0"), Decimal("95.0"))

    def test_derived_volumes_are_plausible(self) -> None:
        up = Candle(open_time_ms=T0, open=100.0, high=110.0, low=100.0, close=110.0, volume=10.0)
        s = candle_stats(up, FEED)
        assert s.quote_volume == 10.0 * (100 + 110 + 100 + 110) / 4
        assert s.trades == round(s.quote_volume / FEED.trade_notional) or s.trades == 1
        assert s.taker_buy_volume == 10.0 * (0.5 + FEED.taker_tilt)  # buyers took more on the way up
        recorded = Candle(
            open_time_ms=T0, open=1.0, high=1.0, low=1.0, close=1.0, volume=5.0, quote_volume=7.0, trades=3
        )
        assert (candle_stats(recorded).quote_volume, candle_stats(recorded).trades) == (7.0, 3)
        flat = Candle(open_time_ms=T0, open=1.0, high=1.0, low=1.0, close=1.0, volume=0.0)
        assert (candle_stats(flat).trades, candle_stats(flat).taker_buy_volume) == (0, 0.0)

    @pytest.mark.parametrize(
        ("field", "value"),
        [("kline_ms", 0), ("mark_ms", -1), ("trade_notional", 0.0), ("taker_tilt", 0.7)],
    )
    def test_bad_feed_parameter_is_named(self, field: str, value: Any) -> None:
        with pytest.raises(ValueError, match=f"MarketFeed.{field}"):
            MarketFeed(**{field: value})


def feed_exchange(candles: list[Candle], *, start_ms: int, feed: MarketFeed = FEED) -> SimExchange:
    info, specs = load_exchange_info(EXCHANGE_INFO, symbols=["BTCUSDT"])
    ex = SimExchange(
        exchange_info=info,
        specs=specs,
        execution=BotConfig().execution,
        api_key=API_KEY,
        api_secret=API_SECRET,
        start_ms=start_ms,
        feed=feed,
    )
    ex.load_candles("BTCUSDT", candles)
    return ex


STREAMS = {
    "btcusdt@kline_5m",
    "btcusdt@kline_1h",
    "btcusdt@markPrice",
    "btcusdt@markPrice@1s",
}


def drain(sub: Subscriber) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(json.loads(sub.receive.receive_nowait()))
        except trio.WouldBlock:
            return out


def recorded(n: int) -> list[Candle]:
    return read_klines_candles(SAMPLE / "BTCUSDT-5m.csv.gz", interval="5m", limit=n)


class TestExchangeFeed:
    """The fake's streams and REST while a recorded candle forms (exchange clock = the test's)."""

    def test_cadences_and_order_of_one_candle(self) -> None:
        cs = recorded(15)  # from 2024-12-31 00:00 UTC; candle 12 opens the second hour
        first = cs[0].open_time_ms
        ex = feed_exchange(cs, start_ms=first + 13 * M5 - 1000)  # cs[13] opens a second later
        market = Subscriber(route="market", combined=True, streams=set(STREAMS), listen_keys=set())
        book = Subscriber(route="public", combined=True, streams={"btcusdt@bookTicker"}, listen_keys=set())
        ex.subscribe(market)
        ex.subscribe(book)
        frames: list[dict[str, Any]] = []
        books: list[dict[str, Any]] = []
        t = ex.now_ms
        while t < first + 14 * M5:  # drained every second: the subscriber's buffer is bounded
            t += 1000
            ex.advance_to(t)
            frames += drain(market)
            books += drain(book)
        by_stream: dict[str, list[dict[str, Any]]] = {}
        for f in frames:
            by_stream.setdefault(f["stream"], []).append(f["data"])
        k5 = [d for d in by_stream["btcusdt@kline_5m"] if d["k"]["t"] == cs[13].open_time_ms]
        assert len(k5) == M5 // FEED.kline_ms + 1  # 1,200 forming frames and the closed one
        assert [d["k"]["x"] for d in k5] == [False] * (len(k5) - 1) + [True]
        times = [d["E"] for d in k5]
        assert times[:-1] == list(range(cs[13].open_time_ms, cs[13].open_time_ms + M5, FEED.kline_ms))
        assert times[-1] == cs[13].open_time_ms + M5 - 1
        last = k5[-1]["k"]
        c = cs[13]
        assert (float(last["o"]), float(last["h"]), float(last["l"]), float(last["c"]), float(last["v"])) == (
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
        )
        assert float(last["q"]) > 0
        assert last["n"] > 0
        assert 0 < float(last["V"]) < c.volume
        hour = [
            d["k"] for d in by_stream["btcusdt@kline_1h"] if c.open_time_ms <= d["E"] < c.open_time_ms + M5
        ]
        assert len(hour) == len(k5)
        assert not any(k["x"] for k in hour)  # the hour is not over
        assert hour[-1]["t"] == first + HOUR  # cs[12] and cs[13]
        assert float(hour[-1]["h"]) == max(x.high for x in cs[12:14])
        assert float(hour[-1]["v"]) == pytest.approx(sum(x.volume for x in cs[12:14]))
        assert float(hour[0]["v"]) == cs[12].volume  # cs[13] just opened
        in_candle = [
            d for d in by_stream["btcusdt@markPrice"] if c.open_time_ms <= d["E"] < c.open_time_ms + M5
        ]
        assert [d["E"] % FEED.mark_ms for d in in_candle] == [0] * (M5 // FEED.mark_ms)
        fast = [
            d for d in by_stream["btcusdt@markPrice@1s"] if c.open_time_ms <= d["E"] < c.open_time_ms + M5
        ]
        assert len(fast) == M5 // FEED.mark_fast_ms
        in_book = [b for b in books if c.open_time_ms <= b["data"]["E"] < c.open_time_ms + M5]
        assert len(in_book) == M5 // FEED.book_ms
        assert all(float(b["data"]["b"]) < float(b["data"]["a"]) for b in in_book)
        assert [f["data"]["E"] for f in frames] == sorted(f["data"]["E"] for f in frames)  # in time order

    def test_forming_candle_is_the_last_rest_row(self) -> None:
        cs = recorded(30)
        start = cs[20].open_time_ms + 100_000  # a third into candle 20
        ex = feed_exchange(cs, start_ms=start)
        ex.advance_to(start)
        path = CandlePath(cs[20], interval_ms=M5, feed=FEED, tick=TICK, lot=LOT)
        rows = get(ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="5m", limit=3)
        assert [r[0] for r in rows] == [cs[18].open_time_ms, cs[19].open_time_ms, cs[20].open_time_ms]
        assert rows[-1][6] > ex.now_ms  # close time in the future: in progress
        forming = path.state_at(100_000).candle
        assert float(rows[-1][4]) == forming.close == float(ex.engine.last_price("BTCUSDT") or 0)
        assert float(rows[-1][5]) == forming.volume < cs[20].volume
        assert float(rows[-2][5]) == cs[19].volume
        assert rows[-2][8] > 0  # trades and taker-buy volume derived
        assert float(rows[-2][9]) > 0
        ex.advance_to(cs[21].open_time_ms - 1)  # candle 20 closes
        rows = get(ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="5m", limit=2)
        assert (rows[-1][0], float(rows[-1][2])) == (cs[20].open_time_ms, cs[20].high)
        ex.advance_to(cs[21].open_time_ms)
        rows = get(ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="5m", limit=2)
        assert (rows[-1][0], float(rows[-1][5])) == (cs[21].open_time_ms, 0.0)  # just opened

    def test_orders_fill_along_the_path_while_the_candle_forms(self) -> None:
        """A resting buy below the market fills when the path reaches it, not at the candle's close."""
        cs = recorded(30)
        c = cs[20]
        ex = feed_exchange(cs, start_ms=c.open_time_ms)
        ex.advance_to(c.open_time_ms)
        path = CandlePath(c, interval_ms=M5, feed=FEED, tick=TICK, lot=LOT)
        t_low = next(t for t, p in path.corners if p == Decimal(repr(c.low)))
        level = Decimal(repr(c.low)) + TICK
        assert level < Decimal(repr(c.open))
        ex.engine.place_order(_limit_buy(level))  # through the engine: REST placement is tested elsewhere
        ex.advance_to(c.open_time_ms + t_low + FEED.grid_ms)
        (order,) = ex.engine.orders.values()
        assert order.executed_qty > 0  # reached on the way down
        assert ex.now_ms < c.open_time_ms + M5 - 1


def _limit_buy(price: Decimal) -> NewOrder:
    return NewOrder(
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        quantity=Decimal("0.002"),
        price=price,
        time_in_force="GTC",
        client_order_id="feed-buy-1",
    )


def get(ex: SimExchange, path: str, **params: Any) -> Any:
    async def run() -> Any:
        async with httpx.AsyncClient(base_url="https://fapi.binance.com", transport=mock_transport(ex)) as c:
            r = await c.get(path, params=params)
            assert r.status_code == 200, r.text
            return r.json()

    return trio.run(run)


class TestBotMarketData:
    """The bot's MarketData against the feed: closed candles only, no stale-data fault at speed 1."""

    async def test_only_closed_candles_reach_the_symbols(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        n_hist, n_live = 720, 3
        cs = recorded(n_hist + n_live)
        start = cs[n_hist].open_time_ms + 10_000
        ex = feed_exchange(cs, start_ms=start)
        cfg = BotConfig()  # the default stale-data bound (90 s)
        faults: list[tuple[str, str, str]] = []
        router = MarketRouter()
        send, recv = trio.open_memory_channel[Any](100_000)
        router.add_tap(send)
        async with trio.open_nursery() as nursery:
            wall = TrioWallClock(start)
            client = BinanceRestClient(
                cfg=cfg.exchange, wall_clock=wall, transport=mock_transport(ex), base_url="https://fapi.test"
            )
            md = MarketData(
                cfg=cfg,
                rest=client,
                symbols=["BTCUSDT"],
                subscribers=router,
                connector=memory_connector(ex, nursery),
                ws_base="wss://fstream.test",
                on_fault=lambda kind, symbol, detail: faults.append((kind, symbol, detail)),
            )
            await nursery.start(md.run)
            end = cs[-1].open_time_ms + M5 + 1000
            while wall.now_ms() < end:  # speed 1: the exchange follows the clock in 250 ms steps
                await trio.sleep(FEED.kline_ms / 1000)
                ex.advance_to(wall.now_ms())
            nursery.cancel_scope.cancel()
        await client.aclose()
        msgs = []
        while True:
            try:
                msgs.append(recv.receive_nowait())
            except trio.WouldBlock:
                break
        live = [m for m in msgs if isinstance(m, CandleClosed) and m.source == "ws"]
        ohlcv = [(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume) for c in cs[n_hist:]]
        got = [m.candle for m in live if m.interval == "5m"]  # the one forming at start, then the others
        assert [(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume) for c in got] == ohlcv
        rest5 = [m for m in msgs if isinstance(m, CandleClosed) and m.source == "rest" and m.interval == "5m"]
        assert rest5[-1].candle.open_time_ms == cs[n_hist - 1].open_time_ms  # not the one forming
        assert faults == []  # no stale-data fault from intra-candle data
        marks = [m for m in msgs if isinstance(m, MarkUpdated)]
        books = [m for m in msgs if isinstance(m, BookUpdated)]
        assert len(marks) >= (end - start) // FEED.mark_ms - 2  # every 3 s ...
        assert len(books) >= (end - start) // FEED.book_ms - 8  # ... and every 250 ms: never stale

    def test_forming_frame_decodes_to_nothing(self) -> None:
        cs = recorded(3)
        ex = feed_exchange(cs, start_ms=cs[1].open_time_ms)
        sub = Subscriber(route="market", combined=True, streams={"btcusdt@kline_5m"}, listen_keys=set())
        ex.subscribe(sub)
        ex.advance_to(cs[1].open_time_ms + 60_000)
        raw = sub.receive.receive_nowait()
        assert json.loads(raw)["data"]["k"]["x"] is False
        assert decode_market_frame(raw) is None

"""The replay feed under the mock clock: discovery, event order at each close time (look-ahead path,
1h before 5m, symbols interleaved by time), symbols joining late, funding events, gaps, bad data,
and a slice of the real recorded klines (counts and determinism)."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.messages import CandleClosed, MarkUpdated
from futures_actor.actors.replay_feed import ReplayDataError, ReplayFeed, discover_symbols, read_funding
from futures_actor.core.config import ReplayConfig
from futures_actor.core.types import Candle
from futures_actor.data.klines_csv import KlinesFileError

M5 = 300_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 486_111 * HOUR  # a whole hour (and day-independent)
HEADER = "open_time_ms,open,high,low,close,volume,close_time_ms,quote_volume,trades,taker_buy_base,taker_buy_quote\n"
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"  # bundled recorded klines and funding


def write_klines(
    path: Path, start_ms: int, count: int, step: int, *, base: float = 100.0, skip: int = -1
) -> None:
    lines = [HEADER]
    for i in range(count):
        if i == skip:
            continue
        t = start_ms + i * step
        p = base + i
        lines.append(f"{t},{p},{p + 2},{p - 1},{p + 1},{i % 3},{t + step - 1},,,,\n")
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("".join(lines))


def write_funding(path: Path, symbol: str, times: list[int], rates: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["funding_time_ms,symbol,funding_rate,mark_price_kline_open\n"]
    rows += [f"{t},{symbol},{r},100\n" for t, r in zip(times, rates, strict=True)]
    path.write_text("".join(rows))


class Log(trio.abc.SendChannel[Any]):
    """A recording inbox: every message (and every on_path call) lands in one ordered list."""

    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.events = events

    async def send(self, value: Any) -> None:
        match value:
            case CandleClosed():
                self.events.append(("candle", value.symbol, value.interval, value.candle.open_time_ms))
            case MarkUpdated():
                self.events.append(
                    ("mark", value.symbol, value.ts_ms, value.funding_rate, value.next_funding_ms)
                )
            case _:
                self.events.append(("other", value))
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        return None


async def play(
    feed_kw: dict[str, Any], *, with_path: bool = True
) -> tuple[ReplayFeed, list[tuple[Any, ...]]]:
    events: list[tuple[Any, ...]] = []
    router = MarketRouter()
    router.add_tap(Log(events))

    def on_path(symbol: str, candle: Candle, interval_ms: int) -> None:
        events.append(("path", symbol, candle.open_time_ms, interval_ms, trio.current_time()))

    feed = ReplayFeed(router=router, on_path=on_path if with_path else None, **feed_kw)
    await feed.run()
    return feed, events


@pytest.fixture
def two_symbols(tmp_path: Path) -> Path:
    """AUSDT: 2 hours of 5m from T0; BUSDT joins at T0 + 1h; funding for A beside the directory."""
    d = tmp_path / "klines"
    d.mkdir()
    write_klines(d / "AUSDT-5m.csv.gz", T0, 24, M5)
    write_klines(d / "AUSDT-1h.csv.gz", T0, 2, HOUR)
    write_klines(d / "AUSDT-1h-mark.csv.gz", T0, 2, HOUR)  # ignored
    write_klines(d / "BUSDT-5m.csv.gz", T0 + HOUR, 12, M5, base=50.0)
    write_klines(d / "BUSDT-1h.csv.gz", T0, 2, HOUR, base=50.0)
    write_klines(d / "CUSDT-5m.csv.gz", T0, 3, M5)  # no 1h file: not a symbol
    write_funding(
        tmp_path / "funding" / "AUSDT.csv", "AUSDT", [T0, T0 + HOUR, T0 + 2 * HOUR], [1e-4, -2e-4, 3e-4]
    )
    return d


class TestDiscovery:
    """Which files make a data set."""

    def test_discover(self, two_symbols: Path) -> None:
        assert discover_symbols(two_symbols) == ["AUSDT", "BUSDT"]

    def test_missing_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ReplayDataError, match="not a directory"):
            discover_symbols(tmp_path / "nope")

    def test_requested_symbol_without_files(self, two_symbols: Path) -> None:
        feed = ReplayFeed(directory=two_symbols, router=MarketRouter(), symbols=["CUSDT"])
        with pytest.raises(ReplayDataError) as info:
            feed.load()
        assert info.value.field == "symbols"
        assert info.value.value == "CUSDT"

    def test_bad_kline_row_names_file_line_column(self, tmp_path: Path) -> None:
        write_klines(tmp_path / "AUSDT-1h.csv.gz", T0, 2, HOUR)
        with gzip.open(tmp_path / "AUSDT-5m.csv.gz", "wt") as fh:
            fh.write(HEADER + f"{T0},100,101,99,100.5,1,{T0 + M5 - 1},,,,\n{T0 + M5},100,101,99,nan,1,,,,,\n")
        with pytest.raises(KlinesFileError) as info:
            ReplayFeed(directory=tmp_path, router=MarketRouter()).load()
        assert (info.value.line, info.value.column, info.value.value) == (3, "close", "nan")

    def test_bad_funding_row(self, tmp_path: Path) -> None:
        p = tmp_path / "AUSDT.csv"
        p.write_text("funding_time_ms,symbol,funding_rate\n1,AUSDT,0.1\n2,AUSDT,abc\n")
        with pytest.raises(ReplayDataError) as info:
            read_funding(p, symbol="AUSDT")
        assert (info.value.field, info.value.value) == ("funding_rate", "abc")
        assert "line 3" in str(info.value)


class TestOrder:
    """Event order in simulated time."""

    async def test_order_and_time(self, two_symbols: Path, autojump_clock: trio.testing.MockClock) -> None:
        feed, events = await play({"directory": two_symbols})
        assert feed.symbols == ["AUSDT", "BUSDT"]
        assert feed.epoch_ms == T0
        stats = feed.stats
        assert (stats.steps, stats.candles_5m, stats.candles_1h, stats.gaps) == (24, 36, 4, 0)
        assert feed.done.is_set()
        # at T0 + 1h: A's path (the candle starting now), A's 1h, A's 5m, A's funding; B not joined yet
        T = T0 + HOUR
        i = events.index(("candle", "AUSDT", "5m", T - M5))
        assert events[i - 2 : i + 2] == [
            ("path", "AUSDT", T, M5, (T - T0) / 1000),
            ("candle", "AUSDT", "1h", T0),
            ("candle", "AUSDT", "5m", T - M5),
            ("mark", "AUSDT", T, -2e-4, T0 + 2 * HOUR),
        ]
        assert events[i + 2][:2] == ("path", "AUSDT")
        # B's first 5m candle opens at T and closes at T + 5m: B joins then, with the 1h that closed at T
        j = events.index(("candle", "BUSDT", "5m", T))
        assert events[j - 4 : j + 1] == [
            ("path", "AUSDT", T + M5, M5, (T + M5 - T0) / 1000),
            ("candle", "AUSDT", "5m", T),
            ("path", "BUSDT", T + M5, M5, (T + M5 - T0) / 1000),
            ("candle", "BUSDT", "1h", T0),
            ("candle", "BUSDT", "5m", T),
        ]
        assert not any(e[1] == "BUSDT" for e in events[: j - 2])
        # A comes before B at every close time; candles of each (symbol, interval) ascend
        candle_events = [e for e in events if e[0] == "candle"]
        for sym in ("AUSDT", "BUSDT"):
            for tf, step in (("5m", M5), ("1h", HOUR)):
                times = [e[3] for e in candle_events if e[1] == sym and e[2] == tf]
                assert times == sorted(times)
                assert all(b - a == step for a, b in itertools.pairwise(times))
        # every path event is the 5m candle starting at the close being played, at that trio time
        for e in events:
            if e[0] == "path":
                assert e[4] == (e[2] - T0) / 1000

    async def test_last_step_has_no_path_and_funding_needs_next(
        self, two_symbols: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        _, events = await play({"directory": two_symbols})
        marks = [e for e in events if e[0] == "mark"]
        # funding at T0 (first 5m open) .. T0+2h (= the last close): all three, mark = 5m close at T
        assert [(m[2], m[3], m[4]) for m in marks] == [
            (T0, 1e-4, T0 + HOUR),
            (T0 + HOUR, -2e-4, T0 + 2 * HOUR),
            (T0 + 2 * HOUR, 3e-4, T0 + 3 * HOUR),
        ]
        last_a = max(e[2] for e in events if e[0] == "path" and e[1] == "AUSDT")
        assert last_a == T0 + 23 * M5  # the candle after A's last one does not exist

    async def test_mark_price_is_the_close(
        self, two_symbols: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        got: list[MarkUpdated] = []
        send, recv = trio.open_memory_channel[Any](1000)
        router = MarketRouter()
        router.add_symbol("AUSDT", send)
        await ReplayFeed(directory=two_symbols, router=router).run()
        while True:
            try:
                m = recv.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(m, MarkUpdated):
                got.append(m)
        # funding at T0 + 1h: the 5m candle closing then is row 11 of A: close = 100 + 11 + 1
        assert got[1].mark_price == 112.0
        assert got[1].ts_ms == T0 + HOUR

    async def test_window_and_gap(self, tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
        write_klines(tmp_path / "AUSDT-5m.csv.gz", T0, 30, M5, skip=20)
        write_klines(tmp_path / "AUSDT-1h.csv.gz", T0, 3, HOUR)
        with structlog.testing.capture_logs() as logs:
            feed, events = await play(
                {"directory": tmp_path, "start_ms": T0 + HOUR, "end_ms": T0 + HOUR + 12 * M5}, with_path=False
            )
        assert feed.epoch_ms == T0 + HOUR
        fives = [e[3] for e in events if e[0] == "candle" and e[2] == "5m"]
        assert fives == [T0 + k * M5 for k in range(12, 24) if k != 20]
        assert feed.stats.gaps == 1
        assert any(e["event"] == "replay_gap" for e in logs)
        # 1h candle T0+1h..T0+2h lies inside the window
        assert [e[3] for e in events if e[0] == "candle" and e[2] == "1h"] == [T0 + HOUR]

    async def test_flat_zero_volume_candles_kept(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        write_klines(tmp_path / "AUSDT-1h.csv.gz", T0, 1, HOUR)
        rows = [f"{T0 + k * M5},100,100,100,100,0,{T0 + k * M5 + M5 - 1},,,,\n" for k in range(3)]
        with gzip.open(tmp_path / "AUSDT-5m.csv.gz", "wt") as fh:
            fh.write(HEADER + "".join(rows))
        feed, events = await play({"directory": tmp_path}, with_path=False)
        assert [e[3] for e in events if e[0] == "candle"] == [T0, T0 + M5, T0 + 2 * M5]
        with pytest.raises(RuntimeError, match="plays once"):
            await feed.run()

    async def test_window_keeps_1h_warmup(
        self, two_symbols: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        # --timerange: 5m from T0+1h to T0+1h30; 1h from one bar before the start (warm-up).
        feed, events = await play(
            {
                "directory": two_symbols,
                "symbols": ["AUSDT"],
                "start_ms": T0 + HOUR,
                "end_ms": T0 + HOUR + 6 * M5,
                "warmup_1h_bars": 1,
            },
            with_path=False,
        )
        candles = [(e[2], e[3]) for e in events if e[0] == "candle"]
        assert [t for tf, t in candles if tf == "5m"] == [T0 + HOUR + k * M5 for k in range(6)]
        # The warm-up hour arrives first; the 1h candle of the window closes after its end: not sent.
        assert candles[0] == ("1h", T0)
        assert [t for tf, t in candles if tf == "1h"] == [T0]
        assert feed.epoch_ms == T0 + HOUR

    def test_window_end_before_start_refused(self, two_symbols: Path) -> None:
        with pytest.raises(ReplayDataError) as info:
            ReplayFeed(directory=two_symbols, router=MarketRouter(), start_ms=T0 + HOUR, end_ms=T0)
        assert info.value.field == "timerange"

    async def test_progress(self, two_symbols: Path, autojump_clock: trio.testing.MockClock) -> None:
        calls: list[tuple[int, int, int]] = []
        feed = ReplayFeed(
            directory=two_symbols,
            router=MarketRouter(),
            on_progress=lambda done, total, ms: calls.append((done, total, ms)),
            cfg=ReplayConfig(progress_percent_step=25.0),
        )
        stats = await feed.run()
        total = int(feed.close_times_ms.size)
        # One call at each quarter of the close times, the last at 100 %, with the close time reached.
        assert [c[0] for c in calls] == [(total * k + 3) // 4 for k in (1, 2, 3, 4)]
        assert {c[1] for c in calls} == {total}
        assert [c[2] for c in calls] == [int(feed.close_times_ms[c[0] - 1]) for c in calls]
        assert stats.steps == total


def slice_real(dst: Path, symbols: list[str], days: int) -> None:
    """Copy the first `days` of real klines and funding into a temp data set (tests only)."""
    kd = dst / "klines"
    kd.mkdir(parents=True)
    for sym in symbols:
        for tf, per_day in (("5m", 288), ("1h", 24)):
            with gzip.open(SAMPLE / f"{sym}-{tf}.csv.gz", "rt") as src:
                lines = [next(src) for _ in range(per_day * days + 1)]
            with gzip.open(kd / f"{sym}-{tf}.csv.gz", "wt") as out:
                out.write("".join(lines))
        with open(SAMPLE / "funding" / f"{sym}.csv") as src:
            lines = [next(src) for _ in range(3 * days + 2)]
        (dst / "funding").mkdir(exist_ok=True)
        (dst / "funding" / f"{sym}.csv").write_text("".join(lines))


class TestRealData:
    """Two real symbols over two days: counts, order and determinism."""

    async def test_two_days(self, tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
        slice_real(tmp_path, ["BTCUSDT", "ETHUSDT"], 2)
        kw = {"directory": tmp_path / "klines"}
        feed, first = await play(kw)
        stats = feed.stats
        assert feed.symbols == ["BTCUSDT", "ETHUSDT"]
        assert feed.epoch_ms == 1735603200000  # 2024-12-31 00:00 UTC
        assert (stats.steps, stats.candles_5m, stats.candles_1h, stats.gaps) == (576, 1152, 96, 0)
        # funding 00/08/16 h on both days plus the 00:00 of day 3 (= the last close)
        assert stats.funding_events == 2 * 7
        assert trio.current_time() == 2 * DAY / 1000
        btc_closes = [e for e in first if e[0] == "candle" and e[1] == "BTCUSDT" and e[2] == "5m"]
        assert btc_closes[0][3] == 1735603200000
        assert len(btc_closes) == 576
        feed2, second = await play(kw)
        assert [e[:4] for e in second] == [e[:4] for e in first]
        assert feed2.stats == stats

"""AC14: malformed, duplicated, out-of-order or gapped market data through the whole system.

The real `MarketData` actor (REST over an `httpx.MockTransport`, the kline WebSocket over an in-memory
connection the test pushes frames into) feeds the real symbol actor, PortfolioRisk and Execution of a
`System` on the paper exchange, under the mock clock. Bad candles are rejected, a gap is backfilled
over REST before the candle after it, and a candle whose gap REST cannot fill is held back: the
symbol actor's candle store holds exactly the valid contiguous candles, every stored 5m close gets
exactly one report, and no report is ever decided on a gap.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import pytest
import stamina
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection

from futures_actor.actors import symbol_pool
from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.market_data import MarketData
from futures_actor.actors.messages import CandleClosed
from futures_actor.actors.symbol_actor import SymbolActor
from futures_actor.app import System
from futures_actor.binance.paper import PaperExchange
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.ws_conn import memory_connector
from futures_actor.core.config import BotConfig, default_config
from futures_actor.core.types import INTERVAL_MS, Candle
from futures_actor.logs import configure_logging, reset_logging
from futures_actor.machines.symbol import SendReport
from futures_actor.startup import derive_rules
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore
from futures_actor.system_parts import SystemParts

from .harness import Harness, copy_real_klines

SYMBOL = "BTCUSDT"
HOUR = INTERVAL_MS["1h"]
M5 = INTERVAL_MS["5m"]
H = 486_111 * HOUR  # a whole hour: the scenario's live candles all close within the next one
START_MS = H + 10_000
REST_BASE = "https://fapi.test"
WS_BASE = "wss://fstream.test"
WAIT_S = 60.0
NO_STALENESS_S = 7200.0
REPLAY_DAYS = 1
REPLAY_HEARTBEAT_S = 3600.0
QUOTE_VOLUME = 750_000.0
TRADES = 42


@pytest.fixture(autouse=True)
def _fast_retries() -> Any:
    with stamina.set_testing(True, attempts=2):
        yield


def server_ms() -> int:
    return START_MS + int(trio.current_time() * 1000)


def good_candle(open_ms: int, step: int) -> Candle:
    """The exchange's (REST's) candle at `open_ms`: a deterministic, valid OHLCV."""
    base = 60_000.0 + 25.0 * math.sin(open_ms / step / 7.0) + (open_ms // step) % 11
    close = base + 3.0
    return Candle(
        open_time_ms=open_ms,
        open=base,
        high=close + 5.0,
        low=base - 5.0,
        close=close,
        volume=12.5,
        quote_volume=QUOTE_VOLUME,
        trades=TRADES,
    )


@dataclass
class KlinesRest:
    """`/fapi/v1/klines` and `/fapi/v1/time`: closed and in-progress candles, minus `holes`."""

    holes: set[int] = field(default_factory=set)  # 5m open times REST does not have (yet)
    requests: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fapi/v1/time":
            return httpx.Response(200, json={"serverTime": server_ms()})
        assert request.url.path == "/fapi/v1/klines", request.url.path
        q = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        self.requests.append(q)
        step = INTERVAL_MS[q["interval"]]
        start, end = int(q["startTime"]), min(int(q["endTime"]), server_ms())
        first = -(-start // step) * step
        rows = []
        for t in range(first, end + 1, step):
            if step == M5 and t in self.holes:
                continue
            c = good_candle(t, step)
            prices = [str(c.open), str(c.high), str(c.low), str(c.close), str(c.volume)]
            rows.append([t, *prices, t + step - 1, str(c.quote_volume), c.trades, "5", "500"])
        return httpx.Response(200, json=rows[: int(q["limit"])])


@dataclass
class PushWs:
    """The server side of the in-memory market WebSocket: the test pushes kline frames into it."""

    conns: list[tuple[str, WebSocketConnection]] = field(default_factory=list)

    async def handler(self, url: str, ws: WebSocketConnection) -> None:
        self.conns.append((url, ws))
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass

    async def push(self, stream: str, data: dict[str, Any]) -> None:
        for url, ws in reversed(self.conns):
            if stream in parse_qs(urlsplit(url).query)["streams"][0].split("/"):
                await ws.send_message(json.dumps({"stream": stream, "data": data}))
                return
        raise AssertionError(f"no connection serves {stream}")

    async def kline(self, open_ms: int, **override: Any) -> None:
        c = good_candle(open_ms, M5)
        k = {
            "t": open_ms,
            "T": open_ms + M5 - 1,
            "s": SYMBOL,
            "i": "5m",
            "f": 1,
            "L": 2,
            "o": str(c.open),
            "c": str(c.close),
            "h": str(c.high),
            "l": str(c.low),
            "v": str(c.volume),
            "n": c.trades,
            "x": True,
            "q": str(c.quote_volume),
            "V": "5",
            "Q": "500",
            "B": "0",
        }
        k.update(override)
        data = {"e": "kline", "E": open_ms + M5, "s": SYMBOL, "k": k}
        await self.push(f"{SYMBOL.lower()}@kline_5m", data)


@dataclass
class Observed:
    """What the running symbol actor did: its instances (the engine) and every report it sent."""

    actors: list[SymbolActor] = field(default_factory=list)
    reports: list[tuple[int, str, int]] = field(default_factory=list)  # (candle open, reason, n signals)


def recording_actor(observed: Observed) -> type[SymbolActor]:
    class RecordingSymbolActor(SymbolActor):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            observed.actors.append(self)

        async def _send_report(self, effect: SendReport, nursery: trio.Nursery) -> None:
            r = effect.report
            observed.reports.append((r.candle_open_time_ms, r.regime.reason, len(r.signals)))
            await super()._send_report(effect, nursery)

    return RecordingSymbolActor


@asynccontextmanager
async def live_system(
    tmp_path: Path, cfg: BotConfig, rest: KlinesRest, ws: PushWs, faults: list[tuple[str, str | None, str]]
) -> AsyncIterator[System]:
    """A `System` on the paper exchange whose market source is the real `MarketData` (live path)."""
    clock = TrioWallClock(START_MS)
    (tmp_path / "state").mkdir()
    reset_logging()
    sink = configure_logging(cfg=cfg.logging, log_dir=tmp_path / "logs", clock=clock, console="quiet")
    journal = TradeJournal(directory=tmp_path / "logs", cfg=cfg.logging, clock=clock)
    store = StateStore.open(tmp_path / "state.sqlite", durable=False)
    rules = {SYMBOL: derive_rules(SYMBOL, 60_000.0)}
    paper = PaperExchange.from_store(store, cfg=cfg.execution, rules=rules, now_ms=clock.now_ms)
    client = BinanceRestClient(
        cfg=cfg.exchange, wall_clock=clock, transport=httpx.MockTransport(rest), base_url=REST_BASE
    )
    try:
        async with trio.open_nursery() as nursery:
            holder: dict[str, MarketData] = {}

            def market(system: System) -> Callable[..., Any]:
                def on_fault(kind: str, symbol: str | None = None, detail: str = "") -> None:
                    faults.append((str(kind), symbol, detail))
                    system.report_fault(kind, symbol, detail)

                md = MarketData(
                    cfg=cfg,
                    rest=client,
                    symbols=[SYMBOL],
                    subscribers=system.router,
                    connector=memory_connector(nursery, ws.handler),
                    ws_base=WS_BASE,
                    on_fault=on_fault,
                    on_data=system.report_data,
                )
                holder["md"] = md
                return md.run

            async def history(symbol: str) -> tuple[list[Candle], list[Candle]]:
                return await holder["md"].history(symbol)

            parts = SystemParts(
                cfg=cfg,
                mode="PAPER_LIVE",
                wall_clock=clock,
                gateway=paper,
                store=store,
                journal=journal,
                rules=rules,
                symbols=[SYMBOL],
                log_dir=tmp_path / "logs",
                state_dir=tmp_path / "state",
                market=market,
                history=history,
                paper=paper,
                # The journal writes inline: the mock-clock wall clock cannot be read from a thread.
                replay=True,
                kill_file_watch=False,
            )
            system = System(parts)
            await nursery.start(system.run)
            yield system
            system.stop_requested.set()
            await system.stopped.wait()
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
        journal.close()
        store.close()
        sink.close()
        reset_logging()


def read_events(log_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("events-*.jsonl")):
        rows.extend(
            json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        )
    return rows


async def test_bad_market_data_is_rejected_or_backfilled_and_never_decided_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    observed = Observed()
    monkeypatch.setattr(symbol_pool, "SymbolActor", recording_actor(observed))
    base = default_config()
    # No stream watchdog recycling during the scenario: every candle arrives through the pushes below.
    cfg = msgspec.structs.replace(
        base, health=msgspec.structs.replace(base.health, stale_data_seconds=NO_STALENESS_S)
    )
    rest = KlinesRest()
    ws = PushWs()
    faults: list[tuple[str, str | None, str]] = []
    async with live_system(tmp_path, cfg, rest, ws, faults) as system:
        await trio.testing.wait_all_tasks_blocked()
        assert len(observed.actors) == 1
        engine = observed.actors[0].engine

        def stored() -> list[Candle]:
            return engine.store_5m.candles()

        async def at_close_of(open_ms: int) -> None:
            """Let the mock clock reach the close of the candle opening at `open_ms`."""
            await trio.sleep(max(0.0, (open_ms + M5 - server_ms()) / 1000 + 1.0))

        async def settle(last_open: int) -> None:
            with trio.fail_after(WAIT_S):
                while stored()[-1].open_time_ms != last_open:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            await trio.testing.wait_all_tasks_blocked()

        # Start-up: the REST history up to the last closed candle (open H - 5m).
        backfill_last = H - M5
        await settle(backfill_last)
        assert len(stored()) == cfg.market_data.history_5m_bars

        # 1. A valid live candle is stored and reported once.
        await at_close_of(H)
        await ws.kline(H)
        await settle(H)

        # 2. A malformed candle (NaN close) and one whose high is under its low: rejected.
        await at_close_of(H + M5)
        await ws.kline(H + M5, c="NaN")
        await ws.kline(H + M5, h="1.0", l="2.0")
        # 3. A duplicate of the last candle, with other values: dropped (the first one stays).
        await ws.kline(H, c="61234.5", h="61300.0")
        # 4. An older candle (out of order), with other values: dropped.
        await ws.kline(H - 2 * M5, c="1.5", l="1.0", o="1.2", h="2.0")
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(1.0)
        assert stored()[-1] == good_candle(H, M5)

        # 5. A gapped candle (H+5m and H+10m missing): REST backfills the gap first.
        await at_close_of(H + 3 * M5)
        await ws.kline(H + 3 * M5)
        await settle(H + 3 * M5)

        # 6. A gap REST cannot fill (H+20m not there yet): the candle after it is held back.
        rest.holes.add(H + 4 * M5)
        await at_close_of(H + 5 * M5)
        await ws.kline(H + 5 * M5)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5.0)
        assert stored()[-1].open_time_ms == H + 3 * M5
        assert H + 5 * M5 not in [t for t, _, _ in observed.reports]
        assert any(kind == "STALE_DATA" for kind, _, _ in faults)

        # 7. REST has it now: the next candle brings the whole hole, in order.
        rest.holes.clear()
        await at_close_of(H + 6 * M5)
        await ws.kline(H + 6 * M5)
        await settle(H + 6 * M5)

    assert system.exit_code == 0
    # The store holds exactly the exchange's valid candles, contiguous, none of the bad ones.
    five = stored()
    times = [c.open_time_ms for c in five]
    assert times == list(range(times[0], H + 7 * M5, M5))
    assert len(five) == cfg.market_data.history_5m_bars
    assert five == [good_candle(t, M5) for t in times]
    assert all(math.isfinite(x) for c in five for x in (c.open, c.high, c.low, c.close, c.volume))

    # One report per stored 5m close, in order, never on a gap, never twice.
    report_times = [t for t, _, _ in observed.reports]
    assert len(report_times) == len(set(report_times))
    assert report_times == sorted(report_times)
    assert report_times[-7:] == [H + i * M5 for i in range(7)]
    assert set(times) <= set(report_times)
    assert not [r for r in observed.reports if r[1] == "GAP"]
    assert len(observed.actors) == 1  # the symbol actor never crashed

    # Each bad input was seen and handled by market data, with its reason in the event log.
    events = read_events(tmp_path / "logs")

    def named(name: str) -> list[dict[str, Any]]:
        return [e for e in events if e["event"] == name and e.get("symbol") in (SYMBOL, None)]

    assert [e["error"] for e in named("market_frame_skipped")] == ["non-finite kline"]
    rejected = named("kline_rejected")
    assert len(rejected) == 1
    assert "field high=1.0" in rejected[0]["error"]
    # The duplicate and the older candle never got past the stream's per-stream de-duplication
    # (market_ws: a kline at or before the last delivered open time is dropped): nothing to log.
    assert named("kline_out_of_order") == []
    assert [e["open_time_ms"] for e in named("kline_gap")] == [H + 3 * M5, H + 5 * M5, H + 6 * M5]
    assert [e["open_time_ms"] for e in named("kline_held_back")] == [H + 5 * M5]
    live_fills = [(e["count"], e["last_open_time_ms"]) for e in named("kline_backfilled") if e["count"] < 10]
    assert live_fills == [(2, H + 2 * M5), (2, H + 5 * M5)]
    assert not [e for e in events if e["level"] == "critical"]


async def test_start_up_backfill_is_never_traded_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """BOT_SPEC freshness: no decision on a candle older than `health.stale_data_seconds`."""
    cfg = default_config()
    async with live_system(tmp_path, cfg, KlinesRest(), PushWs(), []):
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(1.0)
    events = read_events(tmp_path / "logs")
    assert [e for e in events if e["event"] == "kline_backfilled" and e["interval"] == "5m"]
    fresh_from = START_MS - int(cfg.health.stale_data_seconds * 1000)
    stale_approvals = [
        e["candle_open_time_ms"]
        for e in events
        if e["event"] == "risk_approved" and e["candle_open_time_ms"] + M5 < fresh_from
    ]
    assert stale_approvals == []


async def test_symbol_actor_refuses_bad_candles_that_reach_it_and_never_decides_on_a_gap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: the same bad inputs published straight to the router (as any market source
    does), past MarketData's checks, on a symbol actor warm from a day of recorded klines."""
    observed = Observed()
    monkeypatch.setattr(symbol_pool, "SymbolActor", recording_actor(observed))
    base = default_config()
    # As `--replay` does: an hourly heartbeat file is enough for a simulated day.
    cfg = msgspec.structs.replace(
        base, health=msgspec.structs.replace(base.health, heartbeat_interval_seconds=REPLAY_HEARTBEAT_S)
    )
    h = Harness.create(tmp_path, cfg=cfg, symbols=[SYMBOL], prices={SYMBOL: 93_000.0})
    copy_real_klines(h.klines_dir, SYMBOL, days=REPLAY_DAYS)
    async with trio.open_nursery() as nursery:
        system = await h.start(nursery)
        assert h.feed is not None
        await h.feed.done.wait()
        await trio.testing.wait_all_tasks_blocked()
        engine = observed.actors[0].engine
        before = engine.store_5m.candles()
        last = before[-1]
        t = last.open_time_ms
        reports_before = len(observed.reports)
        hours = engine.store_1h.candles()

        async def publish(candle: Candle) -> None:
            await system.router.publish(SYMBOL, CandleClosed(symbol=SYMBOL, interval="5m", candle=candle))
            await trio.testing.wait_all_tasks_blocked()

        nxt = msgspec.structs.replace(last, open_time_ms=t + M5)
        await publish(msgspec.structs.replace(nxt, close=math.nan))  # malformed: NaN close
        await publish(msgspec.structs.replace(nxt, high=nxt.low - 1.0))  # malformed: high < low
        await publish(msgspec.structs.replace(last, volume=last.volume + 1.0))  # conflicting duplicate
        await publish(last)  # exact duplicate: a no-op
        await publish(
            msgspec.structs.replace(before[-5], volume=before[-5].volume + 1.0)
        )  # older, conflicting
        await publish(msgspec.structs.replace(before[0], open_time_ms=before[0].open_time_ms - M5))  # too old
        assert engine.store_5m.candles() == before
        assert len(observed.reports) == reports_before  # no report, so no decision, on any of them

        gapped = msgspec.structs.replace(last, open_time_ms=t + 4 * M5)  # 3 candles missing
        await publish(gapped)
        after_gap = engine.store_5m.candles()
        hours_before, hours_after = hours, engine.store_1h.candles()
        code = await h.stop()
    try:
        events = h.events()
    finally:
        h.close()

    assert code == 0
    # The gapped candle got exactly one report, decided on nothing: no signals, reason GAP.
    assert observed.reports[reports_before:] == [(t + 4 * M5, "GAP", 0)]
    # Without a REST history loader in a replay the 5m series restarts at the gapped candle: the
    # store never holds a hole (and never any of the refused candles).
    times = [c.open_time_ms for c in after_gap]
    assert times == list(range(times[0], times[0] + M5 * len(times), M5))
    assert after_gap[-1] == gapped
    assert all(math.isfinite(x) for c in after_gap for x in (c.open, c.high, c.low, c.close))
    rejected = [(e["error_type"], e["field"]) for e in events if e["event"] == "candle_rejected"]
    assert rejected == [
        ("InvalidCandle", "close"),
        ("InvalidCandle", "high"),
        ("ConflictingCandle", "volume"),
        ("ConflictingCandle", "volume"),
        ("OutOfOrderCandle", "open_time_ms"),
    ]
    # A 5m gap loses no 1h trend history.
    assert hours_after == hours_before
    assert [e["open_time_ms"] for e in events if e["event"] == "candle_gap"] == [t + 4 * M5]
    assert not [e for e in events if e["level"] == "critical" or e["event"].endswith("_crashed")]
    assert len(observed.actors) == 1

"""The replay runtime's feed and symbol cells against the trio runtime, on recorded data.

The same days of `data/sample/` (4 symbols) through (a) the trio runtime: `ReplayFeed.run` under trio's
mock clock, the market router, one `SymbolActor` per symbol, their reports read off the risk channel
and answered with a verdict; and (b) the replay runtime: `FeedCell` and `SymbolCell`s on an
`EventLoop`, reports answered the same way. Both must send the same reports (every field but the
reply channel) in the same per-symbol order, the same amendments, and play the same paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import trio
import trio.testing

from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.messages import SymbolReport, Verdict
from futures_actor.actors.replay_feed import PathStep, ReplayFeed
from futures_actor.actors.symbol_actor import SymbolActor, open_symbol_inbox
from futures_actor.core.config import BotConfig
from futures_actor.logs import get_logger
from futures_actor.machines.symbol import SymbolMachine
from futures_actor.runtime.cells import FeedCell, SymbolCell, VerdictReply
from futures_actor.runtime.loop import EventLoop

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
DAY_MS = 86_400_000
START_MS = 1_735_603_200_000 + 20 * DAY_MS  # 20 days in: warm 1h indicators from the warm-up bars
END_MS = START_MS + 4 * DAY_MS


def _feed(sample_dir: Path, cfg: BotConfig, on_path: Any, router: MarketRouter | None = None) -> ReplayFeed:
    return ReplayFeed(
        directory=sample_dir,
        router=router or MarketRouter(),
        symbols=list(SYMBOLS),
        on_path=on_path,
        start_ms=START_MS,
        end_ms=END_MS,
        warmup_1h_bars=cfg.market_data.history_1h_bars,
        cfg=cfg.replay,
    )


def _key(report: SymbolReport) -> bytes:
    return msgspec.json.encode(msgspec.structs.replace(report, reply=None))


def _verdict(report: SymbolReport) -> Verdict:
    return Verdict(
        symbol=report.symbol, candle_open_time_ms=report.candle_open_time_ms, plan=None, rejection=None
    )


def _run_trio(sample_dir: Path, cfg: BotConfig) -> tuple[dict[str, list[bytes]], list[Any], list[PathStep]]:
    reports: dict[str, list[bytes]] = {s: [] for s in SYMBOLS}
    amends: list[Any] = []
    paths: list[PathStep] = []

    async def main() -> None:
        router = MarketRouter()
        feed = _feed(
            sample_dir, cfg, lambda s, c, i: paths.append(PathStep(symbol=s, candle=c, interval_ms=i)), router
        )
        risk_send, risk_recv = trio.open_memory_channel[SymbolReport](1000)
        exec_send, exec_recv = trio.open_memory_channel[Any](1000)

        async def risk() -> None:
            async for report in risk_recv:
                reports[report.symbol].append(_key(report))
                if report.reply is not None:
                    report.reply.send_nowait(_verdict(report))

        async def execution() -> None:
            async for amend in exec_recv:
                amends.append(amend)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(risk)
            nursery.start_soon(execution)
            for symbol in SYMBOLS:
                send, recv = open_symbol_inbox()
                router.add_symbol(symbol, send)
                actor = SymbolActor(symbol=symbol, cfg=cfg, risk_send=risk_send, execution_send=exec_send)
                await nursery.start(actor.run, recv)
            await feed.run()
            await trio.sleep(60)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return reports, amends, paths


class _Risk:
    def __init__(self) -> None:
        self.reports: dict[str, list[bytes]] = {s: [] for s in SYMBOLS}

    def deliver(self, message: object, loop: EventLoop) -> None:
        assert isinstance(message, SymbolReport)
        self.reports[message.symbol].append(_key(message))
        if isinstance(message.reply, VerdictReply):
            message.reply.answer(_verdict(message), loop)


class _Exec:
    def __init__(self) -> None:
        self.amends: list[Any] = []

    def deliver(self, message: object, loop: EventLoop) -> None:
        self.amends.append(message)


def _run_des(sample_dir: Path, cfg: BotConfig) -> tuple[dict[str, list[bytes]], list[Any], list[PathStep]]:
    paths: list[PathStep] = []
    feed = _feed(sample_dir, cfg, None)
    feed.load()
    risk, execution = _Risk(), _Exec()
    log = get_logger("symbol")
    cells = {
        s: SymbolCell(
            symbol=s,
            factory=lambda s=s: SymbolMachine(symbol=s, cfg=cfg, has_history=False),  # type: ignore[misc]
            risk=risk,
            execution=execution,
            log=log.bind(symbol=s),
        )
        for s in SYMBOLS
    }
    loop = EventLoop(start_ms=feed.epoch_ms)
    FeedCell(feed, symbols=dict(cells), on_path=paths.append).start(loop)
    loop.run()
    return risk.reports, execution.amends, paths


def test_feed_and_symbol_cells_send_what_the_trio_actors_send(sample_dir: Path) -> None:
    cfg = BotConfig()
    trio_reports, trio_amends, trio_paths = _run_trio(sample_dir, cfg)
    des_reports, des_amends, des_paths = _run_des(sample_dir, cfg)
    n = sum(len(r) for r in des_reports.values())
    assert n == 4 * 4 * 288  # one report per 5m close and symbol
    signals = sum(b'"signals":[]' not in r for rs in des_reports.values() for r in rs)
    assert signals > 0  # the window has signals, so verdicts were asked for and answered
    for symbol in SYMBOLS:
        assert des_reports[symbol] == trio_reports[symbol], symbol
    assert des_amends == trio_amends
    assert des_paths == trio_paths

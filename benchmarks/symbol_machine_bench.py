"""Closed 5m candles per second through the SymbolMachine directly and through the trio SymbolActor.

    .venv/bin/python benchmarks/symbol_machine_bench.py [--symbols BTCUSDT,ETHUSDT] [--limit N] [--repeat 3]

For each symbol of `bench_data.KLINES` (the bundled sample, or `FA_BENCH_DATA=DIR`), the recorded 5m
and 1h klines are interleaved as MarketData delivers them (each 1h close before the 5m close it
ends with) and fed, from a cold start, three ways:

1. `machine`: `SymbolMachine.handle` for every message, the effects returned and dropped (the
   discrete-event replay runtime's floor: no channels, no task switches, no logging);
2. `machine+logs`: the same, each `Log` effect written with `write_log` on a structlog logger filtered
   at INFO (as production: debug lines are dropped at the call) that renders to a string;
3. `trio actor`: the real `SymbolActor` under trio's `MockClock`: the messages pushed through its
   bounded inbox by a feeder task, reports drained by a risk task that answers each verdict at once,
   amendments drained by an execution task, the same logger (the live/paper runtime's cost).

Prints candles/s (5m closes; the 1h messages ride along) in CPU time (`time.process_time`: the machine
is shared, wall time varies with the load) and wall time, best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
import trio  # noqa: E402
from bench_data import KLINES, symbols_with  # noqa: E402
from trio.testing import MockClock  # noqa: E402

from futures_actor.actors.messages import CandleClosed, SymbolReport, Verdict  # noqa: E402
from futures_actor.actors.symbol_actor import SymbolActor, SymbolInbox, open_symbol_inbox  # noqa: E402
from futures_actor.core.config import BotConfig  # noqa: E402
from futures_actor.core.models import RiskRejection  # noqa: E402
from futures_actor.core.types import INTERVAL_MS, Candle  # noqa: E402
from futures_actor.data.klines_csv import read_klines_candles  # noqa: E402
from futures_actor.machines.effects import Log, write_log  # noqa: E402
from futures_actor.machines.symbol import SymbolMachine  # noqa: E402

MS_5M = INTERVAL_MS["5m"]
MS_1H = INTERVAL_MS["1h"]
CHANNEL = 256  # the risk/execution collector channels (the symbol inbox has its own named size)


def quiet_log() -> Any:
    """A logger filtered at INFO like production, rendering JSON to a string (no file I/O)."""
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        processors=[structlog.processors.JSONRenderer()],
    )


def messages(symbol: str, limit: int | None) -> tuple[list[CandleClosed], int]:
    """The symbol's klines as inbox messages in delivery order, and the number of 5m closes."""
    five = read_klines_candles(KLINES / f"{symbol}-5m.csv.gz", interval="5m", limit=limit)
    hour = read_klines_candles(KLINES / f"{symbol}-1h.csv.gz", interval="1h")
    out: list[CandleClosed] = []
    j = 0
    for c in five:
        while j < len(hour) and hour[j].open_time_ms + MS_1H <= c.open_time_ms + MS_5M:
            out.append(_msg(symbol, "1h", hour[j]))
            j += 1
        out.append(_msg(symbol, "5m", c))
    return out, len(five)


def _msg(symbol: str, interval: str, candle: Candle) -> CandleClosed:
    return CandleClosed(symbol=symbol, interval=interval, candle=candle, source="replay")


def run_machine(symbol: str, msgs: list[CandleClosed], cfg: BotConfig, *, with_logs: bool) -> None:
    machine = SymbolMachine(symbol=symbol, cfg=cfg, has_history=False)
    log = quiet_log().bind(symbol=symbol)
    handle = machine.handle
    for m in msgs:
        effects = handle(m, now_ms=0)
        if with_logs:
            for e in effects:
                if isinstance(e, Log):
                    write_log(log, e)


def run_actor(symbol: str, msgs: list[CandleClosed], cfg: BotConfig) -> None:
    async def main() -> None:
        risk_send, risk_recv = trio.open_memory_channel[SymbolReport](CHANNEL)
        exec_send, exec_recv = trio.open_memory_channel[Any](CHANNEL)
        inbox_send, inbox_recv = open_symbol_inbox()
        actor = SymbolActor(
            symbol=symbol, cfg=cfg, risk_send=risk_send, execution_send=exec_send, log=quiet_log()
        )
        rejection = RiskRejection(code="BENCH", message="bench")

        async def risk() -> None:
            async for report in risk_recv:
                if report.reply is not None:
                    report.reply.send_nowait(
                        Verdict(
                            symbol=symbol,
                            candle_open_time_ms=report.candle_open_time_ms,
                            plan=None,
                            rejection=rejection,
                        )
                    )

        async def execution() -> None:
            async for _ in exec_recv:
                pass

        async def feed(send: trio.MemorySendChannel[SymbolInbox]) -> None:
            async with send:
                for m in msgs:
                    await send.send(m)

        async def run_actor_then_close(
            *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            async with risk_send, exec_send:  # the collectors end when the actor is done
                await actor.run(inbox_recv, task_status=task_status)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(risk)
            nursery.start_soon(execution)
            await nursery.start(run_actor_then_close)
            nursery.start_soon(feed, inbox_send)

    trio.run(main, clock=MockClock(autojump_threshold=0))


def best(fn: Callable[[], None], repeat: int) -> tuple[float, float]:
    """(best CPU seconds, best wall seconds) over `repeat` runs."""
    cpu, wall = float("inf"), float("inf")
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu = min(cpu, time.process_time() - c0)
        wall = min(wall, time.perf_counter() - w0)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--symbols", default=",".join(symbols_with("5m", "1h")))
    parser.add_argument("--limit", type=int, default=None, help="5m candles per symbol (default: all)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cfg = BotConfig()
    symbols = [s for s in args.symbols.split(",") if s]
    data = {s: messages(s, args.limit) for s in symbols}
    n5 = sum(n for _, n in data.values())
    n_msgs = sum(len(m) for m, _ in data.values())
    print(
        f"data: {KLINES} - {len(symbols)} symbols, {n5:,} 5m closes ({n_msgs:,} messages with the 1h closes)"
    )

    def all_symbols(run: Callable[[str, list[CandleClosed]], None]) -> Callable[[], None]:
        return lambda: [run(s, m) for s, (m, _) in data.items()] and None

    ways = {
        "machine": all_symbols(lambda s, m: run_machine(s, m, cfg, with_logs=False)),
        "machine+logs": all_symbols(lambda s, m: run_machine(s, m, cfg, with_logs=True)),
        "trio actor": all_symbols(lambda s, m: run_actor(s, m, cfg)),
    }
    results = {name: best(fn, args.repeat) for name, fn in ways.items()}
    base_cpu = results["trio actor"][0]
    print(
        f"{'path':<14} {'candles/CPU-s':>14} {'µs/candle (CPU)':>16} {'candles/s wall':>15} {'vs trio (CPU)':>14}"
    )
    for name, (cpu, wall) in results.items():
        print(
            f"{name:<14} {n5 / cpu:>14,.0f} {cpu / n5 * 1e6:>16.1f} {n5 / wall:>15,.0f} {base_cpu / cpu:>13.2f}x"
        )


if __name__ == "__main__":
    main()

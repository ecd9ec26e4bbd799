"""Risk decisions per CPU-second through the RiskMachine directly and through the trio PortfolioRisk shell.

    .venv/bin/python benchmarks/risk_machine_bench.py [--symbols 20] [--candles 500] [--repeat 3] [--seed 7]

A synthetic, seeded workload (no data files): `--symbols` made-up symbols, each reporting on every 5m
close for `--candles` closes; 70 % of the reports carry a signal (random side, confidence, price and
stop), the rest none (they only complete the batch). 1h closes of every symbol feed the correlation
filter (80 h of history first, then one per hour), the account is updated every candle, and every
approved entry is filled and closed two candles later (PnL ±), so that approvals keep flowing rather
than every later report being refused for max positions. The stream is built once against a machine
(fills and closes refer to the plans it sent), then timed three ways:

1. `machine`: `RiskMachine.handle` for every message, effects dropped (the discrete-event replay
   runtime's floor: no channels, no task switches, no logging);
2. `machine+logs`: the same, each `Log` effect written with `write_log` on a structlog logger filtered
   at INFO (as production) that renders JSON to a string;
3. `trio shell`: the real `PortfolioRisk` under trio's `MockClock` on a wall clock that follows it: the
   messages pushed through its bounded inbox by a feeder task (sleeping to each candle's close), each
   report with signals carrying a one-shot reply channel, plans drained by an execution task, the same
   logger (the live/paper runtime's cost).

A decision is one report with signals decided (approved or rejected). Prints decisions/s in CPU time
(`time.process_time`: the machine is shared, wall time varies with the load) and wall time, best of
`--repeat` runs, and the ratio to the trio shell.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import structlog  # noqa: E402
import trio  # noqa: E402
from trio.testing import MockClock  # noqa: E402

from futures_actor.actors.clock import TrioWallClock  # noqa: E402
from futures_actor.actors.messages import (  # noqa: E402
    AccountUpdated,
    CandleClosed,
    EntryFilled,
    SymbolReport,
    TradeClosed,
    Verdict,
)
from futures_actor.actors.portfolio_risk import PortfolioRisk, open_risk_inbox  # noqa: E402
from futures_actor.core.config import BotConfig  # noqa: E402
from futures_actor.core.models import RegimeResult, Signal  # noqa: E402
from futures_actor.core.types import Candle, Regime, Side, SymbolRules  # noqa: E402
from futures_actor.machines.effects import Log, write_log  # noqa: E402
from futures_actor.machines.risk import RiskInbox, RiskMachine, SendPlan, Start  # noqa: E402

START = int(datetime(2025, 1, 8, 12, tzinfo=UTC).timestamp() * 1000)  # a Wednesday, on a 5m boundary
MIN5 = 300_000
HOUR = 3_600_000
HISTORY_HOURS = 80
SIGNAL_SHARE = 0.7
REPORT_DELAY_MS = 500  # reports arrive half a second after the close
CLOSE_AFTER = 2  # candles between an approval and its fill + close
CHANNEL = 256  # the execution collector channel
STRATEGY = "trend_pullback"


def quiet_log() -> Any:
    """A logger filtered at INFO like production, rendering JSON to a string (no file I/O)."""
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        processors=[structlog.processors.JSONRenderer()],
    )


def rules(symbol: str) -> SymbolRules:
    return SymbolRules(
        symbol=symbol,
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.001"),
        min_qty=Decimal("0.001"),
        max_qty=Decimal("100000"),
        min_notional=Decimal("5"),
        min_price=Decimal("0.01"),
    )


class Workload(msgspec.Struct, kw_only=True):
    symbols: tuple[str, ...]
    steps: list[tuple[int, RiskInbox]]  # (wall ms, message), in delivery order
    decisions: int
    approvals: int


def _report(rng: random.Random, symbol: str, candle: int, signals: bool) -> SymbolReport:
    side = rng.choice([Side.LONG, Side.SHORT])
    price = round(rng.uniform(50.0, 150.0), 2)
    stop_pct = rng.choice([0.005, 0.01, 0.02])
    conf = rng.choice([0.6, 0.7, 0.8, 0.9])
    stop = price * (1 - stop_pct) if side is Side.LONG else price * (1 + stop_pct)
    sig = Signal(
        symbol=symbol,
        strategy=STRATEGY,
        side=side,
        regime=Regime.TREND,
        regime_confidence=conf,
        candle_open_time_ms=candle,
        entry_price=price,
        stop_price=stop,
        stop_pct=stop_pct,
        target_price=price + (price - stop) * 1.5,
        leverage=2.0,
        atr=1.0,
    )
    return SymbolReport(
        symbol=symbol,
        candle_open_time_ms=candle,
        regime=RegimeResult(regime=Regime.TREND, direction=side, confidence=conf, reason="TREND"),
        signals=(sig,) if signals else (),
        mid_price=price,
        reply="wants a verdict" if signals else None,
    )


def _account(equity: float, ts: int) -> AccountUpdated:
    return AccountUpdated(
        equity_usd=equity,
        wallet_balance_usd=equity,
        available_balance_usd=equity,
        unrealized_pnl_usd=0.0,
        ts_ms=ts,
    )


def build(n_symbols: int, candles: int, seed: int, cfg: BotConfig) -> Workload:
    """The stream, built against a machine so that fills and closes refer to the plans it sent."""
    rng = random.Random(seed)
    symbols = tuple(f"S{i:03d}USDT" for i in range(n_symbols))
    m = new_machine(symbols, cfg)
    steps: list[tuple[int, RiskInbox]] = []
    decisions = approvals = 0
    closes = {s: 100.0 for s in symbols}

    def deliver(at: int, msg: RiskInbox) -> list[Any]:
        steps.append((at, msg))
        return m.handle(msg, now_ms=at)

    def hourly(open_ms: int, at: int) -> None:
        for s in symbols:
            closes[s] *= 1 + rng.gauss(0.0, 0.01)
            c = closes[s]
            candle = Candle(open_time_ms=open_ms, open=c, high=c, low=c, close=c, volume=1.0)
            deliver(at, CandleClosed(symbol=s, interval="1h", candle=candle, source="replay"))

    first_hour = START - START % HOUR - HISTORY_HOURS * HOUR
    for h in range(HISTORY_HOURS):
        hourly(first_hour + h * HOUR, START)
    equity = 10_000.0
    deliver(START, _account(equity, START))
    to_close: dict[int, list[Any]] = {}
    for k in range(1, candles + 1):
        close = START + k * MIN5
        at = close + REPORT_DELAY_MS
        if close % HOUR == 0:
            hourly(close - HOUR, close + 100)
        for plan in to_close.pop(k, []):
            deliver(
                at,
                EntryFilled(
                    trade_id=plan.trade_id,
                    symbol=plan.symbol,
                    side=plan.side,
                    filled_qty=plan.quantity,
                    avg_price=plan.entry_price,
                    stop_price=plan.stop_price,
                    final=True,
                    leverage=plan.leverage,
                ),
            )
            pnl = round(rng.uniform(-0.6, 1.0) * plan.risk_usd, 2)
            rec = {
                "trade_id": plan.trade_id,
                "strategy": STRATEGY,
                "regime": "TREND",
                "entry_order": {"filled_qty": float(plan.quantity)},
                "risk": {"equity_usd": equity, "risk_usd": plan.risk_usd},
                "result": {
                    "reason": "TP" if pnl > 0 else "SL",
                    "pnl_usd": pnl,
                    "pnl_r_multiple": pnl / plan.risk_usd,
                },
                "costs": {"fees_usd": 0.0, "funding_usd": 0.0},
            }
            deliver(
                at,
                TradeClosed(
                    trade_id=plan.trade_id, symbol=plan.symbol, record=rec, realized_pnl_usd=pnl, close_ms=at
                ),
            )
            equity += pnl
        deliver(at, _account(round(equity, 2), at))
        order = list(symbols)
        rng.shuffle(order)
        for s in order:
            signals = rng.random() < SIGNAL_SHARE
            decisions += signals
            for e in deliver(at, _report(rng, s, close - MIN5, signals)):
                if isinstance(e, SendPlan):
                    approvals += 1
                    to_close.setdefault(k + CLOSE_AFTER, []).append(e.submit.plan)
    return Workload(symbols=symbols, steps=steps, decisions=decisions, approvals=approvals)


def new_machine(symbols: tuple[str, ...], cfg: BotConfig) -> RiskMachine:
    m = RiskMachine(
        cfg=cfg, mode="PAPER_LIVE", symbols=symbols, rules_by_symbol={s: rules(s) for s in symbols}
    )
    m.handle(Start(), now_ms=START)
    return m


def run_machine(w: Workload, cfg: BotConfig, *, with_logs: bool) -> None:
    m = new_machine(w.symbols, cfg)
    log = quiet_log()
    handle = m.handle
    for at, msg in w.steps:
        effects = handle(msg, now_ms=at)
        if with_logs:
            for e in effects:
                if isinstance(e, Log):
                    write_log(log, e)


def run_shell(w: Workload, cfg: BotConfig) -> None:
    # One-shot reply channels, as the symbol actors attach them (built per run: single use).
    steps: list[tuple[int, RiskInbox]] = []
    for at, msg in w.steps:
        if isinstance(msg, SymbolReport) and msg.reply is not None:
            send, _ = trio.open_memory_channel[Verdict](1)
            msg = msgspec.structs.replace(msg, reply=send)
        steps.append((at, msg))

    async def main() -> None:
        exec_send, exec_recv = trio.open_memory_channel[Any](CHANNEL)
        inbox_send, inbox_recv = open_risk_inbox()
        t0 = trio.current_time()
        actor = PortfolioRisk(
            cfg=cfg,
            mode="PAPER_LIVE",
            execution_send=exec_send,
            symbols=w.symbols,
            rules_by_symbol={s: rules(s) for s in w.symbols},
            wall_clock=TrioWallClock(START),
            log=quiet_log(),
        )

        async def execution() -> None:
            async for _ in exec_recv:
                pass

        async def feed() -> None:
            async with inbox_send:
                for at, msg in steps:
                    t = t0 + (at - START) / 1000
                    if trio.current_time() < t:
                        await trio.sleep_until(t)
                    await inbox_send.send(msg)

        async def run_then_close(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with exec_send:
                await actor.run(inbox_recv, task_status=task_status)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(execution)
            await nursery.start(run_then_close)
            nursery.start_soon(feed)

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
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--candles", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    cfg = BotConfig()
    w = build(args.symbols, args.candles, args.seed, cfg)
    print(
        f"workload: {args.symbols} symbols x {args.candles} 5m closes, {len(w.steps):,} messages, "
        f"{w.decisions:,} decisions ({w.approvals:,} approved)"
    )
    ways = {
        "machine": lambda: run_machine(w, cfg, with_logs=False),
        "machine+logs": lambda: run_machine(w, cfg, with_logs=True),
        "trio shell": lambda: run_shell(w, cfg),
    }
    results = {name: best(fn, args.repeat) for name, fn in ways.items()}
    base_cpu = results["trio shell"][0]
    n = w.decisions
    print(
        f"{'path':<14} {'decisions/CPU-s':>16} {'µs/decision (CPU)':>18} {'decisions/s wall':>17} {'vs trio (CPU)':>14}"
    )
    for name, (cpu, wall) in results.items():
        print(
            f"{name:<14} {n / cpu:>16,.0f} {cpu / n * 1e6:>18.1f} {n / wall:>17,.0f} {base_cpu / cpu:>13.2f}x"
        )


if __name__ == "__main__":
    main()

"""Paper exchange benchmark (issue 12): 5m candles per CPU-second through `PaperExchange` alone.

N symbols, one day of synthetic 5m candles each (seeded random walks); each candle is handed to the
paper exchange as its path (`on_path`) and the mock clock runs through it; a tenth of the symbols
keep a resting entry limit and, once filled, a reduce-only stop and target working (re-placed when
they finish), so the scheduler has orders to watch. `--baseline REV` runs the same load against the
paper exchange of a git revision (e.g. the one before it ran on the matching engine) for a side by
side figure. Prints figures; not a test.

    .venv/bin/python benchmarks/paper_bench.py [--symbols 20 200] [--baseline b18d7d5]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.binance.gateway import OrderRequest, StopRequest
from futures_actor.core.config import ExecutionConfig
from futures_actor.core.types import Candle, SymbolRules

T0 = 1_750_000_200_000
FIVE_M = 300_000
CANDLES = 288
REPO = Path(__file__).resolve().parents[1]


def load(rev: str | None) -> ModuleType:
    if rev is None:
        import futures_actor.binance.paper as mod

        return mod
    src = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:futures_actor/binance/paper.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "paper_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("paper_baseline", path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper_baseline"] = mod
    spec.loader.exec_module(mod)
    return mod


async def run(mod: ModuleType, n: int) -> tuple[int, float, int]:
    rng = random.Random(3)
    syms = [f"S{i:03d}USDT" for i in range(n)]
    rules = {
        s: SymbolRules(
            symbol=s, tick_size=Decimal("0.01"), step_size=Decimal("0.001"), min_qty=Decimal("0.001")
        )
        for s in syms
    }
    clock = TrioWallClock(T0)
    paper: Any = mod.PaperExchange(
        cfg=ExecutionConfig(), rules=rules, now_ms=clock.now_ms, persist=lambda b: None
    )
    price = {s: 100.0 + i for i, s in enumerate(syms)}
    fills = 0

    async def drain() -> None:
        nonlocal fills
        async for ev in paper.events():
            if getattr(ev, "last_fill_qty", 0):
                fills += 1

    traders = syms[: max(1, n // 10)]
    seq = 0
    t_cpu = time.process_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(paper.run)
        nursery.start_soon(drain)
        for k in range(CANDLES):
            t = T0 + k * FIVE_M
            for s in syms:
                o = price[s]
                c = round(o * (1 + rng.gauss(0, 0.003)), 2)
                h = round(max(o, c) * (1 + abs(rng.gauss(0, 0.002))), 2)
                lo = round(min(o, c) * (1 - abs(rng.gauss(0, 0.002))), 2)
                paper.on_path(s, Candle(open_time_ms=t, open=o, high=h, low=lo, close=c, volume=1e6), FIVE_M)
                price[s] = c
            for s in traders:
                pos = [p for p in await paper.positions() if p.symbol == s]
                working = [o for o in await paper.open_orders() if o.symbol == s]
                seq += 1
                if not pos and not working:
                    px = Decimal(repr(round(price[s] * 0.998, 2)))
                    await paper.place_order(
                        OrderRequest(
                            symbol=s,
                            client_id=f"e{seq}",
                            side="BUY",
                            type="LIMIT",
                            quantity=Decimal("1"),
                            price=px,
                        )
                    )
                elif pos and not any(o.is_stop for o in working):
                    for o in working:
                        await paper.cancel_order(s, o.client_id)
                    stop = Decimal(repr(round(price[s] * 0.99, 2)))
                    await paper.place_stop(
                        StopRequest(
                            symbol=s,
                            client_id=f"s{seq}",
                            side="SELL",
                            trigger_price=stop,
                            quantity=pos[0].quantity,
                        )
                    )
                    tgt = Decimal(repr(round(price[s] * 1.01, 2)))
                    await paper.place_order(
                        OrderRequest(
                            symbol=s,
                            client_id=f"t{seq}",
                            side="SELL",
                            type="LIMIT",
                            quantity=pos[0].quantity,
                            price=tgt,
                            reduce_only=True,
                        )
                    )
            await trio.sleep((t + FIVE_M - clock.now_ms()) / 1000)
        nursery.cancel_scope.cancel()
    return n * CANDLES, time.process_time() - t_cpu, fills


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, nargs="+", default=[20, 200])
    ap.add_argument("--baseline", help="git revision whose paper exchange to run side by side")
    args = ap.parse_args()
    variants = [("this tree", None)] + ([(args.baseline, args.baseline)] if args.baseline else [])
    for n in args.symbols:
        for label, rev in variants:
            mod = load(rev)
            candles, cpu, fills = trio.run(run, mod, n, clock=trio.testing.MockClock(autojump_threshold=0))
            print(
                f"{n:>4d} symbols  {label:10s}  {candles:>7,d} candles  {candles / cpu:>9,.0f} candles/CPU-s  fills {fills}"
            )


if __name__ == "__main__":
    main()

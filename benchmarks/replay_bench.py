"""Replay benchmark (issue 6 "Performance"): throughput, decision latency and peak memory.

Runs the whole actor system (`replay_run.run_replay` with `--paper --replay`: ReplayFeed -> SymbolActors ->
PortfolioRisk -> Execution -> PaperExchange, under trio's MockClock) on recorded klines (the bundled
sample by default, `FA_BENCH_DATA=DIR` for another set: `bench_data.py`), each scenario in its own process so that its peak RSS
is its own:

1. throughput: 5m candles per wall second on the real symbols (a window of a few days), both over
   the whole run ("e2e": start-up, loading and the 1h warm-up included) and over the 5m phase only;
2. decision latency: wall time (`time.perf_counter`, trio's clock is simulated) from a SymbolActor
   receiving a 5m close to the entry order reaching the gateway's `place_order`, matched by symbol
   (the first non-reduce-only order after the symbol's latest 5m close), with 20 and 200 simulated
   symbols (the recorded symbols reused under new names with scaled prices); also in process CPU
   time. These hooks are on the trio runtime's SymbolActor and the paper exchange: if the replay runs
   another runtime, the row says so and shows no latency (throughput comes from `summary.json`);
3. peak RSS of each scenario (`resource.getrusage`).

Each data set holds the 5m candles of the window only and the 1h candles from the start of the
recording up to the window's end: the replay hands a joining symbol its earlier 1h candles, so the
trend features are warm when the window starts. Nothing is written into the repository.

    .venv/bin/python benchmarks/replay_bench.py [--days 3] [--big 200] [--skip-big]
    .venv/bin/python benchmarks/replay_bench.py --sizes 20,50,200,300 [--days 3]

`--sizes` replaces the default list (the real symbols, 20, `--big`). With `--days 3` every symbol's
history is full by the end (`market_data.history_5m_bars` 600 = 2.1 days of 5m, `history_1h_bars`
300 = 12.5 days of 1h from the 14 days of 1h before the window), so the largest size's peak RSS is
the "300 symbols with full history" figure of issue 12. Each row also gives the load average at its
end and the CPU time of the replay (`time.process_time`), the figure to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_data import KLINES, symbols_with

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "config.example.json"
DAY_MS = 86_400_000
# The window starts this many days into the recording (the 1h history before it warms the features).
WARMUP_DAYS = 14
# Price scale of the k-th renamed copy of a real symbol: 1 + k * PRICE_SCALE_STEP.
PRICE_SCALE_STEP = 0.013
PRICE_COLUMNS = (1, 2, 3, 4)  # open, high, low, close
PRICE_DIGITS = ".8g"
KB = 1024


def real_symbols() -> list[str]:
    return list(symbols_with("5m", "1h"))


def _rows(path: Path, start_ms: int, end_ms: int) -> tuple[str, list[list[str]]]:
    """The header and the rows with `start_ms <= open_time_ms < end_ms`."""
    with gzip.open(path, "rt", newline="") as fh:
        lines = fh.read().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    return lines[0], [r for r in rows if start_ms <= int(r[0]) < end_ms]


def _first_open_ms(path: Path) -> int:
    with gzip.open(path, "rt", newline="") as fh:
        fh.readline()
        return int(fh.readline().split(",", 1)[0])


def _write(path: Path, header: str, rows: list[list[str]], scale: float) -> None:
    out = [header]
    for row in rows:
        if scale != 1.0:
            row = list(row)
            for i in PRICE_COLUMNS:
                row[i] = format(float(row[i]) * scale, PRICE_DIGITS)
        out.append(",".join(row))
    with gzip.open(path, "wt", compresslevel=1, newline="") as fh:
        fh.write("\n".join(out) + "\n")


def build_dataset(directory: Path, n_symbols: int, days: int) -> list[str]:
    """`n_symbols` symbols: the real ones first, then renamed copies (BTC01USDT, ...) with scaled prices."""
    sources = real_symbols()
    if not sources:
        raise SystemExit(f"replay_bench: no SYMBOL-5m.csv.gz with SYMBOL-1h.csv.gz in {KLINES}")
    directory.mkdir(parents=True, exist_ok=True)
    # One window for all symbols, in time: WARMUP_DAYS after the latest recording start.
    start_ms = max(_first_open_ms(KLINES / f"{src}-5m.csv.gz") for src in sources) + WARMUP_DAYS * DAY_MS
    end_ms = start_ms + days * DAY_MS
    cache: dict[tuple[str, str], tuple[str, list[list[str]]]] = {}
    names: list[str] = []
    for i in range(n_symbols):
        src = sources[i % len(sources)]
        copy = i // len(sources)
        name = src if copy == 0 else f"{src.removesuffix('USDT')}{copy:02d}USDT"
        scale = 1.0 + copy * PRICE_SCALE_STEP
        if (src, "5m") not in cache:
            cache[(src, "5m")] = _rows(KLINES / f"{src}-5m.csv.gz", start_ms, end_ms)
            cache[(src, "1h")] = _rows(KLINES / f"{src}-1h.csv.gz", start_ms - WARMUP_DAYS * DAY_MS, end_ms)
        _write(directory / f"{name}-5m.csv.gz", *cache[(src, "5m")], scale)
        _write(directory / f"{name}-1h.csv.gz", *cache[(src, "1h")], scale)
        names.append(name)
    return names


def run_scenario(n_symbols: int, days: int, data: Path | None = None) -> dict[str, Any]:
    """One replay in this process on `data` (built here when None); returns the figures (JSON-able)."""
    import msgspec
    import trio
    from trio.testing import MockClock

    from futures_actor.actors.messages import CandleClosed
    from futures_actor.actors.symbol_actor import SymbolActor
    from futures_actor.binance.paper import PaperExchange
    from futures_actor.cli import RunOptions
    from futures_actor.core.config import load_config
    from futures_actor.replay_run import run_replay

    received: dict[str, tuple[float, float]] = {}  # symbol -> (wall, CPU) at its latest 5m close
    latencies: list[float] = []
    cpu_latencies: list[float] = []
    candles = {"5m": 0}
    seen: set[str] = set()  # symbols the replay universe kept
    span: list[float] = []  # wall time of the first and the latest 5m close handled

    original_handle = SymbolActor._handle
    original_place = PaperExchange.place_order

    async def handle(self: Any, msg: Any, nursery: Any) -> None:
        if isinstance(msg, CandleClosed) and msg.interval == "5m":
            now = time.perf_counter()
            received[self._symbol] = (now, time.process_time())
            candles["5m"] += 1
            seen.add(self._symbol)
            span[1:] = [now]
            if len(span) == 1:
                span.insert(0, now)
        await original_handle(self, msg, nursery)

    async def place_order(self: Any, req: Any) -> Any:
        if not req.reduce_only:
            start = received.pop(req.symbol, None)
            if start is not None:
                latencies.append(time.perf_counter() - start[0])
                cpu_latencies.append(time.process_time() - start[1])
        return await original_place(self, req)

    SymbolActor._handle = handle  # type: ignore[method-assign]
    PaperExchange.place_order = place_order  # type: ignore[method-assign]

    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        root = Path(tmp)
        if data is None:
            data = root / "klines"
            build_dataset(data, n_symbols, days)
        cfg = load_config(CONFIG)
        # Every symbol kept (no ATR floor): the scenario runs at exactly `n_symbols` symbols.
        cfg = msgspec.structs.replace(
            cfg,
            universe=msgspec.structs.replace(
                cfg.universe, max_monitored_symbols=n_symbols, min_atr_ratio=0.0
            ),
            # The decision-latency hooks are on the trio runtime's actors (the replay default is "events").
            replay=msgspec.structs.replace(cfg.replay, runtime="trio"),
        )
        opts = RunOptions(
            config=cfg,
            config_path=CONFIG,
            mode="PAPER_LIVE",
            testnet=False,
            log_dir=root / "logs",
            state_dir=root / "state",
            replay_dir=data,
            console="quiet",
        )
        t0, c0 = time.perf_counter(), time.process_time()
        rc = trio.run(run_replay, opts, clock=MockClock(autojump_threshold=0))
        seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - c0
        # Trades whose entry filled, as the replay summary counts them (the shadow book's are apart).
        summary_path = root / "logs" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        trades = int(summary["trades"]["trades"]) if summary else -1
        # The replay's own count (the hooks above see only closes that reach a trio SymbolActor).
        replayed = int(summary.get("candles_5m", candles["5m"])) if summary else candles["5m"]
    latencies.sort()
    cpu_latencies.sort()
    return {
        "symbols": n_symbols,
        "traded_symbols": len(seen),
        "days": days,
        "rc": rc,
        "candles_5m": replayed,
        # 0 when the replay did not run the trio SymbolActors (another runtime): no latency then.
        "closes_seen_by_actors": candles["5m"],
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "cpu_candles_per_s": replayed / cpu_seconds if cpu_seconds else 0.0,
        "load_1m": os.getloadavg()[0],
        # Candles over the 5m phase only (start-up, file loading and the 1h warm-up excluded).
        "candles_per_s": candles["5m"] / (span[-1] - span[0])
        if len(span) == 2 and span[-1] > span[0]
        else 0.0,
        "e2e_candles_per_s": replayed / seconds if seconds else 0.0,
        "trades": trades,
        "entries": len(latencies),
        "p50_ms": 1e3 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
        "max_ms": 1e3 * latencies[-1] if latencies else None,
        # The same decisions in process CPU time (the replay is one thread: the work done between the
        # close and the order, whatever else the shared machine runs).
        "cpu_p50_ms": 1e3 * statistics.median(cpu_latencies) if cpu_latencies else None,
        "cpu_p99_ms": 1e3 * cpu_latencies[min(len(cpu_latencies) - 1, int(0.99 * len(cpu_latencies)))]
        if cpu_latencies
        else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KB,
    }


def _child(n_symbols: int, days: int, timeout_s: float) -> dict[str, Any]:
    """The scenario in a fresh process (its peak RSS is the replay's alone: the data set is built here)."""
    with tempfile.TemporaryDirectory(prefix="replay-bench-data-") as tmp:
        data = Path(tmp)
        build_dataset(data, n_symbols, days)
        cmd = [sys.executable, __file__, "--scenario", str(n_symbols), "--days", str(days), "--data", tmp]
        try:
            proc = subprocess.run(
                cmd, cwd=REPO, capture_output=True, text=True, check=False, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"replay_bench: scenario {n_symbols} x {days} days killed after the {timeout_s:.0f} s timeout"
            ) from None
    return _parse(proc, n_symbols)


def _parse(proc: subprocess.CompletedProcess[str], n_symbols: int) -> dict[str, Any]:
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise SystemExit(
        f"replay_bench: scenario {n_symbols} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def parse_sizes(text: str) -> list[int]:
    """`20,50,200` -> [20, 50, 200]; a clear error naming the bad entry otherwise."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"--sizes: {part!r} is not a positive number of symbols")
        out.append(int(part))
    if not out:
        raise argparse.ArgumentTypeError("--sizes: no size given (e.g. 20,50,200,300)")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=3, help="5m window length in days (default 3)")
    ap.add_argument("--big", type=int, default=200, help="symbols of the large latency scenario")
    ap.add_argument("--skip-big", action="store_true", help="skip the large scenario")
    ap.add_argument("--sizes", type=parse_sizes, help="symbol counts to run, e.g. 20,50,200,300")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed to one scenario")
    ap.add_argument("--scenario", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.days < 1:
        ap.error(f"--days: {args.days} is not a positive number of days")
    if args.scenario is not None:
        print(json.dumps(run_scenario(args.scenario, args.days, args.data)))
        return
    if args.sizes:
        sizes = args.sizes
    else:
        sizes = [len(real_symbols()), 20] + ([] if args.skip_big else [args.big])
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start")
    header = (
        f"{'symbols':>7} {'kept':>5} {'days':>4} {'candles':>8} {'seconds':>8} {'CPU s':>7} {'e2e c/s':>8} "
        f"{'c/CPU-s':>8} {'5m c/s':>8} {'trades':>6} {'entries':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'CPU p50':>7} {'CPU p99':>7} "
        f"{'RSS MB':>7} {'load':>5}"
    )
    print(header)
    for n in sizes:
        r = _child(n, args.days, args.timeout)
        print(
            f"{r['symbols']:>7} {r['traded_symbols']:>5} {r['days']:>4} {r['candles_5m']:>8} {r['seconds']:>8.2f} "
            f"{r['cpu_seconds']:>7.2f} {r['e2e_candles_per_s']:>8.0f} {r['cpu_candles_per_s']:>8.0f} "
            f"{r['candles_per_s']:>8.0f} {r['trades']:>6} {r['entries']:>7} {_fmt(r['p50_ms'], '7.2f')} "
            f"{_fmt(r['p99_ms'], '7.2f')} {_fmt(r['max_ms'], '7.2f')} {_fmt(r['cpu_p50_ms'], '7.2f')} "
            f"{_fmt(r['cpu_p99_ms'], '7.2f')} {r['peak_rss_mb']:>7.0f} {r['load_1m']:>5.1f}",
            flush=True,
        )
        if r["closes_seen_by_actors"] == 0:
            print(
                "  note: no 5m close reached a trio SymbolActor (the replay ran another runtime): decision "
                "latency is measured on the trio runtime only; the 5m c/s column is 0"
            )


if __name__ == "__main__":
    main()

"""Replay end to end, side by side with nautilus_trader (issue 12 "Benchmarks"), in one invocation.

For each scenario (symbols x days of 5m candles, built from the recorded klines as `replay_bench.py`
builds them: the real symbols first, then renamed copies with scaled prices) it runs, one after the
other and on the same bars:

1. ours as a user runs it: `python -m futures_actor --paper --replay DIR --quiet` (the same as the
   `futures-actor` console script) in a fresh process, from process start to the printed summary;
2. nautilus_trader's `BacktestEngine` (`nautilus_backtest.py`, also a fresh process) with each strategy
   asked for (`trivial`: bars counted; `ema_atr`: EMA cross entries with an ATR stop/target bracket).

Both are timed the same way: wall time from spawning the process to its exit, and the process's CPU
time (user + system, `os.wait4`), which is what to compare on a shared machine. nautilus also reports
its own in-loop figure (`engine.run()` alone). Candles = the 5m candles of the symbols our replay kept
(its `summary.json`); nautilus is given exactly those symbols. Ours also replays each symbol's 1h
candles (the 1h history before the window included); nautilus gets the 5m bars only.

The bench config is `config/config.example.json` with `universe.max_monitored_symbols` = the scenario's
symbols and `universe.min_atr_ratio` = 0 (so the universe keeps every symbol and both sides see the
same bars). `FA_BENCH_DATA=DIR` points at the recorded data (default: the bundled `data/sample/`).

    FA_BENCH_DATA=/work/shared/data .venv/bin/python benchmarks/replay_vs_nautilus.py \
        [--scenarios 20x3,200x1] [--repeat 2] [--strategies trivial,ema_atr] [--timeout 900]

nautilus_trader comes with the `bench` extra (`pip install -e '.[bench]'`); without it only ours runs.
The ratio printed is our candles/s over nautilus's (CPU time and wall time), median over the repeats.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replay_bench import CONFIG, build_dataset

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NAUTILUS_SCRIPT = HERE / "nautilus_backtest.py"
KB = 1024
STRATEGIES = ("trivial", "ema_atr")


@dataclass(frozen=True)
class Scenario:
    symbols: int
    days: int

    @property
    def label(self) -> str:
        return f"{self.symbols}x{self.days}"


@dataclass
class Timed:
    """One process: wall time, CPU time (user + system), peak RSS, exit status and its stdout."""

    wall_s: float
    cpu_s: float
    rss_mb: float
    rc: int
    timed_out: bool
    stdout: str
    stderr: str


def parse_scenarios(text: str) -> list[Scenario]:
    """`20x3,200x1` -> [Scenario(20, 3), Scenario(200, 1)]; a clear error on anything else."""
    out: list[Scenario] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        sym, sep, days = part.partition("x")
        if not sep or not sym.isdigit() or not days.isdigit() or int(sym) < 1 or int(days) < 1:
            raise argparse.ArgumentTypeError(
                f"--scenarios: {part!r} is not SYMBOLSxDAYS with both positive integers (e.g. 20x3)"
            )
        out.append(Scenario(int(sym), int(days)))
    if not out:
        raise argparse.ArgumentTypeError("--scenarios: no scenario given (e.g. 20x3,200x1)")
    return out


def parse_strategies(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    if bad:
        raise argparse.ArgumentTypeError(f"--strategies: {bad} unknown; expected some of {list(STRATEGIES)}")
    return names


def timed_run(cmd: list[str], timeout_s: float, cwd: Path) -> Timed:
    """Run `cmd` to completion in a fresh process; its own rusage (not the other children's)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
        deadline = t0 + timeout_s
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                timed_out = True
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
        out.seek(0)
        err.seek(0)
        return Timed(
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            rss_mb=usage.ru_maxrss / KB,
            rc=proc.returncode,
            timed_out=timed_out,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def _status(t: Timed, timeout_s: float) -> str:
    return f"killed after the {timeout_s:.0f} s timeout" if t.timed_out else f"exit {t.rc}"


def bench_config(path: Path, n_symbols: int, runtime: str | None) -> Path:
    cfg = json.loads(CONFIG.read_text())
    cfg["universe"]["max_monitored_symbols"] = n_symbols
    cfg["universe"]["min_atr_ratio"] = 0.0
    if runtime is not None:
        cfg["replay"]["runtime"] = runtime
    path.write_text(json.dumps(cfg, indent=1))
    return path


def run_ours(data: Path, cfg: Path, work: Path, timeout_s: float) -> dict[str, Any]:
    log_dir = work / "logs"
    state_dir = work / "state"
    cmd = [sys.executable, "-m", "futures_actor", "--config", str(cfg), "--paper", "--replay", str(data)]
    cmd += ["--quiet", "--log-dir", str(log_dir), "--state-dir", str(state_dir)]
    t = timed_run(cmd, timeout_s, REPO)
    summary_path = log_dir / "summary.json"
    if t.rc != 0 or not summary_path.is_file():
        raise SystemExit(
            f"replay_vs_nautilus: our replay failed ({_status(t, timeout_s)}):\n{t.stdout[-2000:]}\n{t.stderr[-3000:]}"
        )
    summary = json.loads(summary_path.read_text())
    return {
        "engine": "ours",
        "strategy": "bot",
        "candles": int(summary["candles_5m"]),
        "candles_1h": int(summary.get("candles_1h", 0)),
        "symbols": list(summary["symbols"]),
        "trades": int(summary["trades"]["trades"]),
        "wall_s": t.wall_s,
        "cpu_s": t.cpu_s,
        "rss_mb": t.rss_mb,
        "in_loop_per_s": None,
    }


def run_nautilus(data: Path, symbols: list[str], strategy: str, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, str(NAUTILUS_SCRIPT), "--data", str(data), "--strategy", strategy]
    cmd += ["--symbols", ",".join(symbols)]
    t = timed_run(cmd, timeout_s, REPO)
    result: dict[str, Any] | None = None
    for line in reversed(t.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            break
    if t.rc != 0 or result is None:
        raise SystemExit(
            f"replay_vs_nautilus: nautilus ({strategy}) failed ({_status(t, timeout_s)}):\n{t.stdout[-2000:]}\n{t.stderr[-3000:]}"
        )
    return {
        "engine": "nautilus",
        "strategy": strategy,
        "candles": int(result["bars"]),
        "trades": int(result["positions"]),
        "wall_s": t.wall_s,
        "cpu_s": t.cpu_s,
        "rss_mb": t.rss_mb,
        "in_loop_per_s": float(result["in_loop_bars_per_cpu_s"]),
        "detail": result,
    }


def _row(scenario: Scenario, rep: int, r: dict[str, Any], load: tuple[float, float, float]) -> str:
    loop = "-" if r["in_loop_per_s"] is None else f"{r['in_loop_per_s']:.0f}"
    return (
        f"{scenario.label:>6} {rep:>3} {r['engine']:>8} {r['strategy']:>8} {r['candles']:>8} {r['wall_s']:>7.2f} "
        f"{r['cpu_s']:>7.2f} {r['candles'] / r['wall_s']:>8.0f} {r['candles'] / r['cpu_s']:>8.0f} {loop:>8} "
        f"{r['rss_mb']:>6.0f} {r['trades']:>6}  {load[0]:.1f}"
    )


def nautilus_available() -> bool:
    return importlib.util.find_spec("nautilus_trader") is not None


def run_scenario(
    scenario: Scenario, repeat: int, strategies: list[str], timeout_s: float, runtime: str | None
) -> None:
    with tempfile.TemporaryDirectory(prefix="replay-vs-nautilus-") as tmp:
        root = Path(tmp)
        data = root / "klines"
        build_dataset(data, scenario.symbols, scenario.days)
        cfg = bench_config(root / "config.json", scenario.symbols, runtime)
        results: dict[str, list[dict[str, Any]]] = {}
        for rep in range(1, repeat + 1):
            work = root / f"run{rep}"
            ours = run_ours(data, cfg, work, timeout_s)
            print(_row(scenario, rep, ours, os.getloadavg()), flush=True)
            results.setdefault("ours", []).append(ours)
            if len(ours["symbols"]) != scenario.symbols:
                print(f"  note: the universe kept {len(ours['symbols'])} of {scenario.symbols} symbols")
            if not nautilus_available():
                continue
            for strategy in strategies:
                theirs = run_nautilus(data, ours["symbols"], strategy, timeout_s)
                if theirs["candles"] != ours["candles"]:
                    print(f"  note: nautilus got {theirs['candles']} bars, ours {ours['candles']} 5m candles")
                print(_row(scenario, rep, theirs, os.getloadavg()), flush=True)
                results.setdefault(strategy, []).append(theirs)
        ours_cpu = statistics.median(r["candles"] / r["cpu_s"] for r in results["ours"])
        ours_wall = statistics.median(r["candles"] / r["wall_s"] for r in results["ours"])
        print(f"{scenario.label}: ours {ours_cpu:.0f} candles/CPU-s, {ours_wall:.0f} candles/s wall (median)")
        for strategy in strategies:
            if strategy not in results:
                continue
            cpu = statistics.median(r["candles"] / r["cpu_s"] for r in results[strategy])
            wall = statistics.median(r["candles"] / r["wall_s"] for r in results[strategy])
            loop = statistics.median(r["in_loop_per_s"] for r in results[strategy])
            print(
                f"{scenario.label}: nautilus {strategy}: {cpu:.0f} candles/CPU-s, {wall:.0f} candles/s wall, "
                f"{loop:.0f}/CPU-s inside engine.run(); ratio ours/nautilus: {ours_cpu / cpu:.2f}x CPU, "
                f"{ours_wall / wall:.2f}x wall (aim >= 2.5x)",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", type=parse_scenarios, default=parse_scenarios("20x3,200x1"))
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side per scenario (default 1)")
    ap.add_argument("--strategies", type=parse_strategies, default=list(STRATEGIES))
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed to one process")
    ap.add_argument(
        "--runtime",
        choices=("events", "trio"),
        help="our replay runtime (config replay.runtime; default: the config's, i.e. what --replay runs)",
    )
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat: {args.repeat} is not a positive number of runs")
    if not nautilus_available():
        print("nautilus_trader is not installed (pip install -e '.[bench]'): ours only")
    runtime = args.runtime or json.loads(CONFIG.read_text()).get("replay", {}).get("runtime", "?")
    print(
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start; our replay runtime: {runtime}"
    )
    print(
        f"{'scen':>6} {'run':>3} {'engine':>8} {'strategy':>8} {'candles':>8} {'wall s':>7} {'CPU s':>7} "
        f"{'c/s':>8} {'c/CPU-s':>8} {'in-loop':>8} {'RSS MB':>6} {'trades':>6}  load"
    )
    for scenario in args.scenarios:
        run_scenario(scenario, args.repeat, args.strategies, args.timeout, args.runtime)


if __name__ == "__main__":
    main()

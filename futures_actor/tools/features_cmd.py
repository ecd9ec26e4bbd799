"""The `features` subcommand: recorded klines in, one CSV row of features and regime per 5m candle out.

    futures_actor features --klines 5m.csv[.gz] --trend-klines 1h.csv[.gz] [--config PATH] --out out.csv

It runs exactly the live path: every candle goes through a `SymbolFeatureEngine` (candle stores +
incremental indicators) in the order a live feed delivers them, and each 5m candle's features go
through `detect_regime`. Values not yet defined (warm-up) are written as empty cells; floats are
written in their shortest round-trip form. A recorded file cannot be backfilled, so a gap restarts
the affected series (warned on stderr; features are empty until warm again).

Output: `--out` names a file; a missing parent directory is created (as `--log-dir` is; said on
stderr), a path that cannot be created or written is refused with the path named before any work is
done. The file is written to a temporary name beside it and renamed, so a failure never leaves a
truncated CSV behind.

Exit codes: 0 success; 2 bad arguments, unreadable or invalid input or config, unwritable output
(a one-line message on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
from pathlib import Path
from typing import TextIO

from futures_actor.core.candles import AppendResult
from futures_actor.core.config import BotConfig, ConfigError, default_config, load_config
from futures_actor.core.features import SIGNAL_INTERVAL, TREND_INTERVAL, compute_features
from futures_actor.core.regime import detect_regime
from futures_actor.data.klines_csv import KlinesFileError, read_klines_candles

__all__ = ["OUTPUT_COLUMNS", "run_features"]

PROG = "futures_actor features"
EXIT_OK = 0
EXIT_USAGE = 2

OUTPUT_COLUMNS = (
    "open_time_ms",
    "rsi",
    "adx",
    "atr",
    "ema20",
    "ema50",
    "ema20_1h",
    "ema50_1h",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "bb_width",
    "volume_z",
    "atr_z",
    "regime",
    "direction",
    "regime_confidence",
    "regime_reason",
)
_FEATURE_COLUMNS = OUTPUT_COLUMNS[1:14]


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgumentError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Compute the bot's 5m features and regime over recorded klines (CSV, .gz by extension).",
    )
    p.add_argument("--klines", required=True, type=Path, help="5m klines CSV (the signal timeframe)")
    p.add_argument("--trend-klines", required=True, type=Path, help="1h klines CSV (the trend timeframe)")
    p.add_argument("--config", type=Path, default=None, help="bot config JSON (default: built-in defaults)")
    p.add_argument("--out", required=True, type=Path, help="output CSV path")
    return p


def _fmt(x: float | None) -> str:
    return "" if x is None else repr(x)


def run_features(argv: list[str], *, stderr: TextIO | None = None) -> int:
    """Run the command; returns the process exit code (0 ok, 2 bad input)."""
    err = stderr if stderr is not None else sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        print(parser.format_usage().rstrip(), file=err)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE

    try:
        config: BotConfig = load_config(args.config) if args.config is not None else default_config()
        five = read_klines_candles(args.klines, interval=SIGNAL_INTERVAL)
        hour = read_klines_candles(args.trend_klines, interval=TREND_INTERVAL)
    except (ConfigError, KlinesFileError) as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE

    out: Path = args.out
    problem = _prepare_output(out, err)
    if problem is not None:
        print(f"{PROG}: error: --out {out}: {problem}", file=err)
        return EXIT_USAGE

    symbol = _symbol_from_path(args.klines)
    gaps: list[AppendResult] = []
    steps = compute_features(
        symbol=symbol, config=config, candles_5m=five, candles_1h=hour, restart_on_gap=True, gaps=gaps
    )
    for g in gaps:
        print(
            f"{PROG}: warning: gap before open_time_ms={g.open_time_ms} "
            f"({g.missing_count} candles missing from {g.missing_from_ms}); state restarted there",
            file=err,
        )

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(OUTPUT_COLUMNS)
            for step in steps:
                f = step.features
                if f is None:  # cannot happen with restart_on_gap; never drop a row silently
                    writer.writerow([step.append.open_time_ms, *([""] * (len(OUTPUT_COLUMNS) - 1))])
                    continue
                r = detect_regime(f, config)
                writer.writerow(
                    [
                        f.open_time_ms,
                        *(_fmt(getattr(f, col)) for col in _FEATURE_COLUMNS),
                        r.regime.value,
                        "" if r.direction is None else r.direction.value,
                        repr(r.confidence),
                        r.reason,
                    ]
                )
        os.replace(tmp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        print(f"{PROG}: error: --out {out}: cannot be written: {exc.strerror or exc}", file=err)
        return EXIT_USAGE
    return EXIT_OK


def _prepare_output(out: Path, err: TextIO) -> str | None:
    """Create `out`'s missing parent directories (said on `err`); what is wrong with `out`, or None."""
    if out.is_dir():
        return "is a directory (expected a file path)"
    parent = out.parent
    if not parent.is_dir():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create the directory {parent}: {exc.strerror or exc} ({exc.filename or parent})"
        print(f"{PROG}: created directory {parent}", file=err)
    if not os.access(parent, os.W_OK):
        return f"the directory {parent} is not writable"
    return None


def _symbol_from_path(path: Path) -> str:
    """`.../BTCUSDT-5m.csv.gz` -> `BTCUSDT` (a label only; features do not depend on it)."""
    return path.name.split("-", 1)[0].split(".", 1)[0] or "UNKNOWN"

"""`download-klines`: fetch kline and funding history from Binance public endpoints to replay files.

    download-klines --symbols BTCUSDT,ETHUSDT --intervals 5m,1h --days 90 --out DIR [--funding] [--base-url URL]

Writes `DIR/SYMBOL-INTERVAL.csv.gz` in the replay CSV format of `shared/data/klines/` (every column
filled, closed candles only) and, with `--funding`, `DIR/funding/SYMBOL.csv`
(`funding_time_ms,symbol,funding_rate,mark_price_kline_open`; the last column is left empty: the
fundingRate endpoint does not give the mark-price kline open). Requests go through the REST client,
so they are paced by the weight budget. Resumable: an existing file is appended to after the last
open time already on disk (each run appends one gzip member; readers see one stream). A progress
line per page goes to stderr. Exit status: 0 done, 1 exchange or I/O failure, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import re
import sys
from pathlib import Path
from typing import TextIO

import httpx
import trio

from futures_actor.binance.errors import BinanceError
from futures_actor.binance.rest import KLINE_INTERVAL_MS, BinanceRestClient
from futures_actor.core.clock import SystemWallClock, WallClock, iso_utc
from futures_actor.core.config import ExchangeConfig

__all__ = ["FUNDING_HEADER", "KLINE_HEADER", "amain", "run_download_klines"]

KLINE_HEADER = (
    "open_time_ms,open,high,low,close,volume,close_time_ms,quote_volume,trades,taker_buy_base,taker_buy_quote"
)
FUNDING_HEADER = "funding_time_ms,symbol,funding_rate,mark_price_kline_open"
_DAY_MS = 86_400_000
_PAGE = 1500
_FUNDING_PAGE = 1000
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgError(message)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="download-klines", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--intervals", required=True, help="comma-separated, e.g. 5m,1h")
    p.add_argument("--days", required=True, type=int, help="history length in days (>= 1)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--funding", action="store_true", help="also download funding-rate history")
    p.add_argument("--base-url", default="", help="REST base URL (default: the production fapi host)")
    args = p.parse_args(argv)
    args.symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    args.intervals = [i.strip() for i in args.intervals.split(",") if i.strip()]
    for s in args.symbols:
        if not _SYMBOL_RE.match(s):
            raise _ArgError(f"--symbols: {s!r} is not a symbol (expected e.g. BTCUSDT)")
    for i in args.intervals:
        if i not in KLINE_INTERVAL_MS:
            raise _ArgError(f"--intervals: {i!r} is not one of {', '.join(KLINE_INTERVAL_MS)}")
    if not args.symbols or not args.intervals:
        raise _ArgError("--symbols and --intervals must each name at least one value")
    if args.days < 1:
        raise _ArgError(f"--days: {args.days} must be >= 1")
    return args


def _last_time(path: Path, gz: bool) -> int | None:
    """The first column of the last data row of an existing file, or None."""
    if not path.exists():
        return None
    opener = gzip.open if gz else open
    last: str | None = None
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        for line in fh:
            if line.strip() and line[0].isdigit():
                last = line
    return int(last.split(",", 1)[0]) if last else None


def _append(path: Path, text: str, gz: bool) -> None:
    if gz:
        with gzip.open(path, "at", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        with path.open("a", encoding="utf-8", newline="") as fh:
            fh.write(text)


async def _download_klines(
    client: BinanceRestClient, out: Path, symbol: str, interval: str, days: int, err: TextIO
) -> int:
    step = KLINE_INTERVAL_MS[interval]
    now = client.server_now_ms()
    last_closed_open = (now // step) * step - step
    start = ((now - days * _DAY_MS) // step) * step
    path = out / f"{symbol}-{interval}.csv.gz"
    previous = await trio.to_thread.run_sync(_last_time, path, True)
    if previous is not None:
        start = max(start, previous + step)
    written = 0
    total = max(0, (last_closed_open - start) // step + 1)
    new_file = not path.exists()
    while start <= last_closed_open:
        rows = await client.klines(symbol, interval, start_ms=start, end_ms=last_closed_open, limit=_PAGE)
        rows = [r for r in rows if start <= r.open_time_ms <= last_closed_open]
        if not rows:
            break
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if new_file:
            buf.write(KLINE_HEADER + "\n")
            new_file = False
        for r in rows:
            w.writerow(
                [
                    r.open_time_ms, r.open, r.high, r.low, r.close, r.volume, r.close_time_ms,
                    r.quote_volume, r.trades, r.taker_buy_base, r.taker_buy_quote,
                ]
            )  # fmt: skip
        await trio.to_thread.run_sync(_append, path, buf.getvalue(), True)
        written += len(rows)
        start = rows[-1].open_time_ms + step
        print(
            f"download-klines: {symbol} {interval} {written}/{total} candles, up to {iso_utc(rows[-1].open_time_ms)}",
            file=err,
            flush=True,
        )
    return written


async def _download_funding(client: BinanceRestClient, out: Path, symbol: str, days: int, err: TextIO) -> int:
    now = client.server_now_ms()
    start = now - days * _DAY_MS
    path = out / "funding" / f"{symbol}.csv"
    await trio.Path(path.parent).mkdir(parents=True, exist_ok=True)
    previous = await trio.to_thread.run_sync(_last_time, path, False)
    if previous is not None:
        start = max(start, previous + 1)
    written = 0
    new_file = not path.exists()
    while start <= now:
        rows = await client.funding_rate_history(symbol, start_ms=start, end_ms=now, limit=_FUNDING_PAGE)
        rows = [r for r in rows if r.funding_time >= start]
        if not rows:
            break
        buf = io.StringIO()
        if new_file:
            buf.write(FUNDING_HEADER + "\n")
            new_file = False
        w = csv.writer(buf, lineterminator="\n")
        for r in rows:
            w.writerow([r.funding_time, r.symbol, r.funding_rate, ""])
        await trio.to_thread.run_sync(_append, path, buf.getvalue(), False)
        written += len(rows)
        start = rows[-1].funding_time + 1
        print(
            f"download-klines: {symbol} funding {written} rows, up to {iso_utc(rows[-1].funding_time)}",
            file=err,
        )
        if len(rows) < _FUNDING_PAGE:
            break
    return written


async def amain(
    argv: list[str],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    wall_clock: WallClock | None = None,
    cfg: ExchangeConfig | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The command, inside a running trio loop (tests call this under a mock clock)."""
    err = stderr or sys.stderr
    try:
        args = _parse(argv)
    except _ArgError as exc:
        print(f"download-klines: error: {exc}", file=err)
        return 2
    out: Path = args.out
    try:
        await trio.Path(out).mkdir(parents=True, exist_ok=True)
        async with BinanceRestClient(
            cfg=cfg or ExchangeConfig(),
            wall_clock=wall_clock or SystemWallClock(),
            transport=transport,
            base_url=args.base_url or None,
        ) as client:
            await client.sync_time()
            for symbol in args.symbols:
                for interval in args.intervals:
                    await _download_klines(client, out, symbol, interval, args.days, err)
                if args.funding:
                    await _download_funding(client, out, symbol, args.days, err)
    except (BinanceError, OSError) as exc:
        print(f"download-klines: failed: {exc}", file=err)
        return 1
    return 0


def run_download_klines(argv: list[str]) -> int:
    """Entry point: `download-klines ...` (see the module docstring)."""
    return trio.run(amain, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_download_klines(sys.argv[1:]))

"""`python -m futures_actor sim-exchange`: run the fake Binance exchange on 127.0.0.1 (offline use).

REST (HTTP/1.1) on `--port`, WebSockets on `--ws-port` (default port + 1). The exchange clock starts
at `--start-ms` (default: the first recorded candle) and runs at `--speed` × real time, replaying the
recorded `<SYMBOL>-<interval>.csv.gz` klines of `--klines DIR`. The API key and secret are read from
the environment variables the bot reads (config `exchange.api_key_env` / `api_secret_env`).

Wall-clock mode (`--wall-clock`, for a LIVE bot, which signs and checks staleness against the wall
clock): the exchange clock is the wall clock and the recording is shifted in time. By default it is
shifted so that its last candle closes now (everything is history; no new candle comes). With
`--now-at MS` (a recorded instant, epoch ms or ISO 8601 UTC) it is shifted so that this instant is now:
what was recorded before it is served as the past, the rest plays in real time at speed 1. The shift is
a whole number of `--align` (default 1h, the bot's trend timeframe), so recorded hours stay whole hours
on Binance's grid; the instant that is now is thus within half an `--align` of `--now-at`, and the
tool prints the shift and the recorded instant that is now.

Market data while a candle forms (default; `--no-intra-candle` turns it off): kline frames of the
forming candle every `--kline-ms` (250), `@markPrice` every `--mark-ms` (3000), `@markPrice@1s` every
`--mark-fast-ms` (1000), `@bookTicker` every `--book-ms` (250), as Binance sends them; see
`binance/sim/feed.py` for the price path and the derived volumes. The cadences are exchange-clock
milliseconds: at `--speed 100` a 5m candle's 1,200 frames come in 3 s.

`--exchange-info` defaults to the recording bundled in `data/sample/`. Binance's WebSocket pings (3 min)
and 24 h cut are on. `http://127.0.0.1:PORT/admin/...` arms faults and shows the request log
(`/admin/faults?kind=...`, `/admin/requests?since=N`, `/admin/state`, `/admin/price`; see
`SimExchange._admin`).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import trio

from futures_actor.binance.sim import (
    MarketFeed,
    SimExchange,
    load_exchange_info,
    read_funding_csv,
    serve_http,
    serve_ws,
)
from futures_actor.core.config import BotConfig
from futures_actor.core.types import INTERVAL_MS, Candle
from futures_actor.data.klines_csv import KlinesFileError, read_klines_candles

__all__ = ["parse_instant_ms", "run_sim_exchange", "wall_clock_shift"]

_TICK_SECONDS = 0.25
DEFAULT_EXCHANGE_INFO = Path("data") / "sample" / "exchangeInfo_mainnet_2024-10-02.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="futures_actor sim-exchange", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ws-port", type=int, default=None)
    p.add_argument("--klines", type=Path, required=True, help="directory of <SYMBOL>-<interval>.csv.gz")
    p.add_argument(
        "--exchange-info",
        type=Path,
        default=DEFAULT_EXCHANGE_INFO,
        help=f"recorded exchangeInfo JSON (default: {DEFAULT_EXCHANGE_INFO})",
    )
    p.add_argument("--funding", type=Path, default=None, help="directory of <SYMBOL>.csv funding files")
    p.add_argument("--interval", default="5m")
    p.add_argument("--start-ms", type=int, default=None)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument(
        "--wall-clock",
        action="store_true",
        help="exchange clock = wall clock; the recording is shifted to end now (for a LIVE bot)",
    )
    p.add_argument(
        "--now-at",
        type=parse_instant_ms,
        default=None,
        metavar="INSTANT",
        help="with --wall-clock: shift the recording so that this recorded instant (epoch ms or ISO 8601 "
        "UTC) is now; the rest plays in real time",
    )
    p.add_argument(
        "--align",
        default="1h",
        choices=[name for name, ms in INTERVAL_MS.items() if ms >= INTERVAL_MS["1m"]],
        help="--now-at shifts by a whole number of this interval (default 1h: recorded hours stay whole)",
    )
    feed = MarketFeed()
    p.add_argument(
        "--no-intra-candle",
        action="store_true",
        help="one closed kline frame per candle instead of Binance's stream while it forms",
    )
    p.add_argument("--kline-ms", type=int, default=feed.kline_ms, help="kline frames (default: %(default)s)")
    p.add_argument("--mark-ms", type=int, default=feed.mark_ms, help="@markPrice (default: %(default)s)")
    p.add_argument(
        "--mark-fast-ms", type=int, default=feed.mark_fast_ms, help="@markPrice@1s (default: %(default)s)"
    )
    p.add_argument("--book-ms", type=int, default=feed.book_ms, help="@bookTicker (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="read only the first N candles per file")
    return p


def run_sim_exchange(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    cfg = BotConfig()
    key = os.environ.get(cfg.exchange.api_key_env, "")
    secret = os.environ.get(cfg.exchange.api_secret_env, "")
    if not key or not secret:
        print(
            f"sim-exchange: set {cfg.exchange.api_key_env} and {cfg.exchange.api_secret_env}", file=sys.stderr
        )
        return 2
    files = sorted(args.klines.glob(f"*-{args.interval}.csv.gz"))
    if not files:
        print(f"sim-exchange: no *-{args.interval}.csv.gz files in {args.klines}", file=sys.stderr)
        return 2
    try:
        candles = {
            f.name.split("-")[0]: read_klines_candles(f, interval=args.interval, limit=args.limit)
            for f in files
        }
        info, specs = load_exchange_info(args.exchange_info, symbols=sorted(candles))
    except (KlinesFileError, ValueError) as bad:
        print(f"sim-exchange: {bad}", file=sys.stderr)
        return 2
    first = min(c[0].open_time_ms for c in candles.values() if c)
    start = args.start_ms if args.start_ms is not None else first
    shift = 0
    if args.now_at is not None and not args.wall_clock:
        print("sim-exchange: --now-at needs --wall-clock", file=sys.stderr)
        return 2
    try:
        feed = None if args.no_intra_candle else _feed(args)
        if args.wall_clock:
            now = int(time.time() * 1000)
            step = candles_step(candles)
            if args.now_at is None:
                last_close = max(c[-1].open_time_ms for c in candles.values() if c) + step
                shift = (now // step * step) - last_close
            else:
                shift = wall_clock_shift(now_ms=now, now_at_ms=args.now_at, align_ms=INTERVAL_MS[args.align])
            candles = {
                sym: [msgspec.structs.replace(c, open_time_ms=c.open_time_ms + shift) for c in cs]
                for sym, cs in candles.items()
            }
            start = now
            print(
                f"sim-exchange: wall clock; recording shifted by {shift} ms: recorded instant {now - shift} "
                f"({_iso(now - shift)}) is now",
                flush=True,
            )
    except ValueError as bad:
        print(f"sim-exchange: {bad}", file=sys.stderr)
        return 2
    ex = SimExchange(
        exchange_info=info,
        specs=specs,
        execution=cfg.execution,
        api_key=key,
        api_secret=secret,
        start_ms=start,
        base_interval=args.interval,
        feed=feed,
    )
    for sym, cs in candles.items():
        ex.load_candles(sym, cs)
        if args.funding is not None and (args.funding / f"{sym}.csv").is_file():
            rows = read_funding_csv(args.funding / f"{sym}.csv")
            ex.load_funding(sym, [(t + shift, r) for t, r in rows])
    ex.admin_enabled = True
    ex.faults.server_pings()
    ex.faults.cut_ws_after()
    ws_port = args.ws_port if args.ws_port is not None else args.port + 1
    speed = 1.0 if args.wall_clock else args.speed
    try:
        trio.run(_serve, ex, args.port, ws_port, speed, args.wall_clock)
    except (OSError, BaseExceptionGroup) as raised:
        leaf: BaseException = raised
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        if not isinstance(leaf, OSError):
            raise
        if leaf.errno == errno.EADDRINUSE:
            print(
                f"sim-exchange: port {args.port} or {ws_port} is already in use; pick another --port",
                file=sys.stderr,
            )
        else:
            print(f"sim-exchange: cannot serve on 127.0.0.1: {leaf}", file=sys.stderr)
        return 2
    return 0


def _feed(args: argparse.Namespace) -> MarketFeed:
    return MarketFeed(
        kline_ms=args.kline_ms, mark_ms=args.mark_ms, mark_fast_ms=args.mark_fast_ms, book_ms=args.book_ms
    )


def parse_instant_ms(text: str) -> int:
    """`--now-at`: epoch milliseconds, or an ISO 8601 time (UTC unless it names its offset)."""
    if text.isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--now-at {text!r}: expected epoch milliseconds or an ISO 8601 time such as 2025-01-20T14:05:00Z"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def wall_clock_shift(*, now_ms: int, now_at_ms: int, align_ms: int) -> int:
    """The shift (ms, added to recorded times) that makes recorded `now_at_ms` now, rounded to the nearest
    whole `align_ms` so that shifted candles keep Binance's grid (a 1h candle opens on the hour)."""
    if align_ms <= 0:
        raise ValueError(f"align_ms={align_ms}: expected a positive interval")
    return round((now_ms - now_at_ms) / align_ms) * align_ms


def candles_step(candles: dict[str, list[Candle]]) -> int:
    """The base interval of the recording in ms (from consecutive open times)."""
    for cs in candles.values():
        if len(cs) > 1:
            return cs[1].open_time_ms - cs[0].open_time_ms
    raise ValueError("sim-exchange: --wall-clock needs at least two candles in a file")


async def _serve(ex: SimExchange, port: int, ws_port: int, speed: float, wall_clock: bool) -> None:
    async with trio.open_nursery() as nursery:
        http_port = await nursery.start(
            lambda task_status: serve_http(ex, port=port, task_status=task_status)
        )
        wsp = await nursery.start(lambda task_status: serve_ws(ex, port=ws_port, task_status=task_status))
        print(f"sim-exchange: REST http://127.0.0.1:{http_port} WS ws://127.0.0.1:{wsp}", flush=True)
        t0, ms0 = trio.current_time(), ex.now_ms
        while True:
            await trio.sleep(_TICK_SECONDS)
            if wall_clock:  # the wall clock itself: the bot signs and checks staleness against it
                target = int(time.time() * 1000)
            else:
                target = ms0 + int((trio.current_time() - t0) * 1000 * speed)
            ex.advance_to(max(ex.now_ms, target))

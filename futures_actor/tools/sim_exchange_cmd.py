"""`python -m futures_actor sim-exchange`: run the fake Binance exchange on 127.0.0.1 (offline use).

REST (HTTP/1.1) on `--port`, WebSockets on `--ws-port` (default port + 1). The exchange clock starts
at `--start-ms` (default: the first recorded candle) and runs at `--speed` × real time, replaying the
recorded `<SYMBOL>-<interval>.csv.gz` klines of `--klines DIR`. With `--wall-clock` the exchange clock
is the wall clock and the recording is shifted so that its last candle closes now: a LIVE bot signs
and checks staleness against the same clock and trades against it in real time. The API key and secret
are read from the environment variables the bot reads (config `exchange.api_key_env` / `api_secret_env`).

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
from pathlib import Path

import msgspec
import trio

from futures_actor.binance.sim import SimExchange, load_exchange_info, read_funding_csv, serve_http, serve_ws
from futures_actor.core.config import BotConfig
from futures_actor.core.types import Candle
from futures_actor.data.klines_csv import KlinesFileError, read_klines_candles

__all__ = ["run_sim_exchange"]

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
    if args.wall_clock:
        now = int(time.time() * 1000)
        step = candles_step(candles)
        last_close = max(c[-1].open_time_ms for c in candles.values() if c) + step
        shift = (now // step * step) - last_close
        candles = {
            sym: [msgspec.structs.replace(c, open_time_ms=c.open_time_ms + shift) for c in cs]
            for sym, cs in candles.items()
        }
        start = now
    ex = SimExchange(
        exchange_info=info,
        specs=specs,
        execution=cfg.execution,
        api_key=key,
        api_secret=secret,
        start_ms=start,
        base_interval=args.interval,
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
        trio.run(_serve, ex, args.port, ws_port, speed)
    except (OSError, BaseExceptionGroup) as raised:
        exc: BaseException = raised
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        if not isinstance(exc, OSError):
            raise
        if exc.errno == errno.EADDRINUSE:
            print(
                f"sim-exchange: port {args.port} or {ws_port} is already in use; pick another --port",
                file=sys.stderr,
            )
        else:
            print(f"sim-exchange: cannot serve on 127.0.0.1: {exc}", file=sys.stderr)
        return 2
    return 0


def candles_step(candles: dict[str, list[Candle]]) -> int:
    """The base interval of the recording in ms (from consecutive open times)."""
    for cs in candles.values():
        if len(cs) > 1:
            return cs[1].open_time_ms - cs[0].open_time_ms
    raise ValueError("sim-exchange: --wall-clock needs at least two candles in a file")


async def _serve(ex: SimExchange, port: int, ws_port: int, speed: float) -> None:
    async with trio.open_nursery() as nursery:
        http_port = await nursery.start(
            lambda task_status: serve_http(ex, port=port, task_status=task_status)
        )
        wsp = await nursery.start(lambda task_status: serve_ws(ex, port=ws_port, task_status=task_status))
        print(f"sim-exchange: REST http://127.0.0.1:{http_port} WS ws://127.0.0.1:{wsp}", flush=True)
        t0, ms0 = trio.current_time(), ex.now_ms
        while True:
            await trio.sleep(_TICK_SECONDS)
            ex.advance_to(max(ex.now_ms, ms0 + int((trio.current_time() - t0) * 1000 * speed)))

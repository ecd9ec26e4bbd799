"""`futures-actor preflight [--testnet]`: is this account safe to trade live with this bot, right now?

Owns the checks every user gets wrong first, run against the real account (or the fake exchange with
`--base-url`) before any real money moves, and their one-screen table. Each check is a row with
OK / WARN / FAIL and a detail a person reads at a glance; the exit code is 0 only when no row FAILs.

Rows, in order (a FAIL never stops the later rows, so one run shows everything to fix):
- server time: reachable; local clock drift within half of `exchange.recv_window_ms`.
- API key: accepted by fapi; the account can trade futures.
- API permissions (`/sapi/v1/account/apiRestrictions`): futures enabled, withdrawals disabled (FAIL),
  IP restriction on (WARN when off). Not available on the testnet (WARN).
- position mode: one-way (hedge mode is refused by the bot).
- multi-assets mode: off (isolated margin is refused under it, -4168).
- balance: USDT available above zero.
- margin type / leverage: ISOLATED and `ceil(risk.max_leverage)` settable on every universe symbol
  (this sets them, exactly as the bot does before its first order there).
- leverage brackets: the first bracket allows that leverage on every universe symbol.
- positions / open orders: the bot's own (client id prefix `exchange.client_id_prefix`, or a position
  guarded by one of its stops) are a WARN (they will be reconciled); anything else is a FAIL: the
  account is not the bot's alone.
- rate limits: not banned; the IP's used weight (`X-MBX-USED-WEIGHT-1M`, other processes included)
  below the bot's budget.

The universe checked is `universe.whitelist`, else `--symbols`, else the `universe.max_monitored_symbols`
USDT perpetuals with the largest 24 h quote volume.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

import msgspec
import trio

from futures_actor.binance.errors import AuthError, BinanceError
from futures_actor.binance.models import ApiRestrictions
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.core.clock import SystemWallClock
from futures_actor.core.config import BotConfig, ConfigError, load_config
from futures_actor.core.secrets import Secret, load_dotenv

__all__ = ["Check", "format_table", "main_preflight", "run_checks", "run_preflight"]

Status = Literal["OK", "WARN", "FAIL"]
ACCOUNT_ASSET = "USDT"
SPOT_API = {"production": "https://api.binance.com", "testnet": None, "demo": None}
EXIT_SAFE = 0
EXIT_UNSAFE = 1
EXIT_USAGE = 2
DEFAULT_CONFIG = Path("config/config.json")
EXAMPLE_CONFIG = Path("config/config.example.json")


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the preflight table."""

    name: str
    status: Status
    detail: str


def format_table(checks: Sequence[Check]) -> str:
    """The table a person reads at a glance, with a verdict line."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'CHECK'.ljust(width)}  RESULT  DETAIL"]
    lines += [f"{c.name.ljust(width)}  {c.status.ljust(6)}  {c.detail}" for c in checks]
    failed = [c.name for c in checks if c.status == "FAIL"]
    warned = [c.name for c in checks if c.status == "WARN"]
    if failed:
        lines.append(f"NOT SAFE to start live trading: {len(failed)} failed ({', '.join(failed)})")
    else:
        extra = f"; {len(warned)} warning(s) ({', '.join(warned)})" if warned else ""
        lines.append(f"SAFE to start live trading{extra}")
    return "\n".join(lines)


def _err(exc: BinanceError) -> str:
    return f"code {exc.code}: {exc.message}" if exc.code is not None else exc.message


async def _universe(rest: BinanceRestClient, cfg: BotConfig, symbols: Sequence[str]) -> list[str]:
    if cfg.universe.whitelist:
        return list(cfg.universe.whitelist)
    if symbols:
        return list(symbols)
    rules = await rest.symbol_rules()
    usdt = {s for s in rules if s.endswith(ACCOUNT_ASSET) and s not in cfg.universe.blacklist}
    tickers = sorted(
        (t for t in await rest.ticker_24h() if t.symbol in usdt), key=lambda t: t.quote_volume, reverse=True
    )
    return [t.symbol for t in tickers[: cfg.universe.max_monitored_symbols]]


async def run_checks(
    rest: BinanceRestClient,
    cfg: BotConfig,
    *,
    sapi: BinanceRestClient | None,
    symbols: Sequence[str] = (),
) -> list[Check]:
    """Every preflight row against `rest` (fapi) and `sapi` (the spot host; None where it has none)."""
    checks: list[Check] = []
    # ---- server time
    try:
        offset = await rest.sync_time()
    except BinanceError as exc:
        return [Check(name="server time", status="FAIL", detail=f"fapi unreachable: {_err(exc)}")]
    limit_ms = cfg.exchange.recv_window_ms // 2
    drift_ok = abs(offset) <= limit_ms
    checks.append(
        Check(
            name="server time",
            status="OK" if drift_ok else "FAIL",
            detail=f"local clock off by {offset:+d} ms (limit ±{limit_ms} ms, half of recvWindow)"
            + ("" if drift_ok else ": fix the system clock (NTP)"),
        )
    )
    # ---- API key
    try:
        account = await rest.account()
    except AuthError as exc:
        checks.append(Check(name="API key", status="FAIL", detail=f"rejected ({_err(exc)})"))
        return checks  # nothing signed can work
    except BinanceError as exc:
        checks.append(Check(name="API key", status="FAIL", detail=f"account unreadable ({_err(exc)})"))
        return checks
    checks.append(
        Check(
            name="API key",
            status="OK" if account.can_trade else "FAIL",
            detail="accepted; futures trading allowed"
            if account.can_trade
            else "accepted, but canTrade=false: enable futures trading on the account",
        )
    )
    # ---- API permissions
    checks.append(await _permissions(sapi))
    # ---- modes
    try:
        hedge = await rest.position_mode()
        checks.append(
            Check(
                name="position mode",
                status="FAIL" if hedge else "OK",
                detail="hedge mode: switch to one-way mode" if hedge else "one-way",
            )
        )
    except BinanceError as exc:
        checks.append(Check(name="position mode", status="FAIL", detail=_err(exc)))
    try:
        multi = await rest.multi_assets_mode()
        checks.append(
            Check(
                name="multi-assets mode",
                status="FAIL" if multi else "OK",
                detail="on: isolated margin is refused (-4168); switch to single-asset mode"
                if multi
                else "off (single-asset)",
            )
        )
    except BinanceError as exc:
        checks.append(Check(name="multi-assets mode", status="FAIL", detail=_err(exc)))
    # ---- balance
    row = next((a for a in account.assets if a.asset == ACCOUNT_ASSET), None)
    available = row.available_balance if row is not None else account.available_balance
    wallet = row.wallet_balance if row is not None else account.total_wallet_balance
    checks.append(
        Check(
            name="balance",
            status="OK" if available > 0 else "FAIL",
            detail=f"{ACCOUNT_ASSET} wallet {wallet}, available {available}",
        )
    )
    # ---- universe: margin type, leverage, brackets
    try:
        universe = await _universe(rest, cfg, symbols)
    except BinanceError as exc:
        checks.append(Check(name="universe", status="FAIL", detail=f"cannot list symbols: {_err(exc)}"))
        universe = []
    leverage = max(1, math.ceil(cfg.risk.max_leverage))
    checks.append(await _margin_and_leverage(rest, universe, leverage))
    checks.append(await _brackets(rest, universe, leverage))
    # ---- positions and orders already there
    checks.append(await _exposure(rest, cfg.exchange.client_id_prefix))
    # ---- rate limits
    limiter = rest.limiter
    banned = limiter.banned_until_ms > rest.server_now_ms()
    used, budget = limiter.used_weight, limiter.weight_budget
    checks.append(
        Check(
            name="rate limits",
            status="FAIL" if banned or used >= budget else "OK",
            detail=f"IP banned until {limiter.banned_until_ms}"
            if banned
            else f"used weight {used} of the bot's budget {budget} this minute"
            + ("" if used < budget else ": another process uses this IP's weight"),
        )
    )
    return checks


async def _permissions(sapi: BinanceRestClient | None) -> Check:
    name = "API permissions"
    if sapi is None:
        return Check(name=name, status="WARN", detail="not checkable here (no spot API on this environment)")
    try:
        r: ApiRestrictions = await sapi.api_restrictions()
    except BinanceError as exc:
        return Check(name=name, status="WARN", detail=f"could not read apiRestrictions: {_err(exc)}")
    if not r.enable_futures:
        return Check(name=name, status="FAIL", detail="futures not enabled on this API key")
    if r.enable_withdrawals:
        return Check(name=name, status="FAIL", detail="withdrawals ENABLED on this key: disable them")
    if not r.ip_restrict:
        return Check(
            name=name, status="WARN", detail="futures on, withdrawals off, but the key is not IP-restricted"
        )
    return Check(name=name, status="OK", detail="futures on, withdrawals off, IP-restricted")


async def _margin_and_leverage(rest: BinanceRestClient, universe: Sequence[str], leverage: int) -> Check:
    name = "margin type / leverage"
    if not universe:
        return Check(name=name, status="FAIL", detail="no universe symbol to check")
    bad: list[str] = []
    for symbol in universe:
        try:
            await rest.set_margin_type(symbol, "ISOLATED")
            await rest.set_leverage(symbol, leverage)
        except BinanceError as exc:
            bad.append(f"{symbol} ({_err(exc)})")
    if bad:
        return Check(name=name, status="FAIL", detail=f"not settable on {'; '.join(bad)}")
    return Check(name=name, status="OK", detail=f"ISOLATED, {leverage}x on {len(universe)} symbols")


async def _brackets(rest: BinanceRestClient, universe: Sequence[str], leverage: int) -> Check:
    name = "leverage brackets"
    try:
        rows = {b.symbol: b for b in await rest.leverage_brackets()}
    except BinanceError as exc:
        return Check(name=name, status="FAIL", detail=_err(exc))
    short = [
        s
        for s in universe
        if s not in rows or not rows[s].brackets or rows[s].brackets[0].initial_leverage < leverage
    ]
    if short:
        return Check(name=name, status="FAIL", detail=f"{leverage}x not allowed on {', '.join(short)}")
    return Check(name=name, status="OK", detail=f"{leverage}x allowed on all {len(universe)} symbols")


async def _exposure(rest: BinanceRestClient, prefix: str) -> Check:
    name = "positions / open orders"
    try:
        positions = [p for p in await rest.position_risk() if p.position_amt != 0]
        orders = await rest.open_orders()
        algos = await rest.open_algo_orders()
    except BinanceError as exc:
        return Check(name=name, status="FAIL", detail=_err(exc))
    ours = f"{prefix}-"
    guarded = {a.symbol for a in algos if a.client_algo_id.startswith(ours)}
    foreign_pos = [p.symbol for p in positions if p.symbol not in guarded]
    foreign_orders = [o.client_order_id for o in orders if not o.client_order_id.startswith(ours)]
    foreign_orders += [a.client_algo_id for a in algos if not a.client_algo_id.startswith(ours)]
    own = len(positions) - len(foreign_pos), len(orders) + len(algos) - len(foreign_orders)
    if foreign_pos or foreign_orders:
        parts = []
        if foreign_pos:
            parts.append(f"positions not opened by the bot: {', '.join(sorted(foreign_pos))}")
        if foreign_orders:
            parts.append(f"orders not placed by the bot: {', '.join(sorted(foreign_orders))}")
        return Check(name=name, status="FAIL", detail="; ".join(parts) + " (close them or use a sub-account)")
    if any(own):
        return Check(
            name=name,
            status="WARN",
            detail=f"the bot's own: {own[0]} positions, {own[1]} orders (reconciled at start)",
        )
    return Check(name=name, status="OK", detail="none")


# --------------------------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="futures-actor preflight", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=None, help="config file (default: as the bot finds it)")
    p.add_argument("--testnet", action="store_true", help="check the testnet account instead")
    p.add_argument("--symbols", default="", help="comma-separated symbols to check (default: the universe)")
    p.add_argument("--base-url", default="", help="REST base URL (e.g. a sim-exchange on 127.0.0.1)")
    p.add_argument("--env-file", type=Path, default=None, help="a .env file with the API key variables")
    return p


async def _run(
    cfg: BotConfig, *, key: Secret, secret: Secret, base_url: str, symbols: Sequence[str]
) -> list[Check]:
    ex = cfg.exchange
    if base_url:
        ex = msgspec.structs.replace(ex, rest_base_url=base_url)
    spot = base_url or SPOT_API.get(ex.environment)
    clock = SystemWallClock()
    async with BinanceRestClient(cfg=ex, wall_clock=clock, api_key=key, api_secret=secret) as rest:
        if spot is None:
            return await run_checks(rest, cfg, sapi=None, symbols=symbols)
        async with BinanceRestClient(
            cfg=ex, wall_clock=clock, api_key=key, api_secret=secret, base_url=spot, limiter=rest.limiter
        ) as sapi:
            return await run_checks(rest, cfg, sapi=sapi, symbols=symbols)


def run_preflight(argv: list[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """The `preflight` command: prints the table; 0 only when live trading is safe to start."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = _parser().parse_args(argv)
    path = args.config or next((p for p in (DEFAULT_CONFIG, EXAMPLE_CONFIG) if p.is_file()), None)
    try:
        cfg = load_config(path) if path is not None else BotConfig()
    except ConfigError as exc:
        print(f"preflight: configuration refused: {exc}", file=err)
        return EXIT_USAGE
    if path is None:
        print("preflight: no config file found; checking with the default config", file=err)
    if args.testnet:
        cfg = msgspec.structs.replace(
            cfg, exchange=msgspec.structs.replace(cfg.exchange, environment="testnet")
        )
    load_dotenv(args.env_file if args.env_file is not None else Path(".env"))
    key = os.environ.get(cfg.exchange.api_key_env, "")
    secret = os.environ.get(cfg.exchange.api_secret_env, "")
    if not key or not secret:
        print(
            f"preflight: set {cfg.exchange.api_key_env} and {cfg.exchange.api_secret_env} (the API key to check)",
            file=err,
        )
        return EXIT_USAGE
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    checks = trio.run(
        lambda: _run(cfg, key=Secret(key), secret=Secret(secret), base_url=args.base_url, symbols=symbols)
    )
    print(format_table(checks), file=out)
    return EXIT_SAFE if all(c.status != "FAIL" for c in checks) else EXIT_UNSAFE


def main_preflight() -> None:  # pragma: no cover - console entry point convenience
    sys.exit(run_preflight(sys.argv[1:]))

"""The live runner: PAPER_LIVE (live market data, the paper exchange) and LIVE (the Binance gateway),
`run_live`.

It owns the start-up of a live process (BOT_SPEC §10, §12): the refusals (LIVE without keys, a health
endpoint reachable from the network without a token, a locked state directory, a port in use, a state
file missing while the journal or the exchange show earlier trading), the IP-ban wait, the REST client
and Telegram opened outside the actor system (so that shutdown can still use them), LIVE's early
protection pass, the universe selection, and the start-up attempts retried with backoff on transient
exchange errors until the system is up. Signals are handled from the first line. The system it runs is
`app.System`, the same one a replay runs.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from futures_actor.actors.clock import system_wall_clock
from futures_actor.actors.execution import Execution
from futures_actor.actors.http_health import control_token_from_env, is_loopback_host, open_http_listeners
from futures_actor.actors.market_data import MarketData
from futures_actor.actors.telegram import TELEGRAM_OUTBOX_SIZE, TelegramNotifier, TelegramSender, TelegramText
from futures_actor.app import System
from futures_actor.binance.binance_gateway import BinanceGateway, user_stream_factory
from futures_actor.binance.errors import BinanceError
from futures_actor.binance.gateway import ExchangeGateway
from futures_actor.binance.models import usable_symbol_rules
from futures_actor.binance.paper import PaperExchange
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.urls import resolve_urls
from futures_actor.control import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, RunOptions
from futures_actor.core.clock import WallClock
from futures_actor.core.config import BotConfig
from futures_actor.core.secrets import Secrets
from futures_actor.core.types import Candle, SymbolRules
from futures_actor.logs import get_logger, open_run_logging, register_secrets, reset_logging
from futures_actor.startup import (
    BAN_FILE,
    ShutdownSignals,
    StartupRetry,
    read_ban_until,
    select_live_universe,
    write_ban_until,
)
from futures_actor.state.guard import (
    StateDirLocked,
    StateGuardError,
    check_exchange_clean,
    check_state_present,
    lock_state_dir,
    state_file_missing,
)
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore, StateStoreError
from futures_actor.system_parts import MarketHost, SystemParts

__all__ = ["run_live"]

# The early protection pass's messages go nowhere; a buffer so that it never waits on them.
EARLY_PROTECTION_BUFFER = 1024

log = get_logger("app")


async def run_live(options: RunOptions) -> int:
    """PAPER_LIVE (live market data, paper exchange) or LIVE (Binance gateway).

    Signals are handled from the first line (BOT_SPEC §12): a SIGTERM/SIGINT during start-up aborts it
    in order (exit 0, logged); once the system runs it stops it in order; a second signal cancels
    everything at once (exit 1).
    """
    cfg = options.config
    exchange_cfg = cfg.exchange
    if options.testnet:
        exchange_cfg = msgspec.structs.replace(exchange_cfg, environment="testnet")
        cfg = msgspec.structs.replace(cfg, exchange=exchange_cfg)
    clock = system_wall_clock()
    sink = open_run_logging(options, clock, options.log_dir)
    signals = ShutdownSignals()
    code = EXIT_RUNTIME
    try:
        async with trio.open_nursery() as outer:
            await outer.start(signals.watch, outer.cancel_scope)
            code = await _run_live_guarded(options, cfg, clock, signals)
            outer.cancel_scope.cancel()
        if signals.immediate:
            log.error("stopped_immediately", signal=signals.signal_name, phase=signals.phase)
            code = EXIT_RUNTIME
        return code
    finally:
        sink.close()
        reset_logging()


def _refuse(event: str, message: str, code: int = EXIT_CONFIG, **fields: Any) -> int:
    """Log and print a start-up refusal; returns the exit code."""
    log.error(event, message=message, **fields)
    print(f"futures-actor: {message}", file=sys.stderr)
    return code


async def _run_live_guarded(
    options: RunOptions, cfg: BotConfig, clock: WallClock, signals: ShutdownSignals
) -> int:
    secrets = Secrets.from_env(cfg)
    control_token = control_token_from_env(cfg.health)
    if control_token:
        register_secrets([control_token])
    log.info("starting", mode=options.mode, testnet=options.testnet, api_key_set=bool(secrets.api_key))
    for warning in options.warnings:
        log.warning("startup_warning", message=warning)
    if options.mode == "LIVE" and not (secrets.api_key and secrets.api_secret):
        return _refuse(
            "live_refused",
            f"LIVE needs {cfg.exchange.api_key_env} and {cfg.exchange.api_secret_env} set",
        )
    if cfg.health.http_enabled and not is_loopback_host(cfg.health.http_host) and not control_token:
        return _refuse(
            "http_bind_refused",
            f"health.http_host {cfg.health.http_host!r} is not a loopback address: the kill and resume "
            f"endpoints would be reachable from the network without a token; set "
            f"{cfg.health.control_token_env} (health.control_token_env) or bind 127.0.0.1",
        )
    try:
        lock = lock_state_dir(options.state_dir)
    except StateDirLocked as exc:
        return _refuse("state_dir_locked", str(exc), state_dir=str(exc.state_dir), holder_pid=exc.holder_pid)
    with lock:
        listeners: list[trio.SocketListener] | None = None
        if cfg.health.http_enabled:
            # Bound before anything trades: a port in use stops the start here, not after reconciling.
            try:
                listeners = await open_http_listeners(cfg.health.http_host, cfg.health.http_port)
            except OSError as exc:
                return _refuse(
                    "health_port_unavailable",
                    f"health.http_port {cfg.health.http_port} on health.http_host {cfg.health.http_host}: "
                    f"{exc.strerror or exc}; choose a free port (0 picks one) or stop the process using it",
                )
        try:
            return await _run_live_locked(options, cfg, clock, signals, secrets, control_token, listeners)
        finally:
            for listener in listeners or ():
                with trio.CancelScope(shield=True):
                    await listener.aclose()


async def _run_live_locked(
    options: RunOptions,
    cfg: BotConfig,
    clock: WallClock,
    signals: ShutdownSignals,
    secrets: Secrets,
    control_token: str,
    listeners: list[trio.SocketListener] | None,
) -> int:
    exchange_cfg = cfg.exchange
    state_dir = options.state_dir
    db_path = state_dir / cfg.state.db_file
    journal: TradeJournal | None = None
    holder: dict[str, System] = {}
    try:
        journal = TradeJournal(directory=options.log_dir, cfg=cfg.logging, clock=clock)
        state_missing = state_file_missing(db_path)
        check_state_present(db_path, journal_records=len(journal), fresh=options.fresh_state)
        if state_missing and options.fresh_state:
            log.warning("state_started_afresh", file=str(db_path), flag="--fresh-state")
        with trio.CancelScope() as startup_scope:
            retry = StartupRetry(cfg=cfg.startup, wall_clock=clock)
            signals.set_action(startup_scope.cancel, phase="start-up")
            await retry.wait_for_ban(read_ban_until(state_dir), source=BAN_FILE)
            errors = _ErrorForwarder()
            async with (
                BinanceRestClient(
                    cfg=exchange_cfg,
                    wall_clock=clock,
                    api_key=secrets.api_key if secrets.api_key else None,
                    api_secret=secrets.api_secret if secrets.api_secret else None,
                    on_ban=lambda until_ms: write_ban_until(state_dir, until_ms),
                    on_error=errors,
                ) as rest,
                trio.open_nursery() as services,
            ):
                telegram = await services.start(_start_telegram, cfg, secrets)
                while True:
                    signals.set_action(startup_scope.cancel, phase="start-up")
                    try:
                        code = await _live_attempt(
                            options=options,
                            cfg=cfg,
                            clock=clock,
                            rest=rest,
                            journal=journal,
                            db_path=db_path,
                            check_exchange=state_missing
                            and options.mode == "LIVE"
                            and not options.fresh_state,
                            telegram=telegram,
                            listeners=listeners,
                            control_token=control_token,
                            errors=errors,
                            signals=signals,
                            holder=holder,
                        )
                        services.cancel_scope.cancel()
                        return code
                    except Exception as exc:
                        system = holder.pop("system", None)
                        if system is not None and system.started:
                            raise
                        await retry.after_failure(exc, phase="start-up")
        log.warning("startup_aborted", signal=signals.signal_name, reason="signal during start-up")
        return EXIT_OK
    except StateStoreError as exc:
        log.error("state_store_error", error=str(exc))
        print(f"futures-actor: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except Exception as exc:
        guard = _find_in_group(exc, StateGuardError)
        if guard is not None:
            return _refuse("state_refused", str(guard))
        store_error = _find_in_group(exc, StateStoreError)
        if store_error is not None:
            return _refuse("state_store_error", str(store_error), EXIT_RUNTIME)
        cause = _first_exchange_error(exc)
        if cause is None:
            raise
        log.error("exchange_error_at_startup", error=str(cause), error_type=type(cause).__name__)
        print(f"futures-actor: exchange error at start-up: {cause}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        if journal is not None:
            journal.close()


async def _protect_first(
    *, cfg: BotConfig, clock: WallClock, rest: BinanceRestClient, store: StateStore, journal: TradeJournal
) -> None:
    """LIVE start-up: positions that need protection are protected before anything else (issue 9 #4).

    The universe selection samples spreads for `universe.spread_sample_seconds` (a minute) and market
    data backfills history; a position left without a stop by a crash or by hand must not wait for
    that. This pass runs Execution's start-up reconcile alone (rules of every listed symbol, its own
    user stream, nobody listening to its messages) and stops it once the reconcile is done; the
    system's Execution reconciles again right after (idempotent: the state is persisted per change).
    """
    listing = await rest.exchange_info()
    rules = {info.symbol: r for info, r in usable_symbol_rules(listing.symbols)}
    gateway = BinanceGateway(
        rest=rest,
        user_stream=user_stream_factory(cfg=cfg.exchange, rest=rest, ws_base=resolve_urls(cfg.exchange).ws),
    )
    sink_send, sink_recv = trio.open_memory_channel[Any](EARLY_PROTECTION_BUFFER)
    inbox_send, inbox_recv = trio.open_memory_channel[Any](0)
    execution = Execution(
        cfg=cfg,
        mode="LIVE",
        gateway=gateway,
        store=store,
        journal=journal,
        rules_by_symbol=rules,
        wall_clock=clock,
        risk_send=sink_send,
        symbol_sends={},
        on_fault=None,
        metrics=None,
        journal_in_thread=True,
    )

    async def drain() -> None:
        async for _ in sink_recv:
            pass

    log.info("startup_protection_started")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await nursery.start(gateway.run)
        await nursery.start(execution.run, inbox_recv)
        nursery.cancel_scope.cancel()
    inbox_send.close()
    log.info("startup_protection_done", open_trades=len(execution.open_trades()))


class _ErrorForwarder:
    """The REST client's per-response error hook, forwarded to the running system's health (if any)."""

    def __init__(self) -> None:
        self.target: Callable[[BaseException], None] | None = None

    def __call__(self, exc: BaseException) -> None:
        if self.target is not None:
            self.target(exc)


async def _live_attempt(
    *,
    options: RunOptions,
    cfg: BotConfig,
    clock: WallClock,
    rest: BinanceRestClient,
    journal: TradeJournal,
    db_path: Path,
    check_exchange: bool,
    telegram: TelegramSender | None,
    listeners: list[trio.SocketListener] | None,
    control_token: str,
    errors: _ErrorForwarder,
    signals: ShutdownSignals,
    holder: dict[str, System],
) -> int:
    """One start-up attempt and, once it is up, the run. Raises on a start-up failure (retried above)."""
    exchange_cfg = cfg.exchange
    async with trio.open_nursery() as nursery:
        await nursery.start(rest.run_time_sync)
        if check_exchange:
            prefix = f"{cfg.exchange.client_id_prefix}-"
            ids = [o.client_order_id for o in await rest.open_orders()]
            ids += [a.client_algo_id for a in await rest.open_algo_orders()]
            check_exchange_clean(
                db_path, our_client_ids=[i for i in ids if i.startswith(prefix)], fresh=False
            )
        with StateStore.open(db_path) as store:
            if options.mode == "LIVE":
                await _protect_first(cfg=cfg, clock=clock, rest=rest, store=store, journal=journal)
            managed = sorted({s.plan.symbol for s in store.load_lifecycles()})
            selection, all_rules = await select_live_universe(rest, cfg, managed=managed)
            symbols = list(dict.fromkeys([*selection.selected, *selection.retained_for_management]))
            rules = {s: all_rules[s] for s in symbols if s in all_rules}
            gateway: ExchangeGateway
            paper: PaperExchange | None = None
            if options.mode == "LIVE":
                gateway = BinanceGateway(
                    rest=rest,
                    user_stream=user_stream_factory(
                        cfg=exchange_cfg, rest=rest, ws_base=resolve_urls(exchange_cfg).ws
                    ),
                )
                await gateway.check_account_mode()
            else:
                paper = PaperExchange.from_store(store, cfg=cfg.execution, rules=rules, now_ms=clock.now_ms)
                gateway = paper
            market_holder: dict[str, MarketData] = {}

            def market(system: MarketHost) -> Callable[..., Awaitable[Any]]:
                md = MarketData(
                    cfg=cfg,
                    rest=rest,
                    symbols=symbols,
                    subscribers=system.router,
                    on_fault=system.report_fault,
                    on_data=system.report_data,
                )
                market_holder["md"] = md
                return md.run

            async def refresh_universe(
                managed: Sequence[str],
            ) -> tuple[list[str], dict[str, SymbolRules], str]:
                fresh, fresh_rules = await select_live_universe(rest, cfg, managed=managed)
                return list(fresh.selected), fresh_rules, fresh.reference_symbol

            async def history(symbol: str) -> tuple[list[Candle], list[Candle]]:
                return await market_holder["md"].history(symbol)

            parts = SystemParts(
                cfg=cfg,
                mode=options.mode,
                wall_clock=clock,
                gateway=gateway,
                store=store,
                journal=journal,
                rules=rules,
                listed_rules=all_rules,
                symbols=symbols,
                log_dir=options.log_dir,
                state_dir=options.state_dir,
                market=market,
                history=history,
                paper=paper,
                http=True,
                http_listeners=listeners,
                control_token=control_token,
                api_weight=lambda: rest.limiter.used_weight,
                telegram=telegram,
                refresh_universe=refresh_universe,
                reference_symbol=selection.reference_symbol,
                set_market_symbols=lambda syms: market_holder["md"].set_symbols(syms),
                client_counts_errors=True,
            )
            system = System(parts)
            holder["system"] = system
            errors.target = system.report_exchange_error
            signals.set_action(system.stop_requested.set, phase="running")
            try:
                await system.run()
            finally:
                errors.target = None
            nursery.cancel_scope.cancel()
            return system.exit_code


async def _start_telegram(
    cfg: BotConfig, secrets: Secrets, *, task_status: trio.TaskStatus[TelegramSender | None]
) -> None:
    """The Telegram sender (daily reports and alerts), or None when disabled or not configured."""
    async with httpx.AsyncClient(timeout=cfg.notifications.telegram_timeout_seconds) as client:
        notifier = TelegramNotifier(cfg=cfg.notifications, secrets=secrets, client=client)
        if not notifier.enabled:
            if cfg.notifications.telegram_enabled:
                log.warning(
                    "telegram_disabled",
                    reason=f"{cfg.notifications.telegram_token_env} or "
                    f"{cfg.notifications.telegram_chat_id_env} is not set",
                )
            task_status.started(None)
            return
        send, recv = trio.open_memory_channel[TelegramText](TELEGRAM_OUTBOX_SIZE)
        sender = TelegramSender(notifier=notifier, outbox=send)
        task_status.started(sender)
        await sender.run(recv)


def _find_in_group(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`exc` itself or the first exception of type `kind` inside it (exception groups nest)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_in_group(inner, kind)
            if found is not None:
                return found
    return None


def _first_exchange_error(exc: BaseException) -> BaseException | None:
    """The venue error inside `exc` (possibly an exception group), or None if it is something else."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_exchange_error(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, BinanceError | httpx.TransportError | OSError):
        return exc
    return None

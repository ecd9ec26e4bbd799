"""The replay runner: `--paper --replay DIR`, the whole actor system on recorded klines under trio's mock
clock (`run_replay`).

It owns what only a replay needs: loading the recorded klines (`ReplayFeed`), the fresh paper account and
state file of each run, the run directory (trades.jsonl and events.jsonl for the whole run,
daily-report-*.json, equity.csv marked to market by `ReplayEquity`, summary.json, report.html), the
progress lines and the summary on stdout. The system it runs is `app.System`, the same one live and paper
trading run. A replay refuses a log directory that already holds a run (runs never mix) and always starts
from fresh accounts.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import msgspec
import trio

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.replay_feed import ReplayFeed, discover_symbols
from futures_actor.actors.root_supervisor import SHUTDOWN_POLL_SECONDS
from futures_actor.actors.shadow_book import SHADOW_DB_FILE, open_shadow_account
from futures_actor.app import System
from futures_actor.binance.paper import PaperExchange
from futures_actor.control import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, RunOptions
from futures_actor.core.clock import SystemWallClock, WallClock, iso_utc
from futures_actor.core.config import BotConfig
from futures_actor.core.report import render_ineligible
from futures_actor.core.summary import REPLAY_MODE, count_trades, render_summary
from futures_actor.core.types import Candle, SymbolRules
from futures_actor.logs import get_logger, open_run_logging, reset_logging, stream_files
from futures_actor.machines.risk import RiskSnapshot
from futures_actor.runtime.replay import LoopClock, ReplayParts, ReplaySystem
from futures_actor.startup import ShutdownSignals, StopAtOnce, replay_rules, replay_universe_selection
from futures_actor.state.guard import StateDirLocked, lock_state_dir
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore, StateStoreError
from futures_actor.system_parts import MarketHost, SystemParts
from futures_actor.tearsheet import REPORT_HTML, write_report, write_summary_json
from futures_actor.tearsheet.equity import EQUITY_CSV, AccountView, EquityCsvWriter, EquitySampler
from futures_actor.tearsheet.load import SUMMARY_JSON

__all__ = ["REPLAY_DB_FILE", "ReplayEquity", "run_replay"]

REPLAY_DB_FILE = "replay.sqlite"
REPLAY_HEARTBEAT_SECONDS = 3600.0
# Replay (performance): the paper exchange is in-process and never diverges from Execution's view,
# so the periodic reconcile (a safety net for a real exchange) runs at most once a simulated hour.
REPLAY_RECONCILE_SECONDS = 3600.0
# Simulated seconds the replay keeps running after its last candle, so that the last decisions,
# entries and their TTLs settle before the orderly stop.
REPLAY_SETTLE_SECONDS = 300.0

log = get_logger("app")


def _seed_trio_scheduler(seed: int) -> None:
    """Make trio's run-queue order reproducible (it randomizes batches to shake out races).

    Replay promises byte-identical output for the same input; the actors do not depend on the
    scheduling order for correctness, but ties at the same simulated instant (a fill and a TTL) would
    otherwise be broken differently from run to run. This touches a private attribute of trio and is
    skipped if trio changes it.
    """
    rng = getattr(getattr(trio, "_core", None), "_run", None)
    generator = getattr(rng, "_r", None)
    if isinstance(generator, random.Random):
        generator.seed(seed)


class _RunJournal(TradeJournal):
    """The replay's journal: one trades.jsonl for the run; tells the equity sampler about each close."""

    def __init__(self, *, on_written: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_written = on_written

    def write(self, record: Mapping[str, Any] | msgspec.Struct) -> Path:
        path = super().write(record)
        self._on_written()
        return path


class _Progress:
    """The replay's progress lines (stdout): percent of the 5m close times, simulated time, trades
    counted as the summary counts them, equity, elapsed and estimated remaining wall time."""

    def __init__(self, stdout: TextIO, journal: Callable[[], TradeJournal | None]) -> None:
        self._stdout = stdout
        self._journal = journal
        self._started = time.monotonic()
        self.equity: Callable[[], float | None] | None = None  # the bot's equity now (risk's view)

    def __call__(self, done: int, total: int, close_ms: int) -> None:
        journal = self._journal()
        counts = count_trades(journal.records()) if journal is not None else None
        equity = self.equity() if self.equity is not None else None
        elapsed = time.monotonic() - self._started
        eta = elapsed * (total - done) / done if done else 0.0
        trades = (
            f"trades {counts.trades}  entries not filled {counts.unfilled_entries}" if counts else "trades 0"
        )
        self._stdout.write(
            f"replay {100.0 * done / total:5.1f}%  {iso_utc(close_ms)[:16].replace('T', ' ')}  {trades}  "
            f"equity {equity:.2f}  elapsed {_clock_text(elapsed)}  eta {_clock_text(eta)}\n"
            if equity is not None
            else f"replay {100.0 * done / total:5.1f}%  {iso_utc(close_ms)[:16].replace('T', ' ')}  {trades}  "
            f"elapsed {_clock_text(elapsed)}  eta {_clock_text(eta)}\n"
        )
        self._stdout.flush()


class ReplayEquity:
    """A replay's account equity marked to market, for equity.csv (issue 13 review #6).

    Equity at time t = the paper exchange's wallet balance + Σ over open positions of
    amount × (price − entry price), where price is the close of the symbol's latest 5m candle closed by t
    (before its first close: the open of the first candle). Read through the paper exchange's public
    `engine` (its account's wallet and positions), without advancing it; the candles come from the
    replay feed's `on_path` (`on_candle`). Without a paper exchange (not yet built) there is no equity;
    a position of a symbol without a candle yet (never in a replay) counts at its entry price.
    """

    def __init__(self, paper: PaperExchange | None = None) -> None:
        self.paper = paper
        # symbol -> (the close of the candle before the latest, the latest candle, its interval)
        self._candles: dict[str, tuple[float | None, Candle, int]] = {}

    def on_candle(self, symbol: str, candle: Candle, interval_ms: int) -> None:
        """The candle starting now (the feed's look-ahead path): the one before it has closed."""
        known = self._candles.get(symbol)
        self._candles[symbol] = (None if known is None else known[1].close, candle, interval_ms)

    def price(self, symbol: str, now_ms: int) -> float | None:
        known = self._candles.get(symbol)
        if known is None:
            return None
        previous_close, candle, interval_ms = known
        if now_ms >= candle.open_time_ms + interval_ms:
            return candle.close
        return previous_close if previous_close is not None else candle.open

    def open_positions(self) -> int:
        if self.paper is None:
            return 0
        return sum(1 for pos in self.paper.engine.account.positions().values() if pos.amount != 0)

    def equity(self, now_ms: int) -> float | None:
        if self.paper is None:
            return None
        account = self.paper.engine.account
        total = Decimal(account.wallet_balance)
        for symbol, pos in account.positions().items():
            price = self.price(symbol, now_ms) if pos.amount != 0 else None
            if price is not None:
                total += pos.unrealized(Decimal(repr(price)))
        return float(total)


def _clock_text(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _replay_symbols(replay_dir: Path, wanted: tuple[str, ...] | None) -> list[str] | str:
    """The symbols to replay, or an error message."""
    try:
        found = discover_symbols(replay_dir)
    except (OSError, ValueError) as exc:
        return f"replay directory {replay_dir}: {exc}"
    if not found:
        return f"replay directory {replay_dir}: no SYMBOL-5m.csv.gz with SYMBOL-1h.csv.gz found"
    if wanted is None:
        return found
    missing = [s for s in wanted if s not in found]
    if missing:
        return f"--symbols: {', '.join(missing)} not in {replay_dir} (it has {', '.join(found)})"
    return [s for s in found if s in wanted]


async def run_replay(options: RunOptions, *, out: TextIO | None = None) -> int:
    """`--paper --replay DIR`: the full actor system on recorded klines under the mock clock.

    The log directory becomes the run directory: trades.jsonl and events.jsonl (one file each for the
    whole run), daily-report-*.json, equity.csv, summary.json and report.html. stdout gets the progress
    lines and the summary only.

    SIGTERM and SIGINT are handled from the start: the first stops the replay in order and prints the
    summary of the trades so far (exit 0); a second one exits at once (exit 1).
    """
    signals = ShutdownSignals()
    code = EXIT_RUNTIME
    try:
        lock = lock_state_dir(options.state_dir)
    except StateDirLocked as exc:
        print(f"futures-actor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    with lock:
        async with trio.open_nursery() as outer:
            await outer.start(signals.watch, outer.cancel_scope)
            with trio.CancelScope() as loading:
                signals.set_action(loading.cancel, phase="replay start-up")
                code = await _run_replay_body(options, out, signals)
            if loading.cancelled_caught:
                print("replay interrupted during start-up: no trades", file=out or sys.stdout)
                code = EXIT_OK
            outer.cancel_scope.cancel()
    if signals.immediate:
        print("futures-actor: replay stopped at once (second signal)", file=sys.stderr)
        return EXIT_RUNTIME
    return code


async def _run_replay_body(options: RunOptions, out: TextIO | None, signals: ShutdownSignals) -> int:
    stdout = out or sys.stdout
    cfg = options.config
    replay_dir = options.replay_dir
    assert replay_dir is not None
    _seed_trio_scheduler(cfg.replay.seed)
    cfg = msgspec.structs.replace(
        cfg,
        # Nobody watches a replay's heartbeat file; one a simulated hour keeps it cheap.
        health=msgspec.structs.replace(
            cfg.health,
            heartbeat_interval_seconds=max(cfg.health.heartbeat_interval_seconds, REPLAY_HEARTBEAT_SECONDS),
        ),
        execution=msgspec.structs.replace(
            cfg.execution,
            paper_initial_balance_usdt=cfg.replay.initial_balance_usdt,
            reconcile_interval_seconds=max(
                cfg.execution.reconcile_interval_seconds, REPLAY_RECONCILE_SECONDS
            ),
        ),
    )
    # Console-only logging until the data is loaded and the simulated clock exists (respects --quiet);
    # replaced below by the full set-up with events.jsonl on simulated time.
    open_run_logging(options, SystemWallClock(), None, replay=True)
    found = _replay_symbols(replay_dir, options.replay_symbols)
    if isinstance(found, str):
        print(f"futures-actor: {found}", file=sys.stderr)
        return EXIT_CONFIG
    selection, prices = replay_universe_selection(replay_dir, found, cfg)
    symbols = list(selection.selected)
    if not symbols:
        print(f"futures-actor: replay: no symbol of {found} passes the universe rules", file=sys.stderr)
        return EXIT_CONFIG
    router = MarketRouter()
    rules = replay_rules(replay_dir, symbols, prices)
    log_dir = options.log_dir
    state_dir = options.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    db_path = state_dir / REPLAY_DB_FILE
    for path in (db_path, state_dir / SHADOW_DB_FILE):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)  # a replay always starts from fresh accounts
    paper_holder: dict[str, PaperExchange] = {}
    path_system: dict[str, System] = {}
    marks = ReplayEquity()

    def on_path(symbol: str, candle: Candle, interval_ms: int) -> None:
        marks.on_candle(symbol, candle, interval_ms)
        running = path_system.get("system")
        if running is not None:
            running.feed_path(symbol, candle, interval_ms)  # the shadow book's paper exchange too
        else:
            paper_holder["paper"].on_path(symbol, candle, interval_ms)

    journal: TradeJournal | None = None
    progress = _Progress(stdout, lambda: journal)
    feed = ReplayFeed(
        directory=replay_dir,
        router=router,
        symbols=symbols,
        on_path=on_path,
        on_progress=progress,
        start_ms=options.replay_start_ms,
        end_ms=options.replay_end_ms,
        warmup_1h_bars=cfg.market_data.history_1h_bars if options.replay_start_ms is not None else 0,
        cfg=cfg.replay,
    )
    try:
        feed.load()
    except (OSError, ValueError) as exc:
        print(f"futures-actor: replay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    events_runtime = cfg.replay.runtime == "events"
    clock: WallClock = LoopClock(feed.epoch_ms) if events_runtime else TrioWallClock(feed.epoch_ms)
    log_dir.mkdir(parents=True, exist_ok=True)
    existing = [
        p.name
        for name in (cfg.logging.trade_log_file, cfg.logging.event_log_file)
        for p in stream_files(log_dir, name)
    ]
    if existing:
        print(
            f"futures-actor: replay: {log_dir} already holds {', '.join(existing)}; "
            "give an empty --log-dir so runs do not mix",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    sink = open_run_logging(options, clock, log_dir, replay=True)
    sampler: EquitySampler | None = None
    try:
        writer = EquityCsvWriter(log_dir / EQUITY_CSV)
        system_box: dict[str, System | ReplaySystem] = {}

        def account_view() -> AccountView:
            """Equity marked to market now (`ReplayEquity`); open risk and positions from risk."""
            snap = _risk_snapshot(system_box["system"], clock.now_ms())
            equity = marks.equity(clock.now_ms())
            return AccountView(
                equity_usd=equity if equity is not None else cfg.replay.initial_balance_usdt,
                open_risk_usd=snap.open_risk_usd,
                open_positions=snap.positions,
            )

        sampler = EquitySampler(
            writer=writer,
            view=account_view,
            clock=clock,
            every_ms=cfg.report.equity_sample_minutes * 60_000,
        )
        on_written = sampler.trade_closed if not events_runtime else lambda: _trade_recorded(system_box)
        journal = _RunJournal(
            directory=log_dir,
            cfg=cfg.logging,
            clock=clock,
            rotate=False,
            durable=False,
            on_written=on_written,
        )
        with StateStore.open(db_path, durable=False) as store:
            paper = PaperExchange.from_store(
                store, cfg=cfg.execution, rules=rules, now_ms=clock.now_ms, persist_mode="on_close"
            )
            paper_holder["paper"] = paper
            marks.paper = paper
            system: System | ReplaySystem
            if isinstance(clock, LoopClock):
                system = await _run_on_events(
                    cfg=cfg,
                    clock=clock,
                    feed=feed,
                    paper=paper,
                    store=store,
                    journal=journal,
                    rules=rules,
                    symbols=symbols,
                    reference_symbol=selection.reference_symbol,
                    log_dir=log_dir,
                    state_dir=state_dir,
                    sampler=sampler,
                    writer=writer,
                    marks=marks,
                    system_box=system_box,
                    progress=progress,
                    signals=signals,
                    replay_dir=replay_dir,
                    options=options,
                )
            else:
                system = await _run_on_trio(
                    parts_base=dict(
                        cfg=cfg,
                        clock=clock,
                        paper=paper,
                        store=store,
                        journal=journal,
                        rules=rules,
                        symbols=symbols,
                        log_dir=log_dir,
                        state_dir=state_dir,
                        router=router,
                        reference_symbol=selection.reference_symbol,
                        writer=writer,
                    ),
                    feed=feed,
                    sampler=sampler,
                    system_box=system_box,
                    path_system=path_system,
                    progress=progress,
                    signals=signals,
                    replay_dir=replay_dir,
                    options=options,
                )
            sampler.finish()
            if signals.requested.is_set():
                log.warning("replay_interrupted", signal=signals.signal_name, trades_so_far=len(journal))
                stdout.write(f"replay interrupted by {signals.signal_name}: summary of the trades so far\n")
            records = list(journal.records())
            stats = feed.stats
            # The summary is the report's (one computation: trades.jsonl and equity.csv as written,
            # max drawdown on the marked-to-market curve, mode REPLAY).
            report = write_report(log_dir, cfg=cfg)
            summary = report.summary
            write_summary_json(
                log_dir,
                summary,
                report.metrics,
                {
                    "replay_dir": str(replay_dir),
                    "symbols": symbols,
                    "timerange": {
                        "start": iso_utc(options.replay_start_ms)
                        if options.replay_start_ms is not None
                        else None,
                        "end": iso_utc(options.replay_end_ms) if options.replay_end_ms is not None else None,
                    },
                    "first_close": iso_utc(stats.first_close_ms) if stats.steps else None,
                    "last_close": iso_utc(stats.last_close_ms) if stats.steps else None,
                    "candles_5m": stats.candles_5m,
                    "candles_1h": stats.candles_1h,
                    "config": str(options.config_path),
                    "initial_balance_usdt": cfg.replay.initial_balance_usdt,
                    "runtime": cfg.replay.runtime,
                    "trade_records": len(records),
                    "counting": "trades = records whose entry filled; entries not filled are counted apart",
                    "exit_code": system.exit_code,
                },
            )
            stdout.write(render_summary(summary) + "\n")
            lockouts = (system.risk.ineligible_strategies(), system.risk.performance_blocked_strategies())
            stdout.write(render_ineligible(*lockouts) + "\n")
            stdout.write(
                f"run directory: {log_dir}\n"
                f"  {journal.link_path.name}: {len(records)} records ({summary.total.trades} trades, "
                f"{summary.unfilled_entries} entries not filled)\n"
                f"  {EQUITY_CSV}: {writer.rows} rows   {SUMMARY_JSON}   "
                f"{REPORT_HTML}: {report.size_bytes / 1024:.0f} KiB\n"
            )
            stdout.flush()
            log.info("replay_finished", trades=summary.total.trades, exit_code=system.exit_code)
            return system.exit_code
    except StateStoreError as exc:
        log.error("state_store_error", error=str(exc))
        print(f"futures-actor: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        if sampler is not None:
            sampler.close()
        if journal is not None:
            journal.close()
        sink.close()
        reset_logging()


async def _run_on_trio(
    *,
    parts_base: dict[str, Any],
    feed: ReplayFeed,
    sampler: EquitySampler,
    system_box: dict[str, System | ReplaySystem],
    path_system: dict[str, System],
    progress: _Progress,
    signals: ShutdownSignals,
    replay_dir: Path,
    options: RunOptions,
) -> System:
    """The trio runtime: `app.System` under trio's mock clock, the feed as a trio task."""
    b = parts_base

    def market(system: MarketHost) -> Callable[..., Awaitable[Any]]:
        async def run_feed(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(sampler.run)
                await feed.run(task_status=task_status)
                # Let the last candle's decisions, orders and TTLs settle before stopping.
                await trio.sleep(REPLAY_SETTLE_SECONDS)
                nursery.cancel_scope.cancel()
            system.stop_requested.set()

        return run_feed

    parts = SystemParts(
        cfg=b["cfg"],
        mode="PAPER_LIVE",
        wall_clock=b["clock"],
        gateway=b["paper"],
        store=b["store"],
        journal=b["journal"],
        rules=b["rules"],
        symbols=b["symbols"],
        log_dir=b["log_dir"],
        state_dir=b["state_dir"],
        market=market,
        router=b["router"],
        paper=b["paper"],
        replay=True,
        kill_file_watch=False,
        reference_symbol=b["reference_symbol"],
        equity_curve=b["writer"],
    )
    system = System(parts)
    system_box["system"] = system
    path_system["system"] = system
    progress.equity = lambda: system.risk.snapshot().equity_usd
    signals.set_action(system.stop_requested.set, phase="replay")
    _log_starting(feed, replay_dir, parts.symbols, options)
    await system.run()
    return system


async def _run_on_events(
    *,
    cfg: BotConfig,
    clock: LoopClock,
    feed: ReplayFeed,
    paper: PaperExchange,
    store: StateStore,
    journal: TradeJournal,
    rules: dict[str, SymbolRules],
    symbols: list[str],
    reference_symbol: str,
    log_dir: Path,
    state_dir: Path,
    sampler: EquitySampler,
    writer: EquityCsvWriter,
    marks: ReplayEquity,
    system_box: dict[str, System | ReplaySystem],
    progress: _Progress,
    signals: ShutdownSignals,
    replay_dir: Path,
    options: RunOptions,
) -> ReplaySystem:
    """The discrete-event runtime (`runtime.replay.ReplaySystem`), run synchronously on this thread (its
    state stores are SQLite connections of this thread). Signals are handled in place meanwhile: the
    first asks the replay to stop in order, a second stops it at once (exit 1, as on trio)."""
    shadow_store, shadow_journal, shadow_paper = open_shadow_account(
        cfg=cfg, rules=rules, wall_clock=clock, state_dir=state_dir, log_dir=log_dir, replay=True
    )
    try:
        system = ReplaySystem(
            ReplayParts(
                cfg=cfg,
                clock=clock,
                feed=feed,
                paper=paper,
                store=store,
                journal=journal,
                shadow_paper=shadow_paper,
                shadow_store=shadow_store,
                shadow_journal=shadow_journal,
                rules=rules,
                symbols=symbols,
                reference_symbol=reference_symbol,
                log_dir=log_dir,
                run_mode=REPLAY_MODE,
                settle_seconds=REPLAY_SETTLE_SECONDS,
                shutdown_poll_seconds=SHUTDOWN_POLL_SECONDS,
                sampler=sampler,
                equity_curve=writer,
                on_path=lambda step: marks.on_candle(step.symbol, step.candle, step.interval_ms),
            )
        )
        system_box["system"] = system
        progress.equity = lambda: system.risk.snapshot(now_ms=clock.now_ms()).equity_usd
        signals.set_action(system.request_stop, phase="replay")
        _log_starting(feed, replay_dir, symbols, options)
        with signals.handled_in_place():
            try:
                system.run()
            except StopAtOnce:
                system.exit_code = EXIT_RUNTIME
        return system
    finally:
        shadow_journal.close()
        shadow_store.close()


def _log_starting(feed: ReplayFeed, replay_dir: Path, symbols: Sequence[str], options: RunOptions) -> None:
    log.info(
        "replay_starting",
        directory=str(replay_dir),
        symbols=list(symbols),
        epoch=iso_utc(feed.epoch_ms),
        timerange=[options.replay_start_ms, options.replay_end_ms],
    )


def _risk_snapshot(system: System | ReplaySystem, now_ms: int) -> RiskSnapshot:
    if isinstance(system, ReplaySystem):
        return system.risk.snapshot(now_ms=now_ms)
    return system.risk.snapshot()


def _trade_recorded(system_box: dict[str, System | ReplaySystem]) -> None:
    system = system_box.get("system")
    if isinstance(system, ReplaySystem):
        system.trade_recorded()

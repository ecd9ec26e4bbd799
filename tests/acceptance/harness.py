"""A whole actor system on the paper exchange under trio's mock clock, for the acceptance scenarios.

`Harness` writes the candles a scenario needs as a klines directory (the replay CSV format), builds
the real `System` of `futures_actor.app` on a `PaperExchange` fed by the real `ReplayFeed`, and gives
the test handles to drive and observe it: simulated time, the paper account, the journal, the event
log. Nothing here re-implements an actor; scenarios go through the same code as `--replay`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.replay_feed import ReplayFeed
from futures_actor.app import System
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.config import BotConfig, default_config
from futures_actor.core.types import INTERVAL_MS, Candle, SymbolRules
from futures_actor.logs import configure_logging, reset_logging
from futures_actor.startup import derive_rules
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore
from futures_actor.system_parts import SystemParts

# The recorded klines bundled with the repository: 60 days from 2024-12-31 00:00 UTC (data/sample/README.md).
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
KLINES = SAMPLE
CSV_HEADER = "open_time_ms,open,high,low,close,volume,close_time_ms,quote_volume,trades,taker_buy_base,taker_buy_quote\n"


def write_klines(directory: Path, symbol: str, interval: str, candles: Iterable[Candle]) -> Path:
    """Write candles in the replay CSV format (`SYMBOL-INTERVAL.csv.gz`)."""
    directory.mkdir(parents=True, exist_ok=True)
    step = INTERVAL_MS[interval]
    path = directory / f"{symbol}-{interval}.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(CSV_HEADER)
        for c in candles:
            fh.write(
                f"{c.open_time_ms},{c.open!r},{c.high!r},{c.low!r},{c.close!r},{c.volume!r},"
                f"{c.open_time_ms + step - 1},,,,\n"
            )
    return path


def copy_real_klines(directory: Path, symbol: str, *, days: float, start_row: int = 0) -> None:
    """A slice of the bundled recorded klines of `symbol` (5m and 1h, same span) into `directory`."""
    from futures_actor.data.klines_csv import read_klines_candles

    n5 = int(days * 288)
    five = read_klines_candles(KLINES / f"{symbol}-5m.csv.gz", interval="5m", limit=start_row + n5)[
        start_row:
    ]
    first, last = five[0].open_time_ms, five[-1].open_time_ms
    hours = read_klines_candles(
        KLINES / f"{symbol}-1h.csv.gz", interval="1h", limit=(start_row + n5) // 12 + 2
    )
    hour = [c for c in hours if first - 3_600_000 * 80 <= c.open_time_ms <= last]
    write_klines(directory, symbol, "5m", five)
    write_klines(directory, symbol, "1h", hour)


@dataclass
class Harness:
    """One system under test. Build with `Harness.create(tmp_path, ...)`, then `await h.start(nursery)`."""

    root: Path
    cfg: BotConfig
    symbols: list[str]
    rules: dict[str, SymbolRules]
    klines_dir: Path
    log_dir: Path
    state_dir: Path
    mode: str = "PAPER_LIVE"
    system: System | None = None
    paper: PaperExchange | None = None
    store: StateStore | None = None
    journal: TradeJournal | None = None
    feed: ReplayFeed | None = None
    clock: TrioWallClock | None = None
    # Optional daily universe refresh for the system (see `SystemParts.refresh_universe`).
    refresh_universe: Callable[..., Any] | None = None
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        cfg: BotConfig | None = None,
        symbols: Sequence[str] = (),
        rules: dict[str, SymbolRules] | None = None,
        prices: dict[str, float] | None = None,
    ) -> Harness:
        cfg = cfg or default_config()
        # As in `--replay`: nobody watches the heartbeat file here, and writing it every few simulated
        # seconds would dominate a multi-day run.
        cfg = msgspec.structs.replace(
            cfg,
            health=msgspec.structs.replace(
                cfg.health, heartbeat_interval_seconds=max(cfg.health.heartbeat_interval_seconds, 3600.0)
            ),
        )
        klines_dir = root / "klines"
        rules = dict(rules or {})
        for s in symbols:
            if s not in rules:
                rules[s] = derive_rules(s, (prices or {}).get(s, 100.0))
        return cls(
            root=root,
            cfg=cfg,
            symbols=list(symbols),
            rules=rules,
            klines_dir=klines_dir,
            log_dir=root / "logs",
            state_dir=root / "state",
        )

    async def start(self, nursery: trio.Nursery, *, settle: bool = True) -> System:
        """Build and start the system (returns once every actor is ready). The feed starts playing."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        router = MarketRouter()
        holder: dict[str, PaperExchange] = {}
        self.feed = ReplayFeed(
            directory=self.klines_dir,
            router=router,
            symbols=self.symbols,
            # Every paper exchange of the system (the shadow book's too), as `--replay` does.
            on_path=lambda s, c, i: (
                self.system.feed_path(s, c, i) if self.system is not None else holder["p"].on_path(s, c, i)
            ),
            cfg=self.cfg.replay,
        )
        self.feed.load()
        self.clock = TrioWallClock(self.feed.epoch_ms)
        reset_logging()
        sink = configure_logging(
            cfg=self.cfg.logging, log_dir=self.log_dir, clock=self.clock, console="quiet"
        )
        self._closers.append(sink.close)
        self.journal = TradeJournal(directory=self.log_dir, cfg=self.cfg.logging, clock=self.clock)
        self.store = StateStore.open(self.state_dir / self.cfg.state.db_file, durable=False)
        self.paper = PaperExchange.from_store(
            self.store, cfg=self.cfg.execution, rules=self.rules, now_ms=self.clock.now_ms
        )
        holder["p"] = self.paper
        feed = self.feed

        def market(system: System) -> Callable[..., Any]:
            async def run_feed(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                await feed.run(task_status=task_status)

            return run_feed

        parts = SystemParts(
            cfg=self.cfg,
            mode=self.mode,
            wall_clock=self.clock,
            gateway=self.paper,
            store=self.store,
            journal=self.journal,
            rules=self.rules,
            symbols=self.symbols,
            log_dir=self.log_dir,
            state_dir=self.state_dir,
            market=market,
            router=router,
            paper=self.paper,
            replay=True,
            kill_file_watch=False,
            refresh_universe=self.refresh_universe,
        )
        self.system = System(parts)
        await nursery.start(self.system.run)
        return self.system

    async def wait_until(self, predicate: Callable[[], bool], *, timeout: float, poll: float = 1.0) -> None:
        """Wait (simulated time) until `predicate()` holds; fail the test after `timeout` seconds."""
        with trio.fail_after(timeout):
            while not predicate():  # noqa: ASYNC110
                await trio.sleep(poll)

    async def stop(self) -> int:
        """Orderly stop (as on the first SIGTERM); returns the system's exit code."""
        assert self.system is not None
        self.system.stop_requested.set()
        await self.system.stopped.wait()
        return self.system.exit_code

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self.store is not None:
            self.store.close()
        for closer in self._closers:
            closer()
        self._closers.clear()
        reset_logging()

    # ---- observations

    def trade_records(self) -> list[dict[str, Any]]:
        assert self.journal is not None
        return list(self.journal.records())

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every events.jsonl record so far (optionally only those with `event == name`)."""
        rows: list[dict[str, Any]] = []
        for path in sorted(self.log_dir.glob("events-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if name is None or rec.get("event") == name:
                        rows.append(rec)
        return rows

    def paper_state(self) -> dict[str, Any]:
        assert self.paper is not None
        data: dict[str, Any] = msgspec.json.decode(self.paper.snapshot())
        return data


# ---------------------------------------------------------------------------------------------------
# Scripted-market systems (paper or fake-live), for scenarios about risk and execution rather than
# signals. The test sets prices; a market task publishes them (book + mark) to the system every
# `period_s` and applies them to the venue at once: paper `on_trade_price` / `on_mark`, or a trade on
# the fake Binance exchange (`binance.sim`) reached through the real REST client and user stream.

EXCHANGE_INFO = SAMPLE / "exchangeInfo_mainnet_2024-10-02.json"
SIM_API_KEY = "acceptance-sim-key"
SIM_API_SECRET = "acceptance-sim-secret-0123456789"
SIM_REST_BASE = "https://fapi.binance.com"
SIM_WS_BASE = "wss://fstream.binance.com"


def make_sim_exchange(cfg: BotConfig, symbols: Sequence[str], *, start_ms: int) -> Any:
    """A fake Binance exchange listing `symbols` (filters from the recorded mainnet exchangeInfo)."""
    from futures_actor.binance.sim import SimExchange, load_exchange_info

    info, specs = load_exchange_info(EXCHANGE_INFO, symbols=list(symbols))
    return SimExchange(
        exchange_info=info,
        specs=specs,
        execution=cfg.execution,
        api_key=SIM_API_KEY,
        api_secret=SIM_API_SECRET,
        start_ms=start_ms,
    )


def sim_rules(symbols: Sequence[str]) -> dict[str, SymbolRules]:
    """The exchange rules of `symbols` from the same recorded exchangeInfo the sim serves."""
    from futures_actor.binance.models import ExchangeInfo, symbol_rules_from

    info = msgspec.json.decode(EXCHANGE_INFO.read_bytes(), type=ExchangeInfo)
    return {s.symbol: symbol_rules_from(s) for s in info.symbols if s.symbol in symbols}


class _FollowingTransport(httpx.AsyncBaseTransport):
    """The sim's `mock_transport`, with the exchange clock moved up to the system's wall clock first."""

    def __init__(self, sim: Any, clock: TrioWallClock) -> None:
        from futures_actor.binance.sim import mock_transport

        self._sim = sim
        self._clock = clock
        self._inner = mock_transport(sim)

    async def handle_async_request(self, request: Any) -> Any:
        now = self._clock.now_ms()
        if now > self._sim.now_ms:
            self._sim.advance_to(now)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def signal_report(
    symbol: str,
    candle_open_time_ms: int,
    *,
    side: Any,
    price: float,
    stop_pct: float = 0.01,
    target_r: float = 2.0,
    strategy: str = "trend_pullback",
    confidence: float = 0.8,
) -> Any:
    """A `SymbolReport` with one TREND signal, as a symbol actor would send it to PortfolioRisk."""
    from futures_actor.actors.messages import SymbolReport
    from futures_actor.core.models import RegimeResult, Signal
    from futures_actor.core.types import Regime, Side

    long = side is Side.LONG
    stop = price * (1 - stop_pct) if long else price * (1 + stop_pct)
    signal = Signal(
        symbol=symbol,
        strategy=strategy,
        side=side,
        regime=Regime.TREND,
        regime_confidence=confidence,
        candle_open_time_ms=candle_open_time_ms,
        entry_price=price,
        stop_price=stop,
        stop_pct=stop_pct,
        target_price=price + (price - stop) * target_r,
        leverage=2.0,
        atr=price * stop_pct / 2,
    )
    return SymbolReport(
        symbol=symbol,
        candle_open_time_ms=candle_open_time_ms,
        regime=RegimeResult(regime=Regime.TREND, direction=side, confidence=confidence, reason="TREND"),
        signals=(signal,),
        mid_price=price,
    )


@dataclass
class ScriptedRig:
    """One incarnation of a system on a scripted market. Build a new one on the same `root` (and the
    same `sim`) with `epoch_ms` = the previous incarnation's wall time to simulate a restart."""

    root: Path
    cfg: BotConfig
    symbols: list[str]
    prices: dict[str, Decimal]
    epoch_ms: int
    sim: Any = None  # a SimExchange: fake-live (mode LIVE); None: paper (mode PAPER_LIVE)
    period_s: float = 1.0
    kill_file_watch: bool = False
    system: System | None = None
    paper: PaperExchange | None = None
    store: StateStore | None = None
    journal: TradeJournal | None = None
    clock: TrioWallClock | None = None
    rules: dict[str, SymbolRules] = field(default_factory=dict)
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def set_price(self, symbol: str, price: Decimal | str, *, volume: Decimal | None = None) -> None:
        """A trade at `price` now on the venue; the system sees it at the next publication."""
        p = Decimal(price)
        self.prices[symbol] = p
        assert self.clock is not None
        if self.sim is not None:
            now = self.clock.now_ms()
            if now > self.sim.now_ms:
                self.sim.advance_to(now)
            self.sim.set_price(symbol, p, volume=volume)
        else:
            assert self.paper is not None
            now = self.clock.now_ms()
            self.paper.on_trade_price(symbol, p, now, volume=volume)
            self.paper.on_mark(symbol, p, 0.0, now + 8 * 3_600_000, now)

    async def start(self, nursery: trio.Nursery) -> System:
        """Build and start the system (returns once every actor is ready)."""
        from futures_actor.actors.messages import BookUpdated, MarkUpdated
        from futures_actor.binance.binance_gateway import BinanceGateway, user_stream_factory
        from futures_actor.binance.rest import BinanceRestClient
        from futures_actor.binance.sim import memory_connector
        from futures_actor.core.secrets import Secret

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock = TrioWallClock(self.epoch_ms)
        reset_logging()
        sink = configure_logging(cfg=self.cfg.logging, log_dir=self.log_dir, clock=clock, console="quiet")
        self._closers.append(sink.close)
        self.journal = TradeJournal(directory=self.log_dir, cfg=self.cfg.logging, clock=clock)
        self.store = StateStore.open(self.state_dir / self.cfg.state.db_file, durable=False)
        gateway: Any
        # Every error response of the REST client reaches health, as in `run_live`.
        error_hook: list[Callable[[BaseException], None]] = []
        if self.sim is not None:
            self.rules = sim_rules(self.symbols)
            rest = BinanceRestClient(
                cfg=self.cfg.exchange,
                wall_clock=clock,
                api_key=Secret(SIM_API_KEY),
                api_secret=Secret(SIM_API_SECRET),
                transport=_FollowingTransport(self.sim, clock),  # type: ignore[arg-type]
                base_url=SIM_REST_BASE,
                on_error=lambda exc: [hook(exc) for hook in error_hook] and None,
            )
            gateway = BinanceGateway(
                rest=rest,
                user_stream=user_stream_factory(
                    cfg=self.cfg.exchange,
                    rest=rest,
                    ws_base=SIM_WS_BASE,
                    connector=memory_connector(self.sim, nursery),
                ),
            )
            mode = "LIVE"
        else:
            self.rules = {s: derive_rules(s, float(self.prices[s])) for s in self.symbols}
            self.paper = PaperExchange.from_store(
                self.store, cfg=self.cfg.execution, rules=self.rules, now_ms=clock.now_ms
            )
            gateway = self.paper
            mode = "PAPER_LIVE"
        for s in self.symbols:
            self.set_price(s, self.prices[s])
        rig = self

        def market(system: System) -> Callable[..., Any]:
            async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                task_status.started()
                while True:
                    now = clock.now_ms()
                    for s in rig.symbols:
                        px = float(rig.prices[s])
                        await system.router.publish(s, BookUpdated(symbol=s, bid=px, ask=px, ts_ms=now))
                        await system.router.publish(
                            s,
                            MarkUpdated(
                                symbol=s,
                                mark_price=px,
                                funding_rate=0.0,
                                next_funding_ms=now + 8 * 3_600_000,
                                ts_ms=now,
                            ),
                        )
                    await trio.sleep(rig.period_s)

            return run

        parts = SystemParts(
            cfg=self.cfg,
            mode=mode,
            wall_clock=clock,
            gateway=gateway,
            store=self.store,
            journal=self.journal,
            rules=self.rules,
            symbols=self.symbols,
            log_dir=self.log_dir,
            state_dir=self.state_dir,
            market=market,
            paper=self.paper,
            replay=True,  # journal writes inline (deterministic under the mock clock), no paper tap
            kill_file_watch=self.kill_file_watch,
            client_counts_errors=self.sim is not None,
        )
        self.system = System(parts)
        error_hook.append(self.system.report_exchange_error)
        await nursery.start(self.system.run)
        return self.system

    async def wait_until(self, predicate: Callable[[], bool], *, timeout: float, poll: float = 0.5) -> None:
        with trio.fail_after(timeout):
            while not predicate():  # noqa: ASYNC110
                await trio.sleep(poll)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self.store is not None:
            self.store.close()
        for closer in self._closers:
            closer()
        self._closers.clear()
        reset_logging()

    def trade_records(self) -> list[dict[str, Any]]:
        assert self.journal is not None
        return list(self.journal.records())

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for path in sorted(self.log_dir.glob("events-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if name is None or rec.get("event") == name:
                        rows.append(rec)
        return rows


def trade_plan(
    *,
    symbol: str,
    side: Any,
    qty: str,
    entry: str,
    stop: str,
    target: str | None,
    candle_open_time_ms: int,
    created_ms: int,
    equity_usd: float = 10_000.0,
) -> Any:
    """A sized, rounded `TradePlan` as PortfolioRisk would send it (for execution-level scenarios)."""
    from futures_actor.core.ids import new_trade_id
    from futures_actor.core.models import TradePlan
    from futures_actor.core.types import Regime

    e, s, q = Decimal(entry), Decimal(stop), Decimal(qty)
    return TradePlan(
        trade_id=new_trade_id(
            symbol=symbol, strategy="trend_pullback", candle_open_time_ms=candle_open_time_ms
        ),
        symbol=symbol,
        strategy="trend_pullback",
        side=side,
        regime=Regime.TREND,
        confidence_score=0.7,
        candle_open_time_ms=candle_open_time_ms,
        created_ms=created_ms,
        entry_price=e,
        quantity=q,
        stop_price=s,
        target_price=None if target is None else Decimal(target),
        leverage=2.0,
        equity_usd=equity_usd,
        risk_pct=float(abs(e - s) * q) / equity_usd,
        risk_usd=float(abs(e - s) * q),
        stop_pct=float(abs(e - s) / e),
        notional_usd=float(e * q),
        margin_used_usd=float(e * q) / 2,
        trail_atr_mult=None,
        trail_after_r=None,
    )


# ---------------------------------------------------------------------------------------------------
# Scripted-rig trade helpers: a position opened through PortfolioRisk and execution, and a stop-out.

FIVE_MIN_MS = INTERVAL_MS["5m"]


async def next_candle(rig: ScriptedRig) -> int:
    """Sleep into the next 5m candle; its open time (a fresh candle for a `signal_report`)."""
    assert rig.clock is not None
    now = rig.clock.now_ms()
    await trio.sleep((FIVE_MIN_MS - now % FIVE_MIN_MS) / 1000)
    now = rig.clock.now_ms()
    return now - now % FIVE_MIN_MS


async def open_position(
    rig: ScriptedRig, symbol: str, side: Any, *, stop_pct: float = 0.01, timeout: float = 120.0
) -> str:
    """A signal on the next candle, approved by PortfolioRisk, its entry filled and protected by a
    stop. Returns the trade id (fails the test if the signal is not approved)."""
    from futures_actor.core import lifecycle as lcm
    from futures_actor.core.types import OrderRole, Side

    system = rig.system
    assert system is not None
    price = rig.prices[symbol]
    known = {t.trade_id for t in system.execution.open_trades()}
    candle = await next_candle(rig)
    await system._risk_send.send(
        signal_report(symbol, candle, side=side, price=float(price), stop_pct=stop_pct)
    )

    def new_trades() -> list[Any]:
        return [t for t in system.execution.open_trades() if t.trade_id not in known]

    await rig.wait_until(lambda: bool(new_trades()), timeout=timeout)
    trade = new_trades()[0]
    await rig.wait_until(lambda: bool(trade.live_orders(OrderRole.ENTRY)), timeout=timeout)
    through = price * (Decimal("0.999") if side is Side.LONG else Decimal("1.001"))
    rig.set_price(symbol, str(through))
    await rig.wait_until(
        lambda: trade.phase is lcm.Phase.OPEN and bool(trade.live_orders(OrderRole.STOP)), timeout=timeout
    )
    return str(trade.trade_id)


async def stop_out(rig: ScriptedRig, trade_id: str, *, timeout: float = 120.0) -> dict[str, Any]:
    """Trade through the trade's stop; returns its trade record once execution has closed it."""
    from futures_actor.core.types import Side

    system = rig.system
    assert system is not None
    trade = system.execution.trade(trade_id)
    assert trade is not None, trade_id
    stop = Decimal(trade.stop_price)
    rig.set_price(
        trade.symbol, str(stop * (Decimal("0.999") if trade.side is Side.LONG else Decimal("1.001")))
    )

    def record() -> dict[str, Any] | None:
        return next((r for r in rig.trade_records() if r["trade_id"] == trade_id), None)

    await rig.wait_until(lambda: record() is not None, timeout=timeout)
    found = record()
    assert found is not None
    return found


def seed_track_record(log_dir: Path, cfg: BotConfig, *, symbol: str, before_ms: int, trades: int) -> None:
    """`trades` earlier winning LIVE trend_pullback trades of `symbol` in the trade log of `log_dir`
    (a month before `before_ms`), so that LIVE's strategy selector (which never explores) has the
    sample it needs: the system rebuilds its performance windows from this log at start."""
    import uuid

    from futures_actor.core.clock import ManualWallClock, iso_utc
    from futures_actor.state.journal import TradeJournal

    base = before_ms - 30 * 86_400_000
    journal = TradeJournal(directory=log_dir, cfg=cfg.logging, clock=ManualWallClock(base))
    try:
        for i in range(trades):
            t = base + i * 3_600_000
            journal.write(
                {
                    "trade_id": str(uuid.UUID(int=i + 1)),
                    "timestamp_open": iso_utc(t),
                    "timestamp_close": iso_utc(t + 1_800_000),
                    "mode": "LIVE",
                    "symbol": symbol,
                    "strategy": "trend_pullback",
                    "regime": "TREND",
                    "direction": "LONG",
                    "confidence_score": 0.8,
                    "entry_order": {
                        "client_order_id": f"seed-{i}",
                        "type": "LIMIT",
                        "requested_price": 60000.0,
                        "filled_avg_price": 60000.0,
                        "filled_qty": 0.016,
                        "status": "FILLED",
                    },
                    "risk": {
                        "equity_usd": 10000.0,
                        "risk_pct": 0.01,
                        "risk_usd": 100.0,
                        "stop_pct": 0.01,
                        "stop_price": 59400.0,
                        "take_profit_price": 61200.0,
                        "leverage": 2.0,
                        "notional_usd": 960.0,
                        "margin_used_usd": 480.0,
                    },
                    "costs": {"fees_usd": 0.6, "funding_usd": 0.0, "slippage_pct": 0.0},
                    "result": {"exit_price": 61200.0, "pnl_usd": 18.6, "pnl_r_multiple": 1.9, "reason": "TP"},
                    "portfolio": {
                        "open_positions_count": 1,
                        "open_risk_pct": 0.01,
                        "correlation_bucket": symbol,
                        "bucket_corr_max": 0.0,
                    },
                }
            )
    finally:
        journal.close()

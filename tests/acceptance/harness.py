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
from pathlib import Path
from typing import Any

import msgspec
import trio

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.replay_feed import ReplayFeed
from futures_actor.app import System, SystemParts
from futures_actor.binance.paper import PaperExchange
from futures_actor.core.config import BotConfig, default_config
from futures_actor.core.types import INTERVAL_MS, Candle, SymbolRules
from futures_actor.logs import configure_logging, reset_logging
from futures_actor.startup import derive_rules
from futures_actor.state.journal import TradeJournal
from futures_actor.state.store import StateStore

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
KLINES = SHARED / "data" / "klines"
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
    """A slice of the shared recorded klines of `symbol` (5m and 1h, same span) into `directory`."""
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
            on_path=lambda s, c, i: holder["p"].on_path(s, c, i),
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

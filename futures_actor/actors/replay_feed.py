"""The replay feed: recorded klines and funding played in simulated (trio) time.

This module owns the replay's input side (ARCHITECTURE "Time"): which files make a replay data set,
how they are held in memory, and the order in which their events reach the actors.

Data set: every `SYMBOL-5m.csv.gz` (or `.csv`) in `directory` that has a matching `SYMBOL-1h` file is a
symbol (other files, e.g. `*-1h-mark.csv.gz`, are ignored); funding rates come from
`funding/SYMBOL.csv` inside the directory or beside it (`directory/../funding/`), optional per symbol.
Klines are read and validated by `data.klines_csv` (a bad row raises `KlinesFileError` naming the
file, line, column and value) and kept as numpy arrays; a `Candle` object exists only while it is
being emitted, so 6 symbols × 120k rows stay a few tens of MB.

Time: `epoch_ms` is the earliest 5m open time. For each 5m close time T (open + 5m, ascending, the
union over all symbols) the feed waits `trio.sleep_until((T - epoch_ms) / 1000)`: under
`MockClock(autojump_threshold=0)` time only advances once every actor is idle, so the replay runs as
fast as the CPU allows and is deterministic. Then, symbol by symbol (sorted):

1. `on_path(symbol, candle, interval_ms)` with the 5m candle that STARTS at T (the look-ahead the
   paper exchange uses to simulate fills in [T, T+5m); it is never sent to strategies);
2. `CandleClosed(source="replay")` for every 1h candle closed by T not yet sent (the one closing at
   T, plus, when a symbol joins, 1h candles that closed before its first 5m candle) — before
3. the 5m candle closing at T;
4. `MarkUpdated` for every funding time F <= T not yet sent (from the symbol's first 5m open on):
   `funding_rate` = the rate realised at F, `mark_price` = the 5m close at T, `next_funding_ms` =
   the next funding time in the file (or F + the last funding period), `ts_ms` = F.

A symbol joins when its data starts and leaves when it ends. A jump in a symbol's 5m series is
logged (`replay_gap`) and counted; the candle is still emitted (the symbol actor repairs gaps).

Window (`--timerange`): `start_ms` / `end_ms` keep the 5m candles with start_ms <= open and
open + 5m <= end_ms; 1h candles likewise, except that `warmup_1h_bars` 1h candles before `start_ms` are
kept, so the 1h indicators are warm when the window opens (they reach the symbol at its first step).

Progress: `on_progress(steps_done, steps_total, sim_ms)` after the step that completes each
`replay.progress_percent_step` percent of the 5m close times, and after the last one.
`run()` returns `ReplayStats` and sets `done`.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import trio

from futures_actor.actors.market_data import MarketRouter
from futures_actor.actors.messages import CandleClosed, MarkUpdated
from futures_actor.core.config import ReplayConfig
from futures_actor.core.types import INTERVAL_MS, Candle
from futures_actor.data.klines_csv import read_klines
from futures_actor.logs import get_logger

__all__ = [
    "FeedEvent",
    "FundingSeries",
    "PathCallback",
    "PathStep",
    "ProgressCallback",
    "ReplayDataError",
    "ReplayFeed",
    "ReplayStats",
    "discover_symbols",
    "read_funding",
]

PathCallback = Callable[[str, Candle, int], None]
"""`on_path(symbol, next_candle, interval_ms)`: the 5m candle that starts now (look-ahead)."""
ProgressCallback = Callable[[int, int, int], None]
"""`on_progress(steps_done, steps_total, sim_ms)`: one step is one 5m close time."""

SIGNAL_TF = "5m"
TREND_TF = "1h"
_FUNDING_DIR = "funding"
_FUNDING_COLUMNS = ("funding_time_ms", "symbol", "funding_rate")
_KLINE_FILE = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<tf>5m|1h)\.csv(?:\.gz)?$")
_MS_PER_S = 1000.0

log = get_logger("replay_feed")


class ReplayDataError(ValueError):
    """The replay data set is unusable: names the path, and the field and value when there is one."""

    def __init__(self, message: str, *, path: str, field: str = "", value: object = None) -> None:
        super().__init__(message)
        self.path = path
        self.field = field
        self.value = value


class PathStep(msgspec.Struct, frozen=True, kw_only=True):
    """The 5m candle that starts at this step's T: the paper exchanges' look-ahead path over
    [T, T + interval_ms) (`on_path`); it is never sent to strategies."""

    symbol: str
    candle: Candle
    interval_ms: int


FeedEvent = PathStep | CandleClosed | MarkUpdated
"""What one replay step emits, in order (see the module docstring)."""


class ReplayStats(msgspec.Struct, kw_only=True):
    steps: int = 0
    candles_5m: int = 0
    candles_1h: int = 0
    funding_events: int = 0
    gaps: int = 0
    first_close_ms: int = 0
    last_close_ms: int = 0


class FundingSeries(msgspec.Struct, frozen=True, kw_only=True):
    times_ms: npt.NDArray[np.int64]
    rates: npt.NDArray[np.float64]


# ---------------------------------------------------------------------------------------- files


def _kline_files(directory: Path) -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(directory.iterdir()):
        m = _KLINE_FILE.match(p.name)
        if m is not None and p.is_file():
            found.setdefault(m["symbol"], {}).setdefault(m["tf"], p)
    return found


def discover_symbols(directory: str | Path) -> list[str]:
    """Symbols of `directory` having both a 5m and a 1h klines file, sorted."""
    d = Path(directory)
    if not d.is_dir():
        raise ReplayDataError(f"{d}: not a directory, expected a klines directory", path=str(d))
    files = _kline_files(d)
    out = []
    for symbol, by_tf in files.items():
        if SIGNAL_TF in by_tf and TREND_TF in by_tf:
            out.append(symbol)
        else:
            log.warning("replay_symbol_incomplete", symbol=symbol, files=sorted(by_tf))
    return sorted(out)


def _funding_path(directory: Path, symbol: str) -> Path | None:
    for base in (directory / _FUNDING_DIR, directory.parent / _FUNDING_DIR):
        p = base / f"{symbol}.csv"
        if p.is_file():
            return p
    return None


def read_funding(path: str | Path, *, symbol: str) -> FundingSeries:
    """Read `funding_time_ms,symbol,funding_rate[,…]`; raises `ReplayDataError` on the first bad row."""
    p = Path(path)
    name = str(p)
    times: list[int] = []
    rates: list[float] = []
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in _FUNDING_COLUMNS if c not in header]
            if missing:
                raise ReplayDataError(
                    f"{name} line 1: header lacks {missing}; expected {list(_FUNDING_COLUMNS)}",
                    path=name,
                    field=missing[0],
                )
            idx = {h: i for i, h in enumerate(header)}
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue

                def bad(col: str, raw: object, expected: str, lineno: int = lineno) -> ReplayDataError:
                    return ReplayDataError(
                        f"{name} line {lineno} column {col}: value {raw!r}, expected {expected}",
                        path=name,
                        field=col,
                        value=raw,
                    )

                if len(row) != len(header):
                    raise bad("row", len(row), f"{len(header)} fields (as the header)")
                raw_t, raw_s, raw_r = (row[idx[c]] for c in _FUNDING_COLUMNS)
                try:
                    t = int(raw_t)
                except ValueError:
                    raise bad("funding_time_ms", raw_t, "an integer (UTC ms)") from None
                if times and t <= times[-1]:
                    raise bad("funding_time_ms", raw_t, f"> {times[-1]} (strictly increasing)")
                if raw_s != symbol:
                    raise bad("symbol", raw_s, repr(symbol))
                try:
                    r = float(raw_r)
                except ValueError:
                    raise bad("funding_rate", raw_r, "a number") from None
                if not math.isfinite(r):
                    raise bad("funding_rate", raw_r, "a finite number")
                times.append(t)
                rates.append(r)
    except OSError as exc:
        raise ReplayDataError(f"{name}: cannot be read: {exc.strerror or exc}", path=name) from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ReplayDataError(f"{name}: not a readable funding CSV: {exc}", path=name) from None
    return FundingSeries(
        times_ms=np.asarray(times, dtype=np.int64), rates=np.asarray(rates, dtype=np.float64)
    )


# ---------------------------------------------------------------------------------------- series


class _Series:
    """One symbol-interval as arrays: open times, (n, 6) float values, trade counts; a cursor."""

    __slots__ = ("i", "interval", "step", "times", "trades", "values")

    def __init__(
        self, path: Path, interval: str, start_ms: int | None, end_ms: int | None, warmup_bars: int = 0
    ) -> None:
        a = read_klines(path, interval=interval)
        self.interval = interval
        self.step = INTERVAL_MS[interval]
        keep = np.ones(len(a), dtype=bool)
        if start_ms is not None:
            keep &= a.open_time_ms >= start_ms - warmup_bars * self.step
        if end_ms is not None:
            keep &= a.open_time_ms + self.step <= end_ms
        self.times: npt.NDArray[np.int64] = np.ascontiguousarray(a.open_time_ms[keep])
        self.values: npt.NDArray[np.float64] = np.column_stack(
            (a.open[keep], a.high[keep], a.low[keep], a.close[keep], a.volume[keep], a.quote_volume[keep])
        )
        self.trades: npt.NDArray[np.int64] = np.ascontiguousarray(a.trades[keep])
        self.i = 0

    def __len__(self) -> int:
        return int(self.times.size)

    def candle(self, i: int) -> Candle:
        o, h, lo, c, v, q = self.values[i].tolist()
        return Candle(
            open_time_ms=int(self.times[i]),
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=v,
            quote_volume=q,
            trades=int(self.trades[i]),
        )

    def close_at(self, i: int) -> int:
        """The close boundary (open + interval) of row `i`."""
        return int(self.times[i]) + self.step


class _Symbol:
    __slots__ = ("five", "funding", "funding_i", "hour", "symbol")

    def __init__(self, symbol: str, five: _Series, hour: _Series, funding: FundingSeries | None) -> None:
        self.symbol = symbol
        self.five = five
        self.hour = hour
        self.funding = funding
        self.funding_i = 0
        if funding is not None and len(five):
            self.funding_i = int(np.searchsorted(funding.times_ms, five.times[0], side="left"))


# ---------------------------------------------------------------------------------------- the feed


class ReplayFeed:
    """Plays a directory of recorded klines through a `MarketRouter` in trio time."""

    def __init__(
        self,
        *,
        directory: str | Path,
        router: MarketRouter,
        symbols: Sequence[str] | None = None,
        on_path: PathCallback | None = None,
        on_progress: ProgressCallback | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        warmup_1h_bars: int = 0,
        cfg: ReplayConfig | None = None,
    ) -> None:
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise ReplayDataError(
                f"replay window [{start_ms}, {end_ms}): end must be after start",
                path=str(directory),
                field="timerange",
                value=(start_ms, end_ms),
            )
        self._dir = Path(directory)
        self._router = router
        self._wanted = list(symbols) if symbols is not None else None
        self._on_path = on_path
        self._on_progress = on_progress
        self._start_ms = start_ms
        self._end_ms = end_ms
        self._warmup_1h = warmup_1h_bars
        self._cfg = cfg or ReplayConfig()
        self._data: list[_Symbol] | None = None
        self._closes: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.epoch_ms = 0
        self.done = trio.Event()
        self._started = False
        self._next_pct = 0.0
        self.stats = ReplayStats()

    # ----------------------------------------------------------------- loading

    def load(self) -> None:
        """Read and validate every file (idempotent). Raises `ReplayDataError` / `KlinesFileError`."""
        if self._data is not None:
            return
        if not self._dir.is_dir():
            raise ReplayDataError(
                f"{self._dir}: not a directory, expected a klines directory", path=str(self._dir)
            )
        files = _kline_files(self._dir)
        names = self._wanted if self._wanted is not None else discover_symbols(self._dir)
        data: list[_Symbol] = []
        for symbol in sorted(dict.fromkeys(names)):
            by_tf = files.get(symbol, {})
            for tf in (SIGNAL_TF, TREND_TF):
                if tf not in by_tf:
                    raise ReplayDataError(
                        f"{self._dir}: no {symbol}-{tf}.csv.gz for symbol {symbol}",
                        path=str(self._dir),
                        field="symbols",
                        value=symbol,
                    )
            five = _Series(by_tf[SIGNAL_TF], SIGNAL_TF, self._start_ms, self._end_ms)
            hour = _Series(by_tf[TREND_TF], TREND_TF, self._start_ms, self._end_ms, self._warmup_1h)
            fpath = _funding_path(self._dir, symbol)
            funding = read_funding(fpath, symbol=symbol) if fpath is not None else None
            if funding is None:
                log.info("replay_no_funding", symbol=symbol)
            if not len(five):
                log.warning(
                    "replay_symbol_empty", symbol=symbol, start_ms=self._start_ms, end_ms=self._end_ms
                )
                continue
            data.append(_Symbol(symbol, five, hour, funding))
        if not data:
            raise ReplayDataError(
                f"{self._dir}: no 5m candles for symbols {names} in the window "
                f"[{self._start_ms}, {self._end_ms}]",
                path=str(self._dir),
                field="symbols",
                value=names,
            )
        self._data = data
        self.epoch_ms = min(int(s.five.times[0]) for s in data)
        self._closes = np.unique(np.concatenate([s.five.times + s.five.step for s in data]))
        log.info(
            "replay_loaded",
            symbols=[s.symbol for s in data],
            closes=int(self._closes.size),
            epoch_ms=self.epoch_ms,
        )

    @property
    def symbols(self) -> list[str]:
        self.load()
        assert self._data is not None
        return [s.symbol for s in self._data]

    @property
    def close_times_ms(self) -> npt.NDArray[np.int64]:
        self.load()
        return self._closes

    def trio_time_of(self, ms: int) -> float:
        """The trio time at which wall time `ms` happens in this replay."""
        return (ms - self.epoch_ms) / _MS_PER_S

    def now_ms(self) -> int:
        """Simulated wall time (a `WallClock`), valid inside the `trio.run` of the replay."""
        return self.epoch_ms + round(trio.current_time() * _MS_PER_S)

    # ----------------------------------------------------------------- playing

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> ReplayStats:
        """Play every step in trio time (the trio runtime); see `steps` for what a step emits."""
        self._start()
        task_status.started()
        router = self._router
        for T, events in self.steps():
            await trio.sleep_until(self.trio_time_of(T))
            for event in events:
                if isinstance(event, PathStep):
                    if self._on_path is not None:
                        self._on_path(event.symbol, event.candle, event.interval_ms)
                else:
                    await router.publish(event.symbol, event)
            self.step_done()
        return self.finish()

    def _start(self) -> None:
        self.load()
        if self._started:
            raise RuntimeError("ReplayFeed.run(): a feed plays once; build a new ReplayFeed to replay again")
        self._started = True
        self._next_pct = float(self._cfg.progress_percent_step)

    def steps(self) -> Iterator[tuple[int, Iterator[FeedEvent]]]:
        """The replay as steps, one per 5m close time T ascending: `(T, events)`, where `events` must be
        consumed (in order) before the next step is asked for. Both runtimes play exactly this sequence:
        the trio runtime sleeps until T and publishes each message through the router; the
        discrete-event runtime delivers them at T. Call `step_done()` after each step's events."""
        if not self._started:
            self._start()
        assert self._data is not None
        stats = self.stats
        for T in self._closes.tolist():
            if stats.steps == 0:
                stats.first_close_ms = T
            stats.steps += 1
            stats.last_close_ms = T
            yield T, self._step_events(T)

    def step_done(self) -> None:
        """Progress after a step (`on_progress` each `replay.progress_percent_step` percent)."""
        stats = self.stats
        total = int(self._closes.size)
        done_pct = 100.0 * stats.steps / total
        if self._on_progress is not None and (done_pct >= self._next_pct or stats.steps == total):
            self._on_progress(stats.steps, total, stats.last_close_ms)
            while self._next_pct <= done_pct:
                self._next_pct += self._cfg.progress_percent_step

    def finish(self) -> ReplayStats:
        """The end of the replay: logs and returns the statistics, sets `done`."""
        log.info("replay_done", **msgspec.structs.asdict(self.stats))
        self.done.set()
        return self.stats

    def _step_events(self, T: int) -> Iterator[FeedEvent]:
        assert self._data is not None
        for sym in self._data:
            yield from self._symbol_events(sym, T, self.stats)

    def _symbol_events(self, sym: _Symbol, T: int, stats: ReplayStats) -> Iterator[FeedEvent]:
        five, hour = sym.five, sym.hour
        n5 = len(five)
        if five.i >= n5 or five.close_at(five.i) > T:
            return  # not joined yet, or already left
        symbol = sym.symbol
        if five.i + 1 < n5 and int(five.times[five.i + 1]) == T:
            yield PathStep(symbol=symbol, candle=five.candle(five.i + 1), interval_ms=five.step)
        while hour.i < len(hour) and hour.close_at(hour.i) <= T:
            yield self._closed(symbol, hour, hour.i)
            hour.i += 1
            stats.candles_1h += 1
        close = 0.0
        while five.i < n5 and five.close_at(five.i) <= T:
            i = five.i
            if i > 0 and int(five.times[i]) != int(five.times[i - 1]) + five.step:
                stats.gaps += 1
                log.warning(
                    "replay_gap", symbol=symbol, after_ms=int(five.times[i - 1]), next_ms=int(five.times[i])
                )
            close = float(five.values[i, 3])
            yield self._closed(symbol, five, i)
            five.i += 1
            stats.candles_5m += 1
        f = sym.funding
        if f is None:
            return
        nf = int(f.times_ms.size)
        while sym.funding_i < nf and int(f.times_ms[sym.funding_i]) <= T:
            j = sym.funding_i
            t = int(f.times_ms[j])
            if j + 1 < nf:
                nxt = int(f.times_ms[j + 1])
            else:
                nxt = t + (t - int(f.times_ms[j - 1]) if j > 0 else 0)
            yield MarkUpdated(
                symbol=symbol, mark_price=close, funding_rate=float(f.rates[j]), next_funding_ms=nxt, ts_ms=t
            )
            sym.funding_i += 1
            stats.funding_events += 1

    @staticmethod
    def _closed(symbol: str, series: _Series, i: int) -> CandleClosed:
        return CandleClosed(symbol=symbol, interval=series.interval, candle=series.candle(i), source="replay")

"""`equity.csv`: the account's equity over a run, sampled on a fixed period and after every trade close.

Columns (one header line, then one row per sample, oldest first):

- `time`: ISO 8601 UTC of the sample (simulated time in a replay);
- `equity_usd`: the account equity marked to market at the sample: wallet balance plus every open
  position valued at the price of that moment (a replay: the close of the symbol's latest 5m candle
  closed at the sample time, see `app.ReplayEquity`), so that a position deep in loss between its
  fills shows on the curve;
- `drawdown_pct`: (peak equity so far − equity) / peak equity, a fraction (`core.drawdown`, the one
  computation the summary, report.html and the daily reports use too);
- `open_risk_usd`: the summed risk to the stops of the open positions and reserved entries;
- `open_positions`: symbols with an open position;
- `kind`: why the row was taken: `start`, `period` (every `report.equity_sample_minutes`), `close`
  (shortly after a trade closed, once the account report of the exit has arrived) or `end`.

`EquitySampler` is a trio task that writes the rows; `read_equity_csv` reads them back for the report
and names the file, line and column of anything it cannot read.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal, TextIO

import msgspec
import trio

from futures_actor.core.clock import WallClock, iso_utc
from futures_actor.core.drawdown import DrawdownTracker, max_drawdown

__all__ = [
    "EQUITY_COLUMNS",
    "EQUITY_CSV",
    "AccountView",
    "DayDrawdown",
    "EquityCsvError",
    "EquityCsvWriter",
    "EquityRow",
    "EquitySampler",
    "read_equity_csv",
]

EQUITY_CSV = "equity.csv"
EQUITY_COLUMNS = ("time", "equity_usd", "drawdown_pct", "open_risk_usd", "open_positions", "kind")
SampleKind = Literal["start", "period", "close", "end"]
_KINDS: frozenset[str] = frozenset({"start", "period", "close", "end"})
_MS_PER_S = 1000.0
# After a trade close, the sample waits this long (simulated seconds in a replay) so that the account
# report of the exit fill has reached the risk actor: under the replay's mock clock time only moves once
# every actor is idle, so any positive delay suffices; live, a second covers the in-process hop.
CLOSE_SAMPLE_DELAY_SECONDS = 1.0


class EquityCsvError(ValueError):
    """equity.csv cannot be read: names the file, line and column."""


class EquityRow(msgspec.Struct, frozen=True, kw_only=True):
    time_ms: int
    equity_usd: float
    drawdown_pct: float
    open_risk_usd: float
    open_positions: int
    kind: str


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    """What the sampler reads: equity (None before the first account report), open risk, positions."""

    equity_usd: float | None
    open_risk_usd: float
    open_positions: int


class DayDrawdown(msgspec.Struct, frozen=True, kw_only=True):
    """A UTC day on the curve: the equity and drawdown of its last sample at or before the day's end,
    the peak so far, and the deepest fall within the day measured from the day's start."""

    equity_usd: float
    peak_equity_usd: float
    drawdown_pct: float
    max_intraday_drawdown_pct: float


class EquityCsvWriter:
    """Writes equity.csv (header at creation); the drawdown column from `core.drawdown`. Keeps the
    curve (time, equity) in memory for `day_drawdown` (a few rows an hour: small)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: TextIO | None = path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._fh, lineterminator="\n")
        self._writer.writerow(EQUITY_COLUMNS)
        self._fh.flush()
        self._drawdown = DrawdownTracker()
        self._times: list[int] = []
        self._equity: list[float] = []
        self._peaks: list[float] = []
        self._drawdowns: list[float] = []
        self.rows = 0
        self.last: EquityRow | None = None

    def write(self, time_ms: int, view: AccountView, kind: SampleKind) -> EquityRow | None:
        """One row; None (nothing written) while the equity is unknown or not a positive finite number."""
        equity = view.equity_usd
        if self._fh is None or equity is None or not math.isfinite(equity) or equity <= 0:
            return None
        drawdown = self._drawdown.update(equity)
        self._times.append(time_ms)
        self._equity.append(equity)
        self._peaks.append(self._drawdown.peak)
        self._drawdowns.append(drawdown)
        row = EquityRow(
            time_ms=time_ms,
            equity_usd=equity,
            drawdown_pct=drawdown,
            open_risk_usd=view.open_risk_usd if math.isfinite(view.open_risk_usd) else 0.0,
            open_positions=view.open_positions,
            kind=kind,
        )
        self._writer.writerow(
            (
                iso_utc(time_ms),
                f"{row.equity_usd:.6f}",
                f"{row.drawdown_pct:.8f}",
                f"{row.open_risk_usd:.6f}",
                row.open_positions,
                kind,
            )
        )
        self._fh.flush()
        self.rows += 1
        self.last = row
        return row

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def day_drawdown(self, day_start_ms: int, day_end_ms: int) -> DayDrawdown | None:
        """The day [day_start_ms, day_end_ms] on the curve written so far; None before its first row."""
        end = bisect.bisect_right(self._times, day_end_ms) - 1
        if end < 0:
            return None
        start = max(0, bisect.bisect_right(self._times, day_start_ms) - 1)
        first_inside = bisect.bisect_right(self._times, day_start_ms)
        day_curve = [self._equity[start], *self._equity[first_inside : end + 1]]
        return DayDrawdown(
            equity_usd=self._equity[end],
            peak_equity_usd=self._peaks[end],
            drawdown_pct=self._drawdowns[end],
            max_intraday_drawdown_pct=max_drawdown(day_curve),
        )


class EquitySampler:
    """equity.csv's rows: at start, every `every_ms` of wall time (aligned to multiples of it), after
    trade closes (`trade_closed()`), and at the end (`finish()`). `run` is the trio task; the replay's
    discrete-event runtime drives the same sampler with `next_due_ms` and `write_due`.

    A `close` row is written `CLOSE_SAMPLE_DELAY_SECONDS` after a trade record, and covers every record
    written before that moment: a record strictly before the pending row's time adds no row of its own.
    Rows are decided by the records' times only, never by how a runtime interleaves the sampler with
    the writers, so the same records give the same rows in every runtime.
    """

    def __init__(
        self,
        *,
        writer: EquityCsvWriter,
        view: Callable[[], AccountView],
        clock: WallClock,
        every_ms: int,
    ) -> None:
        if every_ms <= 0:
            raise ValueError(f"every_ms must be > 0, got {every_ms}")
        self._writer = writer
        self._view = view
        self._clock = clock
        self._every = every_ms
        self._close_dues: deque[int] = deque()  # times of the `close` rows still to write
        self._next_period_ms: int | None = None
        self._changed = trio.Event()

    def trade_closed(self) -> None:
        """Called (synchronously) when a trade record was written."""
        now = self._clock.now_ms()
        if self._close_dues and now < self._close_dues[-1]:
            return  # the pending row, written after this record, covers it
        self._close_dues.append(now + round(CLOSE_SAMPLE_DELAY_SECONDS * _MS_PER_S))
        self._changed.set()

    def sample(self, kind: SampleKind) -> EquityRow | None:
        return self._writer.write(self._clock.now_ms(), self._view(), kind)

    def start(self) -> None:
        """The `start` row; the first period row is due at the next multiple of `every_ms`."""
        self.sample("start")
        self._next_period_ms = (self._clock.now_ms() // self._every + 1) * self._every

    def next_due_ms(self) -> int | None:
        """When the next row is due (None before `start`)."""
        if self._next_period_ms is None:
            return None
        return min(self._next_period_ms, self._close_dues[0]) if self._close_dues else self._next_period_ms

    def write_due(self) -> None:
        """Write the rows due by now: `close` rows first, then the period row."""
        now = self._clock.now_ms()
        while self._close_dues and self._close_dues[0] <= now:
            self._close_dues.popleft()
            self.sample("close")
        if self._next_period_ms is not None and now >= self._next_period_ms:
            self.sample("period")
            self._next_period_ms = (now // self._every + 1) * self._every

    def finish(self) -> None:
        """The `end` row, then close the file."""
        self.sample("end")
        self._writer.close()

    def close(self) -> None:
        """Close the file without a last row (an interrupted run); idempotent."""
        self._writer.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.start()
        task_status.started()
        while True:
            due = self.next_due_ms()
            assert due is not None
            delay = max(0.0, (due - self._clock.now_ms()) / _MS_PER_S)
            with trio.move_on_after(delay):
                await self._changed.wait()
            self._changed = trio.Event()
            self.write_due()


def _parse_time(raw: str) -> int:
    parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return int(parsed.timestamp() * _MS_PER_S)


def read_equity_csv(path: Path) -> list[EquityRow]:
    """The rows of an equity.csv, oldest first. Raises `EquityCsvError` naming file, line and column."""
    rows: list[EquityRow] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != EQUITY_COLUMNS:
                raise EquityCsvError(f"{path} line 1: header {header!r}, expected {','.join(EQUITY_COLUMNS)}")
            for line, raw in enumerate(reader, start=2):
                if not raw:
                    continue
                if len(raw) != len(EQUITY_COLUMNS):
                    raise EquityCsvError(
                        f"{path} line {line}: {len(raw)} fields, expected {len(EQUITY_COLUMNS)}"
                    )
                values = dict(zip(EQUITY_COLUMNS, raw, strict=True))
                column = "time"
                try:
                    time_ms = _parse_time(values["time"])
                    column = "equity_usd"
                    equity = float(values["equity_usd"])
                    column = "drawdown_pct"
                    drawdown = float(values["drawdown_pct"])
                    column = "open_risk_usd"
                    open_risk = float(values["open_risk_usd"])
                    column = "open_positions"
                    positions = int(values["open_positions"])
                except ValueError:
                    raise EquityCsvError(
                        f"{path} line {line} column {column}: value {values[column]!r} is not valid"
                    ) from None
                if not (math.isfinite(equity) and equity > 0):
                    raise EquityCsvError(
                        f"{path} line {line} column equity_usd: value {values['equity_usd']!r}, "
                        "expected a positive number"
                    )
                if values["kind"] not in _KINDS:
                    raise EquityCsvError(
                        f"{path} line {line} column kind: value {values['kind']!r}, "
                        f"expected one of {', '.join(sorted(_KINDS))}"
                    )
                if rows and time_ms < rows[-1].time_ms:
                    raise EquityCsvError(f"{path} line {line} column time: earlier than the line before")
                rows.append(
                    EquityRow(
                        time_ms=time_ms,
                        equity_usd=equity,
                        drawdown_pct=drawdown if math.isfinite(drawdown) else 0.0,
                        open_risk_usd=open_risk if math.isfinite(open_risk) else 0.0,
                        open_positions=positions,
                        kind=values["kind"],
                    )
                )
    except OSError as exc:
        raise EquityCsvError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise EquityCsvError(f"{path}: not a readable CSV: {exc}") from None
    return rows

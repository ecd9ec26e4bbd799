"""The daily report (BOT_SPEC §11), pure: built from one UTC day's trade records and an account snapshot.

Policy:
- A record belongs to the day of its `timestamp_close` (UTC); records of other days are ignored, so the
  caller may pass a whole trade file. A record whose entry never filled (`entry_order.filled_qty == 0`,
  e.g. a `TIMEOUT`) is not a trade: it is counted in `unfilled_entries` only.
- Figures are net, as logged (`result.pnl_usd` after fees and funding; `pnl_r_multiple` likewise).
  Win rate and expectancy R are over the day's trades (0 when there are none; `trade_count` tells).
- A malformed record is never dropped silently and never stops the report: it is listed in `problems`
  (trade id, field, value, expected) and left out of the figures.
- Drawdown (`core.drawdown`): `drawdown_pct` is the current equity's fall from the peak equity the
  account snapshot knows; `max_intraday_drawdown_pct` is the deepest fall within the day: of the sampled
  equity curve when the snapshot brings it (a replay), else of the day's realized curve (day-start
  equity plus the day's trades in close order). Both are fractions (0.05 = 5 %), like every `*_pct`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import msgspec

from futures_actor.core.clock import iso_utc
from futures_actor.core.drawdown import DrawdownTracker, max_drawdown
from futures_actor.core.performance import TradeRecordError, closed_trade_from_record

__all__ = [
    "AccountSnapshot",
    "DailyReport",
    "RecordProblem",
    "ReportInputError",
    "build_daily_report",
    "render_ineligible",
    "render_report_text",
    "report_file_name",
]

REPORT_FILE_PREFIX = "daily-report-"


class ReportInputError(ValueError):
    """The account snapshot or the day was unusable (field, value and what was expected are named)."""

    def __init__(self, *, field: str, value: object, expected: str) -> None:
        super().__init__(f"daily report input {field}={value!r}: expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


class AccountSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The account when the report is built (from PortfolioRisk / the exchange)."""

    equity_usd: float
    unrealized_pnl_usd: float
    day_start_equity_usd: float  # at 00:00 UTC starting the report's day
    peak_equity_usd: float
    open_risk_usd: float
    open_positions: int
    # At 00:00 UTC ending the report's day (None: not known, the current equity stands in).
    day_end_equity_usd: float | None = None
    # Strategies ineligible (expectancy ≤ 0 on enough trades; they trade on the shadow book): since (ms).
    ineligible_strategies: dict[str, int] = msgspec.field(default_factory=dict)
    # Strategies eligible on enough trades whose confidence is below the threshold (performance-blocked;
    # they trade on the shadow book too): since (ms).
    performance_blocked_strategies: dict[str, int] = msgspec.field(default_factory=dict)
    # The day's deepest fall on a sampled equity curve (a replay's equity.csv, marked to market), from
    # `core.drawdown`; None: measured on the day's realized curve (day start plus the day's trades).
    max_intraday_drawdown_pct: float | None = None


class RecordProblem(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: str
    field: str
    value: str
    expected: str


class DailyReport(msgspec.Struct, frozen=True, kw_only=True):
    day: str  # YYYY-MM-DD (UTC)
    realized_pnl_usd: float
    unrealized_pnl_usd: float
    equity_usd: float
    day_start_equity_usd: float
    day_pnl_pct: float  # (day end equity − day start equity) / day start equity, both at 00:00 UTC
    drawdown_pct: float
    max_intraday_drawdown_pct: float
    trade_count: int
    wins: int
    losses: int
    win_rate: float
    expectancy_r: float
    fees_usd: float
    funding_usd: float
    open_risk_usd: float
    open_risk_pct: float
    open_positions: int
    unfilled_entries: int
    trade_ids: tuple[str, ...]
    problems: tuple[RecordProblem, ...] = ()
    day_end_equity_usd: float = 0.0
    ineligible_strategies: dict[str, str] = msgspec.field(default_factory=dict)  # strategy -> since (ISO)
    performance_blocked_strategies: dict[str, str] = msgspec.field(default_factory=dict)  # likewise


def report_file_name(day: date) -> str:
    return f"{REPORT_FILE_PREFIX}{day.isoformat()}.json"


def _finite(field: str, value: object, *, positive: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and float(value) <= 0):  # type: ignore[arg-type]
        raise ReportInputError(
            field=field, value=value, expected="a finite number > 0" if positive else "a finite number"
        )
    return float(value)  # type: ignore[arg-type]


def _check_account(account: AccountSnapshot) -> None:
    _finite("account.equity_usd", account.equity_usd, positive=True)
    _finite("account.day_start_equity_usd", account.day_start_equity_usd, positive=True)
    _finite("account.peak_equity_usd", account.peak_equity_usd, positive=True)
    if account.day_end_equity_usd is not None:
        _finite("account.day_end_equity_usd", account.day_end_equity_usd)
    _finite("account.unrealized_pnl_usd", account.unrealized_pnl_usd)
    _finite("account.open_risk_usd", account.open_risk_usd)
    if not isinstance(account.open_positions, int) or account.open_positions < 0:
        raise ReportInputError(
            field="account.open_positions", value=account.open_positions, expected="an integer >= 0"
        )


def _close_day(record: Mapping[str, Any]) -> tuple[date, str]:
    raw = record.get("timestamp_close")
    if not isinstance(raw, str):
        raise TradeRecordError(
            field="timestamp_close", value=raw, expected="an ISO 8601 UTC timestamp", trade_id=_tid(record)
        )
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise TradeRecordError(
            field="timestamp_close", value=raw, expected="an ISO 8601 UTC timestamp", trade_id=_tid(record)
        ) from None
    if dt.utcoffset() != timedelta(0):
        raise TradeRecordError(
            field="timestamp_close", value=raw, expected="a UTC timestamp (Z)", trade_id=_tid(record)
        )
    return dt.date(), raw


def _tid(record: Mapping[str, Any]) -> str:
    raw = record.get("trade_id")
    return raw if isinstance(raw, str) else ""


def build_daily_report(
    day: date, records: Iterable[Mapping[str, Any]], account: AccountSnapshot
) -> DailyReport:
    """The report of UTC `day`. Raises `ReportInputError` only for a bad account snapshot."""
    _check_account(account)
    problems: list[RecordProblem] = []
    closed: list[tuple[str, str, float, float, float, float]] = []  # (close ts, id, pnl, r, fees, funding)
    unfilled = 0
    seen: set[str] = set()
    for record in records:
        if not isinstance(record, Mapping):
            problems.append(
                RecordProblem(
                    trade_id="", field="<record>", value=type(record).__name__, expected="a JSON object"
                )
            )
            continue
        try:
            close_day, close_ts = _close_day(record)
            if close_day != day:
                continue
            trade = closed_trade_from_record(record)
        except TradeRecordError as exc:
            problems.append(
                RecordProblem(
                    trade_id=_tid(record),
                    field=exc.field,
                    value=repr(exc.value),
                    expected=exc.expected,
                )
            )
            continue
        if trade is None:
            unfilled += 1
            continue
        if trade.trade_id in seen:
            problems.append(
                RecordProblem(
                    trade_id=trade.trade_id,
                    field="trade_id",
                    value=repr(trade.trade_id),
                    expected="a unique id",
                )
            )
            continue
        seen.add(trade.trade_id)
        closed.append(
            (close_ts, trade.trade_id, trade.pnl_usd, trade.r_multiple, trade.fees_usd, trade.funding_usd)
        )

    closed.sort()
    count = len(closed)
    realized = math.fsum(c[2] for c in closed)
    wins = sum(1 for c in closed if c[2] > 0)
    losses = sum(1 for c in closed if c[2] < 0)
    expectancy = math.fsum(c[3] for c in closed) / count if count else 0.0

    equity = account.equity_usd
    max_dd = account.max_intraday_drawdown_pct
    if max_dd is None:
        max_dd = max_drawdown(
            itertools.accumulate((c[2] for c in closed), initial=account.day_start_equity_usd)
        )
    peak_equity = max(account.peak_equity_usd, equity)
    day_end = account.day_end_equity_usd if account.day_end_equity_usd is not None else equity

    return DailyReport(
        day=day.isoformat(),
        realized_pnl_usd=realized,
        unrealized_pnl_usd=account.unrealized_pnl_usd,
        equity_usd=equity,
        day_start_equity_usd=account.day_start_equity_usd,
        day_pnl_pct=(day_end - account.day_start_equity_usd) / account.day_start_equity_usd,
        day_end_equity_usd=day_end,
        ineligible_strategies={k: iso_utc(v) for k, v in sorted(account.ineligible_strategies.items())},
        performance_blocked_strategies={
            k: iso_utc(v) for k, v in sorted(account.performance_blocked_strategies.items())
        },
        drawdown_pct=DrawdownTracker(peak_equity).drawdown_of(equity),
        max_intraday_drawdown_pct=max_dd,
        trade_count=count,
        wins=wins,
        losses=losses,
        win_rate=wins / count if count else 0.0,
        expectancy_r=expectancy,
        fees_usd=math.fsum(c[4] for c in closed),
        funding_usd=math.fsum(c[5] for c in closed),
        open_risk_usd=account.open_risk_usd,
        open_risk_pct=account.open_risk_usd / equity,
        open_positions=account.open_positions,
        unfilled_entries=unfilled,
        trade_ids=tuple(c[1] for c in closed),
        problems=tuple(problems),
    )


def _since_items(since_iso: Mapping[str, str]) -> str:
    return ", ".join(f"{name} since {since}" for name, since in sorted(since_iso.items()))


def _ineligible_line(since_iso: Mapping[str, str]) -> str:
    if not since_iso:
        return "Ineligible strategies: none"
    return f"Ineligible strategies (trading on the shadow book): {_since_items(since_iso)}"


def _blocked_line(since_iso: Mapping[str, str]) -> str:
    if not since_iso:
        return "Performance-blocked strategies: none"
    return (
        "Performance-blocked strategies (confidence below the threshold; trading on the shadow book): "
        + _since_items(since_iso)
    )


def render_ineligible(since_ms: Mapping[str, int], blocked_ms: Mapping[str, int] | None = None) -> str:
    """Two lines naming the ineligible and the performance-blocked strategies and since when (UTC), for
    the replay summary."""
    blocked = blocked_ms if blocked_ms is not None else {}
    return "\n".join(
        (
            _ineligible_line({name: iso_utc(ms) for name, ms in since_ms.items()}),
            _blocked_line({name: iso_utc(ms) for name, ms in blocked.items()}),
        )
    )


def render_report_text(report: DailyReport, *, mode: str) -> str:
    """The plain-text message sent to Telegram."""
    lines = [
        f"[{mode}] Daily report {report.day} (UTC)",
        f"Equity: {report.equity_usd:,.2f} USDT ({report.day_pnl_pct:+.2%} on the day)",
        f"Realized: {report.realized_pnl_usd:+,.2f}  Unrealized: {report.unrealized_pnl_usd:+,.2f}",
        f"Drawdown: {report.drawdown_pct:.2%} (intraday max {report.max_intraday_drawdown_pct:.2%})",
        f"Trades: {report.trade_count}  Win rate: {report.win_rate:.0%}  Expectancy: {report.expectancy_r:+.2f}R",
        f"Fees: {report.fees_usd:,.2f}  Funding: {report.funding_usd:+,.2f}",
        f"Open risk: {report.open_risk_usd:,.2f} ({report.open_risk_pct:.2%}), positions: {report.open_positions}",
    ]
    lines.append(_ineligible_line(report.ineligible_strategies))
    lines.append(_blocked_line(report.performance_blocked_strategies))
    if report.problems:
        lines.append(f"Malformed trade records left out: {len(report.problems)}")
    return "\n".join(lines)

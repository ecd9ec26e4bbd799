"""What the reports read of the account: the daily report's `AccountSnapshot` and the performance windows
rebuilt from the trade logs at start-up (BOT_SPEC §7, §11).

The daily report of UTC day D takes its equities at 00:00 UTC starting and ending D from the risk calendar
(issue 10 #5), the current equity, open risk and positions from PortfolioRisk; a replay takes the day's
end, peak and intraday drawdown from its equity.csv curve marked to market (`core.drawdown`), so that the
daily reports agree with equity.csv, the summary and the report. Both read PortfolioRisk's state directly
(its `snapshot()`, `risk_state` and strategy lockouts), on the Reporter's task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Protocol

import msgspec

from futures_actor.core.config import PerformanceConfig
from futures_actor.core.performance import PerformanceTracker
from futures_actor.core.report import AccountSnapshot
from futures_actor.core.risk_state import RiskState, day_equity_bounds
from futures_actor.logs import get_logger
from futures_actor.machines.risk import RiskSnapshot
from futures_actor.tearsheet.equity import EquityCsvWriter

__all__ = ["ReportAccount", "RiskView", "rebuild_tracker", "utc_day"]

_MS_PER_S = 1000
_MS_PER_DAY = 86_400_000
# The smallest equity a report divides by (a drained account still renders).
_MIN_EQUITY = 1e-9

log = get_logger("app")


def utc_day(ms: int) -> date:
    return datetime.fromtimestamp(ms / _MS_PER_S, tz=UTC).date()


class RiskView(Protocol):
    """What the report reads of the risk actor (`PortfolioRisk`, or the replay runtime's view of its
    `RiskMachine`)."""

    @property
    def risk_state(self) -> RiskState | None: ...

    def snapshot(self) -> RiskSnapshot: ...

    def ineligible_strategies(self) -> dict[str, int]: ...

    def performance_blocked_strategies(self) -> dict[str, int]: ...


class ReportAccount:
    """The account for the daily report (see the module docstring); remembers the peak equity seen."""

    def __init__(self, *, risk: RiskView, equity_curve: EquityCsvWriter | None) -> None:
        self._risk = risk
        self._curve = equity_curve
        self._peak_equity = 0.0

    def snapshot(self, day: date) -> AccountSnapshot:
        """The account for the report of UTC `day`: its equities at 00:00 UTC starting and ending it
        (from the risk calendar, issue 10 #5), the current equity, open risk and positions."""
        snap = self._risk.snapshot()
        equity = snap.equity_usd or 0.0
        self._peak_equity = max(self._peak_equity, equity)
        day_start, day_end = equity, None
        risk_state = self._risk.risk_state
        start_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * _MS_PER_S)
        if risk_state is not None:
            bounds = day_equity_bounds(risk_state, day_start_ms=start_ms, equity_now=equity)
            if bounds is not None:
                day_start, day_end = bounds
            else:
                log.warning("report_day_equity_unknown", day=day.isoformat())
        peak = max(self._peak_equity, equity, _MIN_EQUITY)
        intraday: float | None = None
        curve = self._curve
        on_curve = None if curve is None else curve.day_drawdown(start_ms, start_ms + _MS_PER_DAY)
        if on_curve is not None:  # a replay: the day's end on equity.csv's marked-to-market curve
            equity, peak = on_curve.equity_usd, on_curve.peak_equity_usd
            intraday = on_curve.max_intraday_drawdown_pct
        return AccountSnapshot(
            equity_usd=equity,
            unrealized_pnl_usd=0.0,
            day_start_equity_usd=day_start if day_start > 0 else max(equity, _MIN_EQUITY),
            day_end_equity_usd=day_end,
            peak_equity_usd=peak,
            max_intraday_drawdown_pct=intraday,
            open_risk_usd=snap.open_risk_usd,
            open_positions=snap.positions,
            ineligible_strategies=self._risk.ineligible_strategies(),
            performance_blocked_strategies=self._risk.performance_blocked_strategies(),
        )


def rebuild_tracker(
    records: Iterable[Mapping[str, Any]],
    shadow_records: Iterable[Mapping[str, Any]],
    *,
    cfg: PerformanceConfig,
) -> PerformanceTracker:
    """Performance windows rebuilt from the trade log at start-up (BOT_SPEC §7), and from the shadow
    book's log, merged in closing-time order."""
    merged = list(records)
    shadow = list(shadow_records)
    if shadow:
        merged = sorted([*merged, *shadow], key=_close_key)
    tracker, report = PerformanceTracker.from_records(merged, cfg=cfg)
    log.info("performance_rebuilt", **_struct_fields(report))
    return tracker


def _struct_fields(obj: Any) -> dict[str, Any]:
    try:
        data = msgspec.to_builtins(obj)
    except TypeError:
        return {"value": repr(obj)}
    return data if isinstance(data, dict) else {"value": data}


def _close_key(record: Mapping[str, Any]) -> str:
    """Sort key of a trade record: its ISO close time (records without one first, in file order)."""
    value = record.get("timestamp_close")
    return value if isinstance(value, str) else ""

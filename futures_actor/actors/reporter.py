"""The Reporter actor: daily reports and alerts to events.jsonl and Telegram (BOT_SPEC §11).

Inbox: `ReporterMsg`.
- `ScheduledTick(job=DAILY_REPORT)` at 00:05 UTC of day D builds the report of day D-1 (and, when the
  scheduler says slots were missed, of each missed day before it, oldest first) from `load_records(day)`
  (trade records, LOG_SCHEMA dicts) and `account(day)` (an `AccountSnapshot` with the equities at
  00:00 UTC starting and ending the day), writes
  `daily-report-YYYY-MM-DD.json` in the log directory (temp file, fsync, rename; with the run's `mode`,
  REPLAY for a replay) and sends its text to Telegram. Malformed records are listed in the report, never
  dropped silently. With `first_day` (a replay: the day of its first candle), days before it are not
  reported: the run never saw them.
- Alerts — kill switch, safe mode in/out, position opened (final entry fill) / closed, errors (`Alert`) —
  are logged (events.jsonl) and offered to Telegram.
- Nothing here may stop the bot: a failure to build or write a report is logged and alerted, the actor
  carries on; Telegram runs in its own task behind a bounded outbox (`TelegramSender`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, assert_never

import msgspec
import trio

from futures_actor.actors.health import write_json_atomic
from futures_actor.actors.messages import EntryFilled, KillSwitch, SafeModeChanged, TradeClosed
from futures_actor.actors.scheduler import Job, ScheduledTick
from futures_actor.actors.telegram import TelegramSender
from futures_actor.core.report import (
    AccountSnapshot,
    DailyReport,
    build_daily_report,
    render_report_text,
    report_file_name,
)
from futures_actor.logs import get_logger

__all__ = ["REPORTER_INBOX_SIZE", "Alert", "Reporter", "ReporterMsg"]

REPORTER_INBOX_SIZE = 64
_MS_PER_S = 1000


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """An operator-facing alert from any actor."""

    kind: str
    text: str
    level: Literal["info", "warning", "error"] = "warning"
    symbol: str | None = None


ReporterMsg = ScheduledTick | Alert | SafeModeChanged | KillSwitch | TradeClosed | EntryFilled


class Reporter:
    def __init__(
        self,
        *,
        mode: str,
        log_dir: Path,
        load_records: Callable[[date], Iterable[Mapping[str, Any]]],
        account: Callable[[date], AccountSnapshot],
        telegram: TelegramSender | None = None,
        first_day: date | None = None,
    ) -> None:
        self._mode = mode
        self._first_day = first_day
        self._log_dir = Path(log_dir)
        self._load_records = load_records
        self._account = account
        self._telegram = telegram
        self._log = get_logger("reporter")

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[ReporterMsg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for msg in inbox:
            try:
                self._handle(msg)
            except Exception as exc:
                self._log.error("reporter_failed", message=type(msg).__name__, exc_info=exc)

    def handle(self, msg: ReporterMsg) -> None:
        """One message, synchronously (the trio loop above, or the replay runtime's reporter cell)."""
        self._handle(msg)

    def _handle(self, msg: ReporterMsg) -> None:
        match msg:
            case ScheduledTick(job=Job.DAILY_REPORT, slot_ms=slot_ms, missed=missed):
                last_day = datetime.fromtimestamp(slot_ms / _MS_PER_S, tz=UTC).date() - timedelta(days=1)
                for back in range(missed, -1, -1):
                    day = last_day - timedelta(days=back)
                    if self._first_day is not None and day < self._first_day:
                        self._log.info("daily_report_skipped", day=day.isoformat(), reason="before the run")
                        continue
                    self.daily_report(day)
            case ScheduledTick():
                return
            case Alert(kind=kind, text=text, level=level, symbol=symbol):
                self._alert(kind, text, level=level, symbol=symbol)
            case SafeModeChanged(on=on, reasons=reasons):
                if on:
                    self._alert("SAFE_MODE_ON", f"Safe mode ON: {', '.join(reasons)}", level="error")
                else:
                    self._alert("SAFE_MODE_OFF", "Safe mode OFF: healthy again", level="warning")
            case KillSwitch(reason=reason):
                self._alert("KILL_SWITCH", f"Kill switch engaged ({reason})", level="error")
            case EntryFilled(final=final) if not final:
                return
            case EntryFilled(symbol=symbol, side=side, filled_qty=qty, avg_price=price, stop_price=stop):
                self._alert(
                    "POSITION_OPENED",
                    f"Opened {side.value} {symbol} qty {qty} @ {price}, stop {stop}",
                    level="info",
                    symbol=symbol,
                )
            case TradeClosed(symbol=symbol, realized_pnl_usd=pnl, record=record):
                reason = record.get("result", {}).get("reason", "?") if isinstance(record, dict) else "?"
                self._alert(
                    "POSITION_CLOSED",
                    f"Closed {symbol} ({reason}): PnL {pnl:+.2f} USDT",
                    level="info",
                    symbol=symbol,
                )
            case _:
                assert_never(msg)

    def daily_report(self, day: date) -> DailyReport | None:
        """Build, write and send the report of `day`; None (logged and alerted) if it failed."""
        try:
            report = build_daily_report(day, list(self._load_records(day)), self._account(day))
            self._log_dir.mkdir(parents=True, exist_ok=True)
            path = self._log_dir / report_file_name(day)
            write_json_atomic(path, {**msgspec.to_builtins(report), "mode": self._mode}, fsync=True)
        except Exception as exc:
            self._log.error("daily_report_failed", day=day.isoformat(), exc_info=exc)
            self._alert(
                "ERROR", f"Daily report {day.isoformat()} failed: {type(exc).__name__}", level="error"
            )
            return None
        if report.problems:
            self._log.error(
                "daily_report_bad_records",
                day=report.day,
                problems=[msgspec.to_builtins(p) for p in report.problems],
            )
        self._log.info("daily_report", path=str(path), **msgspec.to_builtins(report))
        if self._telegram is not None:
            self._telegram.offer(render_report_text(report, mode=self._mode))
        return report

    def _alert(self, kind: str, text: str, *, level: str, symbol: str | None = None) -> None:
        log_method = {"info": self._log.info, "warning": self._log.warning}.get(level, self._log.error)
        log_method("alert", kind=kind, text=text, symbol=symbol)
        if self._telegram is not None:
            self._telegram.offer(f"[{self._mode}] {text}")

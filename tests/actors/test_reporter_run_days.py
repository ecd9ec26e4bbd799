"""Issue 13 review #2, #3: a daily report only for a day the run covered, and it names the run's mode."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from futures_actor.actors.reporter import Reporter
from futures_actor.actors.scheduler import Job, ScheduledTick
from futures_actor.core.report import AccountSnapshot

ACCOUNT = AccountSnapshot(
    equity_usd=10_000.0,
    unrealized_pnl_usd=0.0,
    day_start_equity_usd=10_000.0,
    peak_equity_usd=10_000.0,
    open_risk_usd=0.0,
    open_positions=0,
)


def at_0005(day: str) -> int:
    return int(datetime.fromisoformat(f"{day}T00:05:00+00:00").astimezone(UTC).timestamp() * 1000)


def tick(day: str, missed: int = 0) -> ScheduledTick:
    return ScheduledTick(job=Job.DAILY_REPORT, slot_ms=at_0005(day), fired_ms=at_0005(day), missed=missed)


def reports(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("daily-report-*.json"))


def test_no_report_for_a_day_before_the_run(tmp_path: Path) -> None:
    """A replay starting 2025-01-08 00:00: the 00:05 tick is for 01-07, which the run never saw."""
    reporter = Reporter(
        mode="REPLAY",
        log_dir=tmp_path,
        load_records=lambda day: [],
        account=lambda day: ACCOUNT,
        first_day=date(2025, 1, 8),
    )
    reporter._handle(tick("2025-01-08"))
    assert reports(tmp_path) == []
    reporter._handle(tick("2025-01-09"))
    assert reports(tmp_path) == ["daily-report-2025-01-08.json"]
    # Missed slots are caught up, but never before the first day.
    reporter._handle(tick("2025-01-12", missed=5))
    assert reports(tmp_path) == [f"daily-report-2025-01-{d:02d}.json" for d in (8, 9, 10, 11)]


def test_the_report_names_the_run_mode(tmp_path: Path) -> None:
    reporter = Reporter(
        mode="REPLAY", log_dir=tmp_path, load_records=lambda day: [], account=lambda day: ACCOUNT
    )
    assert reporter.daily_report(date(2025, 1, 8)) is not None
    body = json.loads((tmp_path / "daily-report-2025-01-08.json").read_text())
    assert body["mode"] == "REPLAY"


def test_without_a_first_day_every_day_is_reported(tmp_path: Path) -> None:
    """Live keeps reporting yesterday after a restart (the bot ran then, in its previous process)."""
    reporter = Reporter(
        mode="PAPER_LIVE", log_dir=tmp_path, load_records=lambda day: [], account=lambda day: ACCOUNT
    )
    reporter._handle(tick("2025-01-08"))
    assert reports(tmp_path) == ["daily-report-2025-01-07.json"]
    assert json.loads((tmp_path / "daily-report-2025-01-07.json").read_text())["mode"] == "PAPER_LIVE"

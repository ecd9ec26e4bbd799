"""The pure daily-report builder (core/report.py)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import pytest

from futures_actor.core.report import (
    AccountSnapshot,
    ReportInputError,
    build_daily_report,
    render_ineligible,
    render_report_text,
    report_file_name,
)

DAY = date(2025, 3, 4)
ACCOUNT = AccountSnapshot(
    equity_usd=10_050.0,
    unrealized_pnl_usd=25.0,
    day_start_equity_usd=10_000.0,
    peak_equity_usd=10_200.0,
    open_risk_usd=100.0,
    open_positions=1,
)


def record(
    n: int,
    *,
    close: str,
    pnl: float,
    r: float,
    fees: float = 1.0,
    funding: float = -0.5,
    filled: float = 1.0,
    reason: str = "TP",
) -> dict[str, Any]:
    return {
        "trade_id": str(uuid.UUID(int=n)),
        "timestamp_open": "2025-03-04T00:00:00.000Z",
        "timestamp_close": close,
        "mode": "PAPER_LIVE",
        "symbol": "BTCUSDT",
        "strategy": "trend_pullback",
        "regime": "TREND",
        "direction": "LONG",
        "confidence_score": 0.7,
        "entry_order": {
            "client_order_id": "x",
            "type": "LIMIT",
            "requested_price": 1.0,
            "filled_avg_price": 1.0,
            "filled_qty": filled,
            "status": "FILLED",
        },
        "risk": {
            "equity_usd": 10_000.0,
            "risk_pct": 0.01,
            "risk_usd": 100.0,
            "stop_pct": 0.01,
            "stop_price": 0.99,
            "take_profit_price": 1.015,
            "leverage": 2.0,
            "notional_usd": 1.0,
            "margin_used_usd": 0.5,
        },
        "costs": {"fees_usd": fees, "funding_usd": funding, "slippage_pct": 0.0},
        "result": {"exit_price": 1.0, "pnl_usd": pnl, "pnl_r_multiple": r, "reason": reason},
        "portfolio": {
            "open_positions_count": 1,
            "open_risk_pct": 0.01,
            "correlation_bucket": "a",
            "bucket_corr_max": 0.1,
        },
    }


def test_seed_schema_fields_are_what_the_test_records_use() -> None:
    schema = json.loads(
        (Path(__file__).resolve().parents[2] / "spec" / "seed-data" / "LOG_SCHEMA.json").read_text()
    )
    rec = record(1, close="2025-03-04T01:00:00.000Z", pnl=1.0, r=0.1)
    assert set(schema) == set(rec)
    for key, sub in schema.items():
        if isinstance(sub, dict):
            assert set(sub) == set(rec[key])


class TestFigures:
    """Realized, win rate, expectancy, fees, funding, drawdowns over the day's trades."""

    def test_figures(self) -> None:
        records = [
            record(1, close="2025-03-04T01:00:00.000Z", pnl=150.0, r=1.5, fees=2.0, funding=-1.0),
            record(2, close="2025-03-04T02:00:00.000Z", pnl=-100.0, r=-1.0, fees=1.5, funding=0.5),
            record(3, close="2025-03-04T23:59:59.999Z", pnl=-50.0, r=-0.5, fees=1.0, funding=0.0),
            record(4, close="2025-03-05T00:00:00.000Z", pnl=999.0, r=9.0),  # next day: ignored
            record(5, close="2025-03-03T23:00:00.000Z", pnl=999.0, r=9.0),  # previous day: ignored
            record(6, close="2025-03-04T05:00:00.000Z", pnl=0.0, r=0.0, filled=0.0, reason="TIMEOUT"),
        ]
        rep = build_daily_report(DAY, records, ACCOUNT)
        assert rep.day == "2025-03-04"
        assert rep.trade_count == 3
        assert rep.wins == 1
        assert rep.losses == 2
        assert rep.realized_pnl_usd == pytest.approx(0.0)
        assert rep.win_rate == pytest.approx(1 / 3)
        assert rep.expectancy_r == pytest.approx(0.0)
        assert rep.fees_usd == pytest.approx(4.5)
        assert rep.funding_usd == pytest.approx(-0.5)
        assert rep.unfilled_entries == 1
        # Realized curve 10000 -> 10150 -> 10050 -> 10000: deepest fall 150 from 10150.
        assert rep.max_intraday_drawdown_pct == pytest.approx(150 / 10_150)
        assert rep.drawdown_pct == pytest.approx(150 / 10_200)
        assert rep.day_pnl_pct == pytest.approx(0.005)
        assert rep.open_risk_pct == pytest.approx(100 / 10_050)
        assert rep.unrealized_pnl_usd == 25.0
        assert rep.equity_usd == 10_050.0
        assert rep.trade_ids == tuple(str(uuid.UUID(int=n)) for n in (1, 2, 3))
        assert rep.problems == ()

    def test_empty_day(self) -> None:
        rep = build_daily_report(DAY, [], ACCOUNT)
        assert rep.trade_count == 0
        assert rep.win_rate == 0.0
        assert rep.expectancy_r == 0.0
        assert rep.max_intraday_drawdown_pct == 0.0

    def test_file_name(self) -> None:
        assert report_file_name(DAY) == "daily-report-2025-03-04.json"

    def test_text_mentions_key_figures(self) -> None:
        rep = build_daily_report(
            DAY, [record(1, close="2025-03-04T01:00:00.000Z", pnl=150.0, r=1.5)], ACCOUNT
        )
        text = render_report_text(rep, mode="PAPER_LIVE")
        assert "2025-03-04" in text
        assert "Trades: 1" in text
        assert "+1.50R" in text
        assert "PAPER_LIVE" in text


class TestBadInput:
    """Bad records are listed, never dropped silently; a bad account is refused by field."""

    def test_malformed_records_are_listed(self) -> None:
        bad = record(7, close="2025-03-04T01:00:00.000Z", pnl=1.0, r=0.1)
        bad["result"] = copy.deepcopy(bad["result"]) | {"pnl_usd": "lots"}
        no_ts = record(8, close="yesterday", pnl=1.0, r=0.1)
        dup = record(9, close="2025-03-04T03:00:00.000Z", pnl=1.0, r=0.1)
        rep = build_daily_report(DAY, [bad, no_ts, dup, dup, "junk"], ACCOUNT)  # type: ignore[list-item]
        assert rep.trade_count == 1
        fields = sorted(p.field for p in rep.problems)
        assert fields == ["<record>", "result.pnl_usd", "timestamp_close", "trade_id"]

    def test_non_utc_timestamp_is_a_problem(self) -> None:
        rec = record(1, close="2025-03-04T01:00:00+02:00", pnl=1.0, r=0.1)
        rep = build_daily_report(DAY, [rec], ACCOUNT)
        assert rep.problems[0].field == "timestamp_close"

    def test_bad_account(self) -> None:
        bad = AccountSnapshot(
            equity_usd=0.0,
            unrealized_pnl_usd=0.0,
            day_start_equity_usd=1.0,
            peak_equity_usd=1.0,
            open_risk_usd=0.0,
            open_positions=0,
        )
        with pytest.raises(ReportInputError, match=r"account\.equity_usd"):
            build_daily_report(DAY, [], bad)


class TestDayPnlFromMidnightEquities:
    """Issue 10 #5: the day's PnL is the equity at 00:00 UTC after the day over the one at 00:00 before."""

    def test_uses_the_day_end_equity(self) -> None:
        account = AccountSnapshot(
            equity_usd=10_300.0,  # at 00:05 of the next day
            unrealized_pnl_usd=0.0,
            day_start_equity_usd=10_000.0,
            day_end_equity_usd=10_162.06,
            peak_equity_usd=10_300.0,
            open_risk_usd=0.0,
            open_positions=0,
        )
        report = build_daily_report(DAY, [], account)
        assert report.day_pnl_pct == pytest.approx(0.016206)
        assert report.day_end_equity_usd == 10_162.06
        assert "+1.62 % on the day" in render_report_text(report, mode="PAPER_LIVE").replace("%", " %")

    def test_without_day_end_the_current_equity(self) -> None:
        assert build_daily_report(DAY, [], ACCOUNT).day_pnl_pct == pytest.approx(0.005)

    def test_bad_day_end_is_named(self) -> None:
        bad = AccountSnapshot(
            equity_usd=1.0,
            unrealized_pnl_usd=0.0,
            day_start_equity_usd=1.0,
            day_end_equity_usd=float("nan"),
            peak_equity_usd=1.0,
            open_risk_usd=0.0,
            open_positions=0,
        )
        with pytest.raises(ReportInputError, match="day_end_equity_usd"):
            build_daily_report(DAY, [], bad)


def test_report_names_ineligible_strategies_and_since_when() -> None:
    account = AccountSnapshot(
        equity_usd=10_000.0,
        unrealized_pnl_usd=0.0,
        day_start_equity_usd=10_000.0,
        peak_equity_usd=10_000.0,
        open_risk_usd=0.0,
        open_positions=0,
        ineligible_strategies={"trend_breakout": 1_747_094_400_000},
    )
    report = build_daily_report(DAY, [], account)
    assert report.ineligible_strategies == {"trend_breakout": "2025-05-13T00:00:00.000Z"}
    text = render_report_text(report, mode="PAPER_LIVE")
    assert "trend_breakout since 2025-05-13T00:00:00.000Z" in text
    assert "Ineligible strategies: none" in render_report_text(build_daily_report(DAY, [], ACCOUNT), mode="X")


def test_report_names_performance_blocked_strategies_and_since_when() -> None:
    """Issue 10 #6: the daily report says which strategies are performance-blocked (eligible, but their
    confidence is below the threshold; they trade on the shadow book) and since when, apart from the
    ineligible ones."""
    account = AccountSnapshot(
        equity_usd=10_000.0,
        unrealized_pnl_usd=0.0,
        day_start_equity_usd=10_000.0,
        peak_equity_usd=10_000.0,
        open_risk_usd=0.0,
        open_positions=0,
        ineligible_strategies={"trend_breakout": 1_747_094_400_000},
        performance_blocked_strategies={"range_mean_reversion": 1_747_180_800_000},
    )
    report = build_daily_report(DAY, [], account)
    assert report.performance_blocked_strategies == {"range_mean_reversion": "2025-05-14T00:00:00.000Z"}
    assert report.ineligible_strategies == {"trend_breakout": "2025-05-13T00:00:00.000Z"}
    text = render_report_text(report, mode="PAPER_LIVE")
    blocked_line = next(line for line in text.splitlines() if line.startswith("Performance-blocked"))
    assert "range_mean_reversion since 2025-05-14T00:00:00.000Z" in blocked_line
    assert "trend_breakout" not in blocked_line
    assert "Performance-blocked strategies: none" in render_report_text(
        build_daily_report(DAY, [], ACCOUNT), mode="X"
    )
    # The JSON form keeps every earlier field and adds this one.
    data = json.loads(msgspec.json.encode(report))
    assert data["performance_blocked_strategies"] == {"range_mean_reversion": "2025-05-14T00:00:00.000Z"}
    assert data["ineligible_strategies"] == {"trend_breakout": "2025-05-13T00:00:00.000Z"}


def test_render_lockouts_for_the_replay_summary() -> None:
    text = render_ineligible({"trend_breakout": 1_747_094_400_000}, {"trend_pullback": 1_747_180_800_000})
    lines = text.splitlines()
    assert len(lines) == 2
    assert "trend_breakout since 2025-05-13T00:00:00.000Z" in lines[0]
    assert lines[1].startswith("Performance-blocked strategies")
    assert "trend_pullback since 2025-05-14T00:00:00.000Z" in lines[1]
    assert render_ineligible({}).splitlines() == [
        "Ineligible strategies: none",
        "Performance-blocked strategies: none",
    ]

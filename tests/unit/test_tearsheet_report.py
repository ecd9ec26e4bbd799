"""equity.csv, the log-directory reader and report.html on synthetic run directories."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from futures_actor.core.clock import WallClock
from futures_actor.tearsheet import write_report
from futures_actor.tearsheet.equity import (
    AccountView,
    EquityCsvError,
    EquityCsvWriter,
    EquitySampler,
    read_equity_csv,
)

H = 3_600_000
T0 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)


def iso(t: int) -> str:
    return datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def record(i: int, t_open: int, t_close: int, pnl: float, *, qty: float = 1.0, **kw: Any) -> dict[str, Any]:
    return {
        "trade_id": f"00000000-0000-4000-8000-{i:012d}",
        "timestamp_open": iso(t_open),
        "timestamp_close": iso(t_close),
        "mode": "PAPER_LIVE",
        "symbol": kw.get("symbol", "BTCUSDT"),
        "strategy": kw.get("strategy", "trend_breakout"),
        "regime": kw.get("regime", "TREND"),
        "direction": "LONG",
        "entry_order": {"filled_qty": qty, "filled_avg_price": 100.0},
        "risk": {"equity_usd": 1000.0},
        "costs": {"fees_usd": 1.0 if qty else 0.0, "funding_usd": 0.0},
        "result": {
            "exit_price": 101.0,
            "pnl_usd": pnl,
            "pnl_r_multiple": pnl / 10,
            "reason": kw.get("reason", "TP"),
        },
    }


def event(t: int, name: str, **fields: Any) -> str:
    body = {"timestamp": iso(t), "level": "info", "event": name, "actor": "x", "symbol": None, **fields}
    return json.dumps(body, separators=(",", ":"))


class _Clock(WallClock):
    def __init__(self, epoch_ms: int) -> None:
        self.epoch_ms = epoch_ms

    def now_ms(self) -> int:
        return self.epoch_ms + round(trio.current_time() * 1000)


class TestEquityCsv:
    def test_roundtrip_and_drawdown(self, tmp_path: Path) -> None:
        w = EquityCsvWriter(tmp_path / "equity.csv")
        for i, e in enumerate((1000.0, 1100.0, 990.0)):
            w.write(T0 + i * H, AccountView(equity_usd=e, open_risk_usd=5.0, open_positions=1), "period")
        assert (
            w.write(T0 + 3 * H, AccountView(equity_usd=None, open_risk_usd=0, open_positions=0), "end")
            is None
        )
        w.close()
        rows = read_equity_csv(tmp_path / "equity.csv")
        assert [r.equity_usd for r in rows] == [1000.0, 1100.0, 990.0]
        assert [r.drawdown_pct for r in rows] == pytest.approx([0.0, 0.0, 0.1])
        assert rows[0].time_ms == T0

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("a,b\n", "line 1: header"),
            (
                "time,equity_usd,drawdown_pct,open_risk_usd,open_positions,kind\n"
                "2025-01-01T00:00:00.000Z,abc,0,0,0,period\n",
                "line 2 column equity_usd: value 'abc'",
            ),
            (
                "time,equity_usd,drawdown_pct,open_risk_usd,open_positions,kind\nyesterday,1,0,0,0,period\n",
                "line 2 column time",
            ),
            (
                "time,equity_usd,drawdown_pct,open_risk_usd,open_positions,kind\n"
                "2025-01-01T00:00:00.000Z,1,0,0,0,often\n",
                "column kind: value 'often'",
            ),
        ],
    )
    def test_bad_file_names_line_and_column(self, tmp_path: Path, text: str, message: str) -> None:
        path = tmp_path / "equity.csv"
        path.write_text(text)
        with pytest.raises(EquityCsvError, match=re.escape(message)) as info:
            read_equity_csv(path)
        assert str(path) in str(info.value)

    async def test_sampler_hourly_and_after_each_close(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        clock = _Clock(T0 + 30 * 60_000)  # starts at 00:30
        equity = {"v": 1000.0}
        w = EquityCsvWriter(tmp_path / "equity.csv")
        sampler = EquitySampler(
            writer=w,
            view=lambda: AccountView(equity_usd=equity["v"], open_risk_usd=0.0, open_positions=0),
            clock=clock,
            every_ms=H,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sampler.run)
            await trio.sleep(45 * 60)  # 01:15
            equity["v"] = 1010.0
            sampler.trade_closed()
            await trio.sleep(2 * 3600)  # 03:15
            nursery.cancel_scope.cancel()
        sampler.finish()
        rows = read_equity_csv(tmp_path / "equity.csv")
        assert [(iso(r.time_ms)[11:19], r.kind, r.equity_usd) for r in rows] == [
            ("00:30:00", "start", 1000.0),
            ("01:00:00", "period", 1000.0),
            ("01:15:01", "close", 1010.0),
            ("02:00:00", "period", 1010.0),
            ("03:00:00", "period", 1010.0),
            ("03:15:00", "end", 1010.0),
        ]


def live_dir(tmp_path: Path) -> Path:
    """A live log directory: daily trades and events files, no equity.csv, no summary.json."""
    d = tmp_path / "logs"
    d.mkdir()
    day1 = [record(1, T0 + 1 * H, T0 + 3 * H, 20.0), record(2, T0 + 4 * H, T0 + 4 * H, 0.0, qty=0.0)]
    day3 = [record(3, T0 + 49 * H, T0 + 50 * H, -10.0, symbol="ETHUSDT", reason="SL")]
    (d / "trades-2025-01-01.jsonl").write_text("".join(json.dumps(r) + "\n" for r in day1))
    (d / "trades-2025-01-03.jsonl").write_text("".join(json.dumps(r) + "\n" for r in day3))
    (d / "trades.jsonl").symlink_to("trades-2025-01-03.jsonl")
    events = [
        event(T0, "system_started"),
        event(T0 + 10 * H, "risk_rejected", code="DAILY_STOP"),
        event(T0 + 11 * H, "risk_rejected", code="DAILY_STOP"),
        event(
            T0 + 20 * H, "selection_no_trade", code="INELIGIBLE", explanation="no eligible strategy: x (NEG)"
        ),
        event(T0 + 30 * H, "risk_safe_mode", on=True, reasons=["STALE_DATA"]),
        event(T0 + 32 * H, "risk_safe_mode", on=False, reasons=[]),
        event(T0 + 40 * H, "decision", regime="TREND"),
        event(T0 + 72 * H, "heartbeat"),
    ]
    (d / "events-2025-01-01.jsonl").write_text("\n".join(events[:5]) + "\n")
    (d / "events-2025-01-02.jsonl").write_text("\n".join(events[5:]) + "\n")
    (d / "daily-report-2025-01-01.json").write_text("{}")
    return d


class TestReport:
    def test_live_directory(self, tmp_path: Path) -> None:
        d = live_dir(tmp_path)
        result = write_report(d)
        page = (d / "report.html").read_text()
        assert result.path == d / "report.html"
        assert result.trades == 2
        m = result.metrics
        assert (m.trades, m.unfilled_entries) == (2, 1)
        assert m.net_pnl_usd == pytest.approx(10.0)
        # No equity.csv: rebuilt from the trades, from the first trade's equity at entry.
        assert m.start_equity_usd == pytest.approx(1000.0)
        assert m.end_equity_usd == pytest.approx(1010.0)
        assert "rebuilt from closed trades" in page
        # Periods without trading (>= 24 h): 03:00 day 1 to 01:00 day 3, and after the last close.
        assert "2025-01-01 03:00" in page
        assert "DAILY_STOP × 2" in page
        assert "no eligible strategy: x (NEG) × 1" in page
        assert "safe mode on × 1" in page
        # Trading blocks: the safe mode period and the daily stop day.
        assert re.search(r"safe mode</td><td>2025-01-02 06:00</td><td>2025-01-02 08:00", page)
        assert "entries refused on 2025-01-01 (DAILY_STOP)" in page
        assert 'href="daily-report-2025-01-01.json"' in page
        assert "ETHUSDT" in page
        assert result.problems == []
        # Self-contained: no external reference of any kind.
        assert not re.search(r"(src|href)=\"(https?:)?//", page)
        assert "@import" not in page

    def test_bad_and_missing_files_are_named_never_a_crash(self, tmp_path: Path) -> None:
        d = live_dir(tmp_path)
        with (d / "trades-2025-01-03.jsonl").open("a") as fh:
            fh.write("{not json\n[1,2]\n")
        (d / "equity.csv").write_text("nonsense\n")
        (d / "summary.json").write_text("{broken")
        result = write_report(d)
        text = "\n".join(result.problems)
        assert "trades-2025-01-03.jsonl line 2: not a JSON object" in text
        assert "trades-2025-01-03.jsonl line 3: not a JSON object" in text
        assert "equity.csv line 1: header" in text
        assert "summary.json: cannot be read as JSON" in text
        assert result.trades == 2
        page = (d / "report.html").read_text()
        assert "Some input could not be read" in page

    def test_records_with_wrong_types_do_not_crash(self, tmp_path: Path) -> None:
        d = tmp_path / "logs"
        d.mkdir()
        good = record(1, T0, T0 + H, 5.0)
        odd = [
            {"trade_id": "x1", "entry_order": "filled", "result": None, "costs": [1, 2]},
            {"trade_id": "x2", "entry_order": {"filled_qty": True}, "result": {"pnl_usd": "abc"}},
            {**record(3, T0, T0 + H, 1.0), "timestamp_close": "soon"},  # filled but no valid close time
            {**record(4, T0, T0 + H, 1.0), "result": {"pnl_usd": "1", "pnl_r_multiple": None, "reason": 7}},
        ]
        (d / "trades.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [good, *odd]))
        result = write_report(d)
        assert result.metrics.trades == 2  # the good one and the one with odd result fields
        assert result.metrics.unfilled_entries == 2
        assert any(
            "trade 00000000-0000-4000-8000-000000000003 has no valid open/close time" in p
            for p in result.problems
        )
        assert (d / "report.html").is_file()

    def test_empty_directory(self, tmp_path: Path) -> None:
        result = write_report(tmp_path)
        assert result.trades == 0
        assert any("no trades file" in p for p in result.problems)
        assert (tmp_path / "report.html").is_file()

    def test_html_in_data_is_escaped(self, tmp_path: Path) -> None:
        d = tmp_path / "logs"
        d.mkdir()
        r = record(1, T0, T0 + H, 5.0, strategy="<script>alert(1)</script>")
        (d / "trades.jsonl").write_text(json.dumps(r) + "\n")
        write_report(d)
        page = (d / "report.html").read_text()
        assert "<script>alert(1)" not in page
        assert "&lt;script&gt;alert(1)" in page

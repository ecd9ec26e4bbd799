"""Issue 13 (outside review) on a replay of the bundled sample: the run says REPLAY, reports cover only
the days replayed, and every drawdown figure is the same number.

- Mode: summary.json, the console summary, report.html and the daily reports name the run's mode
  REPLAY; the trade records keep LOG_SCHEMA's `PAPER_LIVE|LIVE` (a replay trades on the paper book).
- Daily reports: one for each UTC day the replay covered, none for the day before its first candle.
- Drawdown (`core.drawdown`): the fall of the equity curve of equity.csv (marked to market at every
  sample) from its running peak. summary.json, the console, report.html's card and chart, equity.csv's
  column and the daily reports all come from that one computation.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from futures_actor import cli
from futures_actor.core.drawdown import drawdown_series, max_drawdown
from futures_actor.state.log_schema import validate_trade_record

CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.example.json"
START, END = "2025-01-08", "2025-01-15"
SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT"
HOUR_MS = 3_600_000


def iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def day_ms(day: str) -> int:
    return iso_ms(f"{day}T00:00:00+00:00")


@pytest.fixture(scope="module")
def run(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("review")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(
            [
                "--paper",
                "--replay",
                str(sample_dir),
                "--config",
                str(CONFIG),
                "--log-dir",
                str(out / "logs"),
                "--state-dir",
                str(out / "state"),
                "--timerange",
                f"{START}:{END}",
                "--symbols",
                SYMBOLS,
            ]
        )
    assert code == 0, stderr.getvalue()
    d = out / "logs"
    with (d / "equity.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    reports = {
        p.name[len("daily-report-") : -len(".json")]: json.loads(p.read_text())
        for p in sorted(d.glob("daily-report-*.json"))
    }
    return {
        "out": stdout.getvalue(),
        "dir": d,
        "rows": rows,
        "reports": reports,
        "summary": json.loads((d / "summary.json").read_text()),
        "page": (d / "report.html").read_text(),
        "records": [json.loads(x) for x in (d / "trades.jsonl").read_text().splitlines() if x.strip()],
    }


def test_the_run_mode_is_replay(run: dict[str, Any]) -> None:
    assert run["summary"]["mode"] == "REPLAY"
    summary_text = run["out"].partition("replay summary")[2]
    assert summary_text.startswith(" (mode REPLAY)\n")
    assert "· mode REPLAY ·" in run["page"]
    assert "PAPER_LIVE" not in run["page"].partition("</h1>")[2].partition("</p>")[0]
    assert run["reports"]
    assert {r["mode"] for r in run["reports"].values()} == {"REPLAY"}
    # The trade records keep the log schema's values.
    assert run["records"]
    for r in run["records"]:
        assert r["mode"] == "PAPER_LIVE"
        assert validate_trade_record(r) == []


def test_daily_reports_only_for_the_days_replayed(run: dict[str, Any]) -> None:
    first, end = date.fromisoformat(START), date.fromisoformat(END)
    expected = [(first + timedelta(days=i)).isoformat() for i in range((end - first).days)]
    assert sorted(run["reports"]) == expected


def test_every_drawdown_figure_agrees(run: dict[str, Any]) -> None:
    rows = run["rows"]
    equity = [float(r["equity_usd"]) for r in rows]
    series = drawdown_series(equity)
    # equity.csv's column is the one computation (written from the unrounded equity: 1e-7).
    for r, dd in zip(rows, series, strict=True):
        assert float(r["drawdown_pct"]) == pytest.approx(dd, abs=1e-7)
    mdd = max_drawdown(equity)
    assert mdd > 0
    s = run["summary"]
    assert s["max_drawdown_pct"] == pytest.approx(mdd, abs=1e-9)
    assert s["metrics"]["max_drawdown"] == pytest.approx(mdd, abs=1e-9)
    assert max(float(r["drawdown_pct"]) for r in rows) == pytest.approx(mdd, abs=1e-7)
    assert f"max drawdown {mdd:.2%}" in run["out"]
    card = re.search(r"Max drawdown</div><div class=\"v[^\"]*\">([^<]+)<", run["page"])
    assert card is not None
    assert card.group(1) == f"{100 * mdd:.2f}%"
    found = re.search(r'<script type="application/json" id="equity-data">(.*?)</script>', run["page"], re.S)
    assert found is not None
    chart = json.loads(found.group(1).replace("<\\/", "</"))
    assert chart["d"] == pytest.approx(series, abs=1e-6)
    # Each daily report: the curve's drawdown at the day's end (the 00:00 sample), and the deepest
    # fall within the day measured from the day's start.
    times = [iso_ms(r["time"]) for r in rows]
    for day, report in run["reports"].items():
        end_ms = day_ms(day) + 24 * HOUR_MS
        at_end = max(i for i, t in enumerate(times) if t <= end_ms)
        assert report["drawdown_pct"] == pytest.approx(series[at_end], abs=1e-9), day
        at_start = max(i for i, t in enumerate(times) if t <= day_ms(day))
        inside = [e for t, e in zip(times, equity, strict=True) if day_ms(day) < t <= end_ms]
        expected = max_drawdown([equity[at_start], *inside])
        assert report["max_intraday_drawdown_pct"] == pytest.approx(expected, abs=1e-9), day


def test_equity_moves_with_open_positions_between_fills(run: dict[str, Any]) -> None:
    """Hourly samples while a position is open follow the market (marked to market), not only fills
    and funding: every pair of consecutive hourly rows with a position open differs (before: 6 of 33)."""
    rows = run["rows"]
    pairs = [
        (a, b)
        for a, b in itertools.pairwise(rows)
        if a["kind"] == b["kind"] == "period"
        and int(a["open_positions"]) > 0
        and int(b["open_positions"]) > 0
    ]
    assert len(pairs) >= 10
    assert all(a["equity_usd"] != b["equity_usd"] for a, b in pairs)

"""report.html in a real headless browser (Chromium from the Debian packages; `.ci/run` installs it).

The page is rendered from a synthetic run directory, opened from disk with every host name unresolvable
(so it cannot have fetched anything), and its DOM is dumped after the scripts ran: the chart script must
have marked `<body data-charts-drawn="2">` and plotted one point per equity.csv row in each chart.

Without Chromium the test is skipped on a developer machine; under CI (`CI=true`) it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from futures_actor.tearsheet import write_report
from futures_actor.tearsheet.equity import AccountView, EquityCsvWriter

pytestmark = pytest.mark.realclock

BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome")
BROWSER_TIMEOUT_SECONDS = 90
H = 3_600_000
T0 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
ROWS = 24 * 40 + 1  # 40 days, hourly


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    message = (
        f"no headless browser found (looked for {', '.join(BROWSERS)}); install it: apt-get install chromium"
    )
    if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
        pytest.fail(f"CI: {message} (.ci/run installs it)")
    pytest.skip(message)


def iso(t: int) -> str:
    return datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    writer = EquityCsvWriter(d / "equity.csv")
    equity = 10_000.0
    for i in range(ROWS):
        equity *= 1.0 + (0.004 if (i // 50) % 3 else -0.005)
        writer.write(
            T0 + i * H, AccountView(equity_usd=equity, open_risk_usd=25.0, open_positions=1), "period"
        )
    writer.close()
    records = []
    for k in range(12):
        t_open = T0 + k * 72 * H
        records.append(
            {
                "trade_id": f"00000000-0000-4000-8000-{k:012d}",
                "timestamp_open": iso(t_open),
                "timestamp_close": iso(t_open + 5 * H),
                "mode": "PAPER_LIVE",
                "symbol": ("BTCUSDT", "ETHUSDT")[k % 2],
                "strategy": "trend_breakout",
                "regime": "TREND",
                "direction": "LONG",
                "entry_order": {"filled_qty": 1.0, "filled_avg_price": 100.0},
                "costs": {"fees_usd": 1.5, "funding_usd": -0.2},
                "result": {
                    "exit_price": 101.0,
                    "pnl_usd": 12.0 - 3 * (k % 3),
                    "pnl_r_multiple": 0.5,
                    "reason": "TP",
                },
            }
        )
    (d / "trades.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return d


def dump_dom(browser: str, page: Path, profile: Path) -> str:
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any fetch would fail
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, f"{browser} exited {result.returncode}: {result.stderr[-2000:]}"
    return result.stdout


def test_the_charts_draw_in_headless_chromium(tmp_path: Path) -> None:
    browser = find_browser()
    d = run_dir(tmp_path)
    report = write_report(d)
    assert report.problems == []
    dom = dump_dom(browser, report.path, tmp_path / "profile")
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:500]
    assert 'data-charts-drawn="2"' in body.group(0), "the chart script did not finish drawing"
    for chart in ("equity-chart", "drawdown-chart"):
        svg = re.search(rf'<svg[^>]*id="{chart}"[^>]*>(.*?)</svg>', dom, re.S)
        assert svg is not None, f"no {chart} in the DOM"
        assert f'data-points="{ROWS}"' in svg.group(0)
        line = re.search(r'<polyline[^>]*points="([^"]+)"', svg.group(1))
        assert line is not None, f"{chart}: no polyline drawn"
        points = line.group(1).split()
        assert len(points) == ROWS
        xs = [float(p.split(",")[0]) for p in points]
        assert xs == sorted(xs), f"{chart}: points not in time order"
        assert len(re.findall(r"<text", svg.group(1))) >= 10, f"{chart}: axis labels missing"

"""A replay of the bundled sample into a run directory: every file there, and all of them agree.

`futures-actor --paper --replay data/sample --timerange ... --symbols ...` (in-process, through
`cli.main`): the run directory holds one trades.jsonl and one events.jsonl for the whole run, the daily
reports, equity.csv, summary.json and report.html; the summary, equity curve and page agree with the
trade records; `futures-actor report` renders the same page again from the directory.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from futures_actor import cli
from futures_actor.state.log_schema import validate_trade_record

CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.example.json"
START, END = "2025-01-06", "2025-01-16"
SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"


def ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.fixture(scope="module")
def run(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("run")
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
    return {"code": code, "out": stdout.getvalue(), "err": stderr.getvalue(), "dir": out / "logs"}


def records(log_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (log_dir / "trades.jsonl").read_text().splitlines() if line.strip()]


def test_the_run_directory(run: dict[str, Any]) -> None:
    assert run["code"] == 0, run["err"]
    d: Path = run["dir"]
    names = sorted(p.name for p in d.iterdir())
    for name in ("trades.jsonl", "events.jsonl", "equity.csv", "summary.json", "report.html"):
        assert name in names
        assert not (d / name).is_symlink()
    assert not [n for n in names if re.match(r"(trades|events)-\d{4}", n)], "a replay writes one file of each"
    assert any(n.startswith("daily-report-") for n in names)


def test_stdout_is_progress_then_summary(run: dict[str, Any]) -> None:
    out: str = run["out"]
    head, sep, _tail = out.partition("replay summary")
    assert sep
    progress = head.splitlines()
    assert len(progress) >= 10
    assert all(line.startswith("replay ") and " eta " in line for line in progress)
    assert progress[-1].startswith("replay 100.0%")
    assert "{" not in out


def test_everything_agrees_with_trades_jsonl(run: dict[str, Any]) -> None:
    d: Path = run["dir"]
    recs = records(d)
    assert recs, "no trade record in ten days of three symbols"
    for r in recs:
        assert validate_trade_record(r) == []
        assert ms(START) <= iso_ms(r["timestamp_open"]) <= iso_ms(r["timestamp_close"])
        assert r["symbol"] in SYMBOLS.split(",")
    filled = [r for r in recs if r["entry_order"]["filled_qty"] > 0]
    assert filled
    # The sample ships funding: positions held over a funding time pay or receive it (BOT_SPEC §9).
    assert any(r["costs"]["funding_usd"] != 0 for r in filled), "no funding charged in the replay"

    summary = json.loads((d / "summary.json").read_text())
    assert summary["trade_records"] == len(recs)
    assert summary["trades"]["trades"] == len(filled)
    assert summary["unfilled_entries"] == len(recs) - len(filled)
    net = sum(r["result"]["pnl_usd"] for r in filled)
    assert summary["trades"]["pnl_usd"] == pytest.approx(net)
    assert sum(g["trades"] for g in summary["by_symbol"].values()) == len(filled)
    assert summary["metrics"]["trades"] == len(filled)
    assert summary["metrics"]["net_pnl_usd"] == pytest.approx(net)
    assert summary["timerange"] == {"start": f"{START}T00:00:00.000Z", "end": f"{END}T00:00:00.000Z"}

    # The progress line and the summary count the same trades.
    last = run["out"].partition("replay summary")[0].splitlines()[-1]
    assert f"trades {len(filled)}  entries not filled {len(recs) - len(filled)}" in last

    with (d / "equity.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    times = [iso_ms(r["time"]) for r in rows]
    assert times == sorted(times)
    assert rows[0]["kind"] == "start"
    assert float(rows[0]["equity_usd"]) == pytest.approx(summary["initial_balance_usdt"])
    assert rows[-1]["kind"] == "end"
    assert sum(1 for r in rows if r["kind"] == "close") == len(recs)
    assert ms(START) <= times[0]
    assert times[-1] <= ms(END) + 3_600_000
    hourly = [t for t, r in zip(times, rows, strict=True) if r["kind"] == "period"]
    assert all(t % 3_600_000 == 0 for t in hourly)
    if int(rows[-1]["open_positions"]) == 0:
        # Flat at the end: the account equity is the start plus every trade's net PnL.
        assert float(rows[-1]["equity_usd"]) == pytest.approx(summary["initial_balance_usdt"] + net, abs=0.01)
    peak = 0.0
    for r in rows:
        e = float(r["equity_usd"])
        peak = max(peak, e)
        assert float(r["drawdown_pct"]) == pytest.approx((peak - e) / peak, abs=1e-7)

    page = (d / "report.html").read_text()
    assert f"<h2>Trades ({len(filled)}, and {len(recs) - len(filled)} entries not filled)</h2>" in page
    # Every record is in the trade list, in close order.
    assert re.findall(r'<tr data-id="([^"]+)"', page) == [
        r["trade_id"] for r in sorted(recs, key=lambda r: (r["timestamp_close"], r["trade_id"]))
    ]
    assert "equity: equity.csv" in page


def test_report_command_renders_the_same_page(run: dict[str, Any], tmp_path: Path) -> None:
    d: Path = run["dir"]
    again = tmp_path / "again.html"
    assert cli.main(["report", str(d), "--config", str(CONFIG), "--output", str(again)]) == 0

    def without_stamp(text: str) -> str:
        return re.sub(r"generated [^·<]+ by", "generated X by", text)

    assert without_stamp(again.read_text()) == without_stamp((d / "report.html").read_text())


def test_unknown_symbol_is_refused(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "--paper",
            "--replay",
            str(sample_dir),
            "--config",
            str(CONFIG),
            "--log-dir",
            str(tmp_path / "logs"),
            "--state-dir",
            str(tmp_path / "state"),
            "--symbols",
            "BTCUSDT,DOGEUSDT",
        ]
    )
    assert code == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "--symbols: DOGEUSDT not in" in err
    assert "BTCUSDT, ETHUSDT, SOLUSDT, XRPUSDT" in err

"""Parity is the test (issue 12): the same recorded input through both runtimes writes the same files.

Two replays of the same 30-day, 4-symbol window of the bundled sample (`data/sample/`), through the
command line as a user runs them, differing only in `replay.runtime`: "trio" (the actor system under
trio's mock clock, the runtime live and paper trading use) and "events" (the discrete-event loop of
`runtime/replay.py`). trades.jsonl must be byte-identical, and so must the shadow book's trades,
equity.csv and every daily report. A runtime that diverges on one decision, one fill or one timestamp
fails here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from futures_actor.cli import EXIT_OK, main
from futures_actor.logs import reset_logging

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "config.example.json"
WINDOW = "2025-01-01:2025-01-31"
MIN_TRADES = 20  # the window must exercise the system: entries, stops, trails, shadow trades


def _replay(runtime: str, tmp: Path, sample_dir: Path) -> Path:
    cfg = json.loads(EXAMPLE.read_text())
    cfg.setdefault("replay", {})["runtime"] = runtime
    cfg_path = tmp / f"config-{runtime}.json"
    cfg_path.write_text(json.dumps(cfg))
    run_dir = tmp / runtime
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(
            [
                "--config",
                str(cfg_path),
                "--paper",
                "--replay",
                str(sample_dir),
                "--timerange",
                WINDOW,
                "--log-dir",
                str(run_dir / "logs"),
                "--state-dir",
                str(run_dir / "state"),
                "--quiet",
            ],
            stdout=out,
            stderr=err,
        )
    finally:
        reset_logging()
    assert code == EXIT_OK, err.getvalue()
    return run_dir / "logs"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("parity")
    return _replay("trio", tmp, sample_dir), _replay("events", tmp, sample_dir)


def _files(logs: Path) -> dict[str, bytes]:
    names = ["trades.jsonl", "equity.csv", *sorted(p.name for p in logs.glob("daily-report-*.json"))]
    out = {name: (logs / name).read_bytes() for name in names}
    shadow = logs / "shadow"
    out["shadow"] = b"".join(p.read_bytes() for p in sorted(shadow.glob("trades-*.jsonl")))
    return out


def test_trade_logs_are_byte_identical(runs: tuple[Path, Path]) -> None:
    trio_logs, events_logs = runs
    trio_trades = (trio_logs / "trades.jsonl").read_bytes()
    records = [json.loads(line) for line in trio_trades.splitlines()]
    filled = [r for r in records if r["entry_order"]["filled_qty"] > 0]
    assert len(filled) >= MIN_TRADES
    assert {r["symbol"] for r in filled} >= {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"}
    assert (events_logs / "trades.jsonl").read_bytes() == trio_trades


def test_shadow_trades_equity_and_daily_reports_are_identical(runs: tuple[Path, Path]) -> None:
    trio_logs, events_logs = runs
    trio_files, events_files = _files(trio_logs), _files(events_logs)
    assert sorted(events_files) == sorted(trio_files)
    assert len([n for n in trio_files if n.startswith("daily-report-")]) >= 29
    assert trio_files["shadow"]  # the shadow book traded in this window
    for name, content in trio_files.items():
        assert events_files[name] == content, name


def test_summaries_differ_only_in_the_runtime_named(runs: tuple[Path, Path]) -> None:
    trio_logs, events_logs = runs
    trio_summary = json.loads((trio_logs / "summary.json").read_text())
    events_summary = json.loads((events_logs / "summary.json").read_text())
    for summary in (trio_summary, events_summary):
        summary.pop("config")
    assert trio_summary.pop("runtime") == "trio"
    assert events_summary.pop("runtime") == "events"
    assert events_summary == trio_summary

"""`python -m futures_actor --paper --replay DIR`: deterministic, with a summary (BOT_SPEC, ACCEPTANCE).

The command runs in-process through `futures_actor.cli.main` (the same code as the console script):
twice on the same recorded klines with different log and state directories. The trades file (one
`trades.jsonl` for the whole run) must be byte-identical and the printed summary must match the records
it summarises. stdout (not a terminal here) carries only progress lines and the summary.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from futures_actor import cli
from futures_actor.state.log_schema import validate_trade_record

from .harness import copy_real_klines

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
DAYS = 7
CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.example.json"


def _replay(
    replay_dir: Path, out_dir: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(
        [
            "--paper",
            "--replay",
            str(replay_dir),
            "--config",
            str(CONFIG),
            "--log-dir",
            str(out_dir / "logs"),
            "--state-dir",
            str(out_dir / "state"),
            *extra,
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _trade_files(log_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(log_dir.glob("trades*.jsonl"))}


def _records(log_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for blob in _trade_files(log_dir).values():
        rows.extend(json.loads(line) for line in blob.decode("utf-8").splitlines() if line.strip())
    return rows


def _summary_line(out: str, label: str) -> dict[str, float]:
    """The numbers of one `label  trades N  win rate W%  expectancy E R  pnl P  fees F  funding U` line."""
    for line in out.splitlines():
        m = re.match(
            rf"\s*{re.escape(label)}\s+trades\s+(\d+)\s+win rate\s+([\d.]+)%\s+expectancy\s+([-+\d.]+) R"
            r"\s+pnl\s+([-+\d.]+)\s+fees\s+([\d.]+)\s+funding\s+([-+\d.]+)\s*$",
            line,
        )
        if m:
            keys = ("trades", "win_rate", "expectancy", "pnl", "fees", "funding")
            return dict(zip(keys, map(float, m.groups()), strict=True))
    raise AssertionError(f"no summary line {label!r} in:\n{out}")


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("klines")
    for s in SYMBOLS:
        copy_real_klines(directory, s, days=DAYS)
    return directory


def test_replay_twice_gives_identical_trades_and_a_summary(
    replay_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code1, out1, _ = _replay(replay_dir, tmp_path / "run1", capsys)
    code2, out2, _ = _replay(replay_dir, tmp_path / "run2", capsys)
    assert (code1, code2) == (0, 0)

    files1, files2 = _trade_files(tmp_path / "run1" / "logs"), _trade_files(tmp_path / "run2" / "logs")
    assert list(files1) == ["trades.jsonl"], "one trades file for the whole run"
    assert files1["trades.jsonl"], "the replay produced no trade record: determinism would be vacuous"
    assert files1 == files2  # byte for byte
    # stdout is not a terminal: only progress lines, then the summary and the run directory lines.
    head, _, tail = out1.partition("replay summary")
    assert head, "no progress line"
    assert all(
        re.match(r"replay +\d+\.\d%  \d{4}-\d\d-\d\d \d\d:\d\d  trades \d+", ln) for ln in head.splitlines()
    )
    assert "{" not in out1, "an event line reached stdout"
    assert "run directory:" in tail
    # The summary is the same too (only the log directory in its last line differs).
    assert "replay summary" in out1
    summary1 = out1[out1.index("replay summary") :].replace(str(tmp_path / "run1"), "X")
    summary2 = out2[out2.index("replay summary") :].replace(str(tmp_path / "run2"), "X")
    assert summary1 == summary2

    records = _records(tmp_path / "run1" / "logs")
    ids = [r["trade_id"] for r in records]
    assert len(ids) == len(set(ids))
    for r in records:
        assert validate_trade_record(r) == [], r["trade_id"]

    # The summary: trades, win rate, expectancy, drawdown, fees, funding, by strategy and by regime.
    assert "max drawdown" in out1
    filled = [r for r in records if r["entry_order"]["filled_qty"] > 0]
    assert filled, "no filled trade in a week of three symbols"
    total = _summary_line(out1, "all")
    assert total["trades"] == len(filled)
    wins = sum(1 for r in filled if r["result"]["pnl_r_multiple"] > 0)
    assert total["win_rate"] == pytest.approx(100.0 * wins / len(filled), abs=0.051)
    assert total["pnl"] == pytest.approx(sum(r["result"]["pnl_usd"] for r in filled), abs=0.006)
    assert total["fees"] == pytest.approx(sum(r["costs"]["fees_usd"] for r in filled), abs=0.006)
    assert f"entries not filled {len(records) - len(filled)}" in out1
    strategies = sorted({r["strategy"] for r in filled})
    regimes = sorted({r["regime"] for r in filled})
    by_strategy = out1.split("by strategy:")[1].split("by regime:")[0]
    by_regime = out1.split("by regime:")[1]
    assert sum(_summary_line(by_strategy, s)["trades"] for s in strategies) == len(filled)
    assert sum(_summary_line(by_regime, g)["trades"] for g in regimes) == len(filled)
    # The last progress line counts trades the way the summary does.
    last = head.splitlines()[-1]
    assert f"trades {len(filled)}  entries not filled {len(records) - len(filled)}" in last


def test_replay_refuses_a_directory_without_klines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = _replay(empty, tmp_path / "run", capsys)
    assert code == cli.EXIT_CONFIG
    assert "no SYMBOL-5m.csv.gz" in err
    assert "replay summary" not in out

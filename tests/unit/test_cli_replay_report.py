"""Command line: the replay options (--timerange, --symbols) and the `report` subcommand."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import futures_actor.live_run as live_run_module
import futures_actor.replay_run as replay_run_module
from futures_actor.cli import (
    EXIT_CONFIG,
    EXIT_OK,
    RunOptions,
    UsageError,
    main,
    parse_symbols,
    parse_timerange,
)
from futures_actor.logs import reset_logging

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "config.example.json"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    yield
    reset_logging()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def day_ms(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[RunOptions]:
    seen: list[RunOptions] = []

    async def fake_run_bot(options: RunOptions) -> int:
        seen.append(options)
        return EXIT_OK

    monkeypatch.setattr(replay_run_module, "run_replay", fake_run_bot)
    monkeypatch.setattr(live_run_module, "run_live", fake_run_bot)
    return seen


class TestTimerange:
    def test_both_sides(self) -> None:
        assert parse_timerange("2025-01-01:2025-03-01") == (day_ms(2025, 1, 1), day_ms(2025, 3, 1))

    def test_open_sides(self) -> None:
        assert parse_timerange("2025-02-01:") == (day_ms(2025, 2, 1), None)
        assert parse_timerange(":2025-02-01") == (None, day_ms(2025, 2, 1))

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("2025-01-01", "expected START:END"),
            (":", "give a start, an end or both"),
            ("2025-13-01:", "start '2025-13-01' is not a date YYYY-MM-DD"),
            ("2025-01-01:tomorrow", "end 'tomorrow' is not a date"),
            ("2025-03-01:2025-01-01", "the end must be after the start"),
        ],
    )
    def test_bad(self, text: str, message: str) -> None:
        with pytest.raises(UsageError, match=message):
            parse_timerange(text)


class TestSymbols:
    def test_list(self) -> None:
        assert parse_symbols("btcusdt, ETHUSDT,BTCUSDT") == ("BTCUSDT", "ETHUSDT")

    @pytest.mark.parametrize("text", ["", ",", "BTC-USDT", "BTCUSDT,E$"])
    def test_bad(self, text: str) -> None:
        with pytest.raises(UsageError, match="--symbols"):
            parse_symbols(text)


class TestReplayOptions:
    def test_passed_to_the_bot(self, tmp_path: Path, captured: list[RunOptions]) -> None:
        code, _, err = run(
            "--paper",
            "--replay",
            str(tmp_path),
            "--config",
            str(EXAMPLE),
            "--timerange",
            "2025-01-01:2025-03-01",
            "--symbols",
            "BTCUSDT,ETHUSDT",
        )
        assert code == EXIT_OK, err
        (options,) = captured
        assert (options.replay_start_ms, options.replay_end_ms) == (day_ms(2025, 1, 1), day_ms(2025, 3, 1))
        assert options.replay_symbols == ("BTCUSDT", "ETHUSDT")

    def test_a_replay_gets_its_own_run_directory(self, tmp_path: Path, captured: list[RunOptions]) -> None:
        assert run("--paper", "--replay", str(tmp_path), "--config", str(EXAMPLE))[0] == EXIT_OK
        assert run("--paper", "--config", str(EXAMPLE))[0] == EXIT_OK
        replay, live = captured
        assert replay.log_dir.parent == live.log_dir
        assert replay.log_dir.name.startswith("replay-")
        assert live.log_dir.name == "logs"

    @pytest.mark.parametrize("flag", [("--timerange", "2025-01-01:"), ("--symbols", "BTCUSDT")])
    def test_replay_only(self, flag: tuple[str, str], captured: list[RunOptions]) -> None:
        code, _, err = run("--paper", "--config", str(EXAMPLE), *flag)
        assert code == EXIT_CONFIG
        assert f"{flag[0]} applies to a replay only" in err
        assert captured == []

    def test_bad_timerange_is_a_usage_error(self, tmp_path: Path, captured: list[RunOptions]) -> None:
        code, _, err = run("--paper", "--replay", str(tmp_path), "--config", str(EXAMPLE), "--timerange", "x")
        assert code == EXIT_CONFIG
        assert "--timerange 'x'" in err


class TestReportCommand:
    def test_renders_a_directory(self, tmp_path: Path) -> None:
        logs = tmp_path / "logs"
        logs.mkdir()
        code, out, err = run("report", str(logs), "--config", str(EXAMPLE))
        assert code == EXIT_OK
        assert (logs / "report.html").is_file()
        assert out.startswith(f"report: {logs / 'report.html'}")
        assert "no trades file" in err  # named, not fatal

    def test_output_elsewhere(self, tmp_path: Path) -> None:
        logs = tmp_path / "logs"
        logs.mkdir()
        (logs / "equity.csv").write_text("bad\n")
        code, _, err = run("report", str(logs), "--output", str(tmp_path / "r.html"))
        assert code == EXIT_OK
        assert (tmp_path / "r.html").is_file()
        assert "equity.csv line 1" in err

    def test_missing_directory(self, tmp_path: Path) -> None:
        code, _, err = run("report", str(tmp_path / "nope"))
        assert code == EXIT_CONFIG
        assert "nope: not a directory" in err

    def test_bad_config_is_refused(self, tmp_path: Path) -> None:
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps({"report": {"idle_period_min_hours": -1}}))
        code, _, err = run("report", str(tmp_path), "--config", str(cfg))
        assert code == EXIT_CONFIG
        assert "report.idle_period_min_hours" in err

"""Event logging: events.jsonl lines, console output, secret redaction, rotation, injected clock."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from futures_actor.core.clock import ManualWallClock
from futures_actor.core.config import LoggingConfig
from futures_actor.logs import configure_logging, get_logger, redact, reset_logging

T0 = 1_764_028_799_000  # 2025-11-24T23:59:59.000Z
DAY_MS = 86_400_000
SECRET = "sk-LIVE-9f8e7d6c5b4a3210"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    reset_logging()


def _fail(exc: Exception) -> None:
    raise exc


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class _TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestEventLines:
    """One JSON object per line with timestamp, level, event, actor, symbol, then the fields."""

    def test_line_shape(self, tmp_path: Path) -> None:
        clock = ManualWallClock(T0)
        configure_logging(cfg=LoggingConfig(), log_dir=tmp_path, clock=clock, console="quiet")
        get_logger("risk", symbol="BTCUSDT").info("signal_rejected", reason="DAILY_STOP", pnl=-0.041)
        get_logger().warning("no_context")
        first, second = _lines(tmp_path / "events.jsonl")
        assert list(first) == ["timestamp", "level", "event", "actor", "symbol", "reason", "pnl"]
        assert first == {
            "timestamp": "2025-11-24T23:59:59.000Z",
            "level": "info",
            "event": "signal_rejected",
            "actor": "risk",
            "symbol": "BTCUSDT",
            "reason": "DAILY_STOP",
            "pnl": -0.041,
        }
        assert second["actor"] is None
        assert second["symbol"] is None
        assert second["level"] == "warning"

    def test_level_filter(self, tmp_path: Path) -> None:
        configure_logging(
            cfg=LoggingConfig(level="WARNING"), log_dir=tmp_path, clock=ManualWallClock(T0), console="quiet"
        )
        log = get_logger("x")
        log.debug("d")
        log.info("i")
        log.error("e")
        assert [line["event"] for line in _lines(tmp_path / "events.jsonl")] == ["e"]

    def test_non_finite_and_objects_stay_valid_json(self, tmp_path: Path) -> None:
        configure_logging(cfg=LoggingConfig(), log_dir=tmp_path, clock=ManualWallClock(T0), console="quiet")
        get_logger("x").info("odd", nan=float("nan"), path=Path("/a/b"), items=(1, 2))
        (line,) = _lines(tmp_path / "events.jsonl")
        assert (line["nan"], line["path"], line["items"]) == ("nan", "/a/b", [1, 2])

    def test_exception_is_logged_with_traceback(self, tmp_path: Path) -> None:
        configure_logging(cfg=LoggingConfig(), log_dir=tmp_path, clock=ManualWallClock(T0), console="quiet")
        try:
            _fail(ValueError("bad candle"))
        except ValueError:
            get_logger("market_data", symbol="ETHUSDT").exception("candle_rejected")
        (line,) = _lines(tmp_path / "events.jsonl")
        assert line["level"] == "error"
        assert "ValueError: bad candle" in line["exception"]

    async def test_timestamps_follow_the_mock_clock(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        class TrioWallClock:
            def now_ms(self) -> int:
                return T0 + int(trio.current_time() * 1000)

        configure_logging(cfg=LoggingConfig(), log_dir=tmp_path, clock=TrioWallClock(), console="quiet")
        log = get_logger("scheduler")
        log.info("before")
        await trio.sleep(3 * 3600)
        log.info("after")
        assert _names(tmp_path) == ["events-2025-11-24.jsonl", "events-2025-11-25.jsonl", "events.jsonl"]
        assert _lines(tmp_path / "events.jsonl")[0]["timestamp"] == "2025-11-25T02:59:59.000Z"


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class TestConsole:
    """Readable on a terminal, JSON otherwise, nothing when quiet."""

    def test_json_when_not_a_terminal(self, tmp_path: Path) -> None:
        stream = io.StringIO()
        configure_logging(cfg=LoggingConfig(), log_dir=None, clock=ManualWallClock(T0), stream=stream)
        get_logger("app").info("starting", mode="PAPER_LIVE")
        assert json.loads(stream.getvalue())["mode"] == "PAPER_LIVE"

    def test_pretty_on_a_terminal(self) -> None:
        stream = _TtyStream()
        configure_logging(cfg=LoggingConfig(), log_dir=None, clock=ManualWallClock(T0), stream=stream)
        get_logger("app").info("starting", mode="PAPER_LIVE")
        text = stream.getvalue()
        assert "starting" in text
        assert "mode" in text
        assert not text.lstrip().startswith("{")

    def test_quiet(self, tmp_path: Path) -> None:
        stream = io.StringIO()
        configure_logging(
            cfg=LoggingConfig(), log_dir=tmp_path, clock=ManualWallClock(T0), console="quiet", stream=stream
        )
        get_logger("app").info("starting")
        assert stream.getvalue() == ""
        assert len(_lines(tmp_path / "events.jsonl")) == 1


class TestRedaction:
    """A registered secret never reaches a log line, console or file, however it is smuggled in."""

    def _leak_everything(self) -> None:
        class Holder:
            def __repr__(self) -> str:
                return f"Holder(key={SECRET})"

        log = get_logger("binance", symbol="BTCUSDT")
        log.info(f"event with {SECRET}", plain=SECRET, nested={"a": [{"b": f"x{SECRET}y"}], SECRET: 1})
        log.warning("object", obj=Holder(), raw=SECRET.encode(), tup=(SECRET,))
        try:
            _fail(RuntimeError(f"signature failed for key {SECRET}"))
        except RuntimeError:
            log.exception("request_failed")

    @pytest.mark.parametrize("stream_type", [io.StringIO, _TtyStream])
    def test_secret_absent_everywhere(self, tmp_path: Path, stream_type: type[io.StringIO]) -> None:
        stream = stream_type()
        configure_logging(
            cfg=LoggingConfig(), log_dir=tmp_path, clock=ManualWallClock(T0), secrets=[SECRET], stream=stream
        )
        self._leak_everything()
        file_text = (tmp_path / "events.jsonl").read_text(encoding="utf-8")
        for text in (file_text, stream.getvalue()):
            assert SECRET not in text
            assert "***" in text
        lines = _lines(tmp_path / "events.jsonl")
        assert lines[0]["plain"] == "***"
        assert lines[0]["nested"] == {"a": [{"b": "x***y"}], "***": 1}
        assert lines[1]["obj"] == "Holder(key=***)"
        assert "RuntimeError: signature failed for key ***" in lines[2]["exception"]

    def test_without_registration_it_would_leak(self, tmp_path: Path) -> None:
        """The check above can fail: unregistered values are logged as given."""
        configure_logging(cfg=LoggingConfig(), log_dir=tmp_path, clock=ManualWallClock(T0), console="quiet")
        self._leak_everything()
        assert SECRET in (tmp_path / "events.jsonl").read_text(encoding="utf-8")

    def test_redact_prefers_longest(self, tmp_path: Path) -> None:
        configure_logging(
            cfg=LoggingConfig(),
            log_dir=None,
            console="quiet",
            clock=ManualWallClock(T0),
            secrets=["abc", "abcdef"],
        )
        assert redact("xabcdefy abc") == "x***y ***"


class TestRotation:
    """Daily files named by date, `events.jsonl` always points at today's, size rotation when configured."""

    def test_daily(self, tmp_path: Path) -> None:
        clock = ManualWallClock(T0)
        configure_logging(cfg=LoggingConfig(), log_dir=tmp_path, clock=clock, console="quiet")
        log = get_logger("x")
        log.info("day1")
        clock.advance(1000)
        log.info("day2")
        clock.advance(DAY_MS)
        log.info("day3")
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "events-2025-11-24.jsonl",
            "events-2025-11-25.jsonl",
            "events-2025-11-26.jsonl",
            "events.jsonl",
        ]
        assert os.readlink(tmp_path / "events.jsonl") == "events-2025-11-26.jsonl"
        assert [line["event"] for line in _lines(tmp_path / "events-2025-11-24.jsonl")] == ["day1"]
        assert [line["event"] for line in _lines(tmp_path / "events.jsonl")] == ["day3"]

    def test_by_size(self, tmp_path: Path) -> None:
        configure_logging(
            cfg=LoggingConfig(rotate_max_bytes=300),
            log_dir=tmp_path,
            clock=ManualWallClock(T0),
            console="quiet",
        )
        for i in range(10):
            get_logger("x").info("filler", i=i, pad="p" * 50)
        files = sorted(tmp_path.glob("events-2025-11-24*.jsonl"))
        assert len(files) >= 4
        assert all(f.stat().st_size <= 300 for f in files)
        events = [line["i"] for f in sorted(files, key=lambda p: (len(p.name), p.name)) for line in _lines(f)]
        assert events == list(range(10))
        assert os.readlink(tmp_path / "events.jsonl") == max(files, key=lambda p: (len(p.name), p.name)).name

    def test_reopen_appends_to_todays_file(self, tmp_path: Path) -> None:
        configure_logging(cfg=LoggingConfig(), log_dir=tmp_path, clock=ManualWallClock(T0), console="quiet")
        get_logger("x").info("first_run")
        configure_logging(
            cfg=LoggingConfig(), log_dir=tmp_path, clock=ManualWallClock(T0 + 500), console="quiet"
        )
        get_logger("x").info("second_run")
        assert [line["event"] for line in _lines(tmp_path / "events.jsonl")] == ["first_run", "second_run"]


class TestRunDirectory:
    """A replay's run directory: one events file for the whole run, errors only on the console."""

    def test_one_file_across_days(self, tmp_path: Path) -> None:
        clock = ManualWallClock(T0)
        configure_logging(cfg=LoggingConfig(), log_dir=tmp_path, clock=clock, console="quiet", rotate=False)
        get_logger("x").info("day1")
        clock.advance(3 * DAY_MS)
        get_logger("x").info("day4")
        assert _names(tmp_path) == ["events.jsonl"]
        assert not (tmp_path / "events.jsonl").is_symlink()
        assert [line["event"] for line in _lines(tmp_path / "events.jsonl")] == ["day1", "day4"]

    def test_single_file_refuses_size_rotation(self, tmp_path: Path) -> None:
        from futures_actor.logs import RotatingJsonlFile

        with pytest.raises(ValueError, match="max_bytes must be 0"):
            RotatingJsonlFile(
                directory=tmp_path, name="t.jsonl", clock=ManualWallClock(T0), max_bytes=10, rotate=False
            )

    def test_console_level_keeps_info_off_the_console(self, tmp_path: Path) -> None:
        stream = io.StringIO()
        configure_logging(
            cfg=LoggingConfig(),
            log_dir=tmp_path,
            clock=ManualWallClock(T0),
            stream=stream,
            console_level="error",
            rotate=False,
        )
        log = get_logger("app")
        log.info("progress_detail")
        log.warning("something_odd")
        log.error("broken", detail="x")
        shown = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
        assert shown == ["broken"]
        assert [line["event"] for line in _lines(tmp_path / "events.jsonl")] == [
            "progress_detail",
            "something_odd",
            "broken",
        ]

    def test_unknown_console_level_refused(self) -> None:
        with pytest.raises(ValueError, match="console_level"):
            configure_logging(cfg=LoggingConfig(), log_dir=None, console_level="loud")

    def test_stream_files_reads_rotated_and_single(self, tmp_path: Path) -> None:
        from futures_actor.logs import stream_files

        for name in ("trades-2025-01-02.jsonl", "trades-2025-01-01.1.jsonl", "trades-2025-01-01.jsonl"):
            (tmp_path / name).write_text("{}\n")
        (tmp_path / "trades.rejected.jsonl").write_text("{}\n")
        os.symlink("trades-2025-01-02.jsonl", tmp_path / "trades.jsonl")
        assert [p.name for p in stream_files(tmp_path, "trades.jsonl")] == [
            "trades-2025-01-01.jsonl",
            "trades-2025-01-01.1.jsonl",
            "trades-2025-01-02.jsonl",
        ]
        single = tmp_path / "run"
        single.mkdir()
        (single / "trades.jsonl").write_text("{}\n")
        assert stream_files(single, "trades.jsonl") == [single / "trades.jsonl"]
        assert stream_files(tmp_path / "missing", "trades.jsonl") == []

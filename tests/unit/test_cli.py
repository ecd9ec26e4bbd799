"""Command line: modes, config refusal (exit 2, nothing started), check-config, tools, kill/resume, secrets."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import futures_actor.live_run as live_run_module
import futures_actor.replay_run as replay_run_module
from futures_actor import cli
from futures_actor.cli import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, RunOptions, kill_file_path, main
from futures_actor.core.config import default_config
from futures_actor.logs import open_run_logging, reset_logging

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "config.example.json"
SECRET_KEY = "AKIA-live-key-7c1f0e9d8b"
SECRET = "sec-5e4d3c2b1a-f0e9d8c7b6a5"
SECRET_VARS = ("BINANCE_API_KEY", "BINANCE_API_SECRET", "TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Run in an empty working directory without any real secret variables."""
    for name in SECRET_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    reset_logging()
    for name in SECRET_VARS:  # a .env loaded by a test wrote to os.environ directly
        os.environ.pop(name, None)


def _fail(exc: Exception) -> None:
    raise exc


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write_config(tmp_path: Path, doc: dict[str, Any], name: str = "cfg.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[RunOptions]:
    """Replace the bot with a recorder: what would the runner (`run_replay` or `run_live`) have been started with?"""
    seen: list[RunOptions] = []

    async def fake_run_bot(options: RunOptions) -> int:
        seen.append(options)
        return EXIT_OK

    monkeypatch.setattr(replay_run_module, "run_replay", fake_run_bot)
    monkeypatch.setattr(live_run_module, "run_live", fake_run_bot)
    return seen


class TestModes:
    """PAPER unless the config says LIVE and --live is given."""

    def test_paper(self, captured: list[RunOptions], tmp_path: Path) -> None:
        code, _, err = run("--paper", "--config", str(EXAMPLE), "--log-dir", "L", "--state-dir", "S")
        assert code == EXIT_OK, err
        (opts,) = captured
        assert (opts.mode, opts.testnet, opts.log_dir, opts.state_dir) == (
            "PAPER_LIVE",
            False,
            Path("L"),
            Path("S"),
        )
        assert opts.config == default_config()

    def test_live_refused_with_paper_config(self, captured: list[RunOptions]) -> None:
        code, _, err = run("--live", "--config", str(EXAMPLE))
        assert code == EXIT_CONFIG
        assert f'--live refused: config {EXAMPLE} has "mode": "PAPER_LIVE"' in err
        assert captured == []

    def test_live_with_live_config(self, captured: list[RunOptions], tmp_path: Path) -> None:
        cfg = write_config(tmp_path, {"mode": "LIVE"})
        code, _, _ = run("--live", "--testnet", "--config", str(cfg))
        assert code == EXIT_OK
        assert (captured[0].mode, captured[0].testnet) == ("LIVE", True)

    def test_live_config_without_flag_runs_paper_with_warning(
        self, captured: list[RunOptions], tmp_path: Path
    ) -> None:
        cfg = write_config(tmp_path, {"mode": "LIVE"})
        code, _, err = run("--config", str(cfg))
        assert code == EXIT_OK
        assert captured[0].mode == "PAPER_LIVE"
        assert 'says "mode": "LIVE" but --live was not given; running PAPER_LIVE' in err
        assert captured[0].warnings == (
            f'config {cfg} says "mode": "LIVE" but --live was not given; running PAPER_LIVE',
        )

    def test_paper_and_live_together_is_a_usage_error(self, captured: list[RunOptions]) -> None:
        code, _, _ = run("--paper", "--live")
        assert code == EXIT_CONFIG
        assert captured == []

    def test_replay_dir(self, captured: list[RunOptions], tmp_path: Path) -> None:
        (tmp_path / "rec").mkdir()
        assert run("--replay", "rec", "--config", str(EXAMPLE))[0] == EXIT_OK
        assert captured[0].replay_dir == Path("rec")
        code, _, err = run("--replay", "missing", "--config", str(EXAMPLE))
        assert (code, err.strip()) == (EXIT_CONFIG, "futures-actor: --replay missing: not a directory")

    def test_default_config_falls_back_to_example_with_warning(
        self, captured: list[RunOptions], tmp_path: Path
    ) -> None:
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "config.example.json").write_text("{}", encoding="utf-8")
        code, _, err = run()
        assert code == EXIT_OK
        assert captured[0].config_path == Path("config/config.example.json")
        assert "config/config.json not found; using config/config.example.json" in err

    def test_default_config_json_preferred(self, captured: list[RunOptions], tmp_path: Path) -> None:
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "config.json").write_text(
            '{"risk": {"max_open_positions": 1, "max_same_direction_positions": 1}}'
        )
        assert run()[0] == EXIT_OK
        assert captured[0].config.risk.max_open_positions == 1


class TestBadConfigRefused:
    """AC13 at the command line: exit 2, the message on stderr, the bot never started."""

    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            (
                {"risk": {"max_leverage": 3}},
                "config key risk.max_leverage: value 3 is out of range; allowed: float <= 2.0",
            ),
            (
                {"risk": {"max_open_positions": "2"}},
                'config key risk.max_open_positions: value "2" has the wrong type (str); expected int',
            ),
            (
                {"execution": {"limit_ttl_seconds": 0}},
                "config key execution.limit_ttl_seconds: value 0 is out of range; allowed: float > 0.0",
            ),
            (
                {"risk": {"unknown_knob": 1}},
                "config key risk.unknown_knob: unknown key (value 1); allowed keys here:",
            ),
        ],
    )
    def test_in_process(
        self, captured: list[RunOptions], tmp_path: Path, doc: dict[str, Any], message: str
    ) -> None:
        cfg = write_config(tmp_path, doc)
        code, out, err = run("--paper", "--config", str(cfg))
        assert code == EXIT_CONFIG
        assert err.startswith(f"futures-actor: configuration refused: {message}")
        assert out == ""
        assert captured == []
        assert not (tmp_path / "logs").exists()

    def test_missing_explicit_config(self, captured: list[RunOptions]) -> None:
        code, _, err = run("--config", "nope.json")
        assert code == EXIT_CONFIG
        assert "config file nope.json: cannot be read" in err
        assert captured == []

    def test_subprocess_exit_code_and_stderr(self, tmp_path: Path) -> None:
        cfg = write_config(tmp_path, {"leverage": {"trend": 2.5}})
        proc = subprocess.run(
            [sys.executable, "-m", "futures_actor", "--paper", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.returncode == 2
        assert proc.stderr.strip() == (
            "futures-actor: configuration refused: config key leverage.trend: value 2.5 is out of range; "
            "allowed: float <= 2.0"
        )
        assert proc.stdout == ""


class TestCheckConfig:
    """check-config prints the effective config; secrets only as *** and which are set."""

    def test_prints_config_and_masks_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BINANCE_API_KEY", SECRET_KEY)
        code, out, _ = run("check-config", str(EXAMPLE))
        assert code == EXIT_OK
        assert SECRET_KEY not in out
        report = json.loads(out)
        assert report["valid"] is True
        assert report["environment"] == {
            "BINANCE_API_KEY": "***",
            "BINANCE_API_SECRET": "(not set)",
            "TELEGRAM_BOT_TOKEN": "(not set)",
            "TELEGRAM_CHAT_ID": "(not set)",
        }
        assert report["config"]["risk"]["max_leverage"] == 2.0

    def test_reads_dotenv(self, tmp_path: Path) -> None:
        (tmp_path / ".env").write_text(f"BINANCE_API_SECRET={SECRET}\n", encoding="utf-8")
        code, out, _ = run("check-config", str(EXAMPLE))
        assert code == EXIT_OK
        assert json.loads(out)["environment"]["BINANCE_API_SECRET"] == "***"
        assert SECRET not in out

    def test_invalid(self, tmp_path: Path) -> None:
        cfg = write_config(tmp_path, {"regime": {"range_bb_width_min": 0.05}})
        code, out, err = run("check-config", str(cfg))
        assert code == EXIT_CONFIG
        assert out == ""
        assert "config key regime.range_bb_width_min: value 0.05 is out of order" in err


class TestTools:
    """Tool subcommands are imported lazily; a missing one is reported, not a crash."""

    def test_missing_tool_module(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(cli.TOOLS, "features", ("futures_actor.tools.no_such_tool", "run"))
        code, _, err = run("features", "--x")
        assert code == EXIT_RUNTIME
        assert "the `features` command is not available in this build" in err

    def test_dispatch_passes_argv_and_exit_code(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[list[str]] = []

        def fake(argv: list[str]) -> int:
            seen.append(argv)
            return 3

        import types

        module = types.ModuleType("fake_tool_module")
        module.run_fake = fake  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "fake_tool_module", module)
        monkeypatch.setitem(cli.TOOLS, "sim-exchange", ("fake_tool_module", "run_fake"))
        assert run("sim-exchange", "--port", "0", "--help")[0] == 3
        assert seen == [["--port", "0", "--help"]]

    def test_help_documents_everything(self) -> None:
        code, out, _ = run("--help")
        assert code == EXIT_OK
        for word in (
            "--paper",
            "--live",
            "--testnet",
            "--config",
            "--log-dir",
            "--state-dir",
            "--replay",
            "check-config",
            "features",
            "download-klines",
            "sim-exchange",
            "kill",
            "resume",
            "exit codes",
        ):
            assert word in out, word

    def test_unknown_option(self) -> None:
        assert run("--frobnicate")[0] == EXIT_CONFIG


class TestKillResume:
    """kill writes <state_dir>/control/kill, resume removes it."""

    def test_kill_and_resume(self, tmp_path: Path) -> None:
        (tmp_path / "st").mkdir()  # a bot's state directory (kill refuses one that does not exist)
        code, out, _ = run("kill", "--state-dir", "st", "--reason", "drill")
        assert code == EXIT_OK
        path = kill_file_path(Path("st"))
        assert path == Path("st/control/kill")
        assert json.loads(path.read_text())["reason"] == "drill"
        assert "kill switch engaged" in out
        assert run("resume", "--state-dir", "st")[0] == EXIT_OK
        assert not path.exists()
        assert "was not engaged" in run("resume", "--state-dir", "st")[1]

    def test_state_dir_from_config(self, tmp_path: Path) -> None:
        cfg = write_config(tmp_path, {"state": {"state_dir": "from-config"}})
        (tmp_path / "from-config").mkdir()
        assert run("kill", "--config", str(cfg))[0] == EXIT_OK
        assert (tmp_path / "from-config" / "control" / "kill").is_file()

    def test_bad_config_refuses_rather_than_guess(self, tmp_path: Path) -> None:
        cfg = write_config(tmp_path, {"state": {"nope": 1}})
        code, _, err = run("kill", "--config", str(cfg))
        assert code == EXIT_CONFIG
        assert "config key state.nope: unknown key" in err
        assert not (tmp_path / "state").exists()


class TestMainCommand:
    """The bot starts, logs, and fails cleanly when the exchange is unreachable; secrets never leak."""

    def test_unreachable_exchange_is_a_clean_runtime_failure(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        raw = json.loads(EXAMPLE.read_text())
        # Port 9 on loopback refuses connections at once: no network, nothing listening.
        raw["exchange"]["rest_base_url"] = "http://127.0.0.1:9"
        raw["exchange"]["ws_base_url"] = "ws://127.0.0.1:9"
        raw["exchange"]["max_retry_attempts"] = 1
        # Start-up retries transient errors (BOT_SPEC §10); give up after half a second here.
        raw["startup"] = {"give_up_seconds": 0.5, "retry_wait_initial_seconds": 0.1}
        raw["health"]["http_port"] = 0
        cfg_path = tmp_path / "cfg.json"
        cfg_path.write_text(json.dumps(raw))
        code = main(["--paper", "--config", str(cfg_path), "--log-dir", "logs", "--state-dir", "st"])
        assert code == EXIT_RUNTIME
        events = [json.loads(x) for x in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()]
        names = [e["event"] for e in events]
        assert names[0] == "starting"
        assert events[0]["mode"] == "PAPER_LIVE"
        assert "exchange_error_at_startup" in names
        assert "order_placed" not in names
        assert "exchange error at start-up" in capsys.readouterr().err

    def test_secret_absent_from_all_output(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("BINANCE_API_KEY", SECRET_KEY)
        (tmp_path / ".env").write_text(f"BINANCE_API_SECRET={SECRET}\n", encoding="utf-8")

        async def leaky_run_bot(options: RunOptions) -> int:
            from futures_actor.core.clock import SystemWallClock
            from futures_actor.logs import configure_logging, get_logger

            # What the real bot does first: logging with the environment's secrets registered.
            open_run_logging(options, SystemWallClock(), options.log_dir).close()
            configure_logging(cfg=options.config.logging, log_dir=options.log_dir, console="json")
            log = get_logger("binance")
            log.info("signed_request", headers={"X-MBX-APIKEY": SECRET_KEY}, query=f"signature={SECRET}")
            try:
                _fail(RuntimeError(f"auth failed with {SECRET_KEY}"))
            except RuntimeError:
                log.exception("request_failed")
            raise RuntimeError(f"fatal: secret {SECRET} in an exception")

        monkeypatch.setattr(replay_run_module, "run_replay", leaky_run_bot)
        monkeypatch.setattr(live_run_module, "run_live", leaky_run_bot)
        code = main(["--paper", "--config", str(EXAMPLE), "--log-dir", "logs"])
        assert code == EXIT_RUNTIME
        captured = capsys.readouterr()
        files = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
        assert "signed_request" in files
        assert "signed_request" in captured.out
        assert "runtime failure: RuntimeError: fatal: secret *** in an exception" in captured.err
        for text in (files, captured.out, captured.err):
            assert SECRET_KEY not in text
            assert SECRET not in text

"""The console script works from any directory, and `kill` reaches the bot wherever it is run from."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import futures_actor
import futures_actor.live_run as live_run_module
import futures_actor.replay_run as replay_run_module
from futures_actor.cli import EXIT_CONFIG, EXIT_OK, RunOptions, kill_file_path, main, packaged_example_config
from futures_actor.core.config import default_config, load_config
from futures_actor.logs import reset_logging

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    yield
    reset_logging()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[RunOptions]:
    seen: list[RunOptions] = []

    async def fake_run_bot(options: RunOptions) -> int:
        seen.append(options)
        return EXIT_OK

    monkeypatch.setattr(replay_run_module, "run_replay", fake_run_bot)
    monkeypatch.setattr(live_run_module, "run_live", fake_run_bot)
    return seen


def project(root: Path, state_dir: str = "./state") -> Path:
    """A bot's directory as the README lays it out: `config/config.json` with a relative state dir."""
    (root / "config").mkdir(parents=True)
    path = root / "config" / "config.json"
    path.write_text(json.dumps({"state": {"state_dir": state_dir}}), encoding="utf-8")
    return path


class TestKillFindsTheRunningBot:
    def test_kill_from_another_directory_reaches_the_bot(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: list[RunOptions]
    ) -> None:
        bot_root = tmp_path / "bot"
        cfg = project(bot_root)
        monkeypatch.chdir(bot_root)
        assert run("--paper")[0] == EXIT_OK  # the bot, started in its directory
        bot_state = captured[0].state_dir.resolve()  # relative to the bot's working directory
        assert bot_state == (bot_root / "state").resolve()
        bot_state.mkdir()
        elsewhere = tmp_path / "ops"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        code, out, err = run("kill", "--config", str(cfg), "--reason", "drill")
        assert (code, err) == (EXIT_OK, "")
        assert kill_file_path(bot_state).is_file(), out
        assert not (elsewhere / "state").exists()
        assert run("resume", "--config", str(cfg))[0] == EXIT_OK
        assert not kill_file_path(bot_state).exists()

    def test_bot_and_kill_agree_from_any_two_directories(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: list[RunOptions]
    ) -> None:
        cfg = project(tmp_path / "bot", state_dir="var/st")
        for cwd in (tmp_path, tmp_path / "bot", tmp_path / "bot" / "config"):
            monkeypatch.chdir(cwd)
            assert run("--paper", "--config", str(cfg))[0] == EXIT_OK
        dirs = {o.state_dir.resolve() for o in captured}
        assert dirs == {(tmp_path / "bot" / "var" / "st").resolve()}

    def test_state_dir_option_wins_for_both(self, tmp_path: Path, captured: list[RunOptions]) -> None:
        cfg = project(tmp_path / "bot")
        (tmp_path / "elsewhere").mkdir()
        assert run("--paper", "--config", str(cfg), "--state-dir", "elsewhere")[0] == EXIT_OK
        assert captured[0].state_dir == Path("elsewhere")
        assert run("kill", "--config", str(cfg), "--state-dir", "elsewhere")[0] == EXIT_OK
        assert kill_file_path(Path("elsewhere")).is_file()

    def test_kill_refuses_a_state_dir_no_bot_has_used(self, tmp_path: Path) -> None:
        """Writing a kill file where no bot looks would report success for a switch nobody sees."""
        cfg = project(tmp_path / "bot")
        code, out, err = run("kill", "--config", str(cfg))
        assert code == EXIT_CONFIG
        assert out == ""
        assert str((tmp_path / "bot" / "state").resolve()) in err
        assert "does not exist" in err
        assert not (tmp_path / "bot" / "state").exists()

    def test_absolute_and_home_paths_are_kept(self, tmp_path: Path, captured: list[RunOptions]) -> None:
        cfg = project(tmp_path / "bot", state_dir=str(tmp_path / "abs"))
        assert run("--paper", "--config", str(cfg))[0] == EXIT_OK
        assert captured[0].state_dir == tmp_path / "abs"


class TestAnyDirectory:
    def test_packaged_example_config_is_the_defaults(self) -> None:
        path = packaged_example_config()
        assert path.is_file()
        assert Path(futures_actor.__file__).parent in path.parents
        assert load_config(path) == default_config()
        assert path.read_bytes() == (REPO / "config" / "config.example.json").read_bytes()

    def test_falls_back_to_the_packaged_example(self, tmp_path: Path, captured: list[RunOptions]) -> None:
        code, _, err = run("--paper")  # tmp_path: no config/ at all
        assert code == EXIT_OK
        assert captured[0].config_path == packaged_example_config()
        assert "example config shipped with the package" in err
        # Relative paths of the packaged example are the working directory's.
        assert captured[0].state_dir.resolve() == (tmp_path / "state").resolve()
        assert captured[0].log_dir.resolve() == (tmp_path / "logs").resolve()

    def test_version(self) -> None:
        code, out, _ = run("--version")
        assert code == EXIT_OK
        assert out.strip() == f"futures-actor {futures_actor.__version__}"
        meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
        assert meta["project"]["dynamic"] == ["version"]
        assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "futures_actor.__version__"}
        assert importlib.metadata.version("futures-actor") == futures_actor.__version__

    def test_console_script_from_an_empty_directory(self, tmp_path: Path) -> None:
        script = Path(sys.executable).parent / "futures-actor"
        assert script.is_file(), "install the project (scripts/install.sh) first"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "TELEGRAM_"))}
        done = subprocess.run(
            [str(script), "check-config"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == EXIT_OK, done.stderr
        assert json.loads(done.stdout)["config"] == json.loads(
            (REPO / "config" / "config.example.json").read_text(encoding="utf-8")
        )
        version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
        assert version.stdout.strip() == f"futures-actor {futures_actor.__version__}"


class TestPackaging:
    def test_apache_license(self) -> None:
        meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
        assert meta["project"]["license"] == "Apache-2.0"
        assert meta["project"]["license-files"] == ["LICENSE"]
        text = (REPO / "LICENSE").read_text(encoding="utf-8")
        assert "Apache License" in text
        assert "Version 2.0, January 2004" in text
        assert "END OF TERMS AND CONDITIONS" in text

    def test_imported_dependencies_are_declared(self) -> None:
        meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
        declared = {
            d.split(">")[0].split("=")[0].split("<")[0].strip().lower()
            for d in meta["project"]["dependencies"]
        }
        assert "h11" in declared
        pinned = (REPO / "requirements.txt").read_text(encoding="utf-8").lower()
        assert "\nh11==" in pinned or pinned.startswith("h11==")


class TestReadmeQuickStart:
    """README's two commands are the real ones: install + replay of the bundled sample, and the suite."""

    def test_two_commands(self) -> None:
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        block = (
            readme.split("## Quick start (two commands)", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
        )
        commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
        assert commands == [
            "bash scripts/install.sh && .venv/bin/futures-actor --paper --replay data/sample",
            ".venv/bin/python -m pytest",
        ]
        assert (REPO / "data" / "sample" / "BTCUSDT-5m.csv.gz").is_file()
        ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        assert ".venv/bin/python -m pytest" in [line.strip() for line in ci]
        beside = "/".join(("..", "shared"))  # the directory beside the repository the suite must not need
        assert beside not in readme.split("## Performance", 1)[0]

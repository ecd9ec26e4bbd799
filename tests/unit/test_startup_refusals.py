"""Start-up refusals before anything connects: health port in use, a non-loopback control endpoint
without a token, a second instance on the same state directory (issue 9 #8, #11, #15)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from futures_actor.cli import EXIT_CONFIG, main
from futures_actor.logs import reset_logging
from futures_actor.state.guard import lock_state_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FUTURES_ACTOR_CONTROL_TOKEN", raising=False)
    yield
    reset_logging()


def _config(tmp_path: Path, **health: Any) -> Path:
    raw = json.loads((REPO / "config" / "config.example.json").read_text())
    raw["exchange"]["rest_base_url"] = "http://127.0.0.1:9"  # nothing listens: must not be reached
    raw["exchange"]["ws_base_url"] = "ws://127.0.0.1:9"
    raw["health"].update({"http_port": 0, **health})
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(raw))
    return path


def _events(tmp_path: Path) -> list[str]:
    path = tmp_path / "logs" / "events.jsonl"
    return [json.loads(x)["event"] for x in path.read_text().splitlines()] if path.exists() else []


def _run(tmp_path: Path, cfg: Path) -> int:
    return main(["--paper", "--config", str(cfg), "--log-dir", "logs", "--state-dir", "st"])


def test_health_port_in_use_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = _run(tmp_path, _config(tmp_path, http_port=port))
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG
    assert f"health.http_port {port}" in err
    assert "health_port_unavailable" in _events(tmp_path)
    assert "binance_time_synced" not in _events(tmp_path)


def test_non_loopback_bind_without_token_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _run(tmp_path, _config(tmp_path, http_host="0.0.0.0"))
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG
    assert "health.http_host '0.0.0.0' is not a loopback address" in err
    assert "FUTURES_ACTOR_CONTROL_TOKEN" in err
    assert "http_bind_refused" in _events(tmp_path)


def test_second_instance_names_the_dir_and_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    with lock_state_dir(tmp_path / "st"):
        code = _run(tmp_path, _config(tmp_path))
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG
    assert "state directory st is in use by another futures-actor instance" in err
    assert f"pid {os.getpid()}" in err
    assert "state_dir_locked" in _events(tmp_path)

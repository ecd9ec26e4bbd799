"""Dockerfile and docker-compose.yml properties (no Docker engine here: the files are read and checked)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from futures_actor.core.config import default_config

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = (REPO / "docker-compose.yml").read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _one(name: str) -> str:
    found = [args for word, args in _instructions() if word == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def _compose_service() -> dict[str, str]:
    """Top-level keys of the `bot` service as raw text (indentation-based, enough for these checks)."""
    lines = COMPOSE.splitlines()
    start = lines.index("  bot:")
    keys: dict[str, str] = {}
    current = ""
    for line in lines[start + 1 :]:
        if line and not line.startswith("    "):
            break
        if re.match(r"^    [a-z_]+:", line):
            current, _, value = line.strip().partition(":")
            keys[current] = value.strip()
        elif current and line.strip() and not line.strip().startswith("#"):
            keys[current] += "\n" + line.strip()
    return keys


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(s|m)", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


class TestDockerfile:
    """Slim Python >= 3.11, pinned deps, non-root, PID 1 gets SIGTERM, volumes, health check."""

    def test_slim_python_base(self) -> None:
        m = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", _one("FROM"))
        assert m is not None
        assert int(m.group(1)) >= 11

    def test_installs_from_lock(self) -> None:
        runs = [args for word, args in _instructions() if word == "RUN"]
        assert any("pip install -r requirements.txt" in r for r in runs)
        assert any("pip install --no-deps ." in r for r in runs)

    def test_non_root_user(self) -> None:
        user = _one("USER")
        assert user not in ("root", "0")
        assert f"useradd --create-home --uid 10001 --user-group {user}" in DOCKERFILE

    def test_exec_form_entrypoint_and_stopsignal(self) -> None:
        assert json.loads(_one("ENTRYPOINT")) == ["python", "-m", "futures_actor"]
        assert json.loads(_one("CMD")) == ["--paper"]
        assert _one("STOPSIGNAL") == "SIGTERM"

    def test_volumes(self) -> None:
        assert json.loads(_one("VOLUME")) == ["/app/logs", "/app/state"]

    def test_healthcheck_uses_health_endpoint_without_curl(self) -> None:
        health = _one("HEALTHCHECK")
        cfg = default_config().health
        assert health.startswith("--interval=")
        cmd = json.loads(health.split("CMD", 1)[1].strip())
        assert cmd[:2] == ["python", "-c"]
        assert f"http://{cfg.http_host}:{cfg.http_port}/health" in cmd[2]
        assert "urllib.request" in cmd[2]
        assert "curl" not in DOCKERFILE
        compile(cmd[2], "<healthcheck>", "exec")

    def test_dockerignore_keeps_secrets_and_venv_out(self) -> None:
        ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
        for entry in (".env", ".venv", ".git", "logs", "state"):
            assert entry in ignored


class TestCompose:
    """restart, env_file, volumes, stop grace above the shutdown timeout, capped logs."""

    def test_service_settings(self) -> None:
        svc = _compose_service()
        assert svc["restart"] == "unless-stopped"
        assert svc["env_file"] == ".env"
        assert svc["stop_signal"] == "SIGTERM"
        assert "logs:/app/logs" in svc["volumes"]
        assert "state:/app/state" in svc["volumes"]

    def test_stop_grace_longer_than_shutdown_timeout(self) -> None:
        grace = _seconds(_compose_service()["stop_grace_period"])
        assert grace > default_config().shutdown.timeout_seconds

    def test_log_rotation(self) -> None:
        logging = _compose_service()["logging"]
        assert "driver: json-file" in logging
        assert re.search(r'max-size: "\d+[km]"', logging)
        assert re.search(r'max-file: "\d+"', logging)

    def test_env_example_names_every_secret_variable(self) -> None:
        text = (REPO / ".env.example").read_text(encoding="utf-8")
        cfg = default_config()
        for name in (
            cfg.exchange.api_key_env,
            cfg.exchange.api_secret_env,
            cfg.notifications.telegram_token_env,
            cfg.notifications.telegram_chat_id_env,
        ):
            assert re.search(rf"^{name}=$", text, re.MULTILINE), name


class TestReadmeAndCi:
    """The README's two commands are what CI runs; CI cannot pass on zero tests."""

    def test_readme_commands(self) -> None:
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        assert "bash scripts/install.sh" in readme
        assert ".venv/bin/python -m pytest" in readme
        assert "--no-emit-index-url --no-emit-find-links" in readme

    def test_ci_runs_the_readme_test_command_under_set_e(self) -> None:
        ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
        assert "set -euo pipefail" in ci
        steps = [line for line in ci.splitlines() if line and not line.startswith("#")]
        assert steps[-1] == ".venv/bin/python -m pytest"
        for step in (
            "bash scripts/install.sh",
            ".venv/bin/ruff check .",
            ".venv/bin/ruff format --check .",
            ".venv/bin/mypy",
        ):
            assert step in steps

    def test_lock_has_no_index_urls(self) -> None:
        for name in ("requirements.txt", "requirements-dev.txt"):
            text = (REPO / name).read_text(encoding="utf-8")
            assert "--extra-index-url" not in text
            assert "--index-url" not in text

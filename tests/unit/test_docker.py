"""Dockerfile and docker-compose.yml properties (no Docker engine here: the files are read and checked)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from futures_actor.cli import HEALTHCHECK_TIMEOUT_S
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

    def test_slim_python_base_pinned_by_digest(self) -> None:
        m = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?@sha256:([0-9a-f]{64})", _one("FROM"))
        assert m is not None, "FROM must name the tag and pin its digest"
        assert int(m.group(1)) >= 11

    def test_installs_only_hashed_distributions(self) -> None:
        runs = " ".join(args for word, args in _instructions() if word == "RUN")
        assert "pip install --require-hashes -r requirements.txt" in runs
        assert "pip install --require-hashes -r requirements-build.txt" in runs
        # the package itself: no dependency resolution, no isolated build env fetched unchecked
        assert "pip install --no-deps --no-build-isolation ." in runs
        assert (
            re.search(r"pip install(?! --require-hashes)(?! --no-deps --no-build-isolation \.)", runs) is None
        )

    @pytest.mark.parametrize("name", ["requirements.txt", "requirements-build.txt"])
    def test_locks_pin_and_hash_every_distribution(self, name: str) -> None:
        text = (REPO / name).read_text(encoding="utf-8")
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+) \\$", text, re.MULTILINE)
        assert pins
        blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", text, flags=re.MULTILINE)[1:]
        assert len(blocks) == len(pins)
        for block in blocks:
            assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), block.splitlines()[0]

    def test_runtime_lock_matches_the_dependencies(self) -> None:
        meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
        pinned = {
            m.lower()
            for m in re.findall(
                r"^([A-Za-z0-9_.-]+)==", (REPO / "requirements.txt").read_text(), re.MULTILINE
            )
        }
        for dep in meta["project"]["dependencies"]:
            name = re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0].lower()
            assert name in pinned, dep

    def test_numeric_non_root_user(self) -> None:
        user = _one("USER")
        assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "USER must be a numeric uid:gid, not root"
        uid, gid = user.split(":")
        assert f"useradd --uid {uid} --gid {gid}" in DOCKERFILE
        assert f"chown {uid}:{gid} /app/logs /app/state" in DOCKERFILE

    def test_exec_form_entrypoint_and_stopsignal(self) -> None:
        assert json.loads(_one("ENTRYPOINT")) == ["python", "-m", "futures_actor"]
        assert json.loads(_one("CMD")) == ["--paper"]
        assert _one("STOPSIGNAL") == "SIGTERM"

    def test_volumes(self) -> None:
        assert json.loads(_one("VOLUME")) == ["/app/logs", "/app/state"]

    def test_healthcheck_follows_the_configured_port(self) -> None:
        """The check runs `futures-actor healthcheck`, which reads host and port from the bot's config
        (tests/unit/test_healthcheck_cmd.py), instead of a port written into the image."""
        health = _one("HEALTHCHECK")
        assert health.startswith("--interval=")
        timeout = re.search(r"--timeout=(\d+)s", health)
        assert timeout is not None
        assert int(timeout.group(1)) > HEALTHCHECK_TIMEOUT_S
        cmd = json.loads(health.split("CMD", 1)[1].strip())
        assert cmd == ["python", "-m", "futures_actor", "healthcheck"]
        assert "curl" not in DOCKERFILE
        assert str(default_config().health.http_port) in _one("EXPOSE").split()

    def test_dockerignore_keeps_secrets_and_venv_out(self) -> None:
        ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
        for entry in (".env", ".venv", ".git", "logs", "state"):
            assert entry in ignored


class TestCompose:
    """restart, env_file, volumes, stop grace above the shutdown timeout, capped logs, hardening."""

    def test_hardening(self) -> None:
        svc = _compose_service()
        assert svc["security_opt"].split() == ["-", "no-new-privileges:true"]
        assert svc["cap_drop"].split() == ["-", "ALL"]
        assert svc["read_only"] == "true"
        assert "/tmp" in svc["tmpfs"]
        assert "cap_add" not in svc
        assert "privileged" not in svc

    def test_resource_limits(self) -> None:
        svc = _compose_service()
        assert 0 < float(svc["cpus"]) <= 4
        assert re.fullmatch(r"\d+[mg]", svc["mem_limit"])
        assert svc["memswap_limit"] == svc["mem_limit"]  # no swap beyond the memory limit
        assert 0 < int(svc["pids_limit"]) <= 1024

    def test_health_port_not_published_beyond_loopback(self) -> None:
        """The kill switch must not be reachable from outside: no `ports:`, and the bot binds 127.0.0.1."""
        assert "ports" not in _compose_service()
        assert default_config().health.http_host == "127.0.0.1"

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
        assert "--generate-hashes" in readme

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

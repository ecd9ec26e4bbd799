"""`futures-actor healthcheck`: the container's HEALTHCHECK asks /health on the port the config names."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from futures_actor.cli import EXIT_OK, EXIT_RUNTIME, main
from futures_actor.core.config import default_config
from futures_actor.logs import reset_logging

pytestmark = pytest.mark.realclock


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        body = b'{"status":"ok"}'
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("H", (_Handler,), {"status": 200, "paths": []})
    srv = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1], handler
    finally:
        srv.shutdown()
        srv.server_close()
        reset_logging()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def config(tmp_path: Path, port: int, host: str = "127.0.0.1", enabled: bool = True) -> Path:
    path = tmp_path / "config.json"
    doc = {"health": {"http_port": port, "http_host": host, "http_enabled": enabled}}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_healthy_on_the_configured_port(tmp_path: Path, server: tuple[int, type[_Handler]]) -> None:
    port, handler = server
    code, out, _ = run("healthcheck", "--config", str(config(tmp_path, port)))
    assert code == EXIT_OK
    assert handler.paths == ["/health"]
    assert f"127.0.0.1:{port}/health: 200" in out


def test_unhealthy_status_fails(tmp_path: Path, server: tuple[int, type[_Handler]]) -> None:
    port, handler = server
    handler.status = 503
    code, _, err = run("healthcheck", "--config", str(config(tmp_path, port)))
    assert code == EXIT_RUNTIME
    assert "503" in err


def test_wildcard_bind_is_asked_on_loopback(tmp_path: Path, server: tuple[int, type[_Handler]]) -> None:
    port, handler = server
    assert run("healthcheck", "--config", str(config(tmp_path, port, host="0.0.0.0")))[0] == EXIT_OK
    assert handler.paths == ["/health"]


def test_nothing_listening_fails(tmp_path: Path, server: tuple[int, type[_Handler]]) -> None:
    port, _ = server
    code, _, err = run(
        "healthcheck", "--config", str(config(tmp_path, port + 1 if port < 65535 else port - 1))
    )
    assert code == EXIT_RUNTIME
    assert "unreachable" in err


def test_disabled_server_is_a_failure_not_a_pass(tmp_path: Path) -> None:
    code, _, err = run("healthcheck", "--config", str(config(tmp_path, 1, enabled=False)))
    assert code == EXIT_RUNTIME
    assert "health.http_enabled is false" in err


def test_default_port_is_not_freqtrades() -> None:
    assert default_config().health.http_port not in (8080, 8081)
    assert not 9100 <= default_config().health.http_port <= 9999

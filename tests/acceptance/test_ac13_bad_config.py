"""AC13: a bad config refuses start-up end to end, before anything reaches the exchange.

The bot is started as the operator would (`python -m futures_actor --paper --config bad.json`, in
process through `cli.main` and once as a real subprocess) with the exchange URLs pointed at a fake
exchange on loopback that counts every request. Each bad key (wrong type, out of range, unknown,
leverage > 2) must give exit code 2, a message naming the key, the value and what is allowed, and
zero requests at the fake. A valid config pointed at the same fake does reach it (the control that
proves the counter would see a start-up).
"""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from futures_actor import cli

SUBPROCESS_TIMEOUT_S = 60.0


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    """Every request is counted and answered HTTP 500 (a start-up that got this far fails fast)."""

    server: _FakeExchange

    def _answer(self) -> None:
        with self.server.lock:
            self.server.requests.append(f"{self.command} {self.path}")
        body = b'{"code":-1000,"msg":"fake exchange: unavailable"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FakeExchange(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CountingHandler)
        self.lock = threading.Lock()
        self.requests: list[str] = []

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def fake_exchange() -> Iterator[_FakeExchange]:
    server = _FakeExchange()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _write_config(path: Path, fake: _FakeExchange, **sections: dict[str, Any]) -> Path:
    """A config whose exchange URLs point at the fake, plus the given sections (bad keys)."""
    exchange = {"rest_base_url": fake.rest_url, "ws_base_url": fake.ws_url, "max_retry_attempts": 1}
    exchange.update(sections.pop("exchange", {}))
    data: dict[str, Any] = {"mode": "PAPER_LIVE", "exchange": exchange, **sections}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _argv(tmp_path: Path, config: Path) -> list[str]:
    return [
        "--paper",
        "--config",
        str(config),
        "--state-dir",
        str(tmp_path / "state"),
        "--log-dir",
        str(tmp_path / "logs"),
        "--env-file",
        str(tmp_path / "absent.env"),
        "--quiet",
    ]


# (sections of the bad config, key named, value shown, what the message says is allowed)
BAD_CONFIGS: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "wrong_type": (
        {"risk": {"max_open_positions": "2"}},
        "risk.max_open_positions",
        '"2"',
        "expected int",
    ),
    "out_of_range": (
        {"risk": {"risk_per_trade_pct": 0.5}},
        "risk.risk_per_trade_pct",
        "0.5",
        "allowed: float <= 0.05",
    ),
    "out_of_range_negative": (
        {"risk": {"max_open_positions": 0}},
        "risk.max_open_positions",
        "0",
        "allowed: int >= 1",
    ),
    "unknown_key": (
        {"risk": {"max_positionz": 3}},
        "risk.max_positionz",
        "3",
        "allowed keys here: risk_per_trade_pct",
    ),
    "unknown_section": (
        {"riskk": {"max_open_positions": 2}},
        "riskk",
        '{"max_open_positions": 2}',
        "allowed keys here: mode",
    ),
    "max_leverage_above_2": (
        {"risk": {"max_leverage": 3}},
        "risk.max_leverage",
        "3",
        "allowed: float <= 2.0",
    ),
    "regime_leverage_above_2": (
        {"leverage": {"trend": 2.5}},
        "leverage.trend",
        "2.5",
        "allowed: float <= 2.0",
    ),
    "bad_mode": (
        {"mode": "YOLO"},
        "mode",
        '"YOLO"',
        "PAPER_LIVE",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_refuses_start_up_and_sends_nothing(
    case: str, tmp_path: Path, fake_exchange: _FakeExchange
) -> None:
    sections, key, value, allowed = BAD_CONFIGS[case]
    config = _write_config(tmp_path / "bad.json", fake_exchange, **sections)
    out, err = io.StringIO(), io.StringIO()

    code = cli.main(_argv(tmp_path, config), stdout=out, stderr=err)

    message = err.getvalue()
    assert code == cli.EXIT_CONFIG, message
    assert "configuration refused" in message
    assert f"config key {key}:" in message
    assert value in message
    assert allowed in message
    assert fake_exchange.requests == []
    # Refused before anything was opened: no state directory, no log directory.
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "logs").exists()


def test_relation_between_keys_is_refused_too(tmp_path: Path, fake_exchange: _FakeExchange) -> None:
    """A weekly stop smaller than the daily stop: each key is valid alone, the pair is not."""
    config = _write_config(
        tmp_path / "bad.json", fake_exchange, risk={"daily_stop_pct": -0.05, "weekly_stop_pct": -0.02}
    )
    err = io.StringIO()
    code = cli.main(_argv(tmp_path, config), stdout=io.StringIO(), stderr=err)
    assert code == cli.EXIT_CONFIG
    assert "risk.weekly_stop_pct" in err.getvalue()
    assert "-0.02" in err.getvalue()
    assert fake_exchange.requests == []


def test_python_dash_m_exits_2_with_the_message(tmp_path: Path, fake_exchange: _FakeExchange) -> None:
    """The real entry point in a fresh interpreter: exit status 2, the message on stderr."""
    config = _write_config(tmp_path / "bad.json", fake_exchange, risk={"max_leverage": 5})
    proc = subprocess.run(
        [sys.executable, "-m", "futures_actor", *_argv(tmp_path, config)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == cli.EXIT_CONFIG, proc.stderr
    assert "config key risk.max_leverage: value 5 is out of range; allowed: float <= 2.0" in proc.stderr
    assert fake_exchange.requests == []


def test_control_a_valid_config_does_reach_the_fake(tmp_path: Path, fake_exchange: _FakeExchange) -> None:
    """Without this, "zero requests" could mean the bot never looks at the fake at all."""
    # Start-up retries transient errors (BOT_SPEC §10 [resolved]); this one gives up after a second.
    config = _write_config(
        tmp_path / "good.json",
        fake_exchange,
        startup={"give_up_seconds": 1.0, "retry_wait_initial_seconds": 0.1},
        health={"http_port": 0},
    )
    code = cli.main(_argv(tmp_path, config), stdout=io.StringIO(), stderr=io.StringIO())
    assert code == cli.EXIT_RUNTIME  # the fake answers 500: an exchange error at start-up, given up
    assert fake_exchange.requests, "a valid config should have contacted the fake exchange"
    assert fake_exchange.requests[0].startswith("GET /fapi/")

"""`futures-actor sim-exchange` as a tool: a port in use is a clear error; `--wall-clock` shifts the recording
to end now and serves it on the wall clock, with the admin endpoint on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from futures_actor.tools.sim_exchange_cmd import run_sim_exchange

REPO = Path(__file__).resolve().parents[2]
ENV = {"BINANCE_API_KEY": "tool-key", "BINANCE_API_SECRET": "tool-secret"}
STARTUP_TIMEOUT_S = 60.0


def test_port_in_use_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(REPO)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = run_sim_exchange(["--port", str(port), "--klines", "data/sample", "--limit", "20"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err
    assert "already in use" in err
    assert "ExceptionGroup" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.realclock
def test_wall_clock_mode_serves_the_recording_ending_now() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "futures_actor", "sim-exchange", "--port", str(port), "--ws-port", str(_free_port()),
         "--klines", "data/sample", "--limit", "300", "--wall-clock"],
        cwd=REPO, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/fapi/v1/time", timeout=2) as r:
                    server = json.loads(r.read())["serverTime"]
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        now = int(time.time() * 1000)
        assert abs(server - now) < 5_000
        url = f"http://127.0.0.1:{port}/fapi/v1/klines?symbol=BTCUSDT&interval=5m&limit=3"
        with urllib.request.urlopen(url, timeout=5) as r:
            rows = json.loads(r.read())
        assert now - 600_000 < rows[-1][0] <= now  # the recording ends now
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/state", timeout=5) as r:
            assert abs(json.loads(r.read())["now_ms"] - now) < 5_000
    finally:
        proc.terminate()
        proc.wait(timeout=10)

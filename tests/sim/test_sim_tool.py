"""`futures-actor sim-exchange` as a tool: a port in use is a clear error; `--wall-clock` shifts the recording
to end now and serves it on the wall clock, with the admin endpoint on."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from futures_actor.tools.sim_exchange_cmd import parse_instant_ms, run_sim_exchange, wall_clock_shift

HOUR_MS = 3_600_000

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
        bufsize=0,  # unbuffered: select() on the pipe sees every line readline() has not taken
    )  # fmt: skip
    try:
        # The tool prints its URLs once both listeners are bound: wait for that line, not by polling.
        assert proc.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        lines: list[str] = []
        while not any("REST http://" in line for line in lines):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(left, 0.0))
            assert ready, f"sim-exchange did not report its listeners within {STARTUP_TIMEOUT_S} s: {lines}"
            line = proc.stdout.readline().decode()
            assert line, f"sim-exchange exited before listening: {lines}"
            lines.append(line)
        assert f"REST http://127.0.0.1:{port}" in lines[-1], lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/fapi/v1/time", timeout=2) as r:
            server = json.loads(r.read())["serverTime"]
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


class TestNowAt:
    """`--wall-clock --now-at`: a recorded instant becomes now, shifted by whole `--align` intervals."""

    def test_shift_is_whole_hours_nearest_to_the_instant(self) -> None:
        now = 1_796_298_099_498
        shift = wall_clock_shift(now_ms=now, now_at_ms=1_737_381_780_000, align_ms=HOUR_MS)
        assert shift % HOUR_MS == 0
        assert abs((now - shift) - 1_737_381_780_000) <= HOUR_MS // 2

    def test_instant_as_ms_or_iso(self) -> None:
        assert parse_instant_ms("1737381780000") == 1_737_381_780_000
        assert parse_instant_ms("2025-01-20T14:03:00Z") == 1_737_381_780_000
        assert parse_instant_ms("2025-01-20T14:03:00") == 1_737_381_780_000  # UTC unless told

    def test_bad_instant_is_named(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            run_sim_exchange(["--port", "1", "--klines", "data/sample", "--wall-clock", "--now-at", "soon"])
        assert "--now-at 'soon'" in capsys.readouterr().err

    def test_now_at_needs_wall_clock(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        for k, v in ENV.items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(REPO)
        code = run_sim_exchange(["--port", "1", "--klines", "data/sample", "--limit", "20", "--now-at", "1"])
        assert code == 2
        assert "--now-at needs --wall-clock" in capsys.readouterr().err

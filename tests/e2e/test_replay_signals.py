"""Issue 9 #10, replay: SIGTERM and Ctrl-C (SIGINT) stop a replay in order, print the summary of the
trades so far and exit 0 (SIGTERM used to exit 143 at once, SIGINT was ignored). A real subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from acceptance.harness import write_klines

from .botproc import REPO
from .simhost import FIVE_MIN_MS, HOUR_MS, random_walk

pytestmark = pytest.mark.realclock
T0 = 1_735_689_600_000
DAYS = 40
PROGRESS_S = 120.0
EXIT_S = 30.0


def _klines(directory: Path) -> None:
    for n, (symbol, price) in enumerate({"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}.items()):
        five = random_walk(price, start_ms=T0, bars=DAYS * 288, interval_ms=FIVE_MIN_MS, seed=10 + n)
        write_klines(directory, symbol, "5m", five)
        hours = random_walk(
            price, start_ms=T0 - 80 * HOUR_MS, bars=DAYS * 24 + 80, interval_ms=HOUR_MS, seed=20 + n
        )
        write_klines(directory, symbol, "1h", hours)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_prints_the_summary_so_far_and_exits_0(tmp_path: Path, signum: signal.Signals) -> None:
    data = tmp_path / "klines"
    _klines(data)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "replay": {"progress_percent_step": 1.0},
                "universe": {"min_atr_ratio": 0.0, "max_spread_pct": 0.5, "max_abs_funding_rate": 0.5},
            }
        )
    )
    out_path = tmp_path / "replay.out"
    cmd = [
        sys.executable, "-m", "futures_actor", "--paper", "--replay", str(data), "--config", str(config),
        "--log-dir", str(tmp_path / "run"), "--state-dir", str(tmp_path / "state"), "--quiet",
    ]  # fmt: skip
    with out_path.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + PROGRESS_S
        while "replay " not in out_path.read_text(errors="replace"):
            assert proc.poll() is None, out_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "no progress line"
            time.sleep(0.1)
        proc.send_signal(signum)
        code = proc.wait(timeout=EXIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=EXIT_S)
    output = out_path.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert f"replay interrupted by {signum.name}: summary of the trades so far" in output
    assert "run directory:" in output
    assert "100.0%" not in output  # it did stop early

"""The LIVE bot against `futures-actor sim-exchange --wall-clock` in real time (issue 11): two real processes.

The fake replays the bundled BTCUSDT recording (`data/sample/`) shifted so that a recorded moment at which
the bot signals (`live_moments.py`) closes on the first 5m boundary after the bot is up; before it, the
recording is served as the past, after it the market plays at speed 1 with Binance's intra-candle
streams (kline frames every 250 ms, mark price, book ticker). Checked through the exchange's API: the
entry placed after that close, its position protected by a stop on the exchange; through the bot's
log: no stale-data fault and no safe mode from intra-candle data; and an orderly exit on SIGTERM that
leaves the position with its stop.

Wall time: candles close on the wall clock's 5m grid (Binance's), so the signal candle can close only on
a 5-minute boundary, the first one at least `READY_S` after the start, and the run starts only once the
candle closed at the last boundary is older than `health.stale_data_seconds` (a fresh one may signal on
its own and be traded a candle early): the run waits 20 s to about 5 min 20 s in all (set by the
clock's phase, not by the code), then a few seconds (entry,
fill, stop, exit; measured: entry 4 ms after the close, position protected within 3 s, exit at once).
The exchange clock cannot be moved instead: the bot checks a candle's age against its own wall clock.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from futures_actor.core.config import BotConfig, default_config

from .botproc import REPO, BotProcess, live_config
from .live_moments import (
    H1,
    M5,
    MOMENTS,
    SAMPLE,
    SYMBOL,
    bot_signals_at,
    load_5m,
    now_at_for_next_close,
    seed_track_record,
)
from .proclines import OutputLines
from .simhost import Account

pytestmark = [pytest.mark.slow, pytest.mark.realclock]

READY_S = 20.0  # sim-exchange and bot start-up (processes, history, streams: ~5 s here) before the close
SIM_UP_S = 30.0
# From the close: the decision, the entry (filled within 20 s on the path, its rest cancelled at the 30 s
# TTL), the stop versions.
ENTRY_S = 60.0
SIGNED_POLL_S = 2.0  # signed position / order queries weigh 5-40: at most one round every 2 s
EXIT_S = 30.0
PREFIX = default_config().exchange.client_id_prefix + "-"


class _Endpoints:
    def __init__(self, port: int, ws_port: int) -> None:
        self.rest_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{ws_port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _wait_up(sim: subprocess.Popen[bytes], out: OutputLines, sim_out: Path) -> None:
    """Until sim-exchange prints its URLs (both listeners bound): woken by that line, not by polling."""
    line = out.wait_line(lambda line: "REST http://" in line, timeout=SIM_UP_S)
    if line is None:
        raise AssertionError(
            f"sim-exchange did not come up (exit {sim.poll()}):\n{sim_out.read_text(errors='replace')}"
        )


def _until(what: str, timeout: float, probe: Any, bot: BotProcess) -> Any:
    """Probe a real process's state over HTTP each time the bot does something (its next console line),
    at the latest every `SIGNED_POLL_S`, until `probe()` returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what}: not within {timeout} s")
        bot.wait_output(timeout=min(left, SIGNED_POLL_S))


def test_track_record_qualifies(tmp_path: Path) -> None:
    seed_track_record(tmp_path)


def test_moments_still_signal() -> None:
    """The table above is what the bot decides today (rerun `live_moments` when strategies change)."""
    five = load_5m(SYMBOL)
    index = {c.open_time_ms: i for i, c in enumerate(five)}
    cfg = BotConfig()
    for slot, (open_ms, side) in MOMENTS.items():
        assert (open_ms + M5) % H1 // M5 == slot
        signals = bot_signals_at(cfg, SYMBOL, five, index[open_ms])
        assert [s.side.value for s in signals][:1] == [side], f"slot {slot}: {signals}"


STALE_MARGIN_S = 5.0  # beyond health.stale_data_seconds: the last closed candle is surely stale at start


def start_delay_ms(now_ms: int) -> int:
    """How long to wait from `now_ms` so that the last closed 5m candle is older than the bot's
    `health.stale_data_seconds` (+ a margin) and the next boundary is at least `READY_S` away: the signal
    candle is then the one forming at start, and no earlier candle can be traded (0: start now)."""
    earliest = round((default_config().health.stale_data_seconds + STALE_MARGIN_S) * 1000)
    latest = M5 - round(READY_S * 1000)
    phase = now_ms % M5
    if earliest <= phase <= latest:
        return 0
    return earliest - phase if phase < earliest else M5 - phase + earliest


def test_start_delay_keeps_the_last_closed_candle_stale_and_the_close_ahead() -> None:
    stale_ms = default_config().health.stale_data_seconds * 1000
    for phase in range(0, M5, 1_000):
        start = 10 * M5 + phase + start_delay_ms(10 * M5 + phase)
        assert start % M5 >= stale_ms  # the candle closed at the boundary before the start is stale
        assert M5 - start % M5 >= READY_S * 1000  # the signal candle closes after start-up
        assert start - (10 * M5 + phase) < M5  # bounded: under one candle


def test_live_bot_trades_against_the_wall_clock_fake(tmp_path: Path) -> None:
    started = time.monotonic()
    klines = tmp_path / "klines"
    klines.mkdir()
    shutil.copy(SAMPLE / f"{SYMBOL}-5m.csv.gz", klines / f"{SYMBOL}-5m.csv.gz")
    now = int(time.time() * 1000)
    wait_ms = start_delay_ms(now)
    if wait_ms:
        # The candle that closed at the last boundary must be stale for the bot (older than
        # `health.stale_data_seconds` when it comes up: it may signal on its own, and a fresh one would be
        # traded, a candle early), and the signal candle's close at least READY_S away.
        time.sleep(wait_ms / 1000)
        now = int(time.time() * 1000)
    now_at, close, open_ms = now_at_for_next_close(now, int(READY_S * 1000))  # first 5m close after start-up
    side = MOMENTS[close % H1 // M5][1]
    shift = now - now_at
    assert shift % H1 == 0
    port, ws_port = _free_port(), _free_port()
    ends = _Endpoints(port, ws_port)
    (tmp_path / "bot").mkdir()
    bot = BotProcess(tmp_path / "bot", live_config(ends, [SYMBOL]))
    seed_track_record(bot.log_dir)
    sim_out = tmp_path / "sim.out"
    sim = subprocess.Popen(
        [sys.executable, "-m", "futures_actor", "sim-exchange", "--port", str(port), "--ws-port",
         str(ws_port), "--klines", str(klines), "--wall-clock", "--now-at", str(now_at)],
        cwd=REPO, env=bot.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0,
    )  # fmt: skip
    sim_lines = OutputLines(sim, sim_out)
    account = Account(ends.rest_url)
    try:
        _wait_up(sim, sim_lines, sim_out)
        assert f"shifted by {shift} ms" in sim_out.read_text()
        before = int(time.time() * 1000) // M5 * M5
        rows = _get(f"{ends.rest_url}/fapi/v1/klines?symbol={SYMBOL}&interval=5m&limit=2")
        after = int(time.time() * 1000) // M5 * M5
        assert rows[-1][0] in (before, after)  # the last REST row is the candle forming now ...
        assert rows[-1][0] == close - M5  # ... the signal candle
        bot.start()
        bot.wait_event("reconcile_done", timeout=READY_S + 30)
        assert time.time() * 1000 < close, "the bot was not up before the signal candle closed"
        # The close, then the entry (a LIMIT, filled in volume-capped parts) and one stop for the whole
        # position once the entry is done (each fill brings a new stop version, then the old one goes).
        last_signed = [0.0]

        def settled() -> tuple[Decimal, dict[str, Any]] | None:
            state = _get(f"{ends.rest_url}/admin/state")  # unweighted: polling it spares the bot's limits
            if SYMBOL not in state["positions"] or state["open_algo_orders"] != 1:
                return None
            if time.monotonic() - last_signed[0] < SIGNED_POLL_S:
                return None
            last_signed[0] = time.monotonic()
            amount = account.positions().get(SYMBOL, Decimal(0))
            stops = [a for a in account.open_algo_orders() if a["symbol"] == SYMBOL]
            working = [
                o
                for o in account.open_orders()
                if o["clientOrderId"].startswith(PREFIX) and not o["reduceOnly"]
            ]
            if amount == 0 or working or len(stops) != 1:
                return None
            return amount, stops[0]

        wait_s = (close - time.time() * 1000) / 1000 + ENTRY_S
        try:
            amount, stop = _until(
                "one stop protecting the whole position, the entry done", wait_s, settled, bot
            )
        finally:
            requests: list[dict[str, Any]] = _get(f"{ends.rest_url}/admin/requests")
            print(
                "orders sent:",
                [(r["time_ms"], r["path"], r["params"]) for r in requests if "rder" in r["path"]],
            )
        entries = [
            r
            for r in requests
            if r["method"] == "POST"
            and r["path"] == "/fapi/v1/order"
            and (r["client_id"] or "").startswith(PREFIX)
            and r["params"].get("type") == "LIMIT"
            and r["params"].get("reduceOnly") != "true"
        ]
        assert entries, "no entry order was placed"
        assert entries[0]["time_ms"] >= close  # decided on the closed candle, not on a forming frame
        assert entries[0]["params"]["side"] == ("BUY" if side == "LONG" else "SELL")
        assert (amount > 0) == (side == "LONG")
        assert stop["orderType"] == "STOP_MARKET"
        assert stop["side"] == ("SELL" if side == "LONG" else "BUY")
        assert stop["clientAlgoId"].startswith(PREFIX)
        assert stop["closePosition"] or Decimal(stop["quantity"]) == abs(amount)
        # No false stale-data fault or safe mode from the intra-candle stream.
        assert bot.events("safe_mode_entered") == []
        assert [e for e in bot.events("fault_reported") if "STALE" in str(e.get("kind"))] == []
        assert bot.events("market_stream_stale") == []
        # An orderly exit on SIGTERM; the position keeps its stop on the exchange.
        bot.signal(signal.SIGTERM)
        assert bot.wait(EXIT_S) == 0, bot.output()[-3000:]
        assert account.positions().get(SYMBOL) == amount
        assert [a["clientAlgoId"] for a in account.open_algo_orders()] == [stop["clientAlgoId"]]
        working_entries = [
            o for o in account.open_orders() if o["clientOrderId"].startswith(PREFIX) and not o["reduceOnly"]
        ]
        assert working_entries == []  # shutdown cancels a working entry; protection stays
        figures = {
            "wall_s": round(time.monotonic() - started, 1),
            "waited_for_close_s": round((close - now) / 1000, 1),
            "entry_after_close_ms": entries[0]["time_ms"] - close,
            "side": side,
            "position": str(amount),
            "recorded_signal_candle": open_ms,
        }
        print(json.dumps(figures))
        (tmp_path / "live-figures.json").write_text(json.dumps(figures))
    finally:
        account.close()
        bot.kill()
        sim.terminate()
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(timeout=10)
        sim_lines.join()

"""AC9: SIGTERM with a working entry and an open position.

The working entry is cancelled, the open position's stop and target stay on the exchange, the state
is persisted, and the bot exits 0 within `shutdown.timeout_seconds`.

Once in-process under the mock clock (a paper system on a scripted market; `stop_requested` is what
the first SIGTERM sets), and once as a real subprocess: `python -m futures_actor --paper` against the
fake Binance exchange served on loopback by `python -m futures_actor sim-exchange`, sent a real SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from futures_actor.actors.messages import CandleClosed
from futures_actor.core import lifecycle as lcm
from futures_actor.core.config import default_config
from futures_actor.core.types import Candle, OrderRole, Side
from futures_actor.state.store import StateStore

from .harness import EXCHANGE_INFO, ScriptedRig, copy_real_klines, signal_report

START_MS = 1_735_725_600_000  # 2025-01-01 10:00 UTC
HOUR_MS = 3_600_000
FIVE_MIN_MS = 300_000
PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000")}
STOP_PCT = 0.02
WAIT_S = 120.0
# The ETH entry is a buy limit this far under the market: it stays working until the stop.
WORKING_ENTRY_DISCOUNT = 0.98


def _uncorrelated_hours(symbol: str, price: float, *, seed: int, hours: int) -> list[CandleClosed]:
    """`hours` independent random-walk 1h closes before START_MS (the correlation filter passes)."""
    rng = random.Random(seed)
    out: list[CandleClosed] = []
    p = price
    for i in range(hours):
        p *= 1 + rng.gauss(0.0, 0.004)
        t = START_MS - (hours - i) * HOUR_MS
        c = Candle(open_time_ms=t, open=p, high=p * 1.001, low=p * 0.999, close=p, volume=100.0)
        out.append(CandleClosed(symbol=symbol, interval="1h", candle=c, source="rest"))
    return out


def _paper_orders(rig: ScriptedRig) -> dict[str, dict[str, Any]]:
    """Every order the paper exchange knows (open and closed), by client id."""
    assert rig.paper is not None
    data = msgspec.json.decode(rig.paper.snapshot())
    return {o["client_id"]: o for o in [*data["open_orders"], *data["closed_orders"]]}


async def test_orderly_stop_cancels_the_entry_and_keeps_the_protection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = default_config()
    rig = ScriptedRig(root=tmp_path, cfg=cfg, symbols=list(PRICES), prices=dict(PRICES), epoch_ms=START_MS)
    async with trio.open_nursery() as nursery:
        system = await rig.start(nursery)
        assert rig.clock is not None
        hours = cfg.timeframes.corr_lookback_hours + 2
        for seed, (symbol, price) in enumerate(PRICES.items()):
            for msg in _uncorrelated_hours(symbol, float(price), seed=seed, hours=hours):
                await system._risk_send.send(msg)

        # 1. A BTC long: approved, entry filled, stop and target placed.
        now = rig.clock.now_ms()
        candle = now - now % FIVE_MIN_MS
        btc = float(PRICES["BTCUSDT"])
        await system._risk_send.send(
            signal_report("BTCUSDT", candle, side=Side.LONG, price=btc, stop_pct=STOP_PCT)
        )

        def trade_of(symbol: str) -> lcm.TradeLifecycle | None:
            return next((t for t in system.execution.open_trades() if t.symbol == symbol), None)

        await rig.wait_until(
            lambda: (t := trade_of("BTCUSDT")) is not None and bool(t.live_orders(OrderRole.ENTRY)),
            timeout=WAIT_S,
        )
        rig.set_price("BTCUSDT", str(PRICES["BTCUSDT"] * Decimal("0.999")))

        def btc_protected() -> bool:
            t = trade_of("BTCUSDT")
            return (
                t is not None
                and t.phase is lcm.Phase.OPEN
                and bool(t.live_orders(OrderRole.STOP))
                and bool(t.live_orders(OrderRole.TARGET))
            )

        await rig.wait_until(btc_protected, timeout=WAIT_S)

        # 2. An ETH long whose buy limit sits under the market: the entry is working.
        now = rig.clock.now_ms()
        candle = now - now % FIVE_MIN_MS + FIVE_MIN_MS
        await trio.sleep((candle - now) / 1000)
        eth_entry = float(PRICES["ETHUSDT"]) * WORKING_ENTRY_DISCOUNT
        await system._risk_send.send(
            signal_report("ETHUSDT", candle, side=Side.LONG, price=eth_entry, stop_pct=STOP_PCT)
        )
        await rig.wait_until(
            lambda: (t := trade_of("ETHUSDT")) is not None and bool(t.live_orders(OrderRole.ENTRY)),
            timeout=WAIT_S,
        )
        btc_trade, eth_trade = trade_of("BTCUSDT"), trade_of("ETHUSDT")
        assert btc_trade is not None
        assert eth_trade is not None
        btc_id, eth_id = btc_trade.trade_id, eth_trade.trade_id
        eth_entry_cids = {o.cid for o in eth_trade.live_orders(OrderRole.ENTRY)}
        btc_protection = {o.cid for o in btc_trade.live_orders(OrderRole.STOP)} | {
            o.cid for o in btc_trade.live_orders(OrderRole.TARGET)
        }
        before = _paper_orders(rig)
        assert all(before[c]["status"] == "NEW" for c in eth_entry_cids | btc_protection)

        # 3. The first SIGTERM: an orderly stop.
        t0 = trio.current_time()
        system.stop_requested.set()
        await system.stopped.wait()
        elapsed = trio.current_time() - t0
        assert rig.paper is not None
        positions = {p.symbol: p for p in await rig.paper.positions()}
        nursery.cancel_scope.cancel()

    try:
        assert system.exit_code == 0
        assert elapsed < cfg.shutdown.timeout_seconds
        after = _paper_orders(rig)
        # The working entry was cancelled on the exchange; the position's stop and target were not.
        for cid in eth_entry_cids:
            assert after[cid]["status"] == "CANCELED", cid
        for cid in btc_protection:
            assert after[cid]["status"] == "NEW", cid
        assert set(positions) == {"BTCUSDT"}
        assert {e["trade_id"] for e in rig.events("order_canceled")} & {eth_id}
        assert not [e for e in rig.events("order_canceled") if e["cid"] in btc_protection]
        done = rig.events("shutdown_done")
        assert [e["exit_code"] for e in done] == [0]
        assert not rig.events("shutdown_timeout")
    finally:
        rig.close()

    # The state was persisted: a fresh process opening the store finds the BTC trade OPEN with its
    # stop and target live, and no ETH entry working.
    with StateStore.open(rig.state_dir / cfg.state.db_file) as store:
        states = {s.plan.trade_id: s for s in store.load_lifecycles(include_closed=True)}
    assert states[btc_id].phase is lcm.Phase.OPEN
    live = {o.cid for o in states[btc_id].orders.values() if o.status is lcm.OrderStatus.WORKING}
    assert btc_protection <= live
    eth_state = states.get(eth_id)
    assert eth_state is not None
    assert eth_state.phase not in (lcm.Phase.ENTRY_WORKING, lcm.Phase.PENDING_ENTRY)
    assert not [o for o in eth_state.orders.values() if o.status is lcm.OrderStatus.WORKING]


# ----------------------------------------------------------------------------------------------------
# The real process: `python -m futures_actor --paper` on the loopback fake exchange, a real SIGTERM.

REPO = Path(__file__).resolve().parents[2]
SIM_SYMBOLS = ("BTCUSDT", "ETHUSDT")
SIM_DAYS = 4
# The sim starts this far into its klines, so the bot's start-up backfill finds full history.
SIM_HISTORY_DAYS = 3
DAY_MS = 86_400_000
# Real-clock bounds (seconds): generous for a loaded CI machine, short for a hung process.
SIM_UP_S = 30.0
BOT_UP_S = 60.0
SHUTDOWN_TIMEOUT_S = 10.0
EXIT_SLACK_S = 5.0  # interpreter exit after `shutdown_done`
POLL_S = 0.1


def _env() -> dict[str, str]:
    cfg = default_config()
    env = dict(os.environ)
    env[cfg.exchange.api_key_env] = "acceptance-ac9-api-key-0123456789abcdef"
    env[cfg.exchange.api_secret_env] = "acceptance-ac9-api-secret-0123456789abcdef"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_for(predicate: Any, *, timeout: float, what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{what}: process {proc.args!r} exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(POLL_S)


def _events(log_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("events-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written right now
                rows.append(json.loads(line))
    return rows


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=SIM_UP_S)


@pytest.mark.realclock
def test_real_sigterm_stops_the_paper_bot_with_exit_0(tmp_path: Path) -> None:
    klines = tmp_path / "klines"
    for s in SIM_SYMBOLS:
        copy_real_klines(klines, s, days=SIM_DAYS)
    start_ms = _first_open_ms(klines / f"{SIM_SYMBOLS[0]}-5m.csv.gz") + SIM_HISTORY_DAYS * DAY_MS
    env = _env()
    sim_out = tmp_path / "sim.out"
    sim_cmd = [
        sys.executable, "-m", "futures_actor", "sim-exchange", "--port", "0", "--ws-port", "0",
        "--klines", str(klines), "--exchange-info", str(EXCHANGE_INFO), "--start-ms", str(start_ms),
    ]  # fmt: skip
    with sim_out.open("wb") as sim_log:
        sim = subprocess.Popen(sim_cmd, cwd=REPO, env=env, stdout=sim_log, stderr=subprocess.STDOUT)
    bot: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(
            lambda: "WS ws://" in sim_out.read_text(), timeout=SIM_UP_S, what="sim-exchange up", procs=[sim]
        )
        words = sim_out.read_text().split()
        rest_url = words[words.index("REST") + 1]
        ws_url = words[words.index("WS") + 1]
        config = {
            "exchange": {"rest_base_url": rest_url, "ws_base_url": ws_url},
            "universe": {
                "whitelist": list(SIM_SYMBOLS),
                "min_24h_volume_usdt": 0.0,
                "max_spread_pct": 0.5,
                "max_abs_funding_rate": 0.5,
                "min_atr_ratio": 0.0,
                "spread_sample_seconds": 1.0,
            },
            "health": {"http_port": 0, "heartbeat_interval_seconds": 0.5},
            "shutdown": {"timeout_seconds": SHUTDOWN_TIMEOUT_S},
        }
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        log_dir, state_dir = tmp_path / "logs", tmp_path / "state"
        bot_cmd = [
            sys.executable, "-m", "futures_actor", "--paper", "--config", str(config_path),
            "--log-dir", str(log_dir), "--state-dir", str(state_dir), "--quiet",
        ]  # fmt: skip
        bot_out = tmp_path / "bot.out"
        with bot_out.open("wb") as bot_log:
            bot = subprocess.Popen(bot_cmd, cwd=tmp_path, env=env, stdout=bot_log, stderr=subprocess.STDOUT)
        heartbeat = state_dir / default_config().health.heartbeat_file
        _wait_for(
            lambda: heartbeat.is_file() and any(e.get("event") == "system_started" for e in _events(log_dir)),
            timeout=BOT_UP_S,
            what="bot up",
            procs=[sim, bot],
        )
        # The health endpoint of the running bot (port 0: the bound port is in the event log).
        port = next(e["port"] for e in _events(log_dir) if e.get("event") == "http_listening")
        _wait_for(
            lambda: "api_weight_used_1m" in _get(f"http://127.0.0.1:{port}/metrics"),
            timeout=BOT_UP_S,
            what="metrics with the API weight gauge",
            procs=[sim, bot],
        )
        assert '"state"' in _get(f"http://127.0.0.1:{port}/health")
        bot.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = bot.wait(timeout=SHUTDOWN_TIMEOUT_S + EXIT_SLACK_S)
        elapsed = time.monotonic() - t0
    finally:
        if bot is not None:
            _stop(bot)
        _stop(sim)
    output = (tmp_path / "bot.out").read_text(errors="replace")
    assert code == 0, output
    assert elapsed < SHUTDOWN_TIMEOUT_S, elapsed
    events = _events(log_dir)
    names = [e.get("event") for e in events]
    assert "signal_received" in names
    done = [e for e in events if e.get("event") == "shutdown_done"]
    assert [e["exit_code"] for e in done] == [0]
    assert not [e for e in events if e.get("level") == "critical"]
    assert "shutdown_timeout" not in names


def _get(url: str) -> str:
    """The body of a GET (any status: /health answers 503 while unhealthy), or "" if unreachable."""
    import httpx

    try:
        return httpx.get(url, timeout=2.0).text
    except httpx.HTTPError:
        return ""


def _first_open_ms(path: Path) -> int:
    from futures_actor.data.klines_csv import read_klines_candles

    return read_klines_candles(path, interval="5m", limit=1)[0].open_time_ms

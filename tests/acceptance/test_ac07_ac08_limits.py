"""AC7 (correlation filter and hedge rule) and AC8 (position and open-risk limits), through the
real actors: a paper system on a scripted market (`ScriptedRig`).

Positions are opened the way the bot opens them: a signal approved by PortfolioRisk, an entry
filled by the paper exchange, a stop placed by execution. The 1h closes the correlation filter
needs reach PortfolioRisk as `CandleClosed` messages (what the system's market tap forwards):
for AC7 the recorded BTCUSDT / ETHUSDT hours of January 2025 from the bundled sample, for AC8
independent random walks (uncorrelated, so only the limit under test can reject).
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import trio
import trio.testing

from futures_actor.actors.messages import CandleClosed
from futures_actor.core.config import BotConfig, default_config
from futures_actor.core.types import INTERVAL_MS, Candle, Side
from futures_actor.data.klines_csv import read_klines_candles

from .harness import KLINES, ScriptedRig, next_candle, open_position, signal_report

HOUR_MS = INTERVAL_MS["1h"]
SETTLE_S = 5.0
# Two positions at 1 % risk each fit the isolated margin of a 10 000 USDT account with a 2 % stop.
STOP_PCT = 0.02

# AC7: the 1h candle (2025-01-10 13:00 UTC) that ends 72 hours in which BTCUSDT and ETHUSDT moved
# together (corr of 1h log returns > 0.9 in the recorded data).
CORR_LAST_OPEN_MS = 1_736_514_000_000


def _recorded_hours(symbol: str, *, last_open_ms: int, count: int) -> list[Candle]:
    rows = read_klines_candles(KLINES / f"{symbol}-1h.csv.gz", interval="1h", limit=2_000)
    hours = [c for c in rows if last_open_ms - (count - 1) * HOUR_MS <= c.open_time_ms <= last_open_ms]
    assert len(hours) == count, f"{symbol}: {len(hours)} recorded hours, expected {count}"
    return hours


def _random_walk_hours(price: float, *, seed: int, last_open_ms: int, count: int) -> list[Candle]:
    rng = random.Random(seed)
    out: list[Candle] = []
    p = price
    for i in range(count):
        p *= 1 + rng.gauss(0.0, 0.004)
        t = last_open_ms - (count - 1 - i) * HOUR_MS
        out.append(Candle(open_time_ms=t, open=p, high=p * 1.001, low=p * 0.999, close=p, volume=100.0))
    return out


async def _feed_hours(rig: ScriptedRig, symbol: str, hours: list[Candle]) -> None:
    assert rig.system is not None
    for c in hours:
        await rig.system._risk_send.send(CandleClosed(symbol=symbol, interval="1h", candle=c, source="rest"))


async def _signal(
    rig: ScriptedRig, symbol: str, side: Side, *, stop_pct: float = STOP_PCT
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A valid signal on the next candle: (its risk_rejected event, its risk_approved event)."""
    assert rig.system is not None
    candle = await next_candle(rig)
    price = float(rig.prices[symbol])
    report = signal_report(symbol, candle, side=side, price=price, stop_pct=stop_pct)
    await rig.system._risk_send.send(report)
    await trio.sleep(SETTLE_S)
    mine = [e for e in rig.events() if e.get("candle_open_time_ms") == candle and e.get("symbol") == symbol]
    rejected = [e for e in mine if e["event"] == "risk_rejected"]
    approved = [e for e in mine if e["event"] == "risk_approved"]
    assert len(rejected) + len(approved) == 1, mine
    return (rejected or [None])[0], (approved or [None])[0]


def _log_return_corr(a: list[Candle], b: list[Candle], lookback: int) -> float:
    ra = np.diff(np.log([c.close for c in a]))[-lookback:]
    rb = np.diff(np.log([c.close for c in b]))[-lookback:]
    return float(np.corrcoef(ra, rb)[0, 1])


async def _stop(rig: ScriptedRig, nursery: trio.Nursery) -> int:
    assert rig.system is not None
    rig.system.stop_requested.set()
    await rig.system.stopped.wait()
    nursery.cancel_scope.cancel()
    return rig.system.exit_code


async def test_ac7_correlated_long_rejected_short_only_under_the_hedge_rule(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = default_config()
    lookback = cfg.timeframes.corr_lookback_hours
    count = lookback + 3
    btc = _recorded_hours("BTCUSDT", last_open_ms=CORR_LAST_OPEN_MS, count=count)
    eth = _recorded_hours("ETHUSDT", last_open_ms=CORR_LAST_OPEN_MS, count=count)
    corr = _log_return_corr(btc, eth, lookback)
    assert corr > cfg.risk.correlation_threshold  # the recorded window is what the scenario needs
    prices = {"BTCUSDT": Decimal(repr(btc[-1].close)), "ETHUSDT": Decimal(repr(eth[-1].close))}
    rig = ScriptedRig(
        root=tmp_path,
        cfg=cfg,
        symbols=list(prices),
        prices=dict(prices),
        # ten minutes after the last recorded hour closed
        epoch_ms=CORR_LAST_OPEN_MS + HOUR_MS + 10 * 60_000,
    )
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            await _feed_hours(rig, "BTCUSDT", btc)
            await _feed_hours(rig, "ETHUSDT", eth)
            btc_trade = await open_position(rig, "BTCUSDT", Side.LONG, stop_pct=STOP_PCT)
            placed = len(rig.events("order_placed"))
            long_rej, long_ok = await _signal(rig, "ETHUSDT", Side.LONG)
            # A short that would more than offset the long (a quarter of the stop distance: four
            # times the notional) does not reduce the net beta-weighted exposure: refused.
            over_rej, over_ok = await _signal(rig, "ETHUSDT", Side.SHORT, stop_pct=STOP_PCT / 4)
            placed_after_rejections = len(rig.events("order_placed"))
            # A short of a similar size reduces it: the hedge rule lets it through.
            hedge_rej, hedge_ok = await _signal(rig, "ETHUSDT", Side.SHORT)
            await rig.wait_until(lambda: len(system.execution.open_trades()) == 2, timeout=60.0)
            code = await _stop(rig, nursery)

        assert btc_trade
        assert long_ok is None
        assert long_rej is not None
        assert long_rej["code"] == "CORRELATION"
        assert long_rej["values"]["held_symbol"] == "BTCUSDT"
        assert abs(long_rej["values"]["corr"] - corr) < 1e-6
        assert long_rej["values"]["correlation_threshold"] == cfg.risk.correlation_threshold
        assert over_ok is None
        assert over_rej is not None
        assert over_rej["code"] == "CORRELATION"
        before = over_rej["values"]["net_beta_notional_before"]
        after = over_rej["values"]["net_beta_notional_after"]
        assert before > 0
        assert abs(after) >= abs(before)
        assert placed_after_rejections == placed  # nothing sent for the two rejected signals
        assert hedge_rej is None, hedge_rej
        assert hedge_ok is not None
        assert hedge_ok["side"] == "SHORT"
        assert hedge_ok["bucket_corr_max"] > cfg.risk.correlation_threshold
        assert set(hedge_ok["correlation_bucket"].split("+")) == {"BTCUSDT", "ETHUSDT"}
        assert code == 0
    finally:
        rig.close()


AC8_PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000"), "SOLUSDT": Decimal("200")}
AC8_START_MS = 1_735_725_600_000  # 2025-01-01 10:00 UTC


async def _ac8_rig(tmp_path: Path, cfg: BotConfig, nursery: trio.Nursery) -> ScriptedRig:
    rig = ScriptedRig(
        root=tmp_path, cfg=cfg, symbols=list(AC8_PRICES), prices=dict(AC8_PRICES), epoch_ms=AC8_START_MS
    )
    await rig.start(nursery)
    last_open = AC8_START_MS - AC8_START_MS % HOUR_MS - HOUR_MS
    for seed, (symbol, price) in enumerate(AC8_PRICES.items()):
        hours = _random_walk_hours(
            float(price), seed=seed, last_open_ms=last_open, count=cfg.timeframes.corr_lookback_hours + 3
        )
        await _feed_hours(rig, symbol, hours)
    return rig


async def test_ac8_max_positions(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    cfg = default_config()
    assert cfg.risk.max_open_positions == 2
    rig: ScriptedRig | None = None
    try:
        async with trio.open_nursery() as nursery:
            rig = await _ac8_rig(tmp_path, cfg, nursery)
            system = rig.system
            assert system is not None
            await open_position(rig, "BTCUSDT", Side.LONG, stop_pct=STOP_PCT)
            await open_position(rig, "ETHUSDT", Side.SHORT, stop_pct=STOP_PCT)
            placed = len(rig.events("order_placed"))
            long_rej, long_ok = await _signal(rig, "SOLUSDT", Side.LONG)
            short_rej, short_ok = await _signal(rig, "SOLUSDT", Side.SHORT)
            snap = system.risk.snapshot()
            placed_after = len(rig.events("order_placed"))
            await _stop(rig, nursery)

        for rej, ok in ((long_rej, long_ok), (short_rej, short_ok)):
            assert ok is None
            assert rej is not None
            assert rej["code"] == "MAX_POSITIONS"
            assert rej["values"] == {"open_positions": 2.0, "max_open_positions": 2.0}
        assert snap.positions == 2
        assert snap.rejections.get("MAX_POSITIONS") == 2
        assert placed_after == placed
    finally:
        if rig is not None:
            rig.close()


async def test_ac8_same_direction_and_total_open_risk(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Three positions allowed, two per direction: a third long hits SAME_DIRECTION; a short on
    the third symbol fits the count but not the total worst-case open risk (2 × ~1 % + 1 % > 2.5 %)."""
    base = default_config()
    cfg = msgspec.structs.replace(
        base,
        risk=msgspec.structs.replace(base.risk, max_open_positions=3, max_same_direction_positions=2),
    )
    rig: ScriptedRig | None = None
    try:
        async with trio.open_nursery() as nursery:
            rig = await _ac8_rig(tmp_path, cfg, nursery)
            system = rig.system
            assert system is not None
            await open_position(rig, "BTCUSDT", Side.LONG, stop_pct=STOP_PCT)
            await open_position(rig, "ETHUSDT", Side.LONG, stop_pct=STOP_PCT)
            placed = len(rig.events("order_placed"))
            open_risk = system.risk.snapshot().open_risk_usd
            same_rej, same_ok = await _signal(rig, "SOLUSDT", Side.LONG)
            risk_rej, risk_ok = await _signal(rig, "SOLUSDT", Side.SHORT)
            snap = system.risk.snapshot()
            placed_after = len(rig.events("order_placed"))
            await _stop(rig, nursery)

        assert same_ok is None
        assert same_rej is not None
        assert same_rej["code"] == "SAME_DIRECTION"
        assert same_rej["values"]["same_direction_positions"] == 2.0
        assert same_rej["values"]["max_same_direction_positions"] == 2.0
        assert risk_ok is None
        assert risk_rej is not None
        assert risk_rej["code"] == "TOTAL_OPEN_RISK"
        values = risk_rej["values"]
        assert abs(values["open_risk_usd"] - open_risk) < 1e-6
        assert values["limit_usd"] == snap.equity_usd * cfg.risk.max_total_open_risk_pct
        assert (
            values["open_risk_usd"]
            <= values["limit_usd"]
            < values["open_risk_usd"] + values["new_trade_risk_usd"]
        )
        assert snap.positions == 2
        assert placed_after == placed
    finally:
        if rig is not None:
            rig.close()

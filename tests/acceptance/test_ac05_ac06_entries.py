"""AC5 / AC6: the entry limit's TTL, through the whole system on the paper exchange.

The signal is a real one: recorded BTCUSDT klines up to the candle on which the strategies signal a
SHORT (2025-01-02 04:35 UTC, close 95701.3); what follows is crafted so that the market either never
trades through the limit (AC5) or trades through it on tiny volume, so that the paper exchange's
volume cap (`execution.paper_volume_participation`) fills it only partly (AC6).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio
import trio.testing

from futures_actor.core.config import default_config
from futures_actor.core.ids import trade_key
from futures_actor.core.types import INTERVAL_MS, Candle
from futures_actor.data.klines_csv import read_klines_candles
from futures_actor.state.log_schema import validate_trade_record

from .harness import KLINES, Harness, write_klines

SYMBOL = "BTCUSDT"
PRICE = 95_000.0
SIGNAL_OPEN_MS = 1_735_792_500_000  # 2025-01-02 04:35 UTC: the 5m candle whose close signals a SHORT
SIGNAL_CLOSE = 95_701.3  # its close: the entry limit (SELL)
FIVE_MS = INTERVAL_MS["5m"]
HOUR_MS = INTERVAL_MS["1h"]
ROWS_5M = 632  # rows 0..631 of the recorded file: up to and including the signal candle
SETTLE_S = 600.0
# Base volume of the candle after the signal: 0.2 BTC per millisecond, so that the volume cap fills
# a part of the ~0.11 BTC all-in sized entry before the TTL.
PARTIAL_VOLUME = 8.0


def _real_prefix() -> tuple[list[Candle], list[Candle]]:
    five = read_klines_candles(KLINES / f"{SYMBOL}-5m.csv.gz", interval="5m", limit=ROWS_5M)
    assert five[-1].open_time_ms == SIGNAL_OPEN_MS
    assert five[-1].close == SIGNAL_CLOSE
    hours = read_klines_candles(KLINES / f"{SYMBOL}-1h.csv.gz", interval="1h", limit=ROWS_5M // 12 + 2)
    return five, [h for h in hours if h.open_time_ms + HOUR_MS <= SIGNAL_OPEN_MS + FIVE_MS]


def _hourly(five: Sequence[Candle]) -> list[Candle]:
    """1h candles aggregated from 5m ones (complete hours only)."""
    groups: dict[int, list[Candle]] = {}
    for c in five:
        groups.setdefault(c.open_time_ms - c.open_time_ms % HOUR_MS, []).append(c)
    return [
        Candle(
            open_time_ms=t,
            open=g[0].open,
            high=max(c.high for c in g),
            low=min(c.low for c in g),
            close=g[-1].close,
            volume=sum(c.volume for c in g),
        )
        for t, g in sorted(groups.items())
        if len(g) == HOUR_MS // FIVE_MS
    ]


def _write(h: Harness, tail: list[Candle]) -> None:
    """The recorded prefix, then `tail` (5m candles from the signal candle's close on)."""
    five, hours = _real_prefix()
    assert tail[0].open_time_ms == SIGNAL_OPEN_MS + FIVE_MS
    all_five = five + tail
    first_crafted_hour = hours[-1].open_time_ms + HOUR_MS
    crafted_hours = [c for c in _hourly(all_five) if c.open_time_ms >= first_crafted_hour]
    write_klines(h.klines_dir, SYMBOL, "5m", all_five)
    write_klines(h.klines_dir, SYMBOL, "1h", hours + crafted_hours)


def _candle(t: int, o: float, hi: float, lo: float, c: float, v: float) -> Candle:
    return Candle(open_time_ms=t, open=o, high=hi, low=lo, close=c, volume=v)


async def _run(h: Harness) -> None:
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        assert h.feed is not None
        await h.feed.done.wait()
        await trio.sleep(SETTLE_S)  # let the last decisions, orders and TTLs settle
        code = await h.stop()
        nursery.cancel_scope.cancel()
    assert code == 0


def _of_trade(events: list[dict[str, Any]], trade_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("trade_id") == trade_id]


def _first_plan(h: Harness) -> dict[str, Any]:
    plans = h.events("plan_accepted")
    assert plans, "the recorded signal candle produced no plan"
    first = plans[0]
    assert (first["symbol"], first["side"], first["entry"]) == (
        SYMBOL,
        "SHORT",
        str(Decimal(repr(SIGNAL_CLOSE))),
    )
    return first


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def test_ac05_entry_not_filled_twice_is_cancelled_with_one_retry_and_no_market_order(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = default_config()
    h = Harness.create(tmp_path, cfg=cfg, symbols=[SYMBOL], prices={SYMBOL: PRICE})
    below = SIGNAL_CLOSE * 0.998  # the market stays below the SELL limit: it never trades through
    tail = [_candle(SIGNAL_OPEN_MS + FIVE_MS * (i + 1), below, below, below, below, 500.0) for i in range(4)]
    _write(h, tail)
    try:
        await _run(h)
        plan = _first_plan(h)
        tid = plan["trade_id"]
        placed = _of_trade(h.events("order_placed"), tid)
        expired = _of_trade(h.events("entry_ttl_expired"), tid)
        cancelled = _of_trade(h.events("order_canceled"), tid)
        filled = _of_trade(h.events("order_filled"), tid)
        records = [r for r in h.trade_records() if r["trade_id"] == tid]
        market = [e for e in h.events("order_placed") if e["type"] == "MARKET"]
        open_orders = h.paper_state()["open_orders"]
    finally:
        h.close()

    ttl_ms = int(cfg.execution.limit_ttl_seconds * 1000)
    # exactly one retry, with a new client id, each attempt cancelled at its TTL
    assert [(e["role"], e["type"]) for e in placed] == [("ENTRY", "LIMIT"), ("ENTRY", "LIMIT")]
    first_cid, retry_cid = placed[0]["cid"], placed[1]["cid"]
    assert first_cid != retry_cid
    assert [e["cid"] for e in expired] == [first_cid, retry_cid]
    assert [e["cid"] for e in cancelled] == [first_cid, retry_cid]
    t0 = _ms(placed[0]["timestamp"])
    assert _ms(expired[0]["timestamp"]) - t0 == ttl_ms
    assert _ms(placed[1]["timestamp"]) - t0 == ttl_ms
    assert _ms(expired[1]["timestamp"]) - t0 == 2 * ttl_ms
    # no fill, no market order at all, nothing left working
    assert filled == []
    assert market == []
    assert [o["client_id"] for o in open_orders if o["client_id"] in (first_cid, retry_cid)] == []
    # one trade record, reason TIMEOUT
    assert len(records) == 1
    assert validate_trade_record(records[0]) == []
    assert records[0]["result"]["reason"] == "TIMEOUT"


async def test_ac06_partial_entry_at_ttl_protects_the_filled_quantity_and_exits(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = default_config()
    h = Harness.create(tmp_path, cfg=cfg, symbols=[SYMBOL], prices={SYMBOL: PRICE})
    t1 = SIGNAL_OPEN_MS + FIVE_MS
    c = SIGNAL_CLOSE
    # Opens at the limit and trades through it from the first millisecond on so little volume that
    # participation x the volume traded before the TTL is only part of the order (paper fills are
    # capped by it); the path reaches the next knot only after the TTL. Then the next candles
    # fall steadily (open = high: no bounce) on ample volume, through the target.
    tail = [_candle(t1, c, c + 100.0, c - 400.0, c - 300.0, PARTIAL_VOLUME)]
    price = c - 300.0
    for i in range(1, 12):
        nxt = price * 0.996
        tail.append(_candle(t1 + FIVE_MS * i, price, price, nxt, nxt, 5_000.0))
        price = nxt
    _write(h, tail)
    try:
        await _run(h)
        plan = _first_plan(h)
        tid = plan["trade_id"]
        placed = _of_trade(h.events("order_placed"), tid)
        stops = _of_trade(h.events("stop_placed"), tid)
        fills = _of_trade(h.events("order_filled"), tid)
        expired = _of_trade(h.events("entry_ttl_expired"), tid)
        cancelled = _of_trade(h.events("order_canceled"), tid)
        records = [r for r in h.trade_records() if r["trade_id"] == tid]
        open_orders = h.paper_state()["open_orders"]
        assert h.paper is not None
        positions = await h.paper.positions()
    finally:
        h.close()

    entries = [e for e in placed if e["role"] == "ENTRY"]
    assert len(entries) == 1  # a partial fill is not retried
    entry_cid = entries[0]["cid"]
    plan_qty = Decimal(entries[0]["qty"])
    entry_fills = [f for f in fills if f["cid"] == entry_cid]
    filled = Decimal(entry_fills[-1]["cum_qty"])
    assert Decimal(0) < filled < plan_qty  # partial
    # the rest is cancelled at the TTL
    assert [e["cid"] for e in expired] == [entry_cid]
    assert entry_cid in [e["cid"] for e in cancelled]
    assert _ms(expired[0]["timestamp"]) - _ms(entries[0]["timestamp"]) == int(
        cfg.execution.limit_ttl_seconds * 1000
    )
    # the protective orders follow the filled quantity as the partial fill grows, never beyond it,
    # and the last ones cover exactly the final filled quantity
    targets = [e for e in placed if e["role"] == "TARGET"]
    assert stops
    assert targets
    stop_sizes = [Decimal(s["qty"]) for s in stops]
    target_sizes = [Decimal(t["qty"]) for t in targets]
    assert stop_sizes == sorted(stop_sizes)
    assert stop_sizes[-1] == filled
    assert target_sizes[-1] == filled
    assert max(stop_sizes + target_sizes) == filled
    assert all(t["reduce_only"] is True and t["side"] == "BUY" for t in targets)
    # the position is managed to its exit: one record, flat, nothing left working for this trade
    assert len(records) == 1
    record = records[0]
    assert validate_trade_record(record) == []
    assert record["result"]["reason"] in ("TP", "TRAIL")
    assert record["result"]["pnl_usd"] > 0
    assert positions == []
    assert [o for o in open_orders if trade_key(tid) in o["client_id"]] == []

"""AC1: a paper run of 7 simulated days over recorded klines, four symbols, through every actor.

No crash, no unhandled exception in events.jsonl, a daily report for each of the 7 UTC days, and
every trade the execution actor closed has exactly one schema-valid trade record (ids unique).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from futures_actor.core.config import default_config
from futures_actor.state.log_schema import validate_trade_record

from .harness import Harness, copy_real_klines

PRICES = {"BTCUSDT": 93_000.0, "ETHUSDT": 3_400.0, "SOLUSDT": 190.0, "XRPUSDT": 2.1}
DAYS = 7
# After the last candle: long enough for the 00:05 UTC daily report of the last day.
SETTLE_S = 900.0
HEARTBEAT_S = 3600.0


def _is_entry(cid: str) -> bool:
    """Entry client ids end in `-E<attempt>` (core/ids.py)."""
    return cid.rsplit("-", 1)[-1].startswith("E")


def _day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


async def test_seven_paper_days_on_four_symbols(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    base = default_config()
    # As `--replay` does: nobody watches the heartbeat file of a simulated week.
    cfg = msgspec.structs.replace(
        base, health=msgspec.structs.replace(base.health, heartbeat_interval_seconds=HEARTBEAT_S)
    )
    h = Harness.create(tmp_path, cfg=cfg, symbols=list(PRICES), prices=PRICES)
    for s in h.symbols:
        copy_real_klines(h.klines_dir, s, days=DAYS)
    async with trio.open_nursery() as nursery:
        system = await h.start(nursery)
        assert h.feed is not None
        first_day = _day_of(h.feed.epoch_ms)
        await h.feed.done.wait()
        await trio.sleep(SETTLE_S)
        still_open = {lc.trade_id for lc in system.execution.open_trades()}
        code = await h.stop()
    try:
        records = h.trade_records()
        events = h.events()
    finally:
        h.close()

    assert code == 0
    # No crash, no unhandled exception: nothing critical, no actor crashed or dropped, no error at all.
    bad = [e for e in events if e["level"] in ("error", "critical") or e["event"].endswith("_crashed")]
    assert bad == []
    assert not [e for e in events if "exception" in e or "exc_info" in e]
    names = {e["event"] for e in events}
    assert {"system_started", "shutdown_done"} <= names

    # The run traded: the real market over a week produced decisions, fills and closed trades.
    assert [e for e in events if e["event"] == "order_filled"]
    closed_ids = [e["trade_id"] for e in events if e["event"] == "trade_closed"]
    assert len(closed_ids) >= 3

    # Exactly one schema-valid record per closed trade, and none for a trade still open.
    ids = [r["trade_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert len(closed_ids) == len(set(closed_ids))
    assert sorted(ids) == sorted(closed_ids)
    assert not set(ids) & still_open
    for r in records:
        assert validate_trade_record(r) == [], r["trade_id"]
        assert r["mode"] == "PAPER_LIVE"
        assert r["symbol"] in PRICES
    # Every trade whose entry filled and that is no longer open was closed with a record.
    filled = {e["trade_id"] for e in events if e["event"] == "order_filled" and _is_entry(e["cid"])}
    assert filled - still_open <= set(ids)
    assert filled & set(ids)

    # A daily report for each of the 7 simulated UTC days, naming exactly that day's records.
    by_close_day: dict[str, set[str]] = {}
    for r in records:
        by_close_day.setdefault(r["timestamp_close"][:10], set()).add(r["trade_id"])
    for offset in range(DAYS):
        day = (first_day + timedelta(days=offset)).isoformat()
        path = h.log_dir / f"daily-report-{day}.json"
        assert path.is_file(), day
        report = json.loads(path.read_text(encoding="utf-8"))
        assert report["day"] == day
        assert set(report["trade_ids"]) <= set(ids)
        assert set(report["trade_ids"]) <= by_close_day.get(day, set()), day
        # The day's PnL is measured between the 00:00 UTC equities around the day (issue 10 #5).
        start, end = report["day_start_equity_usd"], report["day_end_equity_usd"]
        assert report["day_pnl_pct"] == pytest.approx((end - start) / start)
        if report["realized_pnl_usd"] != 0.0:
            assert report["day_pnl_pct"] != 0.0, day

"""Issue 10 #6 through the whole system (PAPER_LIVE replay on the bundled sample): strategies that a
losing record made ineligible keep trading on the shadow paper book; their shadow trades are journaled
in the shadow log, feed the performance windows, and never reach the live book, exposure or calendar."""

from __future__ import annotations

import uuid
from pathlib import Path

import trio
import trio.testing

from futures_actor.core.clock import ManualWallClock, iso_utc
from futures_actor.core.config import BotConfig, default_config
from futures_actor.core.strategies import STRATEGY_NAMES
from futures_actor.state.journal import TradeJournal

from .harness import Harness

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
SEEDED_PER_STRATEGY = 25


def _seed_losses(log_dir: Path, cfg: BotConfig, before_ms: int) -> None:
    """A losing record (−1 R each) for every strategy, a month before the replay starts."""
    base = before_ms - 30 * 86_400_000
    journal = TradeJournal(directory=log_dir, cfg=cfg.logging, clock=ManualWallClock(base))
    n = 0
    try:
        for strategy in STRATEGY_NAMES:
            for _ in range(SEEDED_PER_STRATEGY):
                n += 1
                t = base + n * 3_600_000
                journal.write(
                    {
                        "trade_id": str(uuid.UUID(int=n)),
                        "timestamp_open": iso_utc(t),
                        "timestamp_close": iso_utc(t + 1_800_000),
                        "mode": "PAPER_LIVE",
                        "symbol": "BTCUSDT",
                        "strategy": strategy,
                        "regime": "TREND" if strategy != "range_mean_reversion" else "RANGE",
                        "direction": "LONG",
                        "confidence_score": 0.8,
                        "entry_order": {
                            "client_order_id": f"seed-{n}",
                            "type": "LIMIT",
                            "requested_price": 60000.0,
                            "filled_avg_price": 60000.0,
                            "filled_qty": 0.016,
                            "status": "FILLED",
                        },
                        "risk": {
                            "equity_usd": 10000.0,
                            "risk_pct": 0.01,
                            "risk_usd": 100.0,
                            "stop_pct": 0.01,
                            "stop_price": 59400.0,
                            "take_profit_price": 61200.0,
                            "leverage": 2.0,
                            "notional_usd": 960.0,
                            "margin_used_usd": 480.0,
                        },
                        "costs": {"fees_usd": 0.6, "funding_usd": 0.0, "slippage_pct": 0.0},
                        "result": {
                            "exit_price": 59400.0,
                            "pnl_usd": -100.0,
                            "pnl_r_multiple": -1.0,
                            "reason": "SL",
                        },
                        "portfolio": {
                            "open_positions_count": 1,
                            "open_risk_pct": 0.01,
                            "correlation_bucket": "BTCUSDT",
                            "bucket_corr_max": 0.0,
                        },
                    }
                )
    finally:
        journal.close()


async def test_ineligible_strategies_trade_on_the_shadow_book(
    tmp_path: Path, sample_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from tests.actors.test_replay_funding import _copy_sample

    cfg = default_config()
    h = Harness.create(tmp_path, cfg=cfg, symbols=SYMBOLS)
    _copy_sample(sample_dir, h.klines_dir, SYMBOLS, days=10)
    first_ms = 1_735_603_200_000  # 2024-12-31 00:00 UTC, the sample's first candle
    _seed_losses(h.log_dir, cfg, first_ms)
    try:
        async with trio.open_nursery() as nursery:
            system = await h.start(nursery)
            assert set(system.risk.ineligible_strategies()) <= set(STRATEGY_NAMES)
            assert h.feed is not None
            await h.feed.done.wait()
            await trio.sleep(600)
            ineligible = system.risk.ineligible_strategies()
            assert system.shadow is not None
            shadow_records = list(system.shadow.journal.records())
            assert await h.stop() == 0
            nursery.cancel_scope.cancel()
        entries = [e for e in h.events("shadow_entry") if e.get("why") == "INELIGIBLE"]
        learned = h.events("shadow_trade_recorded")
        live_plans = [e for e in h.events("plan_accepted") if e["actor"] == "execution"]
        shadow_plans = [e for e in h.events("plan_accepted") if e["actor"] == "shadow_execution"]
        live_records = h.trade_records()
        untrailed = [e for e in h.events("symbol_actor_missing") if e["actor"] == "shadow_execution"]
        shadow_amends = [e for e in h.events("stop_moved") if e["actor"] == "shadow_execution"]
        shadow_margin_rejections = [
            e
            for e in h.events("order_rejected")
            if e["actor"] == "shadow_execution" and e.get("code") in (-2018, -2019)
        ]
    finally:
        h.close()
    assert entries, "no ineligible strategy traded on the shadow book"
    assert shadow_records, "no shadow trade closed"
    assert learned
    assert all(e["shadow"] is True for e in learned)
    assert shadow_plans  # the shadow book's execution is marked in the log
    shadow_ids = {e["trade_id"] for e in entries}
    # The live book never saw a shadow plan.
    assert not shadow_ids & {e["trade_id"] for e in live_plans}
    assert not shadow_ids & {r["trade_id"] for r in live_records}
    # The summary / report view: who is ineligible, and since when (or eligible again: logged).
    assert isinstance(ineligible, dict)
    # The shadow book is not capital: its account never decides whether a shadow trade happens (the
    # full replay had 11,343 shadow entries rejected -2019 against 489 filled, so windows never moved).
    assert shadow_margin_rejections == []
    filled = [r for r in shadow_records if r["entry_order"]["filled_qty"] > 0]
    assert filled, "no shadow entry filled"
    # Shadow trades are trailed like live ones (no symbol actor trails them: the shadow trailer does);
    # without it every shadow breakout ended SL at -1 R.
    assert untrailed == []
    assert shadow_amends, "no shadow stop was ever trailed"
    assert "TRAIL" in {r["result"]["reason"] for r in filled}


async def test_a_shadow_account_of_an_earlier_version_is_topped_up(
    tmp_path: Path, sample_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A shadow account persisted with the live book's balance (before `shadow_balance_usdt`) would
    keep refusing shadow entries for margin: it is topped up at start, and says so."""
    from decimal import Decimal

    from futures_actor.actors.shadow_book import SHADOW_DB_FILE
    from futures_actor.binance.paper import PAPER_BLOB_NAME, PaperExchange
    from futures_actor.state.store import BlobKind, StateStore
    from tests.actors.test_replay_funding import _copy_sample

    cfg = default_config()
    h = Harness.create(tmp_path, cfg=cfg, symbols=SYMBOLS[:1])
    _copy_sample(sample_dir, h.klines_dir, SYMBOLS[:1], days=1)
    h.state_dir.mkdir(parents=True, exist_ok=True)
    old = StateStore.open(h.state_dir / SHADOW_DB_FILE, durable=False)
    paper = PaperExchange.from_store(old, cfg=cfg.execution, rules=h.rules, now_ms=lambda: 0)
    old.put_blob(BlobKind.PAPER, PAPER_BLOB_NAME, paper.snapshot(), now_ms=0)
    old.close()
    try:
        async with trio.open_nursery() as nursery:
            system = await h.start(nursery)
            assert system.shadow is not None
            wallet = system.shadow.paper.engine.account.wallet_balance
            assert await h.stop() == 0
            nursery.cancel_scope.cancel()
        topped = h.events("shadow_balance_topped_up")
    finally:
        h.close()
    assert wallet == Decimal(repr(cfg.performance.shadow_balance_usdt))
    assert len(topped) == 1
    assert topped[0]["wallet"] == str(Decimal(repr(cfg.execution.paper_initial_balance_usdt)))

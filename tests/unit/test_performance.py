"""Performance windows over closed trades, rebuilt from trade-log records (BOT_SPEC §7)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from futures_actor.core.config import PerformanceConfig
from futures_actor.core.performance import (
    STANDING_LOW_SAMPLE,
    STANDING_NEGATIVE_EXPECTANCY,
    STANDING_OK,
    ClosedTrade,
    PerformanceTracker,
    TradeRecordError,
    closed_trade_from_record,
    compute_stats,
)
from futures_actor.core.strategies import RANGE_MEAN_REVERSION, TREND_BREAKOUT, TREND_PULLBACK
from futures_actor.core.types import Regime

PERF = PerformanceConfig()


def record(
    trade_id: str,
    *,
    strategy: str = TREND_PULLBACK,
    regime: str = "TREND",
    r: float = 1.0,
    pnl_usd: float | None = None,
    equity: float = 10_000.0,
    fees: float = 1.0,
    funding: float = 0.5,
    reason: str = "TP",
    filled_qty: float = 0.01,
) -> dict[str, Any]:
    """A full trades.jsonl record (LOG_SCHEMA.json shape)."""
    return {
        "trade_id": trade_id,
        "timestamp_open": "2025-01-01T00:00:00.000Z",
        "timestamp_close": "2025-01-01T01:00:00.000Z",
        "mode": "PAPER_LIVE",
        "symbol": "BTCUSDT",
        "strategy": strategy,
        "regime": regime,
        "direction": "LONG",
        "confidence_score": 0.6,
        "entry_order": {
            "client_order_id": f"fa-{trade_id}-E1",
            "type": "LIMIT",
            "requested_price": 100.0,
            "filled_avg_price": 100.0 if filled_qty else 0.0,
            "filled_qty": filled_qty,
            "status": "FILLED" if filled_qty else "CANCELED",
        },
        "risk": {
            "equity_usd": equity,
            "risk_pct": 0.01,
            "risk_usd": 100.0,
            "stop_pct": 0.01,
            "stop_price": 99.0,
            "take_profit_price": 101.5,
            "leverage": 2.0,
            "notional_usd": 10_000.0,
            "margin_used_usd": 5_000.0,
        },
        "costs": {"fees_usd": fees, "funding_usd": funding, "slippage_pct": 0.0},
        "result": {
            "exit_price": 101.0,
            "pnl_usd": r * 100.0 if pnl_usd is None else pnl_usd,
            "pnl_r_multiple": r,
            "reason": reason,
        },
        "portfolio": {
            "open_positions_count": 0,
            "open_risk_pct": 0.0,
            "correlation_bucket": "",
            "bucket_corr_max": 0.0,
        },
    }


def trade(
    trade_id: str, r: float, *, pnl_usd: float = 0.0, regime: Regime = Regime.TREND, **kw: Any
) -> ClosedTrade:
    return ClosedTrade(
        trade_id=trade_id,
        strategy=kw.get("strategy", TREND_PULLBACK),
        regime=regime,
        r_multiple=r,
        pnl_usd=pnl_usd,
        equity_usd=kw.get("equity_usd", 1000.0),
        fees_usd=kw.get("fees_usd", 0.0),
        funding_usd=kw.get("funding_usd", 0.0),
        reason="TP" if r > 0 else "SL",
    )


class TestRecordParsing:
    """Trade-log records: closed trades, non-trades (no fill) and precise errors."""

    def test_valid_record(self) -> None:
        t = closed_trade_from_record(
            record("t1", r=-1.0, pnl_usd=-101.5, fees=1.2, funding=-0.3, reason="SL")
        )
        assert t == ClosedTrade(
            trade_id="t1",
            strategy=TREND_PULLBACK,
            regime=Regime.TREND,
            r_multiple=-1.0,
            pnl_usd=-101.5,
            equity_usd=10_000.0,
            fees_usd=1.2,
            funding_usd=-0.3,
            reason="SL",
        )

    def test_timeout_without_fill_is_not_a_closed_trade(self) -> None:
        assert closed_trade_from_record(record("t2", r=0.0, reason="TIMEOUT", filled_qty=0.0)) is None

    def test_timeout_with_a_partial_fill_counts(self) -> None:
        t = closed_trade_from_record(record("t3", r=0.2, reason="TIMEOUT", filled_qty=0.004))
        assert t is not None
        assert t.r_multiple == 0.2

    @pytest.mark.parametrize(
        ("path", "value", "field"),
        [
            (("result", "pnl_r_multiple"), None, "result.pnl_r_multiple"),
            (("result", "pnl_r_multiple"), True, "result.pnl_r_multiple"),
            (("result", "pnl_usd"), "12", "result.pnl_usd"),
            (("risk", "equity_usd"), 0.0, "risk.equity_usd"),
            (("costs", "fees_usd"), float("nan"), "costs.fees_usd"),
            (("regime",), "SIDEWAYS", "regime"),
            (("strategy",), "", "strategy"),
            (("result", "reason"), "STOP", "result.reason"),
            (("entry_order", "filled_qty"), -1.0, "entry_order.filled_qty"),
        ],
    )
    def test_bad_field_is_named(self, path: tuple[str, ...], value: Any, field: str) -> None:
        rec = record("bad")
        node = rec
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        with pytest.raises(TradeRecordError) as err:
            closed_trade_from_record(rec)
        assert err.value.field == field
        assert err.value.trade_id == "bad"
        assert field in str(err.value)

    def test_missing_field_is_named(self) -> None:
        rec = record("m1")
        del rec["costs"]["funding_usd"]
        with pytest.raises(TradeRecordError, match=r"costs\.funding_usd"):
            closed_trade_from_record(rec)


class TestWindowStats:
    """N, win rate, expectancy, average win/loss, costs, compounded drawdown, score, confidence."""

    def test_stats_exact(self) -> None:
        trades = [
            trade("a", 1.0, fees_usd=1.0, funding_usd=0.25),
            trade("b", -1.0, fees_usd=2.0, funding_usd=-0.5),
            trade("c", 2.0, fees_usd=0.5),
            trade("d", 0.0),
        ]
        s = compute_stats(trades, PERF)
        assert s.n == 4
        assert s.win_rate == 0.5
        assert s.expectancy_r == 0.5
        assert s.avg_win_r == 1.5
        assert s.avg_loss_r == -1.0
        assert s.fees_total == 3.5
        assert s.funding_total == -0.25
        assert s.max_drawdown_pct == 0.0

    def test_compounded_drawdown_score_and_confidence(self) -> None:
        # +10 %, -20 %, +5 %, -10 % of equity: curve 1.1, 0.88, 0.924, 0.8316; trough from peak 1.1.
        trades = [
            trade("a", 1.0, pnl_usd=100.0),
            trade("b", -2.0, pnl_usd=-200.0),
            trade("c", 0.5, pnl_usd=50.0),
            trade("d", -1.0, pnl_usd=-100.0),
        ]
        s = compute_stats(trades, PERF)
        mdd = (1.1 - 1.1 * 0.8 * 1.05 * 0.9) / 1.1
        assert s.max_drawdown_pct == pytest.approx(mdd, rel=1e-12)
        assert s.expectancy_r == pytest.approx(-0.375)
        assert s.score == pytest.approx(-0.375 - 0.5 * mdd)
        assert s.confidence == pytest.approx(0.5 + s.score)

    def test_drawdown_uses_each_trades_own_equity(self) -> None:
        s = compute_stats([trade("a", -1.0, pnl_usd=-50.0, equity_usd=500.0)], PERF)
        assert s.max_drawdown_pct == pytest.approx(0.1)

    def test_confidence_is_clamped_and_scaled(self) -> None:
        big = compute_stats([trade(str(i), 3.0) for i in range(5)], PERF)
        assert big.confidence == 1.0
        bad = compute_stats([trade(str(i), -3.0) for i in range(5)], PERF)
        assert bad.confidence == 0.0
        scaled = compute_stats([trade("x", 0.2)], PerformanceConfig(score_scale=2.0))
        assert scaled.confidence == pytest.approx(0.6)

    def test_empty_window(self) -> None:
        s = compute_stats([], PERF)
        assert (s.n, s.win_rate, s.expectancy_r, s.max_drawdown_pct, s.confidence) == (0, 0.0, 0.0, 0.0, 0.5)


class TestWindows:
    """FIFO windows per strategy and per (strategy, regime); duplicates count once."""

    def test_fifo_keeps_the_last_window_trades(self) -> None:
        tracker = PerformanceTracker(cfg=PerformanceConfig(window_trades=3, min_trades_before_confidence=2))
        for i, r in enumerate([5.0, 4.0, 1.0, -1.0, 2.0]):
            tracker.record(trade(f"t{i}", r))
        assert [t.trade_id for t in tracker.window(TREND_PULLBACK)] == ["t2", "t3", "t4"]
        assert tracker.stats(TREND_PULLBACK).expectancy_r == pytest.approx(2.0 / 3.0)

    def test_regime_windows_are_separate(self) -> None:
        tracker = PerformanceTracker(cfg=PERF)
        tracker.record(trade("a", 1.0, regime=Regime.TREND))
        tracker.record(trade("b", -1.0, regime=Regime.RANGE))
        tracker.record(trade("c", 2.0, regime=Regime.TREND, strategy=TREND_BREAKOUT))
        assert tracker.stats(TREND_PULLBACK).n == 2
        assert tracker.stats(TREND_PULLBACK, Regime.TREND).expectancy_r == 1.0
        assert tracker.stats(TREND_PULLBACK, Regime.RANGE).expectancy_r == -1.0
        assert tracker.stats(TREND_BREAKOUT).n == 1
        assert tracker.stats(RANGE_MEAN_REVERSION).n == 0

    def test_duplicate_trade_id_counts_once(self) -> None:
        tracker = PerformanceTracker(cfg=PERF)
        assert tracker.record(trade("a", 1.0))
        assert not tracker.record(trade("a", 1.0))
        assert tracker.stats(TREND_PULLBACK).n == 1


class TestStanding:
    """Window choice, low-sample cap and negative-expectancy ineligibility."""

    def test_regime_window_used_once_it_has_enough_trades(self) -> None:
        tracker = PerformanceTracker(cfg=PERF)
        for i in range(19):
            tracker.record(trade(f"t{i}", 1.0, regime=Regime.TREND))
        for i in range(10):
            tracker.record(trade(f"r{i}", -0.5, regime=Regime.RANGE))
        st = tracker.standing(TREND_PULLBACK, Regime.TREND)
        assert st.window == "GLOBAL"
        assert st.stats.n == 29
        assert not st.low_sample
        tracker.record(trade("t19", 1.0, regime=Regime.TREND))
        st = tracker.standing(TREND_PULLBACK, Regime.TREND)
        assert st.window == "REGIME"
        assert st.stats.n == 20
        assert st.stats.expectancy_r == 1.0
        assert st.status == STANDING_OK

    def test_low_sample_confidence_is_capped(self) -> None:
        tracker = PerformanceTracker(cfg=PERF)
        for i in range(19):
            tracker.record(trade(f"t{i}", 2.0))
        st = tracker.standing(TREND_PULLBACK, Regime.TREND)
        assert st.stats.confidence == 1.0
        assert st.low_sample
        assert st.confidence == 0.5
        assert st.status == STANDING_LOW_SAMPLE
        assert st.eligible

    def test_non_positive_expectancy_on_enough_trades_is_ineligible(self) -> None:
        tracker = PerformanceTracker(cfg=PERF)
        for i in range(20):
            tracker.record(trade(f"t{i}", 1.0 if i % 2 else -1.0))
        st = tracker.standing(TREND_PULLBACK, Regime.TREND)
        assert st.stats.expectancy_r == 0.0
        assert st.status == STANDING_NEGATIVE_EXPECTANCY
        assert not st.eligible
        lenient = PerformanceTracker(cfg=PerformanceConfig(disable_if_expectancy_negative=False))
        for t in tracker.window(TREND_PULLBACK):
            lenient.record(t)
        assert lenient.standing(TREND_PULLBACK, Regime.TREND).eligible


class TestRebuild:
    """Rebuilding from the trade log equals feeding the same trades one by one."""

    def test_rebuild_equals_incremental(self) -> None:
        rng = random.Random(7)
        cfg = PerformanceConfig(window_trades=10, min_trades_before_confidence=5)
        records = []
        for i in range(300):
            filled = 0.0 if rng.random() < 0.1 else 0.01
            records.append(
                record(
                    f"t{i}",
                    strategy=rng.choice([TREND_PULLBACK, TREND_BREAKOUT, RANGE_MEAN_REVERSION]),
                    regime=rng.choice(["TREND", "RANGE", "HIGH_VOL"]),
                    r=round(rng.uniform(-1.2, 2.5), 3),
                    pnl_usd=round(rng.uniform(-120, 250), 2),
                    equity=rng.uniform(9_000, 11_000),
                    reason="TIMEOUT" if filled == 0 else rng.choice(["TP", "SL", "TRAIL"]),
                    filled_qty=filled,
                )
            )
        rebuilt, report = PerformanceTracker.from_records(records, cfg=cfg)
        assert report.rejected == []
        assert report.counted + report.not_closed == 300
        assert report.not_closed == sum(1 for r in records if r["entry_order"]["filled_qty"] == 0)

        incremental = PerformanceTracker(cfg=cfg)
        for rec in records:
            t = closed_trade_from_record(rec)
            if t is not None:
                incremental.record(t)
        assert rebuilt.windows() == incremental.windows()
        for name in (TREND_PULLBACK, TREND_BREAKOUT, RANGE_MEAN_REVERSION):
            assert rebuilt.stats(name) == incremental.stats(name)
            for regime in Regime:
                assert rebuilt.standing(name, regime) == incremental.standing(name, regime)
        # The windows really are FIFO over the latest closed trades.
        latest = [
            r["trade_id"]
            for r in records
            if r["strategy"] == TREND_PULLBACK and r["entry_order"]["filled_qty"]
        ]
        assert [t.trade_id for t in rebuilt.window(TREND_PULLBACK)] == latest[-10:]

    def test_bad_records_are_reported_not_fatal_and_not_counted(self) -> None:
        bad = record("b1")
        bad["result"]["pnl_r_multiple"] = "oops"
        records: list[Any] = [record("a1"), bad, ["not", "an", "object"], record("a1"), record("a2", r=-1.0)]
        tracker, report = PerformanceTracker.from_records(records, cfg=PERF)
        assert report.counted == 2
        assert report.duplicates == 1
        assert [(i.index, i.trade_id) for i in report.rejected] == [(1, "b1"), (2, "")]
        assert "result.pnl_r_multiple" in report.rejected[0].message
        assert tracker.stats(TREND_PULLBACK).n == 2

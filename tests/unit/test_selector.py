"""Strategy selection among candidate signals: confidence, exploration, stability (BOT_SPEC §7)."""

from __future__ import annotations

import msgspec
import pytest

from futures_actor.core.config import BotConfig, PerformanceConfig, default_config
from futures_actor.core.models import Signal
from futures_actor.core.performance import ClosedTrade, PerformanceTracker
from futures_actor.core.selector import (
    LOCKOUT_BELOW_THRESHOLD,
    LOCKOUT_INELIGIBLE,
    LOCKOUT_LOW_SAMPLE,
    NO_TRADE_BELOW_THRESHOLD,
    NO_TRADE_INELIGIBLE,
    NO_TRADE_LOW_SAMPLE,
    NO_TRADE_NO_CANDIDATES,
    NO_TRADE_REGIME,
    NO_TRADE_SWITCH_LIMIT,
    SELECT_EXPLORATION,
    SELECT_FIRST_CHOICE,
    SELECT_KEPT_PREFERRED,
    SELECT_PREFERRED,
    SELECT_SWITCHED,
    SELECT_SWITCHED_INELIGIBLE,
    SelectionInputError,
    SelectionState,
    StrategySelector,
    decode_selection_state,
    encode_selection_state,
    utc_day,
)
from futures_actor.core.strategies import RANGE_MEAN_REVERSION, TREND_BREAKOUT, TREND_PULLBACK
from futures_actor.core.types import Regime, Side

CFG = default_config()
DAY_MS = 86_400_000
NOW = 20_000 * DAY_MS + 12 * 3_600_000  # midday UTC


def signal(
    strategy: str, *, regime: Regime = Regime.TREND, conf: float = 0.7, symbol: str = "BTCUSDT"
) -> Signal:
    return Signal(
        symbol=symbol,
        strategy=strategy,
        side=Side.LONG,
        regime=regime,
        regime_confidence=conf,
        candle_open_time_ms=NOW - 300_000,
        entry_price=100.0,
        stop_price=99.0,
        stop_pct=0.01,
        target_price=101.5,
        leverage=2.0,
        atr=0.5,
    )


def seed(tracker: PerformanceTracker, strategy: str, rs: list[float], regime: Regime = Regime.TREND) -> None:
    """Closed trades with zero pnl_usd, so that drawdown is 0 and score == expectancy."""
    start = len(tracker.window(strategy))
    for i, r in enumerate(rs):
        tracker.record(
            ClosedTrade(
                trade_id=f"{strategy}-{regime}-{start + i}-{r}",
                strategy=strategy,
                regime=regime,
                r_multiple=r,
                pnl_usd=0.0,
                equity_usd=10_000.0,
                fees_usd=0.0,
                funding_usd=0.0,
                reason="TP",
            )
        )


def make(cfg: BotConfig = CFG, mode: str = "LIVE") -> StrategySelector:
    return StrategySelector(cfg=cfg, mode=mode)  # type: ignore[arg-type]


def tracker_with(**expectancy: float) -> PerformanceTracker:
    """20 trades per named strategy at the given constant R."""
    tracker = PerformanceTracker(cfg=CFG.performance)
    for name, r in expectancy.items():
        seed(tracker, name, [r] * 20)
    return tracker


class TestRanking:
    """Confidence, threshold and ranking by net expectancy and score."""

    def test_first_choice_and_confidence_score_is_the_minimum(self) -> None:
        tracker = tracker_with(trend_pullback=0.3)
        d = make().select(
            [signal(TREND_PULLBACK, conf=0.7)], tracker=tracker, state=SelectionState(), now_ms=NOW
        )
        assert d.outcome == "SELECTED"
        assert d.code == SELECT_FIRST_CHOICE
        assert d.signal is not None
        assert d.signal.strategy == TREND_PULLBACK
        assert d.strategy_confidence == pytest.approx(0.8)
        assert d.confidence_score == 0.7  # min(regime 0.7, strategy 0.8)
        assert d.state.preferred == {"TREND": TREND_PULLBACK}
        assert d.state.utc_day == utc_day(NOW)
        assert d.state.switches == {"TREND": 0}
        assert not d.switched

    def test_strategy_confidence_can_be_the_binding_one(self) -> None:
        tracker = tracker_with(trend_pullback=0.1)
        d = make().select(
            [signal(TREND_PULLBACK, conf=0.9)], tracker=tracker, state=SelectionState(), now_ms=NOW
        )
        assert d.confidence_score == pytest.approx(0.6)

    @pytest.mark.parametrize(("r", "outcome"), [(0.06, "SELECTED"), (0.04, "NO_TRADE")])
    def test_threshold(self, r: float, outcome: str) -> None:
        tracker = tracker_with(trend_pullback=r)  # confidence 0.5 + r against threshold 0.55
        d = make().select([signal(TREND_PULLBACK)], tracker=tracker, state=SelectionState(), now_ms=NOW)
        assert d.outcome == outcome
        if outcome == "NO_TRADE":
            assert d.code == NO_TRADE_BELOW_THRESHOLD
            assert "< threshold 0.55" in d.message
            assert d.signal is None
            assert d.state.preferred == {}

    def test_highest_score_wins(self) -> None:
        tracker = tracker_with(trend_pullback=0.3, trend_breakout=0.6)
        cands = [signal(TREND_PULLBACK), signal(TREND_BREAKOUT)]
        d = make().select(cands, tracker=tracker, state=SelectionState(), now_ms=NOW)
        assert d.strategy == TREND_BREAKOUT
        assert [c.strategy for c in d.candidates] == [TREND_PULLBACK, TREND_BREAKOUT]
        assert all(c.qualified for c in d.candidates)

    def test_drawdown_penalty_enters_the_score(self) -> None:
        tracker = PerformanceTracker(cfg=CFG.performance)
        seed(tracker, TREND_PULLBACK, [0.3] * 20)
        # Breakout: higher expectancy but a 40 % drawdown: score 0.4 - 0.5 x 0.4 = 0.2 < 0.3.
        for i in range(20):
            tracker.record(
                ClosedTrade(
                    trade_id=f"b{i}",
                    strategy=TREND_BREAKOUT,
                    regime=Regime.TREND,
                    r_multiple=0.4,
                    pnl_usd=-4_000.0 if i == 0 else 0.0,
                    equity_usd=10_000.0,
                    fees_usd=0.0,
                    funding_usd=0.0,
                    reason="TP",
                )
            )
        cands = [signal(TREND_BREAKOUT), signal(TREND_PULLBACK)]
        d = make().select(cands, tracker=tracker, state=SelectionState(), now_ms=NOW)
        assert d.strategy == TREND_PULLBACK
        assert d.candidates[0].score == pytest.approx(0.2)

    def test_non_positive_expectancy_is_ineligible(self) -> None:
        tracker = tracker_with(trend_pullback=-0.1)
        d = make().select([signal(TREND_PULLBACK)], tracker=tracker, state=SelectionState(), now_ms=NOW)
        assert d.outcome == "NO_TRADE"
        assert d.code == NO_TRADE_INELIGIBLE
        assert d.candidates[0].status == "NEGATIVE_EXPECTANCY"

    def test_regime_window_preferred_over_global(self) -> None:
        tracker = PerformanceTracker(cfg=CFG.performance)
        seed(tracker, TREND_PULLBACK, [0.5] * 20, Regime.TREND)
        seed(tracker, TREND_PULLBACK, [-0.9] * 30, Regime.RANGE)  # global expectancy < 0
        assert tracker.stats(TREND_PULLBACK).expectancy_r < 0
        d = make().select([signal(TREND_PULLBACK)], tracker=tracker, state=SelectionState(), now_ms=NOW)
        assert d.outcome == "SELECTED"
        assert d.candidates[0].window == "REGIME"

    def test_strategy_not_configured_for_the_regime_is_not_selected(self) -> None:
        tracker = tracker_with(range_mean_reversion=0.5)
        d = make().select([signal(RANGE_MEAN_REVERSION)], tracker=tracker, state=SelectionState(), now_ms=NOW)
        assert d.outcome == "NO_TRADE"
        assert d.candidates[0].status == "NOT_CONFIGURED"


class TestExploration:
    """Low-sample strategies: capped, never in LIVE, exploration in PAPER_LIVE."""

    def test_live_never_trades_a_low_sample_strategy(self) -> None:
        tracker = PerformanceTracker(cfg=CFG.performance)
        seed(tracker, TREND_PULLBACK, [3.0] * 19)
        d = make(mode="LIVE").select(
            [signal(TREND_PULLBACK)], tracker=tracker, state=SelectionState(), now_ms=NOW
        )
        assert d.outcome == "NO_TRADE"
        assert d.code == NO_TRADE_LOW_SAMPLE
        assert d.candidates[0].strategy_confidence == 0.5  # capped
        assert "LIVE never explores" in d.message

    def test_paper_explores_with_the_regime_confidence(self) -> None:
        tracker = PerformanceTracker(cfg=CFG.performance)
        seed(tracker, TREND_PULLBACK, [-1.0] * 5)
        state = SelectionState(
            utc_day=utc_day(NOW), preferred={"TREND": TREND_BREAKOUT}, switches={"TREND": 1}
        )
        d = make(mode="PAPER_LIVE").select(
            [signal(TREND_PULLBACK, conf=0.66)], tracker=tracker, state=state, now_ms=NOW
        )
        assert d.outcome == "EXPLORATION"
        assert d.code == SELECT_EXPLORATION
        assert d.exploration
        assert d.confidence_score == 0.66
        assert d.strategy_confidence == 0.0
        assert d.state == state  # no preference change, no switch counted

    def test_exploration_switched_off(self) -> None:
        cfg = msgspec.structs.replace(CFG, performance=PerformanceConfig(paper_exploration=False))
        tracker = PerformanceTracker(cfg=cfg.performance)
        d = make(cfg, mode="PAPER_LIVE").select(
            [signal(TREND_PULLBACK)], tracker=tracker, state=SelectionState(), now_ms=NOW
        )
        assert d.outcome == "NO_TRADE"
        assert d.code == NO_TRADE_LOW_SAMPLE

    def test_qualified_strategy_beats_exploration_and_fewest_trades_explores_first(self) -> None:
        tracker = tracker_with(trend_pullback=0.5)
        cands = [signal(TREND_BREAKOUT), signal(TREND_PULLBACK)]
        d = make(mode="PAPER_LIVE").select(cands, tracker=tracker, state=SelectionState(), now_ms=NOW)
        assert d.outcome == "SELECTED"
        assert d.strategy == TREND_PULLBACK

        low = PerformanceTracker(cfg=CFG.performance)
        seed(low, TREND_PULLBACK, [1.0] * 3)
        seed(low, TREND_BREAKOUT, [1.0] * 1)
        d = make(mode="PAPER_LIVE").select(
            [signal(TREND_PULLBACK), signal(TREND_BREAKOUT)], tracker=low, state=SelectionState(), now_ms=NOW
        )
        assert d.strategy == TREND_BREAKOUT

    def test_no_exploration_when_the_regime_itself_is_below_threshold(self) -> None:
        d = make(mode="PAPER_LIVE").select(
            [signal(TREND_PULLBACK, conf=0.54)],
            tracker=PerformanceTracker(cfg=CFG.performance),
            state=SelectionState(),
            now_ms=NOW,
        )
        assert d.outcome == "NO_TRADE"


class TestStability:
    """At most max_strategy_switches_per_day preference changes per regime per UTC day."""

    def test_switch_limit_across_utc_midnight(self) -> None:
        tracker = tracker_with(trend_pullback=0.3, trend_breakout=0.6)
        sel = make()
        day0 = 20_000 * DAY_MS
        state = SelectionState(
            utc_day=utc_day(day0 - 1), preferred={"TREND": TREND_PULLBACK}, switches={"TREND": 1}
        )

        # New day: the counter resets and breakout (better score) takes over: switch 1 of 1.
        d = sel.select([signal(TREND_BREAKOUT)], tracker=tracker, state=state, now_ms=day0 + 60_000)
        assert (d.outcome, d.code, d.switched) == ("SELECTED", SELECT_SWITCHED, True)
        assert d.preferred_before == TREND_PULLBACK
        assert d.state.preferred["TREND"] == TREND_BREAKOUT
        assert d.state.switches["TREND"] == 1
        state = d.state

        # Pullback alone, same day: switching back would be a second switch.
        late = day0 + DAY_MS - 1
        d = sel.select([signal(TREND_PULLBACK)], tracker=tracker, state=state, now_ms=late)
        assert (d.outcome, d.code) == ("NO_TRADE", NO_TRADE_SWITCH_LIMIT)
        assert d.state == state
        assert "switch limit" in d.message

        # A range-regime preference has its own counter.
        range_tracker = tracker_with(range_mean_reversion=0.5)
        d = sel.select(
            [signal(RANGE_MEAN_REVERSION, regime=Regime.RANGE)],
            tracker=range_tracker,
            state=state,
            now_ms=late,
        )
        assert d.code == SELECT_FIRST_CHOICE

        # Next UTC day, first millisecond: allowed again.
        d = sel.select([signal(TREND_PULLBACK)], tracker=tracker, state=state, now_ms=day0 + DAY_MS)
        assert (d.outcome, d.code) == ("SELECTED", SELECT_SWITCHED)
        assert d.state.utc_day == utc_day(day0) + 1
        assert d.state.switches["TREND"] == 1

    def test_at_the_limit_the_preferred_signal_is_kept(self) -> None:
        tracker = tracker_with(trend_pullback=0.3, trend_breakout=0.6)
        state = SelectionState(
            utc_day=utc_day(NOW), preferred={"TREND": TREND_PULLBACK}, switches={"TREND": 1}
        )
        d = make().select(
            [signal(TREND_BREAKOUT), signal(TREND_PULLBACK)], tracker=tracker, state=state, now_ms=NOW
        )
        assert (d.code, d.strategy) == (SELECT_KEPT_PREFERRED, TREND_PULLBACK)
        assert d.state.switches["TREND"] == 1

    def test_same_preferred_is_not_a_switch(self) -> None:
        tracker = tracker_with(trend_pullback=0.3)
        state = SelectionState(
            utc_day=utc_day(NOW), preferred={"TREND": TREND_PULLBACK}, switches={"TREND": 1}
        )
        d = make().select([signal(TREND_PULLBACK)], tracker=tracker, state=state, now_ms=NOW)
        assert (d.code, d.switched, d.switches_today) == (SELECT_PREFERRED, False, 1)

    def test_ineligible_preferred_may_be_replaced_beyond_the_limit(self) -> None:
        tracker = tracker_with(trend_pullback=-0.2, trend_breakout=0.6)
        state = SelectionState(
            utc_day=utc_day(NOW), preferred={"TREND": TREND_PULLBACK}, switches={"TREND": 1}
        )
        d = make().select([signal(TREND_BREAKOUT)], tracker=tracker, state=state, now_ms=NOW)
        assert (d.outcome, d.code) == ("SELECTED", SELECT_SWITCHED_INELIGIBLE)
        assert d.state.switches["TREND"] == 2
        assert d.state.preferred["TREND"] == TREND_BREAKOUT

    def test_zero_switches_per_day(self) -> None:
        cfg = msgspec.structs.replace(CFG, performance=PerformanceConfig(max_strategy_switches_per_day=0))
        tracker = tracker_with(trend_pullback=0.3, trend_breakout=0.6)
        state = SelectionState(utc_day=-1, preferred={"TREND": TREND_PULLBACK})
        d = make(cfg).select([signal(TREND_BREAKOUT)], tracker=tracker, state=state, now_ms=NOW)
        assert d.code == NO_TRADE_SWITCH_LIMIT

    def test_state_persists_and_restores(self) -> None:
        tracker = tracker_with(trend_pullback=0.3, trend_breakout=0.6)
        sel = make()
        d = sel.select([signal(TREND_BREAKOUT)], tracker=tracker, state=SelectionState(), now_ms=NOW)
        d = sel.select([signal(TREND_PULLBACK)], tracker=tracker, state=d.state, now_ms=NOW + 1)
        assert (d.code, d.state.switches["TREND"]) == (SELECT_SWITCHED, 1)
        restored = decode_selection_state(encode_selection_state(d.state))
        assert restored == d.state
        again = sel.select([signal(TREND_BREAKOUT)], tracker=tracker, state=restored, now_ms=NOW + 2)
        assert again.code == NO_TRADE_SWITCH_LIMIT  # the restored counter still binds
        assert again == sel.select([signal(TREND_BREAKOUT)], tracker=tracker, state=d.state, now_ms=NOW + 2)


class TestInputs:
    """Empty candidates, the no-trade regime and inconsistent candidate sets."""

    def test_unknown_mode_is_refused(self) -> None:
        with pytest.raises(SelectionInputError, match="mode"):
            make(mode="live")

    def test_no_candidates(self) -> None:
        d = make().select([], tracker=tracker_with(), state=SelectionState(), now_ms=NOW)
        assert (d.outcome, d.code) == ("NO_TRADE", NO_TRADE_NO_CANDIDATES)
        assert d.state.utc_day == utc_day(NOW)

    def test_chop_is_never_selected(self) -> None:
        tracker = tracker_with(trend_pullback=0.5)
        d = make().select(
            [signal(TREND_PULLBACK, regime=Regime.CHOP_NO_TRADE)],
            tracker=tracker,
            state=SelectionState(),
            now_ms=NOW,
        )
        assert (d.outcome, d.code) == ("NO_TRADE", NO_TRADE_REGIME)

    @pytest.mark.parametrize(
        ("second", "field"),
        [
            (signal(TREND_BREAKOUT, symbol="ETHUSDT"), "symbol"),
            (signal(TREND_BREAKOUT, regime=Regime.RANGE), "regime"),
            (signal(TREND_BREAKOUT, conf=0.8), "regime_confidence"),
            (signal(TREND_PULLBACK), "strategy"),
        ],
    )
    def test_inconsistent_candidates_raise(self, second: Signal, field: str) -> None:
        with pytest.raises(SelectionInputError) as err:
            make().select(
                [signal(TREND_PULLBACK), second], tracker=tracker_with(), state=SelectionState(), now_ms=NOW
            )
        assert err.value.field == field

    def test_decision_is_a_loggable_explanation(self) -> None:
        tracker = tracker_with(trend_pullback=0.3, trend_breakout=-0.5)
        d = make().select(
            [signal(TREND_PULLBACK), signal(TREND_BREAKOUT)],
            tracker=tracker,
            state=SelectionState(),
            now_ms=NOW,
        )
        doc = msgspec.json.decode(msgspec.json.encode(d))
        assert doc["outcome"] == "SELECTED"
        assert doc["threshold"] == 0.55
        assert doc["candidates"][1]["status"] == "NEGATIVE_EXPECTANCY"
        assert doc["candidates"][1]["expectancy_r"] == pytest.approx(-0.5)
        assert doc["state"]["preferred"] == {"TREND": TREND_PULLBACK}


class TestLockedOut:
    """Rule 6 (issue 10 #6): who cannot trade live for a reason only its own record can lift."""

    def test_eligible_but_below_threshold_by_performance_is_locked_out(self) -> None:
        tracker = tracker_with(trend_pullback=0.04)  # eligible, 20 trades, confidence 0.54 < 0.55
        sel = make(mode="PAPER_LIVE")
        d = sel.select(
            [signal(TREND_PULLBACK, conf=0.8)], tracker=tracker, state=SelectionState(), now_ms=NOW
        )
        assert d.code == NO_TRADE_BELOW_THRESHOLD
        (lo,) = sel.locked_out(d)
        assert lo.why == LOCKOUT_BELOW_THRESHOLD
        assert lo.candidate.strategy == TREND_PULLBACK
        assert lo.candidate.strategy_confidence == pytest.approx(0.54)

    def test_ineligible_is_locked_out_and_the_selected_one_never(self) -> None:
        tracker = tracker_with(trend_pullback=-0.2, trend_breakout=0.3)
        sel = make()
        d = sel.select(
            [signal(TREND_PULLBACK), signal(TREND_BREAKOUT)],
            tracker=tracker,
            state=SelectionState(),
            now_ms=NOW,
        )
        assert d.strategy == TREND_BREAKOUT
        assert [(lo.candidate.strategy, lo.why) for lo in sel.locked_out(d)] == [
            (TREND_PULLBACK, LOCKOUT_INELIGIBLE)
        ]

    def test_regime_below_threshold_locks_nobody_out(self) -> None:
        tracker = tracker_with(trend_pullback=0.04, trend_breakout=-0.2)
        sel = make()
        d = sel.select(
            [signal(TREND_PULLBACK, conf=0.5), signal(TREND_BREAKOUT, conf=0.5)],
            tracker=tracker,
            state=SelectionState(),
            now_ms=NOW,
        )
        assert d.outcome == "NO_TRADE"
        assert sel.locked_out(d) == []

    def test_low_sample_is_locked_out_only_where_nothing_explores(self) -> None:
        fresh = PerformanceTracker(cfg=CFG.performance)
        live = make(mode="LIVE")
        d = live.select([signal(TREND_PULLBACK)], tracker=fresh, state=SelectionState(), now_ms=NOW)
        assert d.code == NO_TRADE_LOW_SAMPLE
        assert [lo.why for lo in live.locked_out(d)] == [LOCKOUT_LOW_SAMPLE]
        paper = make(mode="PAPER_LIVE")
        d = paper.select([signal(TREND_PULLBACK)], tracker=fresh, state=SelectionState(), now_ms=NOW)
        assert d.code == SELECT_EXPLORATION
        assert paper.locked_out(d) == []
        off = msgspec.structs.replace(
            CFG, performance=msgspec.structs.replace(CFG.performance, paper_exploration=False)
        )
        no_explore = make(cfg=off, mode="PAPER_LIVE")
        d = no_explore.select([signal(TREND_PULLBACK)], tracker=fresh, state=SelectionState(), now_ms=NOW)
        assert [lo.why for lo in no_explore.locked_out(d)] == [LOCKOUT_LOW_SAMPLE]

    def test_not_configured_for_the_regime_is_not_locked_out(self) -> None:
        tracker = tracker_with(range_mean_reversion=-0.2)
        sel = make()
        d = sel.select([signal(RANGE_MEAN_REVERSION)], tracker=tracker, state=SelectionState(), now_ms=NOW)
        assert sel.locked_out(d) == []

    def test_state_of_an_older_version_loads_without_blocked_since(self) -> None:
        old = b'{"utc_day":1,"preferred":{"TREND":"trend_pullback"},"switches":{},"ineligible_since":{}}'
        state = decode_selection_state(old)
        assert state.blocked_since == {}
        again = decode_selection_state(
            encode_selection_state(msgspec.structs.replace(state, blocked_since={"trend_pullback": 5}))
        )
        assert again.blocked_since == {"trend_pullback": 5}

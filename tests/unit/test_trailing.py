"""The ATR trailing-stop rule: activation, monotonicity, no stop through the price (BOT_SPEC §6)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from futures_actor.core.trailing import (
    TRAIL_INVALID_INPUT,
    TRAIL_MOVED,
    TRAIL_NOT_ACTIVE,
    TRAIL_NOT_TIGHTER,
    TRAIL_WOULD_TRIGGER,
    TrailingInputError,
    TrailingRule,
    start_trailing,
    update_trailing,
)
from futures_actor.core.types import Side

PULLBACK_RULE = TrailingRule(atr_mult=2.0, after_r=1.0)
BREAKOUT_RULE = TrailingRule(atr_mult=2.5, after_r=0.0)


class TestActivation:
    """Trailing starts after `after_r` R (sticky), or from the fill when after_r is 0."""

    def test_long_activates_at_one_r_then_stays_active(self) -> None:
        state = start_trailing(side=Side.LONG, entry_price=100.0, stop_price=99.0)
        up = update_trailing(state, PULLBACK_RULE, close=100.9, atr=0.3)
        assert up.code == TRAIL_NOT_ACTIVE
        assert up.new_stop is None
        assert not up.state.active
        up = update_trailing(up.state, PULLBACK_RULE, close=101.0, atr=0.3)
        assert up.code == TRAIL_MOVED
        assert up.new_stop == pytest.approx(100.4, abs=1e-12)  # 101 - 2 x 0.3
        assert up.state.active
        assert up.state.stop_price == up.new_stop
        # Back to 0.5 R: still active, but the candidate 100.3 is below the stop.
        up = update_trailing(up.state, PULLBACK_RULE, close=100.5, atr=0.1)
        assert up.code == TRAIL_NOT_TIGHTER
        assert up.state.active
        assert up.state.stop_price == pytest.approx(100.4, abs=1e-12)
        # Below the activation level, the trail still moves because activation is sticky.
        up = update_trailing(up.state, PULLBACK_RULE, close=100.8, atr=0.1)
        assert up.code == TRAIL_MOVED
        assert up.new_stop == pytest.approx(100.6, abs=1e-12)

    def test_short_mirrors_long(self) -> None:
        state = start_trailing(side=Side.SHORT, entry_price=100.0, stop_price=101.0)
        assert update_trailing(state, PULLBACK_RULE, close=99.1, atr=0.3).code == TRAIL_NOT_ACTIVE
        up = update_trailing(state, PULLBACK_RULE, close=99.0, atr=0.3)
        assert up.code == TRAIL_MOVED
        assert up.new_stop == pytest.approx(99.6, abs=1e-12)
        up = update_trailing(up.state, PULLBACK_RULE, close=99.5, atr=0.1)
        assert up.code == TRAIL_NOT_TIGHTER  # 99.7 would loosen a short's stop

    def test_breakout_trails_from_the_fill_even_at_a_loss(self) -> None:
        state = start_trailing(side=Side.LONG, entry_price=100.0, stop_price=99.0)
        up = update_trailing(state, BREAKOUT_RULE, close=99.8, atr=0.2)
        assert up.code == TRAIL_MOVED
        assert up.new_stop == pytest.approx(99.3, abs=1e-12)
        assert up.values["profit_r"] == pytest.approx(-0.2)


class TestNoImmediateTrigger:
    """A level at or through the current (mark) price is not proposed."""

    def test_long_level_through_the_mark_is_not_proposed(self) -> None:
        state = start_trailing(side=Side.LONG, entry_price=100.0, stop_price=99.0, active=True)
        up = update_trailing(state, PULLBACK_RULE, close=101.0, atr=0.3, current_price=100.3)
        assert up.code == TRAIL_WOULD_TRIGGER
        assert up.new_stop is None
        assert up.state.stop_price == 99.0
        at = update_trailing(state, PULLBACK_RULE, close=101.0, atr=0.3, current_price=100.4)
        assert at.code == TRAIL_WOULD_TRIGGER
        just_above = update_trailing(state, PULLBACK_RULE, close=101.0, atr=0.3, current_price=100.41)
        assert just_above.code == TRAIL_MOVED

    def test_short_level_through_the_mark_is_not_proposed(self) -> None:
        state = start_trailing(side=Side.SHORT, entry_price=100.0, stop_price=101.0, active=True)
        up = update_trailing(state, PULLBACK_RULE, close=99.0, atr=0.3, current_price=99.7)
        assert up.code == TRAIL_WOULD_TRIGGER
        assert (
            update_trailing(state, PULLBACK_RULE, close=99.0, atr=0.3, current_price=99.5).code == TRAIL_MOVED
        )

    def test_zero_atr_would_put_the_stop_on_the_close(self) -> None:
        state = start_trailing(side=Side.LONG, entry_price=100.0, stop_price=99.0, active=True)
        assert update_trailing(state, PULLBACK_RULE, close=101.0, atr=0.0).code == TRAIL_WOULD_TRIGGER


class TestBadInput:
    """Bad candle data never raises and never moves the stop; bad set-up raises naming the field."""

    @pytest.mark.parametrize(
        ("close", "atr", "price"),
        [
            (math.nan, 0.3, None),
            (101.0, math.inf, None),
            (101.0, -0.1, None),
            (0.0, 0.3, None),
            (101.0, 0.3, -1.0),
        ],
    )
    def test_invalid_candle(self, close: float, atr: float, price: float | None) -> None:
        state = start_trailing(side=Side.LONG, entry_price=100.0, stop_price=99.0, active=True)
        up = update_trailing(state, PULLBACK_RULE, close=close, atr=atr, current_price=price)
        assert up.code == TRAIL_INVALID_INPUT
        assert up.new_stop is None
        assert up.state == state

    def test_stop_on_the_wrong_side_is_refused(self) -> None:
        with pytest.raises(TrailingInputError, match="stop_price") as err:
            start_trailing(side=Side.LONG, entry_price=100.0, stop_price=100.0)
        assert err.value.field == "stop_price"
        with pytest.raises(TrailingInputError, match="stop_price"):
            start_trailing(side=Side.SHORT, entry_price=100.0, stop_price=99.0)
        with pytest.raises(TrailingInputError, match="entry_price"):
            start_trailing(side=Side.SHORT, entry_price=math.nan, stop_price=99.0)

    def test_bad_rule_is_refused(self) -> None:
        with pytest.raises(TrailingInputError, match="atr_mult"):
            TrailingRule(atr_mult=0.0, after_r=1.0)
        with pytest.raises(TrailingInputError, match="after_r"):
            TrailingRule(atr_mult=2.0, after_r=-1.0)


_step = st.tuples(
    st.floats(min_value=-0.05, max_value=0.05),  # close change, relative
    st.floats(min_value=0.0, max_value=0.03),  # ATR relative to the close
    st.floats(min_value=-0.02, max_value=0.02),  # mark price offset from the close, relative
)


class TestMonotoneProperty:
    """Over arbitrary price/ATR paths the stop never loosens and is never proposed through the price."""

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(
        side=st.sampled_from([Side.LONG, Side.SHORT]),
        stop_pct=st.floats(min_value=0.001, max_value=0.1),
        atr_mult=st.floats(min_value=0.1, max_value=5.0),
        after_r=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
        path=st.lists(_step, min_size=1, max_size=60),
    )
    def test_stop_is_monotone_and_never_through_price(
        self,
        side: Side,
        stop_pct: float,
        atr_mult: float,
        after_r: float,
        path: list[tuple[float, float, float]],
    ) -> None:
        rule = TrailingRule(atr_mult=atr_mult, after_r=after_r)
        entry = 100.0
        state = start_trailing(side=side, entry_price=entry, stop_price=entry * (1 - side.sign * stop_pct))
        close = entry
        for change, atr_rel, mark_rel in path:
            close = max(1e-6, close * (1 + change))
            price = close * (1 + mark_rel)
            before = state.stop_price
            up = update_trailing(state, rule, close=close, atr=close * atr_rel, current_price=price)
            assert side.sign * (up.state.stop_price - before) >= 0  # never loosens
            if up.new_stop is None:
                assert up.state.stop_price == before
            else:
                assert up.code == TRAIL_MOVED
                assert up.new_stop == up.state.stop_price
                assert side.sign * (up.new_stop - before) > 0  # strictly toward profit
                assert side.sign * (price - up.new_stop) > 0  # strictly on the safe side of the price
            if up.code == TRAIL_NOT_ACTIVE:
                assert not up.state.active
            if state.active:
                assert up.state.active  # sticky
            state = up.state

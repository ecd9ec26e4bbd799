"""Daily stop, weekly stop, pause and reduced risk on the UTC calendar (BOT_SPEC §8.8–8.10, AC3, AC4)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from futures_actor.core.config import RiskConfig
from futures_actor.core.risk_state import (
    DAY_MS,
    ClosedPnl,
    RiskState,
    RiskStateError,
    apply_weekly_stop,
    closed_pnl_from_records,
    decode_risk_state,
    derive_risk_state,
    encode_risk_state,
    entry_gate,
    new_risk_state,
    record_realized_pnl,
    risk_pct_now,
    roll,
    shadow_only,
    utc_day_start,
    utc_week_start,
)

HOUR_MS = 3_600_000
CFG = RiskConfig()


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


# 2025-01-08 is a Wednesday; its week started Monday 2025-01-06.
WED_NOON = ms(2025, 1, 8, 12)


class TestCalendar:
    """Days start 00:00 UTC, weeks Monday 00:00 UTC."""

    def test_day_start(self) -> None:
        assert utc_day_start(WED_NOON) == ms(2025, 1, 8)
        assert utc_day_start(ms(2025, 1, 8)) == ms(2025, 1, 8)

    @pytest.mark.parametrize("day", range(6, 13))
    def test_week_start_is_monday(self, day: int) -> None:
        assert utc_week_start(ms(2025, 1, day, 23, 59)) == ms(2025, 1, 6)

    def test_next_monday_starts_new_week(self) -> None:
        assert utc_week_start(ms(2025, 1, 13)) == ms(2025, 1, 13)

    def test_roll_new_day_resets_day_only(self) -> None:
        s = new_risk_state(now_ms=WED_NOON, equity_usd=10_000)
        s = record_realized_pnl(s, pnl_usd=-100, now_ms=WED_NOON + HOUR_MS, equity_usd=10_000, cfg=CFG)
        s2 = roll(s, now_ms=ms(2025, 1, 9, 0, 1), equity_usd=9_900)
        assert s2.day_start_ms == ms(2025, 1, 9)
        assert s2.day_start_equity == 9_900
        assert s2.realized_pnl_day == 0
        assert s2.realized_pnl_week == -100
        assert s2.week_start_equity == 10_000

    def test_roll_new_week(self) -> None:
        s = new_risk_state(now_ms=WED_NOON, equity_usd=10_000)
        s = record_realized_pnl(s, pnl_usd=-100, now_ms=WED_NOON, equity_usd=10_000, cfg=CFG)
        s2 = roll(s, now_ms=ms(2025, 1, 13, 0, 0, 1), equity_usd=9_800)
        assert (s2.week_start_ms, s2.week_start_equity, s2.realized_pnl_week) == (ms(2025, 1, 13), 9_800, 0)

    def test_roll_same_day_or_clock_back_is_identity(self) -> None:
        s = new_risk_state(now_ms=WED_NOON, equity_usd=10_000)
        assert roll(s, now_ms=WED_NOON + HOUR_MS, equity_usd=1) is s
        assert roll(s, now_ms=WED_NOON - 2 * DAY_MS, equity_usd=1) is s


class TestDailyStop:
    """AC3: at −4 % realized today, no entries until the next UTC day."""

    def test_daily_stop_then_next_day(self) -> None:
        s = new_risk_state(now_ms=WED_NOON, equity_usd=10_000)
        s = record_realized_pnl(s, pnl_usd=-250, now_ms=WED_NOON, equity_usd=10_000, cfg=CFG)
        assert entry_gate(s, now_ms=WED_NOON, cfg=CFG).allowed
        s = record_realized_pnl(s, pnl_usd=-150, now_ms=WED_NOON + HOUR_MS, equity_usd=9_750, cfg=CFG)
        gate = entry_gate(s, now_ms=WED_NOON + HOUR_MS, cfg=CFG)
        assert not gate.allowed
        assert gate.code == "DAILY_STOP"
        assert gate.values["day_pnl_pct"] == pytest.approx(-0.04)
        assert gate.values["resume_ms"] == ms(2025, 1, 9)
        nxt = roll(s, now_ms=ms(2025, 1, 9), equity_usd=9_600)
        assert entry_gate(nxt, now_ms=ms(2025, 1, 9), cfg=CFG).allowed

    def test_just_above_daily_stop_allowed(self) -> None:
        s = new_risk_state(now_ms=WED_NOON, equity_usd=10_000)
        s = record_realized_pnl(s, pnl_usd=-399.99, now_ms=WED_NOON, equity_usd=10_000, cfg=CFG)
        assert entry_gate(s, now_ms=WED_NOON, cfg=CFG).allowed

    def test_non_positive_start_equity_refuses(self) -> None:
        s = new_risk_state(now_ms=WED_NOON, equity_usd=0)
        assert not entry_gate(s, now_ms=WED_NOON, cfg=CFG).allowed


class TestWeeklyStop:
    """AC4: pause 7 days, then 3 days at 0.5 %, then 1 %."""

    def hit(self) -> tuple[RiskState, int]:
        s = new_risk_state(now_ms=ms(2025, 1, 6, 1), equity_usd=10_000)
        t = ms(2025, 1, 6, 2)
        for day in range(3):  # −3.5 % a day for three days = −10.5 % of the week start
            t = ms(2025, 1, 6 + day, 2)
            s = record_realized_pnl(s, pnl_usd=-350, now_ms=t, equity_usd=10_000 - 350 * day, cfg=CFG)
        return s, t

    def test_pause_reduced_normal(self) -> None:
        s, hit_ms = self.hit()
        assert s.weekly_stop_hit_ms == hit_ms
        assert s.pause_until_ms == hit_ms + 7 * DAY_MS
        gate = entry_gate(s, now_ms=hit_ms, cfg=CFG)
        assert (gate.allowed, gate.code) == (False, "WEEKLY_STOP")
        # Still paused six days later, across the week boundary.
        later = hit_ms + 6 * DAY_MS
        s = roll(s, now_ms=later, equity_usd=8_950)
        assert not entry_gate(s, now_ms=later, cfg=CFG).allowed
        # Pause over: entries at reduced risk for 3 days.
        after = hit_ms + 7 * DAY_MS
        s = roll(s, now_ms=after, equity_usd=8_950)
        assert entry_gate(s, now_ms=after, cfg=CFG).allowed
        assert risk_pct_now(s, now_ms=after, cfg=CFG) == 0.005
        assert risk_pct_now(s, now_ms=after + 3 * DAY_MS - 1, cfg=CFG) == 0.005
        assert risk_pct_now(s, now_ms=after + 3 * DAY_MS, cfg=CFG) == 0.01

    def test_shadow_only_in_live_while_paused(self) -> None:
        s, hit_ms = self.hit()
        assert shadow_only(s, now_ms=hit_ms, mode="LIVE")
        assert not shadow_only(s, now_ms=hit_ms, mode="PAPER_LIVE")
        assert not shadow_only(s, now_ms=hit_ms + 7 * DAY_MS, mode="LIVE")

    def test_further_losses_do_not_extend_pause(self) -> None:
        s, hit_ms = self.hit()
        s2 = record_realized_pnl(s, pnl_usd=-500, now_ms=hit_ms + HOUR_MS, equity_usd=8_950, cfg=CFG)
        assert s2.pause_until_ms == s.pause_until_ms

    def test_normal_risk_before_any_stop(self) -> None:
        s = new_risk_state(now_ms=WED_NOON, equity_usd=10_000)
        assert risk_pct_now(s, now_ms=WED_NOON, cfg=CFG) == 0.01

    def test_restored_state_below_weekly_stop_gets_its_pause(self) -> None:
        s = msgspec.structs.replace(
            new_risk_state(now_ms=WED_NOON, equity_usd=10_000), realized_pnl_week=-1_200
        )
        gate = entry_gate(s, now_ms=WED_NOON, cfg=CFG)
        assert (gate.allowed, gate.code) == (False, "WEEKLY_STOP")
        s2 = apply_weekly_stop(s, now_ms=WED_NOON, cfg=CFG)
        assert s2.pause_until_ms == WED_NOON + 7 * DAY_MS
        assert apply_weekly_stop(s2, now_ms=WED_NOON + HOUR_MS, cfg=CFG) is s2


class TestPersistence:
    """The state survives a restart byte for byte; bad records give a typed error."""

    def test_round_trip(self) -> None:
        s, _ = TestWeeklyStop().hit()
        assert decode_risk_state(encode_risk_state(s)) == s

    def test_bad_record(self) -> None:
        with pytest.raises(RiskStateError) as ei:
            decode_risk_state(b'{"day_start_ms": "x"}')
        assert ei.value.field == "risk_state"
        with pytest.raises(RiskStateError):
            decode_risk_state(b"not json")

    @pytest.mark.parametrize(
        ("kw", "field"), [({"now_ms": -1}, "now_ms"), ({"equity_usd": float("nan")}, "equity_usd")]
    )
    def test_bad_inputs(self, kw: dict[str, float], field: str) -> None:
        args: dict[str, float] = {"now_ms": WED_NOON, "equity_usd": 1.0, **kw}
        with pytest.raises(RiskStateError) as ei:
            new_risk_state(**args)  # type: ignore[arg-type]
        assert ei.value.field == field


class TestDerivedFromTheTradeLog:
    """A lost state file: the stops and the pause are rebuilt from the trade log's closed trades."""

    CFG = RiskConfig()
    # Wednesday 2025-01-08 15:00 UTC.
    NOW = 1_736_348_400_000

    def _closed(self, *rows: tuple[int, float]) -> list[ClosedPnl]:
        return [ClosedPnl(close_ms=t, trade_id=f"t{i}", pnl_usd=p) for i, (t, p) in enumerate(rows)]

    def test_todays_losses_hold_the_daily_stop(self) -> None:
        hour = 3_600_000
        closed = self._closed((self.NOW - 5 * hour, -250.0), (self.NOW - 2 * hour, -160.0))
        state = derive_risk_state(closed, now_ms=self.NOW, equity_usd=9_590.0, cfg=self.CFG)
        assert state.realized_pnl_day == pytest.approx(-410.0)
        assert state.day_start_equity == pytest.approx(10_000.0)
        gate = entry_gate(state, now_ms=self.NOW, cfg=self.CFG)
        assert not gate.allowed
        assert gate.code == "DAILY_STOP"
        assert state.already_booked("t0")
        assert state.already_booked("t1")

    def test_a_weekly_stop_two_days_ago_is_still_a_pause(self) -> None:
        day = 86_400_000
        closed = self._closed((self.NOW - 2 * day, -600.0), (self.NOW - 2 * day + 60_000, -450.0))
        state = derive_risk_state(closed, now_ms=self.NOW, equity_usd=8_950.0, cfg=self.CFG)
        assert state.paused(self.NOW)
        assert state.pause_until_ms == self.NOW - 2 * day + 60_000 + 7 * day
        assert entry_gate(state, now_ms=self.NOW, cfg=self.CFG).code == "WEEKLY_STOP"

    def test_old_or_unfilled_records_do_not_count(self) -> None:
        records = [
            {
                "trade_id": "a",
                "timestamp_close": "2024-11-01T00:00:00.000Z",
                "entry_order": {"filled_qty": 1.0},
                "result": {"pnl_usd": -5000.0},
            },
            {
                "trade_id": "b",
                "timestamp_close": "2025-01-08T14:00:00.000Z",
                "entry_order": {"filled_qty": 0.0},
                "result": {"pnl_usd": 0.0},
            },
            {"trade_id": "broken"},
        ]
        closed = closed_pnl_from_records(records)
        assert [c.trade_id for c in closed] == ["a"]
        state = derive_risk_state(closed, now_ms=self.NOW, equity_usd=10_000.0, cfg=self.CFG)
        assert state.realized_pnl_day == 0.0
        assert state.realized_pnl_week == 0.0
        assert entry_gate(state, now_ms=self.NOW, cfg=self.CFG).allowed


class TestDayEquityBounds:
    """Issue 10 #5: the start and end equity of a UTC day belong to 00:00 UTC, whenever the report asks."""

    def test_closed_day_after_the_roll(self) -> None:
        from futures_actor.core.risk_state import day_equity_bounds

        d0 = utc_day_start(WED_NOON)
        s = new_risk_state(now_ms=WED_NOON, equity_usd=10_000.0)
        s = roll(s, now_ms=d0 + DAY_MS + 1_000, equity_usd=10_162.06)  # first event after midnight
        assert day_equity_bounds(s, day_start_ms=d0, equity_now=10_300.0) == (10_000.0, 10_162.06)
        # The new day started at the midnight equity.
        assert day_equity_bounds(s, day_start_ms=d0 + DAY_MS, equity_now=10_300.0) == (10_162.06, 10_300.0)

    def test_report_before_the_roll(self) -> None:
        from futures_actor.core.risk_state import day_equity_bounds

        d0 = utc_day_start(WED_NOON)
        s = new_risk_state(now_ms=WED_NOON, equity_usd=10_000.0)
        # Nothing rolled the calendar yet at 00:05: the day ends at the equity now.
        assert day_equity_bounds(s, day_start_ms=d0, equity_now=10_050.0) == (10_000.0, 10_050.0)

    def test_quiet_days_in_between(self) -> None:
        from futures_actor.core.risk_state import day_equity_bounds

        d0 = utc_day_start(WED_NOON)
        s = new_risk_state(now_ms=WED_NOON, equity_usd=10_000.0)
        s = roll(s, now_ms=d0 + 3 * DAY_MS + 5, equity_usd=9_900.0)
        # Nothing happened for three days: the day before the roll started and ended at 9 900.
        assert day_equity_bounds(s, day_start_ms=d0 + 2 * DAY_MS, equity_now=9_950.0) == (9_900.0, 9_900.0)
        assert day_equity_bounds(s, day_start_ms=d0 - DAY_MS, equity_now=9_950.0) is None

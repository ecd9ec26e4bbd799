"""Wall-clock jobs in UTC under a mock clock: slots, no double firing, coalesced missed slots."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.scheduler import Job, ScheduledTick, Scheduler
from futures_actor.core.clock import ManualWallClock, iso_utc
from futures_actor.core.config import BotConfig


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def collect(start: str, seconds: float) -> list[ScheduledTick]:
    send, recv = trio.open_memory_channel[ScheduledTick](10_000)
    sched = Scheduler(
        cfg=BotConfig(), wall_clock=TrioWallClock(ms(start)), subscribers={job: [send] for job in Job}
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    ticks = []
    while True:
        try:
            ticks.append(recv.receive_nowait())
        except trio.WouldBlock:
            return ticks


async def test_a_week_of_slots(autojump_clock: trio.testing.MockClock) -> None:
    # Sunday 2025-03-02 23:57:30 UTC, for 7 days and 10 minutes.
    ticks = await collect("2025-03-02T23:57:30", 7 * 86_400 + 600)
    by_job = {job: [t for t in ticks if t.job is job] for job in Job}
    closes = by_job[Job.FIVE_MIN_CLOSE]
    assert closes[0].slot_iso == "2025-03-03T00:00:00.000Z"
    assert len(closes) == 7 * 288 + 2
    assert all(b.slot_ms - a.slot_ms == 300_000 for a, b in itertools.pairwise(closes))
    assert all(t.fired_ms == t.slot_ms and t.missed == 0 for t in ticks)
    assert [t.slot_iso for t in by_job[Job.WEEK_START]] == [
        "2025-03-03T00:00:00.000Z",
        "2025-03-10T00:00:00.000Z",
    ]
    assert [t.slot_iso[:16] for t in by_job[Job.DAILY_REPORT]] == [
        f"2025-03-{d:02d}T00:05" for d in range(3, 11)
    ]
    assert len(by_job[Job.UNIVERSE_REFRESH]) == 8
    # Same-instant jobs fire in Job order.
    at_midnight = [t.job for t in ticks if t.slot_iso == "2025-03-03T00:00:00.000Z"]
    assert at_midnight == [Job.FIVE_MIN_CLOSE, Job.UNIVERSE_REFRESH, Job.WEEK_START]
    assert len({(t.job, t.slot_ms) for t in ticks}) == len(ticks)


async def test_slot_passed_at_start_is_not_fired(autojump_clock: trio.testing.MockClock) -> None:
    ticks = await collect("2025-03-03T00:10:00", 60)
    assert ticks == []


class JumpyClock:
    """A wall clock that can jump forward or back relative to trio time."""

    def __init__(self, start_ms: int) -> None:
        self.offset = 0
        self._inner = TrioWallClock(start_ms)

    def now_ms(self) -> int:
        return self._inner.now_ms() + self.offset


async def test_missed_slots_fire_once_and_backwards_never_repeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = JumpyClock(ms("2025-03-03T10:00:00"))
    send, recv = trio.open_memory_channel[ScheduledTick](100)
    sched = Scheduler(cfg=BotConfig(), wall_clock=clock, subscribers={Job.FIVE_MIN_CLOSE: [send]})
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(301)
        assert recv.receive_nowait().slot_iso == "2025-03-03T10:05:00.000Z"
        clock.offset = 3_600_000  # suspend / wall jump of an hour
        await trio.sleep(30)  # noticed within the scheduler's longest sleep
        tick = recv.receive_nowait()
        assert tick.slot_iso == "2025-03-03T11:05:00.000Z"
        assert tick.missed == 11
        clock.offset = 0  # the wall clock steps back an hour: nothing fires twice
        await trio.sleep(3_600)
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()
        await trio.sleep(300)
        assert recv.receive_nowait().slot_iso == "2025-03-03T11:10:00.000Z"
        nursery.cancel_scope.cancel()


async def test_manual_clock_never_fires_early(autojump_clock: trio.testing.MockClock) -> None:
    clock = ManualWallClock(ms("2025-03-03T10:04:59"))
    send, recv = trio.open_memory_channel[ScheduledTick](10)
    sched = Scheduler(cfg=BotConfig(), wall_clock=clock, subscribers={Job.FIVE_MIN_CLOSE: [send]})
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(10)  # trio time passes, this wall clock does not
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()
        clock.advance(1_000)
        await trio.sleep(1.5)  # the scheduler re-reads the wall clock within its 1 s re-check
        assert iso_utc(recv.receive_nowait().slot_ms) == "2025-03-03T10:05:00.000Z"
        nursery.cancel_scope.cancel()


async def test_replay_sleep_cap_fires_the_same_daily_slots(autojump_clock: trio.testing.MockClock) -> None:
    """A long sleep cap (replay) changes how often the scheduler wakes, never which slots fire."""
    send, recv = trio.open_memory_channel[ScheduledTick](100)
    sched = Scheduler(
        cfg=BotConfig(),
        wall_clock=TrioWallClock(ms("2025-03-02T23:57:30")),
        subscribers={Job.DAILY_REPORT: [send]},
        max_sleep_s=86_400.0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(3 * 86_400)
        nursery.cancel_scope.cancel()
    fired = []
    while True:
        try:
            fired.append(recv.receive_nowait())
        except trio.WouldBlock:
            break
    assert [t.slot_iso[:16] for t in fired] == [f"2025-03-{d:02d}T00:05" for d in range(3, 6)]
    assert all(t.fired_ms == t.slot_ms for t in fired)


def test_sleep_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_sleep_s=0"):
        Scheduler(cfg=BotConfig(), wall_clock=ManualWallClock(0), subscribers={}, max_sleep_s=0)

"""The Scheduler actor: wall-clock jobs in UTC (ARCHITECTURE.md "Scheduler").

Jobs and their slots (UTC, from the injected `WallClock`):
- `FIVE_MIN_CLOSE`  every `timeframes.signal_tf` boundary (each 5m candle close);
- `UNIVERSE_REFRESH` daily at `universe.refresh_time_utc` (00:00);
- `DAILY_REPORT`     daily at `notifications.daily_report_time_utc` (00:05), for the UTC day that ended;
- `WEEK_START`       Monday 00:00 UTC.

It sleeps on trio's clock until the next slot (so `MockClock` drives it), re-reads the wall clock on
waking and sends a `ScheduledTick` to each subscriber of the job (awaited: back-pressure, never dropped).

Policy:
- A slot fires at most once: the last fired slot per job only moves forward, so a wall clock that steps
  back never repeats a slot.
- Slots already past at start-up are not fired (a restart at 00:10 does not re-send 00:05's report).
- The wall clock is re-read at least every `_MAX_SLEEP_S`. After a long sleep (suspend, a wall-clock
  jump forward) the missed slots of a job are fired ONCE, coalesced: one tick for the most recent slot with `missed` = how many earlier slots were skipped.
  A subscriber that needs every slot (e.g. a report per day) uses `missed` to catch up.
- Jobs due at the same instant fire in the order of `Job` (5m close, universe, report, week).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import msgspec
import trio

from futures_actor.core.clock import WallClock, iso_utc
from futures_actor.core.config import BotConfig
from futures_actor.core.types import INTERVAL_MS
from futures_actor.logs import get_logger

__all__ = ["Job", "ScheduledTick", "Scheduler", "Slots", "slots_from_config"]

_DAY_MS = INTERVAL_MS["1d"]
_WEEK_MS = 7 * _DAY_MS
_MINUTE_MS = INTERVAL_MS["1m"]
_HOUR_MS = INTERVAL_MS["1h"]
# 1970-01-01 was a Thursday; the first Monday 00:00 UTC is 4 days later.
_FIRST_MONDAY_MS = 4 * _DAY_MS
# When the wall clock is not yet at the slot after waking (clock skew), wait at least this long.
_MIN_SLEEP_S = 0.001
# Re-read the wall clock at least this often, so that a wall-clock jump or a suspend (which trio's
# monotonic clock does not count) is noticed within this many seconds.
_MAX_SLEEP_S = 30.0
_MS_PER_S = 1000


class Job(enum.StrEnum):
    FIVE_MIN_CLOSE = "FIVE_MIN_CLOSE"
    UNIVERSE_REFRESH = "UNIVERSE_REFRESH"
    DAILY_REPORT = "DAILY_REPORT"
    WEEK_START = "WEEK_START"


class ScheduledTick(msgspec.Struct, frozen=True, kw_only=True):
    """`job`'s slot `slot_ms` (wall ms, UTC) fired at `fired_ms`; `missed` earlier slots were skipped."""

    job: Job
    slot_ms: int
    fired_ms: int
    missed: int = 0

    @property
    def slot_iso(self) -> str:
        return iso_utc(self.slot_ms)


class Slots(msgspec.Struct, frozen=True, kw_only=True):
    """A periodic slot grid: slots at `offset_ms + k * period_ms`."""

    period_ms: int
    offset_ms: int

    def latest_at_or_before(self, now_ms: int) -> int:
        return (now_ms - self.offset_ms) // self.period_ms * self.period_ms + self.offset_ms

    def next_after(self, slot_ms: int) -> int:
        return self.latest_at_or_before(slot_ms) + self.period_ms


def _hhmm_ms(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * _HOUR_MS + int(minutes) * _MINUTE_MS


def slots_from_config(cfg: BotConfig) -> dict[Job, Slots]:
    return {
        Job.FIVE_MIN_CLOSE: Slots(period_ms=INTERVAL_MS[cfg.timeframes.signal_tf], offset_ms=0),
        Job.UNIVERSE_REFRESH: Slots(period_ms=_DAY_MS, offset_ms=_hhmm_ms(cfg.universe.refresh_time_utc)),
        Job.DAILY_REPORT: Slots(
            period_ms=_DAY_MS, offset_ms=_hhmm_ms(cfg.notifications.daily_report_time_utc)
        ),
        Job.WEEK_START: Slots(period_ms=_WEEK_MS, offset_ms=_FIRST_MONDAY_MS),
    }


class Scheduler:
    """Fires wall-clock jobs to their subscribers; see the module docstring for the policy."""

    def __init__(
        self,
        *,
        cfg: BotConfig,
        wall_clock: WallClock,
        subscribers: Mapping[Job, Sequence[trio.MemorySendChannel[ScheduledTick]]],
        slots: Mapping[Job, Slots] | None = None,
        max_sleep_s: float | None = None,
    ) -> None:
        """`max_sleep_s` caps one sleep between wall-clock reads (default `_MAX_SLEEP_S`); a replay,
        whose wall clock follows trio's and never jumps, passes a long one to wake less often."""
        if max_sleep_s is not None and not max_sleep_s > 0:
            raise ValueError(f"Scheduler max_sleep_s={max_sleep_s!r}: expected a positive number of seconds")
        self._max_sleep_s = _MAX_SLEEP_S if max_sleep_s is None else max_sleep_s
        self._wall = wall_clock
        self._slots = dict(slots) if slots is not None else slots_from_config(cfg)
        self._subscribers = {job: list(chans) for job, chans in subscribers.items() if chans}
        self._last_fired: dict[Job, int] = {}
        self._log = get_logger("scheduler")

    def last_fired(self, job: Job) -> int | None:
        return self._last_fired.get(job)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        jobs = [job for job in Job if job in self._subscribers and job in self._slots]
        start_ms = self._wall.now_ms()
        for job in jobs:
            self._last_fired[job] = self._slots[job].latest_at_or_before(start_ms)
        self._log.info("scheduler_started", jobs=[j.value for j in jobs], now=iso_utc(start_ms))
        task_status.started()
        if not jobs:
            await trio.sleep_forever()
        while True:
            due_ms = min(self._slots[job].next_after(self._last_fired[job]) for job in jobs)
            now_ms = self._wall.now_ms()
            if now_ms < due_ms:
                await trio.sleep(min(self._max_sleep_s, max(_MIN_SLEEP_S, (due_ms - now_ms) / _MS_PER_S)))
                continue
            for job in jobs:
                await self._fire_if_due(job, now_ms)

    async def _fire_if_due(self, job: Job, now_ms: int) -> None:
        slots = self._slots[job]
        latest = slots.latest_at_or_before(now_ms)
        last = self._last_fired[job]
        if latest <= last:
            return
        missed = (latest - last) // slots.period_ms - 1
        self._last_fired[job] = latest
        tick = ScheduledTick(job=job, slot_ms=latest, fired_ms=now_ms, missed=missed)
        if missed:
            self._log.warning("scheduler_slots_missed", job=job.value, missed=missed, slot=iso_utc(latest))
        for channel in list(self._subscribers.get(job, ())):
            try:
                await channel.send(tick)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._log.error("scheduler_subscriber_gone", job=job.value)
                self._subscribers[job].remove(channel)


def utc_day_of(ms: int) -> str:
    """`YYYY-MM-DD` of a wall time in UTC."""
    return datetime.fromtimestamp(ms / _MS_PER_S, tz=UTC).date().isoformat()

"""Wall-clock abstraction for timestamps (BOT_SPEC time rules, STYLE.md "Time").

Timers and timeouts use trio's clock (`trio.current_time()`), which tests replace with
`trio.testing.MockClock`. Timestamps (Binance's `timestamp`, log records, the UTC calendar of the
daily and weekly stops) come from a `WallClock` injected into whoever needs one. Core code never
calls `time.time()`; only `SystemWallClock` does. The trio-driven clock that follows a mock clock
lives in `futures_actor.actors.clock`, because `core/` does not import trio.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["ManualWallClock", "SystemWallClock", "WallClock", "iso_utc", "ms_to_datetime"]


class WallClock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, UTC."""
        ...


class SystemWallClock:
    """The operating system's clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualWallClock:
    """A wall clock that only moves when told to (tests, pure-logic scenarios)."""

    def __init__(self, start_ms: int) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError(f"a wall clock never goes back (advance by {ms} ms)")
        self._now_ms += ms

    def set(self, now_ms: int) -> None:
        if now_ms < self._now_ms:
            raise ValueError(f"a wall clock never goes back ({now_ms} < {self._now_ms})")
        self._now_ms = now_ms


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso_utc(ms: int) -> str:
    """ISO 8601 UTC with millisecond precision and a `Z`, e.g. `2025-01-02T03:04:05.678Z`."""
    dt = ms_to_datetime(ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"

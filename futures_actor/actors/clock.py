"""Wall clocks for the actors: one that follows trio's clock (replay, tests) and the system one (live).

`TrioWallClock(epoch_ms)` reads `epoch_ms` plus the trio time elapsed since it was built, so under
`trio.testing.MockClock` the wall clock moves exactly with trio time and a day of scheduled jobs takes
milliseconds. It must be built inside `trio.run`. Live code uses `system_wall_clock()`.
"""

from __future__ import annotations

import trio

from futures_actor.core.clock import SystemWallClock, WallClock

__all__ = ["TrioWallClock", "system_wall_clock"]

_MS_PER_S = 1000


class TrioWallClock:
    """Wall time = `epoch_ms` + trio time elapsed since construction (rounded to the millisecond)."""

    def __init__(self, epoch_ms: int) -> None:
        if isinstance(epoch_ms, bool) or not isinstance(epoch_ms, int) or epoch_ms < 0:
            raise ValueError(f"epoch_ms={epoch_ms!r}: expected an integer >= 0 (ms since the Unix epoch)")
        self._epoch_ms = epoch_ms
        self._t0 = trio.current_time()

    def now_ms(self) -> int:
        return self._epoch_ms + round((trio.current_time() - self._t0) * _MS_PER_S)


def system_wall_clock() -> WallClock:
    """The operating system's clock (live and paper trading)."""
    return SystemWallClock()

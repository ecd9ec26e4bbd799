"""A discrete-event loop: time-stamped messages on a heap, delivered one at a time, in a fixed order.

The replay runtime's scheduler (issue 12). There are no tasks, no channels and no clock: `now_ms` is
the time of the message being delivered, and it only moves forward when nothing is left to deliver
at the current time. A message is delivered at `(at_ms, seq)` order, `seq` being a global counter
taken when the message is posted; so messages posted for the same time are delivered in the order
they were posted (per sender FIFO, and a global order across senders). This is the order the trio
runtime reproduces under trio's mock clock: a message sent now is received before the clock moves.

A timer is a message posted for a later time under a key: setting the key again replaces it, and
cancelling it drops it (a replaced or cancelled entry stays on the heap and is skipped when it
comes up, so both are O(log n)).

The loop knows nothing of what it delivers: a recipient is any object with
`deliver(message, loop)`. Recipients post further messages with `send` (now) and `set_timer`.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Protocol

__all__ = ["EventLoop", "EventLoopError", "Recipient"]


class EventLoopError(RuntimeError):
    """A recipient asked for something the loop cannot do (a message in the past)."""


class Recipient(Protocol):
    """Anything the loop delivers to."""

    def deliver(self, message: object, loop: EventLoop) -> None: ...


# (at_ms, seq, recipient, message, timer key or None, timer version)
_Entry = tuple[int, int, Recipient, object, Hashable | None, int]


class EventLoop:
    """Delivers posted messages in `(time, posting order)` order; see the module docstring."""

    def __init__(self, *, start_ms: int) -> None:
        self.now_ms = start_ms
        self._heap: list[_Entry] = []
        self._seq = 0
        self._timers: dict[Hashable, int] = {}  # key -> the sequence number of its live entry
        self._stopped = False
        self.delivered = 0

    def send(self, to: Recipient, message: object) -> None:
        """Deliver `message` to `to` at the current time, after everything already posted for now."""
        self._push(self.now_ms, to, message, None, 0)

    def post_at(self, at_ms: int, to: Recipient, message: object) -> None:
        """Deliver `message` to `to` at `at_ms` (not before now)."""
        if at_ms < self.now_ms:
            raise EventLoopError(f"post_at: at_ms={at_ms} is before now_ms={self.now_ms}")
        self._push(at_ms, to, message, None, 0)

    def set_timer(self, key: Hashable, at_ms: int, to: Recipient, message: object) -> None:
        """Deliver `message` to `to` at `at_ms` (a time in the past means now) unless the timer `key` is
        set again or cancelled first. Setting a live key replaces its message and time."""
        version = self._seq + 1  # unique: the entry's own sequence number
        self._timers[key] = version
        self._push(max(at_ms, self.now_ms), to, message, key, version)

    def cancel_timer(self, key: Hashable) -> None:
        """Drop the timer `key` (no effect if it is not set)."""
        self._timers.pop(key, None)

    def timer_set(self, key: Hashable) -> bool:
        """Whether the timer `key` is set and has not fired."""
        return key in self._timers

    def stop(self) -> None:
        """End `run` after the message being delivered."""
        self._stopped = True

    def __len__(self) -> int:
        return len(self._heap)

    def run(self, *, until_ms: int | None = None) -> int:
        """Deliver messages until none is left, `stop()` is called, or the next one is due after
        `until_ms` (then `now_ms` becomes `until_ms`). Returns how many were delivered."""
        heap = self._heap
        timers = self._timers
        done = 0
        self._stopped = False
        while heap and not self._stopped:
            at_ms, _, to, message, key, version = heap[0]
            if until_ms is not None and at_ms > until_ms:
                break
            heapq.heappop(heap)
            if key is not None:
                if timers.get(key) != version:
                    continue  # replaced or cancelled
                del timers[key]
            self.now_ms = at_ms
            to.deliver(message, self)
            done += 1
        if until_ms is not None and not self._stopped and until_ms > self.now_ms:
            self.now_ms = until_ms
        self.delivered += done
        return done

    def _push(self, at_ms: int, to: Recipient, message: object, key: Hashable | None, version: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_ms, self._seq, to, message, key, version))

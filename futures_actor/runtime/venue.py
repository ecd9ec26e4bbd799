"""The paper exchange on the discrete-event loop: calls answered at once, fills at their simulated time.

`PaperExchange` is the venue of paper trading and replays (one matching engine with the fake
exchange). Its gateway methods are coroutines only to fit the `ExchangeGateway` protocol: none of them
awaits anything, so `complete` runs one to its end synchronously (and refuses one that would suspend,
which would be a bug in the paper exchange, not something to paper over). What its trio `run` task
does — wake up when the next fill, trigger or funding is due, and deliver the events it produced —
`PaperVenue` does as a timer on the loop: after every input (a call, a path, a price) and every
wake-up it posts the pending `GatewayEvent`s to `events_to` and sets its wake-up timer for
`next_event_ms()`.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec

from futures_actor.binance.paper import PaperExchange
from futures_actor.runtime.loop import EventLoop, Recipient

__all__ = ["PaperVenue", "VenueSuspendedError", "complete"]

T = TypeVar("T")


class VenueSuspendedError(RuntimeError):
    """A paper exchange call tried to wait for something: the replay runtime cannot answer it."""


def complete(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end; its exception propagates unchanged."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise VenueSuspendedError(f"{coro!r} suspended; a paper exchange call must not wait")


class _Wake(msgspec.Struct, frozen=True):
    """The venue's own timer: apply what is due now."""


class PaperVenue:
    """One `PaperExchange` on the loop (see the module docstring). `events_to` gets its `GatewayEvent`s
    (None: they are dropped, e.g. a venue whose only job is its account)."""

    def __init__(self, paper: PaperExchange, *, name: str, events_to: Recipient | None) -> None:
        self.paper = paper
        self.name = name
        self.events_to = events_to
        self._timer_key = ("venue", name)
        self._wake_at: int | None = None

    def deliver(self, message: object, loop: EventLoop) -> None:
        if not isinstance(message, _Wake):
            raise TypeError(f"PaperVenue {self.name}: unexpected message {message!r}")
        self._wake_at = None
        self.paper.advance_to(loop.now_ms)
        self.settle(loop)

    def call(self, coro: Coroutine[Any, Any, T], loop: EventLoop) -> T:
        """Answer one gateway call now; its events follow on the loop (as live: after the answer)."""
        try:
            return complete(coro)
        finally:
            self.settle(loop)

    def settle(self, loop: EventLoop) -> None:
        """After any input: post the pending events, then (re)arm the wake-up for the next due event."""
        events = self.paper.take_events()
        if self.events_to is not None:
            for event in events:
                loop.send(self.events_to, event)
        nxt = self.paper.next_event_ms()
        if nxt is None:
            if self._wake_at is not None:
                loop.cancel_timer(self._timer_key)
                self._wake_at = None
        elif nxt != self._wake_at:
            self._wake_at = max(nxt, loop.now_ms)
            loop.set_timer(self._timer_key, self._wake_at, self, _Wake())

"""The discrete-event loop: delivery order, timers, stop and the time window."""

from __future__ import annotations

import pytest

from futures_actor.runtime.loop import EventLoop, EventLoopError


class Recorder:
    def __init__(self, name: str, log: list[tuple[int, str, object]]) -> None:
        self.name = name
        self.log = log
        self.on: dict[object, object] = {}

    def deliver(self, message: object, loop: EventLoop) -> None:
        self.log.append((loop.now_ms, self.name, message))
        action = self.on.get(message)
        if callable(action):
            action(loop)


def test_time_order_then_posting_order() -> None:
    log: list[tuple[int, str, object]] = []
    a, b = Recorder("a", log), Recorder("b", log)
    loop = EventLoop(start_ms=100)
    loop.post_at(300, a, "late")
    loop.send(b, "b1")
    loop.post_at(200, a, "mid")
    loop.send(a, "a1")
    loop.send(b, "b2")
    assert loop.run() == 5
    assert log == [
        (100, "b", "b1"),
        (100, "a", "a1"),
        (100, "b", "b2"),
        (200, "a", "mid"),
        (300, "a", "late"),
    ]
    assert loop.now_ms == 300


def test_message_sent_now_is_delivered_before_time_moves() -> None:
    log: list[tuple[int, str, object]] = []
    a, b = Recorder("a", log), Recorder("b", log)
    loop = EventLoop(start_ms=0)
    a.on["go"] = lambda lp: lp.send(b, "reply")
    loop.post_at(10, a, "go")
    loop.post_at(11, b, "next")
    loop.run()
    assert [m for _, _, m in log] == ["go", "reply", "next"]
    assert log[1][0] == 10


def test_timer_replaced_and_cancelled() -> None:
    log: list[tuple[int, str, object]] = []
    a = Recorder("a", log)
    loop = EventLoop(start_ms=0)
    loop.set_timer("k", 50, a, "first")
    loop.set_timer("k", 70, a, "second")  # replaces the first
    loop.set_timer("x", 60, a, "cancelled")
    assert loop.timer_set("x")
    loop.cancel_timer("x")
    assert not loop.timer_set("x")
    loop.cancel_timer("never-set")
    loop.set_timer("past", -5, a, "now")  # a time in the past fires now
    loop.run()
    assert log == [(0, "a", "now"), (70, "a", "second")]
    assert not loop.timer_set("k")


def test_timer_set_again_after_cancel_is_not_confused_with_the_old_entry() -> None:
    log: list[tuple[int, str, object]] = []
    a = Recorder("a", log)
    loop = EventLoop(start_ms=0)
    loop.set_timer("k", 10, a, "old")
    loop.cancel_timer("k")
    loop.set_timer("k", 20, a, "new")
    loop.run()
    assert log == [(20, "a", "new")]


def test_run_until_and_stop() -> None:
    log: list[tuple[int, str, object]] = []
    a = Recorder("a", log)
    loop = EventLoop(start_ms=0)
    for t in (10, 20, 30):
        loop.post_at(t, a, t)
    assert loop.run(until_ms=25) == 2
    assert loop.now_ms == 25
    a.on[30] = lambda lp: lp.stop()
    loop.post_at(40, a, 40)
    assert loop.run() == 1
    assert len(loop) == 1
    assert loop.run() == 1
    assert loop.delivered == 4


def test_posting_into_the_past_is_refused() -> None:
    loop = EventLoop(start_ms=1_000)
    with pytest.raises(EventLoopError, match="at_ms=999 is before now_ms=1000"):
        loop.post_at(999, Recorder("a", []), "x")

"""Supervisor restarts, backoff, restart-intensity limit, retirement and critical actors."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from futures_actor.actors.supervision import (
    ChildDropped,
    CriticalCrash,
    DuplicateChild,
    Supervisor,
    run_critical,
)
from futures_actor.core.config import SupervisionConfig

CFG = SupervisionConfig(
    max_restarts=3, restart_window_seconds=100.0, backoff_initial_seconds=1.0, backoff_max_seconds=4.0
)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Boom(Exception):
    pass


async def test_crashing_child_restarts_with_fresh_state_then_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dropped: list[ChildDropped] = []
    starts: list[float] = []
    states: list[list[int]] = []

    async def on_drop(event: ChildDropped) -> None:
        dropped.append(event)

    def factory() -> object:
        state: list[int] = []  # fresh per incarnation
        states.append(state)

        async def run() -> None:
            starts.append(trio.current_time())
            state.append(1)
            await trio.sleep(0.5)
            raise Boom("bad candle")

        return run()

    sibling_ticks = 0

    async def sibling() -> None:
        nonlocal sibling_ticks
        while True:
            await trio.sleep(1)
            sibling_ticks += 1

    sup = Supervisor(cfg=CFG, rng=random.Random(7), on_drop=on_drop)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.start_child("ETHUSDT", sibling)
            await sup.start_child("BTCUSDT", factory)
            await trio.sleep(60)
            assert sup.children() == ("ETHUSDT",)
            nursery.cancel_scope.cancel()
    assert len(starts) == 4  # first run + max_restarts restarts
    assert all(s == [1] for s in states)
    gaps = [b - a - 0.5 for a, b in itertools.pairwise(starts)]
    # Exponential backoff 1, 2, 4 with up to 50 % jitter taken off.
    for gap, base in zip(gaps, (1.0, 2.0, 4.0)):
        assert base * 0.5 <= gap <= base
    assert dropped == [
        ChildDropped(supervisor="symbols", key="BTCUSDT", restarts=3, error_type="Boom", error="bad candle")
    ]
    assert sibling_ticks >= 59
    crashes = [e for e in logs if e["event"] == "child_crashed"]
    assert len(crashes) == 4
    assert all(e["symbol"] == "BTCUSDT" for e in crashes)
    assert all(e["exc_info"] is not None for e in crashes)


async def test_backoff_is_deterministic_for_a_seed(autojump_clock: trio.testing.MockClock) -> None:
    async def run_once() -> list[float]:
        starts: list[float] = []
        t0 = trio.current_time()

        async def crash() -> None:
            starts.append(trio.current_time() - t0)
            raise Boom

        sup = Supervisor(cfg=CFG, rng=random.Random(42))
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.start_child("X", crash)
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
        return starts

    first, second = await run_once(), await run_once()
    assert len(first) == 4
    assert first == pytest.approx(second, abs=1e-9)


async def test_crashes_spread_beyond_the_window_are_not_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def slow_crash() -> None:
        nonlocal runs
        runs += 1
        await trio.sleep(60)  # crashes every ~60 s: at most 2 in a 100 s window
        raise Boom

    sup = Supervisor(cfg=CFG, rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child("SOLUSDT", slow_crash)
        await trio.sleep(700)
        assert sup.children() == ("SOLUSDT",)
        assert runs >= 10
        nursery.cancel_scope.cancel()


async def test_retire_and_readd(autojump_clock: trio.testing.MockClock) -> None:
    running: list[str] = []

    def make(tag: str) -> object:
        async def run() -> None:
            running.append(tag)
            try:
                await trio.sleep_forever()
            finally:
                running.remove(tag)

        return run()

    sup = Supervisor(cfg=CFG, rng=random.Random(0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child("A", lambda: make("a1"))
        with pytest.raises(DuplicateChild):
            await sup.start_child("A", lambda: make("a2"))
        await trio.sleep(1)
        assert running == ["a1"]
        assert sup.retire("A") is True
        assert sup.retire("A") is False
        await trio.sleep(1)
        assert running == []
        assert sup.children() == ()
        await sup.start_child("A", lambda: make("a3"))
        await trio.sleep(1)
        assert running == ["a3"]
        nursery.cancel_scope.cancel()


async def test_start_child_before_run_is_refused() -> None:
    sup = Supervisor(cfg=CFG, rng=random.Random(0))
    with pytest.raises(RuntimeError, match="not running"):
        await sup.start_child("A", trio.sleep_forever)


class TestRunCritical:
    """A critical actor's crash becomes a callback, never a restart."""

    async def test_crash_calls_back_once(self, autojump_clock: trio.testing.MockClock) -> None:
        calls: list[CriticalCrash] = []
        runs = 0

        async def risk() -> None:
            nonlocal runs
            runs += 1
            raise Boom("state corrupt")

        async def on_crash(crash: CriticalCrash) -> None:
            calls.append(crash)

        with capture_logs() as logs:
            await run_critical("risk", risk, on_crash=on_crash)
        assert runs == 1
        assert calls == [CriticalCrash(actor="risk", error_type="Boom", error="state corrupt")]
        assert any(e["event"] == "critical_actor_crashed" and e["log_level"] == "critical" for e in logs)

    async def test_cancellation_propagates(self, autojump_clock: trio.testing.MockClock) -> None:
        calls: list[CriticalCrash] = []

        async def on_crash(crash: CriticalCrash) -> None:
            calls.append(crash)

        with trio.move_on_after(5) as scope:
            await run_critical("execution", trio.sleep_forever, on_crash=on_crash)
        assert scope.cancelled_caught
        assert calls == []

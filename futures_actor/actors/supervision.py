"""Supervision of actors (ARCHITECTURE.md "Supervision and failure", STYLE.md "Actors").

`Supervisor` runs restartable children (the symbol actors) in its own nursery:

- A child is a factory: each call returns the coroutine of a fresh incarnation (new actor object, new
  state), e.g. `lambda: SymbolActor(...).run(inbox)`. A child that returns normally is finished.
- A child that raises an `Exception` is logged with its actor name and key (symbol) and restarted after an
  exponential backoff with jitter (`supervision.backoff_initial_seconds` doubling per restart still in
  the window, capped at `backoff_max_seconds`, minus up to `_JITTER_FRACTION` of it drawn from a seeded
  `random.Random`). At most `supervision.max_restarts` restarts within `restart_window_seconds` of trio
  time: the next crash drops the child and calls `on_drop` (the symbol leaves the universe, an alert).
- Siblings are unaffected; `Cancelled` (and any group containing it) is never caught.
- Children are added and retired at runtime (`start_child`, `retire`): universe changes.

`run_critical` runs a critical actor (risk, execution, user stream) once: its crash is logged and turned
into a callback (safe mode / orderly shutdown request), never a silent restart with stale state.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec
import trio

from futures_actor.core.config import SupervisionConfig
from futures_actor.logs import get_logger

__all__ = [
    "ChildDropped",
    "ChildFactory",
    "CriticalCrash",
    "DuplicateChild",
    "Supervisor",
    "run_critical",
]

ChildFactory = Callable[[], Awaitable[object]]

# Up to this fraction of a backoff delay is taken off at random, so that symbols that crashed together
# do not restart in lockstep.
_JITTER_FRACTION = 0.5


class ChildDropped(msgspec.Struct, frozen=True, kw_only=True):
    """A supervised child crashed too often and was given up."""

    supervisor: str
    key: str
    restarts: int
    error_type: str
    error: str


class CriticalCrash(msgspec.Struct, frozen=True, kw_only=True):
    """A critical actor crashed: the owner must enter safe mode or shut down in order."""

    actor: str
    error_type: str
    error: str


class DuplicateChild(ValueError):
    """`start_child` was called with a key that is already running."""


def _describe(exc: BaseException) -> str:
    return str(exc)[:500]


class _Child:
    __slots__ = ("crashes", "factory", "incarnation", "scope")

    def __init__(self, factory: ChildFactory) -> None:
        self.factory = factory
        self.scope = trio.CancelScope()
        self.crashes: deque[float] = deque()
        self.incarnation = 0


class Supervisor:
    """Restarts crashed children with backoff; drops a child past the restart-intensity limit."""

    def __init__(
        self,
        *,
        cfg: SupervisionConfig,
        name: str = "symbols",
        rng: random.Random,
        on_drop: Callable[[ChildDropped], Awaitable[None]] | None = None,
    ) -> None:
        self._cfg = cfg
        self._name = name
        self._rng = rng
        self._on_drop = on_drop
        self._nursery: trio.Nursery | None = None
        self._children: dict[str, _Child] = {}
        self._log = get_logger(name)

    def children(self) -> tuple[str, ...]:
        """Keys of the running children (including those waiting to restart), sorted."""
        return tuple(sorted(self._children))

    def incarnation(self, key: str) -> int:
        """How many times the child `key` has been started (1 = never restarted)."""
        return self._children[key].incarnation

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the children's nursery until cancelled; cancelling it stops every child."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._children.clear()

    async def start_child(self, key: str, factory: ChildFactory) -> None:
        """Start a supervised child. Returns once its task runs. Raises `DuplicateChild`."""
        if self._nursery is None:
            raise RuntimeError(f"supervisor {self._name} is not running; start_child({key!r}) refused")
        if key in self._children:
            raise DuplicateChild(f"supervisor {self._name}: child {key!r} is already running")
        child = _Child(factory)
        self._children[key] = child
        await self._nursery.start(self._supervise, key, child)

    def retire(self, key: str) -> bool:
        """Stop a child for good (universe change). False if there was no such child."""
        child = self._children.pop(key, None)
        if child is None:
            return False
        child.scope.cancel()
        self._log.info("child_retired", symbol=key)
        return True

    def _backoff(self, restarts_in_window: int) -> float:
        base = min(
            self._cfg.backoff_max_seconds,
            self._cfg.backoff_initial_seconds * 2 ** max(0, restarts_in_window - 1),
        )
        jitter: float = _JITTER_FRACTION * self._rng.random()
        return float(base) * (1.0 - jitter)

    async def _supervise(self, key: str, child: _Child, *, task_status: trio.TaskStatus[None]) -> None:
        with child.scope:
            task_status.started()
            try:
                await self._loop(key, child)
            finally:
                if self._children.get(key) is child:
                    del self._children[key]

    async def _loop(self, key: str, child: _Child) -> None:
        window = self._cfg.restart_window_seconds
        while True:
            child.incarnation += 1
            try:
                await child.factory()
            except Exception as exc:
                now = trio.current_time()
                child.crashes.append(now)
                while child.crashes and child.crashes[0] <= now - window:
                    child.crashes.popleft()
                restarts = len(child.crashes)
                self._log.error(
                    "child_crashed",
                    symbol=key,
                    incarnation=child.incarnation,
                    crashes_in_window=restarts,
                    error_type=type(exc).__name__,
                    exc_info=exc,
                )
                if restarts > self._cfg.max_restarts:
                    self._log.error(
                        "child_dropped",
                        symbol=key,
                        restarts=restarts - 1,
                        window_seconds=window,
                        error_type=type(exc).__name__,
                    )
                    await self._notify_drop(
                        ChildDropped(
                            supervisor=self._name,
                            key=key,
                            restarts=restarts - 1,
                            error_type=type(exc).__name__,
                            error=_describe(exc),
                        )
                    )
                    return
                delay = self._backoff(restarts)
                self._log.warning("child_restarting", symbol=key, delay_seconds=delay)
                await trio.sleep(delay)
            else:
                self._log.info("child_finished", symbol=key, incarnation=child.incarnation)
                return

    async def _notify_drop(self, event: ChildDropped) -> None:
        if self._on_drop is None:
            return
        try:
            await self._on_drop(event)
        except Exception as exc:
            self._log.error("on_drop_callback_failed", symbol=event.key, exc_info=exc)


async def run_critical(
    name: str,
    actor: ChildFactory,
    *,
    on_crash: Callable[[CriticalCrash], Awaitable[None]],
) -> None:
    """Run a critical actor once. A crash is logged and handed to `on_crash`; it is not restarted.

    Returns normally after `on_crash` (or when the actor returns). Cancellation propagates.
    """
    log = get_logger(name)
    try:
        await actor()
    except Exception as exc:
        log.critical("critical_actor_crashed", error_type=type(exc).__name__, exc_info=exc)
        crash = CriticalCrash(actor=name, error_type=type(exc).__name__, error=_describe(exc))
        try:
            await on_crash(crash)
        except Exception as cb_exc:
            log.critical("critical_crash_callback_failed", exc_info=cb_exc)
            raise

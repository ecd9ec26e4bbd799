"""The root supervisor's lifecycle (ARCHITECTURE.md "Shutdown order"): start the actors in order, wait for
a stop request, stop in order.

A stop is requested by the first SIGTERM/SIGINT (when the system handles signals), by the end of a replay,
by a crash of a critical actor (exit 1), or by the log disk refusing writes (safe mode first, then exit 1);
a second signal cancels everything at once. A stop requested during start-up aborts it: nothing was
decided yet, everything needed to resume is persisted per change, and the actors that did start are
cancelled. The orderly stop: PortfolioRisk and Execution stop intake (trading state REDUCING), Execution
cancels working entry orders and leaves stops and targets on the exchange; the phase is shielded and
bounded by `shutdown.timeout_seconds` (a timeout is exit 1).

A critical actor (PortfolioRisk, Execution) that fails before it is up fails the start-up (the runner
decides: a transient exchange error is retried); once up, its crash is a safety fault: it is reported,
and the system stops in order with exit 1, never restarted with stale state.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from futures_actor.actors.health import HealthMsg, TradingStateChanged
from futures_actor.actors.messages import StopIntake
from futures_actor.control import EXIT_OK, EXIT_RUNTIME
from futures_actor.core.health import FaultKind
from futures_actor.core.types import TradingState
from futures_actor.logs import current_sink, get_logger

__all__ = ["RootSupervisor"]

# How often the orderly stop looks whether Execution still has an entry working.
SHUTDOWN_POLL_SECONDS = 0.05

log = get_logger("app")

_Inbox = TypeVar("_Inbox")
FaultCallback = Callable[[str, str | None, str], None]
StartActors = Callable[[trio.Nursery, trio.TaskStatus[None]], Awaitable[None]]


class _StartedFlag:
    """A task status that remembers whether `started()` was called."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self._inner.started(value)


class RootSupervisor:
    """The lifecycle of one system (see the module docstring): its stop request, exit code and reason."""

    def __init__(self, *, shutdown_timeout: float, signals: bool, report_fault: FaultCallback) -> None:
        self._timeout = shutdown_timeout
        self._signals = signals
        self._report_fault = report_fault
        self.stop_requested = trio.Event()
        self.stopped = trio.Event()
        self.safe_mode_entered = trio.Event()
        self.exit_code = EXIT_OK
        self.started = False
        # Why the system stopped on its own (a fault that requires it), for the operator; None if asked.
        self.stop_reason: str | None = None
        self._root: trio.Nursery | None = None

    async def run(
        self,
        *,
        start: StartActors,
        orderly_stop: Callable[[], Awaitable[None]],
        cleanup: Callable[[], None],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """`start` the actors (it sets `started` and reports `task_status`), wait for a stop request, then
        `orderly_stop` and cancel the rest; `cleanup` runs however this ends."""
        sink = current_sink()
        if sink is not None:
            token = trio.lowlevel.current_trio_token()
            # Called from whatever thread logged; run_sync_soon brings it into trio (thread-safe).
            sink.on_write_error = lambda exc: token.run_sync_soon(self._log_write_failed, exc)
        try:
            async with trio.open_nursery() as root:
                self._root = root
                if self._signals:
                    root.start_soon(self._watch_signals)
                with trio.CancelScope() as starting:
                    root.start_soon(self._abort_start_on_stop, starting)
                    await start(root, task_status)
                if not self.started:
                    # A stop request (signal) during start-up: nothing decided yet, everything needed
                    # to resume is persisted per change; the actors that did start are cancelled.
                    log.warning("startup_aborted", reason="stop requested during start-up")
                    log.warning("shutdown_done", exit_code=self.exit_code)
                    root.cancel_scope.cancel()
                    return
                await self.stop_requested.wait()
                await orderly_stop()
                root.cancel_scope.cancel()
        finally:
            if sink is not None:
                sink.on_write_error = None
            self._root = None
            cleanup()
            self.stopped.set()

    async def run_critical(
        self,
        name: str,
        run: Callable[..., Awaitable[None]],
        inbox: trio.MemoryReceiveChannel[_Inbox],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """A critical actor: its crash is a safety fault that stops the bot in order (exit 1).

        A failure before the actor is up (Execution's start-up reconcile) propagates: the start-up
        failed, and the caller decides (a transient exchange error is retried by `run_live`)."""
        status = _StartedFlag(task_status)
        try:
            await run(inbox, task_status=status)
        except Exception as exc:
            if not status.done:
                raise
            log.critical("critical_actor_crashed", actor=name, error_type=type(exc).__name__, exc_info=exc)
            self.exit_code = EXIT_RUNTIME
            self._report_fault("UNEXPECTED_EXCEPTION", None, f"{name} crashed: {type(exc).__name__}")
            self.stop_requested.set()

    async def orderly_stop(
        self,
        *,
        intake: Sequence[trio.MemorySendChannel[StopIntake]],
        health: trio.MemorySendChannel[HealthMsg],
        entries_working: Callable[[], bool],
    ) -> None:
        """REDUCING, cancel working entries, keep stops/targets, persist, flush (each phase bounded)."""
        timeout = self._timeout
        log.warning("shutdown_started", timeout_seconds=timeout)
        with trio.move_on_after(timeout) as scope:
            scope.shield = True
            for channel in intake:
                try:
                    channel.send_nowait(StopIntake())
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    await channel.send(StopIntake())
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                health.send_nowait(TradingStateChanged(state=TradingState.REDUCING))
            # Until no trade has an entry order working (execution cancels them on StopIntake).
            while entries_working():  # noqa: ASYNC110
                await trio.sleep(SHUTDOWN_POLL_SECONDS)
        if scope.cancelled_caught:
            log.error("shutdown_timeout", phase="cancel working entries", timeout_seconds=timeout)
            self.exit_code = EXIT_RUNTIME
        log.warning("shutdown_done", exit_code=self.exit_code)

    def safe_mode_changed(self, on: bool) -> None:
        """Health's callback: safe mode entered (or left)."""
        if on:
            self.safe_mode_entered.set()

    def _log_write_failed(self, exc: OSError) -> None:
        """The log disk refuses writes (full): alert, safe mode, then an orderly stop with exit 1.

        Trading on without an event log would hide every decision; the trade journal and the state
        store refuse loudly on their own (a closed trade whose record could not be written is
        re-written from the state file at the next start)."""
        reason = f"log disk refuses writes: {exc.filename or ''} {exc.strerror or exc}".strip()
        if self.stop_reason is None:
            self.stop_reason = reason
        print(
            f"futures-actor: {reason}; entering safe mode and stopping in order", file=sys.stderr, flush=True
        )
        log.critical("log_write_failed", error=str(exc), errno=exc.errno, action="safe mode, orderly stop")
        self._report_fault(FaultKind.LOG_WRITE.value, None, reason)
        self.exit_code = EXIT_RUNTIME
        if self._root is None:
            self.stop_requested.set()
        else:
            self._root.start_soon(self._stop_after_safe_mode)

    async def _stop_after_safe_mode(self) -> None:
        """Stop in order once health has entered safe mode (bounded: stop anyway after the timeout)."""
        with trio.move_on_after(self._timeout):
            await self.safe_mode_entered.wait()
        self.stop_requested.set()

    async def _abort_start_on_stop(self, starting: trio.CancelScope) -> None:
        await self.stop_requested.wait()
        if not self.started:
            starting.cancel()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not self.stop_requested.is_set():
                    log.warning("signal_received", signal=signal.Signals(signum).name, action="orderly stop")
                    self.stop_requested.set()
                else:
                    log.warning(
                        "signal_received", signal=signal.Signals(signum).name, action="immediate stop"
                    )
                    if self._root is not None:
                        self._root.cancel_scope.cancel()
                    return

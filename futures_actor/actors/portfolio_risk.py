"""The PortfolioRisk actor: the trio runtime shell of `RiskMachine` (BOT_SPEC §7, §8, §10, §12).

Every decision lives in `futures_actor.machines.risk.RiskMachine` (pure: messages in, effects out; its
docstring states the policy: batching, verdicts, rejections, shadow plans, the calendar, persistence).
This module owns only what needs trio, the state store, the logger or the metrics registry. It loads
the persisted state at start (`Start`), then for each inbox message calls
`machine.handle(message, now_ms=wall_clock.now_ms())` and performs the effects in order, none of them
awaiting:

- `Log`: written on the actor's structlog logger. `SetMetric` / `IncMetric`: on `metrics` (if any).
- `Persist`: one `StateStore` transaction; a `StateStoreError` / `sqlite3.Error` is answered with
  `PersistFailed` (logged by the machine; the state is written again at the next change).
- `SendPlan` / `SendRetryDecided`: posted on a never-blocking, order-keeping mailbox to execution (or
  to the shadow book), see `_Mailbox`.
- `SendShadowPlan`: `send_nowait` to the shadow book; a full or gone shadow book drops it. Answered
  with `ShadowPlanAnswered` at once.
- `ReplyVerdict`: `reply.send_nowait(verdict)` on the report's one-shot channel (the machine passes
  the channel through as its correlation token). `BrokenResourceError` / `ClosedResourceError` (the
  asker gave up) and `WouldBlock` are answered with `VerdictUndelivered` at once (logged; nothing is
  released: an approved plan is already with execution, which owns it now).
- `SetTimer` / `CancelTimer`: batch deadlines as trio deadlines (trio time at the `SetTimer` plus
  `at_ms - now_ms`); the inbox wait is bounded by the earliest; when it passes the shell feeds
  `BatchDeadline`, also right after a message handled at that trio time.
- `Crash`: raised unchanged (risk is critical: orderly shutdown).

When the inbox ends the shell feeds `InboxClosed` (the open batches are decided, state persisted) and
delivers what the mailboxes still hold. A message of a type outside `RiskInbox` (the inbox channel is
untyped upstream) is logged as `risk_unknown_message` and skipped.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol, assert_never

import trio

from futures_actor.core.clock import WallClock
from futures_actor.core.config import BotConfig
from futures_actor.core.performance import PerformanceTracker
from futures_actor.core.risk import Exposure
from futures_actor.core.risk_state import ClosedPnl, RiskState
from futures_actor.core.selector import SelectionState
from futures_actor.core.types import SymbolRules
from futures_actor.logs import get_logger
from futures_actor.machines.effects import Log, write_log
from futures_actor.machines.risk import (
    DUPLICATE_CANDLE,
    INPUT_ERROR,
    LATE,
    NO_ACCOUNT,
    NO_SYMBOL_RULES,
    NO_TRADE,
    NOT_IN_UNIVERSE,
    RISK_INBOX_TYPES,
    RISK_STATE_NAME,
    SELECTION_STATE_NAME,
    SHUTTING_DOWN,
    STALE_CANDLE,
    BatchDeadline,
    CancelTimer,
    Crash,
    InboxClosed,
    IncMetric,
    Mode,
    Persist,
    PersistFailed,
    ReplyVerdict,
    RiskEffect,
    RiskInbox,
    RiskInput,
    RiskMachine,
    RiskSnapshot,
    SendExecutionSync,
    SendPlan,
    SendRetryDecided,
    SendShadowPlan,
    SetMetric,
    SetTimer,
    ShadowPlanAnswered,
    Start,
    VerdictUndelivered,
)
from futures_actor.state.store import BlobKind, StateStore, StateStoreError

__all__ = [
    "DUPLICATE_CANDLE",
    "INPUT_ERROR",
    "LATE",
    "NOT_IN_UNIVERSE",
    "NO_ACCOUNT",
    "NO_SYMBOL_RULES",
    "NO_TRADE",
    "RISK_INBOX_SIZE",
    "RISK_STATE_NAME",
    "SELECTION_STATE_NAME",
    "SHUTTING_DOWN",
    "STALE_CANDLE",
    "PortfolioRisk",
    "RiskInbox",
    "RiskSnapshot",
    "open_risk_inbox",
]

RISK_INBOX_SIZE: Final = 64
"""Reports from every symbol of one 5m close plus fills and account updates fit without blocking."""

_MS_PER_S: Final = 1000.0


def open_risk_inbox() -> tuple[trio.MemorySendChannel[RiskInbox], trio.MemoryReceiveChannel[RiskInbox]]:
    """The bounded inbox of the PortfolioRisk actor (size `RISK_INBOX_SIZE`)."""
    return trio.open_memory_channel[RiskInbox](RISK_INBOX_SIZE)


class MetricsSink(Protocol):
    """What the actor needs of `actors.metrics.Metrics` (duck-typed)."""

    def set(self, name: str, value: float, **labels: str) -> None: ...

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None: ...


class _Mailbox:
    """A never-blocking outbox of PortfolioRisk to one actor (execution, or the shadow book).

    Why: execution awaits its sends to risk (fills, closes, retry requests) while risk sends it plans
    and retry decisions. If both awaited, a full risk inbox and a full execution inbox (execution's
    inbox also carries book prices) would leave each actor waiting on the other for good: no stop
    amended, no fill booked. So risk's decision loop never waits on execution: `post` hands the message
    over at once when the target has room and nothing is queued before it, else queues it, unbounded
    by design (one entry per decision, so it grows only while execution is busy) and `deliver`, a
    task of its own, awaits the target. Order is kept; nothing is dropped.
    """

    __slots__ = ("_queued", "_recv", "_send", "_target")

    def __init__(self, target: trio.MemorySendChannel[Any]) -> None:
        self._target = target
        self._send, self._recv = trio.open_memory_channel[Any](math.inf)
        self._queued = 0

    @property
    def queued(self) -> int:
        return self._queued

    def post(self, msg: Any) -> None:
        if self._queued == 0:
            try:
                self._target.send_nowait(msg)
                return
            except trio.WouldBlock:
                pass
        self._queued += 1
        self._send.send_nowait(msg)

    def close(self) -> None:
        self._send.close()

    async def deliver(self) -> None:
        """Until closed and drained: await the target for each queued message, in order."""
        async with self._recv:
            async for msg in self._recv:
                try:
                    await self._target.send(msg)
                finally:
                    self._queued -= 1


class PortfolioRisk:
    """Runs the `RiskMachine` on trio: the only writer of risk state (see the module docstring)."""

    def __init__(
        self,
        *,
        cfg: BotConfig,
        mode: Mode,
        execution_send: trio.MemorySendChannel[Any],
        symbols: Iterable[str],
        rules_by_symbol: Mapping[str, SymbolRules],
        wall_clock: WallClock,
        store: StateStore | None = None,
        tracker: PerformanceTracker | None = None,
        selection_state: SelectionState | None = None,
        risk_state: RiskState | None = None,
        metrics: MetricsSink | None = None,
        closed_pnl: Sequence[ClosedPnl] = (),
        shadow_send: trio.MemorySendChannel[Any] | None = None,
        reference_symbol: str = "",
        log: Any = None,
        sync_with_execution: bool = False,
    ) -> None:
        """`log`: the structlog logger to write on (default: `get_logger("portfolio_risk")`).
        `sync_with_execution`: decide a complete batch once execution answered the barrier (the bot's
        risk actor, whose `execution_send` reaches a real Execution; see `RiskMachine`)."""
        self._machine = RiskMachine(
            cfg=cfg,
            mode=mode,
            symbols=symbols,
            rules_by_symbol=rules_by_symbol,
            tracker=tracker,
            selection_state=selection_state,
            risk_state=risk_state,
            closed_pnl=closed_pnl,
            reference_symbol=reference_symbol,
            has_shadow=shadow_send is not None,
            persists=store is not None,
            emit_metrics=metrics is not None,
            sync_with_execution=sync_with_execution,
        )
        self._to_execution = _Mailbox(execution_send)
        self._to_shadow = _Mailbox(shadow_send) if shadow_send is not None else None
        self._shadow_send = shadow_send
        self._clock = wall_clock
        self._store = store
        self._metrics = metrics
        self._log = log if log is not None else get_logger("portfolio_risk")
        self._timers: dict[int, float] = {}  # batch candle open time -> trio deadline

    # -- public views -----------------------------------------------------------------------------

    @property
    def machine(self) -> RiskMachine:
        return self._machine

    @property
    def risk_state(self) -> RiskState | None:
        return self._machine.risk_state

    @property
    def selection_state(self) -> SelectionState | None:
        return self._machine.selection_state

    @property
    def exposures(self) -> tuple[Exposure, ...]:
        return self._machine.exposures

    def snapshot(self) -> RiskSnapshot:
        """Equity, open risk, positions, flags and decision counts (for /health and /metrics)."""
        return self._machine.snapshot(now_ms=self._clock.now_ms())

    def ineligible_strategies(self) -> dict[str, int]:
        """Strategies ineligible on their global window (expectancy ≤ 0 on enough trades): since when (ms)."""
        return self._machine.ineligible_strategies()

    def performance_blocked_strategies(self) -> dict[str, int]:
        """Strategies eligible on enough trades whose own confidence is below the threshold in a regime
        they are configured for (they trade on the shadow book there): since when (ms)."""
        return self._machine.performance_blocked_strategies()

    # -- the loop -----------------------------------------------------------------------------------

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[RiskInbox],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the inbox until it is closed. Ready (started) once persisted state is loaded."""
        self._feed(self._start_message())
        task_status.started()
        async with trio.open_nursery() as nursery:
            # The outboxes' own tasks: the loop below never waits on execution (see `_Mailbox`).
            nursery.start_soon(self._to_execution.deliver)
            if self._to_shadow is not None:
                nursery.start_soon(self._shadow_deliver, self._to_shadow)
            try:
                while True:
                    msg: object = None
                    with trio.move_on_at(min(self._timers.values(), default=math.inf)):
                        try:
                            msg = await inbox.receive()
                        except trio.EndOfChannel:
                            break
                    if msg is not None:
                        self._deliver(msg)
                    self._fire_due_timers()
                # Inbox closed: decide what is still waiting, then persist.
                self._feed(InboxClosed())
            except BaseException:
                nursery.cancel_scope.cancel()  # a crash or cancellation never waits on a delivery
                raise
            finally:
                # Normal end: deliver what is queued, then stop.
                self._to_execution.close()
                if self._to_shadow is not None:
                    self._to_shadow.close()

    def _start_message(self) -> Start:
        """What the state store holds for the states the machine was not given."""
        store = self._store
        if store is None:
            return Start()
        risk = None
        if self._machine.risk_state is None:
            risk = store.load_struct(BlobKind.RISK, RISK_STATE_NAME, RiskState)
        selection = None
        if self._machine.selection_state is None:
            selection = store.load_struct(BlobKind.SELECTION, SELECTION_STATE_NAME, SelectionState)
        return Start(risk_state=risk, selection_state=selection)

    async def _shadow_deliver(self, mailbox: _Mailbox) -> None:
        """The shadow book is not critical: its being gone never stops the risk actor."""
        try:
            await mailbox.deliver()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._log.warning("shadow_answer_dropped", reason="shadow book stopped", queued=mailbox.queued)

    def _deliver(self, msg: object) -> None:
        if not isinstance(msg, RISK_INBOX_TYPES):
            self._log.error("risk_unknown_message", type=type(msg).__name__)
            return
        self._feed(msg)

    def _fire_due_timers(self) -> None:
        """Feed `BatchDeadline` for every timer whose trio deadline has passed (earliest first)."""
        now = trio.current_time()
        due = sorted((at, key) for key, at in self._timers.items() if at <= now)
        for _, key in due:
            if self._timers.pop(key, None) is not None:
                self._feed(BatchDeadline(candle_open_time_ms=key))

    def _feed(self, msg: RiskInput) -> None:
        """One input through the machine, its effects performed in order."""
        now_ms = self._clock.now_ms()
        self._perform(self._machine.handle(msg, now_ms=now_ms), now_ms)

    def _perform(self, effects: list[RiskEffect], now_ms: int) -> None:
        for effect in effects:
            match effect:
                case Log():
                    write_log(self._log, effect)
                case Persist():
                    self._persist(effect)
                case SendPlan():
                    self._to_execution.post(effect.submit)
                case SendExecutionSync():
                    self._to_execution.post(effect.sync)
                case SendRetryDecided():
                    self._post_retry_decided(effect)
                case SendShadowPlan():
                    self._feed(ShadowPlanAnswered(effect=effect, dropped=self._send_shadow(effect)))
                case ReplyVerdict():
                    self._reply(effect)
                case SetTimer():
                    self._timers[effect.candle_open_time_ms] = (
                        trio.current_time() + (effect.at_ms - now_ms) / _MS_PER_S
                    )
                case CancelTimer():
                    self._timers.pop(effect.candle_open_time_ms, None)
                case SetMetric():
                    if self._metrics is not None:
                        self._metrics.set(effect.name, effect.value, **effect.labels)
                case IncMetric():
                    if self._metrics is not None:
                        self._metrics.inc(effect.name, effect.amount, **effect.labels)
                case Crash():
                    raise effect.error
                case _:
                    assert_never(effect)

    # -- effects -------------------------------------------------------------------------------------

    def _persist(self, effect: Persist) -> None:
        store = self._store
        if store is None:
            return
        try:
            with store.transaction():
                if effect.risk_state is not None:
                    store.save_struct(BlobKind.RISK, RISK_STATE_NAME, effect.risk_state, now_ms=effect.now_ms)
                if effect.selection_state is not None:
                    store.save_struct(
                        BlobKind.SELECTION, SELECTION_STATE_NAME, effect.selection_state, now_ms=effect.now_ms
                    )
        except (StateStoreError, sqlite3.Error) as exc:
            self._feed(PersistFailed(effect=effect, error=str(exc)))

    def _post_retry_decided(self, effect: SendRetryDecided) -> None:
        if not effect.shadow:
            self._to_execution.post(effect.decided)
        elif self._to_shadow is not None:
            self._to_shadow.post(effect.decided)

    def _send_shadow(self, effect: SendShadowPlan) -> str | None:
        """Hand a shadow plan to the shadow book, never blocking: None when sent, else why it was dropped."""
        if self._shadow_send is None:
            return "no shadow book"
        try:
            self._shadow_send.send_nowait(effect.submit)
        except trio.WouldBlock:
            return "shadow inbox full"
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return "shadow book stopped"
        return None

    def _reply(self, effect: ReplyVerdict) -> None:
        reason: Literal["closed", "full"]
        try:
            effect.reply.send_nowait(effect.verdict)
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            reason = "closed"
        except trio.WouldBlock:
            reason = "full"
        self._feed(VerdictUndelivered(reply=effect.reply, verdict=effect.verdict, reason=reason))

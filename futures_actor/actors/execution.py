"""The Execution actor: drives every trade's order lifecycle against the exchange gateway (BOT_SPEC §9–§11).

Every decision lives in `futures_actor.machines.execution.ExecutionMachine` (pure: messages in, effects
out; it owns the per-trade `TradeLifecycle`s, their timers, the start-up and periodic reconciliation and
the order of the journal writes). This module is its trio shell: it pumps the inbox and the gateway's
events into one loop, keeps the machine's timers as trio deadlines, performs the effects in order
(awaits the gateway, writes the state store and the journal, sends on channels, writes logs, reports
faults and metrics) and feeds every outcome back as a message. The policy below is what the pair does.

Policy:
- Start-up (before `task_status.started()`): closed trades whose record was never journaled are written
  first; then the persisted lifecycles are reconciled with the exchange (open orders regular + algo,
  positions, account) by the pure `reconcile` and its commands executed: stale entries cancelled, our
  unowned orders cancelled, unprotected positions protected, foreign positions adopted (reason ADOPTED).
  After `started()`, risk gets `AccountUpdated`, `EntryFilled` (cumulative, final) for every open
  position (adopted ones included: open exposure) and risk and the symbol actor get `PositionUpdated`.
  Positions we cannot adopt (foreign orders on the symbol, or no symbol rules) are reported to risk as
  `EntryFilled` with trade id `foreign-<SYMBOL>` and the adoption stop, and released with
  `EntryAbandoned` when a later reconcile no longer sees them.
- Persist before send: after every lifecycle transition the snapshot and the client id of every
  placement it commands are written in one transaction, BEFORE any order leaves. The store refuses a
  client id recorded before (`DuplicateClientOrderId`): that placement is not sent, its outcome is
  treated as unknown and resolved by a query. No client id is ever sent twice, across restarts too.
- Results are fed back as lifecycle events: acceptance, venue rejections (`ApiError` tree, with code;
  -4116 means the order exists), unknown outcomes (`UnknownOrderStatus`, 5xx, transport, rate limit ⇒
  `OrderStatusUnknown`: the lifecycle asks for a query, never a re-send). Queries run after
  `exchange.retry_wait_initial_seconds` (backoff to `retry_wait_max_seconds`, repeated until resolved).
  A cancel response carries the order's executed quantity, fed in before the cancel itself so a fill
  racing the cancel is never lost; a cancel that finds the order gone queries it (gone may mean filled).
  A failed cancel is retried (idempotent) up to `exchange.max_retry_attempts` times.
- Timers run on trio time from a deadline heap checked in the loop (works under `MockClock`): the entry
  TTL per attempt, deferred queries and cancel retries, and the periodic reconcile every
  `execution.reconcile_interval_seconds`. The periodic reconcile (and `ResyncNeeded`) leaves trades in
  their entry phase alone (their TTL timers are alive; the start-up rule "stale entry" does not apply).
- Inbox: `SubmitPlan` (refused with `EntryAbandoned` after `KillSwitch` / `StopIntake` until `Resume`,
  or when the symbol already has an open trade), `AmendStop`, `KillSwitch` (every trade closed by the
  lifecycle's closing loop), `StopIntake` (working entries cancelled without retry; stops and targets
  stay), `Resume`, and `BookUpdated` / `MarkUpdated` (the mid that re-prices a retried entry, the mark
  for the PERCENT_PRICE band; not persisted on their own).
- Journal: exactly one record per trade whose entry reached the exchange (TIMEOUT records included),
  written when the trade closes: snapshot CLOSED persisted → record written (`DuplicateTradeId` counts
  as written) → `TradeClosed` / `EntryAbandoned` sent to risk → the store's meta key
  `journaled:<trade_id>` set. A crash anywhere in between re-does the missing steps at start-up, so risk
  may see a `TradeClosed` twice after a crash (at least once; risk dedupes by trade id). The write is
  blocking (fsync): live it runs in `trio.to_thread.run_sync`; `journal_in_thread=False` writes inline
  (replay and tests, where determinism under the mock clock matters more than latency).
- Messages: risk gets EntryFilled / EntryAbandoned / PositionUpdated / TradeClosed / AccountUpdated
  (awaited: back-pressure); the symbol actor of the trade gets PositionUpdated only (its inbox accepts
  nothing else), with `send_nowait`: a full or closed symbol inbox is logged, never blocks execution
  (the next update supersedes it; a position update is a snapshot, not a delta).
- Gateway calls are awaited inline, one at a time (the machine is pending until the answer is fed
  back): the lifecycle state is consistent at every await. Cancellation (a crash) runs no cleanup:
  everything needed to resume is already persisted. A `Crash` effect raises its error.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, assert_never

import trio

from futures_actor.actors.metrics import Metrics
from futures_actor.binance.gateway import ExchangeGateway, GatewayEvent
from futures_actor.core import lifecycle as lcm
from futures_actor.core.clock import WallClock
from futures_actor.core.config import BotConfig
from futures_actor.core.types import SymbolRules
from futures_actor.logs import get_logger
from futures_actor.machines.effects import Log, write_log
from futures_actor.machines.execution import (
    ADOPTION_SEQ_KEY,
    CLOSED_TRADES_KEPT,
    FOREIGN_PREFIX,
    Account,
    CancelOrder,
    CancelTimer,
    Crash,
    ExecutionEffect,
    ExecutionInbox,
    ExecutionInput,
    ExecutionMachine,
    ExecutionMachineError,
    GatewayCall,
    GatewayFailed,
    GatewayReplied,
    GatewayRequest,
    GetMeta,
    InboxClosed,
    IncCounter,
    JournalWritten,
    LoadLifecycle,
    LoadLifecycles,
    OpenOrders,
    Persist,
    Persisted,
    PlaceOrder,
    PlaceStop,
    Positions,
    PrepareSymbol,
    QueryOrder,
    RaiseAlert,
    ReadState,
    ReportFault,
    SendRisk,
    SendSymbol,
    SetGauge,
    SetMeta,
    SetTimer,
    Start,
    StateRead,
    TimerFired,
    UserTrades,
    WriteJournal,
    journal_key,
)
from futures_actor.machines.execution import Answer as _Answer
from futures_actor.state.journal import DuplicateTradeId, InvalidTradeRecord, TradeJournal
from futures_actor.state.store import DuplicateClientOrderId, StateStore

__all__ = [
    "ADOPTION_SEQ_KEY",
    "CLOSED_TRADES_KEPT",
    "FOREIGN_PREFIX",
    "MERGED_BUFFER",
    "Execution",
    "ExecutionInbox",
    "FaultCallback",
    "call_gateway",
    "journal_key",
]

FaultCallback = Callable[[str, str, str], None]
"""`(fault_kind, symbol, detail)`, synchronous (use `send_nowait` inside if it forwards)."""

MERGED_BUFFER: Final = 64  # inbox + gateway events merged into the loop's channel
_MS_PER_S: Final = 1000.0


async def call_gateway(gw: ExchangeGateway, call: GatewayRequest) -> object:
    """Carry one `GatewayRequest` out on `gw` (the method it names); its return value is the answer."""
    match call:
        case PlaceOrder(order=order):
            return await gw.place_order(order)
        case PlaceStop(stop=stop):
            return await gw.place_stop(stop)
        case CancelOrder(symbol=symbol, client_id=cid, is_stop=is_stop):
            return await (gw.cancel_stop(symbol, cid) if is_stop else gw.cancel_order(symbol, cid))
        case QueryOrder(symbol=symbol, client_id=cid, is_stop=is_stop):
            return await (gw.query_stop(symbol, cid) if is_stop else gw.query_order(symbol, cid))
        case OpenOrders():
            return await gw.open_orders()
        case Positions():
            return await gw.positions()
        case Account():
            return await gw.account()
        case UserTrades(symbol=symbol, start_ms=start_ms):
            return await gw.user_trades(symbol, start_ms=start_ms)
        case PrepareSymbol(symbol=symbol, leverage=leverage):
            await gw.prepare_symbol(symbol, leverage=leverage)
            return None
        case _:
            assert_never(call)


def answer_persist(store: StateStore, effect: Persist) -> Persisted:
    """Perform a `Persist` request (one transaction); a client id the store already holds is refused."""
    try:
        store.persist(effect.state, effect.commands, now_ms=effect.now_ms)
    except DuplicateClientOrderId as exc:
        return Persisted(request_id=effect.request_id, refused_cid=exc.cid)
    return Persisted(request_id=effect.request_id)


def answer_read(store: StateStore, effect: ReadState) -> StateRead:
    """Perform a `ReadState` request."""
    query = effect.query
    value: object
    match query:
        case LoadLifecycle(trade_id=trade_id):
            value = store.load_lifecycle(trade_id)
        case LoadLifecycles(include_closed=include_closed):
            value = store.load_lifecycles(include_closed=include_closed)
        case GetMeta(key=key):
            value = store.get_meta(key)
        case _:
            assert_never(query)
    return StateRead(request_id=effect.request_id, value=value)


def answer_journal(journal: TradeJournal, effect: WriteJournal) -> JournalWritten:
    """Perform a `WriteJournal` request (blocking: the trio shell runs it in a worker thread)."""
    rid = effect.request_id
    try:
        journal.write(effect.record)
    except DuplicateTradeId:
        return JournalWritten(request_id=rid, outcome="DUPLICATE")
    except InvalidTradeRecord as exc:  # quarantined by the journal, never dropped
        return JournalWritten(request_id=rid, outcome="QUARANTINED", error=str(exc))
    return JournalWritten(request_id=rid, outcome="WRITTEN")


class Execution:
    """The single owner of every trade's orders: `ExecutionMachine` on trio (see the module docstring)."""

    def __init__(
        self,
        *,
        cfg: BotConfig,
        mode: str,
        gateway: ExchangeGateway,
        store: StateStore,
        journal: TradeJournal,
        rules_by_symbol: Mapping[str, SymbolRules],
        wall_clock: WallClock,
        risk_send: trio.abc.SendChannel[Any],
        symbol_sends: Mapping[str, trio.MemorySendChannel[Any]],
        on_fault: FaultCallback | None = None,
        metrics: Metrics | None = None,
        journal_in_thread: bool = True,
        on_alert: Callable[[str, str, str], None] | None = None,
        actor_name: str = "execution",
        listed_rules: Mapping[str, SymbolRules] | None = None,
    ) -> None:
        self._machine = ExecutionMachine(
            cfg=cfg,
            mode=mode,
            rules_by_symbol=rules_by_symbol,
            listed_rules=listed_rules,
            publish_metrics=metrics is not None,
        )
        self._on_alert = on_alert  # (code, symbol, message): operator alerts (Reporter → Telegram)
        self._gw = gateway
        self._store = store
        self._journal = journal
        self._clock = wall_clock
        self._risk = risk_send
        self._symbols = symbol_sends
        self._on_fault = on_fault
        self._metrics = metrics
        self._journal_in_thread = journal_in_thread
        self._log = get_logger(actor_name)  # "shadow_execution": the shadow book's, told apart in the log
        # The machine's timers as trio deadlines: a heap of (deadline, sequence, key) and the live
        # sequence number per key (a replaced or cancelled timer's heap entry is skipped).
        self._timers: list[tuple[float, int, str]] = []
        self._timer_seq: dict[str, int] = {}
        self._seq = itertools.count()
        self._now_ms = 0  # the `now_ms` of the batch of effects being performed
        self._started = False
        self._outbox: list[SendRisk | SendSymbol] = []  # messages held back until started()
        # Position updates a symbol actor's full inbox could not take yet: the latest per trade, delivered
        # in order by one task per symbol (never dropped: trailing rests on them; never awaited here).
        self._held_for_symbol: dict[str, dict[str, Any]] = {}
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------------------------- public views

    def open_trades(self) -> list[lcm.TradeLifecycle]:
        """The open trades (read-only use: tests, health)."""
        return self._machine.open_trades()

    def trade(self, trade_id: str) -> lcm.TradeLifecycle | None:
        return self._machine.trade(trade_id)

    @property
    def unprotected(self) -> list[str]:
        """The watchdog's last finding: positions without a full stop."""
        return self._machine.unprotected

    # ------------------------------------------------------------------------------------- running

    async def run(
        self,
        inbox: trio.abc.ReceiveChannel[ExecutionInbox],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Reconcile, signal readiness, then handle the inbox, gateway events and timers.

        The gateway's `run()` must already be running (its events feed this loop). Returns when every
        sender of `inbox` is closed. A cancellation stops it at once: no cleanup is needed.
        """
        await self._handle(Start())
        send, recv = trio.open_memory_channel[Any](MERGED_BUFFER)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._pump_inbox, inbox, send.clone())
            nursery.start_soon(self._pump_events, self._gw.events(), send.clone())
            send.close()
            self._started = True
            task_status.started()
            outbox, self._outbox = self._outbox, []
            for effect in outbox:
                await self._send(effect)
            await self._loop(recv)
            nursery.cancel_scope.cancel()

    async def _pump_inbox(
        self, inbox: trio.abc.ReceiveChannel[ExecutionInbox], send: trio.MemorySendChannel[Any]
    ) -> None:
        async with send:
            async for msg in inbox:
                await send.send(msg)
            await send.send(InboxClosed())

    async def _pump_events(
        self, events: trio.abc.ReceiveChannel[GatewayEvent], send: trio.MemorySendChannel[Any]
    ) -> None:
        async with send:
            async for ev in events:
                await send.send(ev)

    async def _loop(self, recv: trio.MemoryReceiveChannel[Any]) -> None:
        while True:
            item: ExecutionInput | None = None
            deadline = self._timers[0][0] if self._timers else math.inf
            with trio.move_on_at(deadline):
                try:
                    item = await recv.receive()
                except trio.EndOfChannel:
                    return
            if item is not None:
                await self._handle(item)
                if isinstance(item, InboxClosed):
                    return
            await self._fire_due()

    async def _fire_due(self) -> None:
        now = trio.current_time()
        while self._timers and self._timers[0][0] <= now:
            _, seq, key = heapq.heappop(self._timers)
            if self._timer_seq.get(key) != seq:
                continue  # cancelled or replaced
            del self._timer_seq[key]
            await self._handle(TimerFired(key=key))

    # ------------------------------------------------------------------------------------- effects

    async def _handle(self, msg: ExecutionInput) -> None:
        """One message through the machine; its effects performed in order, every answer fed back."""
        answer: _Answer | None
        item: ExecutionInput = msg
        while True:
            self._now_ms = self._clock.now_ms()
            answer = None
            for effect in self._machine.handle(item, now_ms=self._now_ms):
                if answer is not None:
                    raise ExecutionMachineError(f"{type(effect).__name__} after a request")
                answer = await self._perform(effect)
            if answer is None:
                return
            item = answer

    async def _perform(self, effect: ExecutionEffect) -> _Answer | None:
        """Carry out one effect; a request returns its answer."""
        match effect:
            case Log():
                write_log(self._log, effect)
            case GatewayCall(request_id=rid, call=call):
                try:
                    result = await call_gateway(self._gw, call)
                except Exception as exc:
                    return GatewayFailed(request_id=rid, error=exc)
                return GatewayReplied(request_id=rid, result=result)
            case Persist():
                return answer_persist(self._store, effect)
            case ReadState():
                return answer_read(self._store, effect)
            case WriteJournal():
                if self._journal_in_thread:
                    return await trio.to_thread.run_sync(answer_journal, self._journal, effect)
                return answer_journal(self._journal, effect)
            case SetMeta(key=key, value=value):
                self._store.set_meta(key, value)
            case SetTimer(key=key, at_ms=at_ms):
                seq = next(self._seq)
                self._timer_seq[key] = seq
                deadline = trio.current_time() + (at_ms - self._now_ms) / _MS_PER_S
                heapq.heappush(self._timers, (deadline, seq, key))
            case CancelTimer(key=key):
                self._timer_seq.pop(key, None)
            case SendRisk() | SendSymbol():
                if self._started:
                    await self._send(effect)
                else:
                    self._outbox.append(effect)
            case ReportFault(kind=kind, symbol=symbol, detail=detail):
                if self._on_fault is not None:
                    try:
                        self._on_fault(kind, symbol, detail)
                    except Exception as cb_exc:
                        self._log.error("on_fault_failed", error=repr(cb_exc))
            case RaiseAlert(code=code, symbol=symbol, message=message):
                if self._on_alert is not None:
                    self._on_alert(code, symbol, message)
            case SetGauge(name=name, value=value, labels=labels):
                if self._metrics is not None:
                    self._metrics.set(name, value, **dict(labels))
            case IncCounter(name=name, labels=labels):
                if self._metrics is not None:
                    self._metrics.inc(name, 1.0, **dict(labels))
            case Crash(error=error):
                raise error
            case _:
                assert_never(effect)
        return None

    # ------------------------------------------------------------------------------------- sending

    async def _send(self, effect: SendRisk | SendSymbol) -> None:
        msg = effect.message
        if isinstance(effect, SendRisk):
            try:
                await self._risk.send(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._log.error("risk_unreachable", message=type(msg).__name__)
            return
        target = effect.symbol
        send = self._symbols.get(target)
        if send is None:
            self._log.info("symbol_actor_missing", symbol=target, message=type(msg).__name__)
            return
        if target in self._held_for_symbol:  # earlier updates still wait: never overtake them
            self._hold_for_symbol(target, effect.message)
            return
        try:
            send.send_nowait(msg)
        except trio.WouldBlock:
            self._hold_for_symbol(target, effect.message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._log.warning("symbol_actor_gone", symbol=target, message=type(msg).__name__)

    def _hold_for_symbol(self, symbol: str, msg: Any) -> None:
        """The symbol actor's inbox is full (market data fills it): keep the latest update of each trade
        and deliver them from a task of their own, so Execution never waits on a symbol actor."""
        held = self._held_for_symbol.setdefault(symbol, {})
        first = not held
        held[msg.trade_id] = msg
        self._log.warning("symbol_inbox_full", symbol=symbol, message=type(msg).__name__, held=len(held))
        if first and self._nursery is not None:
            self._nursery.start_soon(self._deliver_held, symbol)

    async def _deliver_held(self, symbol: str) -> None:
        held = self._held_for_symbol[symbol]
        while held:
            trade_id, msg = next(iter(held.items()))
            send = self._symbols.get(symbol)
            if send is None:
                self._log.info(
                    "symbol_actor_missing", symbol=symbol, message=type(msg).__name__, held=len(held)
                )
                break
            try:
                await send.send(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._log.warning("symbol_actor_gone", symbol=symbol, message=type(msg).__name__)
                break
            if held.get(trade_id) is msg:  # a newer update that came meanwhile goes next
                del held[trade_id]
        del self._held_for_symbol[symbol]
        self._log.info("symbol_inbox_drained", symbol=symbol)

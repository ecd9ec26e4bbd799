"""The Execution actor: drives every trade's order lifecycle against the exchange gateway (BOT_SPEC §9–§11).

It owns the per-trade `TradeLifecycle`s (pure state machines in `core/lifecycle.py`), their timers, the
start-up and periodic reconciliation, and the trade journal writes. Decisions stay in `core/`; this
module only carries commands out, feeds the results back and tells the other actors what happened.

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
- Gateway calls are awaited inline, one at a time: the lifecycle state is consistent at every await.
  Cancellation (a crash) runs no cleanup: everything needed to resume is already persisted.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, assert_never

import msgspec
import trio

from futures_actor.actors.messages import (
    AccountUpdated,
    AmendStop,
    BookUpdated,
    EntryAbandoned,
    EntryFilled,
    FundingBooked,
    KillSwitch,
    MarkUpdated,
    PositionUpdated,
    RepublishPositions,
    Resume,
    RetryDecided,
    RetryRequested,
    StopIntake,
    SubmitPlan,
    TradeClosed,
    UniverseChanged,
)
from futures_actor.actors.metrics import ERRORS, OPEN_POSITIONS, ORDERS, UNPROTECTED_POSITIONS, Metrics
from futures_actor.binance import errors as bx
from futures_actor.binance.gateway import (
    AccountChanged,
    AccountState,
    ExchangeGateway,
    GatewayEvent,
    OrderRequest,
    OrderState,
    OrderUpdate,
    PositionChanged,
    PositionState,
    ResyncNeeded,
    StopRequest,
)
from futures_actor.binance.gateway import FundingPaid as GatewayFundingPaid
from futures_actor.core import lifecycle as lcm
from futures_actor.core.clock import WallClock
from futures_actor.core.config import BotConfig
from futures_actor.core.ids import parse_client_order_id, trade_key
from futures_actor.core.types import OrderRole, Side, SymbolRules
from futures_actor.logs import get_logger
from futures_actor.state.journal import DuplicateTradeId, InvalidTradeRecord, TradeJournal
from futures_actor.state.store import DuplicateClientOrderId, StateStore

__all__ = [
    "CLOSED_TRADES_KEPT",
    "MERGED_BUFFER",
    "Execution",
    "ExecutionInbox",
    "FaultCallback",
    "journal_key",
]

ExecutionInbox = (
    SubmitPlan
    | RetryDecided
    | AmendStop
    | KillSwitch
    | Resume
    | StopIntake
    | BookUpdated
    | MarkUpdated
    | RepublishPositions
    | UniverseChanged
)
FaultCallback = Callable[[str, str, str], None]
"""`(fault_kind, symbol, detail)`, synchronous (use `send_nowait` inside if it forwards)."""

MERGED_BUFFER: Final = 64  # inbox + gateway events merged into the loop's channel
CLOSED_TRADES_KEPT: Final = 1000  # closed lifecycles kept in memory for late events
FOREIGN_PREFIX: Final = "foreign-"
_LIVE_ORDER_STATES: Final = tuple(st.value for st in lcm.OrderStatus if st.live)
_JOURNAL_KEY: Final = "journaled:"
ADOPTION_SEQ_KEY: Final = "adoption_seq"  # store meta: the next adoption's sequence number (never reused)
_STOP_TYPES: Final = frozenset({"STOP_MARKET", "STOP"})
_ENTRY_PHASES: Final = frozenset(
    {lcm.Phase.PENDING_ENTRY, lcm.Phase.ENTRY_WORKING, lcm.Phase.ENTRY_CANCELING}
)
_REACHED: Final = frozenset(
    {lcm.OrderStatus.WORKING, lcm.OrderStatus.FILLED, lcm.OrderStatus.CANCELED, lcm.OrderStatus.EXPIRED}
)
_FOUND_STATUS: Final[dict[str, str]] = {
    "NEW": "NEW",
    "PARTIALLY_FILLED": "PARTIALLY_FILLED",
    "TRIGGERED": "NEW",  # a triggered stop's child is working in the matching engine
    "FILLED": "FILLED",
    "CANCELED": "CANCELED",
    "EXPIRED": "EXPIRED",
    "REJECTED": "REJECTED",
}
# Health fault kinds (core/health.FaultKind values) by gateway error.
_FAULT_RATE_LIMIT = "RATE_LIMIT"
_FAULT_TIMESTAMP = "TIMESTAMP"
_FAULT_SERVER = "SERVER_ERROR"
_FAULT_UNEXPECTED = "UNEXPECTED_EXCEPTION"


def journal_key(trade_id: str) -> str:
    """The store meta key marking a closed trade as journaled."""
    return _JOURNAL_KEY + trade_id


def _entry_reached_exchange(state: lcm.LifecycleState) -> bool:
    if state.entry_filled > 0:
        return True
    return any(o.role is OrderRole.ENTRY and o.status in _REACHED for o in state.orders.values())


def _entry_rejected(state: lcm.LifecycleState) -> bool:
    return any(
        o.role is OrderRole.ENTRY and o.status is lcm.OrderStatus.REJECTED for o in state.orders.values()
    )


class _InboxClosed(msgspec.Struct, frozen=True):
    """Marker: every sender of the inbox is gone."""


class _Sent(msgspec.Struct, kw_only=True):
    """What the other actors were last told about one trade."""

    entry_filled: Decimal = Decimal(0)
    entry_final: bool = False
    position: tuple[Decimal, Decimal] = (Decimal(0), Decimal(0))


class _Timer(msgspec.Struct, frozen=True, kw_only=True):
    kind: str  # "ttl" | "retry" | "reconcile" | "position_check"
    cid: str = ""
    trade_id: str = ""
    command: Any = None
    attempt: int = 0


class Execution:
    """The single owner of every trade's orders (see the module docstring for the policy)."""

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
        self._cfg = cfg
        self._on_alert = on_alert  # (code, symbol, message): operator alerts (Reporter → Telegram)
        self._xcfg = cfg.execution
        self._mode = mode
        self._gw = gateway
        self._store = store
        self._journal = journal
        self._rules = dict(rules_by_symbol)
        # Rules of every listed symbol: a position outside the universe is adopted and protected too.
        self._listed_rules = dict(listed_rules or {})
        self._clock = wall_clock
        self._risk = risk_send
        self._symbols = symbol_sends
        self._on_fault = on_fault
        self._metrics = metrics
        self._journal_in_thread = journal_in_thread
        self._prefix = cfg.exchange.client_id_prefix
        self._log = get_logger(actor_name)  # "shadow_execution": the shadow book's, told apart in the log
        stop_pct = max(
            cfg.strategies.trend_pullback.stop_pct,
            cfg.strategies.trend_breakout.stop_pct,
            cfg.strategies.range_mean_reversion.stop_pct,
        )
        self._adopt_stop_pct = {Side.LONG: stop_pct, Side.SHORT: stop_pct}
        self._trades: dict[str, lcm.TradeLifecycle] = {}  # open trades
        self._closed: OrderedDict[str, lcm.TradeLifecycle] = OrderedDict()
        self._by_key: dict[str, str] = {}  # trade key (in client ids) -> trade id
        self._sent: dict[str, _Sent] = {}
        self._persisted: dict[str, bytes] = {}
        self._timers: list[tuple[float, int, _Timer]] = []
        self._ttl: dict[str, int] = {}  # cid -> live timer sequence number
        self._seq = itertools.count()
        self._foreign: dict[str, EntryFilled] = {}
        self._mid: dict[str, Decimal] = {}
        self._mark: dict[str, Decimal] = {}
        self._prepared: set[tuple[str, int]] = set()
        self._intake_stopped = False
        self._halted = False
        self._started = False
        self._outbox: list[tuple[str, Any]] = []  # messages held back until started()
        # Position updates a symbol actor's full inbox could not take yet: the latest per trade, delivered
        # in order by one task per symbol (never dropped: trailing rests on them; never awaited here).
        self._held_for_symbol: dict[str, dict[str, PositionUpdated]] = {}
        # Positions the user stream reported changed since the last look (signed amounts), and whether
        # that look is scheduled: see `_on_position_changed`.
        self._reported_amount: dict[str, Decimal] = {}
        self._position_check_due = False
        self._nursery: trio.Nursery | None = None
        self.unprotected: list[str] = []  # the watchdog's last finding: positions without a full stop
        # Symbols with a position on the account at the last exchange read (our trades' or anyone's);
        # a symbol leaves it when our last trade on it closes. With the open trades: `open_positions`.
        self._account_positions: set[str] = set()

    # ------------------------------------------------------------------------------------- public views

    def open_trades(self) -> list[lcm.TradeLifecycle]:
        """The open trades (read-only use: tests, health)."""
        return list(self._trades.values())

    def trade(self, trade_id: str) -> lcm.TradeLifecycle | None:
        return self._trades.get(trade_id) or self._closed.get(trade_id)

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
        await self._journal_pending()
        await self._reconcile(startup=True)
        for lc in list(self._trades.values()):
            if lc.retry_pending:
                # The decision asked for before the restart is stale (like a stale entry): no retry.
                await self._drive(lc, lcm.RetryRejected(code="RESTART", message="retry pending at restart"))
        self._schedule(self._xcfg.reconcile_interval_seconds, _Timer(kind="reconcile"))
        self._publish_order_counts()
        send, recv = trio.open_memory_channel[Any](MERGED_BUFFER)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._pump_inbox, inbox, send.clone())
            nursery.start_soon(self._pump_events, self._gw.events(), send.clone())
            send.close()
            self._started = True
            task_status.started()
            outbox, self._outbox = self._outbox, []
            for target, msg in outbox:
                await self._emit(target, msg)
            await self._loop(recv)
            nursery.cancel_scope.cancel()

    async def _pump_inbox(
        self, inbox: trio.abc.ReceiveChannel[ExecutionInbox], send: trio.MemorySendChannel[Any]
    ) -> None:
        async with send:
            async for msg in inbox:
                await send.send(msg)
            await send.send(_InboxClosed())

    async def _pump_events(
        self, events: trio.abc.ReceiveChannel[GatewayEvent], send: trio.MemorySendChannel[Any]
    ) -> None:
        async with send:
            async for ev in events:
                await send.send(ev)

    async def _loop(self, recv: trio.MemoryReceiveChannel[Any]) -> None:
        while True:
            item: Any = None
            deadline = self._timers[0][0] if self._timers else math.inf
            with trio.move_on_at(deadline):
                try:
                    item = await recv.receive()
                except trio.EndOfChannel:
                    return
            if isinstance(item, _InboxClosed):
                self._log.info("execution_inbox_closed", open_trades=len(self._trades))
                return
            if item is not None:
                await self._dispatch(item)
            await self._fire_due()

    async def _dispatch(self, item: ExecutionInbox | GatewayEvent) -> None:
        match item:
            case SubmitPlan():
                await self._on_submit(item)
            case RetryDecided():
                await self._on_retry_decided(item)
            case AmendStop():
                await self._on_amend(item)
            case KillSwitch(reason=reason):
                await self._on_kill(reason)
            case StopIntake():
                await self._on_stop_intake()
            case Resume(reason=reason):
                self._halted = False
                self._intake_stopped = False
                self._log.info("execution_resumed", reason=reason)
            case BookUpdated(symbol=symbol, bid=bid, ask=ask):
                if bid > 0 and ask >= bid and math.isfinite(ask):
                    self._mid[symbol] = Decimal(repr((bid + ask) / 2))
                    self._feed_prices(symbol)
            case MarkUpdated(symbol=symbol, mark_price=mark):
                if mark > 0 and math.isfinite(mark):
                    self._mark[symbol] = Decimal(repr(mark))
                    self._feed_prices(symbol)
            case UniverseChanged(rules=rules):
                self._rules.update(rules)
            case RepublishPositions(symbol=symbol):
                for lc in list(self._trades.values()):
                    if lc.symbol == symbol and not lc.closed and lc.position_qty > 0:
                        await self._position_update(lc.to_state(), lc.position_qty)
            case OrderUpdate():
                await self._on_order_update(item)
            case GatewayFundingPaid():
                await self._on_funding(item)
            case AccountChanged(account=account):
                await self._emit("risk", self._account_msg(account))
            case PositionChanged():
                self._on_position_changed(item)
            case ResyncNeeded(reason=reason):
                self._log.warning("resync_needed", reason=reason)
                await self._reconcile(startup=False)
            case _:
                assert_never(item)

    # ------------------------------------------------------------------------------------- timers

    def _schedule(self, delay_s: float, timer: _Timer) -> int:
        seq = next(self._seq)
        heapq.heappush(self._timers, (trio.current_time() + delay_s, seq, timer))
        return seq

    async def _fire_due(self) -> None:
        now = trio.current_time()
        while self._timers and self._timers[0][0] <= now:
            _, seq, timer = heapq.heappop(self._timers)
            if timer.kind == "ttl":
                if self._ttl.get(timer.cid) != seq:
                    continue  # cancelled or superseded
                del self._ttl[timer.cid]
                lc = self._lc_for_cid(timer.cid)
                if lc is not None:
                    self._log.info("entry_ttl_expired", trade_id=lc.trade_id, symbol=lc.symbol, cid=timer.cid)
                    await self._drive(lc, lcm.TtlExpired(cid=timer.cid))
            elif timer.kind == "retry":
                await self._retry(timer)
            elif timer.kind == "position_check":
                await self._check_positions()
            else:
                await self._reconcile(startup=False)
                self._schedule(self._xcfg.reconcile_interval_seconds, _Timer(kind="reconcile"))

    def _on_position_changed(self, ev: PositionChanged) -> None:
        """The user stream says a position changed. Our own fills say so too (and their order update may
        come just before or after): look again `execution.position_check_delay_seconds` later, once."""
        self._reported_amount[ev.symbol] = ev.amount
        if not self._position_check_due:
            self._position_check_due = True
            self._schedule(self._xcfg.position_check_delay_seconds, _Timer(kind="position_check"))

    def _held_amount(self, symbol: str) -> Decimal:
        """The signed position our open trades account for on `symbol` (adopted ones included)."""
        return sum(
            (
                t.position_qty * t.side.sign
                for t in self._trades.values()
                if t.symbol == symbol and not t.closed
            ),
            Decimal(0),
        )

    async def _check_positions(self) -> None:
        """A reported position our trades do not account for (opened, grown or shrunk by hand, or a trade
        of ours gone wrong): reconcile now, so the watchdog protects it in seconds, not at the next
        periodic reconcile (`execution.reconcile_interval_seconds`)."""
        self._position_check_due = False
        unexplained = {
            symbol: amount
            for symbol, amount in sorted(self._reported_amount.items())
            if amount != self._held_amount(symbol)
        }
        self._reported_amount.clear()
        if not unexplained:
            return
        self._log.warning(
            "position_changed_outside",
            positions={s: str(a) for s, a in unexplained.items()},
            held={s: str(self._held_amount(s)) for s in unexplained},
        )
        await self._reconcile(startup=False)

    def _backoff(self, attempt: int) -> float:
        x = self._cfg.exchange
        return float(min(x.retry_wait_initial_seconds * 2 ** max(attempt - 1, 0), x.retry_wait_max_seconds))

    async def _retry(self, timer: _Timer) -> None:
        lc = self.trade(timer.trade_id)
        cmd = timer.command
        if lc is None:
            if isinstance(cmd, lcm.CancelOrder):  # an order no trade owns
                await self._cancel_unowned(cmd, timer.attempt)
            return
        if isinstance(cmd, lcm.SyncPosition):
            if not lc.closed and lc.sync_requested:
                ev = await self._execute(lc, cmd, attempt=timer.attempt)
                if ev is not None:
                    await self._drive(lc, ev)
            return
        order = lc.orders.get(cmd.cid)
        if order is None or not order.status.live:
            return  # resolved meanwhile (an event, a reconcile)
        ev = await self._execute(lc, cmd, attempt=timer.attempt)
        if ev is not None:
            await self._drive(lc, ev)

    # ------------------------------------------------------------------------------------- registry

    def _register(self, lc: lcm.TradeLifecycle) -> None:
        tid = lc.trade_id
        self._by_key[trade_key(tid)] = tid
        if lc.closed:
            self._trades.pop(tid, None)
            self._closed[tid] = lc
            self._closed.move_to_end(tid)
            while len(self._closed) > CLOSED_TRADES_KEPT:
                old, _ = self._closed.popitem(last=False)
                if self._by_key.get(trade_key(old)) == old:
                    del self._by_key[trade_key(old)]
                self._sent.pop(old, None)
                self._persisted.pop(old, None)
        else:
            self._closed.pop(tid, None)
            self._trades[tid] = lc
        if lc.closed and self._open_on_symbol(lc.symbol) is None:
            self._account_positions.discard(lc.symbol)
        self._publish_open_positions()

    def _publish_open_positions(self) -> None:
        """The `open_positions` gauge: symbols with a position now, per our trades and the last read."""
        if self._metrics is not None:
            held = {t.symbol for t in self._trades.values() if t.position_qty > 0}
            self._metrics.set(OPEN_POSITIONS, float(len(held | self._account_positions)))

    def _lc_for_cid(self, cid: str) -> lcm.TradeLifecycle | None:
        parsed = parse_client_order_id(cid, prefix=self._prefix)
        if parsed is None:
            return None
        tid = self._by_key.get(parsed.trade_key)
        return None if tid is None else self.trade(tid)

    def _open_on_symbol(self, symbol: str) -> lcm.TradeLifecycle | None:
        for lc in self._trades.values():
            if lc.symbol == symbol and not lc.closed:
                return lc
        return None

    # ------------------------------------------------------------------------------------- inbox handlers

    async def _refuse(self, msg: SubmitPlan, reason: str) -> None:
        plan = msg.plan
        self._log.warning("plan_refused", trade_id=plan.trade_id, symbol=plan.symbol, reason=reason)
        await self._emit("risk", EntryAbandoned(trade_id=plan.trade_id, symbol=plan.symbol, reason=reason))

    async def _on_submit(self, msg: SubmitPlan) -> None:
        plan = msg.plan
        if self._halted:
            return await self._refuse(msg, "KILL_SWITCH")
        if self._intake_stopped:
            return await self._refuse(msg, "INTAKE_STOPPED")
        known = self.trade(plan.trade_id)
        stored = self._store.load_lifecycle(plan.trade_id) if known is None else known.to_state()
        if stored is not None:
            self._log.warning(
                "plan_duplicate", trade_id=plan.trade_id, symbol=plan.symbol, phase=stored.phase
            )
            if stored.phase is lcm.Phase.CLOSED:
                await self._emit(
                    "risk", EntryAbandoned(trade_id=plan.trade_id, symbol=plan.symbol, reason="DUPLICATE")
                )
            return None
        busy = self._open_on_symbol(plan.symbol)
        if busy is not None:
            return await self._refuse(msg, "SYMBOL_BUSY")
        rules = self._rules.get(plan.symbol)
        if rules is None:
            return await self._refuse(msg, "NO_SYMBOL_RULES")
        try:
            lc = lcm.TradeLifecycle(
                plan=plan, rules=rules, config=self._xcfg, prefix=self._prefix, mode=self._mode
            )
        except lcm.LifecycleError as exc:
            self._log.error("plan_invalid", trade_id=plan.trade_id, symbol=plan.symbol, error=str(exc))
            return await self._refuse(msg, "INVALID_PLAN")
        await self._prepare(plan.symbol, plan.leverage)
        mid = msg.mid_price if msg.mid_price > 0 else self._mid.get(plan.symbol)
        if mid is not None:
            lc.handle(lcm.MidPrice(mid=mid, mark=self._mark.get(plan.symbol)), now_ms=self._now())
        self._register(lc)
        self._sent[lc.trade_id] = _Sent()
        self._log.info(
            "plan_accepted",
            trade_id=plan.trade_id,
            symbol=plan.symbol,
            side=plan.side.value,
            qty=str(plan.quantity),
            entry=str(plan.entry_price),
            stop=str(plan.stop_price),
        )
        await self._commit(lc, lc.start(now_ms=self._now()))
        return None

    async def _on_retry_decided(self, msg: RetryDecided) -> None:
        lc = self._trades.get(msg.trade_id)
        if lc is None:
            self._log.info("retry_decision_ignored", trade_id=msg.trade_id, why="no such open trade")
            return
        if msg.plan is not None:
            await self._prepare(msg.plan.symbol, msg.plan.leverage)
            await self._drive(lc, lcm.RetryApproved(plan=msg.plan))
        else:
            rejection = msg.rejection
            code = rejection.code if rejection is not None else "REJECTED"
            text = rejection.message if rejection is not None else ""
            await self._drive(lc, lcm.RetryRejected(code=code, message=text))

    async def _prepare(self, symbol: str, leverage: float) -> None:
        lev = max(1, math.ceil(leverage))
        if (symbol, lev) in self._prepared:
            return
        try:
            await self._gw.prepare_symbol(symbol, leverage=lev)
            self._prepared.add((symbol, lev))
        except bx.BinanceError as exc:
            self._fault(exc, symbol)
            self._log.error("prepare_symbol_failed", symbol=symbol, leverage=lev, error=str(exc))

    async def _on_amend(self, msg: AmendStop) -> None:
        lc = self._trades.get(msg.trade_id)
        if lc is None or lc.symbol != msg.symbol:
            self._log.info(
                "amend_ignored", trade_id=msg.trade_id, symbol=msg.symbol, why="no such open trade"
            )
            return
        try:
            price = Decimal(repr(msg.new_stop))
        except InvalidOperation:
            price = Decimal(0)
        if not price.is_finite() or price <= 0:
            self._log.error("amend_invalid", trade_id=msg.trade_id, symbol=msg.symbol, new_stop=msg.new_stop)
            return
        before = lc.stop_price
        await self._drive(lc, lcm.AmendStop(new_price=price))
        if lc.stop_price != before:
            self._log.info(
                "stop_moved",
                trade_id=lc.trade_id,
                symbol=lc.symbol,
                old=str(before),
                new=str(lc.stop_price),
                reason=msg.reason,
            )

    async def _on_kill(self, reason: str) -> None:
        """Close every position on the account (BOT_SPEC §9), not only our trades' quantities.

        Each round first adopts what no trade owns and sizes every trade to its exchange position, then
        runs every trade's closing loop; it repeats (at most `kill_switch_max_attempts` rounds) while the
        exchange still shows a position that no closing trade is working on."""
        self._halted = True
        self._log.warning("kill_switch", reason=reason, open_trades=len(self._trades))
        for round_no in range(1, self._xcfg.kill_switch_max_attempts + 1):
            await self._reconcile(startup=False, flatten=True)
            for lc in list(self._trades.values()):
                if lc.phase is not lcm.Phase.KILLING and not lc.closed:
                    await self._drive(lc, lcm.Kill())
            try:
                left = [p for p in await self._gw.positions() if p.quantity > 0]
            except Exception as exc:
                self._fault(exc, "")
                self._log.error("kill_switch_positions_failed", round=round_no, error=str(exc))
                return
            self._account_positions = {p.symbol for p in left}
            self._publish_open_positions()
            killing = {lc.symbol for lc in self._trades.values() if lc.phase is lcm.Phase.KILLING}
            rest = [p for p in left if p.symbol not in killing]
            self._log.info(
                "kill_switch_round",
                round=round_no,
                open_positions=[f"{p.symbol} {p.side} {p.quantity}" for p in left],
            )
            if not rest:
                return
        self._log.error(
            "alert",
            code="KILL_NOT_FLAT",
            message=f"positions left after the kill switch: {[p.symbol for p in rest]}",
        )

    async def _on_stop_intake(self) -> None:
        """Cancel every working entry (no retry); stops and targets stay on the exchange."""
        self._intake_stopped = True
        self._log.info("intake_stopped", open_trades=len(self._trades))
        for lc in list(self._trades.values()):
            if lc.phase not in _ENTRY_PHASES:
                continue
            for o in lc.live_orders(OrderRole.ENTRY):
                self._ttl.pop(o.cid, None)
            await self._drive(lc, lcm.StopEntry())

    def _feed_prices(self, symbol: str) -> None:
        mid = self._mid.get(symbol)
        mark = self._mark.get(symbol)
        ref = mid if mid is not None else mark
        if ref is None:
            return
        for lc in self._trades.values():
            if lc.symbol == symbol:
                lc.handle(lcm.MidPrice(mid=ref, mark=mark), now_ms=self._now())

    # ------------------------------------------------------------------------------------- gateway events

    async def _on_order_update(self, ev: OrderUpdate) -> None:
        o = ev.order
        lc = self._lc_for_cid(o.client_id)
        if lc is None:
            if parse_client_order_id(o.client_id, prefix=self._prefix) is not None:
                self._log.warning("order_update_unowned", cid=o.client_id, symbol=o.symbol, status=o.status)
            return
        event: lcm.Event
        if ev.last_fill_qty > 0:
            event = lcm.OrderFilled(
                cid=o.client_id,
                qty=ev.last_fill_qty,
                cum_qty=o.executed_qty,
                price=ev.last_fill_price,
                fee=float(ev.fee),
                is_maker=ev.is_maker,
                ts_ms=ev.ts_ms or self._now(),
            )
            self._log.info(
                "order_filled",
                trade_id=lc.trade_id,
                symbol=lc.symbol,
                cid=o.client_id,
                qty=str(ev.last_fill_qty),
                cum_qty=str(o.executed_qty),
                price=str(ev.last_fill_price),
            )
        elif o.status in ("NEW", "PARTIALLY_FILLED", "TRIGGERED"):
            event = lcm.OrderAccepted(cid=o.client_id)
        elif o.status == "REJECTED":
            event = lcm.OrderRejected(cid=o.client_id, code=0, message=ev.reject_reason)
        else:
            event = self._found(o)
            self._log.info(
                "order_done", trade_id=lc.trade_id, symbol=lc.symbol, cid=o.client_id, status=o.status
            )
        await self._drive(lc, event)

    async def _on_funding(self, ev: GatewayFundingPaid) -> None:
        lc = next((t for t in self._trades.values() if t.symbol == ev.symbol and t.position_qty > 0), None)
        booked = FundingBooked(
            trade_id="" if lc is None else lc.trade_id,
            symbol=ev.symbol,
            amount_usd=float(ev.amount),
            ts_ms=ev.ts_ms or self._now(),
        )
        if lc is None:
            self._log.info("funding_unowned", symbol=ev.symbol, amount=str(ev.amount))
            await self._emit("risk", booked)
            return
        self._log.info("funding_paid", trade_id=lc.trade_id, symbol=ev.symbol, amount=str(ev.amount))
        await self._drive(lc, lcm.FundingPaid(amount=float(ev.amount)))
        # After the lifecycle holds it: risk books funding when paid (issue 10 #4).
        await self._emit("risk", booked)

    # ------------------------------------------------------------------------------------- driving

    async def _drive(self, lc: lcm.TradeLifecycle, event: lcm.Event) -> None:
        """Apply `event` to `lc`, then persist, execute and feed back until the trade is quiet."""
        queue: deque[lcm.Event] = deque([event])
        while queue:
            ev = queue.popleft()
            try:
                cmds = lc.handle(ev, now_ms=self._now())
            except lcm.LifecycleError as exc:
                self._log.error("lifecycle_refused", trade_id=lc.trade_id, symbol=lc.symbol, error=str(exc))
                continue
            await self._commit(lc, cmds, queue)

    async def _commit(
        self, lc: lcm.TradeLifecycle, cmds: list[lcm.Command], queue: deque[lcm.Event] | None = None
    ) -> None:
        """Persist the transition (before any send), carry out `cmds`, notify the other actors."""
        own_queue = queue is None
        if queue is None:
            queue = deque()
        state = lc.to_state()
        cmds = self._persist(lc, state, cmds, queue)
        self._register(lc)
        for cmd in cmds:
            ev = await self._execute(lc, cmd)
            if ev is not None:
                queue.append(ev)
        await self._notify(lc, state)
        self._publish_order_counts()
        if own_queue:
            while queue:
                await self._drive(lc, queue.popleft())

    def _publish_order_counts(self) -> None:
        """The /metrics gauge of our live orders by state (SENT, WORKING, UNKNOWN)."""
        if self._metrics is None:
            return
        counts = dict.fromkeys(_LIVE_ORDER_STATES, 0)
        for trade in self._trades.values():
            for order in trade.live_orders():
                counts[order.status.value] = counts.get(order.status.value, 0) + 1
        for state, n in counts.items():
            self._metrics.set(ORDERS, float(n), state=state)

    def _persist(
        self,
        lc: lcm.TradeLifecycle,
        state: lcm.LifecycleState,
        cmds: list[lcm.Command],
        queue: deque[lcm.Event],
    ) -> list[lcm.Command]:
        placements = [c for c in cmds if isinstance(c, lcm.PlaceOrder | lcm.PlaceAlgoOrder)]
        blob = lcm.encode_state(state)
        if not placements and self._persisted.get(lc.trade_id) == blob:
            return cmds
        now = self._now()
        while True:
            try:
                self._store.persist(state, cmds, now_ms=now)
                break
            except DuplicateClientOrderId as exc:
                # Already sent by an earlier incarnation: never again; resolve it by a query.
                self._log.error("cid_already_sent", trade_id=lc.trade_id, symbol=lc.symbol, cid=exc.cid)
                cmds = [
                    c
                    for c in cmds
                    if not (isinstance(c, lcm.PlaceOrder | lcm.PlaceAlgoOrder) and c.cid == exc.cid)
                ]
                queue.append(lcm.OrderStatusUnknown(cid=exc.cid))
        self._persisted[lc.trade_id] = blob
        return cmds

    async def _execute(
        self, lc: lcm.TradeLifecycle | None, cmd: lcm.Command, *, attempt: int = 1
    ) -> lcm.Event | None:
        match cmd:
            case lcm.PlaceOrder():
                req = OrderRequest(
                    symbol=cmd.symbol,
                    client_id=cmd.cid,
                    side="BUY" if cmd.side == "BUY" else "SELL",
                    type=cmd.order_type,
                    quantity=cmd.qty,
                    price=cmd.price,
                    reduce_only=cmd.reduce_only,
                    time_in_force=cmd.time_in_force,
                )
                try:
                    st = await self._gw.place_order(req)
                except Exception as exc:
                    return self._placement_failed(cmd.trade_id, cmd.symbol, cmd.cid, exc)
                self._log.info(
                    "order_placed",
                    trade_id=cmd.trade_id,
                    symbol=cmd.symbol,
                    cid=cmd.cid,
                    role=cmd.role.name,
                    type=cmd.order_type,
                    side=cmd.side,
                    qty=str(cmd.qty),
                    price=None if cmd.price is None else str(cmd.price),
                    reduce_only=cmd.reduce_only,
                )
                return self._placed(st)
            case lcm.PlaceAlgoOrder():
                sreq = StopRequest(
                    symbol=cmd.symbol,
                    client_id=cmd.cid,
                    side="BUY" if cmd.side == "BUY" else "SELL",
                    trigger_price=cmd.trigger_price,
                    quantity=cmd.qty,
                    working_type=cmd.working_type,
                    reduce_only=cmd.reduce_only,
                )
                try:
                    st = await self._gw.place_stop(sreq)
                except Exception as exc:
                    return self._placement_failed(cmd.trade_id, cmd.symbol, cmd.cid, exc)
                self._log.info(
                    "stop_placed",
                    trade_id=cmd.trade_id,
                    symbol=cmd.symbol,
                    cid=cmd.cid,
                    side=cmd.side,
                    qty=str(cmd.qty),
                    trigger=str(cmd.trigger_price),
                )
                return self._placed(st)
            case lcm.CancelOrder():
                return await self._cancel(lc, cmd, attempt)
            case lcm.QueryOrder():
                if lc is not None:
                    order = lc.orders.get(cmd.cid)
                    if attempt == 1 and order is not None and order.status is lcm.OrderStatus.UNKNOWN:
                        # Give the venue time to settle (F8): query later, never re-send.
                        self._defer(lc.trade_id, cmd, attempt)
                        return None
                return await self._query(lc, cmd, attempt)
            case lcm.StartTimer(cid=cid, seconds=seconds):
                self._ttl[cid] = self._schedule(seconds, _Timer(kind="ttl", cid=cid))
                return None
            case lcm.CancelTimer(cid=cid):
                self._ttl.pop(cid, None)
                return None
            case lcm.EmitTradeClosed(trade_id=trade_id, record=record):
                if lc is not None:
                    await self._finish_trade(lc.to_state(), record)
                else:
                    self._log.error("trade_closed_without_trade", trade_id=trade_id)
                return None
            case lcm.RequestRetry():
                # A retry is a new decision (BOT_SPEC §9): risk answers with RetryDecided.
                self._log.info("entry_retry_requested", trade_id=cmd.trade_id, symbol=cmd.symbol)
                await self._emit(
                    "risk",
                    RetryRequested(
                        plan=cmd.plan,
                        mid=cmd.mid if cmd.mid is not None else self._mid.get(cmd.symbol),
                        filled_qty=cmd.filled_qty,
                        filled_avg_price=cmd.filled_avg_price,
                    ),
                )
                return None
            case lcm.Alert(trade_id=trade_id, code=code, message=message):
                self._log.warning("alert", trade_id=trade_id, code=code, message=message)
                if self._on_alert is not None:
                    self._on_alert(code, "" if lc is None else lc.symbol, message)
                return None
            case lcm.SyncPosition():
                return await self._sync_position(lc, cmd, attempt)
            case _:
                assert_never(cmd)

    async def _sync_position(
        self, lc: lcm.TradeLifecycle | None, cmd: lcm.SyncPosition, attempt: int
    ) -> lcm.Event | None:
        """Read the exchange position of the trade's symbol (and the fills that reduced it)."""
        try:
            positions = await self._gw.positions()
        except Exception as exc:
            self._fault(exc, cmd.symbol)
            self._log.warning("position_sync_failed", symbol=cmd.symbol, attempt=attempt, error=str(exc))
            if lc is not None:
                self._defer(lc.trade_id, cmd, attempt)
            return None
        pos = next((p for p in positions if p.symbol == cmd.symbol), None)
        side = None if pos is None else Side(pos.side)
        qty = Decimal(0) if pos is None else pos.quantity
        held_now = qty if side is cmd.side else Decimal(0)
        fills = None
        if held_now < cmd.held_qty:
            fills = await self._exit_fills(cmd.symbol, cmd.side, cmd.held_qty - held_now, cmd.since_ms)
        self._log.info(
            "position_synced",
            trade_id=cmd.trade_id,
            symbol=cmd.symbol,
            held=str(cmd.held_qty),
            exchange=str(qty),
            exchange_side=None if side is None else side.value,
        )
        return lcm.PositionSnapshot(
            side=side,
            qty=qty,
            entry_price=Decimal(0) if pos is None else pos.entry_price,
            exits=fills,
            confirmed=True,
        )

    async def _exit_fills(self, symbol: str, side: Side, qty: Decimal, since_ms: int) -> lcm.ExitFills | None:
        """The newest closing-side executions on `symbol` covering `qty`: what closed it outside our orders."""
        try:
            rows = await self._gw.user_trades(symbol, start_ms=since_ms)
        except Exception as exc:
            self._fault(exc, symbol)
            self._log.warning("user_trades_failed", symbol=symbol, error=str(exc))
            return None
        closing = side.closing_order_side
        need = qty
        cost = Decimal(0)
        fee = Decimal(0)
        last_ms = 0
        for r in reversed(rows):
            if need <= 0:
                break
            if r.side != closing or r.qty <= 0:
                continue
            take = min(r.qty, need)
            cost += take * r.price
            fee += r.fee * take / r.qty
            last_ms = max(last_ms, r.time_ms)
            need -= take
        got = qty - max(need, Decimal(0))
        if got <= 0:
            self._log.warning("exit_fills_missing", symbol=symbol, qty=str(qty), since_ms=since_ms)
            return None
        return lcm.ExitFills(qty=got, price=cost / got, fee=float(fee), ts_ms=last_ms)

    def _defer(self, trade_id: str, cmd: lcm.Command, attempt: int) -> None:
        self._schedule(
            self._backoff(attempt), _Timer(kind="retry", trade_id=trade_id, command=cmd, attempt=attempt + 1)
        )

    def _placed(self, st: OrderState) -> lcm.Event:
        if st.status in ("NEW", "PARTIALLY_FILLED", "TRIGGERED") and st.executed_qty == 0:
            return lcm.OrderAccepted(cid=st.client_id)
        return self._found(st)

    def _found(self, st: OrderState) -> lcm.OrderFound:
        status: Any = _FOUND_STATUS.get(st.status, "NEW")
        return lcm.OrderFound(
            cid=st.client_id, status=status, executed_qty=st.executed_qty, avg_price=st.avg_price
        )

    def _placement_failed(self, trade_id: str, symbol: str, cid: str, exc: Exception) -> lcm.Event:
        self._fault(exc, symbol)
        if isinstance(exc, bx.ApiError):
            code = exc.code if exc.code is not None else 0
            if isinstance(exc, bx.DuplicateClientId):
                code = lcm.ERR_DUPLICATE_CID
            self._log.warning(
                "order_rejected", trade_id=trade_id, symbol=symbol, cid=cid, code=code, error=exc.message
            )
            return lcm.OrderRejected(cid=cid, code=code, message=exc.message)
        self._log.warning(
            "order_status_unknown",
            trade_id=trade_id,
            symbol=symbol,
            cid=cid,
            error=f"{type(exc).__name__}: {exc}",
        )
        return lcm.OrderStatusUnknown(cid=cid)

    async def _cancel(
        self, lc: lcm.TradeLifecycle | None, cmd: lcm.CancelOrder, attempt: int
    ) -> lcm.Event | None:
        try:
            if cmd.is_algo:
                st = await self._gw.cancel_stop(cmd.symbol, cmd.cid)
            else:
                st = await self._gw.cancel_order(cmd.symbol, cmd.cid)
        except bx.UnknownOrder:
            st = None
        except Exception as exc:
            self._fault(exc, cmd.symbol)
            self._log.warning(
                "cancel_failed", symbol=cmd.symbol, cid=cmd.cid, attempt=attempt, error=str(exc)
            )
            if attempt < self._cfg.exchange.max_retry_attempts:
                self._defer("" if lc is None else lc.trade_id, cmd, attempt)
            else:
                self._log.error("cancel_gave_up", symbol=cmd.symbol, cid=cmd.cid, attempts=attempt)
            return None
        self._log.info(
            "order_canceled",
            trade_id=None if lc is None else lc.trade_id,
            symbol=cmd.symbol,
            cid=cmd.cid,
            gone=st is None,
        )
        if lc is None:
            return None
        if st is None:
            # Already gone: maybe filled. Learn how it ended before the lifecycle moves on.
            return await self._query(
                lc, lcm.QueryOrder(symbol=cmd.symbol, cid=cmd.cid, is_algo=cmd.is_algo), 1
            )
        return self._found(st)

    async def _cancel_unowned(self, cmd: lcm.CancelOrder, attempt: int) -> None:
        await self._cancel(None, cmd, attempt)

    async def _query(
        self, lc: lcm.TradeLifecycle | None, cmd: lcm.QueryOrder, attempt: int
    ) -> lcm.Event | None:
        try:
            if cmd.is_algo:
                st = await self._gw.query_stop(cmd.symbol, cmd.cid)
            else:
                st = await self._gw.query_order(cmd.symbol, cmd.cid)
        except Exception as exc:
            self._fault(exc, cmd.symbol)
            self._log.warning("query_failed", symbol=cmd.symbol, cid=cmd.cid, attempt=attempt, error=str(exc))
            if lc is not None:
                self._defer(lc.trade_id, cmd, max(attempt, 1))
            return None
        self._log.info(
            "order_queried", symbol=cmd.symbol, cid=cmd.cid, status=None if st is None else st.status
        )
        if st is None:
            return lcm.OrderNotFound(cid=cmd.cid)
        return self._found(st)

    # ------------------------------------------------------------------------------------- closing a trade

    async def _finish_trade(self, state: lcm.LifecycleState, record: dict[str, Any]) -> None:
        """Journal (if the entry reached the exchange), tell risk, then mark the trade journaled."""
        plan = state.plan
        tid = plan.trade_id
        if _entry_reached_exchange(state):
            await self._write_record(tid, record)
        self._log.info(
            "trade_closed",
            trade_id=tid,
            symbol=plan.symbol,
            reason=record["result"]["reason"],
            pnl_usd=record["result"]["pnl_usd"],
        )
        if state.entry_filled > 0:
            msg: Any = TradeClosed(
                trade_id=tid,
                symbol=plan.symbol,
                record=record,
                realized_pnl_usd=float(record["result"]["pnl_usd"]),
                close_ms=state.closed_ms,
            )
        else:
            reason = "REJECTED" if _entry_rejected(state) else str(record["result"]["reason"])
            msg = EntryAbandoned(trade_id=tid, symbol=plan.symbol, reason=reason)
        await self._emit("risk", msg)
        self._store.set_meta(journal_key(tid), "1")

    async def _write_record(self, trade_id: str, record: dict[str, Any]) -> None:
        try:
            if self._journal_in_thread:
                await trio.to_thread.run_sync(self._journal.write, record)
            else:
                self._journal.write(record)
        except DuplicateTradeId:
            self._log.info("trade_record_already_written", trade_id=trade_id)
        except InvalidTradeRecord as exc:  # quarantined by the journal, never dropped
            self._log.error("trade_record_quarantined", trade_id=trade_id, error=str(exc))

    async def _journal_pending(self) -> None:
        """Start-up: finish closed trades whose record was not confirmed written."""
        for state in self._store.load_lifecycles(include_closed=True):
            if state.phase is not lcm.Phase.CLOSED:
                continue
            tid = state.plan.trade_id
            if self._store.get_meta(journal_key(tid)) is not None:
                continue
            lc = lcm.TradeLifecycle.from_state(state, config=self._xcfg)
            self._log.warning("trade_record_pending", trade_id=tid, symbol=state.plan.symbol)
            self._register(lc)
            await self._finish_trade(state, lc.trade_record())

    # ------------------------------------------------------------------------------------- notifications

    async def _notify(self, lc: lcm.TradeLifecycle, state: lcm.LifecycleState) -> None:
        tid = lc.trade_id
        sent = self._sent.setdefault(tid, _Sent())
        plan = state.plan
        entry_done = state.phase not in _ENTRY_PHASES
        if state.entry_filled > 0 and (
            state.entry_filled != sent.entry_filled or (entry_done and not sent.entry_final)
        ):
            sent.entry_filled = state.entry_filled
            sent.entry_final = entry_done
            await self._emit(
                "risk",
                EntryFilled(
                    trade_id=tid,
                    symbol=plan.symbol,
                    side=plan.side,
                    filled_qty=state.entry_filled,
                    avg_price=state.entry_cost / state.entry_filled,
                    stop_price=state.stop_price,
                    final=entry_done,
                    leverage=plan.leverage,
                ),
            )
        pos = lc.position_qty if not lc.closed else Decimal(0)
        key = (pos, state.stop_price if pos > 0 else Decimal(0))
        if key != sent.position and (pos > 0 or sent.position[0] > 0):
            sent.position = key
            await self._position_update(state, pos)

    async def _position_update(self, state: lcm.LifecycleState, pos: Decimal) -> None:
        plan = state.plan
        msg = PositionUpdated(
            trade_id=plan.trade_id,
            symbol=plan.symbol,
            side=plan.side,
            qty=pos,
            entry_price=state.entry_cost / state.entry_filled if state.entry_filled > 0 else plan.entry_price,
            stop_price=state.stop_price,
            initial_stop_price=plan.stop_price,
            trail_atr_mult=plan.trail_atr_mult,
            trail_after_r=plan.trail_after_r,
        )
        await self._emit("risk", msg)
        await self._emit(plan.symbol, msg)

    async def _emit(self, target: str, msg: Any) -> None:
        if not self._started:
            self._outbox.append((target, msg))
            return
        if target == "risk":
            try:
                await self._risk.send(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._log.error("risk_unreachable", message=type(msg).__name__)
            return
        send = self._symbols.get(target)
        if send is None:
            self._log.info("symbol_actor_missing", symbol=target, message=type(msg).__name__)
            return
        if target in self._held_for_symbol:  # earlier updates still wait: never overtake them
            self._hold_for_symbol(target, msg)
            return
        try:
            send.send_nowait(msg)
        except trio.WouldBlock:
            self._hold_for_symbol(target, msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._log.warning("symbol_actor_gone", symbol=target, message=type(msg).__name__)

    def _hold_for_symbol(self, symbol: str, msg: PositionUpdated) -> None:
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

    def _account_msg(self, a: AccountState) -> AccountUpdated:
        return AccountUpdated(
            equity_usd=float(a.equity),
            wallet_balance_usd=float(a.wallet_balance),
            available_balance_usd=float(a.available_balance),
            unrealized_pnl_usd=float(a.unrealized_pnl),
            ts_ms=a.ts_ms or self._now(),
        )

    # ------------------------------------------------------------------------------------- reconcile

    async def _reconcile(self, *, startup: bool, flatten: bool = False) -> None:
        """Bring the lifecycles in line with the exchange (the source of truth), then check protection.

        `flatten` (kill switch): quantity differences are acted on at once and every position is adopted,
        even one a stop of someone else's covers, so that the kill switch can close it."""
        try:
            orders = await self._gw.open_orders()
            positions = await self._gw.positions()
            account = await self._gw.account()
        except bx.BinanceError as exc:
            if startup:
                raise
            self._fault(exc, "")
            self._log.error("reconcile_fetch_failed", error=str(exc))
            return
        found = self._watch(orders, positions)
        if startup:
            states = self._store.load_lifecycles()
            busy_keys: set[str] = set()
            busy_symbols: set[str] = set()
        else:
            busy = [lc for lc in self._trades.values() if lc.phase in _ENTRY_PHASES]
            busy_keys = {trade_key(lc.trade_id) for lc in busy}
            busy_symbols = {lc.symbol for lc in busy}
            states = [lc.to_state() for lc in self._trades.values() if lc.phase not in _ENTRY_PHASES]
        ex_orders: list[lcm.ExchangeOrder] = []
        for o in orders:
            parsed = parse_client_order_id(o.client_id, prefix=self._prefix)
            if parsed is not None and parsed.trade_key in busy_keys:
                continue
            ex_orders.append(
                lcm.ExchangeOrder(
                    symbol=o.symbol,
                    cid=o.client_id,
                    is_algo=o.is_stop,
                    side=o.side,
                    order_type=o.type,
                    qty=o.quantity,
                    price=(o.trigger_price if o.is_stop else o.price) or None,
                    status=o.status,
                    executed_qty=o.executed_qty,
                    reduce_only=o.reduce_only,
                )
            )
        ex_positions = [
            lcm.ExchangePosition(
                symbol=p.symbol, side=Side(p.side), qty=p.quantity, entry_price=p.entry_price
            )
            for p in positions
            if p.symbol not in busy_symbols
        ]
        if flatten:  # a stop placed by hand does not keep the kill switch off a position: adopt it all
            ex_orders = [o for o in ex_orders if parse_client_order_id(o.cid, prefix=self._prefix)]
        exits = await self._exits_for(states, ex_positions)
        seq = self._next_adoption_seq()
        result = lcm.reconcile(
            lifecycles=states,
            open_orders=ex_orders,
            positions=ex_positions,
            prefix=self._prefix,
            stop_pct=self._adopt_stop_pct,
            rules={**self._listed_rules, **self._rules},
            config=self._xcfg,
            mode=self._mode,
            now_ms=self._now(),
            startup=startup or flatten,
            adoption_seq=seq,
            equity_usd=float(account.equity),
            exits=exits,
        )
        if result.next_adoption_seq != seq:  # before any adopted trade is persisted or sends anything
            self._store.set_meta(ADOPTION_SEQ_KEY, str(result.next_adoption_seq))
        by_trade: dict[str, list[lcm.Command]] = {}
        unowned: list[lcm.CancelOrder] = []
        lcs: dict[str, lcm.TradeLifecycle] = {}
        for st in result.lifecycles:
            lc = lcm.TradeLifecycle.from_state(st, config=self._xcfg)
            lcs[lc.trade_id] = lc
            by_trade[lc.trade_id] = []
            self._by_key[trade_key(lc.trade_id)] = lc.trade_id
        key_to_tid = {trade_key(t): t for t in lcs}
        for cmd in result.commands:
            tid = self._command_trade(cmd, key_to_tid)
            if tid is not None and tid in lcs:
                by_trade[tid].append(cmd)
            elif isinstance(cmd, lcm.CancelOrder):
                unowned.append(cmd)
            else:
                self._log.warning("reconcile_command_unowned", command=type(cmd).__name__)
        # A cancel we had asked for but that never reached the exchange (crash before it left): the
        # lifecycle will not ask again, so repeat it (cancels are idempotent).
        open_cids = {o.client_id for o in orders}
        for tid, lc in lcs.items():
            asked = {c.cid for c in by_trade[tid] if isinstance(c, lcm.CancelOrder)}
            for tracked in lc.live_orders():
                if tracked.cancel_requested and tracked.cid in open_cids and tracked.cid not in asked:
                    by_trade[tid].append(
                        lcm.CancelOrder(symbol=lc.symbol, cid=tracked.cid, is_algo=tracked.is_algo)
                    )
        for cmd in unowned:
            self._log.warning("order_unowned_cancel", symbol=cmd.symbol, cid=cmd.cid)
            await self._cancel_unowned(cmd, 1)
        for tid, lc in lcs.items():
            if startup or tid not in self._sent:
                self._sent[tid] = _Sent()
            self._persisted.pop(tid, None)  # reconcile may have changed it: persist unconditionally
            await self._commit(lc, by_trade[tid])
        await self._track_foreign(result.foreign_positions)
        for foreign in result.foreign_orders:
            self._log.info("foreign_order", symbol=foreign.symbol, cid=foreign.cid, type=foreign.order_type)
        self._log.info(
            "reconcile_done",
            startup=startup,
            trades=len(lcs),
            adopted=len(result.adopted),
            foreign_positions=len(result.foreign_positions),
            foreign_orders=len(result.foreign_orders),
            commands=len(result.commands),
        )
        if startup:
            await self._emit("risk", self._account_msg(account))
        if found:
            await self._verify_protection()

    def _next_adoption_seq(self) -> int:
        raw = self._store.get_meta(ADOPTION_SEQ_KEY)
        try:
            return max(1, int(raw)) if raw is not None else 1
        except ValueError:
            self._log.error("adoption_seq_invalid", value=raw, expected="a positive integer")
            return 1

    async def _exits_for(
        self, states: list[lcm.LifecycleState], positions: list[lcm.ExchangePosition]
    ) -> dict[str, lcm.ExitFills]:
        """The real fills of trades the exchange shows smaller or flat (closed or reduced outside the bot)."""
        by_symbol = {p.symbol: p for p in positions}
        out: dict[str, lcm.ExitFills] = {}
        for st in states:
            if st.phase is lcm.Phase.CLOSED:
                continue
            held = st.entry_filled - st.exit_filled
            if held <= 0:
                continue
            p = by_symbol.get(st.plan.symbol)
            now_held = p.qty if p is not None and p.side is st.plan.side else Decimal(0)
            if now_held >= held:
                continue
            since = st.opened_ms or st.plan.created_ms
            fills = await self._exit_fills(st.plan.symbol, st.plan.side, held - now_held, since)
            if fills is not None:
                out[st.plan.symbol] = fills
        return out

    # ------------------------------------------------------------------------------------- protection watchdog

    def _watch(self, orders: list[OrderState], positions: list[PositionState]) -> bool:
        """Check the protection invariant on what the exchange shows; log, alert and count violations.

        Every position has exactly one reduce-only stop on the closing side for its whole quantity; no
        exit order of ours sits on a flat symbol. Returns whether anything was violated (the reconcile
        that follows repairs it: adopt, place, resize, cancel)."""
        unprotected: list[str] = []
        violations = 0
        held = {p.symbol for p in positions if p.quantity > 0}
        self._account_positions = set(held)
        self._publish_open_positions()
        for p in positions:
            if p.quantity <= 0:
                continue
            closing = Side(p.side).closing_order_side
            stops = [o for o in orders if o.symbol == p.symbol and o.is_stop and o.type in _STOP_TYPES]
            good = [o for o in stops if o.reduce_only and o.side == closing and o.quantity == p.quantity]
            covering = [o for o in stops if o.reduce_only and o.side == closing and o.quantity >= p.quantity]
            if len(stops) == 1 and good:
                continue
            violations += 1
            if not covering:
                unprotected.append(p.symbol)
            self._log.warning(
                "protection_violation",
                symbol=p.symbol,
                side=p.side,
                position_qty=str(p.quantity),
                stops=[f"{o.side} {o.quantity}{' reduce-only' if o.reduce_only else ''}" for o in stops],
                unprotected=not covering,
            )
        for o in orders:
            if o.symbol in held or not o.reduce_only:
                continue
            if parse_client_order_id(o.client_id, prefix=self._prefix) is None:
                continue
            violations += 1
            self._log.warning(
                "protection_violation", symbol=o.symbol, position_qty="0", order=o.client_id, flat=True
            )
        if unprotected:
            self._log.error(
                "alert",
                code="UNPROTECTED_POSITIONS",
                message=f"positions without a full stop: {', '.join(sorted(unprotected))}; repairing",
            )
        self._set_unprotected(unprotected)
        return violations > 0

    async def _verify_protection(self) -> None:
        """After a repair: look again, so that /metrics and /health say whether it worked."""
        try:
            orders = await self._gw.open_orders()
            positions = await self._gw.positions()
        except Exception as exc:
            self._fault(exc, "")
            self._log.warning("protection_verify_failed", error=str(exc))
            return
        if self._watch(orders, positions):
            self._log.warning("protection_not_yet_restored", unprotected=self.unprotected)
        else:
            self._log.info("protection_restored")

    def _set_unprotected(self, symbols: list[str]) -> None:
        self.unprotected = sorted(symbols)
        if self._metrics is not None:
            self._metrics.set(UNPROTECTED_POSITIONS, float(len(symbols)))

    def _command_trade(self, cmd: lcm.Command, key_to_tid: dict[str, str]) -> str | None:
        match cmd:
            case (
                lcm.PlaceOrder()
                | lcm.PlaceAlgoOrder()
                | lcm.EmitTradeClosed()
                | lcm.Alert()
                | lcm.SyncPosition()
                | lcm.RequestRetry()
            ):
                return cmd.trade_id
            case lcm.CancelOrder() | lcm.QueryOrder() | lcm.StartTimer() | lcm.CancelTimer():
                parsed = parse_client_order_id(cmd.cid, prefix=self._prefix)
                return None if parsed is None else key_to_tid.get(parsed.trade_key)
            case _:
                assert_never(cmd)

    async def _track_foreign(self, positions: list[lcm.ExchangePosition]) -> None:
        seen: set[str] = set()
        for p in positions:
            seen.add(p.symbol)
            pct = Decimal(repr(self._adopt_stop_pct[p.side]))
            stop = p.entry_price * (1 - pct) if p.side is Side.LONG else p.entry_price * (1 + pct)
            msg = EntryFilled(
                trade_id=FOREIGN_PREFIX + p.symbol,
                symbol=p.symbol,
                side=p.side,
                filled_qty=p.qty,
                avg_price=p.entry_price,
                stop_price=stop,
                final=True,
            )
            if self._foreign.get(p.symbol) != msg:
                self._foreign[p.symbol] = msg
                self._log.warning("foreign_position", symbol=p.symbol, side=p.side.value, qty=str(p.qty))
                await self._emit("risk", msg)
        for symbol in [s for s in self._foreign if s not in seen]:
            del self._foreign[symbol]
            await self._emit(
                "risk", EntryAbandoned(trade_id=FOREIGN_PREFIX + symbol, symbol=symbol, reason="FOREIGN_GONE")
            )

    # ------------------------------------------------------------------------------------- helpers

    def _now(self) -> int:
        return self._clock.now_ms()

    def _fault(self, exc: BaseException, symbol: str) -> None:
        if isinstance(exc, bx.RateLimited | bx.IpBanned):
            kind = _FAULT_RATE_LIMIT
        elif isinstance(exc, bx.TimestampOutOfWindow):
            kind = _FAULT_TIMESTAMP
        elif isinstance(exc, bx.ServerError | bx.UnknownOrderStatus | bx.TransportError):
            kind = _FAULT_SERVER
        elif isinstance(exc, bx.BinanceError):
            kind = ""  # a definite venue answer (rejection): not a health fault
        else:
            kind = _FAULT_UNEXPECTED
            self._log.error(
                "gateway_exception", symbol=symbol, error=f"{type(exc).__name__}: {exc}", exc_info=exc
            )
        if self._metrics is not None:
            code = getattr(exc, "code", None)
            self._metrics.inc(ERRORS, code=str(code if code is not None else type(exc).__name__))
        if kind and self._on_fault is not None:
            try:
                self._on_fault(kind, symbol, f"{type(exc).__name__}: {exc}")
            except Exception as cb_exc:
                self._log.error("on_fault_failed", error=repr(cb_exc))

"""The order lifecycle of one trade as a pure state machine, and start-up reconciliation (BOT_SPEC §9, §10).

`TradeLifecycle` owns every order of one trade: the entry attempts, the stop versions, the take-profit
versions and the closing orders. It is fed events (`handle(event, now_ms=...)`) and answers with
commands that the execution actor carries out; it never does I/O and never reads a clock. After every
call the actor persists `to_state()` so that a restart resumes exactly where it left off.

Policy (the rules the tests pin down):
- Entry: LIMIT GTC on the passive side; the actor runs the TTL timer and delivers `TtlExpired`. At TTL
  the rest is cancelled; with nothing filled the entry is retried exactly `limit_retry_count` times with
  a new client id; never a market chase. With a partial fill the partial is kept as the position and
  the remainder is not retried. Nothing filled at all ⇒ `TIMEOUT` record.
- A retry is a new decision at the new price (BOT_SPEC §9 [resolved]): the lifecycle asks for it
  (`RequestRetry` with the mid and what is filled) and waits; `RetryApproved` brings the new plan (entry,
  stop, target and size recomputed from the new price by the risk engine, the filled part counted in
  its risk) and the attempt is placed for the plan's quantity less what is filled; `RetryRejected` ends
  the trade (`TIMEOUT` record, the risk code in an alert). A kill or stop of intake meanwhile ends it.
- Protection: while any quantity is held, the lifecycle wants exactly one working STOP_MARKET
  (reduce-only, mark-price trigger) for the held quantity at the current stop price, and (if the plan
  has a target) one reduce-only LIMIT target for the held quantity. A change (fill, trailing move) places
  a new version with the next attempt number; the old version is cancelled only once the new one is
  accepted, so the position is never without a stop. A trailing move that loosens the stop is refused.
- A stop rejection counts as a protection failure (a failed trailing move whose old stop still covers the
  position merely reverts the move); after `protection_max_attempts` consecutive failures the position
  is closed with a reduce-only MARKET order (role EXIT, result reason `KILL_SWITCH`: an emergency
  flattening by the bot, BOT_SPEC §9, not a stop exit).
- The exchange position is the truth: a stop that vanishes without our cancel, or a reduce-only order
  refused (-2022), makes the lifecycle ask for the exchange position (`SyncPosition`) before it sends
  anything else; `PositionSnapshot` then books what changed outside the bot (a hand-made close or
  partial close at its real fills, a position grown by hand at the exchange's average) and the stop
  follows the position's quantity. A growing position gets a bigger stop at once; a shrinking one keeps
  its (larger, still fully protecting) stop for `stop_resize_coalesce_seconds` so that a target filled
  in slivers costs a handful of replacements, the latest quantity winning.
- Client ids run out after `MAX_ATTEMPT` versions of a role: never a crash. A stop that still covers
  the position stays; otherwise the position is closed (alert `IDS_EXHAUSTED`).
- Closing loop (kill switch and failed protection): cancel entries (and targets), then reduce-only MARKET
  orders until flat, at most `kill_switch_max_attempts`; after a -4131 (PERCENT_PRICE) the next attempt
  is an IOC LIMIT at the edge of the allowed band around the mark price. When flat, the remaining stops
  are cancelled.
- Unknown outcome (timeout, 5xx, -1007) or a duplicate-id reject (-4116): the order is queried by its
  client id; no new attempt for that role is made until `OrderFound` / `OrderNotFound` resolves it, and
  a client id is never sent twice.
- Fills carry the order's cumulative filled quantity, so a duplicated or replayed fill event is ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal, assert_never

import msgspec

from futures_actor.core.clock import iso_utc
from futures_actor.core.config import ExecutionConfig
from futures_actor.core.ids import (
    MAX_ATTEMPT,
    client_order_id,
    new_trade_id,
    parse_client_order_id,
    trade_key,
)
from futures_actor.core.models import TradePlan
from futures_actor.core.rounding import (
    RoundingInputError,
    passive_entry_price,
    round_price_down,
    round_price_up,
    round_stop_away,
)
from futures_actor.core.types import OrderRole, Regime, Side, SymbolRules

__all__ = [
    "ADOPTED_STRATEGY",
    "Alert",
    "AmendStop",
    "CancelOrder",
    "CancelTimer",
    "Command",
    "EmitTradeClosed",
    "Event",
    "ExchangeOrder",
    "ExchangePosition",
    "ExitFills",
    "FundingPaid",
    "Kill",
    "LifecycleError",
    "LifecycleState",
    "MidPrice",
    "OrderAccepted",
    "OrderCanceled",
    "OrderExpired",
    "OrderFilled",
    "OrderFound",
    "OrderNotFound",
    "OrderRejected",
    "OrderStatus",
    "OrderStatusUnknown",
    "Phase",
    "PlaceAlgoOrder",
    "PlaceOrder",
    "PositionFlat",
    "PositionSnapshot",
    "Protect",
    "QueryOrder",
    "ReconcileResult",
    "RequestRetry",
    "RetryApproved",
    "RetryRejected",
    "StartTimer",
    "StopEntry",
    "SyncPosition",
    "TrackedOrder",
    "TradeLifecycle",
    "TtlExpired",
    "decode_state",
    "encode_state",
    "reconcile",
]

ADOPTED_STRATEGY = "ADOPTED"
# Binance error codes the lifecycle reacts to (protocol facts, not tunables).
ERR_DUPLICATE_CID = -4116
ERR_PERCENT_PRICE = -4131
ERR_REDUCE_ONLY = -2022  # ReduceOnly order is rejected: the position is not what we think
# Not a Binance code: the order was not found by its client id (it never reached the venue).
NOT_FOUND_CODE = 0
_ZERO = Decimal(0)


class LifecycleError(ValueError):
    """An event or input the lifecycle cannot accept (names the field, the value and what was expected)."""


class Phase(enum.StrEnum):
    PENDING_ENTRY = "PENDING_ENTRY"  # created, entry not yet sent
    ENTRY_WORKING = "ENTRY_WORKING"  # an entry attempt is live
    ENTRY_CANCELING = "ENTRY_CANCELING"  # TTL reached, cancel of the entry requested
    OPEN = "OPEN"  # entry finished with a position, protected by stop (and target)
    EXITING = "EXITING"  # protection failed: reduce-only MARKET close in progress
    KILLING = "KILLING"  # kill switch: closing loop in progress
    CLOSED = "CLOSED"


class OrderStatus(enum.StrEnum):
    SENT = "SENT"  # placement commanded, no answer yet
    WORKING = "WORKING"  # accepted by the exchange (possibly partially filled)
    UNKNOWN = "UNKNOWN"  # outcome unknown, query by client id in flight
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"

    @property
    def live(self) -> bool:
        return self in (OrderStatus.SENT, OrderStatus.WORKING, OrderStatus.UNKNOWN)


OrderType = Literal["LIMIT", "MARKET", "STOP_MARKET"]


class TrackedOrder(msgspec.Struct, kw_only=True):
    """One order of the trade, as far as we know it."""

    cid: str
    role: OrderRole
    attempt: int
    order_type: OrderType
    side: str  # BUY / SELL
    price: Decimal | None  # limit price or stop trigger price
    qty: Decimal
    is_algo: bool
    sent_ms: int
    status: OrderStatus = OrderStatus.SENT
    filled_qty: Decimal = _ZERO
    cancel_requested: bool = False
    ttl_due: bool = False  # TTL fired while the outcome was unknown


class LifecycleState(msgspec.Struct, kw_only=True):
    """The whole serialisable state of one trade lifecycle (persisted after every transition)."""

    plan: TradePlan
    rules: SymbolRules
    prefix: str
    mode: str
    phase: Phase = Phase.PENDING_ENTRY
    orders: dict[str, TrackedOrder] = msgspec.field(default_factory=dict)
    attempts: dict[str, int] = msgspec.field(default_factory=dict)  # role code -> last attempt
    stop_price: Decimal = _ZERO  # the stop the position should have (ratchets with trailing)
    entry_filled: Decimal = _ZERO
    entry_cost: Decimal = _ZERO  # sum of qty * price of entry fills
    exit_filled: Decimal = _ZERO
    exit_cost: Decimal = _ZERO
    fees_usd: float = 0.0
    funding_usd: float = 0.0  # signed: negative = paid
    first_entry_cid: str = ""
    entry_requested_price: Decimal = _ZERO
    opened_ms: int = 0
    closed_ms: int = 0
    reason: str = ""
    protection_failures: int = 0
    target_disabled: bool = False
    close_attempts: int = 0
    close_use_band: bool = False
    close_alerted: bool = False
    no_retry: bool = False
    retry_pending: bool = False  # a retry decision was asked for (RequestRetry) and not answered yet
    last_mid: Decimal | None = None
    last_mark: Decimal | None = None
    adopted: bool = False
    sync_needed: bool = False  # the exchange position must be read before anything else is sent
    sync_requested: bool = False  # a SyncPosition command is out
    mismatch_qty: Decimal = _ZERO  # exchange quantity seen once by a periodic reconcile (to confirm)
    shrink_since_ms: int = 0  # when the stop first exceeded a shrunken position (resize coalescing)
    external_exit_ms: int = 0  # time of the last fill that closed the position outside our orders
    reducers_checked: bool = False  # our reducing orders were queried for this shortfall of the position
    ids_alerted: bool = False


# ----------------------------------------------------------------------------------------- events


class OrderAccepted(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The exchange acknowledged the placement (regular or algo)."""

    cid: str


class OrderRejected(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    cid: str
    code: int
    message: str = ""


class OrderFilled(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A fill; `cum_qty` is the order's cumulative filled quantity (Binance `z`), `qty`/`price` the last fill."""

    cid: str
    qty: Decimal
    cum_qty: Decimal
    price: Decimal
    fee: float
    is_maker: bool
    ts_ms: int
    role: OrderRole | None = None


class OrderCanceled(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    cid: str


class OrderExpired(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    cid: str


class TtlExpired(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    cid: str


class MidPrice(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    mid: Decimal
    mark: Decimal | None = None


class AmendStop(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Trailing: move the stop to `new_price` (refused if it loosens the stop)."""

    new_price: Decimal


class Kill(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    pass


class Protect(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A position was found without a stop: protect it now."""


class StopEntry(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Entries are no longer taken (intake stopped): cancel the working entry and never retry it; a
    partial fill stays the position, protected as usual."""


class FundingPaid(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    amount: float  # signed income: negative = paid


class PositionFlat(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The exchange says the symbol is flat; `price` is the best known exit price (mark), if any."""

    price: Decimal | None = None


class OrderStatusUnknown(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    cid: str


class ExitFills(msgspec.Struct, frozen=True, kw_only=True):
    """The account's real fills that reduced a position outside our orders (user trades)."""

    qty: Decimal
    price: Decimal  # volume-weighted average
    fee: float
    ts_ms: int


class PositionSnapshot(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The exchange position on the trade's symbol (`side` None = flat), read just now.

    `exits`: the real fills of what left the position outside our orders, when it shrank. `confirmed`:
    act on a quantity difference at once (start-up, a requested sync); otherwise a difference is acted
    on only when the next reconcile sees the same quantity (a fill event may still be on its way).
    `orders_known`: read together with the open orders (a reconcile), so an order of ours that is still open
    did not fill and one that is gone is being queried; a bare position read leaves our closing orders to
    be queried before a shortfall is called a close outside the bot."""

    side: Side | None
    qty: Decimal
    entry_price: Decimal = _ZERO
    exits: ExitFills | None = None
    confirmed: bool = True
    orders_known: bool = False


class OrderFound(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Result of a query by client id: the order exists with this status and executed quantity."""

    cid: str
    status: Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "REJECTED"]
    executed_qty: Decimal = _ZERO
    avg_price: Decimal = _ZERO


class OrderNotFound(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    cid: str


class RetryApproved(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The risk engine re-decided the retry: the trade's plan from now on (same trade id)."""

    plan: TradePlan


class RetryRejected(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The risk engine refused the retry (its reason code): the trade ends without it."""

    code: str
    message: str = ""


Event = (
    OrderAccepted
    | OrderRejected
    | OrderFilled
    | OrderCanceled
    | OrderExpired
    | TtlExpired
    | MidPrice
    | AmendStop
    | Kill
    | Protect
    | StopEntry
    | FundingPaid
    | PositionFlat
    | OrderStatusUnknown
    | OrderFound
    | OrderNotFound
    | RetryApproved
    | RetryRejected
    | PositionSnapshot
)

# --------------------------------------------------------------------------------------- commands


class PlaceOrder(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A regular order (entry LIMIT, target LIMIT, closing MARKET or IOC LIMIT). Record the cid first."""

    trade_id: str
    symbol: str
    cid: str
    role: OrderRole
    side: str
    order_type: Literal["LIMIT", "MARKET"]
    price: Decimal | None
    qty: Decimal
    reduce_only: bool
    time_in_force: Literal["GTC", "IOC"] | None


class PlaceAlgoOrder(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The conditional stop through the algo-order API."""

    trade_id: str
    symbol: str
    cid: str
    role: OrderRole
    side: str
    trigger_price: Decimal
    qty: Decimal
    order_type: Literal["STOP_MARKET"] = "STOP_MARKET"
    reduce_only: bool = True
    working_type: Literal["MARK_PRICE"] = "MARK_PRICE"


class CancelOrder(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    symbol: str
    cid: str
    is_algo: bool


class QueryOrder(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    symbol: str
    cid: str
    is_algo: bool


class SyncPosition(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Read the exchange position of `symbol` (and the fills that reduced it) and answer `PositionSnapshot`."""

    trade_id: str
    symbol: str
    side: Side
    held_qty: Decimal  # what the trade holds now: a smaller position needs its exit fills
    since_ms: int


class StartTimer(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    cid: str
    seconds: float


class CancelTimer(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    cid: str


class EmitTradeClosed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The final trade record (matches LOG_SCHEMA.json) to append to the journal."""

    trade_id: str
    record: dict[str, Any]


class Alert(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    trade_id: str
    code: str
    message: str


class RequestRetry(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Ask the risk engine to re-decide the entry at `mid` (answered by RetryApproved / RetryRejected)."""

    trade_id: str
    symbol: str
    plan: TradePlan
    mid: Decimal | None  # None: no usable mid known (the plan's entry price stands in)
    filled_qty: Decimal  # filled by earlier attempts (counts toward the retry's risk)
    filled_avg_price: Decimal


Command = (
    PlaceOrder
    | PlaceAlgoOrder
    | CancelOrder
    | QueryOrder
    | StartTimer
    | CancelTimer
    | EmitTradeClosed
    | Alert
    | RequestRetry
    | SyncPosition
)

_STATE_DECODER = msgspec.json.Decoder(LifecycleState)


def encode_state(state: LifecycleState) -> bytes:
    return msgspec.json.encode(state)


def decode_state(data: bytes) -> LifecycleState:
    """Decode a persisted snapshot; raises `LifecycleError` on a malformed one."""
    try:
        return _STATE_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise LifecycleError(f"lifecycle snapshot: {exc}; expected a LifecycleState JSON object") from None


def _d(value: Decimal | None) -> float:
    return float(value) if value is not None else 0.0


# -------------------------------------------------------------------------------------- lifecycle


class TradeLifecycle:
    """The order lifecycle of one trade (see the module docstring for the policy)."""

    def __init__(
        self,
        *,
        plan: TradePlan,
        rules: SymbolRules,
        config: ExecutionConfig,
        prefix: str,
        mode: str,
    ) -> None:
        if plan.symbol != rules.symbol:
            raise LifecycleError(
                f"rules.symbol: got {rules.symbol!r}, expected the plan's symbol {plan.symbol!r}"
            )
        if plan.quantity <= 0:
            raise LifecycleError(f"plan.quantity: got {plan.quantity}, expected > 0")
        self._cfg = config
        self._s = LifecycleState(plan=plan, rules=rules, prefix=prefix, mode=mode, stop_price=plan.stop_price)

    # ---- persistence

    @classmethod
    def from_state(cls, state: LifecycleState, *, config: ExecutionConfig) -> TradeLifecycle:
        self = cls.__new__(cls)
        self._cfg = config
        self._s = _STATE_DECODER.decode(msgspec.json.encode(state))
        return self

    def to_state(self) -> LifecycleState:
        """A deep copy of the state (safe to persist while the lifecycle moves on)."""
        return _STATE_DECODER.decode(msgspec.json.encode(self._s))

    @classmethod
    def adopt(
        cls,
        *,
        symbol: str,
        side: Side,
        qty: Decimal,
        entry_price: Decimal,
        stop_pct: float,
        rules: SymbolRules,
        config: ExecutionConfig,
        prefix: str,
        mode: str,
        now_ms: int,
        adoption_seq: int,
        equity_usd: float = 0.0,
    ) -> TradeLifecycle:
        """A lifecycle for a position no trade owns (reason ADOPTED), protected at `stop_pct` from entry.

        Each adoption is its own trade: the id derives from the symbol, the side, the adoption time and
        `adoption_seq` (a counter the caller persists and never reuses), so a position adopted again after
        an earlier adopted one on the same symbol closed never meets the old trade's client ids, across
        restarts too, and a replay derives the same ids."""
        if qty <= 0 or entry_price <= 0:
            raise LifecycleError(f"adopted position {symbol}: qty {qty} and entry {entry_price} must be > 0")
        if not 0.0 < stop_pct < 1.0:
            raise LifecycleError(f"stop_pct: got {stop_pct!r}, expected a fraction in (0, 1)")
        pct = Decimal(repr(stop_pct))
        raw_stop = entry_price * (1 - pct) if side is Side.LONG else entry_price * (1 + pct)
        stop = round_stop_away(raw_stop, side=side, tick=rules.tick_size)
        risk_usd = float(abs(entry_price - stop) * qty)
        notional = float(entry_price * qty)
        if adoption_seq < 1:
            raise LifecycleError(f"adoption_seq: got {adoption_seq}, expected >= 1")
        trade_id = new_trade_id(
            symbol=symbol,
            strategy=ADOPTED_STRATEGY,
            candle_open_time_ms=now_ms,
            salt=f"{side.value}|{adoption_seq}",
        )
        plan = TradePlan(
            trade_id=trade_id,
            symbol=symbol,
            strategy=ADOPTED_STRATEGY,
            side=side,
            regime=Regime.CHOP_NO_TRADE,
            confidence_score=0.0,
            candle_open_time_ms=0,
            created_ms=now_ms,
            entry_price=entry_price,
            quantity=qty,
            stop_price=stop,
            target_price=None,
            leverage=1.0,
            equity_usd=equity_usd,
            risk_pct=risk_usd / equity_usd if equity_usd > 0 else 0.0,
            risk_usd=risk_usd,
            stop_pct=stop_pct,
            notional_usd=notional,
            margin_used_usd=notional,
        )
        self = cls(plan=plan, rules=rules, config=config, prefix=prefix, mode=mode)
        s = self._s
        s.phase = Phase.OPEN
        s.adopted = True
        s.entry_filled = qty
        s.entry_cost = qty * entry_price
        s.entry_requested_price = entry_price
        s.opened_ms = now_ms
        return self

    # ---- read-only views

    @property
    def trade_id(self) -> str:
        return self._s.plan.trade_id

    @property
    def symbol(self) -> str:
        return self._s.plan.symbol

    @property
    def side(self) -> Side:
        return self._s.plan.side

    @property
    def phase(self) -> Phase:
        return self._s.phase

    @property
    def sync_requested(self) -> bool:
        """A position read (SyncPosition) was asked for and not answered yet."""
        return self._s.sync_requested

    @property
    def closed(self) -> bool:
        return self._s.phase is Phase.CLOSED

    @property
    def position_qty(self) -> Decimal:
        return max(self._s.entry_filled - self._s.exit_filled, _ZERO)

    @property
    def stop_price(self) -> Decimal:
        return self._s.stop_price

    @property
    def retry_pending(self) -> bool:
        """An entry retry decision was asked for and not answered yet."""
        return self._s.retry_pending

    @property
    def orders(self) -> dict[str, TrackedOrder]:
        return dict(self._s.orders)

    def live_orders(self, role: OrderRole | None = None) -> list[TrackedOrder]:
        return [o for o in self._s.orders.values() if o.status.live and (role is None or o.role is role)]

    # ---- driving

    def start(self, *, now_ms: int) -> list[Command]:
        """Send entry attempt 1 at the plan's entry price."""
        if self._s.phase is not Phase.PENDING_ENTRY:
            return []
        return self._place_entry(self._s.plan.entry_price, now_ms)

    def handle(self, event: Event, *, now_ms: int) -> list[Command]:
        """Apply one event; return the commands to carry out, in order."""
        s = self._s
        out: list[Command] = []
        match event:
            case MidPrice(mid=mid, mark=mark):
                s.last_mid = mid
                s.last_mark = mark if mark is not None else mid
                return []
            case FundingPaid(amount=amount):
                s.funding_usd += amount
                return []
            case _:
                pass
        if s.phase is Phase.CLOSED:
            return self._after_close(event)
        match event:
            case OrderAccepted(cid=cid):
                o = self._order(cid)
                if o is not None and o.status in (OrderStatus.SENT, OrderStatus.UNKNOWN):
                    o.status = OrderStatus.WORKING
                    if o.role is OrderRole.STOP:
                        s.protection_failures = 0
            case OrderRejected(cid=cid, code=code, message=message):
                o = self._order(cid)
                if o is not None and o.status.live:
                    if code == ERR_DUPLICATE_CID:
                        out += self._unknown(o)
                    else:
                        out += self._terminal(o, OrderStatus.REJECTED, code, message, now_ms)
            case OrderFilled():
                o = self._order(event.cid)
                if o is not None:
                    out += self._fill(o, event.cum_qty, event.price, event.fee, event.ts_ms)
            case OrderCanceled(cid=cid):
                o = self._order(cid)
                if o is not None and o.status.live:
                    out += self._terminal(o, OrderStatus.CANCELED, 0, "", now_ms)
            case OrderExpired(cid=cid):
                o = self._order(cid)
                if o is not None and o.status.live:
                    out += self._terminal(o, OrderStatus.EXPIRED, 0, "", now_ms)
            case TtlExpired(cid=cid):
                out += self._ttl(cid)  # (also the wake-up of a coalesced stop resize: `_ensure` below)
            case AmendStop(new_price=new_price):
                out += self._amend(new_price)
            case Kill():
                out += self._kill()
            case Protect():
                s.protection_failures = 0
            case StopEntry():
                out += self._stop_entry()
            case PositionFlat(price=price):
                out += self._flat(price)
            case OrderStatusUnknown(cid=cid):
                o = self._order(cid)
                if o is not None and o.status.live:
                    out += self._unknown(o)
            case OrderFound():
                o = self._order(event.cid)
                if o is not None:
                    out += self._found(o, event, now_ms)
            case OrderNotFound(cid=cid):
                o = self._order(cid)
                if o is not None and o.status.live:
                    out += self._terminal(
                        o, OrderStatus.REJECTED, NOT_FOUND_CODE, "not found by client id", now_ms
                    )
            case RetryApproved(plan=plan):
                out += self._retry_approved(plan, now_ms)
            case RetryRejected(code=code, message=message):
                if s.retry_pending:
                    s.retry_pending = False
                    s.no_retry = True
                    out.append(
                        self._alert("RETRY_REJECTED", f"entry retry refused by risk: {code} {message}")
                    )
            case PositionSnapshot():
                out += self._snapshot(event)
            case MidPrice() | FundingPaid():
                pass
            case _:
                assert_never(event)
        out += self._ensure(now_ms)
        return out

    # ---- internals

    def _order(self, cid: str) -> TrackedOrder | None:
        return self._s.orders.get(cid)

    def _alert(self, code: str, message: str) -> Alert:
        return Alert(trade_id=self.trade_id, code=code, message=f"{self.symbol} {self.trade_id}: {message}")

    def _after_close(self, event: Event) -> list[Command]:
        match event:
            case OrderFilled(cid=cid):
                o = self._order(cid)
                if o is not None and event.cum_qty > o.filled_qty:
                    o.filled_qty = event.cum_qty
                    return [self._alert("FILL_AFTER_CLOSE", f"fill of {cid} after the trade was closed")]
            case OrderCanceled(cid=cid) | OrderExpired(cid=cid) | OrderNotFound(cid=cid):
                o = self._order(cid)
                if o is not None and o.status.live:
                    o.status = OrderStatus.CANCELED
            case OrderRejected(cid=cid):
                o = self._order(cid)
                if o is not None and o.status.live:
                    o.status = OrderStatus.REJECTED
            case OrderAccepted(cid=cid):
                o = self._order(cid)
                if o is not None and o.status.live and not o.cancel_requested:
                    o.status = OrderStatus.WORKING
                    o.cancel_requested = True
                    return [CancelOrder(symbol=self.symbol, cid=o.cid, is_algo=o.is_algo)]
            case _:
                pass
        return []

    def _ids_left(self, role: OrderRole) -> bool:
        """Whether `role` still has an unused client id (attempts run up to `MAX_ATTEMPT`)."""
        return self._s.attempts.get(role.value, 0) < MAX_ATTEMPT

    def _ids_exhausted_alert(self, role: OrderRole) -> list[Command]:
        s = self._s
        if s.ids_alerted:
            return []
        s.ids_alerted = True
        return [self._alert("IDS_EXHAUSTED", f"no client id left for role {role.name} ({MAX_ATTEMPT} used)")]

    def _next_cid(self, role: OrderRole) -> tuple[str, int]:
        s = self._s
        attempt = s.attempts.get(role.value, 0) + 1
        s.attempts[role.value] = attempt
        cid = client_order_id(prefix=s.prefix, trade_id=s.plan.trade_id, role=role, attempt=attempt)
        return cid, attempt

    def _track(
        self,
        *,
        role: OrderRole,
        order_type: OrderType,
        side: str,
        price: Decimal | None,
        qty: Decimal,
        now_ms: int,
    ) -> TrackedOrder:
        cid, attempt = self._next_cid(role)
        o = TrackedOrder(
            cid=cid,
            role=role,
            attempt=attempt,
            order_type=order_type,
            side=side,
            price=price,
            qty=qty,
            is_algo=order_type == "STOP_MARKET",
            sent_ms=now_ms,
        )
        self._s.orders[cid] = o
        return o

    def _place_entry(self, price: Decimal, now_ms: int) -> list[Command]:
        s = self._s
        o = self._track(
            role=OrderRole.ENTRY,
            order_type="LIMIT",
            side=s.plan.side.order_side,
            price=price,
            qty=s.plan.quantity - s.entry_filled,
            now_ms=now_ms,
        )
        s.phase = Phase.ENTRY_WORKING
        return [
            self._place_cmd(o, reduce_only=False, tif="GTC"),
            StartTimer(cid=o.cid, seconds=self._cfg.limit_ttl_seconds),
        ]

    def _place_cmd(
        self, o: TrackedOrder, *, reduce_only: bool, tif: Literal["GTC", "IOC"] | None
    ) -> PlaceOrder:
        assert o.order_type != "STOP_MARKET"
        return PlaceOrder(
            trade_id=self.trade_id,
            symbol=self.symbol,
            cid=o.cid,
            role=o.role,
            side=o.side,
            order_type="LIMIT" if o.order_type == "LIMIT" else "MARKET",
            price=o.price,
            qty=o.qty,
            reduce_only=reduce_only,
            time_in_force=tif,
        )

    def _cancel(self, o: TrackedOrder) -> list[Command]:
        if not o.status.live or o.cancel_requested:
            return []
        o.cancel_requested = True
        out: list[Command] = [CancelOrder(symbol=self.symbol, cid=o.cid, is_algo=o.is_algo)]
        if o.role is OrderRole.ENTRY:
            out.append(CancelTimer(cid=o.cid))
        return out

    def _unknown(self, o: TrackedOrder) -> list[Command]:
        if o.status is OrderStatus.UNKNOWN:
            return []
        o.status = OrderStatus.UNKNOWN
        return [QueryOrder(symbol=self.symbol, cid=o.cid, is_algo=o.is_algo)]

    def _fill(
        self, o: TrackedOrder, cum_qty: Decimal, price: Decimal, fee: float, ts_ms: int
    ) -> list[Command]:
        s = self._s
        out: list[Command] = []
        if cum_qty > o.qty:
            out.append(
                self._alert("OVERFILL", f"OrderFilled.cum_qty {cum_qty} of {o.cid} exceeds qty {o.qty}")
            )
            cum_qty = o.qty
        delta = cum_qty - o.filled_qty
        if delta <= 0:
            return out  # duplicate or replayed fill
        o.filled_qty = cum_qty
        if o.status in (OrderStatus.SENT, OrderStatus.UNKNOWN):
            o.status = OrderStatus.WORKING
        s.fees_usd += fee
        if o.role is OrderRole.ENTRY:
            if s.entry_filled == 0:
                s.opened_ms = ts_ms
                s.first_entry_cid = o.cid
                s.entry_requested_price = o.price if o.price is not None else price
            s.entry_filled += delta
            s.entry_cost += delta * price
        else:
            s.exit_filled += delta
            s.exit_cost += delta * price
            if s.phase is not Phase.KILLING:
                s.reason = self._exit_reason(o)
            if o.role in (OrderRole.STOP, OrderRole.TARGET):
                # Stopped out (or target hit) while the entry still rests: never re-enter.
                s.no_retry = True
                for e in self.live_orders(OrderRole.ENTRY):
                    out += self._cancel(e)
        if cum_qty >= o.qty:
            o.status = OrderStatus.FILLED
            if o.role is OrderRole.ENTRY:
                out.append(CancelTimer(cid=o.cid))
                if s.phase in (Phase.ENTRY_WORKING, Phase.ENTRY_CANCELING):
                    s.phase = Phase.OPEN
        return out

    def _exit_reason(self, o: TrackedOrder) -> str:
        if o.role is OrderRole.TARGET:
            return "TP"
        if o.role is OrderRole.STOP:
            plan_stop = self._s.plan.stop_price
            moved = o.price is not None and (o.price - plan_stop) * self.side.sign > 0
            return "TRAIL" if moved else "SL"
        # KILL, and EXIT: the bot's emergency flattening after failed protection (BOT_SPEC §9), not a stop.
        return "KILL_SWITCH"

    def _terminal(
        self, o: TrackedOrder, status: OrderStatus, code: int, message: str, now_ms: int
    ) -> list[Command]:
        s = self._s
        was_requested = o.cancel_requested
        o.status = status
        out: list[Command] = []
        if o.role is OrderRole.ENTRY:
            out.append(CancelTimer(cid=o.cid))
            if status is OrderStatus.REJECTED:
                s.no_retry = True
                out.append(self._alert("ENTRY_REJECTED", f"entry {o.cid} rejected ({code} {message})"))
            if s.phase in (Phase.ENTRY_WORKING, Phase.ENTRY_CANCELING) and not self.live_orders(
                OrderRole.ENTRY
            ):
                if s.entry_filled > 0:
                    s.phase = Phase.OPEN
                elif (
                    not s.no_retry
                    and not s.retry_pending
                    and s.attempts.get(OrderRole.ENTRY.value, 0) < 1 + self._cfg.limit_retry_count
                ):
                    out.append(self._request_retry())
                else:  # nothing filled and nothing more to try: the entry phase is over (`_ensure` ends it)
                    s.phase = Phase.ENTRY_CANCELING
        elif o.role is OrderRole.STOP:
            if status is OrderStatus.REJECTED:
                out += self._stop_rejected(o, code, message)
            elif not was_requested and s.phase is not Phase.CLOSED:
                # Gone without our cancel: the position may be gone too (closed by hand). Read it first.
                s.sync_needed = True
                out.append(self._alert("STOP_GONE", f"stop {o.cid} ended as {status} without our cancel"))
        elif o.role is OrderRole.TARGET:
            # A target that never reached the venue (not found after a crash or a lost request) is
            # simply placed again as the next version; only a real venue rejection disables it.
            if status is OrderStatus.REJECTED and code != NOT_FOUND_CODE:
                s.target_disabled = True
                out.append(self._alert("TARGET_REJECTED", f"target {o.cid} rejected ({code} {message})"))
        else:  # EXIT / KILL closing order
            if status is OrderStatus.REJECTED:
                s.close_use_band = code == ERR_PERCENT_PRICE
                if code == ERR_REDUCE_ONLY:
                    s.sync_needed = True  # nothing (or less) to reduce: read the position, do not repeat
                out.append(
                    self._alert("CLOSE_REJECTED", f"closing order {o.cid} rejected ({code} {message})")
                )
            else:
                s.close_use_band = False
        return out

    def _request_retry(self) -> RequestRetry:
        s = self._s
        s.retry_pending = True
        return RequestRetry(
            trade_id=self.trade_id,
            symbol=self.symbol,
            plan=s.plan,
            mid=s.last_mid,
            filled_qty=s.entry_filled,
            filled_avg_price=self._entry_avg() if s.entry_filled > 0 else _ZERO,
        )

    def _retry_approved(self, plan: TradePlan, now_ms: int) -> list[Command]:
        s = self._s
        if not s.retry_pending:
            return []  # late or duplicate answer
        s.retry_pending = False
        if s.no_retry or s.phase is not Phase.ENTRY_CANCELING or self.live_orders(OrderRole.ENTRY):
            return []
        if plan.trade_id != s.plan.trade_id or plan.symbol != s.plan.symbol or plan.side is not s.plan.side:
            s.no_retry = True
            return [self._alert("RETRY_INVALID", f"retry plan {plan.trade_id} does not match the trade")]
        rest = plan.quantity - s.entry_filled
        if rest <= 0:
            s.no_retry = True
            return [
                self._alert("RETRY_INVALID", f"retry plan quantity {plan.quantity} leaves nothing to enter")
            ]
        s.plan = plan
        s.stop_price = plan.stop_price
        return self._place_entry(plan.entry_price, now_ms)

    def _retry_price(self) -> Decimal:
        """The retry's passive price from the latest mid; the plan's price when no usable mid is known."""
        s = self._s
        if s.last_mid is None:
            return s.plan.entry_price
        try:
            return passive_entry_price(
                mid=s.last_mid, side=s.plan.side, rules=s.rules, offset_ticks=self._cfg.entry_offset_ticks
            )
        except RoundingInputError:
            return s.plan.entry_price

    def _stop_rejected(self, o: TrackedOrder, code: int, message: str) -> list[Command]:
        s = self._s
        pos = self.position_qty
        covering = [
            w
            for w in self.live_orders(OrderRole.STOP)
            if w.status is OrderStatus.WORKING and not w.cancel_requested and w.qty == pos
        ]
        if covering and o.price != covering[0].price and covering[0].price is not None:
            # A trailing move failed (e.g. -2021, price already through it); the old stop still covers.
            s.stop_price = covering[0].price
            return [self._alert("STOP_AMEND_REJECTED", f"stop move {o.cid} rejected ({code} {message})")]
        s.protection_failures += 1
        if code == ERR_REDUCE_ONLY:
            s.sync_needed = True  # the position is not what we think: read it before the next attempt
        return [
            self._alert(
                "STOP_REJECTED",
                f"stop {o.cid} rejected ({code} {message}); failure {s.protection_failures}"
                f" of {self._cfg.protection_max_attempts}",
            )
        ]

    def _ttl(self, cid: str) -> list[Command]:
        s = self._s
        o = self._order(cid)
        if (
            o is None
            or o.role is not OrderRole.ENTRY
            or not o.status.live
            or s.phase is not Phase.ENTRY_WORKING
        ):
            return []
        if o.status is OrderStatus.UNKNOWN:
            o.ttl_due = True
            return []
        s.phase = Phase.ENTRY_CANCELING
        return self._cancel(o)

    def _stop_entry(self) -> list[Command]:
        self._s.no_retry = True
        out: list[Command] = []
        for o in self.live_orders(OrderRole.ENTRY):
            if not o.cancel_requested:
                out += self._ttl(o.cid)
        return out

    def _amend(self, new_price: Decimal) -> list[Command]:
        s = self._s
        if s.phase in (Phase.EXITING, Phase.KILLING) or self.position_qty <= 0:
            return []
        if new_price <= 0:
            raise LifecycleError(f"AmendStop.new_price: got {new_price}, expected > 0")
        price = round_stop_away(new_price, side=self.side, tick=s.rules.tick_size)
        if (price - s.stop_price) * self.side.sign <= 0:
            return [self._alert("STOP_LOOSEN_REFUSED", f"stop move to {price} from {s.stop_price} refused")]
        s.stop_price = price
        return []

    def _kill(self) -> list[Command]:
        s = self._s
        out: list[Command] = []
        s.no_retry = True
        s.phase = Phase.KILLING
        s.reason = "KILL_SWITCH"
        s.close_attempts = 0
        for o in self.live_orders(OrderRole.ENTRY) + self.live_orders(OrderRole.TARGET):
            out += self._cancel(o)
        return out

    def _flat(self, price: Decimal | None) -> list[Command]:
        s = self._s
        pos = self.position_qty
        if pos <= 0:
            return []  # nothing held: a flat report is just the truth, not a close
        out: list[Command] = []
        for o in self.live_orders(OrderRole.ENTRY):
            out += self._cancel(o)
        exit_px = price or s.last_mark or s.last_mid or self._entry_avg()
        s.exit_filled += pos
        s.exit_cost += pos * exit_px
        if s.phase is not Phase.KILLING:
            s.reason = "MANUAL"
        out.append(self._alert("POSITION_FLAT", f"exchange reports flat; {pos} booked at {exit_px}"))
        s.no_retry = True
        if s.phase in (Phase.ENTRY_WORKING, Phase.ENTRY_CANCELING, Phase.PENDING_ENTRY):
            s.phase = Phase.OPEN if s.entry_filled > 0 else Phase.ENTRY_CANCELING
        return out

    def _found(self, o: TrackedOrder, ev: OrderFound, now_ms: int) -> list[Command]:
        out: list[Command] = []
        if ev.executed_qty > o.filled_qty:
            out += self._fill(o, min(ev.executed_qty, o.qty), ev.avg_price, 0.0, now_ms)
        if not o.status.live:
            return out
        if ev.status in ("NEW", "PARTIALLY_FILLED"):
            o.status = OrderStatus.WORKING
            if o.ttl_due:
                o.ttl_due = False
                if self._s.phase is Phase.ENTRY_WORKING:
                    self._s.phase = Phase.ENTRY_CANCELING
                out += self._cancel(o)
        elif ev.status == "FILLED":
            o.status = OrderStatus.FILLED
        elif ev.status in ("CANCELED", "EXPIRED"):
            out += self._terminal(o, OrderStatus.CANCELED, 0, "", now_ms)
        else:
            out += self._terminal(o, OrderStatus.REJECTED, 0, "found REJECTED", now_ms)
        return out

    def _entry_avg(self) -> Decimal:
        s = self._s
        return s.entry_cost / s.entry_filled if s.entry_filled > 0 else s.plan.entry_price

    # ---- the protection / closing invariant, re-established after every event

    def _ensure(self, now_ms: int) -> list[Command]:
        s = self._s
        if s.phase is Phase.CLOSED:
            return []
        pos = self.position_qty
        live_entries = self.live_orders(OrderRole.ENTRY)
        if s.sync_needed and pos > 0:
            return self._request_sync()
        if s.phase in (Phase.EXITING, Phase.KILLING):
            return self._ensure_closing(pos, live_entries, now_ms)
        if pos > 0:
            out = self._ensure_stop(pos, now_ms)
            if self._s.phase == Phase.EXITING:  # protection just failed
                return out + self._ensure_closing(pos, live_entries, now_ms)
            return out + self._ensure_target(pos, now_ms)
        entry_done = s.phase is Phase.OPEN or (
            s.phase is Phase.ENTRY_CANCELING and not live_entries and not (s.retry_pending and not s.no_retry)
        )
        if entry_done and not live_entries and not self._live_closers():
            return self._finish(now_ms)
        return []

    def _request_sync(self) -> list[Command]:
        """Ask for the exchange position once every order's outcome is known (nothing new is sent meanwhile)."""
        s = self._s
        if s.sync_requested or any(o.status is OrderStatus.UNKNOWN for o in self.live_orders()):
            return []
        s.sync_requested = True
        return [
            SyncPosition(
                trade_id=self.trade_id,
                symbol=self.symbol,
                side=self.side,
                held_qty=self.position_qty,
                since_ms=s.opened_ms or s.plan.created_ms,
            )
        ]

    def _snapshot(self, ev: PositionSnapshot) -> list[Command]:
        """The exchange position, read: book what changed outside the bot; the stop then follows it."""
        s = self._s
        held = self.position_qty
        exch = ev.qty if ev.side is self.side else _ZERO
        if exch == held:
            s.mismatch_qty = _ZERO
            s.sync_needed = False
            s.sync_requested = False
            s.reducers_checked = False
            return []
        reducers = [o for o in self.live_orders() if o.role is not OrderRole.ENTRY]
        if any(o.status is OrderStatus.UNKNOWN for o in self.live_orders()) or (
            exch < held and any(o.status is OrderStatus.SENT for o in reducers)
        ):
            # An order's outcome is unknown, or one of our closing orders is still being placed (it may
            # be the fill that explains the difference): decide once it is resolved, on a fresh read.
            s.sync_needed = True
            s.sync_requested = False
            return []
        if exch < held and not ev.orders_known and not s.reducers_checked and reducers:
            # Our stop, target or exit may have filled with its event still on the way (an ACK placement,
            # a lagging user stream): ask the exchange for each of them before calling the close manual.
            s.reducers_checked = True
            s.sync_needed = True
            s.sync_requested = False
            return [cmd for o in reducers for cmd in self._unknown(o)]
        out: list[Command] = []
        if exch != held and exch > 0 and not ev.confirmed and s.mismatch_qty != exch:
            s.mismatch_qty = exch  # a fill event may be on its way: act when the next look agrees
            return [self._alert("POSITION_MISMATCH", f"exchange holds {exch}, the trade {held}; re-checking")]
        s.mismatch_qty = _ZERO
        s.sync_needed = False
        s.sync_requested = False
        if exch < held:
            gone = held - exch
            fills = ev.exits
            if fills is not None and fills.qty > 0:
                price = fills.price
                s.fees_usd += fills.fee * float(min(gone / fills.qty, Decimal(1)))
                s.external_exit_ms = max(s.external_exit_ms, fills.ts_ms)
                how = "at its real fills"
            else:
                price = s.last_mark or s.last_mid or self._entry_avg()
                how = "at an estimated price (no fills found)"
            s.exit_filled += gone
            s.exit_cost += gone * price
            s.reducers_checked = False
            if exch == 0 and s.phase is not Phase.KILLING:
                s.reason = "MANUAL"
            s.no_retry = True
            out.append(
                self._alert(
                    "POSITION_REDUCED_OUTSIDE",
                    f"exchange holds {exch}, the trade held {held}: {gone} booked at {price} {how}",
                )
            )
            if s.phase in (Phase.ENTRY_WORKING, Phase.ENTRY_CANCELING):
                s.phase = Phase.OPEN if s.entry_filled > 0 else Phase.ENTRY_CANCELING
        elif exch > held:
            added = exch - held
            basis = ev.entry_price * exch - self._entry_avg() * held if ev.entry_price > 0 else _ZERO
            cost = (
                basis if basis > 0 else added * (ev.entry_price if ev.entry_price > 0 else self._entry_avg())
            )
            s.entry_filled += added
            s.entry_cost += cost
            out.append(
                self._alert(
                    "POSITION_GREW_OUTSIDE",
                    f"exchange holds {exch}, the trade held {held}: {added} added at {cost / added}",
                )
            )
        if self.position_qty > 0 and s.phase not in (Phase.EXITING, Phase.KILLING):
            s.protection_failures = 0
        return out

    def _live_closers(self) -> list[TrackedOrder]:
        return self.live_orders(OrderRole.EXIT) + self.live_orders(OrderRole.KILL)

    def _ensure_stop(self, pos: Decimal, now_ms: int) -> list[Command]:
        s = self._s
        stops = [o for o in self.live_orders(OrderRole.STOP) if not o.cancel_requested]
        if any(o.status is not OrderStatus.WORKING for o in stops):
            return []  # a placement is in flight or unresolved: wait
        good = [o for o in stops if o.qty - o.filled_qty == pos and o.price == s.stop_price]
        out: list[Command] = []
        if good:
            s.shrink_since_ms = 0
            for o in stops:
                if o is not good[0]:
                    out += self._cancel(o)  # retire the old version only after the new one is accepted
            return out
        covering = [o for o in stops if o.qty - o.filled_qty > pos and o.price == s.stop_price]
        coalesce_ms = int(self._cfg.stop_resize_coalesce_seconds * 1000)
        if covering and coalesce_ms > 0:
            # Larger than the position: it still protects all of it. Resize after a while, latest qty wins.
            if s.shrink_since_ms == 0:
                s.shrink_since_ms = now_ms
                return [StartTimer(cid=covering[0].cid, seconds=self._cfg.stop_resize_coalesce_seconds)]
            if now_ms - s.shrink_since_ms < coalesce_ms:
                return []
        if not self._ids_left(OrderRole.STOP):
            if covering:
                return self._ids_exhausted_alert(OrderRole.STOP)  # the larger stop keeps protecting
            out += self._ids_exhausted_alert(OrderRole.STOP)
            s.protection_failures = self._cfg.protection_max_attempts  # close it: it cannot be protected
        if s.protection_failures >= self._cfg.protection_max_attempts:
            s.phase = Phase.EXITING
            s.reason = "KILL_SWITCH"
            s.close_attempts = 0
            out.append(
                self._alert("PROTECTION_FAILED", "stop could not be placed; closing with a MARKET order")
            )
            return out
        s.shrink_since_ms = 0
        o = self._track(
            role=OrderRole.STOP,
            order_type="STOP_MARKET",
            side=self.side.closing_order_side,
            price=s.stop_price,
            qty=pos,
            now_ms=now_ms,
        )
        out.append(
            PlaceAlgoOrder(
                trade_id=self.trade_id,
                symbol=self.symbol,
                cid=o.cid,
                role=OrderRole.STOP,
                side=o.side,
                trigger_price=s.stop_price,
                qty=pos,
            )
        )
        return out

    def _ensure_target(self, pos: Decimal, now_ms: int) -> list[Command]:
        s = self._s
        target = s.plan.target_price
        if target is None or s.target_disabled:
            return []
        targets = [o for o in self.live_orders(OrderRole.TARGET) if not o.cancel_requested]
        if any(o.status is not OrderStatus.WORKING for o in targets):
            return []
        good = [o for o in targets if o.qty - o.filled_qty == pos]
        out: list[Command] = []
        if good:
            for o in targets:
                if o is not good[0]:
                    out += self._cancel(o)
            return out
        if not self._ids_left(OrderRole.TARGET):
            s.target_disabled = True
            return self._ids_exhausted_alert(OrderRole.TARGET)
        o = self._track(
            role=OrderRole.TARGET,
            order_type="LIMIT",
            side=self.side.closing_order_side,
            price=target,
            qty=pos,
            now_ms=now_ms,
        )
        out.append(self._place_cmd(o, reduce_only=True, tif="GTC"))
        return out

    def _ensure_closing(self, pos: Decimal, live_entries: list[TrackedOrder], now_ms: int) -> list[Command]:
        s = self._s
        out: list[Command] = []
        for o in live_entries:
            out += self._cancel(o)
        for o in self.live_orders(OrderRole.TARGET):
            out += self._cancel(o)
        if pos <= 0:
            if not live_entries:
                out += self._finish(now_ms)
            return out
        if self._live_closers():
            return out
        role = OrderRole.KILL if s.phase is Phase.KILLING else OrderRole.EXIT
        if s.close_attempts >= self._cfg.kill_switch_max_attempts or not self._ids_left(role):
            if not s.close_alerted:
                s.close_alerted = True
                out.append(
                    self._alert("NOT_FLAT", f"still {pos} open after {s.close_attempts} closing attempts")
                )
            return out
        band = self._band_price() if s.close_use_band else None
        o = self._track(
            role=role,
            order_type="MARKET" if band is None else "LIMIT",
            side=self.side.closing_order_side,
            price=band,
            qty=pos,
            now_ms=now_ms,
        )
        s.close_attempts += 1
        out.append(self._place_cmd(o, reduce_only=True, tif=None if band is None else "IOC"))
        return out

    def _band_price(self) -> Decimal | None:
        """The most aggressive closing price PERCENT_PRICE allows around the mark, or None if unknown."""
        s = self._s
        mark = s.last_mark
        rules = s.rules
        if mark is None:
            return None
        if self.side is Side.LONG:  # closing sell: price >= mark * down
            if rules.multiplier_down is None:
                return None
            return round_price_up(mark * rules.multiplier_down, rules.tick_size)
        if rules.multiplier_up is None:
            return None
        return round_price_down(mark * rules.multiplier_up, rules.tick_size)

    def _finish(self, now_ms: int) -> list[Command]:
        s = self._s
        out: list[Command] = []
        for o in self.live_orders():
            out += self._cancel(o)
        s.phase = Phase.CLOSED
        # Closed outside the bot (found later): the record carries the time of the real closing fill.
        s.closed_ms = s.external_exit_ms if 0 < s.external_exit_ms <= now_ms else now_ms
        if s.entry_filled == 0 and s.reason != "KILL_SWITCH":
            s.reason = "TIMEOUT"
        out.append(EmitTradeClosed(trade_id=self.trade_id, record=self.trade_record()))
        return out

    def trade_record(self) -> dict[str, Any]:
        """The trade log record (LOG_SCHEMA.json) for the trade as it stands."""
        s = self._s
        p = s.plan
        entry_avg = s.entry_cost / s.entry_filled if s.entry_filled > 0 else _ZERO
        exit_avg = s.exit_cost / s.exit_filled if s.exit_filled > 0 else _ZERO
        gross = float((exit_avg - entry_avg) * s.exit_filled) * p.side.sign if s.exit_filled > 0 else 0.0
        pnl = gross - s.fees_usd + s.funding_usd
        requested = s.entry_requested_price
        slippage = (
            float((entry_avg - requested) / requested) * p.side.sign
            if s.entry_filled > 0 and requested > 0
            else 0.0
        )
        if s.entry_filled <= 0:
            status = "CANCELED"
        elif s.entry_filled >= p.quantity:
            status = "FILLED"
        else:
            status = "PARTIALLY_FILLED"
        entry_cid = s.first_entry_cid
        if not entry_cid:
            attempts = s.attempts.get(OrderRole.ENTRY.value, 0)
            entry_cid = (
                client_order_id(prefix=s.prefix, trade_id=p.trade_id, role=OrderRole.ENTRY, attempt=attempts)
                if attempts
                else ""
            )
            requested = next(
                (o.price for o in s.orders.values() if o.cid == entry_cid and o.price is not None),
                p.entry_price,
            )
        opened = s.opened_ms or p.created_ms
        return {
            "trade_id": p.trade_id,
            "timestamp_open": iso_utc(opened),
            "timestamp_close": iso_utc(max(s.closed_ms, opened)),
            "mode": s.mode,
            "symbol": p.symbol,
            "strategy": p.strategy,
            "regime": p.regime.value,
            "direction": p.side.value,
            "confidence_score": float(p.confidence_score),
            "entry_order": {
                "client_order_id": entry_cid,
                "type": "LIMIT",
                "requested_price": _d(requested),
                "filled_avg_price": _d(entry_avg),
                "filled_qty": _d(s.entry_filled),
                "status": status,
            },
            "risk": {
                "equity_usd": float(p.equity_usd),
                "risk_pct": float(p.risk_pct),
                "risk_usd": float(p.risk_usd),
                "stop_pct": float(p.stop_pct),
                "stop_price": _d(p.stop_price),
                "take_profit_price": _d(p.target_price),
                "leverage": float(p.leverage),
                "notional_usd": float(p.notional_usd),
                "margin_used_usd": float(p.margin_used_usd),
            },
            "costs": {
                "fees_usd": float(s.fees_usd),
                "funding_usd": float(s.funding_usd),
                "slippage_pct": slippage,
            },
            "result": {
                "exit_price": _d(exit_avg),
                "pnl_usd": pnl,
                "pnl_r_multiple": pnl / p.risk_usd if p.risk_usd > 0 else 0.0,
                "reason": s.reason or "MANUAL",
            },
            "portfolio": {
                "open_positions_count": float(p.open_positions_count),
                "open_risk_pct": float(p.open_risk_pct),
                "correlation_bucket": p.correlation_bucket,
                "bucket_corr_max": float(p.bucket_corr_max),
            },
        }


# -------------------------------------------------------------------------------------- reconcile


class ExchangeOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An open order on the exchange (regular or algo)."""

    symbol: str
    cid: str
    is_algo: bool
    side: str
    order_type: str
    qty: Decimal
    price: Decimal | None
    status: str = "NEW"
    executed_qty: Decimal = _ZERO
    reduce_only: bool = False


class ExchangePosition(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal


class ReconcileResult(msgspec.Struct, kw_only=True):
    """What start-up reconciliation decided. `lifecycles` includes the adopted ones (persist them all)."""

    commands: list[Command]
    lifecycles: list[LifecycleState]
    adopted: list[str]  # trade ids of adopted positions
    foreign_orders: list[ExchangeOrder]
    foreign_positions: list[ExchangePosition]  # protected by someone else's stop, or no symbol rules
    next_adoption_seq: int = 1


def _covered_by_foreign_stop(p: ExchangePosition, foreign: list[ExchangeOrder]) -> bool:
    """A stop not of ours (placed by hand) already protects the whole position: it is not ours to protect."""
    closing = p.side.closing_order_side
    return any(
        o.symbol == p.symbol
        and o.is_algo
        and o.order_type in ("STOP_MARKET", "STOP")
        and o.reduce_only
        and o.side == closing
        and o.qty >= p.qty
        for o in foreign
    )


def reconcile(
    *,
    lifecycles: list[LifecycleState],
    open_orders: list[ExchangeOrder],
    positions: list[ExchangePosition],
    prefix: str,
    stop_pct: dict[Side, float],
    rules: dict[str, SymbolRules],
    config: ExecutionConfig,
    mode: str,
    now_ms: int,
    startup: bool = True,
    adoption_seq: int = 1,
    equity_usd: float = 0.0,
    exits: Mapping[str, ExitFills] | None = None,
) -> ReconcileResult:
    """Bring the persisted lifecycles in line with the exchange, the source of truth (BOT_SPEC §10).

    - Orders are matched to trades by client id; ours that no open trade owns are cancelled.
    - Our entry orders still open are stale after a restart (their TTL timers are gone): cancelled, no retry.
    - A tracked order missing from the open orders: cancelled if we had asked for it, else queried by id.
    - Every trade is shown its exchange position (`PositionSnapshot`, with the real fills from `exits`
      when it shrank): closed outside the bot ⇒ booked `MANUAL` at those fills; grown or shrunk by hand ⇒
      booked, and the stop follows (at once at start-up; when a periodic reconcile sees the same quantity
      twice otherwise). A held position is protected (`Protect`); a trade whose entry was never sent
      (PENDING_ENTRY) is closed as `TIMEOUT`.
    - Every position no trade owns is adopted (strategy `ADOPTED`, its own trade id from `adoption_seq`,
      `equity_usd` in its record) and protected, in the universe or not (`rules` must hold every listed
      symbol), whatever foreign orders sit on the symbol; those orders are left untouched. Not adopted:
      a position a foreign reduce-only stop already fully covers, and one without symbol rules (reported).
    Applying the commands and feeding their results back, a second run yields no commands.
    """
    commands: list[Command] = []
    by_key: dict[str, TradeLifecycle] = {}
    live: list[TradeLifecycle] = []
    for state in lifecycles:
        lc = TradeLifecycle.from_state(state, config=config)
        live.append(lc)
        if not lc.closed:
            by_key[trade_key(lc.trade_id)] = lc
    foreign_orders: list[ExchangeOrder] = []
    on_exchange: dict[str, ExchangeOrder] = {}
    for eo in open_orders:
        parsed = parse_client_order_id(eo.cid, prefix=prefix)
        if parsed is None:
            foreign_orders.append(eo)
            continue
        owner = by_key.get(parsed.trade_key)
        if owner is None or owner.symbol != eo.symbol or eo.cid not in owner._s.orders:
            commands.append(CancelOrder(symbol=eo.symbol, cid=eo.cid, is_algo=eo.is_algo))
            continue
        on_exchange[eo.cid] = eo
    pos_by_symbol = {p.symbol: p for p in positions if p.qty > 0}
    owned_symbols: set[str] = set()
    for lc in by_key.values():
        for o in list(lc._s.orders.values()):
            if not o.status.live:
                continue
            seen = on_exchange.get(o.cid)
            if seen is not None:
                eo = seen
                if eo.executed_qty > o.filled_qty:
                    found = OrderFound(
                        cid=o.cid,
                        status="PARTIALLY_FILLED",
                        executed_qty=eo.executed_qty,
                        avg_price=eo.price if eo.price is not None else lc._entry_avg(),
                    )
                    commands += lc.handle(found, now_ms=now_ms)
                if o.status is not OrderStatus.WORKING and o.status.live:
                    commands += lc.handle(OrderAccepted(cid=o.cid), now_ms=now_ms)
                if o.role is OrderRole.ENTRY and o.status.live:
                    lc._s.no_retry = True
                    if lc._s.phase is Phase.ENTRY_WORKING:
                        lc._s.phase = Phase.ENTRY_CANCELING
                    commands += lc._cancel(o)
            elif o.cancel_requested:
                commands += lc.handle(OrderCanceled(cid=o.cid), now_ms=now_ms)
            elif o.status is not OrderStatus.UNKNOWN:
                commands += lc.handle(OrderStatusUnknown(cid=o.cid), now_ms=now_ms)
        if startup:
            lc._s.sync_requested = False  # a sync asked for before the restart died with it
        if lc.closed:
            continue
        if lc.phase is Phase.PENDING_ENTRY:
            commands += lc._finish(now_ms)  # its entry was never sent; the signal is stale now
            continue
        pos = pos_by_symbol.get(lc.symbol)
        fills = (exits or {}).get(lc.symbol)
        if pos is None or pos.side is not lc.side:
            if lc.position_qty > 0:
                flat = PositionSnapshot(side=None, qty=_ZERO, exits=fills, confirmed=True, orders_known=True)
                commands += lc.handle(flat, now_ms=now_ms)
            if pos is not None:  # the opposite side is not this trade's: it is adopted below
                commands.append(lc._alert("POSITION_SIDE_MISMATCH", f"exchange holds {pos.side} {pos.qty}"))
            continue
        owned_symbols.add(lc.symbol)
        snap = PositionSnapshot(
            side=pos.side,
            qty=pos.qty,
            entry_price=pos.entry_price,
            exits=fills,
            confirmed=startup,
            orders_known=True,
        )
        commands += lc.handle(snap, now_ms=now_ms)
        if lc.position_qty > 0 and lc.phase not in (Phase.KILLING, Phase.EXITING):
            # A position found without a (correctly sized) stop gets one now; a no-op when protected.
            commands += lc.handle(Protect(), now_ms=now_ms)
    foreign_positions: list[ExchangePosition] = []
    adopted: list[str] = []
    seq = adoption_seq
    for p in positions:
        if p.qty <= 0 or p.symbol in owned_symbols:
            continue
        if p.symbol not in rules or _covered_by_foreign_stop(p, foreign_orders):
            foreign_positions.append(p)
            continue
        lc = TradeLifecycle.adopt(
            symbol=p.symbol,
            side=p.side,
            qty=p.qty,
            entry_price=p.entry_price,
            stop_pct=stop_pct[p.side],
            rules=rules[p.symbol],
            config=config,
            prefix=prefix,
            mode=mode,
            now_ms=now_ms,
            adoption_seq=seq,
            equity_usd=equity_usd,
        )
        seq += 1
        commands.append(lc._alert("ADOPTED", f"adopted {p.side} {p.qty} @ {p.entry_price}"))
        commands += lc.handle(Protect(), now_ms=now_ms)
        live.append(lc)
        adopted.append(lc.trade_id)
    return ReconcileResult(
        commands=commands,
        lifecycles=[lc.to_state() for lc in live],
        adopted=adopted,
        foreign_orders=foreign_orders,
        foreign_positions=foreign_positions,
        next_adoption_seq=seq,
    )

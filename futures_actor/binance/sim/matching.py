"""The matching engine of the fake (and paper) exchange: orders, conditional orders, fills.

This module owns the rules by which simulated orders are accepted and executed. It is pure: no
trio, no httpx, no I/O, no wall clock (the caller sets `now_ms`). Every state change returns a list
of engine events (`OrderEvent`, `AlgoEvent`, `AccountEvent`) in the order they happened; the fake
exchange turns them into Binance user-data payloads, the paper exchange into in-process messages.

Policy (BOT_SPEC §9 "Paper"):
- Without a live book (`on_book`, newer than the last trade) a taker meets the last price on either
  side, and a LIMIT order is marketable when strictly through it (a limit at the last price rests,
  for a buy as for a sell); with one, takers meet the ask / bid. A LIMIT order that is marketable when
  placed fills at once as taker; otherwise it rests and fills as maker only when the market trades
  THROUGH its price (a touch is not enough), or when the book's opposite side goes through it.
- A candle is replayed as the path open → nearer extreme → other extreme → close. The jump from the
  previous price to a candle's open, and `on_price`, are gaps (discontinuous); the moves inside a
  candle are continuous. Within a segment, orders are reached in the order the price reaches them.
- Resting fills are capped per order by `paper_volume_participation` × the volume traded on the
  symbol since the order was placed (rounded down to the step), once the symbol reports volume
  (`add_volume`; `on_candle` trades a candle's volume at its start); orders filled at placement,
  MARKET orders and triggered stops fill in full (book liquidity).
- Slippage is always adverse, per kind: `paper_slippage_limit_pct` (limit fills), `_market_pct`
  (MARKET), `_stop_pct` (triggered conditional market orders), rounded to the tick away from the
  trader. Fees: maker / taker per config on price × qty.
- Conditional orders trigger on the MARK price (`workingType=MARK_PRICE`) or the last price
  (`CONTRACT_PRICE`, the default). The mark follows the last price unless pinned with `on_mark`.
  Reached along a continuous move, a triggered market order executes at its trigger level; after a
  gap or a mark move, at what a taker meets then, and a stop never better than its trigger.
  A triggered order becomes a matching-engine order whose client id is the `clientAlgoId`.
- closePosition orders expire when their position is closed (GTE_GTC). Reduce-only orders are
  clipped to the position at fill time and expire when there is nothing left to reduce.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import msgspec

from futures_actor.binance.sim.account import Account, AccountState
from futures_actor.binance.sim.symbols import SymbolSpec
from futures_actor.core.config import ExecutionConfig
from futures_actor.core.types import Candle

__all__ = [
    "ALGO_TYPES",
    "AccountEvent",
    "AlgoEvent",
    "EngineEvent",
    "EngineState",
    "MatchingEngine",
    "NewAlgoOrder",
    "NewOrder",
    "OrderEvent",
    "Rejection",
    "SimAlgoOrder",
    "SimOrder",
]

ZERO = Decimal(0)
ONE = Decimal(1)
ALGO_TYPES = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"})
_STOP_TYPES = frozenset({"STOP_MARKET", "STOP", "TRAILING_STOP_MARKET"})
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
# Protocol facts of Binance USDT-M.
MAX_OPEN_ALGO_ORDERS = 200
CALLBACK_RATE_MIN = Decimal("0.1")
CALLBACK_RATE_MAX = Decimal("20")
FIRST_ORDER_ID = 8_000_000_001
FIRST_ALGO_ID = 4_000_000_001
FIRST_TRADE_ID = 600_000_001
# Expiry reasons (`er` of ORDER_TRADE_UPDATE).
ER_IOC = 2
ER_REDUCE_ONLY = 4


class Rejection(Exception):
    """A request refused with Binance's error `code` and `msg` (HTTP `status`).

    `detail` names the field, the value and what was expected; it is for our own logs and the paper
    exchange's errors and never goes on the wire (the fake answers with Binance's `msg` only)."""

    def __init__(self, code: int, msg: str, *, status: int = 400, detail: str = "") -> None:
        super().__init__(f"{code}: {msg}" + (f" ({detail})" if detail else ""))
        self.code = code
        self.msg = msg
        self.status = status
        self.detail = detail


class SimOrder(msgspec.Struct, kw_only=True):
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    orig_type: str
    time_in_force: str
    orig_qty: Decimal
    price: Decimal = ZERO
    stop_price: Decimal = ZERO
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    status: str = "NEW"
    reduce_only: bool = False
    close_position: bool = False
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    time: int = 0
    update_time: int = 0
    algo_id: int = 0  # the conditional order this one was triggered from
    volume_seen: Decimal = ZERO  # volume traded on the symbol since placement (caps resting fills)

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO


class SimAlgoOrder(msgspec.Struct, kw_only=True):
    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    quantity: Decimal
    trigger_price: Decimal = ZERO
    price: Decimal = ZERO
    working_type: str = "CONTRACT_PRICE"
    close_position: bool = False
    reduce_only: bool = False
    price_protect: bool = False
    activate_price: Decimal | None = None
    callback_rate: Decimal | None = None
    status: str = "NEW"
    create_time: int = 0
    update_time: int = 0
    trigger_time: int = 0
    actual_order_id: int = 0
    reject_reason: str = ""
    extreme: Decimal | None = None  # trailing: best price since activation
    activated: bool = False

    @property
    def is_open(self) -> bool:
        return self.status == "NEW"


class NewOrder(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: str | None = None
    reduce_only: bool = False
    client_order_id: str | None = None


class NewAlgoOrder(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    side: str
    type: str
    quantity: Decimal | None = None
    trigger_price: Decimal | None = None
    price: Decimal | None = None
    working_type: str = "CONTRACT_PRICE"
    time_in_force: str = "GTC"
    close_position: bool = False
    reduce_only: bool = False
    price_protect: bool = False
    activate_price: Decimal | None = None
    callback_rate: Decimal | None = None
    client_algo_id: str | None = None


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A regular order changed: `execution` is NEW / TRADE / CANCELED / EXPIRED."""

    order: SimOrder
    execution: str
    time: int
    last_qty: Decimal = ZERO
    last_price: Decimal = ZERO
    commission: Decimal = ZERO
    maker: bool = False
    trade_id: int = 0
    realized_pnl: Decimal = ZERO
    expiry_reason: int = 0


class AlgoEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A conditional order changed status (NEW / TRIGGERING / TRIGGERED / FINISHED / CANCELED / ...)."""

    algo: SimAlgoOrder
    time: int
    executed_qty: Decimal = ZERO
    avg_price: Decimal = ZERO


class AccountEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Balance or positions changed (`reason` ORDER or FUNDING_FEE); `symbols` whose position changed."""

    reason: str
    symbols: tuple[str, ...]
    time: int
    funding_symbol: str = ""


EngineEvent = OrderEvent | AlgoEvent | AccountEvent


class EngineState(msgspec.Struct, kw_only=True):
    account: AccountState
    orders: dict[int, SimOrder]
    algos: dict[int, SimAlgoOrder]
    last: dict[str, Decimal]
    mark: dict[str, Decimal]
    mark_pinned: list[str]
    next_order_id: int
    next_algo_id: int
    next_trade_id: int
    now_ms: int
    has_volume: list[str] = []


def _snap(o: SimOrder) -> SimOrder:
    return msgspec.structs.replace(o)


def _snap_algo(a: SimAlgoOrder) -> SimAlgoOrder:
    return msgspec.structs.replace(a)


def _is_multiple(value: Decimal, base: Decimal, step: Decimal) -> bool:
    return step == 0 or (value - base) % step == 0


def _decimals(value: Decimal) -> int:
    exp = value.normalize().as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


class MatchingEngine:
    """Orders, conditional orders and the account of one simulated Binance account."""

    def __init__(
        self,
        *,
        execution: ExecutionConfig,
        symbols: Mapping[str, SymbolSpec],
        account: Account,
        now_ms: int = 0,
    ) -> None:
        self._cfg = execution
        self.specs = dict(symbols)
        self.account = account
        self.now_ms = now_ms
        self.orders: dict[int, SimOrder] = {}
        self.algos: dict[int, SimAlgoOrder] = {}
        self._last: dict[str, Decimal] = {}
        self._mark: dict[str, Decimal] = {}
        self._mark_pinned: set[str] = set()
        self._next_order_id = FIRST_ORDER_ID
        self._next_algo_id = FIRST_ALGO_ID
        self._next_trade_id = FIRST_TRADE_ID
        self._participation = Decimal(repr(execution.paper_volume_participation))
        # Symbols whose traded volume is reported: their resting fills are capped by it.
        self._has_volume: set[str] = set()
        # Best bid / ask while it is newer than the last trade (`on_book`); a trade makes it stale.
        self._book: dict[str, tuple[Decimal, Decimal]] = {}
        # Indexes (performance; rebuilt from `orders` / `algos` on restore): per symbol the orders
        # that may still be open, by id; per client id the newest order / conditional order.
        self._sym_orders: dict[str, dict[int, SimOrder]] = {}
        self._sym_algos: dict[str, dict[int, SimAlgoOrder]] = {}
        self._cid_order: dict[str, int] = {}
        self._cid_algo: dict[str, int] = {}

    def _index(self) -> None:
        self._sym_orders.clear()
        self._sym_algos.clear()
        self._cid_order.clear()
        self._cid_algo.clear()
        for oid, o in self.orders.items():
            self._cid_order[o.client_order_id] = oid
            if o.is_open:
                self._sym_orders.setdefault(o.symbol, {})[oid] = o
        for aid, a in self.algos.items():
            self._cid_algo[a.client_algo_id] = aid
            if a.is_open:
                self._sym_algos.setdefault(a.symbol, {})[aid] = a

    # ------------------------------------------------------------ persistence

    def to_state(self) -> bytes:
        return msgspec.json.encode(
            EngineState(
                account=self.account.state,
                orders=self.orders,
                algos=self.algos,
                last=self._last,
                mark=self._mark,
                mark_pinned=sorted(self._mark_pinned),
                next_order_id=self._next_order_id,
                next_algo_id=self._next_algo_id,
                next_trade_id=self._next_trade_id,
                now_ms=self.now_ms,
                has_volume=sorted(self._has_volume),
            )
        )

    @classmethod
    def from_state(
        cls, data: bytes, *, execution: ExecutionConfig, symbols: Mapping[str, SymbolSpec]
    ) -> MatchingEngine:
        st = msgspec.json.decode(data, type=EngineState)
        account = Account.from_state(msgspec.json.encode(st.account))
        eng = cls(execution=execution, symbols=symbols, account=account, now_ms=st.now_ms)
        eng.orders = st.orders
        eng.algos = st.algos
        eng._last = st.last
        eng._mark = st.mark
        eng._mark_pinned = set(st.mark_pinned)
        eng._next_order_id = st.next_order_id
        eng._next_algo_id = st.next_algo_id
        eng._next_trade_id = st.next_trade_id
        eng._has_volume = set(st.has_volume)
        eng._index()
        return eng

    def prune_closed(self, keep: int) -> None:
        """Forget all but the `keep` most recent closed orders and closed conditional orders (the
        paper exchange bounds its memory and its snapshot with this; the fake keeps everything).
        A triggered order's child is kept as long as its conditional order is."""
        closed_algos = [aid for aid, a in self.algos.items() if not a.is_open and a.status != "TRIGGERED"]
        for aid in closed_algos[: max(0, len(closed_algos) - keep)]:
            a = self.algos.pop(aid)
            if self._cid_algo.get(a.client_algo_id) == aid:
                del self._cid_algo[a.client_algo_id]
        closed = [
            oid
            for oid, o in self.orders.items()
            if not o.is_open and not (o.algo_id and o.algo_id in self.algos)
        ]
        for oid in closed[: max(0, len(closed) - keep)]:
            o = self.orders.pop(oid)
            if self._cid_order.get(o.client_order_id) == oid:
                del self._cid_order[o.client_order_id]

    def adopt(self, order: SimOrder | SimAlgoOrder) -> None:
        """Take over an order kept elsewhere (a migrated paper account): it gets a fresh id here."""
        if isinstance(order, SimOrder):
            order.order_id = self._next_order_id
            self._next_order_id += 1
            self.orders[order.order_id] = order
        else:
            order.algo_id = self._next_algo_id
            self._next_algo_id += 1
            self.algos[order.algo_id] = order
        self._index()

    # ------------------------------------------------------------ reads

    def spec(self, symbol: str) -> SymbolSpec:
        spec = self.specs.get(symbol)
        if spec is None:
            raise Rejection(-1121, "Invalid symbol.")
        return spec

    def last_price(self, symbol: str) -> Decimal | None:
        return self._last.get(symbol)

    def mark_price(self, symbol: str) -> Decimal | None:
        return self._mark.get(symbol, self._last.get(symbol))

    def open_orders(self, symbol: str | None = None) -> list[SimOrder]:
        """Open regular orders (of `symbol`, else of every symbol), oldest first."""
        if symbol is None:
            out = [o for sym in list(self._sym_orders) for o in self.open_orders(sym)]
            return sorted(out, key=lambda o: o.order_id) if len(self._sym_orders) > 1 else out
        idx = self._sym_orders.get(symbol)
        if not idx:
            return []
        done = [oid for oid, o in idx.items() if not o.is_open]
        for oid in done:
            del idx[oid]
        return list(idx.values())

    def open_algos(self, symbol: str | None = None) -> list[SimAlgoOrder]:
        """Open conditional orders (of `symbol`, else of every symbol), oldest first."""
        if symbol is None:
            out = [a for sym in list(self._sym_algos) for a in self.open_algos(sym)]
            return sorted(out, key=lambda a: a.algo_id) if len(self._sym_algos) > 1 else out
        idx = self._sym_algos.get(symbol)
        if not idx:
            return []
        done = [aid for aid, a in idx.items() if not a.is_open]
        for aid in done:
            del idx[aid]
        return list(idx.values())

    def find_order(self, symbol: str, *, order_id: int | None, client_id: str | None) -> SimOrder | None:
        if order_id is not None:
            o = self.orders.get(order_id)
        else:
            oid = self._cid_order.get(client_id) if client_id is not None else None
            o = None if oid is None else self.orders.get(oid)
        return o if o is not None and o.symbol == symbol else None

    def order_by_client_id(self, client_id: str) -> SimOrder | None:
        """The newest regular order with `client_id`, of any symbol."""
        oid = self._cid_order.get(client_id)
        return None if oid is None else self.orders.get(oid)

    def find_algo(self, *, algo_id: int | None, client_id: str | None) -> SimAlgoOrder | None:
        if algo_id is None:
            algo_id = self._cid_algo.get(client_id) if client_id is not None else None
        return None if algo_id is None else self.algos.get(algo_id)

    def book(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        """Best bid / ask from `on_book` while newer than the last trade, else None."""
        return self._book.get(symbol)

    def open_order_margin(self) -> Decimal:
        total = ZERO
        for o in self.open_orders():
            if not o.reduce_only and o.type == "LIMIT":
                total += o.remaining * o.price / Decimal(self.account.leverage(o.symbol))
        return total

    def available_balance(self) -> Decimal:
        return self.account.available_balance(self.open_order_margin())

    # ------------------------------------------------------------ account configuration

    def set_leverage(self, symbol: str, leverage: int) -> None:
        spec = self.spec(symbol)
        if leverage < 1 or leverage > spec.max_leverage:
            raise Rejection(-4028, f"Leverage {leverage} is not valid")
        pos = self.account.position(symbol)
        if pos.amount != 0 and leverage < self.account.leverage(symbol):
            raise Rejection(
                -4161, "Leverage reduction is not supported in Isolated Margin Mode with open positions."
            )
        self.account.set_leverage(symbol, leverage)

    def set_margin_type(self, symbol: str, margin_type: str) -> None:
        self.spec(symbol)
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise Rejection(-1116, "Invalid marginType.")
        if margin_type == "CROSSED":
            raise Rejection(-4168, "The sim exchange supports isolated margin only.")
        if self.account.margin_type(symbol) == margin_type:
            raise Rejection(-4046, "No need to change margin type.")
        self.account.set_margin_type(symbol, margin_type)

    # ------------------------------------------------------------ validation helpers

    def _check_client_id(self, cid: str) -> None:
        if not _CLIENT_ID.match(cid):
            raise Rejection(-4015, "Client order id is not valid.")

    def _check_price(self, spec: SymbolSpec, price: Decimal, field: str) -> None:
        r = spec.rules
        if not price.is_finite() or price <= 0:
            raise Rejection(
                -4006 if field == "stopPrice" else -1102,
                f"Parameter '{field}' is not valid.",
                detail=f"{field}={price}, expected > 0",
            )
        if _decimals(price) > r.price_precision:
            raise Rejection(
                -1111,
                "Precision is over the maximum defined for this asset.",
                detail=f"{field}={price}, expected at most {r.price_precision} decimals",
            )
        if r.min_price and price < r.min_price:
            raise Rejection(
                -4013, "Price less than min price.", detail=f"{field}={price}, expected >= {r.min_price}"
            )
        if r.max_price and price > r.max_price:
            raise Rejection(
                -4016, "Price greater than max price.", detail=f"{field}={price}, expected <= {r.max_price}"
            )
        if not _is_multiple(price, r.min_price, r.tick_size):
            raise Rejection(
                -4014,
                "Price not increased by tick size.",
                detail=f"{field}={price}, expected a multiple of tickSize {r.tick_size}",
            )

    def _check_qty(self, spec: SymbolSpec, qty: Decimal, market: bool) -> None:
        r = spec.rules
        if not qty.is_finite() or qty <= 0:
            raise Rejection(
                -4003, "Quantity less than or equal to zero.", detail=f"quantity={qty}, expected > 0"
            )
        if _decimals(qty) > r.quantity_precision:
            raise Rejection(
                -1111,
                "Precision is over the maximum defined for this asset.",
                detail=f"quantity={qty}, expected at most {r.quantity_precision} decimals",
            )
        step = (r.market_step_size if market else None) or r.step_size
        min_qty = (r.market_min_qty if market else None) or r.min_qty
        max_qty = (r.market_max_qty if market else None) or r.max_qty
        if qty < min_qty:
            raise Rejection(
                -4004, "Quantity less than min qty.", detail=f"quantity={qty}, expected >= {min_qty}"
            )
        if qty > max_qty:
            raise Rejection(
                -4005, "Quantity greater than max qty.", detail=f"quantity={qty}, expected <= {max_qty}"
            )
        if not _is_multiple(qty, min_qty, step):
            raise Rejection(
                -4023,
                "Qty not increased by step size.",
                detail=f"quantity={qty}, expected a multiple of stepSize {step}",
            )

    def _check_reduce_only(self, symbol: str, side: str) -> None:
        pos = self.account.position(symbol).amount
        if pos == 0 or (side == "BUY") == (pos > 0):
            raise Rejection(
                -2022,
                "ReduceOnly Order is rejected.",
                detail=f"reduce-only {side} {symbol} with position {pos}: nothing to reduce on that side",
            )

    def _check_min_notional(self, spec: SymbolSpec, notional: Decimal) -> None:
        if notional < spec.rules.min_notional:
            raise Rejection(
                -4164,
                f"Order's notional must be no smaller than {spec.rules.min_notional} "
                "(unless you choose reduce only).",
                detail=f"notional={notional}, expected >= {spec.rules.min_notional}",
            )

    def _opening_qty(self, symbol: str, side: str, qty: Decimal) -> Decimal:
        pos = self.account.position(symbol).amount
        if pos == 0 or (side == "BUY") == (pos > 0):
            return qty
        return max(ZERO, qty - abs(pos))

    def _check_margin(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> None:
        opening = self._opening_qty(symbol, side, qty)
        required = opening * price / Decimal(self.account.leverage(symbol))
        available = self.available_balance()
        if required > available:
            raise Rejection(
                -2019,
                "Margin is insufficient.",
                detail=f"margin {required} needed, available balance {available}",
            )

    def _price_now(self, symbol: str) -> Decimal:
        """The last price; before the first trade the mark, else the best bid (a paper venue fed only
        book and mark data)."""
        last = self._last.get(symbol)
        if last is None:
            last = self._mark.get(symbol)
        if last is None and symbol in self._book:
            last = self._book[symbol][0]
        if last is None:
            raise Rejection(-1000, f"No market price for {symbol} yet (the sim exchange has no data).")
        return last

    def _taker_ref(self, symbol: str, side: str, last: Decimal) -> Decimal:
        """The price a taker meets: the best ask / bid of a fresh book, else the last price (on both
        sides: the spread is part of the configured slippage)."""
        book = self._book.get(symbol)
        if book is not None:
            return book[1] if side == "BUY" else book[0]
        return last

    def _marketable_now(self, symbol: str, side: str, price: Decimal, last: Decimal) -> bool:
        """Would a limit at `price` take liquidity now? With a fresh book when it reaches the ask (a
        buy) or the bid (a sell); without one when it is strictly through the last price, so that a
        limit at the last price rests on either side (no bias between longs and shorts)."""
        book = self._book.get(symbol)
        if book is not None:
            return price >= book[1] if side == "BUY" else price <= book[0]
        return price > last if side == "BUY" else price < last

    def _adverse(self, spec: SymbolSpec, side: str, base: Decimal, pct: float) -> Decimal:
        raw = base * (ONE + Decimal(repr(pct))) if side == "BUY" else base * (ONE - Decimal(repr(pct)))
        tick = spec.rules.tick_size
        if tick == 0:
            return raw
        rounding = ROUND_CEILING if side == "BUY" else ROUND_FLOOR
        return (raw / tick).to_integral_value(rounding=rounding) * tick

    # ------------------------------------------------------------ regular orders

    def place_order(self, req: NewOrder) -> tuple[SimOrder, list[EngineEvent]]:
        """Validate and accept a LIMIT or MARKET order; it may fill at once."""
        spec = self.spec(req.symbol)
        if req.type in ALGO_TYPES:
            raise Rejection(
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            )
        if req.type not in ("LIMIT", "MARKET"):
            raise Rejection(-1116, "Invalid orderType.")
        if req.side not in ("BUY", "SELL"):
            raise Rejection(-1117, "Invalid side.")
        market = req.type == "MARKET"
        tif = "GTC" if market else (req.time_in_force or "")
        if not market and tif not in ("GTC", "IOC", "FOK", "GTX"):
            raise Rejection(-1115, "Invalid timeInForce.")
        cid = req.client_order_id
        if cid is not None:
            self._check_client_id(cid)
            dup = self._cid_order.get(cid)
            if dup is not None and self.orders[dup].is_open:
                raise Rejection(-4116, "ClientOrderId is duplicated.", detail=f"clientOrderId={cid} is open")
        self._check_qty(spec, req.quantity, market)
        last = self._price_now(req.symbol)
        mark = self.mark_price(req.symbol) or last
        if market:
            price_ref = mark
            if mark and abs(last - mark) / mark > spec.market_take_bound:
                raise Rejection(
                    -4131, "The counterparty's best price does not meet the PERCENT_PRICE filter limit."
                )
        else:
            if req.price is None:
                raise Rejection(
                    -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed."
                )
            self._check_price(spec, req.price, "price")
            r = spec.rules
            if r.multiplier_up is not None and req.side == "BUY" and req.price > mark * r.multiplier_up:
                raise Rejection(-4016, f"Limit price can't be higher than {mark * r.multiplier_up}.")
            if r.multiplier_down is not None and req.side == "SELL" and req.price < mark * r.multiplier_down:
                raise Rejection(-4024, f"Limit price can't be lower than {mark * r.multiplier_down}.")
            price_ref = req.price
        if req.reduce_only:
            self._check_reduce_only(req.symbol, req.side)
        else:
            self._check_min_notional(spec, req.quantity * price_ref)
            self._check_margin(req.symbol, req.side, req.quantity, price_ref)
        if len(self.open_orders(req.symbol)) >= spec.max_num_orders:
            raise Rejection(-2025, "Reach max open order limit.")
        marketable = market or self._marketable_now(req.symbol, req.side, req.price or ZERO, last)
        if tif == "GTX" and marketable:
            raise Rejection(
                -5022,
                "Due to the order could not be executed as maker, the Post Only order will be rejected. "
                "The order will not be recorded in the order history",
            )
        order = self._new_order(
            symbol=req.symbol,
            side=req.side,
            type_=req.type,
            orig_type=req.type,
            tif=tif,
            qty=req.quantity,
            price=ZERO if market or req.price is None else req.price,
            reduce_only=req.reduce_only,
            cid=cid,
        )
        events: list[EngineEvent] = [OrderEvent(order=_snap(order), execution="NEW", time=self.now_ms)]
        if marketable:
            slip = self._cfg.paper_slippage_market_pct if market else self._cfg.paper_slippage_limit_pct
            px = self._adverse(spec, req.side, self._taker_ref(req.symbol, req.side, last), slip)
            if not market:
                px = min(px, order.price) if req.side == "BUY" else max(px, order.price)
            self._fill(order, order.remaining, px, maker=False, events=events)
        elif tif in ("IOC", "FOK"):
            self._finish(order, "EXPIRED", events, expiry_reason=ER_IOC)
        return order, events

    def _new_order(
        self,
        *,
        symbol: str,
        side: str,
        type_: str,
        orig_type: str,
        tif: str,
        qty: Decimal,
        price: Decimal,
        reduce_only: bool,
        cid: str | None,
        stop_price: Decimal = ZERO,
        close_position: bool = False,
        working_type: str = "CONTRACT_PRICE",
        algo_id: int = 0,
    ) -> SimOrder:
        oid = self._next_order_id
        self._next_order_id += 1
        order = SimOrder(
            order_id=oid,
            client_order_id=cid or f"sim_auto_{oid}",
            symbol=symbol,
            side=side,
            type=type_,
            orig_type=orig_type,
            time_in_force=tif,
            orig_qty=qty,
            price=price,
            stop_price=stop_price,
            reduce_only=reduce_only,
            close_position=close_position,
            working_type=working_type,
            time=self.now_ms,
            update_time=self.now_ms,
            algo_id=algo_id,
        )
        self.orders[oid] = order
        self._sym_orders.setdefault(symbol, {})[oid] = order
        self._cid_order[order.client_order_id] = oid
        return order

    def cancel_order(
        self, symbol: str, *, order_id: int | None = None, client_id: str | None = None
    ) -> tuple[SimOrder, list[EngineEvent]]:
        self.spec(symbol)
        order = self.find_order(symbol, order_id=order_id, client_id=client_id)
        if order is None or not order.is_open:
            raise Rejection(-2011, "Unknown order sent.")
        events: list[EngineEvent] = []
        self._finish(order, "CANCELED", events)
        return order, events

    def cancel_all_orders(self, symbol: str) -> list[EngineEvent]:
        self.spec(symbol)
        events: list[EngineEvent] = []
        for order in self.open_orders(symbol):
            self._finish(order, "CANCELED", events)
        return events

    def _finish(
        self, order: SimOrder, status: str, events: list[EngineEvent], *, expiry_reason: int = 0
    ) -> None:
        order.status = status
        order.update_time = self.now_ms
        events.append(
            OrderEvent(order=_snap(order), execution=status, time=self.now_ms, expiry_reason=expiry_reason)
        )
        self._child_done(order, events)

    def _child_done(self, order: SimOrder, events: list[EngineEvent]) -> None:
        if order.algo_id and not order.is_open:
            algo = self.algos.get(order.algo_id)
            if algo is not None and algo.status == "TRIGGERED":
                algo.status = "FINISHED"
                algo.update_time = self.now_ms
                events.append(
                    AlgoEvent(
                        algo=_snap_algo(algo),
                        time=self.now_ms,
                        executed_qty=order.executed_qty,
                        avg_price=order.avg_price,
                    )
                )

    def _fill(
        self, order: SimOrder, qty: Decimal, price: Decimal, *, maker: bool, events: list[EngineEvent]
    ) -> None:
        """Execute `qty` of `order` at `price` (reduce-only clipped to the position)."""
        if order.reduce_only or order.close_position:
            pos = self.account.position(order.symbol).amount
            reduces = pos != 0 and (order.side == "BUY") == (pos < 0)
            qty = min(qty, abs(pos)) if reduces else ZERO
            if qty <= 0:
                self._finish(order, "EXPIRED", events, expiry_reason=ER_REDUCE_ONLY)
                return
        rate = self._cfg.maker_fee_pct if maker else self._cfg.taker_fee_pct
        commission = price * qty * Decimal(repr(rate))
        trade_id = self._next_trade_id
        self._next_trade_id += 1
        realized = self.account.apply_fill(
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=price,
            commission=commission,
            now_ms=self.now_ms,
            trade_id=trade_id,
            order_id=order.order_id,
            maker=maker,
        )
        order.executed_qty += qty
        order.cum_quote += qty * price
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        order.update_time = self.now_ms
        events.append(
            OrderEvent(
                order=_snap(order),
                execution="TRADE",
                time=self.now_ms,
                last_qty=qty,
                last_price=price,
                commission=commission,
                maker=maker,
                trade_id=trade_id,
                realized_pnl=realized,
            )
        )
        events.append(AccountEvent(reason="ORDER", symbols=(order.symbol,), time=self.now_ms))
        flat = self.account.position(order.symbol).amount == 0
        if order.is_open and (order.reduce_only or order.close_position) and flat:
            self._finish(order, "EXPIRED", events, expiry_reason=ER_REDUCE_ONLY)
        if order.is_open and order.time_in_force in ("IOC", "FOK") and order.type != "MARKET":
            self._finish(order, "EXPIRED", events, expiry_reason=ER_IOC)
        self._child_done(order, events)
        if self.account.position(order.symbol).amount == 0:
            for algo in self.open_algos(order.symbol):
                if algo.close_position:
                    self._algo_status(algo, "EXPIRED", events)

    # ------------------------------------------------------------ conditional (algo) orders

    def _working_price(self, symbol: str, working_type: str) -> Decimal:
        last = self._price_now(symbol)
        if working_type == "MARK_PRICE":
            return self.mark_price(symbol) or last
        return last

    def place_algo(self, req: NewAlgoOrder) -> tuple[SimAlgoOrder, list[EngineEvent]]:
        spec = self.spec(req.symbol)
        if req.type not in ALGO_TYPES:
            raise Rejection(-1116, "Invalid orderType.")
        if req.side not in ("BUY", "SELL"):
            raise Rejection(-1117, "Invalid side.")
        if req.working_type not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise Rejection(-1116, "Invalid workingType.")
        if req.time_in_force not in ("GTC", "IOC", "FOK", "GTX"):
            raise Rejection(-1115, "Invalid timeInForce.")
        cid = req.client_algo_id
        if cid is not None:
            self._check_client_id(cid)
            dup = self._cid_algo.get(cid)
            if dup is not None and self.algos[dup].is_open:
                raise Rejection(-4116, "ClientOrderId is duplicated.", detail=f"clientAlgoId={cid} is open")
        if req.close_position:
            if req.type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise Rejection(-1106, "Parameter 'closePosition' sent when not required.")
            if req.quantity is not None:
                raise Rejection(-4137, "Quantity must be zero with closePosition equals true.")
            if req.reduce_only:
                raise Rejection(-4138, "Reduce only must be true with closePosition equals true.")
            if any(a.close_position and a.side == req.side for a in self.open_algos(req.symbol)):
                raise Rejection(
                    -4130,
                    "An open stop or take profit order with GTE and closePosition in the direction is existing.",
                )
        elif req.quantity is None:
            raise Rejection(
                -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."
            )
        else:
            self._check_qty(spec, req.quantity, req.type.endswith("_MARKET"))
        now_price = self._working_price(req.symbol, req.working_type)
        trailing = req.type == "TRAILING_STOP_MARKET"
        if trailing:
            if req.trigger_price is not None:
                raise Rejection(-1106, "Parameter 'triggerPrice' sent when not required.")
            cb = req.callback_rate
            if cb is None or not (CALLBACK_RATE_MIN <= cb <= CALLBACK_RATE_MAX):
                raise Rejection(
                    -2007, f"Invalid callBackRate {cb}; expected {CALLBACK_RATE_MIN}..{CALLBACK_RATE_MAX}."
                )
            if req.activate_price is not None:
                self._check_price(spec, req.activate_price, "activatePrice")
                if (req.side == "BUY" and req.activate_price >= now_price) or (
                    req.side == "SELL" and req.activate_price <= now_price
                ):
                    raise Rejection(-2021, "Order would immediately trigger.")
        else:
            if req.trigger_price is None:
                raise Rejection(
                    -1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed."
                )
            self._check_price(spec, req.trigger_price, "triggerPrice")
            if self._triggered(req.type, req.side, req.trigger_price, now_price):
                raise Rejection(-2021, "Order would immediately trigger.")
        if req.type in ("STOP", "TAKE_PROFIT"):
            if req.price is None:
                raise Rejection(
                    -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed."
                )
            self._check_price(spec, req.price, "price")
        if req.reduce_only:
            self._check_reduce_only(req.symbol, req.side)
        elif not req.close_position and req.quantity is not None:
            ref = req.trigger_price or req.activate_price or now_price
            self._check_min_notional(spec, req.quantity * ref)
        if len(self.open_algos()) >= MAX_OPEN_ALGO_ORDERS:
            raise Rejection(-4045, "Reach max stop order limit.")
        aid = self._next_algo_id
        self._next_algo_id += 1
        algo = SimAlgoOrder(
            algo_id=aid,
            client_algo_id=cid or f"sim_algo_{aid}",
            symbol=req.symbol,
            side=req.side,
            order_type=req.type,
            time_in_force=req.time_in_force,
            quantity=req.quantity or ZERO,
            trigger_price=req.trigger_price or ZERO,
            price=req.price or ZERO,
            working_type=req.working_type,
            close_position=req.close_position,
            reduce_only=req.reduce_only,
            price_protect=req.price_protect,
            activate_price=req.activate_price,
            callback_rate=req.callback_rate,
            create_time=self.now_ms,
            update_time=self.now_ms,
        )
        if trailing and req.activate_price is None:
            algo.activated = True
            algo.extreme = now_price
        self.algos[aid] = algo
        self._sym_algos.setdefault(req.symbol, {})[aid] = algo
        self._cid_algo[algo.client_algo_id] = aid
        return algo, [AlgoEvent(algo=_snap_algo(algo), time=self.now_ms)]

    @staticmethod
    def _triggered(order_type: str, side: str, trigger: Decimal, price: Decimal) -> bool:
        if order_type in ("STOP", "STOP_MARKET"):
            return price >= trigger if side == "BUY" else price <= trigger
        return price <= trigger if side == "BUY" else price >= trigger

    def cancel_algo(
        self, *, algo_id: int | None = None, client_id: str | None = None
    ) -> tuple[SimAlgoOrder, list[EngineEvent]]:
        algo = self.find_algo(algo_id=algo_id, client_id=client_id)
        if algo is None or not algo.is_open:
            raise Rejection(-2011, "Unknown order sent.")
        events: list[EngineEvent] = []
        self._algo_status(algo, "CANCELED", events)
        return algo, events

    def cancel_all_algos(self, symbol: str) -> list[EngineEvent]:
        self.spec(symbol)
        events: list[EngineEvent] = []
        for algo in self.open_algos(symbol):
            self._algo_status(algo, "CANCELED", events)
        return events

    def _algo_status(
        self, algo: SimAlgoOrder, status: str, events: list[EngineEvent], reason: str = ""
    ) -> None:
        algo.status = status
        algo.update_time = self.now_ms
        algo.reject_reason = reason
        events.append(AlgoEvent(algo=_snap_algo(algo), time=self.now_ms))

    def _trigger(self, algo: SimAlgoOrder, base: Decimal, events: list[EngineEvent]) -> None:
        """Turn a triggered conditional order into a matching-engine order and execute it."""
        spec = self.spec(algo.symbol)
        algo.trigger_time = self.now_ms
        self._algo_status(algo, "TRIGGERING", events)
        pos = self.account.position(algo.symbol).amount
        qty = algo.quantity
        if algo.close_position:
            reduces = pos != 0 and (algo.side == "BUY") == (pos < 0)
            qty = abs(pos) if reduces else ZERO
            if qty == 0:
                self._algo_status(algo, "EXPIRED", events, "No position to close")
                return
        is_market = algo.order_type.endswith("_MARKET")
        child = self._new_order(
            symbol=algo.symbol,
            side=algo.side,
            type_="MARKET" if is_market else "LIMIT",
            orig_type=algo.order_type,
            tif="GTC" if is_market else algo.time_in_force,
            qty=qty,
            price=ZERO if is_market else algo.price,
            reduce_only=algo.reduce_only,
            cid=algo.client_algo_id,
            stop_price=algo.trigger_price,
            close_position=algo.close_position,
            working_type=algo.working_type,
            algo_id=algo.algo_id,
        )
        algo.actual_order_id = child.order_id
        self._algo_status(algo, "TRIGGERED", events)
        events.append(OrderEvent(order=_snap(child), execution="NEW", time=self.now_ms))
        last = self._price_now(algo.symbol)
        if is_market:
            self._fill(
                child,
                child.remaining,
                self._adverse(spec, algo.side, base, self._cfg.paper_slippage_stop_pct),
                maker=False,
                events=events,
            )
        elif self._marketable_now(algo.symbol, child.side, child.price, last):
            ref = self._taker_ref(algo.symbol, child.side, last)
            px = self._adverse(spec, child.side, ref, self._cfg.paper_slippage_limit_pct)
            px = min(px, child.price) if child.side == "BUY" else max(px, child.price)
            self._fill(child, child.remaining, px, maker=False, events=events)

    # ------------------------------------------------------------ market data driving the engine

    def on_price(
        self, symbol: str, price: Decimal, *, mark: Decimal | None = None, volume: Decimal | None = None
    ) -> list[EngineEvent]:
        """The last price jumps to `price` (a gap); `mark` also pins the mark price; `volume` is the
        volume traded since the previous market call (it raises the cap of resting orders)."""
        self.spec(symbol)
        events: list[EngineEvent] = []
        if mark is not None:
            self._mark_pinned.add(symbol)
        if volume is not None:
            self.add_volume(symbol, volume)
        self._move(symbol, price, mark, continuous=False, trade=True, events=events)
        return events

    def move(self, symbol: str, price: Decimal, *, continuous: bool) -> list[EngineEvent]:
        """The last price moves to `price`: along a continuous segment from the previous price (orders
        reached fill at their level) or as a gap (`continuous=False`: stops fill at the new price)."""
        self.spec(symbol)
        events: list[EngineEvent] = []
        self._move(symbol, price, None, continuous=continuous, trade=True, events=events)
        return events

    def add_volume(self, symbol: str, volume: Decimal) -> None:
        """`volume` traded on `symbol` now: every open LIMIT order of it may fill that much more times
        `paper_volume_participation` (from now on, resting fills of `symbol` are volume-capped)."""
        if not volume.is_finite() or volume < 0:
            raise Rejection(
                -1102, "Parameter 'volume' is not valid.", detail=f"volume={volume}, expected >= 0"
            )
        self._has_volume.add(symbol)
        if volume:
            for o in self.open_orders(symbol):
                if o.type == "LIMIT":
                    o.volume_seen += volume

    def on_book(self, symbol: str, bid: Decimal, ask: Decimal) -> list[EngineEvent]:
        """Best bid / ask now. Marketable limits and MARKET orders take them until the next trade;
        a resting limit fills (as maker, volume-capped) when the opposite side goes through it."""
        spec = self.spec(symbol)
        if not (bid.is_finite() and ask.is_finite()) or bid <= 0 or bid > ask:
            raise Rejection(
                -1102,
                "Parameter 'book' is not valid.",
                detail=f"bid={bid} ask={ask}, expected 0 < bid <= ask",
            )
        self._book[symbol] = (bid, ask)
        events: list[EngineEvent] = []
        for o in self.open_orders(symbol):
            if o.type == "LIMIT" and (
                (o.side == "BUY" and ask < o.price) or (o.side == "SELL" and bid > o.price)
            ):
                self._rest_fill(spec, o, events)
        return events

    def on_mark(self, symbol: str, mark: Decimal) -> list[EngineEvent]:
        """Set (and pin) the mark price; MARK_PRICE conditional orders may trigger."""
        self.spec(symbol)
        self._mark_pinned.add(symbol)
        events: list[EngineEvent] = []
        last = self._last.get(symbol)
        if last is None:
            # No trade yet (a paper venue fed book and mark only): the mark alone may trigger.
            prev = self._mark.get(symbol, mark)
            self._mark[symbol] = mark
            lo, hi = min(prev, mark), max(prev, mark)
            for algo in self.open_algos(symbol):
                if algo.working_type == "MARK_PRICE" and algo.is_open:
                    level = self._algo_hit(algo, prev, mark, lo, hi)
                    if level is not None:
                        self._trigger(algo, self._gap_base(symbol, algo, level, mark), events)
            return events
        self._move(symbol, last, mark, continuous=False, trade=False, events=events)
        return events

    def _gap_base(self, symbol: str, algo: SimAlgoOrder, level: Decimal, last: Decimal) -> Decimal:
        """Where a conditional order triggered by a gap or by the mark executes: what a taker meets
        now, and for a stop never better than its trigger (capital first: the book may have moved)."""
        base = self._taker_ref(symbol, algo.side, last)
        if algo.order_type in _STOP_TYPES:
            base = min(base, level) if algo.side == "SELL" else max(base, level)
        return base

    def unpin_mark(self, symbol: str) -> None:
        self._mark_pinned.discard(symbol)

    def on_candle(self, symbol: str, candle: Candle) -> list[EngineEvent]:
        """Replay one closed candle as open → nearer extreme → other extreme → close; its volume is
        traded at its start (the cap of every order open then)."""
        self.spec(symbol)
        o, h, low, c = (Decimal(repr(x)) for x in (candle.open, candle.high, candle.low, candle.close))
        path = [o, h, low, c] if (h - o) <= (o - low) else [o, low, h, c]
        self.add_volume(symbol, Decimal(repr(candle.volume)))
        events: list[EngineEvent] = []
        for i, point in enumerate(path):
            self._move(symbol, point, None, continuous=i > 0, trade=True, events=events)
        return events

    def _fillable(self, spec: SymbolSpec, order: SimOrder) -> Decimal:
        """How much of a resting `order` may fill now: all of it, or, on a symbol with reported
        volume, participation × volume since placement (down to the step) less what already filled."""
        qty = order.remaining
        if order.symbol in self._has_volume:
            step = spec.rules.step_size
            cap = order.volume_seen * self._participation
            if step:
                cap = (cap / step).to_integral_value(rounding=ROUND_FLOOR) * step
            qty = min(qty, cap - order.executed_qty)
        return qty

    def _rest_fill(self, spec: SymbolSpec, order: SimOrder, events: list[EngineEvent]) -> None:
        """A resting limit the market trades through: maker fill at its price moved adversely."""
        qty = self._fillable(spec, order)
        if qty <= 0:
            return
        px = self._adverse(spec, order.side, order.price, self._cfg.paper_slippage_limit_pct)
        self._fill(order, qty, px, maker=True, events=events)

    def _move(
        self,
        symbol: str,
        new_last: Decimal,
        new_mark: Decimal | None,
        *,
        continuous: bool,
        trade: bool,
        events: list[EngineEvent],
    ) -> None:
        a = self._last.get(symbol, new_last)
        pinned = symbol in self._mark_pinned
        ma = self.mark_price(symbol) or a
        mb = new_mark if new_mark is not None else (ma if pinned else new_last)
        self._last[symbol] = new_last
        self._mark[symbol] = mb
        if trade:
            self._book.pop(symbol, None)
        spec = self.spec(symbol)
        down = new_last < a
        lo, hi = min(a, new_last), max(a, new_last)
        # (level, order id or -algo id) reached along the last-price segment.
        hits: list[tuple[Decimal, int]] = []
        for o in self.open_orders(symbol) if trade else ():
            if o.type == "LIMIT" and (
                (o.side == "BUY" and lo < o.price) or (o.side == "SELL" and hi > o.price)
            ):
                hits.append((o.price, o.order_id))
        mark_hits: list[tuple[Decimal, int]] = []
        mlo, mhi = min(ma, mb), max(ma, mb)
        for algo in self.open_algos(symbol):
            use_mark = algo.working_type == "MARK_PRICE"
            seg = (ma, mb, mlo, mhi) if use_mark else (a, new_last, lo, hi)
            level = self._algo_hit(algo, *seg)
            if level is not None:
                (mark_hits if use_mark and pinned else hits).append((level, -algo.algo_id))
        if not hits and not mark_hits:
            return
        hits.sort(key=lambda t: (t[0], t[1]), reverse=down)
        for level, ident in hits + mark_hits:
            if ident > 0:
                order = self.orders[ident]
                if order.is_open:
                    self._rest_fill(spec, order, events)
            else:
                algo = self.algos[-ident]
                if not algo.is_open:
                    continue
                mark_driven = algo.working_type == "MARK_PRICE" and pinned
                # Reached along a continuous move it executes at the level; else see `_gap_base`.
                base = (
                    level if continuous and not mark_driven else self._gap_base(symbol, algo, level, new_last)
                )
                self._trigger(algo, base, events)

    def _algo_hit(
        self, algo: SimAlgoOrder, a: Decimal, b: Decimal, lo: Decimal, hi: Decimal
    ) -> Decimal | None:
        """The price level at which `algo` triggers on the segment a → b, or None."""
        if algo.order_type != "TRAILING_STOP_MARKET":
            tp = algo.trigger_price
            if self._triggered(algo.order_type, algo.side, tp, lo if self.wants_low(algo) else hi):
                return tp if (lo <= tp <= hi) else a
            return None
        cb = (algo.callback_rate or ZERO) / Decimal(100)
        sell = algo.side == "SELL"
        if not algo.activated:
            act = algo.activate_price or ZERO
            if (sell and hi >= act) or (not sell and lo <= act):
                algo.activated = True
                algo.extreme = hi if sell else lo
            else:
                return None
        ext = algo.extreme if algo.extreme is not None else a
        # Moving towards the extreme ratchets it; moving away may trigger.
        if sell:
            if b > a:
                algo.extreme = max(ext, hi)
                return None
            level = ext * (ONE - cb)
            return level if lo <= level else None
        if b < a:
            algo.extreme = min(ext, lo)
            return None
        level = ext * (ONE + cb)
        return level if hi >= level else None

    @staticmethod
    def wants_low(algo: SimAlgoOrder) -> bool:
        """Does `algo` trigger on a falling price (SELL stop, BUY take-profit)?"""
        stop = algo.order_type in ("STOP", "STOP_MARKET")
        return (algo.side == "SELL") == stop

    # ------------------------------------------------------------ funding

    def apply_funding(self, symbol: str, rate: Decimal) -> list[EngineEvent]:
        """Settle funding on `symbol` at the current mark; an event only when a position paid or received."""
        mark = self.mark_price(symbol)
        if mark is None:
            return []
        income = self.account.apply_funding(symbol=symbol, rate=rate, mark=mark, now_ms=self.now_ms)
        if income == 0:
            return []
        return [
            AccountEvent(reason="FUNDING_FEE", symbols=(symbol,), time=self.now_ms, funding_symbol=symbol)
        ]

"""The matching engine of the fake (and paper) exchange: orders, conditional orders, fills.

This module owns the rules by which simulated orders are accepted and executed. It is pure: no
trio, no httpx, no I/O, no wall clock (the caller sets `now_ms`). Every state change returns a list
of engine events (`OrderEvent`, `AlgoEvent`, `AccountEvent`) in the order they happened; the fake
exchange turns them into Binance user-data payloads, the paper exchange into in-process messages.

Policy (BOT_SPEC §9 "Paper"):
- The book is the last traded price: bid = last, ask = last + one tick. A LIMIT order that is
  marketable when placed fills at once as taker; otherwise it rests and fills as maker only when the
  market trades THROUGH its price (a touch is not enough).
- A candle is replayed as the path open → nearer extreme → other extreme → close. The jump from the
  previous price to a candle's open, and `on_price`, are gaps (discontinuous); the moves inside a
  candle are continuous. Within a segment, orders are reached in the order the price reaches them.
- Resting fills are capped per candle and per order by volume × `paper_volume_participation`
  (rounded down to the step); orders filled at placement, MARKET orders and triggered stops fill in
  full (book liquidity).
- Slippage is always adverse, per kind: `paper_slippage_limit_pct` (limit fills), `_market_pct`
  (MARKET), `_stop_pct` (triggered conditional market orders), rounded to the tick away from the
  trader. Fees: maker / taker per config on price × qty.
- Conditional orders trigger on the MARK price (`workingType=MARK_PRICE`) or the last price
  (`CONTRACT_PRICE`, the default). The mark follows the last price unless pinned with `on_mark`.
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
    """A request refused with Binance's error `code` and `msg` (HTTP `status`)."""

    def __init__(self, code: int, msg: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status


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
        return eng

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
        return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def open_algos(self, symbol: str | None = None) -> list[SimAlgoOrder]:
        return [a for a in self.algos.values() if a.is_open and (symbol is None or a.symbol == symbol)]

    def find_order(self, symbol: str, *, order_id: int | None, client_id: str | None) -> SimOrder | None:
        if order_id is not None:
            o = self.orders.get(order_id)
            return o if o is not None and o.symbol == symbol else None
        found = [o for o in self.orders.values() if o.client_order_id == client_id and o.symbol == symbol]
        return found[-1] if found else None

    def find_algo(self, *, algo_id: int | None, client_id: str | None) -> SimAlgoOrder | None:
        if algo_id is not None:
            return self.algos.get(algo_id)
        found = [a for a in self.algos.values() if a.client_algo_id == client_id]
        return found[-1] if found else None

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
        if price <= 0:
            raise Rejection(-4006 if field == "stopPrice" else -1102, f"Parameter '{field}' is not valid.")
        if _decimals(price) > r.price_precision:
            raise Rejection(-1111, "Precision is over the maximum defined for this asset.")
        if r.min_price and price < r.min_price:
            raise Rejection(-4013, "Price less than min price.")
        if r.max_price and price > r.max_price:
            raise Rejection(-4016, "Price greater than max price.")
        if not _is_multiple(price, r.min_price, r.tick_size):
            raise Rejection(-4014, "Price not increased by tick size.")

    def _check_qty(self, spec: SymbolSpec, qty: Decimal, market: bool) -> None:
        r = spec.rules
        if qty <= 0:
            raise Rejection(-4003, "Quantity less than or equal to zero.")
        if _decimals(qty) > r.quantity_precision:
            raise Rejection(-1111, "Precision is over the maximum defined for this asset.")
        step = (r.market_step_size if market else None) or r.step_size
        min_qty = (r.market_min_qty if market else None) or r.min_qty
        max_qty = (r.market_max_qty if market else None) or r.max_qty
        if qty < min_qty:
            raise Rejection(-4004, "Quantity less than min qty.")
        if qty > max_qty:
            raise Rejection(-4005, "Quantity greater than max qty.")
        if not _is_multiple(qty, min_qty, step):
            raise Rejection(-4023, "Qty not increased by step size.")

    def _check_reduce_only(self, symbol: str, side: str) -> None:
        pos = self.account.position(symbol).amount
        if pos == 0 or (side == "BUY") == (pos > 0):
            raise Rejection(-2022, "ReduceOnly Order is rejected.")

    def _check_min_notional(self, spec: SymbolSpec, notional: Decimal) -> None:
        if notional < spec.rules.min_notional:
            raise Rejection(
                -4164,
                f"Order's notional must be no smaller than {spec.rules.min_notional} "
                "(unless you choose reduce only).",
            )

    def _opening_qty(self, symbol: str, side: str, qty: Decimal) -> Decimal:
        pos = self.account.position(symbol).amount
        if pos == 0 or (side == "BUY") == (pos > 0):
            return qty
        return max(ZERO, qty - abs(pos))

    def _check_margin(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> None:
        opening = self._opening_qty(symbol, side, qty)
        required = opening * price / Decimal(self.account.leverage(symbol))
        if required > self.available_balance():
            raise Rejection(-2019, "Margin is insufficient.")

    def _price_now(self, symbol: str) -> Decimal:
        last = self._last.get(symbol)
        if last is None:
            raise Rejection(-1000, f"No market price for {symbol} yet (the sim exchange has no data).")
        return last

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
            if any(o.client_order_id == cid for o in self.open_orders()):
                raise Rejection(-4116, "ClientOrderId is duplicated.")
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
        marketable = market or self._marketable(spec, req.side, req.price or ZERO, last)
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
            price=req.price if not market else ZERO,
            reduce_only=req.reduce_only,
            cid=cid,
        )
        events: list[EngineEvent] = [OrderEvent(order=_snap(order), execution="NEW", time=self.now_ms)]
        if marketable:
            slip = self._cfg.paper_slippage_market_pct if market else self._cfg.paper_slippage_limit_pct
            base = last + spec.rules.tick_size if req.side == "BUY" else last
            px = self._adverse(spec, req.side, base, slip)
            if not market:
                px = min(px, order.price) if req.side == "BUY" else max(px, order.price)
            self._fill(order, order.remaining, px, maker=False, events=events)
        elif tif in ("IOC", "FOK"):
            self._finish(order, "EXPIRED", events, expiry_reason=ER_IOC)
        return order, events

    def _marketable(self, spec: SymbolSpec, side: str, price: Decimal, last: Decimal) -> bool:
        return price >= last + spec.rules.tick_size if side == "BUY" else price <= last

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
            if any(a.client_algo_id == cid for a in self.open_algos()):
                raise Rejection(-4116, "ClientOrderId is duplicated.")
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
        elif self._marketable(spec, child.side, child.price, last):
            px = self._adverse(spec, child.side, last, self._cfg.paper_slippage_limit_pct)
            px = min(px, child.price) if child.side == "BUY" else max(px, child.price)
            self._fill(child, child.remaining, px, maker=False, events=events)

    # ------------------------------------------------------------ market data driving the engine

    def on_price(
        self, symbol: str, price: Decimal, *, mark: Decimal | None = None, volume: Decimal | None = None
    ) -> list[EngineEvent]:
        """The last price jumps to `price` (a gap); `mark` also pins the mark price."""
        self.spec(symbol)
        events: list[EngineEvent] = []
        if mark is not None:
            self._mark_pinned.add(symbol)
        self._move(symbol, price, mark, continuous=False, caps=self._caps(symbol, volume), events=events)
        return events

    def on_mark(self, symbol: str, mark: Decimal) -> list[EngineEvent]:
        """Set (and pin) the mark price; MARK_PRICE conditional orders may trigger."""
        self.spec(symbol)
        self._mark_pinned.add(symbol)
        events: list[EngineEvent] = []
        last = self._last.get(symbol)
        if last is None:
            self._mark[symbol] = mark
            return events
        self._move(symbol, last, mark, continuous=False, caps=None, events=events)
        return events

    def unpin_mark(self, symbol: str) -> None:
        self._mark_pinned.discard(symbol)

    def on_candle(self, symbol: str, candle: Candle) -> list[EngineEvent]:
        """Replay one closed candle as open → nearer extreme → other extreme → close."""
        self.spec(symbol)
        o, h, low, c = (Decimal(repr(x)) for x in (candle.open, candle.high, candle.low, candle.close))
        path = [o, h, low, c] if (h - o) <= (o - low) else [o, low, h, c]
        caps = self._caps(symbol, Decimal(repr(candle.volume)))
        events: list[EngineEvent] = []
        for i, point in enumerate(path):
            self._move(symbol, point, None, continuous=i > 0, caps=caps, events=events)
        return events

    def _caps(self, symbol: str, volume: Decimal | None) -> dict[int, Decimal] | None:
        if volume is None:
            return None
        step = self.spec(symbol).rules.step_size
        cap = volume * Decimal(repr(self._cfg.paper_volume_participation))
        if step:
            cap = (cap / step).to_integral_value(rounding=ROUND_FLOOR) * step
        return {o.order_id: cap for o in self.open_orders(symbol)}

    def _move(
        self,
        symbol: str,
        new_last: Decimal,
        new_mark: Decimal | None,
        *,
        continuous: bool,
        caps: dict[int, Decimal] | None,
        events: list[EngineEvent],
    ) -> None:
        a = self._last.get(symbol, new_last)
        pinned = symbol in self._mark_pinned
        ma = self.mark_price(symbol) or a
        mb = new_mark if new_mark is not None else (ma if pinned else new_last)
        self._last[symbol] = new_last
        self._mark[symbol] = mb
        spec = self.spec(symbol)
        down = new_last < a
        lo, hi = min(a, new_last), max(a, new_last)
        # (level, order id or -algo id) reached along the last-price segment.
        hits: list[tuple[Decimal, int]] = []
        for o in self.open_orders(symbol):
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
        hits.sort(key=lambda t: (t[0], t[1]), reverse=down)
        for level, ident in hits + mark_hits:
            if ident > 0:
                order = self.orders[ident]
                if not order.is_open:
                    continue
                qty = order.remaining
                if caps is not None:
                    qty = min(qty, caps.get(ident, ZERO))
                    if qty <= 0:
                        continue
                    caps[ident] = caps.get(ident, ZERO) - qty
                px = self._adverse(spec, order.side, order.price, self._cfg.paper_slippage_limit_pct)
                self._fill(order, qty, px, maker=True, events=events)
            else:
                algo = self.algos[-ident]
                if not algo.is_open:
                    continue
                mark_driven = algo.working_type == "MARK_PRICE" and pinned
                base = level if continuous and not mark_driven else new_last
                self._trigger(algo, base, events)

    def _algo_hit(
        self, algo: SimAlgoOrder, a: Decimal, b: Decimal, lo: Decimal, hi: Decimal
    ) -> Decimal | None:
        """The price level at which `algo` triggers on the segment a → b, or None."""
        if algo.order_type != "TRAILING_STOP_MARKET":
            tp = algo.trigger_price
            if self._triggered(algo.order_type, algo.side, tp, lo if self._wants_low(algo) else hi):
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
    def _wants_low(algo: SimAlgoOrder) -> bool:
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

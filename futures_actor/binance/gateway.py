"""The exchange gateway: the one interface the Execution actor uses to reach a venue.

Two implementations: `BinanceGateway` (REST client + user-data stream, for LIVE and the fake exchange)
and `PaperExchange` (in-process matching and a persisted simulated account, for PAPER_LIVE and replay).
Execution never sees wire payloads: gateways translate to the venue-neutral Structs below. Prices and
quantities are `Decimal`, already rounded to the symbol's filters by the caller.

Rules every implementation keeps (BOT_SPEC §9, failure-modes F1, F8):
- Conditional orders (the protective stop) go through `place_stop` / `cancel_stop` / `query_stop`;
  on Binance that is the algo-order API. Regular LIMIT / MARKET orders through `place_order`.
- A placement whose outcome is unknown is resolved by querying its client id before anything is
  re-sent; if it stays unknown the call raises `UnknownOrderStatus` and the caller queries later.
  A duplicate client id means the order exists: the existing order is returned.
- A cancel that finds the order already gone returns `None` (a success).
- Venue errors are raised as the `futures_actor.binance.errors` tree (`WouldTriggerImmediately`,
  `ReduceOnlyRejected`, `MinNotional`, `InsufficientMargin`, ...), also by the paper exchange.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, Protocol

import msgspec
import trio

__all__ = [
    "AccountChanged",
    "AccountState",
    "ExchangeGateway",
    "FundingPaid",
    "GatewayEvent",
    "OrderRequest",
    "OrderState",
    "OrderUpdate",
    "PositionChanged",
    "PositionState",
    "ResyncNeeded",
    "StopRequest",
    "TradeFill",
    "UserTradeRow",
    "trade_fill",
]

OrderSideName = Literal["BUY", "SELL"]
OrderStatus = Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "REJECTED", "TRIGGERED"]


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A regular (matching-engine) order: LIMIT GTC entry, reduce-only LIMIT target, MARKET exit."""

    symbol: str
    client_id: str
    side: OrderSideName
    type: Literal["LIMIT", "MARKET"]
    quantity: Decimal
    price: Decimal | None = None
    reduce_only: bool = False
    time_in_force: Literal["GTC", "IOC", "GTX"] | None = None


class StopRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The protective STOP_MARKET: reduce-only, triggered on the mark price."""

    symbol: str
    client_id: str
    side: OrderSideName
    trigger_price: Decimal
    quantity: Decimal
    working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE"
    reduce_only: bool = True


class OrderState(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the venue sees it now. `is_stop` marks conditional (algo) orders."""

    symbol: str
    client_id: str
    side: OrderSideName
    type: str
    status: OrderStatus
    quantity: Decimal
    executed_qty: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    price: Decimal = Decimal(0)
    trigger_price: Decimal = Decimal(0)
    reduce_only: bool = False
    is_stop: bool = False
    update_ms: int = 0


class PositionState(msgspec.Struct, frozen=True, kw_only=True):
    """A non-zero position in one-way mode. `quantity` is positive; `side` gives the direction."""

    symbol: str
    side: Literal["LONG", "SHORT"]
    quantity: Decimal
    entry_price: Decimal
    unrealized_pnl: Decimal = Decimal(0)
    leverage: int = 1
    isolated_margin: Decimal = Decimal(0)


class TradeFill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution on the account (Binance `userTrades` row): ours or anyone's on the same account."""

    symbol: str
    side: OrderSideName
    price: Decimal
    qty: Decimal
    fee: Decimal  # commission, in the margin asset
    time_ms: int


class UserTradeRow(Protocol):
    """A `userTrades` row as the venues hold it: the wire's `models.UserTrade`, the simulated account's
    `sim.account.TradeRow`."""

    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def qty(self) -> Decimal: ...
    @property
    def commission(self) -> Decimal: ...
    @property
    def time(self) -> int: ...


def trade_fill(row: UserTradeRow) -> TradeFill:
    """The venue-neutral `TradeFill` of a `userTrades` row (any side but BUY is a SELL)."""
    return TradeFill(
        symbol=row.symbol,
        side="BUY" if row.side == "BUY" else "SELL",
        price=row.price,
        qty=row.qty,
        fee=row.commission,
        time_ms=row.time,
    )


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    wallet_balance: Decimal
    available_balance: Decimal
    unrealized_pnl: Decimal
    ts_ms: int = 0

    @property
    def equity(self) -> Decimal:
        return self.wallet_balance + self.unrealized_pnl


# --- events pushed by the gateway ---------------------------------------------------------------------


class OrderUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """An order changed. For a fill, `last_fill_qty` > 0 with its price, fee and maker flag.

    A triggered stop's child order reports with the stop's client id (Binance reuses the
    clientAlgoId as the child's client order id) and `is_stop=True`.
    """

    order: OrderState
    last_fill_qty: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    is_maker: bool = False
    realized_pnl: Decimal = Decimal(0)
    ts_ms: int = 0
    reject_reason: str = ""


class FundingPaid(msgspec.Struct, frozen=True, kw_only=True):
    """Funding settled on a position: `amount` is signed from the account's view (negative = paid)."""

    symbol: str
    amount: Decimal
    ts_ms: int


class AccountChanged(msgspec.Struct, frozen=True, kw_only=True):
    account: AccountState


class PositionChanged(msgspec.Struct, frozen=True, kw_only=True):
    """The exchange says a position changed (any cause: our orders, a person, a liquidation); `amount` is
    signed (one-way mode: > 0 long, < 0 short, 0 flat)."""

    symbol: str
    amount: Decimal
    ts_ms: int


class ResyncNeeded(msgspec.Struct, frozen=True, kw_only=True):
    """Events may have been missed (user-stream reconnect, listenKey expiry): reconcile over REST."""

    reason: str


GatewayEvent = OrderUpdate | FundingPaid | AccountChanged | PositionChanged | ResyncNeeded


class ExchangeGateway(Protocol):
    """What Execution needs from a venue. See the module docstring for the rules."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the event source (user stream / paper matching); `started()` once events flow."""
        ...

    def events(self) -> trio.MemoryReceiveChannel[GatewayEvent]: ...

    async def prepare_symbol(self, symbol: str, *, leverage: int) -> None:
        """Isolated margin and leverage for `symbol` (idempotent; "no need to change" is success)."""
        ...

    async def check_account_mode(self) -> None:
        """Raise if the account is not in one-way position mode (BOT_SPEC §1)."""
        ...

    async def place_order(self, req: OrderRequest) -> OrderState: ...

    async def place_stop(self, req: StopRequest) -> OrderState: ...

    async def cancel_order(self, symbol: str, client_id: str) -> OrderState | None: ...

    async def cancel_stop(self, symbol: str, client_id: str) -> OrderState | None: ...

    async def query_order(self, symbol: str, client_id: str) -> OrderState | None: ...

    async def query_stop(self, symbol: str, client_id: str) -> OrderState | None: ...

    async def open_orders(self) -> list[OrderState]:
        """Every open order, regular and conditional (`is_stop`)."""
        ...

    async def positions(self) -> list[PositionState]: ...

    async def account(self) -> AccountState: ...

    async def user_trades(self, symbol: str, *, start_ms: int) -> list[TradeFill]:
        """The account's executions on `symbol` since `start_ms`, oldest first (a closed-outside position
        is booked at its real fills, BOT_SPEC §10)."""
        ...

"""Wire models of Binance USDⓈ-M payloads: REST responses, market stream frames, user-data events.

These are msgspec Structs with Pythonic field names mapped to Binance's keys (`rename`/`name=`).
They ignore unknown fields (Binance adds fields without notice) and decode leniently
(`strict=False`): numbers sent as strings are accepted where real recordings have them (ccxt's
recorder stores `"orderId":"664082074"`, the leverage-bracket file strings every number). Prices
and quantities that may reach the exchange are `Decimal`. Decoders are built once, at module level.
A payload that does not fit raises `PayloadError` naming the endpoint and the field path.

These models stay at the edge: `binance/` turns them into domain types (`Candle`, `SymbolRules`)
and in-process events; actors never see them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
import structlog

from futures_actor.binance.errors import PayloadError
from futures_actor.core.types import Candle, SymbolRules

__all__ = [
    "AccountInfo",
    "AccountUpdate",
    "AlgoOrder",
    "AlgoUpdate",
    "ApiRestrictions",
    "BalanceRow",
    "BookTickerRest",
    "CodeMsg",
    "CombinedFrame",
    "ExchangeInfo",
    "FundingInfoRow",
    "FundingRateRow",
    "IncomeRow",
    "LeverageBracket",
    "LeverageResult",
    "ListenKeyExpiredEvent",
    "ListenKeyResponse",
    "MarginCall",
    "MultiAssetsMode",
    "Order",
    "OrderTradeUpdate",
    "PositionMode",
    "PositionRisk",
    "PremiumIndex",
    "RestKline",
    "ServerTime",
    "SymbolInfo",
    "Ticker24h",
    "TradeLite",
    "UserEvent",
    "UserTrade",
    "WsBookTicker",
    "WsKline",
    "WsMarkPrice",
    "decode_payload",
    "symbol_rules_from",
    "usable_symbol_rules",
]

T = TypeVar("T")
log = structlog.get_logger(__name__)


class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    """Base of REST models: immutable, unknown fields ignored."""


# Fields Binance documents loosely (a string in one example, a number or null in another): kept
# as sent and normalised by a property, so any documented JSON type decodes.
LooseNumber = str | int | float | None


def _loose_int(raw: LooseNumber, *, what: str) -> int | None:
    """`123`, `"123"` → 123; `""`, `null`, `0`, `"0"` → None (no id); anything else → `PayloadError`."""
    if raw is None or raw == "":
        return None
    try:
        value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
    except ValueError:
        value = None
    if value is None:
        raise PayloadError(f"{what}={raw!r}, expected an integer id, a digit string, '' or null", field=what)
    return value or None


def _loose_decimal(raw: LooseNumber, *, what: str) -> Decimal | None:
    """`"1.5"`, `1.5`, `1` → Decimal; `""`, `null` → None; anything else → `PayloadError`."""
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(str(raw))
    except ArithmeticError:
        value = None
    if value is None or not value.is_finite():
        raise PayloadError(f"{what}={raw!r}, expected a decimal number, '' or null", field=what)
    return value


# ---------------------------------------------------------------- REST: market data


class ServerTime(_Wire, frozen=True, rename="camel"):
    server_time: int


class SymbolFilter(_Wire, frozen=True, rename="camel"):
    """One entry of `filters[]`; the fields used depend on `filter_type`, the rest stay None."""

    filter_type: str
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    tick_size: Decimal | None = None
    min_qty: Decimal | None = None
    max_qty: Decimal | None = None
    step_size: Decimal | None = None
    notional: Decimal | None = None
    multiplier_up: Decimal | None = None
    multiplier_down: Decimal | None = None
    limit: int | None = None


class SymbolInfo(_Wire, frozen=True, rename="camel"):
    symbol: str
    status: str
    pair: str = ""
    contract_type: str = ""
    base_asset: str = ""
    quote_asset: str = ""
    margin_asset: str = ""
    price_precision: int = 8
    quantity_precision: int = 8
    trigger_protect: Decimal | None = None
    market_take_bound: Decimal | None = None
    filters: list[SymbolFilter] = []


class ExchangeInfo(_Wire, frozen=True, rename="camel"):
    symbols: list[SymbolInfo]
    timezone: str = "UTC"


class RestKline(msgspec.Struct, frozen=True, array_like=True):
    """One `/fapi/v1/klines` row (12 fields; the trailing `ignore` is dropped)."""

    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_time_ms: int
    quote_volume: Decimal
    trades: int
    taker_buy_base: Decimal
    taker_buy_quote: Decimal

    def to_candle(self) -> Candle:
        return Candle(
            open_time_ms=self.open_time_ms,
            open=float(self.open),
            high=float(self.high),
            low=float(self.low),
            close=float(self.close),
            volume=float(self.volume),
            quote_volume=float(self.quote_volume),
            trades=self.trades,
        )


class Ticker24h(_Wire, frozen=True, rename="camel"):
    symbol: str
    last_price: Decimal
    volume: Decimal
    quote_volume: Decimal
    price_change_percent: Decimal = Decimal(0)
    open_price: Decimal = Decimal(0)
    high_price: Decimal = Decimal(0)
    low_price: Decimal = Decimal(0)
    open_time: int = 0
    close_time: int = 0
    count: int = 0


class BookTickerRest(_Wire, frozen=True, rename="camel"):
    symbol: str
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal
    time: int = 0


class PremiumIndex(_Wire, frozen=True, rename="camel"):
    symbol: str
    mark_price: Decimal
    index_price: Decimal
    last_funding_rate: str  # "" for delivery contracts
    next_funding_time: int
    time: int
    estimated_settle_price: Decimal | None = None
    interest_rate: str = ""

    @property
    def funding_rate(self) -> Decimal | None:
        return Decimal(self.last_funding_rate) if self.last_funding_rate else None


class FundingRateRow(_Wire, frozen=True, rename="camel"):
    symbol: str
    funding_rate: Decimal
    funding_time: int
    mark_price: str = ""  # may be "" on old rows


class FundingInfoRow(_Wire, frozen=True, rename="camel"):
    symbol: str
    adjusted_funding_rate_cap: Decimal | None = None
    adjusted_funding_rate_floor: Decimal | None = None
    funding_interval_hours: int = 8


# ---------------------------------------------------------------- REST: account


class AccountAsset(_Wire, frozen=True, rename="camel"):
    asset: str
    wallet_balance: Decimal
    unrealized_profit: Decimal = Decimal(0)
    margin_balance: Decimal = Decimal(0)
    available_balance: Decimal = Decimal(0)


class AccountPosition(_Wire, frozen=True, rename="camel"):
    symbol: str
    position_amt: Decimal
    position_side: str = "BOTH"
    unrealized_profit: Decimal = Decimal(0)
    entry_price: Decimal | None = None
    leverage: int | None = None
    isolated: bool | None = None


class AccountInfo(_Wire, frozen=True, rename="camel"):
    total_wallet_balance: Decimal
    total_unrealized_profit: Decimal
    total_margin_balance: Decimal
    available_balance: Decimal
    total_initial_margin: Decimal = Decimal(0)
    total_maint_margin: Decimal = Decimal(0)
    max_withdraw_amount: Decimal = Decimal(0)
    can_trade: bool = True
    multi_assets_margin: bool = False
    assets: list[AccountAsset] = []
    positions: list[AccountPosition] = []


class BalanceRow(_Wire, frozen=True, rename="camel"):
    asset: str
    balance: Decimal
    available_balance: Decimal
    cross_wallet_balance: Decimal = Decimal(0)
    cross_un_pnl: Decimal = Decimal(0)
    max_withdraw_amount: Decimal = Decimal(0)
    update_time: int = 0


class PositionRisk(_Wire, frozen=True, rename="camel"):
    symbol: str
    position_amt: Decimal
    entry_price: Decimal
    mark_price: Decimal
    un_realized_profit: Decimal
    liquidation_price: Decimal
    position_side: str = "BOTH"
    break_even_price: Decimal | None = None
    leverage: int | None = None  # v2 only
    margin_type: str = ""  # v2 only: "cross" / "isolated"
    isolated_margin: Decimal = Decimal(0)
    isolated_wallet: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    update_time: int = 0


class PositionMode(_Wire, frozen=True, rename="camel"):
    dual_side_position: bool


class MultiAssetsMode(_Wire, frozen=True, rename="camel"):
    multi_assets_margin: bool


class ApiRestrictions(_Wire, frozen=True, rename="camel"):
    """`GET /sapi/v1/account/apiRestrictions` (spot host): what the API key may do."""

    ip_restrict: bool = False
    enable_reading: bool = False
    enable_futures: bool = False
    enable_withdrawals: bool = False
    enable_internal_transfer: bool = False
    permits_universal_transfer: bool = False
    enable_spot_and_margin_trading: bool = False


class LeverageResult(_Wire, frozen=True, rename="camel"):
    symbol: str
    leverage: int
    max_notional_value: Decimal


class CodeMsg(_Wire, frozen=True):
    code: int | str = 200
    msg: str = ""


class Bracket(_Wire, frozen=True, rename="camel"):
    bracket: int
    initial_leverage: int
    notional_cap: Decimal
    notional_floor: Decimal
    maint_margin_ratio: Decimal
    cum: Decimal


class LeverageBracket(_Wire, frozen=True, rename="camel"):
    symbol: str
    brackets: list[Bracket]
    notional_coef: Decimal | None = None


class IncomeRow(_Wire, frozen=True, rename="camel"):
    symbol: str
    income_type: str
    income: Decimal
    asset: str
    time: int
    tran_id: int
    info: str = ""
    trade_id_raw: LooseNumber = msgspec.field(default="", name="tradeId")

    @property
    def trade_id(self) -> str:
        """The trade id as text ("" when the row has none); Binance sends a string, a number or null."""
        raw = self.trade_id_raw
        if raw is None:
            return ""
        if isinstance(raw, float) and raw.is_integer():
            return str(int(raw))
        return str(raw)


class UserTrade(_Wire, frozen=True, rename="camel"):
    symbol: str
    id: int
    order_id: int
    side: str
    price: Decimal
    qty: Decimal
    realized_pnl: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    position_side: str = "BOTH"
    maker: bool = False
    buyer: bool = False


class Order(_Wire, frozen=True, rename="camel"):
    """A regular (matching-engine) order: place / query / cancel / openOrders."""

    order_id: int
    symbol: str
    status: str
    client_order_id: str
    side: str
    type: str
    orig_qty: Decimal
    executed_qty: Decimal
    price: Decimal
    time_in_force: str = ""
    position_side: str = "BOTH"
    reduce_only: bool = False
    close_position: bool = False
    stop_price: Decimal = Decimal(0)
    orig_type: str = ""
    avg_price: Decimal | None = None  # absent from place/cancel responses since 2026-07
    cum_quote: Decimal | None = None
    update_time: int = 0
    time: int = 0


class AlgoOrder(_Wire, frozen=True, rename="camel"):
    """A conditional order on the algo service: place / query / openAlgoOrders."""

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str
    algo_status: str
    algo_type: str = "CONDITIONAL"
    position_side: str = "BOTH"
    time_in_force: str = ""
    quantity: Decimal = Decimal(0)
    trigger_price: Decimal = Decimal(0)
    price: Decimal = Decimal(0)
    working_type: str = ""
    close_position: bool = False
    price_protect: bool = False
    reduce_only: bool = False
    activate_price_raw: LooseNumber = msgspec.field(default=None, name="activatePrice")
    callback_rate_raw: LooseNumber = msgspec.field(default=None, name="callbackRate")
    actual_order_id_raw: LooseNumber = msgspec.field(default=None, name="actualOrderId")
    create_time: int = 0
    update_time: int = 0
    trigger_time: int = 0

    @property
    def actual_order_id(self) -> int | None:
        """The matching-engine `orderId` of the child after the trigger; None before."""
        return _loose_int(self.actual_order_id_raw, what="actualOrderId")

    @property
    def activate_price(self) -> Decimal | None:
        return _loose_decimal(self.activate_price_raw, what="activatePrice")

    @property
    def callback_rate(self) -> Decimal | None:
        return _loose_decimal(self.callback_rate_raw, what="callbackRate")


class AlgoCancelResult(_Wire, frozen=True, rename="camel"):
    algo_id: int
    client_algo_id: str
    code: int | str = 200
    msg: str = ""


class ListenKeyResponse(_Wire, frozen=True, rename="camel"):
    listen_key: str


# ---------------------------------------------------------------- WS market streams


class WsKlineData(msgspec.Struct, frozen=True):
    open_time_ms: int = msgspec.field(name="t")
    close_time_ms: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    interval: str = msgspec.field(name="i")
    open: float = msgspec.field(name="o")
    close: float = msgspec.field(name="c")
    high: float = msgspec.field(name="h")
    low: float = msgspec.field(name="l")
    volume: float = msgspec.field(name="v")
    trades: int = msgspec.field(name="n")
    closed: bool = msgspec.field(name="x")
    quote_volume: float = msgspec.field(name="q")

    def to_candle(self) -> Candle:
        return Candle(
            open_time_ms=self.open_time_ms,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            quote_volume=self.quote_volume,
            trades=self.trades,
        )

    def is_finite(self) -> bool:
        return all(
            math.isfinite(x) and x >= 0.0
            for x in (self.open, self.high, self.low, self.close, self.volume, self.quote_volume)
        )


class WsKline(msgspec.Struct, frozen=True, tag_field="e", tag="kline"):
    event_time_ms: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    k: WsKlineData = msgspec.field(name="k")


class WsMarkPrice(msgspec.Struct, frozen=True, tag_field="e", tag="markPriceUpdate"):
    event_time_ms: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    mark_price: Decimal = msgspec.field(name="p")
    index_price: Decimal = msgspec.field(name="i")
    funding_rate: Decimal = msgspec.field(name="r")
    next_funding_time_ms: int = msgspec.field(name="T")


class WsBookTicker(msgspec.Struct, frozen=True, tag_field="e", tag="bookTicker"):
    update_id: int = msgspec.field(name="u")
    event_time_ms: int = msgspec.field(name="E")
    transaction_time_ms: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    bid_price: Decimal = msgspec.field(name="b")
    bid_qty: Decimal = msgspec.field(name="B")
    ask_price: Decimal = msgspec.field(name="a")
    ask_qty: Decimal = msgspec.field(name="A")


MarketPayload = WsKline | WsMarkPrice | WsBookTicker


class CombinedFrame(msgspec.Struct, frozen=True):
    """A combined-stream frame `{"stream": name, "data": payload}`."""

    stream: str
    data: MarketPayload


# ---------------------------------------------------------------- WS user data


class OrderUpdateData(msgspec.Struct, frozen=True):
    symbol: str = msgspec.field(name="s")
    client_order_id: str = msgspec.field(name="c")
    side: str = msgspec.field(name="S")
    order_type: str = msgspec.field(name="o")
    time_in_force: str = msgspec.field(name="f")
    orig_qty: Decimal = msgspec.field(name="q")
    price: Decimal = msgspec.field(name="p")
    avg_price: Decimal = msgspec.field(name="ap")
    execution_type: str = msgspec.field(name="x")
    status: str = msgspec.field(name="X")
    order_id: int = msgspec.field(name="i")
    last_filled_qty: Decimal = msgspec.field(name="l")
    cum_filled_qty: Decimal = msgspec.field(name="z")
    last_filled_price: Decimal = msgspec.field(name="L")
    trade_time_ms: int = msgspec.field(name="T")
    trade_id: int = msgspec.field(name="t")
    stop_price: Decimal = msgspec.field(default=Decimal(0), name="sp")
    commission_asset: str = msgspec.field(default="", name="N")
    commission: Decimal = msgspec.field(default=Decimal(0), name="n")
    maker: bool = msgspec.field(default=False, name="m")
    reduce_only: bool = msgspec.field(default=False, name="R")
    position_side: str = msgspec.field(default="BOTH", name="ps")
    realized_pnl: Decimal = msgspec.field(default=Decimal(0), name="rp")
    orig_type: str = msgspec.field(default="", name="ot")
    close_position: bool = msgspec.field(default=False, name="cp")
    expiry_reason: int = msgspec.field(default=0, name="er")


class OrderTradeUpdate(msgspec.Struct, frozen=True, tag_field="e", tag="ORDER_TRADE_UPDATE"):
    event_time_ms: int = msgspec.field(name="E")
    transaction_time_ms: int = msgspec.field(name="T")
    order: OrderUpdateData = msgspec.field(name="o")


class AlgoUpdateData(msgspec.Struct, frozen=True):
    client_algo_id: str = msgspec.field(name="caid")
    algo_id: int = msgspec.field(name="aid")
    order_type: str = msgspec.field(name="o")
    symbol: str = msgspec.field(name="s")
    side: str = msgspec.field(name="S")
    status: str = msgspec.field(name="X")
    quantity: Decimal = msgspec.field(default=Decimal(0), name="q")
    algo_type: str = msgspec.field(default="CONDITIONAL", name="at")
    position_side: str = msgspec.field(default="BOTH", name="ps")
    time_in_force: str = msgspec.field(default="", name="f")
    actual_order_id_raw: LooseNumber = msgspec.field(default=None, name="ai")
    actual_avg_price: Decimal = msgspec.field(default=Decimal(0), name="ap")
    actual_qty: Decimal = msgspec.field(default=Decimal(0), name="aq")
    actual_order_type: str = msgspec.field(default="", name="act")
    trigger_price: Decimal = msgspec.field(default=Decimal(0), name="tp")
    price: Decimal = msgspec.field(default=Decimal(0), name="p")
    working_type: str = msgspec.field(default="", name="wt")
    close_position: bool = msgspec.field(default=False, name="cp")
    price_protect: bool = msgspec.field(default=False, name="pP")
    reduce_only: bool = msgspec.field(default=False, name="R")
    trigger_time_ms: int = msgspec.field(default=0, name="tt")
    reject_reason: str = msgspec.field(default="", name="rm")
    is_activated: bool | None = msgspec.field(default=None, name="ia")

    @property
    def actual_order_id(self) -> int | None:
        """`ai`: the child's matching-engine `orderId` once triggered (a string, a number or null)."""
        return _loose_int(self.actual_order_id_raw, what="ai")


class AlgoUpdate(msgspec.Struct, frozen=True, tag_field="e", tag="ALGO_UPDATE"):
    event_time_ms: int = msgspec.field(name="E")
    order: AlgoUpdateData = msgspec.field(name="o")
    transaction_time_ms: int = msgspec.field(default=0, name="T")


class BalanceChange(msgspec.Struct, frozen=True):
    asset: str = msgspec.field(name="a")
    wallet_balance: Decimal = msgspec.field(name="wb")
    cross_wallet_balance: Decimal = msgspec.field(default=Decimal(0), name="cw")
    balance_change: Decimal = msgspec.field(default=Decimal(0), name="bc")


class PositionChange(msgspec.Struct, frozen=True):
    symbol: str = msgspec.field(name="s")
    position_amt: Decimal = msgspec.field(name="pa")
    entry_price: Decimal = msgspec.field(name="ep")
    unrealized_pnl: Decimal = msgspec.field(default=Decimal(0), name="up")
    margin_type: str = msgspec.field(default="", name="mt")
    isolated_wallet: Decimal = msgspec.field(default=Decimal(0), name="iw")
    position_side: str = msgspec.field(default="BOTH", name="ps")
    accumulated_realized: Decimal = msgspec.field(default=Decimal(0), name="cr")
    break_even_price: Decimal | None = msgspec.field(default=None, name="bep")


class AccountUpdateData(msgspec.Struct, frozen=True):
    reason: str = msgspec.field(name="m")
    balances: list[BalanceChange] = msgspec.field(default_factory=list, name="B")
    positions: list[PositionChange] = msgspec.field(default_factory=list, name="P")
    symbol: str = msgspec.field(default="", name="S")


class AccountUpdate(msgspec.Struct, frozen=True, tag_field="e", tag="ACCOUNT_UPDATE"):
    event_time_ms: int = msgspec.field(name="E")
    account: AccountUpdateData = msgspec.field(name="a")
    transaction_time_ms: int = msgspec.field(default=0, name="T")


class TradeLite(msgspec.Struct, frozen=True, tag_field="e", tag="TRADE_LITE"):
    event_time_ms: int = msgspec.field(name="E")
    transaction_time_ms: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    orig_qty: Decimal = msgspec.field(name="q")
    price: Decimal = msgspec.field(name="p")
    maker: bool = msgspec.field(name="m")
    client_order_id: str = msgspec.field(name="c")
    side: str = msgspec.field(name="S")
    last_filled_price: Decimal = msgspec.field(name="L")
    last_filled_qty: Decimal = msgspec.field(name="l")
    trade_id: int = msgspec.field(name="t")
    order_id: int = msgspec.field(name="i")


class MarginCallPosition(msgspec.Struct, frozen=True):
    symbol: str = msgspec.field(name="s")
    position_amt: Decimal = msgspec.field(name="pa")
    mark_price: Decimal = msgspec.field(name="mp")
    maint_margin: Decimal = msgspec.field(name="mm")
    position_side: str = msgspec.field(default="BOTH", name="ps")
    margin_type: str = msgspec.field(default="", name="mt")
    unrealized_pnl: Decimal = msgspec.field(default=Decimal(0), name="up")


class MarginCall(msgspec.Struct, frozen=True, tag_field="e", tag="MARGIN_CALL"):
    event_time_ms: int = msgspec.field(name="E")
    cross_wallet_balance: Decimal = msgspec.field(default=Decimal(0), name="cw")
    positions: list[MarginCallPosition] = msgspec.field(default_factory=list, name="p")


class ListenKeyExpiredEvent(msgspec.Struct, frozen=True, tag_field="e", tag="listenKeyExpired"):
    event_time_ms: int = msgspec.field(name="E")  # an int since 2026-05, a string before: lax decode
    listen_key: str = msgspec.field(default="", name="listenKey")


UserEvent = OrderTradeUpdate | AlgoUpdate | AccountUpdate | TradeLite | MarginCall | ListenKeyExpiredEvent


class _EventType(msgspec.Struct, frozen=True):
    e: str = ""


# ---------------------------------------------------------------- decoding

_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    dec = _decoders.get(type_)
    if dec is None:
        dec = msgspec.json.Decoder(type_, strict=False)
        _decoders[type_] = dec
    return dec


def decode_payload(type_: type[T] | Any, body: bytes, *, endpoint: str) -> T:
    """Decode `body` as `type_`; `PayloadError` naming `endpoint` and the field path on mismatch."""
    try:
        result: T = _decoder(type_).decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        m = _AT_PATH.search(text)
        field = m.group("path").lstrip(".") if m else ""
        raise PayloadError(
            f"payload does not fit {getattr(type_, '__name__', type_)}: {text}",
            endpoint=endpoint,
            field=field,
        ) from None
    except msgspec.DecodeError as exc:
        raise PayloadError(f"payload is not valid JSON: {exc}", endpoint=endpoint) from None
    return result


# Built once at module level for the hot paths (market stream, user stream).
COMBINED_FRAME_DECODER: msgspec.json.Decoder[CombinedFrame] = msgspec.json.Decoder(
    CombinedFrame, strict=False
)
USER_EVENT_DECODER: msgspec.json.Decoder[UserEvent] = msgspec.json.Decoder(UserEvent, strict=False)
EVENT_TYPE_DECODER: msgspec.json.Decoder[_EventType] = msgspec.json.Decoder(_EventType)
for _t in (
    ServerTime,
    ExchangeInfo,
    list[RestKline],
    list[Ticker24h],
    Ticker24h,
    list[BookTickerRest],
    BookTickerRest,
    list[PremiumIndex],
    PremiumIndex,
    list[FundingRateRow],
    list[FundingInfoRow],
    AccountInfo,
    list[BalanceRow],
    list[PositionRisk],
    PositionMode,
    MultiAssetsMode,
    LeverageResult,
    CodeMsg,
    list[LeverageBracket],
    LeverageBracket,
    list[IncomeRow],
    list[UserTrade],
    Order,
    list[Order],
    AlgoOrder,
    list[AlgoOrder],
    AlgoCancelResult,
    ListenKeyResponse,
):
    _decoder(_t)


# ---------------------------------------------------------------- domain conversion


def symbol_rules_from(info: SymbolInfo) -> SymbolRules:
    """The `SymbolRules` of one exchangeInfo symbol; `PayloadError` if PRICE_FILTER/LOT_SIZE are missing."""
    by_type = {f.filter_type: f for f in info.filters}
    price = by_type.get("PRICE_FILTER")
    lot = by_type.get("LOT_SIZE")
    endpoint = "GET /fapi/v1/exchangeInfo"
    if price is None or price.tick_size is None:
        raise PayloadError(
            f"symbol {info.symbol}: no PRICE_FILTER.tickSize", endpoint=endpoint, field="filters"
        )
    if lot is None or lot.step_size is None or lot.min_qty is None:
        raise PayloadError(f"symbol {info.symbol}: no LOT_SIZE filter", endpoint=endpoint, field="filters")
    market = by_type.get("MARKET_LOT_SIZE")
    notional = by_type.get("MIN_NOTIONAL")
    pct = by_type.get("PERCENT_PRICE")
    return SymbolRules(
        symbol=info.symbol,
        tick_size=price.tick_size,
        step_size=lot.step_size,
        min_qty=lot.min_qty,
        max_qty=lot.max_qty if lot.max_qty is not None else Decimal("1e12"),
        market_step_size=market.step_size if market else None,
        market_min_qty=market.min_qty if market else None,
        market_max_qty=market.max_qty if market else None,
        min_notional=notional.notional if notional and notional.notional is not None else Decimal(0),
        min_price=price.min_price if price.min_price is not None else Decimal(0),
        max_price=price.max_price if price.max_price is not None else Decimal("1e12"),
        multiplier_up=pct.multiplier_up if pct else None,
        multiplier_down=pct.multiplier_down if pct else None,
        price_precision=info.price_precision,
        quantity_precision=info.quantity_precision,
    )


def usable_symbol_rules(symbols: Iterable[SymbolInfo]) -> list[tuple[SymbolInfo, SymbolRules]]:
    """Each exchangeInfo symbol with its `SymbolRules`; a symbol whose filters are unusable (no
    PRICE_FILTER tick or LOT_SIZE) is logged and skipped, so one broken listing never aborts the rest."""
    out: list[tuple[SymbolInfo, SymbolRules]] = []
    for info in symbols:
        try:
            out.append((info, symbol_rules_from(info)))
        except PayloadError as exc:
            log.warning("exchange_info_symbol_skipped", symbol=info.symbol, error=str(exc))
    return out

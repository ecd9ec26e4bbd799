"""The Binance USDⓈ-M REST client: one `httpx.AsyncClient`, signed, paced, retried where safe.

Owns: the server-time offset (measured at start, refreshed every `exchange.time_sync_interval_seconds`
and after every -1021), request pacing through `RateLimiter`, the mapping of failures to the
`binance.errors` tree, and typed decoding through `binance.models`.

Retry policy (stamina, bounded by `exchange.max_retry_attempts`, never by real-time timeouts):
idempotent requests (GET, DELETE, listenKey keepalive) are retried on server errors, unknown
outcomes (503 "Unknown error", 408), transport errors, 429 and -1021. A non-idempotent POST is retried only on -1021 and 429 (definitely not executed).
An order placement whose outcome is unknown (timeout, 408, 5xx, -1000/-1006/-1007) is resolved by
`place_order_resolved` / `place_algo_order_resolved`: query the client id first; a duplicate client
id (-4116) means the order exists; only an order proven absent is sent again, with the same id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, Self, TypeVar

import httpx
import stamina
import structlog
import trio

from futures_actor.binance.auth import SECURITY_EXTENSION, BinanceAuth, Security
from futures_actor.binance.errors import (
    BinanceError,
    DuplicateClientId,
    IpBanned,
    ListenKeyExpired,
    RateLimited,
    ServerError,
    Throttled,
    TimestampOutOfWindow,
    TransportError,
    UnknownOrder,
    UnknownOrderStatus,
    error_from_response,
)
from futures_actor.binance.models import (
    AccountInfo,
    AlgoCancelResult,
    AlgoOrder,
    ApiRestrictions,
    BalanceRow,
    BookTickerRest,
    CodeMsg,
    ExchangeInfo,
    FundingInfoRow,
    FundingRateRow,
    IncomeRow,
    LeverageBracket,
    LeverageResult,
    ListenKeyResponse,
    MultiAssetsMode,
    Order,
    PositionMode,
    PositionRisk,
    PremiumIndex,
    RestKline,
    ServerTime,
    Ticker24h,
    UserTrade,
    decode_payload,
    usable_symbol_rules,
)
from futures_actor.binance.ratelimit import RateLimiter
from futures_actor.binance.urls import resolve_urls
from futures_actor.core.clock import WallClock
from futures_actor.core.config import ExchangeConfig
from futures_actor.core.secrets import Secret
from futures_actor.core.types import SymbolRules

__all__ = ["KLINE_INTERVAL_MS", "BinanceRestClient", "kline_weight"]

log = structlog.get_logger(__name__)
T = TypeVar("T")
Method = Literal["GET", "POST", "PUT", "DELETE"]

# Protocol facts (Binance docs): kline intervals and their lengths; 1M has no fixed length.
KLINE_INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
_FUNDING_PAGE_LIMIT = 1000
_KLINE_MAX_LIMIT = 1500
_NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
_NO_NEED_TO_CHANGE_POSITION_SIDE = -4059


def kline_weight(limit: int) -> int:
    """Request weight of `/fapi/v1/klines` by `limit` (Binance: <100:1, <500:2, <=1000:5, else 10)."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"parameter value {value} is not a finite Decimal")
        return format(value, "f")
    return str(value)


def _params(**kw: Any) -> dict[str, str]:
    return {k: _fmt(v) for k, v in kw.items() if v is not None}


def _retry_idempotent(exc: Exception) -> bool:
    """Reads, cancels and keepalives may be sent again: a failure or an unknown outcome (a 503
    "Unknown error", a 408) is retried; a cancel repeated after success finds the order gone (a success)."""
    return isinstance(
        exc, ServerError | TransportError | RateLimited | TimestampOutOfWindow | UnknownOrderStatus
    )


def _retry_post(exc: Exception) -> bool:
    """-1021 and 429/-1003 are definite rejections (not executed): safe to send again."""
    return isinstance(exc, TimestampOutOfWindow | RateLimited)


class BinanceRestClient:
    """Typed access to the fapi REST endpoints the bot needs. Use as an async context manager."""

    def __init__(
        self,
        *,
        cfg: ExchangeConfig,
        wall_clock: WallClock,
        api_key: Secret | None = None,
        api_secret: Secret | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        base_url: str | None = None,
        limiter: RateLimiter | None = None,
        on_ban: Callable[[int], None] | None = None,
        on_error: Callable[[BinanceError], None] | None = None,
    ) -> None:
        self._cfg = cfg
        self._clock = wall_clock
        # Called with every error response and transport failure, before any retry (BOT_SPEC §12:
        # the health thresholds count exchange errors, not operations that failed after retries).
        self._on_error = on_error
        self._offset_ms = 0
        self.limiter = limiter or RateLimiter(cfg=cfg, now_ms=self.server_now_ms, on_ban=on_ban)
        auth = BinanceAuth(
            api_key=api_key or Secret(""),
            api_secret=api_secret or Secret(""),
            recv_window_ms=cfg.recv_window_ms,
            timestamp_ms=self.server_now_ms,
        )
        self._http = httpx.AsyncClient(
            base_url=base_url or resolve_urls(cfg).rest,
            transport=transport,
            auth=auth,
            timeout=cfg.request_timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"BinanceRestClient(base_url={str(self._http.base_url)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self._http.aclose()

    @property
    def max_retry_attempts(self) -> int:
        """`exchange.max_retry_attempts`: the bound on every retry loop built on this client."""
        return self._cfg.max_retry_attempts

    @property
    def retry_wait_seconds(self) -> float:
        """`exchange.retry_wait_initial_seconds`: the pause before asking again."""
        return self._cfg.retry_wait_initial_seconds

    # ------------------------------------------------------------ time

    @property
    def offset_ms(self) -> int:
        """Server time minus local wall time, as last measured."""
        return self._offset_ms

    def server_now_ms(self) -> int:
        return self._clock.now_ms() + self._offset_ms

    async def sync_time(self) -> int:
        """Measure the server-time offset (midpoint of the round trip); returns it."""
        sent = self._clock.now_ms()
        body = await self._send_once("GET", "/fapi/v1/time", {}, weight=1, security="NONE")
        received = self._clock.now_ms()
        parsed: ServerTime = decode_payload(ServerTime, body, endpoint="GET /fapi/v1/time")
        server = parsed.server_time
        self._offset_ms = server - (sent + received) // 2
        self.limiter.reanchor()
        log.info("binance_time_synced", offset_ms=self._offset_ms)
        return self._offset_ms

    async def run_time_sync(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sync now, then every `time_sync_interval_seconds`; failures are logged, never fatal."""
        await self.sync_time()
        task_status.started()
        while True:
            await trio.sleep(self._cfg.time_sync_interval_seconds)
            try:
                await self.sync_time()
            except BinanceError as exc:
                log.warning("binance_time_sync_failed", error=str(exc))

    # ------------------------------------------------------------ transport

    async def _send_once(
        self,
        method: Method,
        path: str,
        params: Mapping[str, str],
        *,
        weight: int,
        security: Security,
        orders: int = 0,
        client_id: str | None = None,
        placement: bool = False,
    ) -> bytes:
        endpoint = f"{method} {path}"
        await self.limiter.acquire(weight, orders=orders)
        request = self._http.build_request(
            method, path, params=dict(params), extensions={SECURITY_EXTENSION: security}
        )
        try:
            response = await self._http.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            failure: BinanceError = TransportError(
                f"could not connect: {type(exc).__name__}", endpoint=endpoint, client_id=client_id
            )
            self._report_error(failure)
            raise failure from None
        except httpx.TransportError as exc:  # timeouts after sending, broken connections
            cls = UnknownOrderStatus if placement else TransportError
            failure = cls(f"no response: {type(exc).__name__}", endpoint=endpoint, client_id=client_id)
            self._report_error(failure)
            raise failure from None
        self.limiter.observe(response.headers)
        if response.is_success:
            return response.content
        err = error_from_response(
            response.status_code,
            response.content,
            response.headers,
            endpoint=endpoint,
            client_id=client_id,
            now_ms=self.server_now_ms(),
        )
        self._report_error(err)
        if isinstance(err, IpBanned):
            self.limiter.note_banned(err.until_ms)
        elif isinstance(err, RateLimited):
            self.limiter.note_rate_limited(err.retry_after_s)
        elif isinstance(err, TimestampOutOfWindow):
            log.warning("binance_timestamp_rejected", endpoint=endpoint, code=err.code)
            try:
                await self.sync_time()
            except BinanceError as sync_exc:
                log.warning("binance_time_sync_failed", error=str(sync_exc))
        raise err

    def _report_error(self, err: BinanceError) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(err)
        except Exception as exc:  # a hook must never break a request
            log.error("binance_error_hook_failed", error=repr(exc))

    async def _request(
        self,
        method: Method,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        weight: int = 1,
        security: Security = "NONE",
        orders: int = 0,
        client_id: str | None = None,
        placement: bool = False,
    ) -> bytes:
        idempotent = method != "POST"
        async for attempt in stamina.retry_context(
            on=_retry_idempotent if idempotent else _retry_post,
            attempts=self._cfg.max_retry_attempts if idempotent else 2,
            timeout=None,
            wait_initial=self._cfg.retry_wait_initial_seconds,
            wait_max=self._cfg.retry_wait_max_seconds,
        ):
            with attempt:
                return await self._send_once(
                    method,
                    path,
                    params or {},
                    weight=weight,
                    security=security,
                    orders=orders,
                    client_id=client_id,
                    placement=placement,
                )
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _get(self, type_: Any, path: str, params: Mapping[str, str] | None = None, **kw: Any) -> Any:
        body = await self._request("GET", path, params, **kw)
        return decode_payload(type_, body, endpoint=f"GET {path}")

    # ------------------------------------------------------------ market data (public)

    async def server_time(self) -> int:
        result: ServerTime = await self._get(ServerTime, "/fapi/v1/time")
        return result.server_time

    async def exchange_info(self) -> ExchangeInfo:
        result: ExchangeInfo = await self._get(ExchangeInfo, "/fapi/v1/exchangeInfo")
        return result

    async def symbol_rules(self, *, perpetual_trading_only: bool = True) -> dict[str, SymbolRules]:
        """`SymbolRules` per symbol (by default only PERPETUAL symbols with status TRADING)."""
        info = await self.exchange_info()
        return {
            s.symbol: rules
            for s, rules in usable_symbol_rules(info.symbols)
            if not perpetual_trading_only or (s.contract_type == "PERPETUAL" and s.status == "TRADING")
        }

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[RestKline]:
        lim = limit or _KLINE_MAX_LIMIT
        result: list[RestKline] = await self._get(
            list[RestKline],
            "/fapi/v1/klines",
            _params(symbol=symbol, interval=interval, startTime=start_ms, endTime=end_ms, limit=lim),
            weight=kline_weight(lim),
        )
        return result

    async def klines_range(
        self, symbol: str, interval: str, *, start_ms: int, end_ms: int, page_limit: int = _KLINE_MAX_LIMIT
    ) -> list[RestKline]:
        """Every kline with open time in [start_ms, end_ms], fetched in pages of `page_limit`."""
        if interval not in KLINE_INTERVAL_MS:
            raise ValueError(
                f"klines_range: interval {interval!r} unknown; expected one of {list(KLINE_INTERVAL_MS)}"
            )
        step = KLINE_INTERVAL_MS[interval]
        out: list[RestKline] = []
        cursor = start_ms
        while cursor <= end_ms:
            page = await self.klines(symbol, interval, start_ms=cursor, end_ms=end_ms, limit=page_limit)
            page = [k for k in page if cursor <= k.open_time_ms <= end_ms]
            if not page:
                break
            out.extend(page)
            cursor = page[-1].open_time_ms + step
            if len(page) < page_limit:
                break
        return out

    async def ticker_24h(self, symbol: str | None = None) -> list[Ticker24h]:
        if symbol is None:
            rows: list[Ticker24h] = await self._get(list[Ticker24h], "/fapi/v1/ticker/24hr", weight=40)
            return rows
        one: Ticker24h = await self._get(Ticker24h, "/fapi/v1/ticker/24hr", _params(symbol=symbol), weight=1)
        return [one]

    async def book_ticker(self, symbol: str | None = None) -> list[BookTickerRest]:
        if symbol is None:
            rows: list[BookTickerRest] = await self._get(
                list[BookTickerRest], "/fapi/v1/ticker/bookTicker", weight=5
            )
            return rows
        one: BookTickerRest = await self._get(
            BookTickerRest, "/fapi/v1/ticker/bookTicker", _params(symbol=symbol), weight=2
        )
        return [one]

    async def premium_index(self, symbol: str | None = None) -> list[PremiumIndex]:
        if symbol is None:
            rows: list[PremiumIndex] = await self._get(list[PremiumIndex], "/fapi/v1/premiumIndex", weight=10)
            return rows
        one: PremiumIndex = await self._get(PremiumIndex, "/fapi/v1/premiumIndex", _params(symbol=symbol))
        return [one]

    async def funding_rate_history(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = _FUNDING_PAGE_LIMIT,
    ) -> list[FundingRateRow]:
        rows: list[FundingRateRow] = await self._get(
            list[FundingRateRow],
            "/fapi/v1/fundingRate",
            _params(symbol=symbol, startTime=start_ms, endTime=end_ms, limit=limit),
        )
        return rows

    async def funding_info(self) -> list[FundingInfoRow]:
        rows: list[FundingInfoRow] = await self._get(list[FundingInfoRow], "/fapi/v1/fundingInfo", weight=1)
        return rows

    # ------------------------------------------------------------ account (signed)

    async def account(self) -> AccountInfo:
        result: AccountInfo = await self._get(AccountInfo, "/fapi/v3/account", weight=5, security="SIGNED")
        return result

    async def balance(self) -> list[BalanceRow]:
        rows: list[BalanceRow] = await self._get(
            list[BalanceRow], "/fapi/v3/balance", weight=5, security="SIGNED"
        )
        return rows

    async def position_risk(self, symbol: str | None = None) -> list[PositionRisk]:
        rows: list[PositionRisk] = await self._get(
            list[PositionRisk], "/fapi/v2/positionRisk", _params(symbol=symbol), weight=5, security="SIGNED"
        )
        return rows

    async def position_mode(self) -> bool:
        """True when the account is in hedge (dual-side) mode."""
        result: PositionMode = await self._get(
            PositionMode, "/fapi/v1/positionSide/dual", weight=30, security="SIGNED"
        )
        return result.dual_side_position

    async def multi_assets_mode(self) -> bool:
        """True when the account is in Multi-Assets mode (isolated margin is then refused, -4168)."""
        result: MultiAssetsMode = await self._get(
            MultiAssetsMode, "/fapi/v1/multiAssetsMargin", weight=30, security="SIGNED"
        )
        return result.multi_assets_margin

    async def api_restrictions(self) -> ApiRestrictions:
        """The key's permissions (`/sapi/v1/account/apiRestrictions`: use a client on the spot host)."""
        result: ApiRestrictions = await self._get(
            ApiRestrictions, "/sapi/v1/account/apiRestrictions", weight=1, security="SIGNED"
        )
        return result

    async def set_position_mode(self, *, hedge: bool) -> None:
        """Set one-way (`hedge=False`) or hedge mode; "No need to change" (-4059) is success."""
        try:
            await self._request(
                "POST", "/fapi/v1/positionSide/dual", _params(dualSidePosition=hedge), security="SIGNED"
            )
        except BinanceError as exc:
            if exc.code != _NO_NEED_TO_CHANGE_POSITION_SIDE:
                raise

    async def set_leverage(self, symbol: str, leverage: int) -> LeverageResult:
        body = await self._request(
            "POST", "/fapi/v1/leverage", _params(symbol=symbol, leverage=leverage), security="SIGNED"
        )
        return decode_payload(LeverageResult, body, endpoint="POST /fapi/v1/leverage")

    async def set_margin_type(self, symbol: str, margin_type: Literal["ISOLATED", "CROSSED"]) -> None:
        """Set the margin type; "No need to change margin type" (-4046) is success."""
        try:
            await self._request(
                "POST",
                "/fapi/v1/marginType",
                _params(symbol=symbol, marginType=margin_type),
                security="SIGNED",
            )
        except BinanceError as exc:
            if exc.code != _NO_NEED_TO_CHANGE_MARGIN_TYPE:
                raise

    async def leverage_brackets(self, symbol: str | None = None) -> list[LeverageBracket]:
        path = "/fapi/v1/leverageBracket"
        if symbol is None:
            rows: list[LeverageBracket] = await self._get(list[LeverageBracket], path, security="SIGNED")
            return rows
        body = await self._request("GET", path, _params(symbol=symbol), security="SIGNED")
        if body.lstrip().startswith(b"["):
            return decode_payload(list[LeverageBracket], body, endpoint=f"GET {path}")
        return [decode_payload(LeverageBracket, body, endpoint=f"GET {path}")]

    async def income(
        self,
        *,
        symbol: str | None = None,
        income_type: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
    ) -> list[IncomeRow]:
        rows: list[IncomeRow] = await self._get(
            list[IncomeRow],
            "/fapi/v1/income",
            _params(symbol=symbol, incomeType=income_type, startTime=start_ms, endTime=end_ms, limit=limit),
            weight=30,
            security="SIGNED",
        )
        return rows

    async def user_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        from_id: int | None = None,
        limit: int = 1000,
    ) -> list[UserTrade]:
        rows: list[UserTrade] = await self._get(
            list[UserTrade],
            "/fapi/v1/userTrades",
            _params(
                symbol=symbol,
                orderId=order_id,
                startTime=start_ms,
                endTime=end_ms,
                fromId=from_id,
                limit=limit,
            ),
            weight=5,
            security="SIGNED",
        )
        return rows

    # ------------------------------------------------------------ regular orders

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        rows: list[Order] = await self._get(
            list[Order],
            "/fapi/v1/openOrders",
            _params(symbol=symbol),
            weight=1 if symbol else 40,
            security="SIGNED",
        )
        return rows

    async def query_order(
        self, symbol: str, *, orig_client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        if orig_client_order_id is None and order_id is None:
            raise ValueError("query_order: give orig_client_order_id or order_id")
        result: Order = await self._get(
            Order,
            "/fapi/v1/order",
            _params(symbol=symbol, origClientOrderId=orig_client_order_id, orderId=order_id),
            security="SIGNED",
            client_id=orig_client_order_id,
        )
        return result

    async def place_order(
        self,
        *,
        symbol: str,
        side: Literal["BUY", "SELL"],
        order_type: Literal["LIMIT", "MARKET"],
        client_order_id: str,
        quantity: Decimal,
        price: Decimal | None = None,
        time_in_force: str | None = None,
        reduce_only: bool | None = None,
        position_side: str | None = None,
        resp_type: Literal["ACK", "RESULT"] = "ACK",
    ) -> Order:
        """POST /fapi/v1/order once. An unknown outcome raises `UnknownOrderStatus`; see
        `place_order_resolved` for the resolving variant."""
        if order_type == "LIMIT" and (price is None or time_in_force is None):
            raise ValueError(f"place_order: LIMIT {client_order_id} needs price and time_in_force")
        params = _params(
            symbol=symbol,
            side=side,
            type=order_type,
            quantity=quantity,
            price=price,
            timeInForce=time_in_force,
            reduceOnly=reduce_only,
            positionSide=position_side,
            newClientOrderId=client_order_id,
            newOrderRespType=resp_type,
        )
        body = await self._request(
            "POST",
            "/fapi/v1/order",
            params,
            weight=0,
            orders=1,
            security="SIGNED",
            client_id=client_order_id,
            placement=True,
        )
        return decode_payload(Order, body, endpoint="POST /fapi/v1/order")

    async def place_order_resolved(self, **kw: Any) -> Order:
        """`place_order`, resolving an unknown outcome by `origClientOrderId` before any re-send."""
        symbol: str = kw["symbol"]
        cid: str = kw["client_order_id"]
        order: Order = await self._resolve_placement(
            place=lambda: self.place_order(**kw),
            query=lambda: self.query_order(symbol, orig_client_order_id=cid),
            client_id=cid,
        )
        return order

    async def cancel_order(
        self, symbol: str, *, orig_client_order_id: str | None = None, order_id: int | None = None
    ) -> Order | None:
        """Cancel one order. `None` when the order is already gone (-2011/-2013): a success."""
        if orig_client_order_id is None and order_id is None:
            raise ValueError("cancel_order: give orig_client_order_id or order_id")
        try:
            body = await self._request(
                "DELETE",
                "/fapi/v1/order",
                _params(symbol=symbol, origClientOrderId=orig_client_order_id, orderId=order_id),
                security="SIGNED",
                client_id=orig_client_order_id,
            )
        except UnknownOrder:
            log.info("binance_cancel_order_gone", symbol=symbol, client_id=orig_client_order_id)
            return None
        return decode_payload(Order, body, endpoint="DELETE /fapi/v1/order")

    async def cancel_all_orders(self, symbol: str) -> None:
        body = await self._request(
            "DELETE", "/fapi/v1/allOpenOrders", _params(symbol=symbol), security="SIGNED"
        )
        decode_payload(CodeMsg, body, endpoint="DELETE /fapi/v1/allOpenOrders")

    # ------------------------------------------------------------ algo (conditional) orders

    async def place_algo_order(
        self,
        *,
        symbol: str,
        side: Literal["BUY", "SELL"],
        order_type: Literal[
            "STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"
        ],
        client_algo_id: str,
        trigger_price: Decimal | None = None,
        quantity: Decimal | None = None,
        price: Decimal | None = None,
        working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] | None = None,
        close_position: bool | None = None,
        reduce_only: bool | None = None,
        price_protect: bool | None = None,
        position_side: str | None = None,
        time_in_force: str | None = None,
        activate_price: Decimal | None = None,
        callback_rate: Decimal | None = None,
    ) -> AlgoOrder:
        """POST /fapi/v1/algoOrder (algoType CONDITIONAL) once."""
        if close_position and (quantity is not None or reduce_only):
            raise ValueError(
                f"place_algo_order {client_algo_id}: closePosition excludes quantity and reduceOnly"
            )
        if order_type != "TRAILING_STOP_MARKET" and trigger_price is None:
            raise ValueError(f"place_algo_order {client_algo_id}: {order_type} needs trigger_price")
        params = _params(
            algoType="CONDITIONAL",
            symbol=symbol,
            side=side,
            type=order_type,
            positionSide=position_side,
            timeInForce=time_in_force,
            quantity=quantity,
            price=price,
            triggerPrice=trigger_price,
            workingType=working_type,
            closePosition=close_position,
            priceProtect=price_protect,
            reduceOnly=reduce_only,
            activatePrice=activate_price,
            callbackRate=callback_rate,
            clientAlgoId=client_algo_id,
        )
        body = await self._request(
            "POST",
            "/fapi/v1/algoOrder",
            params,
            weight=0,
            orders=1,
            security="SIGNED",
            client_id=client_algo_id,
            placement=True,
        )
        return decode_payload(AlgoOrder, body, endpoint="POST /fapi/v1/algoOrder")

    async def place_algo_order_resolved(self, **kw: Any) -> AlgoOrder:
        """`place_algo_order`, resolving an unknown outcome by `clientAlgoId` before any re-send."""
        cid: str = kw["client_algo_id"]
        algo: AlgoOrder = await self._resolve_placement(
            place=lambda: self.place_algo_order(**kw),
            query=lambda: self.query_algo_order(client_algo_id=cid),
            client_id=cid,
        )
        return algo

    async def query_algo_order(
        self, *, client_algo_id: str | None = None, algo_id: int | None = None
    ) -> AlgoOrder:
        if client_algo_id is None and algo_id is None:
            raise ValueError("query_algo_order: give client_algo_id or algo_id")
        result: AlgoOrder = await self._get(
            AlgoOrder,
            "/fapi/v1/algoOrder",
            _params(clientAlgoId=client_algo_id, algoId=algo_id),
            security="SIGNED",
            client_id=client_algo_id,
        )
        return result

    async def open_algo_orders(self, symbol: str | None = None) -> list[AlgoOrder]:
        rows: list[AlgoOrder] = await self._get(
            list[AlgoOrder],
            "/fapi/v1/openAlgoOrders",
            _params(symbol=symbol),
            weight=1 if symbol else 40,
            security="SIGNED",
        )
        return rows

    async def cancel_algo_order(
        self, *, client_algo_id: str | None = None, algo_id: int | None = None
    ) -> AlgoCancelResult | None:
        """Cancel one algo order; `None` when it is already gone (a success)."""
        if client_algo_id is None and algo_id is None:
            raise ValueError("cancel_algo_order: give client_algo_id or algo_id")
        try:
            body = await self._request(
                "DELETE",
                "/fapi/v1/algoOrder",
                _params(clientAlgoId=client_algo_id, algoId=algo_id),
                security="SIGNED",
                client_id=client_algo_id,
            )
        except UnknownOrder:
            log.info("binance_cancel_algo_gone", client_id=client_algo_id)
            return None
        return decode_payload(AlgoCancelResult, body, endpoint="DELETE /fapi/v1/algoOrder")

    async def cancel_all_algo_orders(self, symbol: str) -> None:
        body = await self._request(
            "DELETE", "/fapi/v1/algoOpenOrders", _params(symbol=symbol), security="SIGNED"
        )
        decode_payload(CodeMsg, body, endpoint="DELETE /fapi/v1/algoOpenOrders")

    # ------------------------------------------------------------ listenKey (API key only)

    async def create_listen_key(self) -> str:
        body = await self._request("POST", "/fapi/v1/listenKey", security="KEY")
        return decode_payload(ListenKeyResponse, body, endpoint="POST /fapi/v1/listenKey").listen_key

    async def keepalive_listen_key(self) -> None:
        """Extend the key by 60 min; raises `ListenKeyExpired` (-1125) when the key is gone."""
        await self._request("PUT", "/fapi/v1/listenKey", security="KEY")

    async def close_listen_key(self) -> None:
        with contextlib.suppress(ListenKeyExpired):
            await self._request("DELETE", "/fapi/v1/listenKey", security="KEY")

    # ------------------------------------------------------------ resolution of unknown outcomes

    async def _resolve_placement(
        self,
        *,
        place: Callable[[], Any],
        query: Callable[[], Any],
        client_id: str,
    ) -> Any:
        """Place; on an unknown outcome query the id; re-send (same id) only when proven absent."""
        for attempt in range(1, self._cfg.max_retry_attempts + 1):
            try:
                return await place()
            except DuplicateClientId:
                log.info("binance_placement_duplicate", client_id=client_id)
                return await query()
            except Throttled:
                raise
            except (UnknownOrderStatus, ServerError, TransportError) as exc:
                log.warning("binance_placement_unknown", client_id=client_id, attempt=attempt, error=str(exc))
            # Wait out recvWindow before asking: a request still in flight that arrives later than
            # timestamp + recvWindow is refused by Binance, so "not found" after this is final and a
            # re-send with the same id cannot make a second order.
            await trio.sleep(max(self._cfg.retry_wait_initial_seconds, self._cfg.recv_window_ms / 1000))
            try:
                found = await query()
            except UnknownOrder:
                log.warning("binance_placement_absent_resend", client_id=client_id, attempt=attempt)
                continue
            log.info("binance_placement_resolved", client_id=client_id, attempt=attempt)
            return found
        raise UnknownOrderStatus(
            f"placement outcome still unknown after {self._cfg.max_retry_attempts} attempts",
            client_id=client_id,
            endpoint="order placement",
        )

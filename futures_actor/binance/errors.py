"""The Binance error tree and the mapping from an HTTP response to it.

Every failure of the Binance client is a `BinanceError` carrying the Binance `code` (or `None`),
the exchange `message`, the `endpoint` (e.g. `POST /fapi/v1/order`), the `client_id` of the order
concerned (if any) and the HTTP status. Callers decide by type, never by parsing messages:

    BinanceError
    ├── ApiError                      any other coded rejection (-1121 invalid symbol, ...)
    │   ├── TimestampOutOfWindow      -1021, -5028: resync the clock; the request was NOT executed
    │   ├── InvalidSignature          -1022
    │   ├── AuthError                 -2014, -2015, HTTP 401
    │   ├── ListenKeyExpired          -1125
    │   ├── UnknownOrder              -2011, -2013 (a cancel that finds no order is a success upstream)
    │   ├── DuplicateClientId         -4116 (the order with that client id exists)
    │   ├── StopTriggering            -4117 (the stop is being triggered: ask again shortly)
    │   └── OrderRejected             definite rejections of an order
    │       ├── InsufficientMargin    -2018, -2019
    │       ├── WouldTriggerImmediately -2021
    │       ├── ReduceOnlyRejected    -2022, -4118
    │       ├── MinNotional           -4164
    │       ├── Precision             -1111, -4003, -4014, -4023
    │       ├── PostOnlyRejected      -5022
    │       └── OrderTypeNotSupported -4120 (conditional types need the algo endpoints)
    ├── RateLimited                   HTTP 429 / -1003; `retry_after_s`
    ├── IpBanned                      HTTP 418, or -1003 "banned until <ms>"; `until_ms` (wall ms when
    │                                 the ban ends: the message's, or Retry-After if later)
    ├── UnknownOrderStatus            -1000, -1006, -1007, HTTP 503 "Unknown error", HTTP 408, a 5xx
    │                                 whose body is not JSON (a proxy answered), timeouts on a
    │                                 placement: the order may exist; resolve by client id
    ├── ServerError                   HTTP 5xx, -1001, 503 "Service Unavailable": failed, retry
    │   └── Throttled                 -1008 system-level protection: failed, back off
    ├── TransportError                connection failure or timeout of a request that is not a placement
    └── PayloadError                  a response or event did not fit its model (`field` named)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = [
    "ApiError",
    "AuthError",
    "BinanceError",
    "DuplicateClientId",
    "InsufficientMargin",
    "InvalidSignature",
    "IpBanned",
    "ListenKeyExpired",
    "MinNotional",
    "OrderRejected",
    "OrderTypeNotSupported",
    "PayloadError",
    "PostOnlyRejected",
    "Precision",
    "RateLimited",
    "ReduceOnlyRejected",
    "ServerError",
    "StopTriggering",
    "Throttled",
    "TimestampOutOfWindow",
    "TransportError",
    "UnknownOrder",
    "UnknownOrderStatus",
    "WouldTriggerImmediately",
    "error_from_response",
]

# Protocol facts: Binance's advice when a ban or 429 carries no Retry-After (reference §6.1).
DEFAULT_RETRY_AFTER_S = 60.0
_UNKNOWN_503_MARKER = "unknown error"
_UNAVAILABLE_MARKER = "service unavailable"  # documented as a 100 % failure, JSON or not
_BANNED_UNTIL = re.compile(r"banned until (\d{10,16})")
_BACKEND_TIMEOUT = 408  # "timeout waiting for the backend": the outcome is unknown


class BinanceError(Exception):
    """Base of every client failure. `code` is Binance's error code, `message` its text."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        endpoint: str = "",
        client_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.endpoint = endpoint
        self.client_id = client_id
        self.http_status = http_status
        parts = [f"{endpoint or '<no endpoint>'}:"]
        if code is not None:
            parts.append(f"code {code}")
        if http_status is not None:
            parts.append(f"(HTTP {http_status})")
        parts.append(message)
        if client_id:
            parts.append(f"[client id {client_id}]")
        super().__init__(" ".join(parts))


class ApiError(BinanceError):
    """A coded rejection by Binance not covered by a more specific class."""


class TimestampOutOfWindow(ApiError):
    """-1021 / -5028: the request timestamp was outside recvWindow. Not executed; resync and retry."""


class InvalidSignature(ApiError):
    """-1022: the signature did not verify (a bug, or a wrong secret)."""


class AuthError(ApiError):
    """-2014 / -2015 / HTTP 401: the API key is invalid or lacks permission."""


class ListenKeyExpired(ApiError):
    """-1125: the listenKey no longer exists; create a new one."""


class UnknownOrder(ApiError):
    """-2011 / -2013: no such order (already closed, or never placed)."""


class DuplicateClientId(ApiError):
    """-4116: an open order with this client id exists; the earlier placement succeeded."""


class OrderRejected(ApiError):
    """A definite rejection of an order: it was not placed."""


class InsufficientMargin(OrderRejected):
    """-2018 / -2019."""


class WouldTriggerImmediately(OrderRejected):
    """-2021: the trigger price is already crossed."""


class ReduceOnlyRejected(OrderRejected):
    """-2022 / -4118."""


class MinNotional(OrderRejected):
    """-4164: notional below the symbol's minimum (reduce-only orders are exempt)."""


class Precision(OrderRejected):
    """-1111 / -4003 / -4014 / -4023: price or quantity not on tick/step, or not positive."""


class PostOnlyRejected(OrderRejected):
    """-5022: a post-only (GTX) order would have taken liquidity."""


class OrderTypeNotSupported(OrderRejected):
    """-4120: conditional types must go through the algo-order endpoints."""


class StopTriggering(ApiError):
    """-4117: the stop is in its triggering process; ask again shortly (its child order is being placed)."""


class RateLimited(BinanceError):
    """HTTP 429 / -1003: request weight exceeded. Wait `retry_after_s` before any request."""

    def __init__(self, message: str, *, retry_after_s: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class IpBanned(BinanceError):
    """HTTP 418: the IP is banned until `until_ms` (wall ms); no request may be sent before."""

    def __init__(self, message: str, *, until_ms: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.until_ms = until_ms


class UnknownOrderStatus(BinanceError):
    """The outcome of a request is unknown (-1000/-1006/-1007, 503 "Unknown error", timeout).

    For an order placement the order may exist: resolve by querying its client id, never re-send.
    """


class ServerError(BinanceError):
    """HTTP 5xx or -1001: the request failed on Binance's side; safe to retry idempotent requests."""


class Throttled(ServerError):
    """-1008: throttled by system-level protection; failed, back off."""


class TransportError(BinanceError):
    """The request did not complete (connection error, timeout) and was not an order placement."""


class PayloadError(BinanceError):
    """A response or event did not fit its model. `field` names the offending path."""

    def __init__(self, message: str, *, field: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.field = field


_BY_CODE: dict[int, type[BinanceError]] = {
    -1000: UnknownOrderStatus,
    -1001: ServerError,
    -1003: RateLimited,
    -1006: UnknownOrderStatus,
    -1007: UnknownOrderStatus,
    -1008: Throttled,
    -1021: TimestampOutOfWindow,
    -5028: TimestampOutOfWindow,
    -1022: InvalidSignature,
    -2014: AuthError,
    -2015: AuthError,
    -1125: ListenKeyExpired,
    -2011: UnknownOrder,
    -2013: UnknownOrder,
    -4116: DuplicateClientId,
    -4117: StopTriggering,
    -2018: InsufficientMargin,
    -2019: InsufficientMargin,
    -2021: WouldTriggerImmediately,
    -2022: ReduceOnlyRejected,
    -4118: ReduceOnlyRejected,
    -4164: MinNotional,
    -1111: Precision,
    -4003: Precision,
    -4014: Precision,
    -4023: Precision,
    -5022: PostOnlyRejected,
    -4120: OrderTypeNotSupported,
}


class _ErrorBody(msgspec.Struct):
    code: int | str | None = None
    msg: str = ""


_error_body_decoder = msgspec.json.Decoder(_ErrorBody)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    endpoint: str,
    client_id: str | None = None,
    now_ms: int = 0,
) -> BinanceError:
    """Map a non-2xx response (or a 2xx body carrying a negative `code`) to its exception."""
    code: int | None = None
    message = ""
    is_json = True
    try:
        parsed = _error_body_decoder.decode(body)
        if parsed.code is not None:
            code = int(parsed.code)
        message = parsed.msg
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        is_json = False
        message = body[:200].decode("utf-8", "replace")
    kw: dict[str, Any] = {"code": code, "endpoint": endpoint, "client_id": client_id, "http_status": status}
    retry = _retry_after(headers)
    banned = _BANNED_UNTIL.search(message) if code == -1003 or status in (418, 429) else None
    if status == 418 or banned is not None:
        until = int(banned.group(1)) if banned is not None else None
        by_header = None if retry is None else now_ms + int(retry * 1000)
        if until is None and by_header is None:
            by_header = now_ms + int(DEFAULT_RETRY_AFTER_S * 1000)
        return IpBanned(
            message or "IP banned", until_ms=max(x for x in (until, by_header) if x is not None), **kw
        )
    if status == 429:
        return RateLimited(
            message or "rate limited", retry_after_s=DEFAULT_RETRY_AFTER_S if retry is None else retry, **kw
        )
    if status == _BACKEND_TIMEOUT:
        return UnknownOrderStatus(message or "HTTP 408: timeout waiting for the backend", **kw)
    if status >= 500 and not is_json and _UNAVAILABLE_MARKER not in message.lower():
        return UnknownOrderStatus(message or f"HTTP {status} without a Binance body", **kw)
    if code is not None and code in _BY_CODE:
        cls = _BY_CODE[code]
        if cls is RateLimited:
            return RateLimited(message, retry_after_s=DEFAULT_RETRY_AFTER_S if retry is None else retry, **kw)
        return cls(message, **kw)
    if status == 401:
        return AuthError(message or "unauthorized", **kw)
    if status == 503 and _UNKNOWN_503_MARKER in message.lower():
        return UnknownOrderStatus(message, **kw)
    if status >= 500:
        return ServerError(message or f"HTTP {status}", **kw)
    return ApiError(message or f"HTTP {status}", **kw)

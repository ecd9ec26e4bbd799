"""Binance's request-weight and order-count limits, as the fake exchange enforces them.

This module owns the per-endpoint weight table (reference §3, §4, §6.3) and the counters of one
IP and one account on the exchange clock: request weight per server minute
(`X-MBX-USED-WEIGHT-1M`), orders per 10 s and per minute (`X-MBX-ORDER-COUNT-10S` / `-1M`).

What a client sees, as on Binance:
- every response carries the weight header; order placements carry the order-count headers;
- a request that would exceed the weight limit gets HTTP 429 / -1003 with `Retry-After` (seconds to
  the next minute); an order past an order-count limit gets HTTP 429 / -1015;
- a request sent while a 429's `Retry-After` is still running is a repeated violation: the IP is
  banned (HTTP 418 / -1003 "banned until <ms>"), for 2 minutes the first time, doubling with each
  ban up to 3 days; every request during a ban gets the same 418.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

__all__ = ["LimitVerdict", "VenueLimits", "request_weight"]

# Protocol facts (exchangeInfo rateLimits, reference §6.3).
WEIGHT_LIMIT_PER_MINUTE = 2400
ORDER_LIMIT_PER_10S = 300
ORDER_LIMIT_PER_MINUTE = 1200
FIRST_BAN_MS = 2 * 60_000
MAX_BAN_MS = 3 * 86_400_000
_MINUTE_MS = 60_000
_TEN_S_MS = 10_000
_DEFAULT_WEIGHT = 1

# (method, path) → (weight with a symbol, weight without one). Placements weigh 0 and count orders.
_WEIGHTS: dict[tuple[str, str], tuple[int, int]] = {
    ("GET", "/fapi/v1/ticker/24hr"): (1, 40),
    ("GET", "/fapi/v1/ticker/bookTicker"): (2, 5),
    ("GET", "/fapi/v1/premiumIndex"): (1, 10),
    ("GET", "/fapi/v2/ticker/price"): (1, 2),
    ("GET", "/fapi/v1/openOrders"): (1, 40),
    ("GET", "/fapi/v1/openAlgoOrders"): (1, 40),
    ("GET", "/fapi/v1/fundingInfo"): (0, 0),
    ("GET", "/fapi/v1/allOrders"): (5, 5),
    ("GET", "/fapi/v1/allAlgoOrders"): (5, 5),
    ("GET", "/fapi/v1/positionSide/dual"): (30, 30),
    ("GET", "/fapi/v1/multiAssetsMargin"): (30, 30),
    ("GET", "/fapi/v2/positionRisk"): (5, 5),
    ("GET", "/fapi/v3/positionRisk"): (5, 5),
    ("GET", "/fapi/v2/balance"): (5, 5),
    ("GET", "/fapi/v3/balance"): (5, 5),
    ("GET", "/fapi/v2/account"): (5, 5),
    ("GET", "/fapi/v3/account"): (5, 5),
    ("GET", "/fapi/v1/income"): (30, 30),
    ("GET", "/fapi/v1/userTrades"): (5, 5),
    ("GET", "/fapi/v1/commissionRate"): (20, 20),
    ("GET", "/fapi/v1/symbolConfig"): (5, 5),
    ("GET", "/fapi/v1/accountConfig"): (5, 5),
    ("POST", "/fapi/v1/order"): (0, 0),
    ("PUT", "/fapi/v1/order"): (0, 0),
    ("POST", "/fapi/v1/algoOrder"): (0, 0),
    ("POST", "/fapi/v1/batchOrders"): (5, 5),
    ("POST", "/fapi/v1/countdownCancelAll"): (10, 10),
}
# (method, path) → (orders counted in the 10 s window, in the 1 min window).
_ORDER_COUNTS: dict[tuple[str, str], tuple[int, int]] = {
    ("POST", "/fapi/v1/order"): (1, 1),
    ("PUT", "/fapi/v1/order"): (1, 1),
    ("POST", "/fapi/v1/algoOrder"): (1, 1),
    ("POST", "/fapi/v1/batchOrders"): (5, 1),
}


def _kline_weight(limit: int) -> int:
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def _depth_weight(limit: int) -> int:
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except ValueError:
        return default


def request_weight(method: str, path: str, params: Mapping[str, str]) -> int:
    """The IP weight Binance documents for one request."""
    if path in ("/fapi/v1/klines", "/fapi/v1/markPriceKlines", "/fapi/v1/indexPriceKlines"):
        return _kline_weight(_int_param(params, "limit", 500))
    if path == "/fapi/v1/depth":
        return _depth_weight(_int_param(params, "limit", 500))
    pair = _WEIGHTS.get((method, path))
    if pair is None:
        return _DEFAULT_WEIGHT
    return pair[0] if params.get("symbol") else pair[1]


class LimitVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """A refusal: the HTTP status, the Binance error body and the headers to send."""

    status: int
    code: int
    msg: str
    headers: dict[str, str]


class VenueLimits:
    """The counters of one IP (weight) and one account (orders) on the exchange clock."""

    def __init__(
        self,
        *,
        weight_limit: int = WEIGHT_LIMIT_PER_MINUTE,
        orders_per_10s: int = ORDER_LIMIT_PER_10S,
        orders_per_minute: int = ORDER_LIMIT_PER_MINUTE,
        enforced: bool = True,
    ) -> None:
        self.weight_limit = weight_limit
        self.orders_per_10s = orders_per_10s
        self.orders_per_minute = orders_per_minute
        self.enforced = enforced
        self._minute = -1
        self._ten_s = -1
        self.used_weight = 0
        self.orders_10s = 0
        self.orders_1m = 0
        self.retry_at_ms = 0  # a request before this, after a 429, is a repeated violation
        self.banned_until_ms = 0
        self.bans = 0

    def _roll(self, now_ms: int) -> None:
        minute = now_ms // _MINUTE_MS
        if minute != self._minute:
            self._minute, self.used_weight, self.orders_1m = minute, 0, 0
        ten_s = now_ms // _TEN_S_MS
        if ten_s != self._ten_s:
            self._ten_s, self.orders_10s = ten_s, 0

    def headers(self, method: str, path: str) -> dict[str, str]:
        h = {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}
        if (method, path) in _ORDER_COUNTS:
            h["X-MBX-ORDER-COUNT-10S"] = str(self.orders_10s)
            h["X-MBX-ORDER-COUNT-1M"] = str(self.orders_1m)
        return h

    def ban(self, now_ms: int, until_ms: int | None = None) -> LimitVerdict:
        """Ban the IP (until `until_ms`, or for the next ban length) and answer the 418."""
        if until_ms is None:
            until_ms = now_ms + min(MAX_BAN_MS, FIRST_BAN_MS * 2**self.bans)
            self.bans += 1
        self.banned_until_ms = max(self.banned_until_ms, until_ms)
        return self._banned(now_ms)

    def _banned(self, now_ms: int) -> LimitVerdict:
        until = self.banned_until_ms
        return LimitVerdict(
            status=418,
            code=-1003,
            msg=f"Way too many requests; IP(127.0.0.1) banned until {until}. "
            "Please use the websocket for live updates to avoid bans.",
            headers={"Retry-After": str(max(1, math.ceil((until - now_ms) / 1000)))},
        )

    def admit(self, now_ms: int, method: str, path: str, params: Mapping[str, str]) -> LimitVerdict | None:
        """Count the request; `None` when it may be served, else the refusal to send."""
        self._roll(now_ms)
        if now_ms < self.banned_until_ms:
            return self._banned(now_ms)
        weight = request_weight(method, path, params)
        to_next_minute_s = max(1, math.ceil(((self._minute + 1) * _MINUTE_MS - now_ms) / 1000))
        if self.enforced and now_ms < self.retry_at_ms:
            return self.ban(now_ms)
        if self.enforced and self.used_weight + weight > self.weight_limit:
            self.retry_at_ms = now_ms + to_next_minute_s * 1000
            return LimitVerdict(
                status=429,
                code=-1003,
                msg=f"Too many requests; current limit of IP(127.0.0.1) is {self.weight_limit} requests "
                "per minute. Please use the websocket for live updates to avoid polling the API.",
                headers={"Retry-After": str(to_next_minute_s), **self.headers(method, path)},
            )
        self.used_weight += weight
        n10, n60 = _ORDER_COUNTS.get((method, path), (0, 0))
        if n10 or n60:
            over = (
                ("TEN_SECONDS", self.orders_per_10s)
                if self.orders_10s + n10 > self.orders_per_10s
                else ("MINUTE", self.orders_per_minute)
                if self.orders_1m + n60 > self.orders_per_minute
                else None
            )
            if self.enforced and over is not None:
                window, limit = over
                return LimitVerdict(
                    status=429,
                    code=-1015,
                    msg=f"Too many new orders; current limit is {limit} orders per {window}.",
                    headers=self.headers(method, path),
                )
            self.orders_10s += n10
            self.orders_1m += n60
        return None

"""Client-side pacing of Binance REST requests: request weight, order counts, 429 and 418.

Binance counts request weight per IP in fixed server-time minutes (`X-MBX-USED-WEIGHT-1M`) and
orders per account in 10 s and 1 min windows (`X-MBX-ORDER-COUNT-10S` / `-1M`). This module owns
our view of those counters and makes every request `await acquire(weight)` first: when the
projected weight would exceed `weight_limit_per_minute × weight_budget_pct` in the current minute,
or an order would exceed `order_limit_per_10s` / `order_limit_per_minute` (same fraction) in its
window, it sleeps (through trio, so a mock clock jumps) until the window rolls over. The server's
counters (`X-MBX-USED-WEIGHT-1M`, `X-MBX-ORDER-COUNT-10S`, `X-MBX-ORDER-COUNT-1M`) raise ours when
they are higher (other sessions on the same IP or account). Windows are kept on
trio's clock, anchored once to the server minute through the injected wall-time callable, so the
pacing works under `MockClock` whether or not the wall clock follows trio.

A 429 blocks every request for `Retry-After`; a 418 (IP ban) blocks every request until the ban
ends and is reported through `on_ban(until_ms)` (the health actor's hook).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import structlog
import trio

from futures_actor.core.config import ExchangeConfig

__all__ = ["RateLimiter"]

log = structlog.get_logger(__name__)

_MINUTE_S = 60.0
_TEN_S = 10.0
_MS = 1000.0
WEIGHT_HEADER = "x-mbx-used-weight-1m"
ORDER_10S_HEADER = "x-mbx-order-count-10s"
ORDER_1M_HEADER = "x-mbx-order-count-1m"


class RateLimiter:
    """Weight and order pacing shared by every request of one process (one IP)."""

    def __init__(
        self,
        *,
        cfg: ExchangeConfig,
        now_ms: Callable[[], int],
        on_ban: Callable[[int], None] | None = None,
    ) -> None:
        self._budget = max(1, math.floor(cfg.weight_limit_per_minute * cfg.weight_budget_pct))
        self._order_budget = max(1, math.floor(cfg.order_limit_per_10s * cfg.weight_budget_pct))
        self._order_minute_budget = max(1, math.floor(cfg.order_limit_per_minute * cfg.weight_budget_pct))
        self._now_ms = now_ms
        self._on_ban = on_ban
        self._anchor: float | None = None  # trio time at which a server minute began
        self._window = -1
        self._used = 0
        self._order_window = -1
        self._orders = 0
        self._orders_minute = 0
        self._blocked_until = -math.inf  # trio time
        self._banned_until_ms = 0
        self.waits = 0  # how many times a request had to wait for the budget (for tests and stats)
        self._logged_wait: tuple[str, float] | None = None  # the last wait logged: (budget, until)

    @property
    def weight_budget(self) -> int:
        return self._budget

    @property
    def used_weight(self) -> int:
        self._roll()
        return self._used

    @property
    def used_orders_10s(self) -> int:
        self._roll()
        return self._orders

    @property
    def used_orders_1m(self) -> int:
        self._roll()
        return self._orders_minute

    @property
    def banned_until_ms(self) -> int:
        return self._banned_until_ms

    def _elapsed(self) -> float:
        now = trio.current_time()
        if self._anchor is None:
            self._anchor = now - (self._now_ms() % int(_MINUTE_S * _MS)) / _MS
        return now - self._anchor

    def _roll(self) -> None:
        elapsed = self._elapsed()
        window = math.floor(elapsed / _MINUTE_S)
        if window != self._window:
            self._window, self._used, self._orders_minute = window, 0, 0
        order_window = math.floor(elapsed / _TEN_S)
        if order_window != self._order_window:
            self._order_window, self._orders = order_window, 0

    async def acquire(self, weight: int, *, orders: int = 0) -> None:
        """Wait until a request of `weight` (placing `orders` orders) fits the budgets, then count it."""
        weight = min(weight, self._budget)
        while True:
            now = trio.current_time()
            if now < self._blocked_until:
                await trio.sleep_until(self._blocked_until)
                continue
            self._roll()
            elapsed = self._elapsed()
            if self._used + weight > self._budget:
                await self._wait("weight_1m", self._used, self._budget, (self._window + 1) * _MINUTE_S)
                continue
            if orders and self._orders_minute + orders > self._order_minute_budget:
                await self._wait(
                    "orders_1m",
                    self._orders_minute,
                    self._order_minute_budget,
                    (self._window + 1) * _MINUTE_S,
                )
                continue
            if orders and self._orders + orders > self._order_budget:
                await self._wait(
                    "orders_10s",
                    self._orders,
                    self._order_budget,
                    (math.floor(elapsed / _TEN_S) + 1) * _TEN_S,
                )
                continue
            self._used += weight
            self._orders += orders
            self._orders_minute += orders
            return

    async def _wait(self, budget: str, used: int, limit: int, until_offset_s: float) -> None:
        """Sleep until the window of `budget` rolls over. Said once per window: a request that waits
        for up to a minute without a word looks like a hung bot."""
        self.waits += 1
        until = self._anchor_time(until_offset_s)
        if self._logged_wait != (budget, until):
            self._logged_wait = (budget, until)
            log.warning(
                "binance_budget_wait",
                budget=budget,
                used=used,
                limit=limit,
                wait_s=round(max(0.0, until - trio.current_time()), 3),
            )
        await trio.sleep_until(until)

    def _anchor_time(self, offset_s: float) -> float:
        assert self._anchor is not None
        return self._anchor + offset_s

    def reanchor(self) -> None:
        """Re-align the minute windows to the server clock (after a server-time sync).

        The current count is kept (conservative): only the window boundaries move.
        """
        if self._anchor is None:
            return
        self._anchor = None
        elapsed = self._elapsed()
        self._window = math.floor(elapsed / _MINUTE_S)
        self._order_window = math.floor(elapsed / _TEN_S)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take the server's counters from a response (they include concurrent users of the IP)."""
        self._roll()
        used = _int_header(headers, WEIGHT_HEADER)
        if used is not None and used > self._used:
            self._used = used
        orders = _int_header(headers, ORDER_10S_HEADER)
        if orders is not None and orders > self._orders:
            self._orders = orders
        orders_minute = _int_header(headers, ORDER_1M_HEADER)
        if orders_minute is not None and orders_minute > self._orders_minute:
            self._orders_minute = orders_minute

    def note_rate_limited(self, retry_after_s: float) -> None:
        """After a 429: block every request for `retry_after_s` seconds."""
        until = trio.current_time() + retry_after_s
        self._blocked_until = max(self._blocked_until, until)
        log.warning("binance_rate_limited", retry_after_s=retry_after_s)

    def note_banned(self, until_ms: int) -> None:
        """After a 418: block every request until wall time `until_ms` and report the ban."""
        wait_s = max(0.0, (until_ms - self._now_ms()) / _MS)
        self._blocked_until = max(self._blocked_until, trio.current_time() + wait_s)
        self._banned_until_ms = max(self._banned_until_ms, until_ms)
        log.error("binance_ip_banned", until_ms=until_ms, wait_s=wait_s)
        if self._on_ban is not None:
            self._on_ban(until_ms)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None

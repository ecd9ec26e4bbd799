"""Fault injection for the fake exchange: what goes wrong, on which request, how many times.

This module owns the fault plan of one `SimExchange` (`exchange.faults`). Tests script failures
before the client acts; the exchange consults the plan on every request and WebSocket frame.
Faults are consumed in the order they were added; a fault limited to a path only matches that path.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "WS_MAX_CONNECTION_S",
    "WS_SERVER_PING_S",
    "Faults",
    "HttpFault",
    "LostResponseMode",
    "UserEventFault",
]

LostResponseMode = Literal["timeout", "503"]
# What can happen to a user-data event on its way (Binance neither replays nor orders across types).
UserEventFault = Literal["drop", "duplicate", "reorder"]
# Binance's 503 body when the request reached the engine but its outcome is unknown (reference §6.1).
UNKNOWN_503_MSG = "Unknown error, please check your request or try again later."
WS_SERVER_PING_S = 180.0  # Binance pings every WebSocket every 3 minutes
WS_MAX_CONNECTION_S = 86_400.0  # and cuts every connection at 24 hours


class HttpFault(msgspec.Struct, kw_only=True):
    path: str | None
    status: int
    times: int
    code: int | None = None
    msg: str = ""
    retry_after_s: int | None = None


class Faults:
    """The fault plan. Every method arms a fault; nothing fires until a matching request arrives."""

    def __init__(self) -> None:
        self.latency_s: float = 0.0
        self.http: list[HttpFault] = []
        self.timestamp_error_count = 0
        self.lost_order_responses: list[LostResponseMode] = []
        self.ban_until_ms: int | None = None
        self.silent_routes: set[str] = set()
        self.drop_requests: list[str | None] = []
        self.user_event_faults: list[UserEventFault] = []
        self.ws_ping_interval_s: float | None = None
        self.ws_max_connection_s: float | None = None
        self._held: dict[str, Any] | None = None  # an event held back by "reorder"

    def set_latency(self, seconds: float) -> None:
        """Every REST response is delayed by `seconds` (trio time: jumps under a mock clock)."""
        self.latency_s = seconds

    def fail_next(
        self,
        path: str | None = None,
        *,
        status: int = 503,
        times: int = 1,
        code: int | None = None,
        msg: str = "Service Unavailable.",
    ) -> None:
        """The next `times` requests (to `path`, or any) fail with `status` before being executed."""
        self.http.append(HttpFault(path=path, status=status, times=times, code=code, msg=msg))

    def rate_limit_next(self, path: str | None = None, *, retry_after_s: int = 1, times: int = 1) -> None:
        """HTTP 429 / -1003 with a `Retry-After` header."""
        self.http.append(
            HttpFault(
                path=path,
                status=429,
                times=times,
                code=-1003,
                msg="Too many requests; current limit of IP is 2400 requests per minute. "
                "Please use the websocket for live updates to avoid polling the API.",
                retry_after_s=retry_after_s,
            )
        )

    def ban_until(self, until_ms: int) -> None:
        """HTTP 418 for every request until the exchange clock reaches `until_ms`."""
        self.ban_until_ms = until_ms

    def timestamp_errors(self, times: int) -> None:
        """The next `times` SIGNED requests are refused with -1021 (a clock-skew burst)."""
        self.timestamp_error_count += times

    def lose_response_of_next_order(self, mode: LostResponseMode = "timeout") -> None:
        """The next order placement (regular or algo) is EXECUTED but its response is lost:
        `timeout` -> the client gets a read timeout (loopback: the connection closes);
        `503` -> HTTP 503 "Unknown error ..." (execution status unknown)."""
        self.lost_order_responses.append(mode)

    def silence_ws(self, route: str) -> None:
        """Connections on `route` (`public`, `market`, `private`) stay open but get no more frames."""
        self.silent_routes.add(route)

    def unsilence_ws(self, route: str) -> None:
        self.silent_routes.discard(route)

    def server_pings(self, interval_s: float = WS_SERVER_PING_S) -> None:
        """WebSockets opened from now on are pinged every `interval_s`, as Binance does; one whose
        ping goes unanswered for as long is dropped."""
        self.ws_ping_interval_s = interval_s

    def cut_ws_after(self, seconds: float = WS_MAX_CONNECTION_S) -> None:
        """WebSockets opened from now on are closed by the server after `seconds` (Binance: 24 h)."""
        self.ws_max_connection_s = seconds

    def user_events(self, fault: UserEventFault, *, times: int = 1) -> None:
        """The next `times` user-data events are dropped, sent twice, or held back and sent after
        the event that follows them (reordered)."""
        if fault not in ("drop", "duplicate", "reorder"):
            raise ValueError(f"user event fault {fault!r}: expected drop, duplicate or reorder")
        self.user_event_faults.extend([fault] * times)

    def shape_user_event(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The events to deliver now for `payload` under the armed user-event faults."""
        out: list[dict[str, Any]] = []
        fault = self.user_event_faults.pop(0) if self.user_event_faults else None
        if fault == "drop":
            pass
        elif fault == "duplicate":
            out += [payload, payload]
        elif fault == "reorder" and self._held is None:
            self._held = payload
        else:
            out.append(payload)
        if self._held is not None and self._held is not payload:
            out.append(self._held)
            self._held = None
        return out

    def take_http(self, path: str) -> HttpFault | None:
        for fault in self.http:
            if fault.path is None or fault.path == path:
                fault.times -= 1
                if fault.times <= 0:
                    self.http.remove(fault)
                return fault
        return None

    def take_timestamp_error(self) -> bool:
        if self.timestamp_error_count > 0:
            self.timestamp_error_count -= 1
            return True
        return False

    def take_lost_response(self) -> LostResponseMode | None:
        return self.lost_order_responses.pop(0) if self.lost_order_responses else None

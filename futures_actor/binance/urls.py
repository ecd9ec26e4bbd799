"""Binance USDⓈ-M base URLs per environment, and the 2026 WebSocket route split.

This module owns the mapping environment → REST and WebSocket base URLs, and the route of every
stream kind (`/public` for book data, `/market` for klines and mark price, `/private` for the user
stream; the legacy route-less `/ws` and `/stream` paths silently deliver nothing for market
streams since 2026-04-23). A non-empty `exchange.rest_base_url` / `exchange.ws_base_url` in the
config overrides the official host (the fake exchange, a proxy).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

import msgspec

from futures_actor.core.config import ExchangeConfig

__all__ = [
    "BinanceUrls",
    "Environment",
    "Route",
    "combined_stream_url",
    "resolve_urls",
    "route_for_stream",
    "user_stream_url",
]

Environment = Literal["production", "testnet", "demo"]
Route = Literal["public", "market", "private"]

_OFFICIAL: dict[str, tuple[str, str]] = {
    "production": ("https://fapi.binance.com", "wss://fstream.binance.com"),
    "testnet": ("https://demo-fapi.binance.com", "wss://fstream.binancefuture.com"),
    "demo": ("https://demo-fapi.binance.com", "wss://demo-fstream.binance.com"),
}

# Stream-name suffixes served on the `/public` route (high-frequency book data); all else is `/market`.
_PUBLIC_MARKERS = ("@bookTicker", "!bookTicker", "@depth", "@rpiDepth")


class BinanceUrls(msgspec.Struct, frozen=True, kw_only=True):
    rest: str
    ws: str


def resolve_urls(cfg: ExchangeConfig) -> BinanceUrls:
    """The REST and WS base URLs for `cfg.environment`, overridden by the configured base URLs."""
    rest, ws = _OFFICIAL[cfg.environment]
    return BinanceUrls(
        rest=(cfg.rest_base_url or rest).rstrip("/"),
        ws=(cfg.ws_base_url or ws).rstrip("/"),
    )


def route_for_stream(stream: str) -> Route:
    """`public` for book ticker and depth streams, `market` for everything else we subscribe to."""
    return "public" if any(m in stream for m in _PUBLIC_MARKERS) else "market"


def combined_stream_url(ws_base: str, route: Route, streams: list[str]) -> str:
    """`wss://host/<route>/stream?streams=a/b` (combined mode: frames wrapped as {stream, data})."""
    if not streams:
        raise ValueError("combined_stream_url: streams is empty; expected at least one stream name")
    for s in streams:
        if route_for_stream(s) != route and route != "private":
            raise ValueError(f"stream {s!r} does not belong on route /{route}")
    return f"{ws_base.rstrip('/')}/{route}/stream?streams={'/'.join(streams)}"


def user_stream_url(ws_base: str, listen_key: str) -> str:
    """`wss://host/private/ws/<listenKey>` (no `events=` filter, so `listenKeyExpired` arrives)."""
    return f"{ws_base.rstrip('/')}/private/ws/{quote(listen_key, safe='')}"

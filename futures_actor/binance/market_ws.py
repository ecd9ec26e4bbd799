"""Live market data over Binance combined streams, as typed in-process events.

`MarketStreams` owns the WebSocket connections for a set of stream names (`btcusdt@kline_5m`,
`btcusdt@markPrice`, `btcusdt@bookTicker`). Streams are grouped by route (2026 split: `/public`
for book data, `/market` for klines and mark price) and chunked into connections of at most
`exchange.ws_max_streams_per_connection`. Each connection:

- emits `StreamGap` right after every (re)connect, so the owner backfills over REST what may have
  been missed (nothing is assumed about the gap's length);
- pings every `exchange.ws_ping_interval_seconds`; no pong within the interval means a dead link;
- watches every stream for silence: `StreamStale` once a stream has been silent for
  `stale_after_seconds`; a connection whose streams are all stale is recycled;
- reconnects with exponential backoff and jitter (seeded `random.Random`), and makes a planned
  reconnect after `exchange.ws_planned_reconnect_hours`, before Binance's 24 h cut; the gap signal
  that follows it lets the owner backfill, and `KlineClosed` is de-duplicated per stream so an
  overlap never delivers a candle twice.

Broken frames (bad JSON, missing fields, NaN or negative prices, unknown events) are logged and
skipped, never a crash. Decoding is one msgspec call per frame with the decoder built once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from decimal import Decimal

import msgspec
import structlog
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from futures_actor.binance.models import COMBINED_FRAME_DECODER, WsBookTicker, WsKline, WsMarkPrice
from futures_actor.binance.urls import Route, combined_stream_url, route_for_stream
from futures_actor.binance.ws_conn import WsConnector, default_connector
from futures_actor.core.config import ExchangeConfig
from futures_actor.core.types import Candle

__all__ = [
    "BookTicker",
    "KlineClosed",
    "MarkPrice",
    "MarketEvent",
    "MarketStreams",
    "StreamGap",
    "StreamStale",
    "decode_market_frame",
    "plan_connections",
]

log = structlog.get_logger(__name__)

_HOUR_S = 3600.0
_STALE_CHECKS_PER_PERIOD = 4


class KlineClosed(msgspec.Struct, frozen=True, kw_only=True):
    """A kline closed (`x: true`) on the stream."""

    symbol: str
    interval: str
    candle: Candle
    event_time_ms: int


class BookTicker(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal
    event_time_ms: int


class MarkPrice(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    mark_price: Decimal
    index_price: Decimal
    funding_rate: Decimal
    next_funding_time_ms: int
    event_time_ms: int


class StreamGap(msgspec.Struct, frozen=True, kw_only=True):
    """The streams were (re)connected: anything between the last event and now may be missing."""

    streams: tuple[str, ...]
    reason: str  # "connected" | "reconnected" | "planned"


class StreamStale(msgspec.Struct, frozen=True, kw_only=True):
    """No message on `stream` for `silent_seconds` (trio time)."""

    stream: str
    silent_seconds: float


MarketEvent = KlineClosed | BookTicker | MarkPrice | StreamGap | StreamStale


def _finite_positive(a: Decimal, b: Decimal) -> bool:
    """Both finite and not negative (hot path: no generator, no Decimal comparison)."""
    return a.is_finite() and b.is_finite() and not a.is_signed() and not b.is_signed()


def decode_market_frame(raw: bytes | str) -> KlineClosed | BookTicker | MarkPrice | None:
    """One combined-stream frame → its event; `None` for in-progress klines and broken frames."""
    try:
        frame = COMBINED_FRAME_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("market_frame_skipped", error=str(exc), frame=str(raw[:200]))
        return None
    data = frame.data
    match data:
        case WsKline(k=k):
            if not k.closed:
                return None
            if not k.is_finite():
                log.warning("market_frame_skipped", error="non-finite kline", stream=frame.stream)
                return None
            return KlineClosed(
                symbol=k.symbol, interval=k.interval, candle=k.to_candle(), event_time_ms=data.event_time_ms
            )
        case WsMarkPrice():
            if not (_finite_positive(data.mark_price, data.index_price) and data.funding_rate.is_finite()):
                log.warning("market_frame_skipped", error="non-finite mark price", stream=frame.stream)
                return None
            return MarkPrice(
                symbol=data.symbol,
                mark_price=data.mark_price,
                index_price=data.index_price,
                funding_rate=data.funding_rate,
                next_funding_time_ms=data.next_funding_time_ms,
                event_time_ms=data.event_time_ms,
            )
        case WsBookTicker():
            if not (
                _finite_positive(data.bid_price, data.bid_qty)
                and _finite_positive(data.ask_price, data.ask_qty)
            ):
                log.warning("market_frame_skipped", error="non-finite book ticker", stream=frame.stream)
                return None
            return BookTicker(
                symbol=data.symbol,
                bid_price=data.bid_price,
                bid_qty=data.bid_qty,
                ask_price=data.ask_price,
                ask_qty=data.ask_qty,
                event_time_ms=data.event_time_ms,
            )
    return None  # pragma: no cover - the union is closed


def plan_connections(streams: Sequence[str], max_per_connection: int) -> list[tuple[Route, tuple[str, ...]]]:
    """Group stream names by route, then chunk each route into connections of bounded size."""
    by_route: dict[Route, list[str]] = {}
    for name in dict.fromkeys(streams):  # de-duplicate, keep order
        by_route.setdefault(route_for_stream(name), []).append(name)
    plan: list[tuple[Route, tuple[str, ...]]] = []
    for route, names in by_route.items():
        for i in range(0, len(names), max_per_connection):
            plan.append((route, tuple(names[i : i + max_per_connection])))
    return plan


class _Recycle(Exception):
    """Internal: leave the current connection and open a new one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MarketStreams:
    """Runs the connections for `streams` and sends `MarketEvent`s to `send`."""

    def __init__(
        self,
        *,
        cfg: ExchangeConfig,
        ws_base: str,
        streams: Sequence[str],
        send: trio.MemorySendChannel[MarketEvent],
        stale_after_seconds: float,
        connector: WsConnector = default_connector,
        rng: random.Random | None = None,
    ) -> None:
        if not streams:
            raise ValueError("MarketStreams: streams is empty; expected at least one stream name")
        self._cfg = cfg
        self._ws_base = ws_base
        self._plan = plan_connections(streams, cfg.ws_max_streams_per_connection)
        self._send = send
        self._stale_after = stale_after_seconds
        self._connector = connector
        self._rng = rng or random.Random(0)
        self._last_closed: dict[tuple[str, str], int] = {}
        self.connects = 0

    @property
    def connection_plan(self) -> list[tuple[Route, tuple[str, ...]]]:
        return list(self._plan)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for route, names in self._plan:
                nursery.start_soon(self._run_connection, route, names)
            task_status.started()

    async def _run_connection(self, route: Route, names: tuple[str, ...]) -> None:
        url = combined_stream_url(self._ws_base, route, list(names))
        backoff = self._cfg.ws_reconnect_backoff_initial_seconds
        reason = "connected"
        while True:
            recycle: str | None = None
            try:
                async with self._connector(url) as ws:
                    self.connects += 1
                    backoff = self._cfg.ws_reconnect_backoff_initial_seconds
                    log.info("market_ws_connected", url=url, reason=reason)
                    await self._send.send(StreamGap(streams=names, reason=reason))
                    await self._serve(ws, names)
            except* _Recycle as group:
                recycle = _first_leaf(group).reason  # type: ignore[attr-defined]
            except* (ConnectionClosed, HandshakeError, OSError) as group:
                log.warning("market_ws_disconnected", url=url, error=repr(_first_leaf(group)))
            if recycle is not None:
                reason = recycle
                log.info("market_ws_recycle", url=url, reason=reason)
                continue  # planned or stale: reconnect at once
            reason = "reconnected"
            delay = backoff * (1.0 + self._rng.random())
            backoff = min(backoff * 2, self._cfg.ws_reconnect_backoff_max_seconds)
            await trio.sleep(min(delay, self._cfg.ws_reconnect_backoff_max_seconds))

    async def _serve(self, ws: WebSocketConnection, names: tuple[str, ...]) -> None:
        last_seen = dict.fromkeys(names, trio.current_time())
        planned_at = trio.current_time() + self._cfg.ws_planned_reconnect_hours * _HOUR_S
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pinger, ws)
            nursery.start_soon(self._watch_staleness, last_seen)
            nursery.start_soon(self._planned, planned_at)
            while True:
                raw = await ws.get_message()
                event = decode_market_frame(raw)
                stream = _stream_name(raw)
                if stream in last_seen:
                    last_seen[stream] = trio.current_time()
                if event is None:
                    continue
                if isinstance(event, KlineClosed):
                    key = (event.symbol, event.interval)
                    if self._last_closed.get(key, -1) >= event.candle.open_time_ms:
                        continue  # already delivered (overlap after a reconnect)
                    self._last_closed[key] = event.candle.open_time_ms
                await self._send.send(event)

    async def _planned(self, at: float) -> None:
        await trio.sleep_until(at)
        raise _Recycle("planned")

    async def _pinger(self, ws: WebSocketConnection) -> None:
        interval = self._cfg.ws_ping_interval_seconds
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as scope:
                await ws.ping()
            if scope.cancelled_caught:
                log.warning("market_ws_no_pong", waited_s=interval)
                raise _Recycle("reconnected")

    async def _watch_staleness(self, last_seen: dict[str, float]) -> None:
        flagged: set[str] = set()
        period = self._stale_after / _STALE_CHECKS_PER_PERIOD
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            for name, seen in last_seen.items():
                silent = now - seen
                if silent >= self._stale_after:
                    if name not in flagged:
                        flagged.add(name)
                        log.warning("market_stream_stale", stream=name, silent_s=silent)
                        await self._send.send(StreamStale(stream=name, silent_seconds=silent))
                else:
                    flagged.discard(name)
            if flagged and len(flagged) == len(last_seen):
                raise _Recycle("reconnected")


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


_STREAM_PREFIX = b'{"stream":"'


def _stream_name(raw: bytes | str) -> str:
    """The `stream` of a combined frame without a second full decode (Binance puts it first)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if data.startswith(_STREAM_PREFIX):
        end = data.find(b'"', len(_STREAM_PREFIX))
        if end > 0:
            return data[len(_STREAM_PREFIX) : end].decode()
    try:
        return str(msgspec.json.decode(data, type=dict).get("stream", ""))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""

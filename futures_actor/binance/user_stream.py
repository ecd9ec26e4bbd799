"""The user-data stream: listenKey lifecycle and typed account/order events.

`UserStream` owns the listenKey (create, keepalive every `exchange.listen_key_keepalive_seconds`,
recreate on -1125 or a `listenKeyExpired` event) and the `/private` WebSocket route. Events are
decoded into the tagged union `binance.models.UserEvent` (ORDER_TRADE_UPDATE, ALGO_UPDATE,
ACCOUNT_UPDATE, TRADE_LITE, MARGIN_CALL, listenKeyExpired) and sent to the owner's channel.
Unknown event types are logged and skipped; a malformed known event is logged and skipped too
(the REST resync that follows any doubt is the backstop).

Liveness, like the market streams: a ping every `exchange.ws_ping_interval_seconds` must be answered
within the interval, and a connection on which nothing (no event, no pong) was heard for
`exchange.user_stream_idle_timeout_seconds` is replaced. A half-open socket is therefore noticed in
minutes, not at the 23 h planned reconnect; the reconnect's `ResyncNeeded` covers what was missed.

Binance does not replay lost events, so after every (re)connect, including the first, the stream
sends `ResyncNeeded`: the owner reconciles open orders, open algo orders, positions and balance
over REST. The event is sent after the new socket is open, so nothing after the resync is lost.
"""

from __future__ import annotations

import random
from typing import Protocol

import msgspec
import structlog
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from futures_actor.binance.errors import BinanceError, ListenKeyExpired
from futures_actor.binance.models import (
    EVENT_TYPE_DECODER,
    USER_EVENT_DECODER,
    ListenKeyExpiredEvent,
    UserEvent,
)
from futures_actor.binance.urls import user_stream_url
from futures_actor.binance.ws_conn import WsConnector, default_connector
from futures_actor.core.config import ExchangeConfig

__all__ = ["ListenKeyApi", "ResyncNeeded", "UserStream", "UserStreamEvent", "decode_user_event"]

log = structlog.get_logger(__name__)

_HOUR_S = 3600.0
_IDLE_CHECKS_PER_PERIOD = 4


class _Heard:
    """When the connection was last heard from (trio time): an event or a pong."""

    def __init__(self) -> None:
        self.at = trio.current_time()

    def now(self) -> None:
        self.at = trio.current_time()


class ResyncNeeded(msgspec.Struct, frozen=True, kw_only=True):
    """The stream was (re)connected: events may have been lost; reconcile over REST."""

    reason: str  # "connected" | "reconnected" | "listen_key_expired" | "planned"


UserStreamEvent = UserEvent | ResyncNeeded


class ListenKeyApi(Protocol):
    async def create_listen_key(self) -> str: ...

    async def keepalive_listen_key(self) -> None: ...


def decode_user_event(raw: bytes | str) -> UserEvent | None:
    """One user-data frame → its typed event; `None` (logged) for unknown or malformed events."""
    try:
        return USER_EVENT_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        try:
            kind = EVENT_TYPE_DECODER.decode(raw).e
        except (msgspec.DecodeError, msgspec.ValidationError):
            kind = ""
        if "$.e" in str(exc) and "Invalid value" in str(exc):
            log.info("user_event_unknown_type_skipped", event_type=kind)
        else:
            log.warning("user_event_malformed_skipped", event_type=kind, error=str(exc), frame=str(raw[:500]))
        return None
    except msgspec.DecodeError as exc:
        log.warning("user_event_skipped", error=str(exc), frame=str(raw[:200]))
        return None


class _Renew(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UserStream:
    """Runs the listenKey and the `/private` connection; sends `UserStreamEvent`s to `send`."""

    def __init__(
        self,
        *,
        cfg: ExchangeConfig,
        rest: ListenKeyApi,
        ws_base: str,
        send: trio.MemorySendChannel[UserStreamEvent],
        connector: WsConnector = default_connector,
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = cfg
        self._rest = rest
        self._ws_base = ws_base
        self._send = send
        self._connector = connector
        self._rng = rng or random.Random(0)
        self.listen_key: str | None = None
        self.connects = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect (started once the first socket is open), then keep the stream alive forever."""
        backoff = self._cfg.ws_reconnect_backoff_initial_seconds
        reason = "connected"
        started = False
        while True:
            renew: str | None = None
            try:
                self.listen_key = await self._rest.create_listen_key()
                async with self._connector(user_stream_url(self._ws_base, self.listen_key)) as ws:
                    self.connects += 1
                    backoff = self._cfg.ws_reconnect_backoff_initial_seconds
                    log.info("user_stream_connected", reason=reason)
                    await self._send.send(ResyncNeeded(reason=reason))
                    if not started:
                        started = True
                        task_status.started()
                    await self._serve(ws)
            except* _Renew as group:
                renew = _first_leaf(group).reason  # type: ignore[attr-defined]
            except* (
                ConnectionClosed,
                HandshakeError,
                OSError,
                BinanceError,
            ) as group:
                log.warning("user_stream_disconnected", error=repr(_first_leaf(group)))
            if renew is not None:
                reason = renew
                continue
            reason = "reconnected"
            delay = min(backoff * (1.0 + self._rng.random()), self._cfg.ws_reconnect_backoff_max_seconds)
            backoff = min(backoff * 2, self._cfg.ws_reconnect_backoff_max_seconds)
            await trio.sleep(delay)

    async def _serve(self, ws: WebSocketConnection) -> None:
        heard = _Heard()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keepalive)
            nursery.start_soon(self._planned)
            nursery.start_soon(self._pinger, ws, heard)
            nursery.start_soon(self._watch_idle, heard)
            while True:
                raw = await ws.get_message()
                heard.now()
                event = decode_user_event(raw)
                if event is None:
                    continue
                await self._send.send(event)
                if isinstance(event, ListenKeyExpiredEvent):
                    log.warning("user_stream_listen_key_expired")
                    raise _Renew("listen_key_expired")

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(self._cfg.listen_key_keepalive_seconds)
            try:
                await self._rest.keepalive_listen_key()
            except ListenKeyExpired:
                log.warning("user_stream_keepalive_key_gone")
                raise _Renew("listen_key_expired") from None
            except BinanceError as exc:  # the key lives 60 min: the next keepalive may succeed
                log.warning("user_stream_keepalive_failed", error=str(exc))

    async def _pinger(self, ws: WebSocketConnection, heard: _Heard) -> None:
        interval = self._cfg.ws_ping_interval_seconds
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as scope:
                await ws.ping()
            if scope.cancelled_caught:
                log.warning("user_stream_no_pong", waited_s=interval)
                raise _Renew("reconnected")
            heard.now()

    async def _watch_idle(self, heard: _Heard) -> None:
        limit = self._cfg.user_stream_idle_timeout_seconds
        while True:
            await trio.sleep(limit / _IDLE_CHECKS_PER_PERIOD)
            silent = trio.current_time() - heard.at
            if silent >= limit:
                log.warning("user_stream_idle", silent_s=silent)
                raise _Renew("reconnected")

    async def _planned(self) -> None:
        await trio.sleep(self._cfg.ws_planned_reconnect_hours * _HOUR_S)
        raise _Renew("planned")


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc

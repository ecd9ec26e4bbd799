"""How WebSocket connections are opened: an injectable connector.

A `WsConnector` is a callable `(url) -> AbstractAsyncContextManager[WebSocketConnection]`. Production
uses `default_connector` (trio-websocket's `open_websocket_url`); tests and the offline fake
exchange use `memory_connector`, which serves each connection from an in-process handler over
`trio.testing.memory_stream_pair()`, so market and user streams run under `MockClock`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, open_websocket_url, wrap_client_stream, wrap_server_stream

__all__ = ["WS_MAX_MESSAGE_BYTES", "WsConnector", "WsHandler", "default_connector", "memory_connector"]

WsConnector = Callable[[str], AbstractAsyncContextManager[WebSocketConnection]]
WsHandler = Callable[[str, WebSocketConnection], Awaitable[None]]

# Protocol-level sizes: a combined frame is small, but `!…@arr` snapshots reach a few hundred KB.
WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_MESSAGE_QUEUE = 64
_CONNECT_TIMEOUT_S = 20.0
_DISCONNECT_TIMEOUT_S = 5.0


def default_connector(url: str) -> AbstractAsyncContextManager[WebSocketConnection]:
    """A real connection (TLS for wss://)."""
    return open_websocket_url(
        url,
        message_queue_size=_MESSAGE_QUEUE,
        max_message_size=WS_MAX_MESSAGE_BYTES,
        connect_timeout=_CONNECT_TIMEOUT_S,
        disconnect_timeout=_DISCONNECT_TIMEOUT_S,
    )


def memory_connector(nursery: trio.Nursery, handler: WsHandler) -> WsConnector:
    """A connector whose every connection is served by `handler(url, server_ws)` in `nursery`.

    When the handler returns, the server side closes and the client sees `ConnectionClosed`.
    """

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[WebSocketConnection]:
        # In-memory transport (tests, the in-process fake): trio.testing imports pytest, so it is
        # imported only here, never by a bot talking to a real socket.
        import trio.testing

        client_stream, server_stream = trio.testing.memory_stream_pair()

        async def serve() -> None:
            request = await wrap_server_stream(nursery, server_stream, max_message_size=WS_MAX_MESSAGE_BYTES)
            server_ws = await request.accept()
            try:
                await handler(url, server_ws)
            finally:
                await server_ws.aclose()

        nursery.start_soon(serve)
        parts = urlsplit(url)
        resource = parts.path + (f"?{parts.query}" if parts.query else "")
        async with trio.open_nursery() as conn_nursery:
            ws = await wrap_client_stream(
                conn_nursery,
                client_stream,  # type: ignore[arg-type]
                parts.hostname or "localhost",
                resource or "/",
                message_queue_size=_MESSAGE_QUEUE,
                max_message_size=WS_MAX_MESSAGE_BYTES,
            )
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(_DISCONNECT_TIMEOUT_S):
                    await ws.aclose()

    return connect

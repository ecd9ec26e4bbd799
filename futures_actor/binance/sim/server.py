"""Transports of the fake exchange: httpx.MockTransport, in-memory WebSockets, loopback HTTP/WS server.

Armed as faults (`Faults.server_pings`, `Faults.cut_ws_after`; the `sim-exchange` tool arms both),
a WebSocket behaves like Binance's: the server pings every 3 min and drops a connection whose ping
goes unanswered for as long, and cuts every connection at 24 h.

This module owns the byte-level plumbing only; every request and subscription is served by the
one `SimExchange` state machine. In-process (mock clock): `mock_transport(ex)` and
`memory_connector(ex, nursery)`. Real sockets (real clock): `serve_http` (HTTP/1.1 with h11 on trio
sockets) and `serve_ws` (trio-websocket) on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import httpx
import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)

from futures_actor.binance.sim.exchange import ResponseLost, SimExchange, SimRequest, Subscriber

__all__ = ["memory_connector", "mock_transport", "serve_http", "serve_ws", "serve_ws_connection"]

WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
WS_CLOSE_TIMEOUT_S = 5.0  # how long a closing client waits for the server's close frame
_MAX_HTTP_BYTES = 1024 * 1024
_ROUTES = ("public", "market", "private")
_PUBLIC_MARKERS = ("@bookTicker", "!bookTicker", "@depth", "@rpiDepth")


def mock_transport(ex: SimExchange) -> httpx.MockTransport:
    """An `httpx.MockTransport` serving `ex` in-process (use with `httpx.AsyncClient`)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        req = SimRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        try:
            resp = await ex.handle(req)
        except ResponseLost:
            raise httpx.ReadTimeout("sim exchange: response lost", request=request) from None
        headers = {"content-type": "application/json", **resp.headers}
        return httpx.Response(resp.status, content=resp.body, headers=headers)

    return httpx.MockTransport(handler)


# ---------------------------------------------------------------- WebSocket serving


def _parse_ws_target(target: str) -> tuple[str, bool, set[str], set[str]] | None:
    """(route, combined, streams, listenKeys) of a WS resource path, or None if not routable."""
    parts = urlsplit(target)
    segs = [s for s in parts.path.split("/") if s]
    query = parse_qs(parts.query)
    route = "public"
    if segs and segs[0] in _ROUTES:
        route = segs.pop(0)
    if not segs or segs[0] not in ("ws", "stream"):
        return None
    combined = segs[0] == "stream"
    rest = "/".join(segs[1:])
    streams: set[str] = set()
    keys: set[str] = set()
    if route == "private":
        keys.update(query.get("listenKey", []))
        if rest:
            keys.add(rest)
    else:
        names = [s for q in query.get("streams", []) for s in q.split("/") if s]
        names += [s for s in rest.split("/") if s]
        streams.update(names)
    return route, combined, streams, keys


async def serve_ws_connection(ex: SimExchange, target: str, ws: WebSocketConnection) -> None:
    """Serve one accepted WebSocket: push subscribed frames, answer SUBSCRIBE / UNSUBSCRIBE / LIST."""
    parsed = _parse_ws_target(target)
    if parsed is None:
        await ws.aclose(code=1008, reason="unknown route")
        return
    route, combined, streams, keys = parsed
    if route == "private":
        keys = {k for k in keys if ex.listen_key_valid(k)}
        if not keys:
            await ws.aclose(code=1008, reason="invalid listenKey")
            return
    sub = Subscriber(route=route, combined=combined, streams=streams, listen_keys=keys)
    # Streams on the wrong route are accepted but never delivered (Binance's 2026 route split).
    sub.streams = {s for s in streams if _route_of(s) == route}
    ex.subscribe(sub)
    ping_every = ex.faults.ws_ping_interval_s
    cut_after = ex.faults.ws_max_connection_s
    try:
        async with trio.open_nursery() as nursery:

            async def ping(every: float) -> None:
                # Binance pings every 3 minutes; a client that never answers is dropped.
                while True:
                    await trio.sleep(every)
                    try:
                        with trio.move_on_after(every) as scope:
                            ex.ws_pings_sent += 1
                            await ws.ping()
                    except ConnectionClosed:
                        nursery.cancel_scope.cancel()
                        return
                    if scope.cancelled_caught:
                        nursery.cancel_scope.cancel()
                        return

            async def cut(after: float) -> None:
                # Every connection is closed at 24 hours, whatever it carries.
                await trio.sleep(after)
                nursery.cancel_scope.cancel()

            if ping_every is not None:
                nursery.start_soon(ping, ping_every)
            if cut_after is not None:
                nursery.start_soon(cut, cut_after)

            async def pump() -> None:
                try:
                    async for frame in sub.receive:
                        await ws.send_message(frame.decode())
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump)
            try:
                while True:
                    raw = await ws.get_message()
                    reply = _control(sub, route, raw)
                    if reply is not None:
                        await ws.send_message(reply)
            except ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()
    finally:
        ex.unsubscribe(sub)


def _route_of(stream: str) -> str:
    return "public" if any(m in stream for m in _PUBLIC_MARKERS) else "market"


def _control(sub: Subscriber, route: str, raw: str | bytes) -> str | None:
    try:
        msg: Any = msgspec.json.decode(raw)
        method = msg["method"]
        ident = msg.get("id")
    except (msgspec.DecodeError, KeyError, TypeError):
        return msgspec.json.encode({"code": 3, "msg": "Invalid JSON: expected {method, params, id}"}).decode()
    params = msg.get("params") or []
    if method == "SUBSCRIBE":
        sub.streams.update(s for s in params if _route_of(s) == route)
        return msgspec.json.encode({"result": None, "id": ident}).decode()
    if method == "UNSUBSCRIBE":
        sub.streams.difference_update(params)
        return msgspec.json.encode({"result": None, "id": ident}).decode()
    if method == "LIST_SUBSCRIPTIONS":
        return msgspec.json.encode({"result": sorted(sub.streams), "id": ident}).decode()
    return msgspec.json.encode(
        {"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": ident}
    ).decode()


def memory_connector(
    ex: SimExchange, nursery: trio.Nursery
) -> Callable[[str], AbstractAsyncContextManager[WebSocketConnection]]:
    """`connect(url)` → async context manager yielding a client `WebSocketConnection` to `ex`,
    over `trio.testing.memory_stream_pair()` (works under a mock clock)."""

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[WebSocketConnection]:
        # In-memory transport (tests, the in-process fake): trio.testing imports pytest, so it is
        # imported only here, never by a bot talking to a real socket.
        import trio.testing

        client_stream, server_stream = trio.testing.memory_stream_pair()
        parts = urlsplit(url)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

        async def serve() -> None:
            request = await wrap_server_stream(nursery, server_stream, max_message_size=WS_MAX_MESSAGE_BYTES)
            server_ws = await request.accept()
            try:
                await serve_ws_connection(ex, request.path, server_ws)
            finally:
                await server_ws.aclose()

        nursery.start_soon(serve)
        async with trio.open_nursery() as conn_nursery:
            ws = await wrap_client_stream(
                conn_nursery,
                client_stream,  # type: ignore[arg-type]
                parts.hostname or "localhost",
                resource,
                max_message_size=WS_MAX_MESSAGE_BYTES,
            )
            try:
                yield ws
            finally:
                # Bounded: when the serving task is cancelled too, no close reply ever comes.
                with trio.CancelScope(shield=True), trio.move_on_after(WS_CLOSE_TIMEOUT_S):
                    await ws.aclose()

    return connect


async def serve_ws(
    ex: SimExchange,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSockets on `host:port`; `task_status.started(actual_port)`."""

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await serve_ws_connection(ex, request.path, ws)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler, host, port, ssl_context=None, task_status=task_status
            )
        )
        task_status.started(server.port)


# ---------------------------------------------------------------- HTTP/1.1 (h11)


async def _http_connection(ex: SimExchange, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request: h11.Request | None = None
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > _MAX_HTTP_BYTES:
                        return
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            target = request.target.decode()
            path, _, query = target.partition("?")
            req = SimRequest(
                method=request.method.decode(),
                path=path,
                query=query.encode(),
                body=body,
                headers={k.decode().lower(): v.decode() for k, v in request.headers},
            )
            try:
                resp = await ex.handle(req)
            except ResponseLost:
                return  # close without answering: the client sees the connection drop
            headers = [("content-type", "application/json"), ("content-length", str(len(resp.body)))]
            headers += list(resp.headers.items())
            await stream.send_all(conn.send(h11.Response(status_code=resp.status, headers=headers)) or b"")
            await stream.send_all(conn.send(h11.Data(data=resp.body)) or b"")
            await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await stream.aclose()


async def serve_http(
    ex: SimExchange,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the REST API over HTTP/1.1 on `host:port`; `task_status.started(actual_port)`."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    actual = listeners[0].socket.getsockname()[1]
    task_status.started(actual)
    await trio.serve_listeners(lambda s: _http_connection(ex, s), listeners)  # type: ignore[arg-type]

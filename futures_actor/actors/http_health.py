"""The health and metrics HTTP endpoint (BOT_SPEC §12): a tiny HTTP/1.1 server on trio and h11.

Routes (one request per connection, `Connection: close`):

- `GET /health`  JSON {state, trading_state, safe_mode, kill_switch, reasons, warnings, open_positions,
  unprotected_positions, symbols_monitored, equity, last_data_age_seconds, data_age_seconds, stale_streams,
  ts, ts_ms} (`core.health.health_report`): the Health actor's snapshot with the present values laid over
  it at request time (the kill switch from the system, open and unprotected positions and equity from the
  metrics the actors keep current). 200 when healthy; 503 in safe mode, when HALTED, while the kill switch
  is engaged (trading_state REDUCING), while a position is unprotected (state DEGRADED) and before the
  Health actor has evaluated anything (the container health check relies on this). Zero symbols monitored
  is a warning (state DEGRADED, 200: a restart would not change it).
- `GET /metrics` Prometheus text exposition format 0.0.4 of the `actors.metrics.Metrics` registry
  (ours, process and GC metrics, through prometheus_client).
- `POST /kill`, `POST /resume` forward to the operator callbacks (JSON body, optionally {"reason": "..."});
  202 when forwarded, 503 when no callback is wired, 500 if the callback failed.

Control requests are never accepted from a cross-site page (BOT_SPEC §12 [resolved], `ControlPolicy`):
the body must be sent as `Content-Type: application/json` (a browser cannot send that cross-site without
a CORS preflight, which this server never answers) else 415; an `Origin` header that is not this
server's own origin is refused (403); with a token (`health.control_token_env`) the request must carry
`Authorization: Bearer <token>` (401 otherwise; compared in constant time, never logged); without a
token only requests addressed to a loopback `Host` are served (403: defeats DNS rebinding), and the
bot refuses to bind a non-loopback `health.http_host` at all.

It binds to `health.http_host` (127.0.0.1 by default: the kill switch must not be reachable from outside).
`open_http_listeners` binds the socket before start-up, so a port in use stops the bot before it trades.
`HealthHttpApp.handle` is the whole request logic, testable without sockets; `serve_http` adds the socket.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable

import h11
import msgspec
import trio

from futures_actor.actors.metrics import (
    CONTENT_TYPE_METRICS,
    EQUITY,
    OPEN_POSITIONS,
    UNPROTECTED_POSITIONS,
    Metrics,
)
from futures_actor.core.config import HealthConfig
from futures_actor.core.health import HealthSnapshot, health_report
from futures_actor.logs import get_logger

__all__ = [
    "ControlPolicy",
    "HealthHttpApp",
    "HttpRequest",
    "HttpResponse",
    "control_token_from_env",
    "is_loopback_host",
    "open_http_listeners",
    "serve_http",
]

CONTENT_TYPE_JSON = "application/json"

# Bounds of one request: protect the bot from a slow or oversized client.
_REQUEST_TIMEOUT_S = 10.0
_MAX_BODY_BYTES = 4096
_MAX_HEADER_BYTES = 16384
_RECV_BYTES = 4096
_MAX_REASON_CHARS = 200

_HTTP_OK = 200
_HTTP_ACCEPTED = 202
_HTTP_BAD_REQUEST = 400
_HTTP_UNAUTHORIZED = 401
_HTTP_FORBIDDEN = 403
_HTTP_NOT_FOUND = 404
_HTTP_METHOD_NOT_ALLOWED = 405
_HTTP_TOO_LARGE = 413
_HTTP_UNSUPPORTED_MEDIA = 415
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
_BEARER = "bearer "
_HTTP_INTERNAL_ERROR = 500
_HTTP_UNAVAILABLE = 503


class HttpRequest(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    target: str
    body: bytes = b""
    # Header (lower-case name, value) pairs as received.
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), None)


def is_loopback_host(host: str) -> bool:
    """True for a loopback address or name (`127.0.0.1`, `::1`, `localhost`); False for anything else."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def control_token_from_env(cfg: HealthConfig) -> str:
    """The control token from the environment variable the config names ("" when unset)."""
    return os.environ.get(cfg.control_token_env, "").strip()


def _host_of(authority: str) -> str:
    """`host` of a `host[:port]` authority (IPv6 in brackets kept whole)."""
    if authority.startswith("["):
        return authority[: authority.find("]") + 1] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


class ControlPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Who may POST /kill and /resume (see the module docstring). `token` "" means none."""

    token: str = ""
    bind_host: str = "127.0.0.1"

    def __repr__(self) -> str:
        return f"ControlPolicy(token={'***' if self.token else ''!r}, bind_host={self.bind_host!r})"

    def refusal(self, request: HttpRequest) -> tuple[int, str] | None:
        """(status, reason) when the request must be refused, else None."""
        content_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
        if content_type != CONTENT_TYPE_JSON:
            return _HTTP_UNSUPPORTED_MEDIA, "control requests need Content-Type: application/json"
        host = request.header("host") or ""
        origin = request.header("origin")
        if origin is not None and origin.lower() not in {f"http://{host.lower()}", f"https://{host.lower()}"}:
            return _HTTP_FORBIDDEN, "cross-origin control request refused"
        if self.token:
            auth = request.header("authorization") or ""
            given = auth[len(_BEARER) :].strip() if auth.lower().startswith(_BEARER) else ""
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return _HTTP_UNAUTHORIZED, "control requests need Authorization: Bearer <token>"
            return None
        if not is_loopback_host(_host_of(host)):
            return _HTTP_FORBIDDEN, "control requests must be addressed to a loopback host"
        return None


class HttpResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(
        status=status,
        content_type=CONTENT_TYPE_JSON,
        body=json.dumps(payload, sort_keys=True).encode(),
        headers=headers,
    )


ControlCallback = Callable[[str], Awaitable[None]]

_ROUTES: dict[str, str] = {"/health": "GET", "/metrics": "GET", "/kill": "POST", "/resume": "POST"}


class HealthHttpApp:
    """The request logic of the endpoint, independent of sockets."""

    def __init__(
        self,
        *,
        snapshot: Callable[[], HealthSnapshot | None],
        metrics: Metrics,
        on_kill: ControlCallback | None = None,
        on_resume: ControlCallback | None = None,
        control: ControlPolicy | None = None,
        kill_engaged: Callable[[], bool] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._metrics = metrics
        self._on_kill = on_kill
        self._on_resume = on_resume
        self._control = control or ControlPolicy()
        self._kill_engaged = kill_engaged
        self._log = get_logger("http_health")

    async def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.target.split("?", 1)[0]
        allowed = _ROUTES.get(path)
        if allowed is None:
            return _json(_HTTP_NOT_FOUND, {"error": f"no route {path}"})
        if request.method != allowed:
            return _json(
                _HTTP_METHOD_NOT_ALLOWED,
                {"error": f"{request.method} not allowed on {path}; expected {allowed}"},
                headers=(("allow", allowed),),
            )
        if path == "/health":
            return self._health()
        if path == "/metrics":
            return HttpResponse(
                status=_HTTP_OK, content_type=CONTENT_TYPE_METRICS, body=self._metrics.render().encode()
            )
        action = path.lstrip("/")
        refused = self._control.refusal(request)
        if refused is not None:
            status, reason = refused
            self._log.warning(
                "operator_command_refused",
                action=action,
                status=status,
                reason=reason,
                origin=request.header("origin"),
                host=request.header("host"),
                content_type=request.header("content-type"),
            )
            return _json(status, {"error": reason})
        callback = self._on_kill if action == "kill" else self._on_resume
        return await self._run_control(action, callback, request.body)

    def _health(self) -> HttpResponse:
        snap = self._snapshot()
        if snap is None:
            return _json(
                _HTTP_UNAVAILABLE,
                {"state": "STARTING", "safe_mode": None, "trading_state": None, "reasons": []},
            )
        positions = self._metrics.get(OPEN_POSITIONS)
        unprotected = self._metrics.get(UNPROTECTED_POSITIONS)
        healthy, payload = health_report(
            snap,
            kill_switch=bool(self._kill_engaged()) if self._kill_engaged is not None else None,
            open_positions=None if positions is None else int(positions),
            unprotected_positions=None if unprotected is None else int(unprotected),
        )
        body = {**payload, "equity": self._metrics.get(EQUITY)}
        return _json(_HTTP_OK if healthy else _HTTP_UNAVAILABLE, body)

    async def _run_control(self, action: str, callback: ControlCallback | None, body: bytes) -> HttpResponse:
        reason = "OPERATOR"
        if body.strip():
            try:
                parsed = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                return _json(_HTTP_BAD_REQUEST, {"error": 'body must be JSON like {"reason": "..."}'})
            if not isinstance(parsed, dict) or not isinstance(parsed.get("reason", reason), str):
                return _json(_HTTP_BAD_REQUEST, {"error": 'body must be JSON like {"reason": "..."}'})
            reason = str(parsed.get("reason", reason))[:_MAX_REASON_CHARS] or "OPERATOR"
        if callback is None:
            self._log.warning("operator_command_unwired", action=action, reason=reason)
            return _json(_HTTP_UNAVAILABLE, {"error": f"{action} is not wired in this process"})
        self._log.warning("operator_command", action=action, reason=reason)
        try:
            await callback(reason)
        except Exception as exc:
            self._log.error("operator_command_failed", action=action, exc_info=exc)
            return _json(_HTTP_INTERNAL_ERROR, {"error": f"{action} failed: {type(exc).__name__}"})
        return _json(_HTTP_ACCEPTED, {"accepted": True, "action": action, "reason": reason})


async def _read_request(stream: trio.abc.Stream, conn: h11.Connection) -> HttpRequest | HttpResponse | None:
    """The next request, a ready error response, or None if the client closed first."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECV_BYTES)))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY_BYTES:
                return _json(_HTTP_TOO_LARGE, {"error": f"body over {_MAX_BODY_BYTES} bytes"})
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return HttpRequest(
                method=request.method.decode("ascii", "replace"),
                target=request.target.decode("ascii", "replace"),
                body=bytes(body),
                headers=tuple(
                    (name.decode("ascii", "replace").lower(), value.decode("latin-1"))
                    for name, value in request.headers
                ),
            )
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send_response(stream: trio.abc.Stream, conn: h11.Connection, response: HttpResponse) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("connection", "close"),
        *response.headers,
    ]
    await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=response.body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def serve_connection(app: HealthHttpApp, stream: trio.abc.Stream) -> None:
    """Serve one request on `stream`, bounded in time and size; never raises (except Cancelled)."""
    log = get_logger("http_health")
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_BYTES)
    try:
        with trio.move_on_after(_REQUEST_TIMEOUT_S):
            try:
                request = await _read_request(stream, conn)
            except h11.RemoteProtocolError as exc:
                request = _json(_HTTP_BAD_REQUEST, {"error": f"bad request: {exc}"})
            if request is None:
                return
            if isinstance(request, HttpRequest):
                response = await app.handle(request)
            else:
                response = request
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send_response(stream, conn, response)
    except Exception as exc:
        log.info("http_connection_failed", error_type=type(exc).__name__, error=str(exc))
    finally:
        with trio.move_on_after(_REQUEST_TIMEOUT_S) as cleanup:
            cleanup.shield = True
            await stream.aclose()


async def open_http_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind host:port (0 picks a free port); `OSError` (e.g. EADDRINUSE) if it cannot be bound."""
    return await trio.open_tcp_listeners(port, host=host)


async def serve_http(
    app: HealthHttpApp,
    *,
    host: str,
    port: int,
    listeners: list[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port (0 picks a free port) and serve until cancelled; `started` gets the port.

    `listeners` already bound (by `open_http_listeners` before start-up) are served instead."""
    if listeners is None:
        listeners = await open_http_listeners(host, port)
    bound = int(listeners[0].socket.getsockname()[1])
    get_logger("http_health").info("http_listening", host=host, port=bound)
    task_status.started(bound)

    async def handler(stream: trio.SocketStream) -> None:
        await serve_connection(app, stream)

    await trio.serve_listeners(handler, listeners)

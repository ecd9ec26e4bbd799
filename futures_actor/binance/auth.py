"""Request signing for Binance: an `httpx.Auth` that adds the API key and the HMAC-SHA256 signature.

Security type per request travels in `request.extensions["binance_security"]`:
`"NONE"` (public), `"KEY"` (API key header only: listenKey endpoints) or `"SIGNED"`. A signed request
gets `timestamp` (from the injected `timestamp_ms` callable, i.e. wall time + server offset, taken
at send time so a retry is re-stamped) and `recvWindow` appended to its query string; the signature
is HMAC-SHA256 over the exact bytes sent: the query string concatenated with the form body (no `&`
between them, per Binance's rules), and goes last. The secret is revealed only inside `_sign` and
never stored unwrapped, logged or put in an exception.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Generator
from typing import Literal

import httpx

from futures_actor.core.secrets import Secret

__all__ = ["SECURITY_EXTENSION", "BinanceAuth", "Security", "hmac_signature"]

Security = Literal["NONE", "KEY", "SIGNED"]
SECURITY_EXTENSION = "binance_security"
API_KEY_HEADER = "X-MBX-APIKEY"


def hmac_signature(secret: Secret, payload: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of `payload` under the revealed secret."""
    return hmac.new(secret.reveal().encode(), payload, hashlib.sha256).hexdigest()


class BinanceAuth(httpx.Auth):
    """Adds `X-MBX-APIKEY`, and for SIGNED requests `timestamp`, `recvWindow` and `signature`."""

    requires_request_body = True

    def __init__(
        self,
        *,
        api_key: Secret,
        api_secret: Secret,
        recv_window_ms: int,
        timestamp_ms: Callable[[], int],
    ) -> None:
        self._api_key = api_key
        self._api_secret = api_secret
        self._recv_window_ms = recv_window_ms
        self._timestamp_ms = timestamp_ms

    def __repr__(self) -> str:
        return f"BinanceAuth(api_key={self._api_key!r}, recv_window_ms={self._recv_window_ms})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        security = request.extensions.get(SECURITY_EXTENSION, "NONE")
        if security in ("KEY", "SIGNED"):
            request.headers[API_KEY_HEADER] = self._api_key.reveal()
        if security == "SIGNED":
            self._sign(request)
        yield request

    def _sign(self, request: httpx.Request) -> None:
        query = request.url.query
        extra = f"timestamp={self._timestamp_ms()}&recvWindow={self._recv_window_ms}".encode()
        query = query + b"&" + extra if query else extra
        body = (
            request.content
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
            else b""
        )
        signature = hmac_signature(self._api_secret, query + body)
        request.url = request.url.copy_with(query=query + b"&signature=" + signature.encode())

"""Trade ids and deterministic client order ids (BOT_SPEC §9).

A client order id is `<prefix>-<trade key>-<role><attempt>`, e.g. `fa-3f2a9c...-E1`: the trade key is
the first 24 hex digits of the trade's UUID, the role a one-letter `OrderRole` code and the attempt a
positive integer (entry attempt 1 and 2, stop version k, ...). The same (trade, role, attempt) always
yields the same id, so a re-send after an unknown outcome is caught by Binance's duplicate-id check
and, before that, by querying the id. Ids match Binance's rule `^[.A-Z:/a-z0-9_-]{1,36}$`.

Trade ids are UUIDs derived from what makes a trade unique (symbol, strategy, the 5m candle that
produced it), so a replay produces the same ids and a restart that re-decides the same candle finds
the orders it already sent.
"""

from __future__ import annotations

import re
import uuid

from futures_actor.core.types import OrderRole

__all__ = [
    "BINANCE_CLIENT_ID_RE",
    "MAX_ATTEMPT",
    "ClientOrderId",
    "InvalidClientOrderId",
    "client_order_id",
    "new_trade_id",
    "parse_client_order_id",
    "trade_key",
]

BINANCE_CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_TRADE_KEY_LEN = 24
MAX_ATTEMPT = 999  # the attempt field has at most three digits
_NAMESPACE = uuid.UUID("6f1d1f6e-5b7a-4c3e-9a51-2f4c3f0e8b10")
_CLIENT_ID_RE = re.compile(
    r"^(?P<prefix>[A-Za-z0-9]{1,4})-(?P<key>[0-9a-f]{24})-(?P<role>[ESTXK])(?P<attempt>[1-9][0-9]{0,2})$"
)


class InvalidClientOrderId(ValueError):
    """A client order id could not be built or parsed."""


def new_trade_id(*, symbol: str, strategy: str, candle_open_time_ms: int, salt: str = "") -> str:
    """Deterministic UUID for the trade born from this symbol, strategy and 5m candle."""
    name = f"{symbol}|{strategy}|{candle_open_time_ms}|{salt}"
    return str(uuid.uuid5(_NAMESPACE, name))


def trade_key(trade_id: str) -> str:
    """The 24-hex-digit key of a trade id used inside client order ids."""
    try:
        hex_id = uuid.UUID(trade_id).hex
    except ValueError:
        raise InvalidClientOrderId(f"trade id {trade_id!r} is not a UUID") from None
    return hex_id[:_TRADE_KEY_LEN]


def client_order_id(*, prefix: str, trade_id: str, role: OrderRole, attempt: int) -> str:
    """The client order id of `role` attempt `attempt` of `trade_id`."""
    if not 1 <= attempt <= MAX_ATTEMPT:
        raise InvalidClientOrderId(f"attempt {attempt} is outside 1..{MAX_ATTEMPT}")
    if not re.fullmatch(r"[A-Za-z0-9]{1,4}", prefix):
        raise InvalidClientOrderId(f"prefix {prefix!r} must be 1-4 letters or digits")
    cid = f"{prefix}-{trade_key(trade_id)}-{role.value}{attempt}"
    assert BINANCE_CLIENT_ID_RE.match(cid), cid
    return cid


class ClientOrderId:
    """A parsed client order id of ours."""

    __slots__ = ("attempt", "prefix", "role", "trade_key")

    def __init__(self, *, prefix: str, trade_key: str, role: OrderRole, attempt: int) -> None:
        self.prefix = prefix
        self.trade_key = trade_key
        self.role = role
        self.attempt = attempt

    def __repr__(self) -> str:
        return f"ClientOrderId({self.prefix}-{self.trade_key}-{self.role.value}{self.attempt})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientOrderId) and (
            self.prefix,
            self.trade_key,
            self.role,
            self.attempt,
        ) == (other.prefix, other.trade_key, other.role, other.attempt)

    def __hash__(self) -> int:
        return hash((self.prefix, self.trade_key, self.role, self.attempt))


def parse_client_order_id(cid: str, *, prefix: str) -> ClientOrderId | None:
    """Parse one of our ids; `None` for an id that is not ours (another prefix, manual order)."""
    m = _CLIENT_ID_RE.match(cid)
    if m is None or m.group("prefix") != prefix:
        return None
    return ClientOrderId(
        prefix=prefix,
        trade_key=m.group("key"),
        role=OrderRole(m.group("role")),
        attempt=int(m.group("attempt")),
    )

"""Domain types shared by every layer: sides, regimes, order roles, trading state, candles, symbol rules.

These are the words the rest of the code speaks. They are plain enums and frozen msgspec Structs
with no behaviour beyond small, obviously-correct helpers, so that `core/`, `binance/` and
`actors/` can all depend on them without depending on each other.
"""

from __future__ import annotations

import enum
from decimal import Decimal

import msgspec

__all__ = [
    "INTERVAL_MS",
    "Candle",
    "Direction",
    "OrderRole",
    "Regime",
    "Side",
    "SymbolRules",
    "TradingState",
]


class Side(enum.StrEnum):
    """Direction of a position (the trade log's `direction`)."""

    LONG = "LONG"
    SHORT = "SHORT"

    @property
    def sign(self) -> int:
        return 1 if self is Side.LONG else -1

    @property
    def opposite(self) -> Side:
        return Side.SHORT if self is Side.LONG else Side.LONG

    @property
    def order_side(self) -> str:
        """Binance order side that opens a position in this direction."""
        return "BUY" if self is Side.LONG else "SELL"

    @property
    def closing_order_side(self) -> str:
        """Binance order side that reduces a position in this direction."""
        return "SELL" if self is Side.LONG else "BUY"


Direction = Side


class Regime(enum.StrEnum):
    TREND = "TREND"
    RANGE = "RANGE"
    HIGH_VOL = "HIGH_VOL"
    CHOP_NO_TRADE = "CHOP_NO_TRADE"


class OrderRole(enum.StrEnum):
    """What an order is for within a trade. The one-letter code goes into the client order id."""

    ENTRY = "E"
    STOP = "S"
    TARGET = "T"
    EXIT = "X"  # reduce-only MARKET exit: orphan protection failed, or stop already crossed
    KILL = "K"  # reduce-only MARKET close from the kill switch


class TradingState(enum.StrEnum):
    """Whole-bot trading state (nautilus_trader's vocabulary)."""

    ACTIVE = "ACTIVE"  # new entries allowed (subject to risk)
    REDUCING = "REDUCING"  # no new entries; exits, stops and trailing keep working
    HALTED = "HALTED"  # nothing new is sent except protective and closing orders


INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


class Candle(msgspec.Struct, frozen=True, kw_only=True):
    """A closed kline. Prices are floats: candles feed indicators, never orders."""

    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float = 0.0
    trades: int = 0

    def close_time_ms(self, interval_ms: int) -> int:
        return self.open_time_ms + interval_ms - 1


class SymbolRules(msgspec.Struct, frozen=True, kw_only=True):
    """Exchange filters of one symbol (from exchangeInfo), exact as Decimal."""

    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal = Decimal("1e12")
    market_step_size: Decimal | None = None
    market_min_qty: Decimal | None = None
    market_max_qty: Decimal | None = None
    min_notional: Decimal = Decimal(0)
    min_price: Decimal = Decimal(0)
    max_price: Decimal = Decimal("1e12")
    # PERCENT_PRICE: an order price must lie within [mark·down, mark·up].
    multiplier_up: Decimal | None = None
    multiplier_down: Decimal | None = None
    price_precision: int = 8
    quantity_precision: int = 8

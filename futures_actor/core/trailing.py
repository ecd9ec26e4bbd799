"""The ATR trailing-stop rule shared by the strategies (BOT_SPEC §6, "Trailing rules").

This module owns one decision: given an open position's trailing state and a closed 5m candle
(its close and ATR14), should the protective stop move, and where to. The rules:

- Monotone: the stop only ever moves toward profit (up for a LONG, down for a SHORT), never back.
- ATR-based: the candidate level is `close ∓ atr_mult × ATR`, recomputed on each 5m close.
- Activation: once the unrealized profit at a close reaches `after_r` R (R = |entry − initial stop|);
  `after_r == 0` means active from the fill. Activation is sticky: once active, it stays active.
- A level that would trigger at once (at or through the current price, which defaults to the close)
  is not proposed; the position exits through the existing stop or a later candle.

The function is pure: it returns the proposal and the state that holds *if the proposal is applied*.
When the stop amendment fails on the exchange, the caller keeps its previous state. Rounding the
level to the symbol's tick is the caller's job (round toward the current stop, never past the price).
"""

from __future__ import annotations

import math

import msgspec

from futures_actor.core.types import Side

__all__ = [
    "TRAIL_INVALID_INPUT",
    "TRAIL_MOVED",
    "TRAIL_NOT_ACTIVE",
    "TRAIL_NOT_TIGHTER",
    "TRAIL_WOULD_TRIGGER",
    "TrailUpdate",
    "TrailingInputError",
    "TrailingRule",
    "TrailingState",
    "start_trailing",
    "update_trailing",
]

TRAIL_MOVED = "MOVED"
TRAIL_NOT_ACTIVE = "NOT_ACTIVE"
TRAIL_NOT_TIGHTER = "NOT_TIGHTER"
TRAIL_WOULD_TRIGGER = "WOULD_TRIGGER"
TRAIL_INVALID_INPUT = "INVALID_INPUT"


class TrailingInputError(ValueError):
    """A trailing state cannot be built from these values. Names the field, value and expectation."""

    def __init__(self, *, field: str, value: object, expected: str) -> None:
        super().__init__(f"trailing {field}: got {value!r}; expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


class TrailingRule(msgspec.Struct, frozen=True, kw_only=True):
    """A strategy's trailing parameters: distance `atr_mult` × ATR14, active after `after_r` R."""

    atr_mult: float
    after_r: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.atr_mult) and self.atr_mult > 0):
            raise TrailingInputError(field="atr_mult", value=self.atr_mult, expected="a finite number > 0")
        if not (math.isfinite(self.after_r) and self.after_r >= 0):
            raise TrailingInputError(field="after_r", value=self.after_r, expected="a finite number >= 0")


class TrailingState(msgspec.Struct, frozen=True, kw_only=True):
    """The trailing view of one open position (owned by its symbol actor, persistable)."""

    side: Side
    entry_price: float
    initial_stop: float
    stop_price: float
    active: bool = False

    @property
    def r_unit(self) -> float:
        """One R in price units: the distance from the entry to the initial stop."""
        return abs(self.entry_price - self.initial_stop)


class TrailUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of one candle: `new_stop` is the level to send (None: leave the stop alone)."""

    code: str
    new_stop: float | None
    state: TrailingState
    values: dict[str, float] = msgspec.field(default_factory=dict)


def _positive_finite(field: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise TrailingInputError(field=field, value=value, expected="a finite number > 0")


def start_trailing(
    *, side: Side, entry_price: float, stop_price: float, active: bool = False
) -> TrailingState:
    """Trailing state for a freshly filled position. The stop must be on the losing side of the entry."""
    _positive_finite("entry_price", entry_price)
    _positive_finite("stop_price", stop_price)
    if side.sign * (entry_price - stop_price) <= 0:
        where = "below" if side is Side.LONG else "above"
        raise TrailingInputError(
            field="stop_price",
            value=stop_price,
            expected=f"{where} the entry price {entry_price} for a {side} position",
        )
    return TrailingState(
        side=side, entry_price=entry_price, initial_stop=stop_price, stop_price=stop_price, active=active
    )


def update_trailing(
    state: TrailingState,
    rule: TrailingRule,
    *,
    close: float,
    atr: float,
    current_price: float | None = None,
) -> TrailUpdate:
    """Apply the trailing rule on one closed 5m candle.

    `current_price` is the price the stop triggers on (the mark price); it defaults to the close.
    Bad input (non-finite, non-positive price, negative ATR) never raises: the stop stays where it is
    and the update says `INVALID_INPUT`.
    """
    price = close if current_price is None else current_price
    values: dict[str, float] = {"close": close, "atr": atr, "current_price": price, "stop": state.stop_price}
    if not (
        math.isfinite(close)
        and close > 0
        and math.isfinite(atr)
        and atr >= 0
        and math.isfinite(price)
        and price > 0
    ):
        return TrailUpdate(code=TRAIL_INVALID_INPUT, new_stop=None, state=state, values=values)

    sign = state.side.sign
    r_unit = state.r_unit
    profit_r = sign * (close - state.entry_price) / r_unit if r_unit > 0 else 0.0
    values["profit_r"] = profit_r
    values["after_r"] = rule.after_r
    active = state.active or rule.after_r <= 0 or profit_r >= rule.after_r
    if not active:
        return TrailUpdate(code=TRAIL_NOT_ACTIVE, new_stop=None, state=state, values=values)
    if not state.active:
        state = msgspec.structs.replace(state, active=True)

    candidate = close - sign * rule.atr_mult * atr
    values["candidate"] = candidate
    if sign * (candidate - state.stop_price) <= 0:
        return TrailUpdate(code=TRAIL_NOT_TIGHTER, new_stop=None, state=state, values=values)
    if sign * (price - candidate) <= 0:
        return TrailUpdate(code=TRAIL_WOULD_TRIGGER, new_stop=None, state=state, values=values)
    moved = msgspec.structs.replace(state, stop_price=candidate)
    return TrailUpdate(code=TRAIL_MOVED, new_stop=candidate, state=moved, values=values)

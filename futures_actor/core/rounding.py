"""Exact exchange rounding of prices and quantities to a symbol's filters (BOT_SPEC §8.12, §9).

This module owns the Decimal arithmetic between a float decision and a price or quantity that
Binance accepts. The policy, chosen so rounding can only reduce risk:

- quantities are rounded DOWN to the LOT_SIZE step (never more size than decided);
- a stop price is rounded AWAY from the entry (a long's stop down, a short's stop up), so the
  rounded stop is never closer than the strategy asked for; the size is then recomputed from the
  rounded stop distance (see `core.sizing`);
- a passive entry limit price is rounded towards the passive side (a buy down, a sell up) and then
  moved `offset_ticks` further away from the mid (`passive_entry_price`, also used to re-price
  the retry of an entry from the current mid);
- other prices are rounded to the nearest tick (half up) only when the caller asks for it.

Floats are converted through their shortest repr (`Decimal(repr(x))`), so `0.1` becomes
`Decimal("0.1")`, not its binary expansion. Every function raises `RoundingInputError` naming the
field, the value and what was expected on a non-finite, non-positive or malformed input.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from futures_actor.core.types import Side, SymbolRules

__all__ = [
    "RoundingInputError",
    "passive_entry_price",
    "round_price_down",
    "round_price_nearest",
    "round_price_up",
    "round_qty_down",
    "round_stop_away",
    "to_decimal",
]


class RoundingInputError(ValueError):
    """A price, quantity or filter given to the rounding helpers is not usable."""

    def __init__(self, *, field: str, value: object, expected: str) -> None:
        super().__init__(f"{field}: got {value!r}, expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


def to_decimal(value: float | int | Decimal, *, field: str) -> Decimal:
    """`value` as an exact Decimal (floats through their shortest repr); must be finite."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise RoundingInputError(field=field, value=value, expected="a finite number")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RoundingInputError(field=field, value=value, expected="a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise RoundingInputError(field=field, value=value, expected="a finite number")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _positive(value: Decimal, field: str) -> Decimal:
    if not value.is_finite() or value <= 0:
        raise RoundingInputError(field=field, value=value, expected="a finite number > 0")
    return value


def _non_negative(value: Decimal, field: str) -> Decimal:
    if not value.is_finite() or value < 0:
        raise RoundingInputError(field=field, value=value, expected="a finite number >= 0")
    return value


def _to_multiple(value: Decimal, unit: Decimal, rounding: str) -> Decimal:
    steps = (value / unit).to_integral_value(rounding=rounding)
    exponent = unit.as_tuple().exponent
    # Keep the unit's number of decimals (tick 0.10 gives 67000.10), integers for integral units.
    places = unit if isinstance(exponent, int) and exponent < 0 else Decimal(1)
    return (steps * unit).quantize(places)


def round_qty_down(qty: Decimal, step: Decimal) -> Decimal:
    """`qty` rounded down to a multiple of `step` (0 when below one step)."""
    _non_negative(qty, "quantity")
    _positive(step, "step_size")
    return _to_multiple(qty, step, ROUND_FLOOR)


def round_price_down(price: Decimal, tick: Decimal) -> Decimal:
    """`price` rounded down to a multiple of `tick`."""
    _non_negative(price, "price")
    _positive(tick, "tick_size")
    return _to_multiple(price, tick, ROUND_FLOOR)


def round_price_up(price: Decimal, tick: Decimal) -> Decimal:
    """`price` rounded up to a multiple of `tick`."""
    _non_negative(price, "price")
    _positive(tick, "tick_size")
    return _to_multiple(price, tick, ROUND_CEILING)


def round_price_nearest(price: Decimal, tick: Decimal) -> Decimal:
    """`price` rounded to the nearest multiple of `tick` (half up)."""
    _non_negative(price, "price")
    _positive(tick, "tick_size")
    return _to_multiple(price, tick, ROUND_HALF_UP)


def round_stop_away(stop: Decimal, *, side: Side, tick: Decimal) -> Decimal:
    """The stop rounded away from the entry: a long's stop down, a short's stop up."""
    return round_price_down(stop, tick) if side is Side.LONG else round_price_up(stop, tick)


def passive_entry_price(*, mid: Decimal, side: Side, rules: SymbolRules, offset_ticks: int) -> Decimal:
    """Entry LIMIT price on the passive side of `mid` (BOT_SPEC §9).

    A long buys at `mid` rounded down to the tick minus `offset_ticks` ticks; a short sells at
    `mid` rounded up plus `offset_ticks` ticks. The result is never on the aggressive side of
    the mid. Raises `RoundingInputError` when the price would leave the PRICE_FILTER range.
    """
    _positive(mid, "mid_price")
    if isinstance(offset_ticks, bool) or not isinstance(offset_ticks, int) or offset_ticks < 0:
        raise RoundingInputError(field="offset_ticks", value=offset_ticks, expected="an integer >= 0")
    tick = _positive(rules.tick_size, "tick_size")
    if side is Side.LONG:
        price = round_price_down(mid, tick) - tick * offset_ticks
    else:
        price = round_price_up(mid, tick) + tick * offset_ticks
    if price <= 0 or price < rules.min_price or price > rules.max_price:
        raise RoundingInputError(
            field="entry_price",
            value=price,
            expected=f"a price within the PRICE_FILTER range [{rules.min_price}, {rules.max_price}] and > 0",
        )
    return price

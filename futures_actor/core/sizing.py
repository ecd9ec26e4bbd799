"""Position sizing from risk, and the loss and cost estimates the risk limits compare (BOT_SPEC §8).

This module owns three computations:

- `size_entry`: risk_usd → exchange-exact quantity, all-in (BOT_SPEC §8 [resolved]): risk_usd
  bounds the whole loss of a trade stopped out, costs included. The loss per unit of quantity is
  `all_in_loss_per_unit`: the price distance from the entry fill (the limit price moved by the
  entry slippage allowance, adverse) to the stop fill (the stop moved by the stop slippage
  allowance, adverse), plus the entry fee on the entry fill and the exit taker fee on the stop
  fill. quantity = risk_usd / that, computed AFTER the stop has been rounded away from the entry,
  then rounded down to the step. This is the spec's notional = risk_usd / (stop_pct + entry fee +
  exit taker fee + stop slippage) computed exactly, with the entry slippage allowance added because
  paper limit fills are deliberately `paper_slippage_limit_pct` worse than their price. So the
  realized loss at the stop exceeds risk_usd only by a market gap past the allowances. Below the
  exchange minimum (min qty, min notional) the trade is refused, never rounded up.
- `worst_case_loss_usd`: the loss if the stop is hit with adverse slippage, plus the taker fee
  of the exit; what "total open risk" sums. A position without a known stop counts its whole
  notional (it can lose everything until protected).
- `round_trip_cost_pct`: the cost filter's estimate: entry maker fee + exit taker fee + stop
  slippage + one funding period at the current |rate|.
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal

import msgspec

from futures_actor.core.config import ExecutionConfig
from futures_actor.core.rounding import round_qty_down, round_stop_away, to_decimal
from futures_actor.core.types import Side, SymbolRules

__all__ = [
    "BELOW_EXCHANGE_MINIMUM",
    "PER_TRADE_RISK",
    "STOP_INVALID",
    "CostRates",
    "SizedEntry",
    "SizingRejected",
    "all_in_loss_per_unit",
    "round_trip_cost_pct",
    "size_entry",
    "worst_case_loss_usd",
]

BELOW_EXCHANGE_MINIMUM = "BELOW_EXCHANGE_MINIMUM"
PER_TRADE_RISK = "PER_TRADE_RISK"
STOP_INVALID = "STOP_INVALID"

# Enough digits that risk/distance keeps every digit a step of 1e-8 can matter for.
_PRECISION = 50


class CostRates(msgspec.Struct, frozen=True, kw_only=True):
    """The cost rates (fractions of price) that all-in sizing adds to the stop distance.

    All zero means sizing on the price distance alone (a building block; the risk engine always
    passes `CostRates.from_config`)."""

    entry_fee: float = 0.0  # the entry is a passive LIMIT: maker fee
    entry_slippage: float = 0.0  # allowance: the entry fill may be this much worse than the limit
    exit_fee: float = 0.0  # the stop fills as a market order: taker fee
    stop_slippage: float = 0.0  # allowance: the stop fill may be this much worse than the trigger

    @classmethod
    def from_config(cls, execution: ExecutionConfig) -> CostRates:
        """The configured fee rates and slippage allowances (paper: what the paper exchange applies)."""
        return cls(
            entry_fee=execution.maker_fee_pct,
            entry_slippage=execution.paper_slippage_limit_pct,
            exit_fee=execution.taker_fee_pct,
            stop_slippage=execution.paper_slippage_stop_pct,
        )

    @property
    def total(self) -> float:
        return self.entry_fee + self.entry_slippage + self.exit_fee + self.stop_slippage


class SizedEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An entry sized and rounded to the symbol's filters."""

    entry_price: Decimal
    stop_price: Decimal  # rounded away from the entry
    quantity: Decimal
    stop_distance: Decimal  # |entry − stop| after rounding
    notional_usd: Decimal  # quantity × entry
    loss_to_stop_usd: Decimal  # all-in: quantity × all_in_loss_per_unit ≤ risk_usd
    risk_usd: Decimal

    @property
    def stop_pct(self) -> float:
        return float(self.stop_distance / self.entry_price)


class SizingRejected(msgspec.Struct, frozen=True, kw_only=True):
    """Why an entry could not be sized: a reason code and the numbers compared."""

    code: str
    message: str
    values: dict[str, float | str] = msgspec.field(default_factory=dict)


def all_in_loss_per_unit(
    *, side: Side, entry_price: Decimal, stop_price: Decimal, costs: CostRates
) -> Decimal:
    """Loss of one unit of quantity entered at `entry_price` and stopped out at `stop_price`, all-in.

    Entry fill = entry moved adversely by the entry slippage allowance; stop fill = stop moved
    adversely by the stop slippage allowance; plus the entry fee on the entry fill and the exit fee
    on the stop fill. Long: e(1+es)(1+fe) − s(1−ss)(1−fx); short: s(1+ss)(1+fx) − e(1−es)(1−fe).
    """
    with decimal.localcontext() as ctx:
        ctx.prec = _PRECISION
        fe, es = _rate(costs.entry_fee), _rate(costs.entry_slippage)
        fx, ss = _rate(costs.exit_fee), _rate(costs.stop_slippage)
        one = Decimal(1)
        if side is Side.LONG:
            return entry_price * (one + es) * (one + fe) - stop_price * (one - ss) * (one - fx)
        return stop_price * (one + ss) * (one + fx) - entry_price * (one - es) * (one - fe)


def _rate(value: float) -> Decimal:
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"cost rate: got {value!r}, expected a fraction in [0, 1)")
    return Decimal(repr(value))


def size_entry(
    *,
    side: Side,
    entry_price: Decimal,
    stop_price: Decimal,
    risk_usd: float,
    rules: SymbolRules,
    costs: CostRates | None = None,
) -> SizedEntry | SizingRejected:
    """Size a trade losing at most `risk_usd` all-in between `entry_price` (on the tick) and the stop.

    `stop_price` may be off-tick; it is rounded away from the entry first. `costs` None sizes on
    the price distance alone. Raises `RoundingInputError` for a non-finite or negative price.
    """
    rates = costs if costs is not None else CostRates()
    risk = to_decimal(risk_usd, field="risk_usd")
    if risk <= 0:
        return SizingRejected(
            code=PER_TRADE_RISK,
            message="risk budget is not positive",
            values={"risk_usd": float(risk)},
        )
    if entry_price <= 0:
        return SizingRejected(
            code=STOP_INVALID, message="entry price is not positive", values={"entry_price": str(entry_price)}
        )
    stop = round_stop_away(stop_price, side=side, tick=rules.tick_size)
    distance = (entry_price - stop) * side.sign
    if stop <= 0 or stop < rules.min_price or distance <= 0:
        return SizingRejected(
            code=STOP_INVALID,
            message="stop is not on the losing side of the entry (or outside the price filter)",
            values={
                "side": str(side),
                "entry_price": str(entry_price),
                "stop_price": str(stop),
                "min_price": str(rules.min_price),
            },
        )
    unit = all_in_loss_per_unit(side=side, entry_price=entry_price, stop_price=stop, costs=rates)
    with decimal.localcontext() as ctx:
        ctx.prec = _PRECISION
        qty = round_qty_down(risk / unit, rules.step_size)
        if qty > rules.max_qty:
            qty = round_qty_down(rules.max_qty, rules.step_size)
        # Division is rounded to _PRECISION digits; never let that rounding add a step of risk.
        while qty > 0 and qty * unit > risk:
            qty -= rules.step_size
        notional = qty * entry_price
        loss = qty * unit
    if qty <= 0 or qty < rules.min_qty or notional < rules.min_notional:
        return SizingRejected(
            code=BELOW_EXCHANGE_MINIMUM,
            message="sized quantity is below the exchange minimum quantity or notional",
            values={
                "quantity": str(qty),
                "min_qty": str(rules.min_qty),
                "notional_usd": str(notional),
                "min_notional": str(rules.min_notional),
                "risk_usd": float(risk),
                "stop_distance": str(distance),
            },
        )
    return SizedEntry(
        entry_price=entry_price,
        stop_price=stop,
        quantity=qty,
        stop_distance=distance,
        notional_usd=notional,
        loss_to_stop_usd=loss,
        risk_usd=risk,
    )


def worst_case_loss_usd(
    *,
    side: Side,
    quantity: float,
    entry_price: float,
    stop_price: float | None,
    exit_fee_pct: float,
    stop_slippage_pct: float,
) -> float:
    """Loss if the stop fills with adverse slippage, plus the exit taker fee (≥ 0).

    Without a stop the whole notional (plus the fee) is at risk. A stop already beyond the entry
    in the profitable direction still costs the exit fee (and never counts as a gain).
    """
    qty = abs(quantity)
    if stop_price is None or not math.isfinite(stop_price) or stop_price <= 0:
        return qty * entry_price * (1.0 + exit_fee_pct)
    if side is Side.LONG:
        exit_price = stop_price * (1.0 - stop_slippage_pct)
        price_loss = (entry_price - exit_price) * qty
    else:
        exit_price = stop_price * (1.0 + stop_slippage_pct)
        price_loss = (exit_price - entry_price) * qty
    return max(price_loss, 0.0) + exit_price * qty * exit_fee_pct


def round_trip_cost_pct(execution: ExecutionConfig, *, funding_rate: float | None) -> float:
    """Estimated round-trip cost as a fraction of notional (BOT_SPEC §8.6).

    Entry maker fee + exit taker fee + stop slippage (`paper_slippage_stop_pct`, the configured
    estimate, in both modes) + |funding rate| for one period (0 when no funding data: replay).
    """
    funding = abs(funding_rate) if funding_rate is not None and math.isfinite(funding_rate) else 0.0
    return execution.maker_fee_pct + execution.taker_fee_pct + execution.paper_slippage_stop_pct + funding

"""The risk engine: one signal in, a sized `TradePlan` or a reasoned `RiskRejection` out (BOT_SPEC §8).

This module owns the order in which the rules of §8 are applied and the numbers each rejection
reports. `evaluate` is a pure function of the signal, a `PortfolioSnapshot` (equity, balance,
every open position and pending entry, ours, adopted and foreign alike, and the `RiskState`
calendar) and a `RiskContext` (symbol filters, prices, funding, correlations, mode, flags).
The PortfolioRisk actor is its only caller; it reserves the exposure of an approved plan before
deciding the next signal, which is what makes the limits hold under concurrency.

Rule order (first failure wins; each has its own code):
KILL_SWITCH, SAFE_MODE, DUPLICATE_CANDLE, WEEKLY_STOP (pause), DAILY_STOP, SYMBOL_BUSY,
MAX_POSITIONS, SAME_DIRECTION, LEVERAGE, PER_TRADE_RISK / STOP_INVALID / BELOW_EXCHANGE_MINIMUM
(sizing), CORRELATION, COST_FILTER, TOTAL_OPEN_RISK, MARGIN.

Policies settled here:
- Pending entries count as positions for every limit; counts are of distinct symbols (one-way
  mode: one position per symbol), loss sums are over every exposure listed.
- Entry price: LIMIT at the mid ± `execution.entry_offset_ticks` ticks on the passive side (the
  signal's reference price when no mid is known: replay). Stop and target are measured from that
  entry price (BOT_SPEC §6 [resolved]): the stop `signal.stop_pct` away, rounded away from the
  entry; the target `signal.target_r_multiple` times the rounded stop distance, on the tick.
- Size all-in (BOT_SPEC §8 [resolved]): the loss at the stop with the configured fees and slippage
  allowances (`sizing.CostRates.from_config`) is at most risk_usd.
- Correlation: unknown (insufficient history) with any held symbol ⇒ reject. Same direction and
  corr > `correlation_threshold` ⇒ reject. Opposite direction and |corr| ≥ `hedge_corr_max` ⇒
  hedge, allowed only if it shrinks |Σ sign × notional × beta| (an unknown beta ⇒ reject).
- Repeat decisions: the caller passes the last decided candle of the symbol
  (`RiskContext.last_decided_candle_ms`, kept by a `CandleDecisionGuard`); a signal on that
  candle or an older one is rejected `DUPLICATE_CANDLE`, so a rejection is never retried.
- The weekly-stop pause rejects with `WEEKLY_STOP` and `values["shadow_only"] = 1` in LIVE: the
  caller may then evaluate again with `shadow=True` against the shadow paper book.
"""

from __future__ import annotations

import enum
import math
from decimal import Decimal
from typing import Literal

import msgspec

from futures_actor.core.config import BotConfig
from futures_actor.core.correlation import CorrelationMatrix
from futures_actor.core.ids import new_trade_id
from futures_actor.core.models import RiskRejection, Signal, TradePlan
from futures_actor.core.risk_state import RiskState, entry_gate, risk_pct_now, shadow_only
from futures_actor.core.rounding import (
    RoundingInputError,
    passive_entry_price,
    round_price_nearest,
    round_stop_away,
    to_decimal,
)
from futures_actor.core.sizing import (
    CostRates,
    SizingRejected,
    all_in_loss_per_unit,
    round_trip_cost_pct,
    size_entry,
    worst_case_loss_usd,
)
from futures_actor.core.types import Regime, Side, SymbolRules

__all__ = [
    "CandleDecisionGuard",
    "Exposure",
    "PortfolioSnapshot",
    "RiskCode",
    "RiskContext",
    "RiskInputError",
    "evaluate",
    "evaluate_retry",
    "exposure_worst_case_loss",
    "open_risk_usd",
]

Mode = Literal["PAPER_LIVE", "LIVE"]


class RiskCode(enum.StrEnum):
    """Reason codes of `RiskRejection.code`."""

    KILL_SWITCH = "KILL_SWITCH"
    SAFE_MODE = "SAFE_MODE"
    DUPLICATE_CANDLE = "DUPLICATE_CANDLE"
    WEEKLY_STOP = "WEEKLY_STOP"
    DAILY_STOP = "DAILY_STOP"
    SYMBOL_BUSY = "SYMBOL_BUSY"
    MAX_POSITIONS = "MAX_POSITIONS"
    SAME_DIRECTION = "SAME_DIRECTION"
    LEVERAGE = "LEVERAGE"
    PER_TRADE_RISK = "PER_TRADE_RISK"
    STOP_INVALID = "STOP_INVALID"
    BELOW_EXCHANGE_MINIMUM = "BELOW_EXCHANGE_MINIMUM"
    CORRELATION = "CORRELATION"
    COST_FILTER = "COST_FILTER"
    TOTAL_OPEN_RISK = "TOTAL_OPEN_RISK"
    MARGIN = "MARGIN"


class RiskInputError(ValueError):
    """An input to `evaluate` is malformed (a bug upstream, not a market condition)."""

    def __init__(self, *, field: str, value: object, expected: str) -> None:
        super().__init__(f"{field}: got {value!r}, expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


class Exposure(msgspec.Struct, frozen=True, kw_only=True):
    """One open position or pending entry, ours, adopted or foreign, as risk sees it.

    `quantity` is the position size plus any still-working entry quantity of the same trade;
    `stop_price` is `None` when no stop is known (then the whole notional is at risk).
    """

    symbol: str
    side: Side
    quantity: float
    entry_price: float
    stop_price: float | None
    pending: bool = False  # an entry order still working (nothing or part filled)
    foreign: bool = False  # not placed by us (no client id prefix); counts all the same
    trade_id: str = ""
    leverage: float = 1.0  # unknown (foreign, adopted) ⇒ 1: the whole notional is margin

    @property
    def notional_usd(self) -> float:
        return abs(self.quantity) * self.entry_price

    @property
    def margin_usd(self) -> float:
        """Initial margin the venue holds for it (position or open entry order): notional / leverage."""
        return self.notional_usd / max(self.leverage, 1.0)


class PortfolioSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Account view at decision time.

    `available_balance_usd` is the venue's last report; with `wallet_balance_usd` known, the free
    margin rule also derives it (wallet + unrealized loss − margin of every exposure, reservations
    the venue has not seen yet included) and uses the smaller of the two (issue 10 #10)."""

    equity_usd: float
    available_balance_usd: float
    exposures: tuple[Exposure, ...] = ()
    risk_state: RiskState
    wallet_balance_usd: float | None = None
    unrealized_pnl_usd: float = 0.0

    def usable_balance_usd(self) -> float:
        """The venue's available balance as it stands with every exposure listed (see the class)."""
        if self.wallet_balance_usd is None:
            return self.available_balance_usd
        derived = (
            self.wallet_balance_usd
            + min(self.unrealized_pnl_usd, 0.0)
            - math.fsum(e.margin_usd for e in self.exposures)
        )
        return min(self.available_balance_usd, derived)


class RiskContext(msgspec.Struct, frozen=True, kw_only=True):
    """Market facts and flags for one decision."""

    rules: SymbolRules
    now_ms: int
    mode: Mode = "PAPER_LIVE"
    mid_price: float | None = None  # None: no book (replay) ⇒ the signal's reference price
    mark_price: float | None = None  # for the PERCENT_PRICE bound when known
    funding_rate: float | None = None  # None: no funding data (replay) ⇒ 0 in the cost filter
    correlations: CorrelationMatrix | None = None  # None ⇒ unknown ⇒ correlated with any holding
    safe_mode: bool = False
    kill_switch: bool = False
    last_decided_candle_ms: int | None = None
    shadow: bool = False  # deciding for the shadow paper book during the weekly-stop pause
    exploration: bool = False
    trail_atr_mult: float | None = None
    trail_after_r: float | None = None
    trade_id_salt: str = ""
    # An entry retry (BOT_SPEC §9 [resolved]): what earlier attempts of the trade filled, counted in
    # the retry's per-trade risk, open risk and margin.
    prior_fill_qty: float = 0.0
    prior_fill_price: float = 0.0


class CandleDecisionGuard:
    """Last decided 5m candle per symbol, so a symbol is decided at most once per candle.

    Owned (and mutated) by the PortfolioRisk actor: `last(symbol)` goes into
    `RiskContext.last_decided_candle_ms`, `mark(...)` is called after every verdict.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def last(self, symbol: str) -> int | None:
        return self._last.get(symbol)

    def mark(self, symbol: str, candle_open_time_ms: int) -> None:
        prev = self._last.get(symbol)
        if prev is None or candle_open_time_ms > prev:
            self._last[symbol] = candle_open_time_ms


def exposure_worst_case_loss(e: Exposure, cfg: BotConfig) -> float:
    return worst_case_loss_usd(
        side=e.side,
        quantity=e.quantity,
        entry_price=e.entry_price,
        stop_price=e.stop_price,
        exit_fee_pct=cfg.execution.taker_fee_pct,
        stop_slippage_pct=cfg.execution.paper_slippage_stop_pct,
    )


def open_risk_usd(exposures: tuple[Exposure, ...], cfg: BotConfig) -> float:
    """Σ worst-case loss to stop (exit fee and slippage included) of every exposure."""
    return sum(exposure_worst_case_loss(e, cfg) for e in exposures)


def _finite(value: float, field: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RiskInputError(field=field, value=value, expected="a finite number")
    if positive and not value > 0:
        raise RiskInputError(field=field, value=value, expected="a finite number > 0")
    return float(value)


def _validate(signal: Signal, portfolio: PortfolioSnapshot, ctx: RiskContext) -> None:
    if signal.symbol != ctx.rules.symbol:
        raise RiskInputError(
            field="ctx.rules.symbol", value=ctx.rules.symbol, expected=f"the signal's symbol {signal.symbol}"
        )
    _finite(signal.entry_price, "signal.entry_price", positive=True)
    _finite(signal.stop_price, "signal.stop_price", positive=True)
    if not 0.0 < _finite(signal.stop_pct, "signal.stop_pct", positive=True) < 1.0:
        raise RiskInputError(field="signal.stop_pct", value=signal.stop_pct, expected="a fraction in (0, 1)")
    if signal.target_r_multiple is not None:
        _finite(signal.target_r_multiple, "signal.target_r_multiple", positive=True)
    _finite(signal.leverage, "signal.leverage")
    _finite(portfolio.equity_usd, "portfolio.equity_usd")
    _finite(portfolio.available_balance_usd, "portfolio.available_balance_usd")
    if portfolio.wallet_balance_usd is not None:
        _finite(portfolio.wallet_balance_usd, "portfolio.wallet_balance_usd")
    _finite(portfolio.unrealized_pnl_usd, "portfolio.unrealized_pnl_usd")
    if signal.regime is Regime.CHOP_NO_TRADE:
        raise RiskInputError(field="signal.regime", value=str(signal.regime), expected="a tradable regime")
    for name in ("mid_price", "mark_price"):
        v = getattr(ctx, name)
        if v is not None:
            _finite(v, f"ctx.{name}", positive=True)
    if ctx.funding_rate is not None:
        _finite(ctx.funding_rate, "ctx.funding_rate")
    for i, e in enumerate(portfolio.exposures):
        _finite(e.quantity, f"portfolio.exposures[{i}].quantity")
        _finite(e.entry_price, f"portfolio.exposures[{i}].entry_price", positive=True)
        if e.stop_price is not None:
            _finite(e.stop_price, f"portfolio.exposures[{i}].stop_price")


def _reject(code: RiskCode, message: str, **values: float | str) -> RiskRejection:
    return RiskRejection(code=code.value, message=message, values=dict(values))


def evaluate(
    signal: Signal, portfolio: PortfolioSnapshot, ctx: RiskContext, cfg: BotConfig
) -> TradePlan | RiskRejection:
    """Apply every rule of BOT_SPEC §8 to `signal`; the first failing rule gives the rejection.

    `portfolio.risk_state` must already be rolled to `ctx.now_ms`. Raises `RiskInputError` for
    malformed inputs (non-finite numbers, a symbol mismatch).
    """
    _validate(signal, portfolio, ctx)
    risk = cfg.risk
    symbol, side = signal.symbol, signal.side
    if ctx.kill_switch:
        return _reject(RiskCode.KILL_SWITCH, "kill switch engaged: no new entries")
    if ctx.safe_mode:
        return _reject(RiskCode.SAFE_MODE, "safe mode: no new entries")
    if ctx.last_decided_candle_ms is not None and signal.candle_open_time_ms <= ctx.last_decided_candle_ms:
        return _reject(
            RiskCode.DUPLICATE_CANDLE,
            "this symbol was already decided on this candle",
            candle_open_time_ms=float(signal.candle_open_time_ms),
            last_decided_candle_ms=float(ctx.last_decided_candle_ms),
        )

    state = portfolio.risk_state
    # The shadow book exists because of the pause: it skips the pause, not the other stops.
    gate_state = msgspec.structs.replace(state, pause_until_ms=0) if ctx.shadow else state
    gate = entry_gate(gate_state, now_ms=ctx.now_ms, cfg=risk)
    if not gate.allowed:
        values = dict(gate.values)
        if gate.code == RiskCode.WEEKLY_STOP:
            values["shadow_only"] = 1.0 if shadow_only(state, now_ms=ctx.now_ms, mode=ctx.mode) else 0.0
        return RiskRejection(code=gate.code, message=gate.message, values=values)

    exposures = portfolio.exposures
    held = {e.symbol for e in exposures}
    if symbol in held:
        busy = [e for e in exposures if e.symbol == symbol]
        return _reject(
            RiskCode.SYMBOL_BUSY,
            "the symbol already has a position or a working entry",
            existing_side=str(busy[0].side),
            pending=1.0 if any(e.pending for e in busy) else 0.0,
        )
    positions = len(held)
    if positions + 1 > risk.max_open_positions:
        return _reject(
            RiskCode.MAX_POSITIONS,
            "maximum open positions (pending entries included) reached",
            open_positions=float(positions),
            max_open_positions=float(risk.max_open_positions),
        )
    same_dir = len({e.symbol for e in exposures if e.side is side})
    if same_dir + 1 > risk.max_same_direction_positions:
        return _reject(
            RiskCode.SAME_DIRECTION,
            "maximum positions in this direction reached",
            side=str(side),
            same_direction_positions=float(same_dir),
            max_same_direction_positions=float(risk.max_same_direction_positions),
        )
    if not 1.0 <= signal.leverage <= risk.max_leverage:
        return _reject(
            RiskCode.LEVERAGE,
            "leverage outside [1, risk.max_leverage]",
            leverage=signal.leverage,
            max_leverage=risk.max_leverage,
        )

    # Sizing (rules 1 and 12).
    equity = portfolio.equity_usd
    risk_pct = risk_pct_now(state, now_ms=ctx.now_ms, cfg=risk)
    risk_usd = equity * risk_pct
    if not risk_usd > 0:
        return _reject(
            RiskCode.PER_TRADE_RISK,
            "no risk budget (equity not positive)",
            equity_usd=equity,
            risk_pct=risk_pct,
        )
    reference = ctx.mid_price if ctx.mid_price is not None else signal.entry_price
    try:
        entry = passive_entry_price(
            mid=to_decimal(reference, field="mid_price"),
            side=side,
            rules=ctx.rules,
            offset_ticks=cfg.execution.entry_offset_ticks,
        )
    except RoundingInputError as exc:
        return _reject(RiskCode.STOP_INVALID, f"entry price not placeable: {exc}", mid_price=reference)
    if ctx.mark_price is not None and not _within_percent_price(entry, ctx.mark_price, ctx.rules):
        return _reject(
            RiskCode.STOP_INVALID,
            "entry price outside the PERCENT_PRICE band around the mark price",
            entry_price=str(entry),
            mark_price=ctx.mark_price,
        )
    stop_pct = to_decimal(signal.stop_pct, field="signal.stop_pct")
    costs = CostRates.from_config(cfg.execution)
    stop = round_stop_away(entry * (1 - side.sign * stop_pct), side=side, tick=ctx.rules.tick_size)
    prior_qty = to_decimal(ctx.prior_fill_qty, field="ctx.prior_fill_qty")
    prior_loss = Decimal(0)
    if prior_qty > 0:  # a retry after a partial fill: the filled part takes its share of the risk first
        prior_price = to_decimal(ctx.prior_fill_price, field="ctx.prior_fill_price")
        prior_loss = prior_qty * max(
            all_in_loss_per_unit(side=side, entry_price=prior_price, stop_price=stop, costs=costs), Decimal(0)
        )
    budget = risk_usd - float(prior_loss)
    if not budget > 0:
        return _reject(
            RiskCode.PER_TRADE_RISK,
            "the quantity already filled uses the whole per-trade risk at the retry's stop",
            prior_fill_qty=ctx.prior_fill_qty,
            prior_loss_usd=float(prior_loss),
            risk_usd=risk_usd,
        )
    sized = size_entry(
        side=side, entry_price=entry, stop_price=stop, risk_usd=budget, rules=ctx.rules, costs=costs
    )
    if isinstance(sized, SizingRejected):
        return RiskRejection(code=sized.code, message=sized.message, values=sized.values)
    if (
        float(sized.loss_to_stop_usd + prior_loss) > risk_usd
    ):  # size_entry guarantees it; checked all the same
        return _reject(
            RiskCode.PER_TRADE_RISK,
            "loss to stop exceeds the per-trade risk",
            loss_to_stop_usd=float(sized.loss_to_stop_usd + prior_loss),
            risk_usd=risk_usd,
        )
    prior_notional = ctx.prior_fill_qty * ctx.prior_fill_price
    notional = float(sized.notional_usd)
    qty = float(sized.quantity)
    entry_f = float(sized.entry_price)
    stop_f = float(sized.stop_price)

    # Correlation (rule 5).
    corr_result = _correlation(signal, notional, exposures, ctx.correlations, cfg)
    if isinstance(corr_result, RiskRejection):
        return corr_result
    bucket, corr_max = corr_result

    # Cost filter (rule 6).
    cost_pct = round_trip_cost_pct(cfg.execution, funding_rate=ctx.funding_rate)
    cost_usd = cost_pct * notional
    if cost_usd > risk.max_cost_r * risk_usd:
        return _reject(
            RiskCode.COST_FILTER,
            "estimated round-trip cost exceeds max_cost_r × risk_usd",
            cost_usd=cost_usd,
            cost_pct=cost_pct,
            notional_usd=notional,
            limit_usd=risk.max_cost_r * risk_usd,
            risk_usd=risk_usd,
        )

    # Total open risk (rule 2).
    new_loss = worst_case_loss_usd(
        side=side,
        quantity=qty,
        entry_price=entry_f,
        stop_price=stop_f,
        exit_fee_pct=cfg.execution.taker_fee_pct,
        stop_slippage_pct=cfg.execution.paper_slippage_stop_pct,
    )
    if ctx.prior_fill_qty > 0:
        new_loss += worst_case_loss_usd(
            side=side,
            quantity=ctx.prior_fill_qty,
            entry_price=ctx.prior_fill_price,
            stop_price=stop_f,
            exit_fee_pct=cfg.execution.taker_fee_pct,
            stop_slippage_pct=cfg.execution.paper_slippage_stop_pct,
        )
    existing = open_risk_usd(exposures, cfg)
    limit = equity * risk.max_total_open_risk_pct
    if existing + new_loss > limit:
        return _reject(
            RiskCode.TOTAL_OPEN_RISK,
            "total worst-case open risk would exceed the limit",
            open_risk_usd=existing,
            new_trade_risk_usd=new_loss,
            limit_usd=limit,
            max_total_open_risk_pct=risk.max_total_open_risk_pct,
        )

    # Free margin (rule 7), on the venue's available balance: wallet minus the margin of positions
    # and open entry orders, our reservations included, so that an approval is an order it accepts.
    margin = notional / signal.leverage
    available = portfolio.usable_balance_usd() - prior_notional / max(signal.leverage, 1.0)
    free = available * (1.0 - risk.margin_buffer_pct)
    if margin > free:
        return _reject(
            RiskCode.MARGIN,
            "not enough free margin",
            margin_required_usd=margin,
            available_usd=available,
            venue_available_usd=portfolio.available_balance_usd,
            exposures_margin_usd=math.fsum(e.margin_usd for e in exposures),
            usable_usd=free,
            margin_buffer_pct=risk.margin_buffer_pct,
        )

    target = _target(signal, sized.entry_price, sized.stop_distance, ctx.rules)
    trade_id = new_trade_id(
        symbol=symbol,
        strategy=signal.strategy,
        candle_open_time_ms=signal.candle_open_time_ms,
        salt=ctx.trade_id_salt,
    )
    return TradePlan(
        trade_id=trade_id,
        symbol=symbol,
        strategy=signal.strategy,
        side=side,
        regime=signal.regime,
        confidence_score=signal.regime_confidence,
        candle_open_time_ms=signal.candle_open_time_ms,
        created_ms=ctx.now_ms,
        entry_price=sized.entry_price,
        quantity=sized.quantity + prior_qty,
        stop_price=sized.stop_price,
        target_price=target,
        leverage=signal.leverage,
        equity_usd=equity,
        risk_pct=risk_pct,
        risk_usd=risk_usd,
        stop_pct=sized.stop_pct,
        notional_usd=notional + prior_notional,
        margin_used_usd=margin + prior_notional / max(signal.leverage, 1.0),
        trail_atr_mult=ctx.trail_atr_mult,
        trail_after_r=ctx.trail_after_r,
        exploration=ctx.exploration,
        correlation_bucket=bucket,
        bucket_corr_max=corr_max,
        open_positions_count=positions + 1,
        open_risk_pct=(existing + new_loss) / equity,
    )


def _target_r(signal: Signal) -> float | None:
    """The signal's target in R: `target_r_multiple`, else derived from its reference levels."""
    if signal.target_r_multiple is not None:
        return signal.target_r_multiple if signal.target_r_multiple > 0 else None
    if signal.target_price is None or not (math.isfinite(signal.target_price) and signal.target_price > 0):
        return None
    risk = (signal.entry_price - signal.stop_price) * signal.side.sign
    reward = (signal.target_price - signal.entry_price) * signal.side.sign
    return reward / risk if risk > 0 and reward > 0 else None


def _target(signal: Signal, entry: Decimal, distance: Decimal, rules: SymbolRules) -> Decimal | None:
    """Target `r` × the rounded stop distance from the entry order's price, on the nearest tick."""
    r = _target_r(signal)
    if r is None:
        return None
    raw = entry + signal.side.sign * to_decimal(r, field="signal.target_r_multiple") * distance
    target = round_price_nearest(raw, rules.tick_size)
    return target if (target - entry) * signal.side.sign > 0 else None


def _within_percent_price(price: Decimal, mark: float, rules: SymbolRules) -> bool:
    m = to_decimal(mark, field="mark_price")
    if rules.multiplier_up is not None and price > m * rules.multiplier_up:
        return False
    return not (rules.multiplier_down is not None and price < m * rules.multiplier_down)


def _correlation(
    signal: Signal,
    notional: float,
    exposures: tuple[Exposure, ...],
    matrix: CorrelationMatrix | None,
    cfg: BotConfig,
) -> tuple[str, float] | RiskRejection:
    """(bucket label, highest |corr| with a holding) or the CORRELATION rejection."""
    risk = cfg.risk
    symbol, side = signal.symbol, signal.side
    bucket = "+".join(matrix.bucket(symbol, risk.correlation_threshold)) if matrix is not None else symbol
    corr_max = 0.0
    hedges: list[str] = []
    for other in sorted({e.symbol for e in exposures}):
        r = matrix.correlation(symbol, other) if matrix is not None else None
        if r is None:
            return _reject(
                RiskCode.CORRELATION,
                "insufficient correlation history with a held symbol: treated as correlated",
                held_symbol=other,
                bucket=bucket,
                lookback_hours=float(cfg.timeframes.corr_lookback_hours),
            )
        corr_max = max(corr_max, abs(r))
        other_sides = {e.side for e in exposures if e.symbol == other}
        if side in other_sides and r > risk.correlation_threshold:
            return _reject(
                RiskCode.CORRELATION,
                "same direction as a position in the same correlation bucket",
                held_symbol=other,
                corr=r,
                correlation_threshold=risk.correlation_threshold,
                bucket=bucket,
                bucket_corr_max=corr_max,
            )
        if side.opposite in other_sides and abs(r) >= risk.hedge_corr_max:
            hedges.append(other)
    if hedges:
        before, after = _net_beta_notional(signal, notional, exposures, matrix)
        if before is None or after is None or not abs(after) < abs(before):
            return _reject(
                RiskCode.CORRELATION,
                "hedge does not reduce the absolute net beta-weighted notional",
                hedged_symbols=",".join(hedges),
                net_beta_notional_before=before if before is not None else "unknown",
                net_beta_notional_after=after if after is not None else "unknown",
                bucket=bucket,
                bucket_corr_max=corr_max,
            )
    return bucket, corr_max


def _net_beta_notional(
    signal: Signal, notional: float, exposures: tuple[Exposure, ...], matrix: CorrelationMatrix | None
) -> tuple[float | None, float | None]:
    if matrix is None:
        return None, None
    before = 0.0
    for e in exposures:
        b = matrix.beta_of(e.symbol)
        if b is None:
            return None, None
        before += e.side.sign * e.notional_usd * b
    b_new = matrix.beta_of(signal.symbol)
    if b_new is None:
        return before, None
    return before, before + signal.side.sign * notional * b_new


def evaluate_retry(
    plan: TradePlan,
    *,
    mid: float | None,
    filled_qty: float,
    filled_avg_price: float,
    stop_pct: float,
    target_r_multiple: float | None,
    portfolio: PortfolioSnapshot,
    ctx: RiskContext,
    cfg: BotConfig,
) -> TradePlan | RiskRejection:
    """An entry retry as a new decision at the new price (BOT_SPEC §9 [resolved]).

    The signal of `plan` at `mid` (the plan's entry price when no mid is known) goes through every
    rule of `evaluate` again: stop `stop_pct` and target `target_r_multiple` R from the new entry
    price, size from the current equity with `filled_qty` (filled by earlier attempts at
    `filled_avg_price`) counted in the per-trade risk, open risk and margin. `portfolio` must not
    hold this trade's own reservation. The plan keeps the trade id; its quantity is the trade's
    total (filled included).
    """
    reference = mid if mid is not None and math.isfinite(mid) and mid > 0 else float(plan.entry_price)
    signal = Signal(
        symbol=plan.symbol,
        strategy=plan.strategy,
        side=plan.side,
        regime=plan.regime,
        regime_confidence=plan.confidence_score,
        candle_open_time_ms=plan.candle_open_time_ms,
        entry_price=reference,
        stop_price=reference * (1.0 - plan.side.sign * stop_pct),
        stop_pct=stop_pct,
        target_price=None,
        leverage=plan.leverage,
        atr=0.0,
        reason="entry retry",
        target_r_multiple=target_r_multiple,
    )
    retry_ctx = msgspec.structs.replace(
        ctx,
        mid_price=reference,
        last_decided_candle_ms=None,
        prior_fill_qty=filled_qty,
        prior_fill_price=filled_avg_price,
        exploration=plan.exploration,
        trail_atr_mult=plan.trail_atr_mult,
        trail_after_r=plan.trail_after_r,
    )
    result = evaluate(signal, portfolio, retry_ctx, cfg)
    if isinstance(result, RiskRejection):
        return result
    return msgspec.structs.replace(
        result, trade_id=plan.trade_id, confidence_score=plan.confidence_score, exploration=plan.exploration
    )

"""Property tests: an approved plan never breaks a limit; rounding never adds risk (BOT_SPEC §8)."""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from futures_actor.core.config import BotConfig, RiskConfig
from futures_actor.core.correlation import CorrelationMatrix
from futures_actor.core.models import Signal, TradePlan
from futures_actor.core.risk import Exposure, PortfolioSnapshot, RiskContext, evaluate
from futures_actor.core.risk_state import DAY_MS, entry_gate, new_risk_state
from futures_actor.core.rounding import passive_entry_price, to_decimal
from futures_actor.core.sizing import SizedEntry, round_trip_cost_pct, size_entry, worst_case_loss_usd
from futures_actor.core.types import Regime, Side, SymbolRules

NOW = 1_736_337_600_000  # 2025-01-08 12:00 UTC
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT", "DOGEUSDT", "OPUSDT", "INJUSDT")
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ticks = st.sampled_from(
    [Decimal("0.10"), Decimal("0.01"), Decimal("0.0001"), Decimal("0.0000001"), Decimal("1")]
)
steps = st.sampled_from([Decimal("0.001"), Decimal("0.1"), Decimal("1"), Decimal("0.00001")])
sides = st.sampled_from([Side.LONG, Side.SHORT])


@st.composite
def symbol_rules(draw: st.DrawFn, symbol: str) -> SymbolRules:
    tick = draw(ticks)
    step = draw(steps)
    return SymbolRules(
        symbol=symbol,
        tick_size=tick,
        step_size=step,
        min_qty=step * draw(st.integers(1, 5)),
        min_notional=Decimal(draw(st.sampled_from([0, 5, 20, 100]))),
        min_price=tick,
    )


@st.composite
def exposures(draw: st.DrawFn, equity: float) -> tuple[Exposure, ...]:
    out = []
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 1, 2, 3]))):
        side = draw(sides)
        entry = draw(st.floats(0.01, 100_000))
        stop_pct = draw(st.floats(0.001, 0.05))
        stop = None if draw(st.integers(0, 9)) == 0 else entry * (1 - side.sign * stop_pct)
        notional = abs(equity) * draw(st.floats(0.0, 1.5))
        out.append(
            Exposure(
                symbol=draw(st.sampled_from(SYMBOLS[1:])),
                side=side,
                quantity=notional / entry,
                entry_price=entry,
                stop_price=stop,
                pending=draw(st.booleans()),
                foreign=draw(st.booleans()),
            )
        )
    return tuple(out)


@st.composite
def matrices(draw: st.DrawFn) -> CorrelationMatrix | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    corr: dict[str, dict[str, float]] = {s: {} for s in SYMBOLS}
    for i, a in enumerate(SYMBOLS):
        for b in SYMBOLS[i + 1 :]:
            if draw(st.integers(0, 9)) == 0:
                continue
            r = draw(st.floats(-1.0, 1.0))
            corr[a][b] = corr[b][a] = r
    betas = {s: draw(st.floats(-3.0, 3.0)) for s in SYMBOLS if draw(st.integers(0, 9)) > 0}
    return CorrelationMatrix(as_of_ms=NOW, lookback=72, reference_symbol="BTCUSDT", corr=corr, betas=betas)


@st.composite
def configs(draw: st.DrawFn) -> BotConfig:
    max_pos = draw(st.integers(1, 4))
    risk = RiskConfig(
        max_open_positions=max_pos,
        max_same_direction_positions=draw(st.integers(1, max_pos)),
        max_leverage=draw(st.sampled_from([1.0, 1.5, 2.0])),
        margin_buffer_pct=draw(st.sampled_from([0.0, 0.1, 0.5])),
        max_cost_r=draw(st.sampled_from([0.1, 0.25, 1.0])),
    )
    return msgspec.structs.replace(BotConfig(), risk=risk)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Signal, PortfolioSnapshot, RiskContext, BotConfig]:
    cfg = draw(configs())
    symbol = draw(st.sampled_from(SYMBOLS[:2]))
    side = draw(sides)
    entry = draw(st.floats(0.001, 200_000))
    stop_pct = draw(st.floats(0.0005, 0.2))
    leverage = min(draw(st.sampled_from([1.0, 1.25, 1.5, 2.0])), cfg.risk.max_leverage)
    if draw(st.integers(0, 9)) == 0:
        leverage = draw(st.sampled_from([0.5, 2.5, cfg.risk.max_leverage + 0.1]))
    signal = Signal(
        symbol=symbol,
        strategy="trend_breakout",
        side=side,
        regime=Regime.TREND,
        regime_confidence=0.6,
        candle_open_time_ms=NOW - 300_000,
        entry_price=entry,
        stop_price=entry * (1 - side.sign * stop_pct),
        stop_pct=stop_pct,
        target_price=None,
        leverage=leverage,
        atr=1.0,
    )
    equity = (
        draw(st.floats(-1_000, 1_000_000)) if draw(st.integers(0, 9)) == 0 else draw(st.floats(1_000, 1e6))
    )
    rs = new_risk_state(now_ms=NOW - 3_600_000, equity_usd=max(equity, 1.0))
    rs = msgspec.structs.replace(
        rs,
        realized_pnl_day=draw(
            st.sampled_from([0.0, 0.01, -0.01, -0.039, 0.02, 0.0, 0.03, -0.02, -0.03, -0.04])
        )
        * rs.day_start_equity,
        pause_until_ms=draw(st.sampled_from([0, 0, 0, 0, 0, 0, 0, 0, 0, NOW + DAY_MS])),
        reduced_risk_until_ms=draw(st.sampled_from([0, NOW + 3 * DAY_MS])),
    )
    portfolio = PortfolioSnapshot(
        equity_usd=equity,
        available_balance_usd=abs(equity) * draw(st.floats(0.0, 2.0)),
        exposures=draw(exposures(equity)),
        risk_state=rs,
    )
    mid = draw(st.one_of(st.none(), st.floats(0.9, 1.1).map(lambda k: entry * k)))
    ctx = RiskContext(
        rules=draw(symbol_rules(symbol)),
        now_ms=NOW,
        mode=draw(st.sampled_from(["PAPER_LIVE", "LIVE"])),
        mid_price=mid,
        funding_rate=draw(st.one_of(st.none(), st.floats(-0.003, 0.003))),
        correlations=draw(matrices()),
        shadow=draw(st.booleans()),
    )
    return signal, portfolio, ctx, cfg


class TestApprovedPlanKeepsEveryLimit:
    """Whatever the book, prices and filters, an approval respects every limit of §8."""

    @PROPS
    @given(scenarios())
    def test_limits(self, scenario: tuple[Signal, PortfolioSnapshot, RiskContext, BotConfig]) -> None:
        signal, portfolio, ctx, cfg = scenario
        result = evaluate(signal, portfolio, ctx, cfg)
        if not isinstance(result, TradePlan):
            assert result.code
            return
        plan, risk, rules = result, cfg.risk, ctx.rules
        equity = portfolio.equity_usd
        # Gates.
        rs = portfolio.risk_state
        assert ctx.shadow or not rs.paused(NOW)
        gate_state = msgspec.structs.replace(rs, pause_until_ms=0) if ctx.shadow else rs
        assert entry_gate(gate_state, now_ms=NOW, cfg=risk).allowed
        # Per-trade risk, after rounding.
        assert plan.risk_usd <= equity * risk.risk_per_trade_pct * (1 + 1e-12)
        distance = (plan.entry_price - plan.stop_price) * plan.side.sign
        assert distance > 0
        assert plan.quantity * distance <= to_decimal(plan.risk_usd, field="risk_usd")
        # Positions, direction, symbol.
        held = {e.symbol for e in portfolio.exposures}
        assert plan.symbol not in held
        assert len(held) + 1 <= risk.max_open_positions
        assert len({e.symbol for e in portfolio.exposures if e.side is plan.side}) + 1 <= (
            risk.max_same_direction_positions
        )
        # Leverage and margin.
        assert 1.0 <= plan.leverage <= risk.max_leverage <= 2.0
        assert plan.margin_used_usd <= portfolio.available_balance_usd * (1 - risk.margin_buffer_pct) * (
            1 + 1e-12
        )
        # Total open risk, recomputed independently.
        fee, slip = cfg.execution.taker_fee_pct, cfg.execution.paper_slippage_stop_pct
        total = sum(
            worst_case_loss_usd(
                side=e.side,
                quantity=e.quantity,
                entry_price=e.entry_price,
                stop_price=e.stop_price,
                exit_fee_pct=fee,
                stop_slippage_pct=slip,
            )
            for e in portfolio.exposures
        )
        total += worst_case_loss_usd(
            side=plan.side,
            quantity=float(plan.quantity),
            entry_price=float(plan.entry_price),
            stop_price=float(plan.stop_price),
            exit_fee_pct=fee,
            stop_slippage_pct=slip,
        )
        assert total <= equity * risk.max_total_open_risk_pct * (1 + 1e-9)
        # Cost filter.
        cost = round_trip_cost_pct(cfg.execution, funding_rate=ctx.funding_rate) * plan.notional_usd
        assert cost <= risk.max_cost_r * plan.risk_usd * (1 + 1e-9)
        # Exchange filters.
        assert plan.quantity >= rules.min_qty
        assert plan.quantity * plan.entry_price >= rules.min_notional
        assert plan.quantity % rules.step_size == 0
        assert plan.entry_price % rules.tick_size == 0
        assert plan.stop_price % rules.tick_size == 0
        # Correlation: never the same direction as a bucket peer, never unknown.
        for e in portfolio.exposures:
            assert ctx.correlations is not None
            r = ctx.correlations.correlation(plan.symbol, e.symbol)
            assert r is not None
            if e.side is plan.side:
                assert r <= risk.correlation_threshold


class TestRoundingNeverAddsRisk:
    """size_entry: loss to the rounded stop ≤ risk_usd; the stop only moves away from the entry."""

    @PROPS
    @given(
        side=sides,
        tick=ticks,
        step=steps,
        entry_units=st.integers(1, 10**9),
        stop_frac=st.floats(0.0001, 0.5),
        risk_usd=st.floats(0.01, 1e6),
    )
    def test_loss_bounded(
        self, side: Side, tick: Decimal, step: Decimal, entry_units: int, stop_frac: float, risk_usd: float
    ) -> None:
        rules = SymbolRules(symbol="X", tick_size=tick, step_size=step, min_qty=step)
        entry = tick * entry_units
        raw_stop = entry * (1 - side.sign * to_decimal(stop_frac, field="f"))
        result = size_entry(side=side, entry_price=entry, stop_price=raw_stop, risk_usd=risk_usd, rules=rules)
        if not isinstance(result, SizedEntry):
            return
        assert result.quantity * result.stop_distance <= to_decimal(risk_usd, field="risk_usd")
        assert result.stop_distance >= (entry - raw_stop) * side.sign
        assert result.quantity % step == 0
        # Not needlessly small: one more step would exceed the budget (unless capped by max_qty).
        if result.quantity < rules.max_qty:
            assert (result.quantity + step) * result.stop_distance > to_decimal(risk_usd, field="risk_usd")

    @PROPS
    @given(side=sides, tick=ticks, mid=st.floats(1e-3, 1e6), offset=st.integers(0, 20))
    def test_entry_is_passive(self, side: Side, tick: Decimal, mid: float, offset: int) -> None:
        rules = SymbolRules(symbol="X", tick_size=tick, step_size=Decimal(1), min_qty=Decimal(1))
        m = to_decimal(mid, field="mid")
        if m < tick * (offset + 2):
            return
        price = passive_entry_price(mid=m, side=side, rules=rules, offset_ticks=offset)
        assert price % tick == 0
        gap = (m - price) * side.sign  # ≥ 0: never on the aggressive side
        assert tick * offset <= gap < tick * (offset + 1)
        assert math.isfinite(float(price))

"""The shadow book's trailing (issue 10 #6): shadow trades of trailing strategies exit like live ones."""

from __future__ import annotations

from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from futures_actor.actors.messages import AmendStop, CandleClosed, PositionUpdated
from futures_actor.actors.shadow_trailer import ShadowTrailer
from futures_actor.core.features import ATR_PERIOD
from futures_actor.core.types import Candle, Side

MIN5 = 300_000
T0 = 1_736_000_000_000 - 1_736_000_000_000 % MIN5
SYM = "BTCUSDT"


def candle(
    i: int, close: float, *, symbol: str = SYM, interval: str = "5m", spread: float = 1.0
) -> CandleClosed:
    c = Candle(
        open_time_ms=T0 + i * MIN5,
        open=close,
        high=close + spread,
        low=close - spread,
        close=close,
        volume=1.0,
    )
    return CandleClosed(symbol=symbol, interval=interval, candle=c, source="replay")


def position(
    *, qty: str = "1", side: Side = Side.LONG, stop: str = "99", after_r: float | None = 0.0
) -> PositionUpdated:
    return PositionUpdated(
        trade_id="shadow-1",
        symbol=SYM,
        side=side,
        qty=Decimal(qty),
        entry_price=Decimal("100"),
        stop_price=Decimal(stop),
        initial_stop_price=Decimal("99") if side is Side.LONG else Decimal("101"),
        trail_atr_mult=1.5 if after_r is not None else None,
        trail_after_r=after_r,
    )


def warm(trailer: ShadowTrailer, price: float = 100.0) -> int:
    """Closes until the ATR is defined; returns the next candle index."""
    for i in range(ATR_PERIOD + 1):
        assert trailer.on_candle(candle(i, price)) == []
    assert trailer.atr(SYM) == pytest.approx(2.0)
    return ATR_PERIOD + 1


def test_a_breakout_shadow_trade_trails_toward_profit_only() -> None:
    trailer = ShadowTrailer(interval="5m")
    i = warm(trailer)
    trailer.on_position(position(after_r=0.0))  # breakout: trailing from the fill
    stops: list[float] = []
    for k, close in enumerate([104.0, 106.0, 105.0, 109.0]):
        amends = trailer.on_candle(candle(i + k, close))
        stops.extend(a.new_stop for a in amends)
        assert all(isinstance(a, AmendStop) and a.trade_id == "shadow-1" and a.symbol == SYM for a in amends)
    assert stops, "the shadow trade was never trailed"
    assert stops == sorted(stops)  # only ever toward profit
    assert stops[-1] > 100.0
    state = trailer.trailing_state("shadow-1")
    assert state is not None
    assert state.active


def test_pullback_waits_for_after_r_and_short_trails_down() -> None:
    trailer = ShadowTrailer(interval="5m")
    i = warm(trailer)
    trailer.on_position(position(after_r=1.0))
    assert trailer.on_candle(candle(i, 100.5)) == []  # 0.5 R: not active yet
    assert trailer.on_candle(candle(i + 1, 104.0)) != []  # 4 R: active, 104 - 1.5 x ATR > 99
    short = ShadowTrailer(interval="5m")
    j = warm(short)
    short.on_position(position(side=Side.SHORT, stop="101", after_r=0.0))
    (amend,) = short.on_candle(candle(j, 96.0))
    assert amend.new_stop < 101.0


def test_flat_or_untrailed_positions_are_not_trailed_and_other_symbols_untouched() -> None:
    trailer = ShadowTrailer(interval="5m")
    i = warm(trailer)
    trailer.on_position(position(after_r=None))  # a strategy without trailing
    assert trailer.on_candle(candle(i, 110.0)) == []
    trailer.on_position(position(after_r=0.0))
    assert trailer.on_candle(candle(i + 1, 110.0, symbol="ETHUSDT")) == []
    assert trailer.on_candle(candle(i + 1, 110.0, interval="1h")) == []
    with capture_logs() as logs:
        trailer.on_position(position(qty="0"))
    assert trailer.trailing_state("shadow-1") is None
    assert any(e["event"] == "shadow_trail_cleared" for e in logs)
    assert trailer.on_candle(candle(i + 1, 112.0)) == []


def test_a_gap_restarts_the_atr_and_bad_input_is_logged_not_raised() -> None:
    trailer = ShadowTrailer(interval="5m")
    i = warm(trailer)
    trailer.on_position(position(after_r=0.0))
    assert trailer.on_candle(candle(i + 5, 120.0)) == []  # gap: ATR unknown again, no amendment
    assert trailer.atr(SYM) is None
    with capture_logs() as logs:
        trailer.on_position(position(stop="nan"))
        bad = candle(i + 6, 100.0)
        bad = CandleClosed(
            symbol=SYM,
            interval="5m",
            candle=Candle(
                open_time_ms=bad.candle.open_time_ms, open=1, high=float("nan"), low=1, close=1, volume=1
            ),
        )
        assert trailer.on_candle(bad) == []
    events = {e["event"] for e in logs}
    assert {"shadow_position_rejected", "shadow_candle_rejected"} <= events
    with pytest.raises(ValueError, match="interval"):
        ShadowTrailer(interval="7m")

"""Trailing stops of the shadow paper book (BOT_SPEC §6 trailing rules, §7 [resolved] shadow book).

Why: no symbol actor trails a shadow trade (the live ones send their amendments to the live
execution). Without trailing, a shadow trade of a strategy that exits by trailing (trend_breakout has
no target at all; trend_pullback trails after `trail_after_r` R) could only end at its stop or target:
the full shared replay's shadow breakout trades all ended `SL` at -1 R, so a strategy's shadow record
said nothing about the strategy and an ineligible breakout could never come back. The shadow book's
trades must be traded like live ones for their windows to mean anything.

Policy (the symbol actor's rules, on the shadow book's own inputs):
- `on_position` (the shadow execution's `PositionUpdated`, authoritative): starts, updates or, at qty 0,
  clears the trailing state of that shadow trade; activation stays sticky for the trade. A position
  without trailing parameters is not trailed. Bad numbers are logged and leave the state as it was.
- `on_candle` (every closed candle of the signal timeframe, from the market-data tap): updates the
  symbol's Wilder ATR(`ATR_PERIOD`) (a gap or an older candle restarts it: unknown beats wrong), then
  runs `update_trailing` on the close for each shadow trade of that symbol and returns the `AmendStop`s
  to send to the shadow execution (which rounds each and re-checks it never loosens).
Pure bookkeeping: no I/O, never raises on market data. One instance per shadow book.
"""

from __future__ import annotations

import math

import msgspec

from futures_actor.actors.messages import AmendStop, CandleClosed, PositionUpdated
from futures_actor.core.features import ATR_PERIOD
from futures_actor.core.indicators import Atr
from futures_actor.core.trailing import (
    TRAIL_MOVED,
    TrailingInputError,
    TrailingRule,
    TrailingState,
    start_trailing,
    update_trailing,
)
from futures_actor.core.types import INTERVAL_MS
from futures_actor.logs import get_logger

__all__ = ["ShadowTrailer"]


class _Trail(msgspec.Struct, kw_only=True):
    symbol: str
    rule: TrailingRule
    state: TrailingState


class _AtrSeries:
    __slots__ = ("atr", "last_open_ms")

    def __init__(self) -> None:
        self.atr = Atr(ATR_PERIOD)
        self.last_open_ms = -1


class ShadowTrailer:
    """ATR trailing of the shadow book's open trades (see the module docstring)."""

    def __init__(self, *, interval: str) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"interval: got {interval!r}; expected one of {sorted(INTERVAL_MS)}")
        self._interval = interval
        self._step_ms = INTERVAL_MS[interval]
        self._atr: dict[str, _AtrSeries] = {}
        self._trails: dict[str, _Trail] = {}
        self._log = get_logger("shadow_trailer")

    def trailing_state(self, trade_id: str) -> TrailingState | None:
        trail = self._trails.get(trade_id)
        return None if trail is None else trail.state

    def atr(self, symbol: str) -> float | None:
        series = self._atr.get(symbol)
        return None if series is None else series.atr.value

    def on_position(self, msg: PositionUpdated) -> None:
        if msg.qty == 0 or msg.trail_atr_mult is None or msg.trail_after_r is None:
            if self._trails.pop(msg.trade_id, None) is not None:
                self._log.info("shadow_trail_cleared", trade_id=msg.trade_id, symbol=msg.symbol)
            return
        try:
            rule = TrailingRule(atr_mult=msg.trail_atr_mult, after_r=msg.trail_after_r)
            entry, stop = float(msg.entry_price), float(msg.stop_price)
            state = start_trailing(side=msg.side, entry_price=entry, stop_price=float(msg.initial_stop_price))
        except (TrailingInputError, ValueError, ArithmeticError) as exc:
            self._reject(msg, str(exc))
            return
        if not (math.isfinite(stop) and stop > 0):
            self._reject(msg, f"stop_price: got {stop!r}; expected a finite number > 0")
            return
        existing = self._trails.get(msg.trade_id)
        active = existing is not None and existing.state.side is msg.side and existing.state.active
        state = msgspec.structs.replace(state, stop_price=stop, active=active)
        self._trails[msg.trade_id] = _Trail(symbol=msg.symbol, rule=rule, state=state)

    def _reject(self, msg: PositionUpdated, error: str) -> None:
        """Bad numbers: keep whatever trailing state we had, and say so loudly."""
        self._log.error(
            "shadow_position_rejected",
            trade_id=msg.trade_id,
            symbol=msg.symbol,
            error=error,
            entry_price=str(msg.entry_price),
            stop_price=str(msg.stop_price),
            initial_stop_price=str(msg.initial_stop_price),
        )

    def on_candle(self, msg: CandleClosed) -> list[AmendStop]:
        if msg.interval != self._interval:
            return []
        c = msg.candle
        if not all(math.isfinite(v) and v > 0 for v in (c.high, c.low, c.close)):
            self._log.error("shadow_candle_rejected", symbol=msg.symbol, open_time_ms=c.open_time_ms)
            return []
        series = self._atr.get(msg.symbol)
        if series is None:
            series = self._atr[msg.symbol] = _AtrSeries()
        if c.open_time_ms <= series.last_open_ms:
            return []  # duplicate or older: already counted
        if series.last_open_ms >= 0 and c.open_time_ms != series.last_open_ms + self._step_ms:
            series.atr = Atr(ATR_PERIOD)  # a gap: the true range across it is not one candle's
        series.last_open_ms = c.open_time_ms
        atr = series.atr.update(c.high, c.low, c.close)
        if atr is None:
            return []
        amends: list[AmendStop] = []
        for trade_id, trail in self._trails.items():
            if trail.symbol != msg.symbol:
                continue
            update = update_trailing(trail.state, trail.rule, close=c.close, atr=atr)
            trail.state = update.state
            if update.code == TRAIL_MOVED and update.new_stop is not None:
                amends.append(
                    AmendStop(
                        trade_id=trade_id,
                        symbol=msg.symbol,
                        new_stop=update.new_stop,
                        reference_price=c.close,
                    )
                )
        return amends

"""Candles, messages and a synchronous driver for the SymbolMachine tests (no trio here); the SymbolActor
tests use the same candles and messages.

The candles are the bundled real BTCUSDT klines (`data/sample/`); the driver plays the runtime's part
without trio: it feeds messages to the machine, answers `FetchHistory` at once and stops at `Crash`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from futures_actor.actors.messages import AmendStop, CandleClosed, PositionUpdated, SymbolReport
from futures_actor.core.config import BotConfig
from futures_actor.core.features import compute_features
from futures_actor.core.models import Features, RegimeResult, Signal
from futures_actor.core.regime import detect_regime
from futures_actor.core.strategies import Strategy, TrendPullback, build_strategies
from futures_actor.core.types import INTERVAL_MS, Candle, Side
from futures_actor.data.klines_csv import read_klines_candles
from futures_actor.machines.effects import Log
from futures_actor.machines.symbol import (
    Crash,
    FetchHistory,
    HistoryFetched,
    HistoryFetchFailed,
    HistoryLoaded,
    SendAmendStop,
    SendReport,
    SymbolEffect,
    SymbolInput,
    SymbolMachine,
)

SYMBOL = "BTCUSDT"
MS_5M = INTERVAL_MS["5m"]
MS_1H = INTERVAL_MS["1h"]
N_5M = 1800  # 150 hours: warm after ~50 h of 1h candles, dozens of real signals after that
N_1H = N_5M * MS_5M // MS_1H
CFG = BotConfig()

History = tuple[Sequence[Candle], Sequence[Candle]]
Expected = list[tuple[Features, RegimeResult, tuple[Signal, ...]]]


@functools.cache
def load(klines_dir: Path, n_5m: int = N_5M) -> tuple[list[Candle], list[Candle]]:
    """The first `n_5m` 5m candles and the 1h candles of the same time."""
    five = read_klines_candles(klines_dir / f"{SYMBOL}-5m.csv.gz", interval="5m", limit=n_5m)
    hour = read_klines_candles(klines_dir / f"{SYMBOL}-1h.csv.gz", interval="1h", limit=n_5m * MS_5M // MS_1H)
    return five, hour


@functools.cache
def expected_pipeline(klines_dir: Path, n_5m: int = N_5M) -> Expected:
    """The pure core pipeline on the same candles: what the machine (or the actor) must report."""
    five, hour = load(klines_dir, n_5m)
    strategies = build_strategies(CFG)
    out = []
    for step in compute_features(symbol=SYMBOL, config=CFG, candles_5m=five, candles_1h=hour):
        assert step.features is not None
        regime = detect_regime(step.features, CFG)
        signals = tuple(
            s for s in (st.evaluate(step.features, regime) for st in strategies) if isinstance(s, Signal)
        )
        out.append((step.features, regime, signals))
    return out


def close_ms(c: Candle) -> int:
    return c.open_time_ms + MS_5M


def c5(candle: Candle) -> CandleClosed:
    return CandleClosed(symbol=SYMBOL, interval="5m", candle=candle, source="replay")


def c1(candle: Candle) -> CandleClosed:
    return CandleClosed(symbol=SYMBOL, interval="1h", candle=candle, source="replay")


def interleave(five: Sequence[Candle], hour: Sequence[Candle]) -> list[CandleClosed]:
    """As MarketData delivers them: each 1h candle before the 5m candle that closes with or after it."""
    msgs: list[CandleClosed] = []
    j = 0
    for c in five:
        while j < len(hour) and hour[j].open_time_ms + MS_1H <= close_ms(c):
            msgs.append(c1(hour[j]))
            j += 1
        msgs.append(c5(c))
    return msgs


def first_signal_index(expected: Expected) -> int:
    return next(i for i, (_, _, sigs) in enumerate(expected) if sigs)


def history_until(five: list[Candle], hour: list[Candle], k: int) -> tuple[list[Candle], list[Candle]]:
    """History as REST would return it just before 5m candle k closes."""
    end = close_ms(five[k - 1])
    return five[:k], [h for h in hour if h.open_time_ms + MS_1H <= end]


def live_from(five: list[Candle], hour: list[Candle], k: int, n: int = 1) -> list[CandleClosed]:
    """Live messages for 5m candles k..k+n-1 (with the 1h candles not in `history_until(k)`)."""
    start = close_ms(five[k - 1])
    return interleave(five[k : k + n], [h for h in hour if h.open_time_ms + MS_1H > start])


def rising(after: Candle, n: int, step: float = 0.003, dip_at: int | None = None) -> list[Candle]:
    """`n` synthetic 5m candles continuing `after`, each closing `step` higher (one dip if asked)."""
    out: list[Candle] = []
    prev = after
    for i in range(n):
        o = prev.close
        c = o * (1 - 2 * step) if i == dip_at else o * (1 + step)
        out.append(
            Candle(
                open_time_ms=prev.open_time_ms + MS_5M,
                open=o,
                high=max(o, c) * 1.0005,
                low=min(o, c) * 0.9995,
                close=c,
                volume=after.volume,
            )
        )
        prev = out[-1]
    return out


def position(
    entry: float,
    *,
    qty: str = "0.01",
    stop: float | None = None,
    after_r: float = 0.0,
    trade_id: str = "T1",
    side: Side = Side.LONG,
) -> PositionUpdated:
    initial = entry * (1 - side.sign * 0.01)
    return PositionUpdated(
        trade_id=trade_id,
        symbol=SYMBOL,
        side=side,
        qty=Decimal(qty),
        entry_price=Decimal(repr(entry)),
        stop_price=Decimal(repr(initial if stop is None else stop)),
        initial_stop_price=Decimal(repr(initial)),
        trail_atr_mult=2.5,
        trail_after_r=after_r,
    )


class Boom(TrendPullback):
    """A strategy with a bug."""

    def evaluate(self, features: Features, regime: RegimeResult) -> Any:
        raise ZeroDivisionError("strategy bug")


def boom_strategies() -> list[Strategy]:
    s = CFG.strategies
    return [*build_strategies(CFG)[:1], Boom(cfg=s.trend_pullback, leverage=CFG.leverage, max_leverage=2.0)]


class Driver:
    """The runtime's part without trio: history answered at once, effects collected in order.

    `history` is called for the start-up history and for every `FetchHistory` (it may raise: the
    machine then gets `HistoryFetchFailed` with the repr, as the trio shell sends it).
    """

    def __init__(
        self,
        *,
        history: Callable[[], History] | None = None,
        strategies: Sequence[Strategy] | None = None,
        cfg: BotConfig = CFG,
    ) -> None:
        self.machine = SymbolMachine(
            symbol=SYMBOL, cfg=cfg, has_history=history is not None, strategies=strategies
        )
        self.history = history
        self.effects: list[SymbolEffect] = []
        self.history_calls = 0
        self.crashed: Exception | None = None
        self.now_ms = 0
        if history is not None:
            self.history_calls += 1
            five, hour = history()
            self.feed(HistoryLoaded(five=five, hour=hour))

    def feed(self, msg: SymbolInput) -> list[SymbolEffect]:
        """Handle one message (and the history answers it leads to); the effects, also kept in order."""
        out: list[SymbolEffect] = []
        for effect in self.machine.handle(msg, now_ms=self.now_ms):
            out.append(effect)
            self.effects.append(effect)
            if isinstance(effect, FetchHistory):
                out.extend(self.feed(self._answer()))
            elif isinstance(effect, Crash):
                self.crashed = effect.error
        return out

    def run(self, msgs: Iterable[SymbolInput]) -> list[SymbolEffect]:
        """Feed `msgs` until they end or the machine crashes (the runtime would raise); all effects."""
        start = len(self.effects)
        for msg in msgs:
            self.feed(msg)
            if self.crashed is not None:
                break
        return self.effects[start:]

    def _answer(self) -> HistoryFetched | HistoryFetchFailed:
        assert self.history is not None
        self.history_calls += 1
        try:
            five, hour = self.history()
        except Exception as exc:
            return HistoryFetchFailed(error=repr(exc))
        return HistoryFetched(five=five, hour=hour)


def reports(effects: Iterable[SymbolEffect]) -> list[SymbolReport]:
    return [e.report for e in effects if isinstance(e, SendReport)]


def amends(effects: Iterable[SymbolEffect]) -> list[AmendStop]:
    return [e.amend for e in effects if isinstance(e, SendAmendStop)]


def logs(effects: Iterable[SymbolEffect], event: str | None = None) -> list[Log]:
    return [e for e in effects if isinstance(e, Log) and (event is None or e.event == event)]

"""Intra-candle market data of the fake exchange: a recorded candle as the stream Binance would send.

This module owns how one recorded base candle becomes the prices traded inside it and the kline
frames, mark prices and book tickers published while it forms. It is pure (no trio, no I/O): the
exchange asks it for the state of a candle at an offset from the candle's open.

Policy:

- Price path: open → nearer extreme → other extreme → close (the order `matching.on_candle` replays),
  at constant speed: each leg lasts in proportion to its price distance (a flat candle: three equal
  legs). The times of the two extremes are snapped to the frame grid (`MarketFeed.grid_ms`), so a frame
  shows each extreme as its close. Between the corners the price is interpolated linearly, rounded
  to the tick and kept strictly inside (low, high) when the candle spans at least two ticks, so the
  high and the low are each reached exactly once, at their corner. The corners are the recorded
  values, exact.
- Running candle at offset t of the interval: open, the highest and lowest price reached so far, the
  price at t as close; volume, quote volume, trade count and taker-buy volumes grow in proportion
  to the elapsed time (volume rounded down to the lot step); the closed frame carries the recorded
  values exactly.
- Volumes the recording lacks (the bundled klines keep open/high/low/close/volume only) are derived,
  deterministically, from the candle: quote volume = volume × typical price (o + h + l + c) / 4;
  trades = quote volume / `MarketFeed.trade_notional` (at least 1 when anything traded); taker-buy
  share of the volume = 1/2 + `MarketFeed.taker_tilt` × (close − open) / (high − low) (1/2 on a flat
  candle), so buyers take more on a rising candle. Recorded quote volumes and trade counts win. The
  exchange derives them only when it runs with a feed; without one it reports the candle's own.
- Cadences (`MarketFeed`, exchange-clock milliseconds on the epoch grid, Binance's by default):
  kline frames every `kline_ms` (250 ms) for every subscribed interval, `@markPrice` every
  `mark_ms` (3 s), `@markPrice@1s` every `mark_fast_ms` (1 s), `@bookTicker` every `book_ms`
  (Binance: real time; 250 ms here, one per price step). The closed frame (`x: true`) comes at the
  candle's close time (open + interval − 1 ms).
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import msgspec

from futures_actor.core.types import Candle

__all__ = ["DEFAULT_FEED", "CandlePath", "CandleStats", "KlineState", "MarketFeed", "candle_stats"]

ZERO = Decimal(0)
_HALF = 0.5


class MarketFeed(msgspec.Struct, frozen=True, kw_only=True):
    """How often the fake publishes market data while a recorded candle forms (exchange-clock ms)."""

    kline_ms: int = 250
    """Kline frames (`x: false`) of every subscribed interval (Binance: "Update Speed: 250ms")."""
    mark_ms: int = 3000
    """`<symbol>@markPrice` (Binance: 3 s)."""
    mark_fast_ms: int = 1000
    """`<symbol>@markPrice@1s` (Binance: 1 s)."""
    book_ms: int = 250
    """`<symbol>@bookTicker` (Binance: real time; here one per price step)."""
    trade_notional: float = 5000.0
    """Average notional (quote asset) of one trade, for trade counts the recording lacks."""
    taker_tilt: float = 0.25
    """Taker-buy share = 1/2 + tilt × (close − open) / (high − low), in [1/2 − tilt, 1/2 + tilt]."""

    def __post_init__(self) -> None:
        for name in ("kline_ms", "mark_ms", "mark_fast_ms", "book_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"MarketFeed.{name}={value!r}: expected a positive number of milliseconds")
        if not (math.isfinite(self.trade_notional) and self.trade_notional > 0):
            raise ValueError(f"MarketFeed.trade_notional={self.trade_notional!r}: expected a positive number")
        if not (math.isfinite(self.taker_tilt) and 0 <= self.taker_tilt <= _HALF):
            raise ValueError(f"MarketFeed.taker_tilt={self.taker_tilt!r}: expected 0 <= tilt <= 0.5")

    @property
    def grid_ms(self) -> int:
        """The price step: every cadence is a multiple of it."""
        return math.gcd(self.kline_ms, self.mark_ms, self.mark_fast_ms, self.book_ms)


DEFAULT_FEED = MarketFeed()


class CandleStats(msgspec.Struct, frozen=True, kw_only=True):
    """The volumes of a whole candle: recorded where the recording has them, derived otherwise."""

    quote_volume: float
    trades: int
    taker_buy_volume: float
    taker_buy_quote_volume: float


def candle_stats(c: Candle, feed: MarketFeed = DEFAULT_FEED) -> CandleStats:
    """Quote volume, trade count and taker-buy volumes of `c` (see the module docstring)."""
    qv = c.quote_volume if c.quote_volume > 0 else c.volume * (c.open + c.high + c.low + c.close) / 4
    if c.trades > 0:
        trades = c.trades
    elif c.volume > 0:
        trades = max(1, round(qv / feed.trade_notional))
    else:
        trades = 0
    rng = c.high - c.low
    share = _HALF + feed.taker_tilt * (c.close - c.open) / rng if rng > 0 else _HALF
    return CandleStats(
        quote_volume=qv,
        trades=trades,
        taker_buy_volume=c.volume * share,
        taker_buy_quote_volume=qv * share,
    )


class KlineState(msgspec.Struct, frozen=True, kw_only=True):
    """A kline as a frame shows it: the candle (running or closed) and its volumes."""

    candle: Candle
    stats: CandleStats


class CandlePath:
    """The traded path of one candle over its interval; `state_at(offset)` is the running kline."""

    def __init__(
        self,
        candle: Candle,
        *,
        interval_ms: int,
        feed: MarketFeed = DEFAULT_FEED,
        tick: Decimal | None = None,
        lot: Decimal | None = None,
    ) -> None:
        if interval_ms < 2:
            raise ValueError(f"CandlePath interval_ms={interval_ms}: expected at least 2 ms")
        self.candle = candle
        self.duration = interval_ms - 1  # offset of the close time
        self._feed = feed
        self._tick = tick if tick is not None and tick > 0 else None
        self._lot = lot if lot is not None and lot > 0 else None
        o, h, lo, c = (Decimal(repr(x)) for x in (candle.open, candle.high, candle.low, candle.close))
        self.high, self.low = h, lo
        near, far = (h, lo) if (h - o) <= (o - lo) else (lo, h)
        legs = (abs(near - o), abs(far - near), abs(c - far))
        total = sum(legs, ZERO)
        d = self.duration
        if total == 0:
            t1, t2 = d // 3, 2 * d // 3
        else:
            t1 = self._snap(float(legs[0] / total) * d, legs[0] > 0, legs[2] > 0 or legs[1] > 0)
            t2 = self._snap(float((legs[0] + legs[1]) / total) * d, True, legs[2] > 0)
            if legs[1] == 0:
                t2 = t1
            t2 = max(t1, t2)
        self.corners: tuple[tuple[int, Decimal], ...] = ((0, o), (t1, near), (t2, far), (d, c))
        self._stats = candle_stats(candle, feed)
        self._inside = self._tick is not None and h - lo >= 2 * self._tick

    def _snap(self, t: float, moved_before: bool, moves_after: bool) -> int:
        """`t` to the frame grid; after the open if the price moved before it, before the close if after."""
        g = self._feed.grid_ms
        d = self.duration
        if not moved_before:
            return 0
        if not moves_after:
            return d
        last = (d - 1) // g * g  # the last grid offset before the close
        snapped = round(t / g) * g
        lo = g if g <= last else 0
        return min(max(snapped, lo), last)

    @property
    def stats(self) -> CandleStats:
        return self._stats

    def price_at(self, offset: int) -> Decimal:
        """The last traded price `offset` ms after the open (a corner's recorded value at its time)."""
        if offset <= 0:
            return self._corner_at(0)
        if offset >= self.duration:
            return self.corners[-1][1]
        for (ta, pa), (tb, pb) in zip(self.corners, self.corners[1:], strict=False):
            if offset == tb:
                return self._corner_at(offset)
            if ta <= offset < tb:
                if offset == ta:
                    return self._corner_at(offset)
                f = Decimal(offset - ta) / Decimal(tb - ta)
                return self._interior(pa + (pb - pa) * f, pa, pb)
        return self.corners[-1][1]  # pragma: no cover - the corners cover [0, duration]

    def _corner_at(self, offset: int) -> Decimal:
        """The last corner at `offset` (several corners share a time when a leg has no length)."""
        price = self.corners[0][1]
        for t, p in self.corners:
            if t <= offset:
                price = p
        return price

    def _interior(self, value: Decimal, a: Decimal, b: Decimal) -> Decimal:
        lo_leg, hi_leg = min(a, b), max(a, b)
        if self._tick is None:
            return min(max(value, lo_leg), hi_leg)
        tick = self._tick
        q = (value / tick).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * tick
        if self._inside:  # strictly between the extremes: each is reached only at its corner
            q = min(max(q, self.low + tick), self.high - tick)
        else:  # a one-tick candle: stay at the leg's start until its corner
            q = a
        return min(max(q, lo_leg), hi_leg) if lo_leg < hi_leg else a

    def corners_between(self, after: int, upto: int) -> list[Decimal]:
        """The corner prices passed in (after, upto], in order (the engine moves through them)."""
        return [p for t, p in self.corners if after < t <= upto]

    def fraction(self, offset: int) -> float:
        return min(max(offset / self.duration, 0.0), 1.0)

    def volume_at(self, offset: int) -> Decimal:
        """Base volume traded by `offset` (rounded down to the lot step; the recorded value at the close)."""
        v = Decimal(repr(self.candle.volume))
        if offset >= self.duration:
            return v
        part = v * Decimal(repr(self.fraction(offset)))
        if self._lot is not None:
            part = (part / self._lot).to_integral_value(rounding=ROUND_FLOOR) * self._lot
        return min(part, v)

    def state_at(self, offset: int) -> KlineState:
        """The running kline `offset` ms after the open; the recorded candle itself at the close."""
        if offset >= self.duration:
            return KlineState(candle=self.candle, stats=self._stats)
        price = self.price_at(offset)
        reached = [p for t, p in self.corners if t <= offset] + [price]
        f = self.fraction(offset)
        s = self._stats
        v = float(self.volume_at(offset))
        share = f if self.candle.volume <= 0 else v / self.candle.volume
        candle = Candle(
            open_time_ms=self.candle.open_time_ms,
            open=self.candle.open,
            high=float(max(reached)),
            low=float(min(reached)),
            close=float(price),
            volume=v,
            quote_volume=self.candle.quote_volume * share,
            trades=math.floor(self.candle.trades * f),
        )
        stats = CandleStats(
            quote_volume=s.quote_volume * share,
            trades=math.floor(s.trades * f),
            taker_buy_volume=s.taker_buy_volume * share,
            taker_buy_quote_volume=s.taker_buy_quote_volume * share,
        )
        return KlineState(candle=candle, stats=stats)

"""Per-symbol, per-interval store of closed candles: a fixed-capacity ring buffer of numpy arrays.

This module owns candle validation and continuity (BOT_SPEC §3, ACCEPTANCE AC14). The store only
ever holds a contiguous run of closed candles, one per interval, oldest dropped when full.

Policy of `CandleStore.append`:
- a malformed candle (non-finite value, price <= 0, negative volume or trade count, high below
  max(open, close), low above min(open, close), open time not a multiple of the interval) raises
  `InvalidCandle` naming the symbol, interval, field, value and what was expected; nothing stored;
- the open time of a stored candle with identical values ⇒ `AppendStatus.DUPLICATE`, a no-op;
  the same open time with different values ⇒ `ConflictingCandle`; older than everything stored ⇒
  `OutOfOrderCandle`; nothing stored;
- exactly one interval after the newest stored candle (or an empty store) ⇒ `APPENDED`;
- further ahead ⇒ `AppendStatus.GAP` with the missing open-time range (inclusive) and the candle
  is **not** stored. The caller backfills: it appends the missing candles in order and then the
  reported candle again (each is then APPENDED), or, when the gap cannot be filled, calls
  `replace_tail(candles)` with a fresh contiguous history. Because a gapped candle never enters
  the store, the store (and any incremental state fed from it) never spans a gap.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from futures_actor.core.types import INTERVAL_MS, Candle

__all__ = [
    "AppendResult",
    "AppendStatus",
    "CandleArrays",
    "CandleError",
    "CandleStore",
    "ConflictingCandle",
    "InvalidCandle",
    "OutOfOrderCandle",
    "validate_candle",
]


class CandleError(ValueError):
    """A candle was refused. Carries the symbol, interval, field, offending value and expectation."""

    def __init__(self, message: str, *, symbol: str, interval: str, field: str, value: object) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.interval = interval
        self.field = field
        self.value = value


class InvalidCandle(CandleError):
    """A malformed candle (bad value or internal inconsistency)."""


class OutOfOrderCandle(CandleError):
    """A candle older than every candle in the store."""


class ConflictingCandle(CandleError):
    """A candle whose open time is stored already, with different values."""


class AppendStatus(enum.StrEnum):
    APPENDED = "APPENDED"
    DUPLICATE = "DUPLICATE"
    GAP = "GAP"


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of `CandleStore.append`. For GAP, `missing_from_ms`..`missing_to_ms` (open times,
    inclusive) must be backfilled, then the candle appended again."""

    status: AppendStatus
    open_time_ms: int
    missing_from_ms: int | None = None
    missing_to_ms: int | None = None
    missing_count: int = 0


class CandleArrays(msgspec.Struct, frozen=True, kw_only=True):
    """Chronological copies of the stored columns (oldest first)."""

    open_time_ms: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]
    quote_volume: npt.NDArray[np.float64]
    trades: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.open_time_ms.size)


def validate_candle(candle: Candle, *, symbol: str, interval: str, interval_ms: int) -> None:
    """Raise `InvalidCandle` for the first problem found; return None for a well-formed candle."""

    def bad(field: str, value: object, expected: str) -> InvalidCandle:
        return InvalidCandle(
            f"{symbol} {interval} candle open_time_ms={candle.open_time_ms}: field {field}={value!r}, "
            f"expected {expected}",
            symbol=symbol,
            interval=interval,
            field=field,
            value=value,
        )

    t = candle.open_time_ms
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        raise bad("open_time_ms", t, "a non-negative integer (ms)")
    if t % interval_ms != 0:
        raise bad("open_time_ms", t, f"a multiple of the {interval} interval ({interval_ms} ms)")
    for field in ("open", "high", "low", "close"):
        v = getattr(candle, field)
        if not math.isfinite(v) or v <= 0.0:
            raise bad(field, v, "a finite price > 0")
    for field in ("volume", "quote_volume"):
        v = getattr(candle, field)
        if not math.isfinite(v) or v < 0.0:
            raise bad(field, v, "a finite volume >= 0")
    if candle.trades < 0:
        raise bad("trades", candle.trades, "a trade count >= 0")
    body_high = max(candle.open, candle.close)
    if candle.high < body_high:
        raise bad("high", candle.high, f">= max(open, close) = {body_high!r}")
    body_low = min(candle.open, candle.close)
    if candle.low > body_low:
        raise bad("low", candle.low, f"<= min(open, close) = {body_low!r}")


class CandleStore:
    """Ring buffer of closed candles of one symbol and interval (see the module policy)."""

    def __init__(self, *, symbol: str, interval: str, capacity: int) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(
                f"CandleStore: interval {interval!r} unknown, expected one of {list(INTERVAL_MS)}"
            )
        if capacity < 1:
            raise ValueError(f"CandleStore: capacity must be >= 1, got {capacity!r}")
        self.symbol = symbol
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.capacity = capacity
        self._open_time = np.zeros(capacity, dtype=np.int64)
        self._open = np.zeros(capacity, dtype=np.float64)
        self._high = np.zeros(capacity, dtype=np.float64)
        self._low = np.zeros(capacity, dtype=np.float64)
        self._close = np.zeros(capacity, dtype=np.float64)
        self._volume = np.zeros(capacity, dtype=np.float64)
        self._quote_volume = np.zeros(capacity, dtype=np.float64)
        self._trades = np.zeros(capacity, dtype=np.int64)
        self._next = 0  # slot of the next write
        self._size = 0
        self._last_open_ms: int | None = None

    # -- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    @property
    def last_open_time_ms(self) -> int | None:
        return self._last_open_ms

    @property
    def first_open_time_ms(self) -> int | None:
        if self._last_open_ms is None:
            return None
        return self._last_open_ms - (self._size - 1) * self.interval_ms

    def _slot(self, open_time_ms: int) -> int | None:
        first = self.first_open_time_ms
        if first is None or open_time_ms < first or open_time_ms > (self._last_open_ms or 0):
            return None
        back = (self._last_open_ms - open_time_ms) // self.interval_ms  # type: ignore[operator]
        return (self._next - 1 - back) % self.capacity

    def get(self, open_time_ms: int) -> Candle | None:
        slot = self._slot(open_time_ms)
        return None if slot is None else self._candle_at(slot)

    def _candle_at(self, slot: int) -> Candle:
        return Candle(
            open_time_ms=int(self._open_time[slot]),
            open=float(self._open[slot]),
            high=float(self._high[slot]),
            low=float(self._low[slot]),
            close=float(self._close[slot]),
            volume=float(self._volume[slot]),
            quote_volume=float(self._quote_volume[slot]),
            trades=int(self._trades[slot]),
        )

    def _ordered(self, arr: npt.NDArray[np.generic], n: int) -> npt.NDArray[np.generic]:
        end = self._next
        start = end - n
        if start >= 0:
            return arr[start:end].copy()
        return np.concatenate((arr[start:], arr[:end]))

    def arrays(self, last: int | None = None) -> CandleArrays:
        """Copies of the newest `last` (default: all) candles, oldest first."""
        n = self._size if last is None else max(0, min(last, self._size))
        return CandleArrays(
            open_time_ms=self._ordered(self._open_time, n),  # type: ignore[arg-type]
            open=self._ordered(self._open, n),  # type: ignore[arg-type]
            high=self._ordered(self._high, n),  # type: ignore[arg-type]
            low=self._ordered(self._low, n),  # type: ignore[arg-type]
            close=self._ordered(self._close, n),  # type: ignore[arg-type]
            volume=self._ordered(self._volume, n),  # type: ignore[arg-type]
            quote_volume=self._ordered(self._quote_volume, n),  # type: ignore[arg-type]
            trades=self._ordered(self._trades, n),  # type: ignore[arg-type]
        )

    def candles(self, last: int | None = None) -> list[Candle]:
        """The newest `last` (default: all) candles as `Candle`s, oldest first."""
        n = self._size if last is None else max(0, min(last, self._size))
        return [self._candle_at((self._next - n + i) % self.capacity) for i in range(n)]

    # -- updates ------------------------------------------------------------------------------

    def append(self, candle: Candle) -> AppendResult:
        """Validate and store a closed candle; see the module docstring for the policy."""
        validate_candle(candle, symbol=self.symbol, interval=self.interval, interval_ms=self.interval_ms)
        t = candle.open_time_ms
        last = self._last_open_ms
        if last is not None:
            step = self.interval_ms
            if t <= last:
                stored = self.get(t)
                if stored is None:
                    raise OutOfOrderCandle(
                        f"{self.symbol} {self.interval} candle open_time_ms={t}: field open_time_ms={t}, "
                        f"expected > {last} (older than every stored candle; first stored "
                        f"{self.first_open_time_ms})",
                        symbol=self.symbol,
                        interval=self.interval,
                        field="open_time_ms",
                        value=t,
                    )
                if stored != candle:
                    field = next(
                        f
                        for f in ("open", "high", "low", "close", "volume", "quote_volume", "trades")
                        if getattr(stored, f) != getattr(candle, f)
                    )
                    raise ConflictingCandle(
                        f"{self.symbol} {self.interval} candle open_time_ms={t}: field {field}="
                        f"{getattr(candle, field)!r}, expected the stored value {getattr(stored, field)!r}",
                        symbol=self.symbol,
                        interval=self.interval,
                        field=field,
                        value=getattr(candle, field),
                    )
                return AppendResult(status=AppendStatus.DUPLICATE, open_time_ms=t)
            if t != last + step:
                return AppendResult(
                    status=AppendStatus.GAP,
                    open_time_ms=t,
                    missing_from_ms=last + step,
                    missing_to_ms=t - step,
                    missing_count=(t - last) // step - 1,
                )
        self._write(candle)
        return AppendResult(status=AppendStatus.APPENDED, open_time_ms=t)

    def _write(self, c: Candle) -> None:
        i = self._next
        self._open_time[i] = c.open_time_ms
        self._open[i] = c.open
        self._high[i] = c.high
        self._low[i] = c.low
        self._close[i] = c.close
        self._volume[i] = c.volume
        self._quote_volume[i] = c.quote_volume
        self._trades[i] = c.trades
        self._next = (i + 1) % self.capacity
        if self._size < self.capacity:
            self._size += 1
        self._last_open_ms = c.open_time_ms

    def reset(self) -> None:
        """Forget every candle."""
        self._next = 0
        self._size = 0
        self._last_open_ms = None

    def replace_tail(self, candles: Sequence[Candle] | Iterable[Candle]) -> None:
        """Replace the whole content with `candles` (oldest first, contiguous, validated).

        Everything is validated before the store is touched: on any error the store is unchanged.
        """
        items = list(candles)
        step = self.interval_ms
        for i, c in enumerate(items):
            validate_candle(c, symbol=self.symbol, interval=self.interval, interval_ms=step)
            if i and c.open_time_ms != items[i - 1].open_time_ms + step:
                raise OutOfOrderCandle(
                    f"{self.symbol} {self.interval} replace_tail item {i}: field open_time_ms="
                    f"{c.open_time_ms}, expected {items[i - 1].open_time_ms + step} (contiguous, ascending)",
                    symbol=self.symbol,
                    interval=self.interval,
                    field="open_time_ms",
                    value=c.open_time_ms,
                )
        self.reset()
        for c in items[-self.capacity :]:
            self._write(c)

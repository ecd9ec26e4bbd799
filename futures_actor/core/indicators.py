"""Technical indicators with TA-Lib's exact conventions, incremental (live) and batch (arrays).

This module owns the arithmetic of BOT_SPEC §4. Conventions are TA-Lib's (default compatibility
mode, no unstable period), so that every value can be checked against `talib`:

- EMA(n): α = 2/(n+1), seeded with the SMA of the first n values (first value at index n−1).
- RSI(n): Wilder smoothing of gains and losses, seeded with their simple means over the first n
  changes (first value at index n); gain+loss ≈ 0 (|·| < 1e-8, TA-Lib's `TA_IS_ZERO`) gives 0.
- ATR(n): Wilder smoothing of the true range, seeded with the SMA of the first n true ranges
  (bars 1..n; first value at index n).
- ADX(n): Wilder's +DM/−DM/TR sums, DX averaged over n values, then Wilder smoothed
  (first value at index 2n−1); a DX that cannot be computed leaves ADX unchanged (TA-Lib).
- Bollinger(n, k): SMA middle, population standard deviation (ddof=0) of the last n closes.
- Rolling z-score over the last n values, the current one included, population std; std=0 ⇒ z=0.

Incremental classes (`Ema`, `Rsi`, `Atr`, `Adx`, `RollingWindowStats`) update in O(1) per closed
candle on plain Python floats (faster than numpy on tiny arrays) and return `None` until warm.
Batch functions take numpy arrays and return float64 arrays with NaN before warm-up. The
recursive indicators (EMA, RSI, ATR, ADX) have one implementation: the batch function drives
the incremental class, so live and batch values are the same arithmetic. Window statistics
(Bollinger, z-score, prior high/low) have an independent vectorised batch implementation (exact
two-pass over each window), which the tests use to check the incremental versions.

Numerics: the rolling mean/variance keeps running sums updated per value (sliding Welford) and
recomputes them exactly (two-pass) every `n` updates or after a cancellation (see
`RollingWindowStats`), so float drift cannot accumulate; values agree with an exact two-pass
computation to ~1e-10 relative. (TA-Lib's Bollinger uses E[x²]−mean² with running sums; on the
recorded klines its bands and width still agree with ours to 1e-9 relative.)
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

__all__ = [
    "TA_EPSILON",
    "Adx",
    "Atr",
    "Ema",
    "RollingWindowStats",
    "Rsi",
    "adx",
    "atr",
    "bollinger",
    "ema",
    "prior_high_low",
    "rolling_zscore",
    "rsi",
    "true_range",
    "zscore_from_stats",
]

FloatArray = npt.NDArray[np.float64]

# TA-Lib's TA_IS_ZERO: |x| < 1e-8 counts as zero (RSI denominator, ADX true-range and DI sums).
TA_EPSILON = 1e-8


def _check_period(name: str, period: int) -> None:
    if period < 2:
        raise ValueError(f"{name}: period must be an integer >= 2, got {period!r}")


def _is_zero(x: float) -> bool:
    return -TA_EPSILON < x < TA_EPSILON


def true_range(high: float, low: float, prev_close: float) -> float:
    """max(high − low, |high − prev_close|, |low − prev_close|), in TA-Lib's order of comparison."""
    out = high - low
    t = abs(high - prev_close)
    if t > out:
        out = t
    t = abs(low - prev_close)
    if t > out:
        out = t
    return out


class Ema:
    """EMA(n) seeded with the SMA of the first n values (TA-Lib)."""

    __slots__ = ("_k", "_n", "_seed_count", "_seed_sum", "period", "value")

    def __init__(self, period: int) -> None:
        _check_period("Ema", period)
        self.period = period
        self._n = 0
        self._k = 2.0 / (period + 1)
        self._seed_sum = 0.0
        self._seed_count = 0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        v = self.value
        if v is not None:
            v = (x - v) * self._k + v
            self.value = v
            return v
        self._seed_sum += x
        self._seed_count += 1
        if self._seed_count == self.period:
            self.value = self._seed_sum / self.period
        return self.value


class Rsi:
    """Wilder RSI(n) (TA-Lib)."""

    __slots__ = ("_count", "_gain", "_loss", "_prev", "period", "value")

    def __init__(self, period: int) -> None:
        _check_period("Rsi", period)
        self.period = period
        self._prev: float | None = None
        self._count = 0  # changes accumulated during the seed
        self._gain = 0.0
        self._loss = 0.0
        self.value: float | None = None

    def update(self, close: float) -> float | None:
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        diff = close - prev
        n = self.period
        if self.value is None:
            if diff < 0:
                self._loss -= diff
            else:
                self._gain += diff
            self._count += 1
            if self._count < n:
                return None
            self._loss /= n
            self._gain /= n
        else:
            loss = self._loss * (n - 1)
            gain = self._gain * (n - 1)
            if diff < 0:
                loss -= diff
            else:
                gain += diff
            self._loss = loss / n
            self._gain = gain / n
        total = self._gain + self._loss
        self.value = 100.0 * (self._gain / total) if not _is_zero(total) else 0.0
        return self.value


class Atr:
    """Wilder ATR(n) of the true range (TA-Lib)."""

    __slots__ = ("_count", "_prev_close", "_sum", "period", "value")

    def __init__(self, period: int) -> None:
        _check_period("Atr", period)
        self.period = period
        self._prev_close: float | None = None
        self._count = 0
        self._sum = 0.0
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        prev_close = self._prev_close
        self._prev_close = close
        if prev_close is None:
            return None
        tr = true_range(high, low, prev_close)
        n = self.period
        v = self.value
        if v is not None:
            v = (v * (n - 1) + tr) / n
            self.value = v
            return v
        self._sum += tr
        self._count += 1
        if self._count == n:
            self.value = self._sum / n
        return self.value


class Adx:
    """Wilder ADX(n) (TA-Lib's ta_ADX.c step by step)."""

    __slots__ = (
        "_bars",
        "_dx_count",
        "_minus_dm",
        "_plus_dm",
        "_prev_close",
        "_prev_high",
        "_prev_low",
        "_sum_dx",
        "_tr",
        "period",
        "value",
    )

    def __init__(self, period: int) -> None:
        _check_period("Adx", period)
        self.period = period
        self._bars = 0
        self._prev_high = 0.0
        self._prev_low = 0.0
        self._prev_close = 0.0
        self._plus_dm = 0.0
        self._minus_dm = 0.0
        self._tr = 0.0
        self._sum_dx = 0.0
        self._dx_count = 0
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        n = self.period
        bars = self._bars
        self._bars = bars + 1
        if bars == 0:
            self._prev_high = high
            self._prev_low = low
            self._prev_close = close
            return None
        diff_p = high - self._prev_high
        diff_m = self._prev_low - low
        self._prev_high = high
        self._prev_low = low
        tr = true_range(high, low, self._prev_close)
        self._prev_close = close
        if bars < n:
            # Bars 1..n−1: plain sums of DM and TR.
            if diff_m > 0 and diff_p < diff_m:
                self._minus_dm += diff_m
            elif diff_p > 0 and diff_p > diff_m:
                self._plus_dm += diff_p
            self._tr += tr
            return None
        minus_dm = self._minus_dm - self._minus_dm / n
        plus_dm = self._plus_dm - self._plus_dm / n
        if diff_m > 0 and diff_p < diff_m:
            minus_dm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            plus_dm += diff_p
        self._minus_dm = minus_dm
        self._plus_dm = plus_dm
        sum_tr = self._tr - self._tr / n + tr
        self._tr = sum_tr
        dx: float | None = None
        if not _is_zero(sum_tr):
            minus_di = 100.0 * (minus_dm / sum_tr)
            plus_di = 100.0 * (plus_dm / sum_tr)
            di_sum = minus_di + plus_di
            if not _is_zero(di_sum):
                dx = 100.0 * (abs(minus_di - plus_di) / di_sum)
        adx = self.value
        if adx is None:
            # Bars n..2n−1: average of n DX values (an undefined DX counts as 0, as in TA-Lib).
            if dx is not None:
                self._sum_dx += dx
            self._dx_count += 1
            if self._dx_count == n:
                self.value = self._sum_dx / n
            return self.value
        if dx is not None:
            adx = (adx * (n - 1) + dx) / n
            self.value = adx
        return adx


class RollingWindowStats:
    """Mean and population variance of the last n values, O(1) per update.

    Sliding Welford update of (mean, M2) with an exact two-pass recompute every n updates, so
    rounding error never accumulates over more than one window, and also as soon as M2 falls
    below `_CANCELLATION_RATIO` of its peak since the last exact pass (a large value leaving the
    window would otherwise leave the rounding error of the large M2 in the small one). The
    relative error of the variance is then bounded by about n·ε/_CANCELLATION_RATIO ≈ 1e-10.
    """

    __slots__ = ("_m2", "_m2_peak", "_mean", "_since_exact", "_window", "period")

    def __init__(self, period: int) -> None:
        _check_period("RollingWindowStats", period)
        self.period = period
        self._window: deque[float] = deque(maxlen=period)
        self._mean = 0.0
        self._m2 = 0.0
        self._m2_peak = 0.0
        self._since_exact = 0

    @property
    def full(self) -> bool:
        return len(self._window) == self.period

    def _recompute(self) -> None:
        w = self._window
        mean = math.fsum(w) / len(w)
        self._mean = mean
        self._m2 = self._m2_peak = math.fsum([(x - mean) * (x - mean) for x in w])
        self._since_exact = 0

    def update(self, x: float) -> None:
        w = self._window
        n = self.period
        if len(w) < n:
            w.append(x)
            self._recompute()
            return
        old = w[0]
        w.append(x)
        self._since_exact += 1
        if self._since_exact >= n:
            self._recompute()
            return
        old_mean = self._mean
        mean = old_mean + (x - old) / n
        self._mean = mean
        m2 = self._m2 + (x - old) * (x - mean + old - old_mean)
        peak = self._m2_peak
        if m2 > peak:
            self._m2_peak = m2
        elif m2 < _CANCELLATION_RATIO * peak:
            # A large value left the window: the sliding update lost relative precision.
            self._recompute()
            return
        self._m2 = m2

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def variance(self) -> float:
        """Population variance (ddof=0) of the values in the window."""
        return self._m2 / len(self._window) if self._window else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)


def zscore_from_stats(x: float, mean: float, std: float) -> float:
    """(x − mean)/std; a standard deviation that is zero up to rounding gives 0 (BOT_SPEC §4)."""
    if std <= _ZERO_STD_REL * abs(mean) or std == 0.0:
        return 0.0
    return (x - mean) / std


# Exact recompute when the sliding M2 falls below this fraction of its recent peak (see above).
_CANCELLATION_RATIO = 1e-4

# A standard deviation below this fraction of |mean| is rounding noise of identical values.
_ZERO_STD_REL = 1e-12


# ---------------------------------------------------------------------------------------------
# Batch functions (numpy in, numpy out; NaN before warm-up).


def _as_f64(name: str, a: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def ema(values: npt.ArrayLike, period: int) -> FloatArray:
    x = _as_f64("ema", values)
    ind = Ema(period)
    out = np.full(x.shape, np.nan)
    for i, v in enumerate(x.tolist()):
        r = ind.update(v)
        if r is not None:
            out[i] = r
    return out


def rsi(close: npt.ArrayLike, period: int) -> FloatArray:
    x = _as_f64("rsi", close)
    ind = Rsi(period)
    out = np.full(x.shape, np.nan)
    for i, v in enumerate(x.tolist()):
        r = ind.update(v)
        if r is not None:
            out[i] = r
    return out


def _hlc(
    name: str, high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    h, lo, c = _as_f64(name, high), _as_f64(name, low), _as_f64(name, close)
    if not (h.shape == lo.shape == c.shape):
        raise ValueError(f"{name}: high, low, close lengths differ ({h.size}, {lo.size}, {c.size})")
    return h, lo, c


def atr(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int) -> FloatArray:
    h, lo, c = _hlc("atr", high, low, close)
    ind = Atr(period)
    out = np.full(h.shape, np.nan)
    for i, (hh, ll, cc) in enumerate(zip(h.tolist(), lo.tolist(), c.tolist())):
        r = ind.update(hh, ll, cc)
        if r is not None:
            out[i] = r
    return out


def adx(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int) -> FloatArray:
    h, lo, c = _hlc("adx", high, low, close)
    ind = Adx(period)
    out = np.full(h.shape, np.nan)
    for i, (hh, ll, cc) in enumerate(zip(h.tolist(), lo.tolist(), c.tolist())):
        r = ind.update(hh, ll, cc)
        if r is not None:
            out[i] = r
    return out


def _windows(x: FloatArray, period: int) -> FloatArray:
    return np.lib.stride_tricks.sliding_window_view(x, period)


def bollinger(close: npt.ArrayLike, period: int, k: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(upper, middle, lower) with the exact population std of each window (two-pass)."""
    _check_period("bollinger", period)
    x = _as_f64("bollinger", close)
    upper = np.full(x.shape, np.nan)
    middle = np.full(x.shape, np.nan)
    lower = np.full(x.shape, np.nan)
    if x.size >= period:
        w = _windows(x, period)
        mean = w.mean(axis=1)
        std = np.sqrt(((w - mean[:, None]) ** 2).mean(axis=1))
        middle[period - 1 :] = mean
        upper[period - 1 :] = mean + k * std
        lower[period - 1 :] = mean - k * std
    return upper, middle, lower


def rolling_zscore(values: npt.ArrayLike, period: int) -> FloatArray:
    """z of each value against the last `period` values including itself; NaN inputs propagate."""
    _check_period("rolling_zscore", period)
    x = _as_f64("rolling_zscore", values)
    out = np.full(x.shape, np.nan)
    if x.size >= period:
        w = _windows(x, period)
        mean = w.mean(axis=1)
        std = np.sqrt(((w - mean[:, None]) ** 2).mean(axis=1))
        cur = x[period - 1 :]
        zero = (std == 0.0) | (std <= _ZERO_STD_REL * np.abs(mean))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(zero, 0.0, (cur - mean) / np.where(zero, 1.0, std))
        z[np.isnan(mean)] = np.nan
        out[period - 1 :] = z
    return out


def prior_high_low(high: npt.ArrayLike, low: npt.ArrayLike, lookback: int) -> tuple[FloatArray, FloatArray]:
    """Highest high / lowest low of the previous `lookback` bars, the current bar excluded."""
    if lookback < 1:
        raise ValueError(f"prior_high_low: lookback must be >= 1, got {lookback!r}")
    h, lo = _as_f64("prior_high_low", high), _as_f64("prior_high_low", low)
    ph = np.full(h.shape, np.nan)
    pl = np.full(lo.shape, np.nan)
    if h.size > lookback:
        ph[lookback:] = _windows(h, lookback).max(axis=1)[:-1]
        pl[lookback:] = _windows(lo, lookback).min(axis=1)[:-1]
    return ph, pl

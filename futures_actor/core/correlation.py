"""Correlation and beta of 1h log returns, for the correlation filter and hedge rule (BOT_SPEC §8.5).

This module owns the statistics the risk engine compares: the Pearson correlation of two
symbols' 1h log returns over the last `timeframes.corr_lookback_hours` closed 1h candles, and
each symbol's beta (slope of its returns on the reference symbol's returns). The PortfolioRisk
actor rebuilds a `CorrelationMatrix` when a 1h candle closes and passes it to `risk.evaluate`.

Policy: a pair is only measured on the same hours. Each series carries the open time of its last
closed candle, the two series are aligned on that grid, and the last `lookback` returns of the
common part are used. Fewer than `lookback` common returns, a non-finite or non-positive close in
the window, or a flat series (zero variance) gives `None`: "unknown", which the risk engine
treats as correlated (reject), never as uncorrelated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec
import numpy as np
import numpy.typing as npt

from futures_actor.core.types import INTERVAL_MS

__all__ = [
    "CorrelationInputError",
    "CorrelationMatrix",
    "HourlyCloses",
    "aligned_log_returns",
    "beta",
    "build_correlation_matrix",
    "log_returns",
    "pearson",
]

FloatArray = npt.NDArray[np.float64]
_HOUR_MS = INTERVAL_MS["1h"]


class CorrelationInputError(ValueError):
    """A series given to the correlation helpers is malformed."""

    def __init__(self, *, field: str, value: object, expected: str) -> None:
        super().__init__(f"{field}: got {value!r}, expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


class HourlyCloses(msgspec.Struct, frozen=True, kw_only=True):
    """Consecutive closed 1h closes of one symbol, oldest first, gap-free (market data's promise)."""

    symbol: str
    last_open_time_ms: int  # open time of the last close in `closes`
    closes: tuple[float, ...]


def log_returns(closes: npt.ArrayLike) -> FloatArray:
    """ln(c[i] / c[i-1]); NaN where a close is not finite or not positive."""
    c = np.asarray(closes, dtype=np.float64)
    if c.ndim != 1:
        raise CorrelationInputError(field="closes", value=c.shape, expected="a one-dimensional array")
    if c.size < 2:
        return np.empty(0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        safe = np.where(np.isfinite(c) & (c > 0), c, np.nan)
        out: FloatArray = np.diff(np.log(safe))
    return out


def pearson(a: FloatArray, b: FloatArray) -> float | None:
    """Pearson correlation of two equal-length return arrays; `None` if undefined."""
    if a.shape != b.shape or a.size < 2:
        return None
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return None
    da = a - a.mean()
    db = b - b.mean()
    saa = float(np.dot(da, da))
    sbb = float(np.dot(db, db))
    if saa <= 0.0 or sbb <= 0.0:
        return None
    r = float(np.dot(da, db)) / math.sqrt(saa * sbb)
    return max(-1.0, min(1.0, r))


def beta(returns: FloatArray, reference: FloatArray) -> float | None:
    """Slope of `returns` on `reference` (cov/var of the reference); `None` if undefined."""
    if returns.shape != reference.shape or returns.size < 2:
        return None
    if not (np.all(np.isfinite(returns)) and np.all(np.isfinite(reference))):
        return None
    dr = reference - reference.mean()
    var = float(np.dot(dr, dr))
    if var <= 0.0:
        return None
    return float(np.dot(returns - returns.mean(), dr)) / var


def aligned_log_returns(
    a: HourlyCloses, b: HourlyCloses, lookback: int
) -> tuple[FloatArray, FloatArray] | None:
    """The last `lookback` log returns of both series over the same hours; `None` if fewer."""
    if lookback < 2:
        raise CorrelationInputError(field="lookback", value=lookback, expected="an integer >= 2")
    for s in (a, b):
        if s.last_open_time_ms % _HOUR_MS != 0:
            raise CorrelationInputError(
                field=f"{s.symbol}.last_open_time_ms",
                value=s.last_open_time_ms,
                expected="a 1h candle open time (a multiple of 3600000)",
            )
    end = min(a.last_open_time_ms, b.last_open_time_ms)
    need = lookback + 1
    windows: list[FloatArray] = []
    for s in (a, b):
        drop = (s.last_open_time_ms - end) // _HOUR_MS  # newer hours the other series lacks
        usable = len(s.closes) - drop
        if usable < need:
            return None
        windows.append(np.asarray(s.closes[usable - need : usable], dtype=np.float64))
    ra, rb = log_returns(windows[0]), log_returns(windows[1])
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(rb))):
        return None
    return ra, rb


class CorrelationMatrix(msgspec.Struct, frozen=True, kw_only=True):
    """Pairwise correlations and betas of the monitored symbols, valid at `as_of_ms`.

    A pair missing from `corr` (or a symbol missing from `betas`) is unknown: insufficient or
    unusable history. `reference_symbol`'s own beta is 1.
    """

    as_of_ms: int
    lookback: int
    reference_symbol: str
    corr: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    betas: dict[str, float] = msgspec.field(default_factory=dict)

    def correlation(self, a: str, b: str) -> float | None:
        if a == b:
            return 1.0
        return self.corr.get(a, {}).get(b)

    def beta_of(self, symbol: str) -> float | None:
        return self.betas.get(symbol)

    def bucket(self, symbol: str, threshold: float) -> tuple[str, ...]:
        """`symbol` and every symbol correlated with it above `threshold`, sorted."""
        peers = [s for s, r in self.corr.get(symbol, {}).items() if r > threshold]
        return tuple(sorted({symbol, *peers}))


def build_correlation_matrix(
    series: Mapping[str, HourlyCloses], *, lookback: int, reference_symbol: str, as_of_ms: int
) -> CorrelationMatrix:
    """Correlate every pair of `series` and regress each on `reference_symbol` (O(n²) pairs, small n)."""
    symbols = sorted(series)
    corr: dict[str, dict[str, float]] = {s: {} for s in symbols}
    for i, sa in enumerate(symbols):
        for sb in symbols[i + 1 :]:
            pair = aligned_log_returns(series[sa], series[sb], lookback)
            if pair is None:
                continue
            r = pearson(*pair)
            if r is not None:
                corr[sa][sb] = r
                corr[sb][sa] = r
    betas: dict[str, float] = {}
    ref = series.get(reference_symbol)
    if ref is not None:
        for s in symbols:
            pair = aligned_log_returns(series[s], ref, lookback)
            if pair is None:
                continue
            b = 1.0 if s == reference_symbol else beta(pair[0], pair[1])
            if b is not None:
                betas[s] = b
    return CorrelationMatrix(
        as_of_ms=as_of_ms,
        lookback=lookback,
        reference_symbol=reference_symbol,
        corr=corr,
        betas=betas,
    )

"""Correlation and beta of 1h log returns, for the correlation filter and hedge rule (BOT_SPEC §8.5).

This module owns the statistics the risk engine compares: the Pearson correlation of two
symbols' 1h log returns over the last `timeframes.corr_lookback_hours` closed 1h candles, and
each symbol's beta (slope of its returns on the reference symbol's returns). The PortfolioRisk
actor replaces its matrix when a 1h candle closes and passes it to `risk.evaluate`; it uses a
`LazyCorrelationMatrix`: on the first question after an hourly close it correlates every series
that ends on the newest hour with enough finite history in one matrix product (all n² pairs at
once, vectorised); a pair outside that block (a series ending earlier, or too short) is computed
alone on first request and cached; betas too. The buckets equal those of
`build_correlation_matrix` (the values agree to rounding: the same formula, summed in another
order).

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
    "LazyCorrelationMatrix",
    "aligned_log_returns",
    "beta",
    "build_correlation_matrix",
    "lazy_correlation_matrix",
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


def _check_inputs(series: Mapping[str, HourlyCloses], lookback: int) -> None:
    if lookback < 2:
        raise CorrelationInputError(field="lookback", value=lookback, expected="an integer >= 2")
    for s in series.values():
        if s.last_open_time_ms % _HOUR_MS != 0:
            raise CorrelationInputError(
                field=f"{s.symbol}.last_open_time_ms",
                value=s.last_open_time_ms,
                expected="a 1h candle open time (a multiple of 3600000)",
            )


class _Block:
    """Correlations of every series ending on the same hour with a full, finite window, at once."""

    __slots__ = ("corr", "index", "symbols")

    def __init__(self, series: Mapping[str, HourlyCloses], lookback: int) -> None:
        need = lookback + 1
        ends: dict[int, int] = {}
        for s in series.values():
            if len(s.closes) >= need:
                ends[s.last_open_time_ms] = ends.get(s.last_open_time_ms, 0) + 1
        self.symbols: list[str] = []
        self.index: dict[str, int] = {}
        self.corr: FloatArray = np.empty((0, 0), dtype=np.float64)
        if not ends:
            return
        end = max(ends, key=lambda t: (ends[t], t))  # the hour most series end on
        names = sorted(n for n, s in series.items() if s.last_open_time_ms == end and len(s.closes) >= need)
        window = np.array([series[n].closes[-need:] for n in names], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            safe = np.where(np.isfinite(window) & (window > 0), window, np.nan)
            returns = np.diff(np.log(safe), axis=1)
        finite = np.all(np.isfinite(returns), axis=1)
        returns = returns[finite]
        self.symbols = [n for n, ok in zip(names, finite, strict=True) if ok]
        self.index = {n: i for i, n in enumerate(self.symbols)}
        centred = returns - returns.mean(axis=1, keepdims=True)
        cross = centred @ centred.T
        var = np.diag(cross).copy()
        var[var <= 0.0] = np.nan  # a flat series: undefined, as `pearson` says
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = cross / np.sqrt(np.outer(var, var))
        self.corr = np.clip(corr, -1.0, 1.0)

    def get(self, a: str, b: str) -> tuple[bool, float | None]:
        """(both symbols are in the block, their correlation or None if undefined)."""
        i, j = self.index.get(a), self.index.get(b)
        if i is None or j is None:
            return False, None
        r = float(self.corr[i, j])
        return True, None if math.isnan(r) else r


class LazyCorrelationMatrix(CorrelationMatrix, frozen=True, kw_only=True):
    """A `CorrelationMatrix` whose pairs and betas are computed on first request, then cached.

    Every answer equals the one `build_correlation_matrix` gives for the same `series` (same
    pair orientation, same arithmetic). `corr` and `betas` hold only what has been computed so
    far: read the matrix through `correlation`, `beta_of` and `bucket`. Build it with
    `lazy_correlation_matrix`; drop it (build a new one) when the series change.
    """

    series: dict[str, HourlyCloses] = msgspec.field(default_factory=dict)
    pair_cache: dict[tuple[str, str], float | None] = msgspec.field(default_factory=dict)
    beta_cache: dict[str, float | None] = msgspec.field(default_factory=dict)
    block_cache: list[_Block] = msgspec.field(default_factory=list)  # built on the first question

    def _block(self) -> _Block:
        if not self.block_cache:
            self.block_cache.append(_Block(self.series, self.lookback))
        return self.block_cache[0]

    def correlation(self, a: str, b: str) -> float | None:
        if a == b:
            return 1.0
        if a not in self.series or b not in self.series:
            return None
        in_block, r_block = self._block().get(a, b)
        if in_block:
            return r_block
        key = (a, b) if a < b else (b, a)
        if key in self.pair_cache:
            return self.pair_cache[key]
        pair = aligned_log_returns(self.series[key[0]], self.series[key[1]], self.lookback)
        r = pearson(*pair) if pair is not None else None
        self.pair_cache[key] = r
        if r is not None:
            self.corr.setdefault(key[0], {})[key[1]] = r
            self.corr.setdefault(key[1], {})[key[0]] = r
        return r

    def beta_of(self, symbol: str) -> float | None:
        if symbol in self.beta_cache:
            return self.beta_cache[symbol]
        ref = self.series.get(self.reference_symbol)
        s = self.series.get(symbol)
        b: float | None = None
        if ref is not None and s is not None:
            pair = aligned_log_returns(s, ref, self.lookback)
            if pair is not None:
                b = 1.0 if symbol == self.reference_symbol else beta(pair[0], pair[1])
        self.beta_cache[symbol] = b
        if b is not None:
            self.betas[symbol] = b
        return b

    def bucket(self, symbol: str, threshold: float) -> tuple[str, ...]:
        """`symbol` and every symbol correlated with it above `threshold`, sorted (one row of the
        block, vectorised; pairs outside the block one by one)."""
        block = self._block()
        peers: set[str] = set()
        i = block.index.get(symbol)
        if i is not None:
            row = block.corr[i]
            with np.errstate(invalid="ignore"):
                hits = np.nonzero(row > threshold)[0]
            peers.update(block.symbols[j] for j in hits)
        for other in self.series:
            if other != symbol and (i is None or other not in block.index):
                r = self.correlation(symbol, other)
                if r is not None and r > threshold:
                    peers.add(other)
        return tuple(sorted({symbol, *peers}))


def lazy_correlation_matrix(
    series: Mapping[str, HourlyCloses], *, lookback: int, reference_symbol: str, as_of_ms: int
) -> LazyCorrelationMatrix:
    """The lazy equivalent of `build_correlation_matrix`: O(n) to build, each pair on demand.

    The inputs are validated here, all at once (a bad `lookback` or open time raises
    `CorrelationInputError` now, not on the first query).
    """
    _check_inputs(series, lookback)
    return LazyCorrelationMatrix(
        as_of_ms=as_of_ms,
        lookback=lookback,
        reference_symbol=reference_symbol,
        series=dict(series),
    )

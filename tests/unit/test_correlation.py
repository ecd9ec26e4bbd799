"""Correlation and beta of 1h log returns, on the recorded klines (BOT_SPEC §8.5)."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from futures_actor.core.correlation import (
    CorrelationInputError,
    HourlyCloses,
    aligned_log_returns,
    beta,
    build_correlation_matrix,
    log_returns,
    pearson,
)

HOUR_MS = 3_600_000
LOOKBACK = 72
# The 1h candle of the bundled sample (2025-01-29 04:00 UTC) ending 72 hours in which BTC and ETH moved
# together (corr 0.91, ETH beta 1.09) and XRP a little less (corr 0.87 with BTC).
END = 700


def load_1h(sample_dir: Path, symbol: str) -> tuple[list[int], list[float]]:
    with gzip.open(sample_dir / f"{symbol}-1h.csv.gz", "rt") as f:
        rows = list(csv.DictReader(f))
    return [int(r["open_time_ms"]) for r in rows], [float(r["close"]) for r in rows]


def window(sample_dir: Path, symbol: str, end_index: int, bars: int = LOOKBACK + 1) -> HourlyCloses:
    times, closes = load_1h(sample_dir, symbol)
    return HourlyCloses(
        symbol=symbol,
        last_open_time_ms=times[end_index],
        closes=tuple(closes[end_index - bars + 1 : end_index + 1]),
    )


class TestStatistics:
    """Pearson and beta agree with numpy's reference computations."""

    def test_pearson_matches_corrcoef_on_real_data(self, sample_dir: Path) -> None:
        a = window(sample_dir, "BTCUSDT", END)
        b = window(sample_dir, "ETHUSDT", END)
        ra, rb = log_returns(a.closes), log_returns(b.closes)
        assert ra.size == LOOKBACK
        r = pearson(ra, rb)
        assert r is not None
        assert r == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-12)
        assert r > 0.85  # BTC and ETH moved together in that window

    def test_beta_matches_polyfit(self) -> None:
        rng = np.random.default_rng(7)
        ref = rng.normal(0, 0.01, 200)
        ret = 1.7 * ref + rng.normal(0, 0.002, 200)
        b = beta(ret, ref)
        assert b == pytest.approx(np.polyfit(ref, ret, 1)[0], rel=1e-9)

    def test_flat_series_is_undefined(self) -> None:
        flat = np.zeros(10)
        assert pearson(flat, np.arange(10.0)) is None
        assert beta(np.arange(10.0), flat) is None

    def test_perfect_anti_correlation(self) -> None:
        x = np.array([0.01, -0.02, 0.03, 0.0, -0.01])
        assert pearson(x, -2 * x) == pytest.approx(-1.0)

    def test_bad_closes_give_nan_returns(self) -> None:
        r = log_returns([100.0, 0.0, 101.0, math.nan])
        assert np.isnan(r).all()


class TestAlignment:
    """Pairs are measured on the same hours; short history is unknown, never uncorrelated."""

    def test_newer_series_is_cut_to_the_common_hours(self, sample_dir: Path) -> None:
        a = window(sample_dir, "BTCUSDT", END)
        b_long = window(sample_dir, "ETHUSDT", END + 3, bars=LOOKBACK + 4)
        pair = aligned_log_returns(a, b_long, LOOKBACK)
        assert pair is not None
        same = aligned_log_returns(a, window(sample_dir, "ETHUSDT", END), LOOKBACK)
        assert same is not None
        np.testing.assert_array_equal(pair[1], same[1])

    def test_insufficient_history_is_none(self, sample_dir: Path) -> None:
        a = window(sample_dir, "BTCUSDT", END, bars=LOOKBACK)  # 71 returns
        b = window(sample_dir, "ETHUSDT", END)
        assert aligned_log_returns(a, b, LOOKBACK) is None

    def test_misaligned_open_time_refused(self) -> None:
        a = HourlyCloses(symbol="X", last_open_time_ms=HOUR_MS * 10 + 1, closes=(1.0,) * 80)
        with pytest.raises(CorrelationInputError) as ei:
            aligned_log_returns(a, a, LOOKBACK)
        assert ei.value.field == "X.last_open_time_ms"


class TestMatrix:
    """The matrix the risk engine reads: pairs, betas, buckets."""

    def test_real_matrix(self, sample_dir: Path) -> None:
        series = {s: window(sample_dir, s, END) for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT")}
        m = build_correlation_matrix(series, lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=1)
        assert m.correlation("BTCUSDT", "ETHUSDT") == m.correlation("ETHUSDT", "BTCUSDT")
        assert m.correlation("BTCUSDT", "BTCUSDT") == 1.0
        assert m.beta_of("BTCUSDT") == 1.0
        eth = m.beta_of("ETHUSDT")
        assert eth is not None
        assert eth > 1.0
        assert m.bucket("BTCUSDT", 0.85) == ("BTCUSDT", "ETHUSDT", "XRPUSDT")
        assert m.bucket("BTCUSDT", 0.9) == ("BTCUSDT", "ETHUSDT")

    def test_new_listing_has_no_correlation(self, sample_dir: Path) -> None:
        # A symbol listed ten hours ago: eleven real hourly closes (SOLUSDT's last eleven before END, under
        # another name) are not enough for a 72-hour correlation or beta.
        _, sol_c = load_1h(sample_dir, "SOLUSDT")
        new = HourlyCloses(
            symbol="NEWUSDT",
            last_open_time_ms=load_1h(sample_dir, "BTCUSDT")[0][END],
            closes=tuple(sol_c[END - 10 : END + 1]),
        )
        series = {"BTCUSDT": window(sample_dir, "BTCUSDT", END), "NEWUSDT": new}
        m = build_correlation_matrix(series, lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=1)
        assert m.correlation("BTCUSDT", "NEWUSDT") is None
        assert m.beta_of("NEWUSDT") is None
        assert m.beta_of("BTCUSDT") == 1.0
        # The same real closes with the full 72 hours do have both.
        full = HourlyCloses(
            symbol="NEWUSDT",
            last_open_time_ms=new.last_open_time_ms,
            closes=tuple(sol_c[END - LOOKBACK : END + 1]),
        )
        m2 = build_correlation_matrix(
            {**series, "NEWUSDT": full}, lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=1
        )
        assert m2.correlation("BTCUSDT", "NEWUSDT") is not None
        assert m2.beta_of("NEWUSDT") is not None

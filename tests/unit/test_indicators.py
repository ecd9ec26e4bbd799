"""Indicators against TA-Lib on every bundled real klines file (5m and 1h), BOT_SPEC §4."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import talib

from futures_actor.core import indicators as ind
from futures_actor.core.candles import CandleArrays
from futures_actor.data.klines_csv import read_klines

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
# Every kline file of the bundled sample, by path below it: 60 days of 5m and 1h for four symbols, 1h only
# for six more, and INJUSDT across the 2025-10-10 liquidation cascade (5m and 1h).
FILES = sorted(str(p.relative_to(SAMPLE)) for p in SAMPLE.rglob("*USDT-*.csv.gz"))
REL = 1e-9


@cache
def klines_file(name: str) -> CandleArrays:
    interval = name.rsplit("-", 1)[1].removesuffix(".csv.gz")
    return read_klines(SAMPLE / name, interval=interval)


def klines(symbol: str, interval: str) -> CandleArrays:
    sub = "stress/" if symbol == "INJUSDT" else ""
    return klines_file(f"{sub}{symbol}-{interval}.csv.gz")


def assert_close(ours: npt.NDArray[np.float64], ref: npt.NDArray[np.float64], *, rel: float = REL) -> None:
    """Same warm-up (NaN positions) and values within `rel` relative after it."""
    assert ours.shape == ref.shape
    ours_nan, ref_nan = np.isnan(ours), np.isnan(ref)
    assert np.array_equal(ours_nan, ref_nan), (
        f"warm-up differs: first value at {np.argmin(ours_nan)} vs {np.argmin(ref_nan)}"
    )
    ok = ~ref_nan
    assert ok.sum() > 0
    err = np.abs(ours[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-300)
    assert err.max() <= rel, f"max relative error {err.max():.3e} at {np.argmax(err)}"


def test_every_bundled_file_is_covered(sample_dir: Path) -> None:
    assert sample_dir.resolve() == SAMPLE.resolve()
    assert len(FILES) == 4 * 2 + 6 + 2


@pytest.mark.parametrize("name", FILES)
class TestAgainstTalib:
    """Every indicator equals TA-Lib to 1e-9 relative on real data, with the same warm-up."""

    def test_ema(self, name: str) -> None:
        c = klines_file(name).close
        for n in (20, 50):
            assert_close(ind.ema(c, n), talib.EMA(c, timeperiod=n))

    def test_rsi(self, name: str) -> None:
        c = klines_file(name).close
        assert_close(ind.rsi(c, 14), talib.RSI(c, timeperiod=14))

    def test_atr(self, name: str) -> None:
        k = klines_file(name)
        assert_close(ind.atr(k.high, k.low, k.close, 14), talib.ATR(k.high, k.low, k.close, timeperiod=14))

    def test_adx(self, name: str) -> None:
        k = klines_file(name)
        assert_close(ind.adx(k.high, k.low, k.close, 14), talib.ADX(k.high, k.low, k.close, timeperiod=14))

    def test_bollinger_bands(self, name: str) -> None:
        c = klines_file(name).close
        upper, middle, lower = ind.bollinger(c, 20, 2.0)
        t_upper, t_middle, t_lower = talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)
        assert_close(upper, t_upper)
        assert_close(middle, t_middle)
        assert_close(lower, t_lower)
        assert_close((upper - lower) / middle, (t_upper - t_lower) / t_middle)


class TestIncrementalWindowStats:
    """RollingWindowStats (O(1) per value) matches an exact two-pass over each window."""

    @pytest.mark.parametrize("symbol", ["BTCUSDT", "INJUSDT"])
    def test_bollinger_std_matches_exact(self, symbol: str) -> None:
        c = klines(symbol, "5m").close
        stats = ind.RollingWindowStats(20)
        std = np.full(c.shape, np.nan)
        mean = np.full(c.shape, np.nan)
        for i, x in enumerate(c.tolist()):
            stats.update(x)
            if stats.full:
                std[i] = stats.std
                mean[i] = stats.mean
        upper, middle, _ = ind.bollinger(c, 20, 2.0)
        assert_close(mean, middle, rel=1e-12)
        assert_close(std, (upper - middle) / 2.0, rel=1e-9)

    def test_volume_zscore_matches_batch_on_real_volumes(self) -> None:
        v = klines("XRPUSDT", "5m").volume
        stats = ind.RollingWindowStats(100)
        z = np.full(v.shape, np.nan)
        for i, x in enumerate(v.tolist()):
            stats.update(x)
            if stats.full:
                z[i] = ind.zscore_from_stats(x, stats.mean, stats.std)
        ref = ind.rolling_zscore(v, 100)
        assert np.array_equal(np.isnan(z), np.isnan(ref))
        ok = ~np.isnan(ref)
        assert np.max(np.abs(z[ok] - ref[ok])) <= 1e-9

    def test_huge_outlier_leaving_window_does_not_leave_drift(self) -> None:
        stats = ind.RollingWindowStats(5)
        for x in [1e12, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]:
            stats.update(x)
        assert stats.mean == pytest.approx(4.0, rel=1e-12)
        assert stats.variance == pytest.approx(2.0, rel=1e-9)

    def test_zero_std_gives_zero_z(self) -> None:
        stats = ind.RollingWindowStats(4)
        for _ in range(4):
            stats.update(0.1)
        assert ind.zscore_from_stats(0.1, stats.mean, stats.std) == 0.0
        z = ind.rolling_zscore(np.array([0.1] * 5 + [0.0] * 4), 4)
        assert z[3] == 0.0
        assert z[4] == 0.0
        assert z[-1] == 0.0
        assert z[5] == pytest.approx(-math.sqrt(3.0))


class TestEdgeCases:
    """TA-Lib's conventions in degenerate cases."""

    def test_flat_series_rsi_is_zero_like_talib(self) -> None:
        c = np.full(40, 5.0)
        assert_close(ind.rsi(c, 14), talib.RSI(c, timeperiod=14))
        assert ind.rsi(c, 14)[-1] == 0.0

    def test_flat_series_adx_like_talib(self) -> None:
        h = np.full(60, 5.0)
        ref = talib.ADX(h, h, h, timeperiod=14)
        ours = ind.adx(h, h, h, 14)
        assert np.array_equal(np.isnan(ours), np.isnan(ref))
        assert np.allclose(ours[~np.isnan(ref)], ref[~np.isnan(ref)])

    def test_short_input_is_all_nan(self) -> None:
        c = np.arange(1.0, 10.0)
        assert np.isnan(ind.ema(c, 20)).all()
        assert np.isnan(ind.bollinger(c, 20, 2.0)[0]).all()
        assert np.isnan(ind.rolling_zscore(c, 20)).all()

    def test_prior_high_low_excludes_current_bar(self) -> None:
        h = np.array([1.0, 5.0, 2.0, 3.0, 9.0, 1.0])
        lo = h - 0.5
        ph, pl = ind.prior_high_low(h, lo, 3)
        assert np.isnan(ph[:3]).all()
        assert ph[3:].tolist() == [5.0, 5.0, 9.0]
        assert pl[3:].tolist() == [0.5, 1.5, 1.5]

    def test_true_range_uses_previous_close(self) -> None:
        assert ind.true_range(10.0, 9.0, 12.0) == 3.0
        assert ind.true_range(10.0, 9.0, 7.0) == 3.0
        assert ind.true_range(10.0, 9.0, 9.5) == 1.0

    @pytest.mark.parametrize("cls", [ind.Ema, ind.Rsi, ind.Atr, ind.Adx, ind.RollingWindowStats])
    def test_period_below_two_refused(self, cls: type) -> None:
        with pytest.raises(ValueError, match="period"):
            cls(1)

    def test_mismatched_lengths_refused(self) -> None:
        with pytest.raises(ValueError, match="lengths"):
            ind.atr(np.ones(3), np.ones(4), np.ones(3), 2)

    def test_incremental_returns_none_until_warm(self) -> None:
        e = ind.Ema(3)
        assert [e.update(x) for x in (1.0, 2.0, 3.0, 4.0)] == [None, None, 2.0, 3.0]
        assert math.isclose(e.update(5.0) or 0.0, 4.0)

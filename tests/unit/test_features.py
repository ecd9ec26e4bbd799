"""SymbolFeatureEngine: incremental features equal the batch/TA-Lib values; gaps, backfill, 1h alignment."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
import talib

from futures_actor.core import indicators as ind
from futures_actor.core.candles import AppendStatus, ConflictingCandle, InvalidCandle, OutOfOrderCandle
from futures_actor.core.config import BotConfig
from futures_actor.core.features import SymbolFeatureEngine, compute_features
from futures_actor.core.models import Features
from futures_actor.core.types import INTERVAL_MS, Candle
from futures_actor.data.klines_csv import arrays_to_candles, read_klines

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"  # bundled recorded klines
# Where each symbol's 5m and 1h files are: INJUSDT's are the sample's stress slice (2025-10-01 to 10-14).
KLINES_DIR = {"BTCUSDT": SAMPLE, "INJUSDT": SAMPLE / "stress"}
MS_5M = INTERVAL_MS["5m"]
MS_1H = INTERVAL_MS["1h"]
CFG = BotConfig()
REL = 1e-9


@cache
def real(symbol: str, start: int, stop: int) -> tuple[list[Candle], list[Candle]]:
    """5m candles [start, stop) of the file and every 1h candle up to the slice's end."""
    five = arrays_to_candles(
        read_klines(KLINES_DIR[symbol] / f"{symbol}-5m.csv.gz", interval="5m", limit=stop)
    )
    five = five[start:]
    hour = arrays_to_candles(read_klines(KLINES_DIR[symbol] / f"{symbol}-1h.csv.gz", interval="1h"))
    end = five[-1].open_time_ms + MS_5M
    return five, [c for c in hour if c.open_time_ms + MS_1H <= end]


def column(features: list[Features], name: str) -> npt.NDArray[np.float64]:
    return np.array([np.nan if (v := getattr(f, name)) is None else v for f in features], dtype=np.float64)


def assert_close(ours: npt.NDArray[np.float64], ref: npt.NDArray[np.float64], *, rel: float = REL) -> None:
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), (
        f"undefined positions differ: first defined {np.argmin(np.isnan(ours))} vs {np.argmin(np.isnan(ref))}"
    )
    ok = ~np.isnan(ref)
    assert ok.sum() > 0
    err = np.abs(ours[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-300)
    assert err.max() <= rel, f"max relative error {err.max():.3e}"


# BTC from the first candle (the whole 60-day sample); INJ across the 2025-10-10 liquidation cascade
# (a 0.91 log-return candle), the whole stress slice.
CASES = {"BTCUSDT": (0, 17_280), "INJUSDT": (0, 4_032)}


@pytest.mark.parametrize("symbol", sorted(CASES))
class TestEngineMatchesBatch:
    """Features fed one closed candle at a time equal TA-Lib / exact batch values on real data."""

    @pytest.fixture
    def run(self, symbol: str) -> tuple[list[Candle], list[Candle], list[Features]]:
        five, hour = real(symbol, *CASES[symbol])
        steps = compute_features(symbol=symbol, config=CFG, candles_5m=five, candles_1h=hour)
        assert all(s.append.status is AppendStatus.APPENDED for s in steps)
        feats = [s.features for s in steps]
        assert all(f is not None for f in feats)
        return five, hour, [f for f in feats if f is not None]

    def test_wilder_and_ema(self, run: tuple[list[Candle], list[Candle], list[Features]]) -> None:
        five, _, feats = run
        h = np.array([c.high for c in five])
        lo = np.array([c.low for c in five])
        c = np.array([c.close for c in five])
        assert_close(column(feats, "rsi"), talib.RSI(c, 14))
        assert_close(column(feats, "adx"), talib.ADX(h, lo, c, 14))
        assert_close(column(feats, "atr"), talib.ATR(h, lo, c, 14))
        assert_close(column(feats, "ema20"), talib.EMA(c, 20))
        assert_close(column(feats, "ema50"), talib.EMA(c, 50))

    def test_bollinger(self, run: tuple[list[Candle], list[Candle], list[Features]]) -> None:
        five, _, feats = run
        c = np.array([x.close for x in five])
        upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
        assert_close(column(feats, "bb_upper"), upper)
        assert_close(column(feats, "bb_middle"), middle)
        assert_close(column(feats, "bb_lower"), lower)
        eu, em, el = ind.bollinger(c, 20, 2.0)
        assert_close(column(feats, "bb_width"), (eu - el) / em)

    def test_zscores_and_prior_range(self, run: tuple[list[Candle], list[Candle], list[Features]]) -> None:
        five, _, feats = run
        h = np.array([x.high for x in five])
        lo = np.array([x.low for x in five])
        c = np.array([x.close for x in five])
        v = np.array([x.volume for x in five])
        n = CFG.timeframes.zscore_lookback
        for name, ref in (
            ("volume_z", ind.rolling_zscore(v, n)),
            ("atr_z", ind.rolling_zscore(talib.ATR(h, lo, c, 14), n)),
        ):
            ours = column(feats, name)
            assert np.array_equal(np.isnan(ours), np.isnan(ref)), name
            ok = ~np.isnan(ref)
            assert np.max(np.abs(ours[ok] - ref[ok])) <= 1e-9, name
        ph, pl = ind.prior_high_low(h, lo, CFG.strategies.trend_breakout.breakout_lookback_bars)
        assert np.array_equal(column(feats, "prior_high"), ph, equal_nan=True)
        assert np.array_equal(column(feats, "prior_low"), pl, equal_nan=True)

    def test_trend_values_from_last_closed_hour(
        self, run: tuple[list[Candle], list[Candle], list[Features]]
    ) -> None:
        five, hour, feats = run
        hc = np.array([x.close for x in hour])
        e20, e50 = talib.EMA(hc, 20), talib.EMA(hc, 50)
        index = {x.open_time_ms: i for i, x in enumerate(hour)}
        ref20 = np.full(len(five), np.nan)
        ref50 = np.full(len(five), np.nan)
        for k, c5 in enumerate(five):
            close = c5.open_time_ms + MS_5M - 1
            # the newest 1h candle whose close (open + 1h - 1) is <= the 5m close
            i = index.get((close + 1) // MS_1H * MS_1H - MS_1H)
            if i is not None:
                ref20[k], ref50[k] = e20[i], e50[i]
        assert_close(column(feats, "ema20_1h"), ref20)
        assert_close(column(feats, "ema50_1h"), ref50)
        # a candle ending on the hour uses the hour that closes with it
        k = next(k for k, c5 in enumerate(five) if (c5.open_time_ms + MS_5M) % MS_1H == 0 and k > 1000)
        assert feats[k].ema20_1h == e20[index[five[k].open_time_ms + MS_5M - MS_1H]]


def hour_then_five(engine: SymbolFeatureEngine, five: list[Candle], hour: list[Candle], upto_5m: int) -> None:
    j = 0
    for c in five[:upto_5m]:
        while j < len(hour) and hour[j].open_time_ms + MS_1H <= c.open_time_ms + MS_5M:
            engine.on_1h(hour[j])
            j += 1
        engine.on_5m(c)


class TestContinuity:
    """No feature is computed across a gap; backfill or a rebuilt tail gives the uninterrupted values."""

    def test_gap_reported_backfill_restores_identical_features(self) -> None:
        five, hour = real("BTCUSDT", 0, 2_000)
        reference = compute_features(symbol="BTCUSDT", config=CFG, candles_5m=five, candles_1h=hour)
        engine = SymbolFeatureEngine(symbol="BTCUSDT", config=CFG)
        hour_then_five(engine, five, hour, 1_500)
        step = engine.on_5m(five[1_510])  # candles 1500..1509 missed
        assert step.append.status is AppendStatus.GAP
        assert step.features is None
        assert (step.append.missing_from_ms, step.append.missing_to_ms) == (
            five[1_500].open_time_ms,
            five[1_509].open_time_ms,
        )
        assert step.append.missing_count == 10
        assert engine.last_features == reference[1_499].features
        for c in five[1_500:1_511]:  # backfill in order, then the reported candle again
            last = engine.on_5m(c)
        assert last.features == reference[1_510].features

    def test_duplicate_changes_nothing(self) -> None:
        five, hour = real("BTCUSDT", 0, 2_000)
        engine = SymbolFeatureEngine(symbol="BTCUSDT", config=CFG)
        hour_then_five(engine, five, hour, 300)
        before = engine.last_features
        step = engine.on_5m(five[299])
        assert step.append.status is AppendStatus.DUPLICATE
        assert step.features is None
        assert engine.last_features is before
        assert engine.on_5m(five[300]).features is not None

    def test_bad_candle_refused_state_untouched(self) -> None:
        five, hour = real("BTCUSDT", 0, 2_000)
        engine = SymbolFeatureEngine(symbol="BTCUSDT", config=CFG)
        hour_then_five(engine, five, hour, 300)
        reference = compute_features(symbol="BTCUSDT", config=CFG, candles_5m=five[:301], candles_1h=hour)
        with pytest.raises(InvalidCandle):
            engine.on_5m(msgspec.structs.replace(five[300], high=five[300].low * 0.5))
        with pytest.raises(ConflictingCandle):
            engine.on_5m(msgspec.structs.replace(five[10], volume=five[10].volume + 1.0))
        assert engine.on_5m(five[300]).features == reference[300].features

    def test_replace_history_converges_to_full_run(self) -> None:
        five, hour = real("BTCUSDT", 0, 17_280)
        full = compute_features(symbol="BTCUSDT", config=CFG, candles_5m=five, candles_1h=hour)
        engine = SymbolFeatureEngine(symbol="BTCUSDT", config=CFG)
        n5, n1 = CFG.market_data.history_5m_bars, CFG.market_data.history_1h_bars
        end = 15_000
        tail_1h = [c for c in hour if c.open_time_ms + MS_1H <= five[end - 1].open_time_ms + MS_5M][-n1:]
        got = engine.replace_history(five[end - n5 : end], tail_1h)
        want = full[end - 1].features
        assert got is not None
        assert want is not None
        assert got.warm
        assert len(engine.store_5m) == n5
        for name in ("rsi", "adx", "atr", "ema20", "ema50", "bb_width", "volume_z", "atr_z", "prior_high"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-8), name
        # the 1h EMA50 seed has decayed to ~1e-5 of the seed error after 300 bars
        assert got.ema50_1h == pytest.approx(want.ema50_1h, rel=1e-6)
        nxt = engine.on_5m(five[end]).features
        assert nxt is not None
        assert nxt.close == five[end].close

    def test_replace_history_refuses_gapped_history(self) -> None:
        five, hour = real("BTCUSDT", 0, 2_000)
        engine = SymbolFeatureEngine(symbol="BTCUSDT", config=CFG)
        with pytest.raises(OutOfOrderCandle):
            engine.replace_history(five[:100] + five[101:200], hour[:10])
        assert len(engine.store_5m) == 0


class TestTrendAlignment:
    """The 5m candle uses the 1h candle closing at the latest hour boundary <= its close, never a stale one."""

    def test_missing_hour_gives_undefined_trend(self) -> None:
        five, hour = real("BTCUSDT", 0, 2_000)
        engine = SymbolFeatureEngine(symbol="BTCUSDT", config=CFG)
        hour_then_five(engine, five, hour, 1_199)  # 5m candles up to 99:55, 1h candles 0..98
        assert engine.last_features is not None
        assert engine.last_features.ema20_1h is not None
        assert (five[1_199].open_time_ms + MS_5M) % MS_1H == 0  # this 5m candle closes on the hour
        # the 1h candle closing with it (index 99) is late: no trend value, not warm, for that hour
        for c in five[1_199:1_211]:
            f = engine.on_5m(c).features
            assert f is not None
            assert f.ema20_1h is None
            assert f.ema50_1h is None
            assert not f.warm
        engine.on_1h(hour[99])
        engine.on_1h(hour[100])
        f = engine.on_5m(five[1_211]).features
        hc = np.array([x.close for x in hour[:101]])
        assert f is not None
        assert f.ema20_1h == pytest.approx(talib.EMA(hc, 20)[100], rel=1e-12)

    def test_zero_std_volume_gives_zero_z(self) -> None:
        engine = SymbolFeatureEngine(symbol="FLAT", config=CFG)
        t0 = 1_735_603_200_000
        for i in range(CFG.timeframes.zscore_lookback + 20):
            f = engine.on_5m(
                Candle(open_time_ms=t0 + i * MS_5M, open=1.0, high=1.0, low=1.0, close=1.0, volume=0.3)
            ).features
        assert f is not None
        assert f.volume_z == 0.0
        assert f.atr_z == 0.0  # true range 0 every bar: ATR constant 0

    def test_hour_gap_reported_and_trend_undefined_until_backfilled(self) -> None:
        five, hour = real("BTCUSDT", 0, 2_000)
        engine = SymbolFeatureEngine(symbol="BTCUSDT", config=CFG)
        hour_then_five(engine, five, hour, 1_199)  # 1h candles 0..98 delivered
        r = engine.on_1h(hour[100])  # hour 99 missed
        assert r.status is AppendStatus.GAP
        assert (r.missing_from_ms, r.missing_count) == (hour[99].open_time_ms, 1)
        f = engine.on_5m(five[1_199]).features  # closes with hour 99: not available
        assert f is not None
        assert f.ema20_1h is None
        assert engine.on_1h(hour[99]).status is AppendStatus.APPENDED
        assert engine.on_1h(hour[100]).status is AppendStatus.APPENDED
        f = engine.on_5m(five[1_200]).features
        assert f is not None
        assert f.ema20_1h is not None

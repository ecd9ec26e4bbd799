"""The lazy correlation matrix answers like the full one (issue 6, BOT_SPEC §8.5): the same buckets,
the same betas, correlations equal to rounding (the block of series ending on the newest hour is
one vectorised matrix product, issue 12; the full build sums pair by pair)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest

from futures_actor.core.correlation import (
    CorrelationInputError,
    CorrelationMatrix,
    HourlyCloses,
    LazyCorrelationMatrix,
    build_correlation_matrix,
    lazy_correlation_matrix,
)

HOUR_MS = 3_600_000
LOOKBACK = 72
HISTORY = LOOKBACK + 1 + 24  # what PortfolioRisk keeps: lookback + 1 + slack
THRESHOLDS = (-1.0, 0.0, 0.3, 0.5, 0.7, 0.85, 0.95)
# A listing in the middle of the data: the real ZECUSDT closes from this hour on, as "LISTEDUSDT".
LISTED = "LISTEDUSDT"
LISTED_FROM = 600


def load_all_1h(sample_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """The 1h closes of every symbol of the bundled sample (top level and `hourly/`), same 60 days."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for path in sorted(
        [*sample_dir.glob("*USDT-1h.csv.gz"), *(sample_dir / "hourly").glob("*USDT-1h.csv.gz")]
    ):
        with gzip.open(path, "rt") as f:
            rows = list(csv.DictReader(f))
        out[path.name.split("-")[0]] = (
            [int(r["open_time_ms"]) for r in rows],
            [float(r["close"]) for r in rows],
        )
    return out


@pytest.fixture(scope="module")
def hourly(sample_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    data = load_all_1h(sample_dir)
    assert len(data) == 10
    times, closes = data["ZECUSDT"]
    data[LISTED] = (times[LISTED_FROM:], closes[LISTED_FROM:])
    return data


def snapshot(
    data: dict[str, tuple[list[int], list[float]]], end_ms: int, lag_hours: dict[str, int]
) -> dict[str, HourlyCloses]:
    """Each symbol's last HISTORY closes up to `end_ms` minus its lag (a symbol may lag behind)."""
    series: dict[str, HourlyCloses] = {}
    for sym, (times, closes) in data.items():
        last = end_ms - lag_hours.get(sym, 0) * HOUR_MS
        idx = [i for i, t in enumerate(times) if t <= last]
        if not idx:
            continue  # not listed yet
        j = idx[-1]
        start = max(0, j - HISTORY + 1)
        series[sym] = HourlyCloses(
            symbol=sym, last_open_time_ms=times[j], closes=tuple(closes[start : j + 1])
        )
    return series


def assert_same(full: CorrelationMatrix, lazy: LazyCorrelationMatrix, symbols: list[str]) -> None:
    for a in symbols:
        for b in symbols:
            got, want = lazy.correlation(a, b), full.correlation(a, b)
            assert (got is None) == (want is None), (a, b)
            if want is not None:
                assert got == pytest.approx(want, abs=1e-12), (a, b)
        assert lazy.beta_of(a) == full.beta_of(a), a
        for t in THRESHOLDS:
            assert lazy.bucket(a, t) == full.bucket(a, t), (a, t)


class TestLazyEqualsFull:
    def test_real_data_at_several_hours(self, hourly: dict[str, tuple[list[int], list[float]]]) -> None:
        btc_times = hourly["BTCUSDT"][0]
        listed_idx = btc_times.index(hourly[LISTED][0][0])
        # early (the listing absent), just listed (too short), barely enough, middle, end
        ends = [
            btc_times[200],
            btc_times[listed_idx + 10],
            btc_times[listed_idx + LOOKBACK + 1],
            btc_times[1000],
        ]
        ends.append(btc_times[-1])
        lags = [{}, {"ETHUSDT": 1, "SOLUSDT": 3}, {"BTCUSDT": 2}]
        checked = 0
        for end in ends:
            for lag in lags:
                series = snapshot(hourly, end, lag)
                symbols = [*sorted(series), "UNKNOWNUSDT"]
                full = build_correlation_matrix(
                    series, lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=end
                )
                lazy = lazy_correlation_matrix(
                    series, lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=end
                )
                assert_same(full, lazy, symbols)
                assert lazy.betas == full.betas
                checked += 1
        assert checked == len(ends) * len(lags)

    def test_some_pairs_unknown_and_some_correlated(
        self, hourly: dict[str, tuple[list[int], list[float]]]
    ) -> None:
        # the comparison above must cover None and above-threshold answers, or it proves little
        listed_start = hourly[LISTED][0][0]
        series = snapshot(hourly, listed_start + 10 * HOUR_MS, {})
        lazy = lazy_correlation_matrix(series, lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=0)
        assert lazy.correlation(LISTED, "BTCUSDT") is None
        assert lazy.beta_of(LISTED) is None
        end = hourly["BTCUSDT"][0][-1]
        lazy = lazy_correlation_matrix(
            snapshot(hourly, end, {}), lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=0
        )
        assert len(lazy.bucket("ETHUSDT", 0.5)) > 1

    def test_one_matrix_product_per_close(self, hourly: dict[str, tuple[list[int], list[float]]]) -> None:
        """Series ending on the newest hour are correlated at once on the first question (no pair
        computed one by one); a lagging series is computed pair by pair, and cached."""
        end = hourly["BTCUSDT"][0][-1]
        series = snapshot(hourly, end, {"SOLUSDT": 2})
        lazy = lazy_correlation_matrix(series, lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=0)
        assert lazy.block_cache == []
        lazy.bucket("ETHUSDT", 0.85)
        (block,) = lazy.block_cache
        assert "SOLUSDT" not in block.index
        assert len(block.index) == len(series) - 1
        assert set(lazy.pair_cache) == {("ETHUSDT", "SOLUSDT")}  # the lagging one only
        first = lazy.correlation("ETHUSDT", "BTCUSDT")
        lazy.bucket("ETHUSDT", 0.5)
        assert lazy.block_cache == [block]  # built once per matrix (per hourly close)
        assert lazy.correlation("BTCUSDT", "ETHUSDT") == first

    def test_200_symbols_from_real_series_same_buckets(
        self, hourly: dict[str, tuple[list[int], list[float]]]
    ) -> None:
        """200 synthetic symbols (real log returns mixed with seeded noise, so correlations spread
        over the thresholds) give exactly the buckets of the full build at every threshold."""
        import math
        import random

        rng = random.Random(12)
        end = hourly["BTCUSDT"][0][-1]
        base = snapshot(hourly, end, {})
        names = sorted(base)
        series: dict[str, HourlyCloses] = dict(base)
        for k in range(200 - len(base)):
            a, b = rng.sample(names, 2)
            w, noise = rng.random(), rng.uniform(0.0, 0.02)
            ca, cb = base[a].closes, base[b].closes
            n = min(len(ca), len(cb))
            closes = [100.0]
            for i in range(len(ca) - n + 1, len(ca)):
                ra = math.log(ca[i] / ca[i - 1])
                rb = math.log(cb[i - len(ca) + len(cb)] / cb[i - 1 - len(ca) + len(cb)])
                closes.append(closes[-1] * math.exp(w * ra + (1 - w) * rb + rng.gauss(0, noise)))
            sym = f"SYN{k:03d}USDT"
            series[sym] = HourlyCloses(symbol=sym, last_open_time_ms=end, closes=tuple(closes))
        full = build_correlation_matrix(series, lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=end)
        lazy = lazy_correlation_matrix(series, lookback=LOOKBACK, reference_symbol="BTCUSDT", as_of_ms=end)
        sizes = []
        for sym in sorted(series):
            for t in THRESHOLDS:
                got = lazy.bucket(sym, t)
                assert got == full.bucket(sym, t), (sym, t)
                sizes.append(len(got))
        assert 1 < sum(sizes) / len(sizes) < len(series)  # buckets neither trivial nor everything


class TestValidation:
    def test_bad_open_time_raises_at_build(self) -> None:
        bad = HourlyCloses(symbol="AAAUSDT", last_open_time_ms=HOUR_MS + 1, closes=(1.0, 2.0, 3.0))
        with pytest.raises(CorrelationInputError) as exc:
            lazy_correlation_matrix({"AAAUSDT": bad}, lookback=LOOKBACK, reference_symbol="", as_of_ms=0)
        assert exc.value.field == "AAAUSDT.last_open_time_ms"
        assert exc.value.value == HOUR_MS + 1

    def test_bad_lookback_raises_at_build(self) -> None:
        with pytest.raises(CorrelationInputError) as exc:
            lazy_correlation_matrix({}, lookback=1, reference_symbol="", as_of_ms=0)
        assert exc.value.field == "lookback"

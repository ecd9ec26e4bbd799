"""Candle store: validation, duplicates, order, gaps and backfill, ring buffer (BOT_SPEC §3, AC14)."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from futures_actor.core.candles import (
    AppendStatus,
    CandleStore,
    ConflictingCandle,
    InvalidCandle,
    OutOfOrderCandle,
)
from futures_actor.core.types import INTERVAL_MS, Candle

STEP = INTERVAL_MS["5m"]
T0 = 1_735_603_200_000  # 2024-12-31 00:00 UTC


def candle(i: int, **overrides: object) -> Candle:
    c = 100.0 + i
    base = Candle(
        open_time_ms=T0 + i * STEP, open=c - 0.5, high=c + 1.0, low=c - 1.0, close=c, volume=10.0 + i
    )
    return msgspec.structs.replace(base, **overrides) if overrides else base


def store(capacity: int = 10) -> CandleStore:
    return CandleStore(symbol="BTCUSDT", interval="5m", capacity=capacity)


class TestValidation:
    """A malformed candle raises InvalidCandle naming symbol, field and value; nothing is stored."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("open", math.nan),
            ("high", math.inf),
            ("low", -math.inf),
            ("close", 0.0),
            ("open", -1.0),
            ("volume", -0.001),
            ("volume", math.nan),
            ("quote_volume", -1.0),
            ("trades", -1),
            ("open_time_ms", T0 + 1),
            ("open_time_ms", -STEP),
        ],
    )
    def test_bad_field(self, field: str, value: object) -> None:
        s = store()
        with pytest.raises(InvalidCandle) as info:
            s.append(candle(0, **{field: value}))
        err = info.value
        assert (err.symbol, err.interval, err.field) == ("BTCUSDT", "5m", field)
        assert err.value is value or err.value == value
        assert "BTCUSDT" in str(err)
        assert field in str(err)
        assert len(s) == 0

    def test_high_below_body(self) -> None:
        s = store()
        with pytest.raises(InvalidCandle, match="high") as info:
            s.append(candle(0, high=100.2, open=100.0, close=100.3, low=99.0))
        assert info.value.field == "high"
        assert info.value.value == 100.2

    def test_low_above_body(self) -> None:
        with pytest.raises(InvalidCandle) as info:
            store().append(candle(0, low=100.1, open=100.0, close=100.3, high=101.0))
        assert info.value.field == "low"

    def test_flat_zero_volume_candle_is_valid(self) -> None:
        """The real data has o=h=l=c, volume 0 candles (trading pauses); they are stored."""
        s = store()
        r = s.append(Candle(open_time_ms=T0, open=5.0, high=5.0, low=5.0, close=5.0, volume=0.0))
        assert r.status is AppendStatus.APPENDED


class TestOrdering:
    """Duplicates are no-ops; older or conflicting candles are refused; gaps are reported, not stored."""

    def test_contiguous_appends(self) -> None:
        s = store()
        for i in range(3):
            assert s.append(candle(i)).status is AppendStatus.APPENDED
        assert len(s) == 3
        assert s.last_open_time_ms == T0 + 2 * STEP
        assert s.first_open_time_ms == T0

    def test_duplicate_is_noop(self) -> None:
        s = store()
        s.append(candle(0))
        s.append(candle(1))
        assert s.append(candle(1)).status is AppendStatus.DUPLICATE
        assert s.append(candle(0)).status is AppendStatus.DUPLICATE
        assert len(s) == 2

    def test_conflicting_duplicate_refused(self) -> None:
        s = store()
        s.append(candle(0))
        with pytest.raises(ConflictingCandle) as info:
            s.append(candle(0, close=100.25))
        assert info.value.field == "close"
        assert s.get(T0) == candle(0)

    def test_older_than_store_is_out_of_order(self) -> None:
        s = store(capacity=3)
        for i in range(5):
            s.append(candle(i))
        with pytest.raises(OutOfOrderCandle) as info:
            s.append(candle(1))
        assert info.value.field == "open_time_ms"
        assert info.value.value == T0 + STEP
        assert len(s) == 3

    def test_gap_reported_and_not_stored(self) -> None:
        s = store()
        s.append(candle(0))
        r = s.append(candle(4))
        assert r.status is AppendStatus.GAP
        assert (r.missing_from_ms, r.missing_to_ms, r.missing_count) == (T0 + STEP, T0 + 3 * STEP, 3)
        assert len(s) == 1
        assert s.last_open_time_ms == T0

    def test_backfill_then_resend(self) -> None:
        s = store()
        s.append(candle(0))
        assert s.append(candle(3)).status is AppendStatus.GAP
        for i in (1, 2):
            assert s.append(candle(i)).status is AppendStatus.APPENDED
        assert s.append(candle(3)).status is AppendStatus.APPENDED
        assert s.arrays().open_time_ms.tolist() == [T0 + i * STEP for i in range(4)]


class TestRingBuffer:
    """Fixed capacity; the oldest candle goes; arrays come back oldest first."""

    def test_wraparound_order(self) -> None:
        s = store(capacity=4)
        for i in range(10):
            s.append(candle(i))
        a = s.arrays()
        assert len(a) == 4
        assert a.open_time_ms.tolist() == [T0 + i * STEP for i in range(6, 10)]
        assert a.close.tolist() == [106.0, 107.0, 108.0, 109.0]
        assert a.volume.dtype == np.float64
        assert a.trades.dtype == np.int64
        assert s.arrays(last=2).close.tolist() == [108.0, 109.0]
        assert s.candles(last=2) == [candle(8), candle(9)]
        assert s.get(T0 + 5 * STEP) is None
        assert s.get(T0 + 7 * STEP) == candle(7)

    def test_arrays_are_copies(self) -> None:
        s = store(capacity=4)
        for i in range(3):
            s.append(candle(i))
        a = s.arrays()
        a.close[0] = -1.0
        assert s.arrays().close[0] == 100.0

    def test_replace_tail_keeps_newest_capacity(self) -> None:
        s = store(capacity=3)
        s.append(candle(50))
        s.replace_tail([candle(i) for i in range(5)])
        assert s.arrays().close.tolist() == [102.0, 103.0, 104.0]
        assert s.append(candle(5)).status is AppendStatus.APPENDED

    def test_replace_tail_refuses_gap_and_leaves_store_unchanged(self) -> None:
        s = store()
        s.append(candle(0))
        with pytest.raises(OutOfOrderCandle) as info:
            s.replace_tail([candle(1), candle(3)])
        assert info.value.value == T0 + 3 * STEP
        with pytest.raises(InvalidCandle):
            s.replace_tail([candle(1), candle(2, volume=-1.0)])
        assert s.candles() == [candle(0)]

    def test_reset(self) -> None:
        s = store()
        s.append(candle(0))
        s.reset()
        assert len(s) == 0
        assert s.last_open_time_ms is None
        assert s.append(candle(7)).status is AppendStatus.APPENDED

    def test_bad_construction(self) -> None:
        with pytest.raises(ValueError, match="interval"):
            CandleStore(symbol="X", interval="7m", capacity=3)
        with pytest.raises(ValueError, match="capacity"):
            CandleStore(symbol="X", interval="5m", capacity=0)

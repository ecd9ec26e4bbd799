"""The bundled sample (`data/sample/`) is complete, consistent and small enough to ship."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from futures_actor.actors.replay_feed import discover_symbols, read_funding
from futures_actor.binance.models import ExchangeInfo, decode_payload
from futures_actor.core.types import INTERVAL_MS
from futures_actor.data.klines_csv import read_klines
from futures_actor.startup import replay_rules

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
MAX_BYTES = 3_000_000
START_MS = 1_735_603_200_000  # 2024-12-31 00:00 UTC
DAYS = 60


def test_size_budget(sample_dir: Path) -> None:
    total = sum(p.stat().st_size for p in sample_dir.rglob("*") if p.is_file())
    assert total <= MAX_BYTES, f"data/sample is {total} bytes, over the {MAX_BYTES} budget"


def test_replay_finds_every_symbol_with_recorded_rules(sample_dir: Path) -> None:
    assert discover_symbols(sample_dir) == SYMBOLS
    rules = replay_rules(sample_dir, SYMBOLS, dict.fromkeys(SYMBOLS, 1.0))
    # From the recorded exchangeInfo, not derived from the price (BTCUSDT's real tick is 0.10).
    assert str(rules["BTCUSDT"].tick_size) == "0.10"
    assert str(rules["ETHUSDT"].step_size) == "0.001"


def test_klines_cover_the_same_sixty_days_without_gaps(sample_dir: Path) -> None:
    for symbol in SYMBOLS:
        for tf in ("5m", "1h"):
            k = read_klines(sample_dir / f"{symbol}-{tf}.csv.gz", interval=tf)
            step = INTERVAL_MS[tf]
            assert int(k.open_time_ms[0]) == START_MS
            assert len(k.open_time_ms) == DAYS * 86_400_000 // step
            assert np.all(np.diff(k.open_time_ms) == step)


def test_funding_every_eight_hours_in_the_window(sample_dir: Path) -> None:
    for symbol in SYMBOLS:
        f = read_funding(sample_dir / "funding" / f"{symbol}.csv", symbol=symbol)
        assert len(f.times_ms) == DAYS * 3
        assert int(f.times_ms[0]) == START_MS
        assert np.all(np.diff(f.times_ms) == 8 * 3_600_000)


def test_exchange_info_decodes_and_lists_the_sample_symbols(sample_dir: Path) -> None:
    raw = (sample_dir / "exchangeInfo_mainnet_2024-10-02.json").read_bytes()
    info = decode_payload(ExchangeInfo, raw, endpoint="GET /fapi/v1/exchangeInfo")
    assert set(SYMBOLS) <= {s.symbol for s in info.symbols}
    assert json.loads(raw)["serverTime"] == 1727892008657  # the recording's own time, kept as recorded

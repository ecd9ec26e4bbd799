"""Fixtures of the end-to-end tests: a synthetic market on the fake exchange, hosted on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .simhost import FIVE_MIN_MS, SimHost, exchange_info, random_walk

DAY_MS = 86_400_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
# The exchange clock starts this far into the candles: the bot's start-up backfill finds full history.
HISTORY_DAYS = 4
FUTURE_DAYS = 2
SYMBOLS = {"BTCUSDT": (60_000.0, ("0.10", "0.001", "5")), "ETHUSDT": (3_000.0, ("0.01", "0.001", "5"))}


def make_host(seed: int = 1) -> SimHost:
    bars = (HISTORY_DAYS + FUTURE_DAYS) * DAY_MS // FIVE_MIN_MS
    candles = {
        s: random_walk(price, start_ms=T0, bars=bars, interval_ms=FIVE_MIN_MS, seed=seed + n)
        for n, (s, (price, _)) in enumerate(SYMBOLS.items())
    }
    info = exchange_info({s: spec for s, (_, spec) in SYMBOLS.items()})
    return SimHost(info=info, candles=candles, start_ms=T0 + HISTORY_DAYS * DAY_MS)


@pytest.fixture
def sim() -> Iterator[SimHost]:
    with make_host() as host:
        yield host

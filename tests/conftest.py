"""Shared test fixtures: the bundled real-data sample (the suite never reads anything outside the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
"""The recorded data the repository ships (`data/sample/README.md`): klines, funding, exchangeInfo, payloads."""


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """`data/sample/`: 60 days of real BTC/ETH/SOL/XRP 5m+1h klines, their funding, the recorded mainnet
    exchangeInfo (cut to those and a few more symbols) and recorded REST/WS payloads."""
    if not (SAMPLE_DIR / "BTCUSDT-5m.csv.gz").is_file():
        raise FileNotFoundError(f"bundled sample data missing at {SAMPLE_DIR} (see data/sample/README.md)")
    return SAMPLE_DIR


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """trio's mock clock that jumps whenever every task is idle (pass it to a trio test by name)."""
    return trio.testing.MockClock(autojump_threshold=0)

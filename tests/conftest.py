"""Shared test fixtures: the location of the shared spec and real-data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

SHARED_DIR = Path(__file__).resolve().parents[1] / ".." / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the repository root (CI clones the repo with it there). Never skipped:
    if it is missing, every test that needs it fails loudly."""
    if not (SHARED_DIR / "data" / "klines").is_dir():
        raise FileNotFoundError(
            f"shared data directory not found at {SHARED_DIR.resolve()} "
            "(expected ../shared beside the repository root, with data/klines/)"
        )
    return SHARED_DIR


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """trio's mock clock that jumps whenever every task is idle (pass it to a trio test by name)."""
    return trio.testing.MockClock(autojump_threshold=0)

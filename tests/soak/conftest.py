"""The soak marker: long by nature, bounded in CI by `SOAK_KILLS` (see test_soak.py)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: the LIVE bot killed and restarted many times (bounded in CI by SOAK_KILLS)"
    )

"""Fixtures of the fake-exchange tests: a SimExchange on real BTCUSDT / ETHUSDT filters, request signing."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import trio.testing

from futures_actor.binance.sim import SimExchange, load_exchange_info
from futures_actor.core.config import BotConfig

API_KEY = "sim-test-key"
API_SECRET = "sim-test-secret"
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
# The recorded mainnet exchangeInfo bundled with the repository (data/sample/README.md).
EXCHANGE_INFO = (
    Path(__file__).resolve().parents[2] / "data" / "sample" / "exchangeInfo_mainnet_2024-10-02.json"
)


@pytest.fixture(scope="session")
def info_specs() -> tuple[dict[str, Any], dict[str, Any]]:
    return load_exchange_info(EXCHANGE_INFO, symbols=["BTCUSDT", "ETHUSDT", "HYPEUSDT"])


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def make_exchange(info_specs: tuple[dict[str, Any], dict[str, Any]], **kw: Any) -> SimExchange:
    info, specs = info_specs
    ex = SimExchange(
        exchange_info=info,
        specs=specs,
        execution=BotConfig().execution,
        api_key=API_KEY,
        api_secret=API_SECRET,
        start_ms=T0,
        **kw,
    )
    ex.set_price("BTCUSDT", "60000")
    ex.set_price("ETHUSDT", "3000")
    return ex


@pytest.fixture
def ex(info_specs: tuple[dict[str, Any], dict[str, Any]]) -> SimExchange:
    return make_exchange(info_specs)


def signed_query(params: dict[str, Any], *, timestamp: int, secret: str = API_SECRET) -> str:
    """`params` + timestamp, URL-encoded and signed with HMAC-SHA256 (signature last), as Binance wants."""
    query = urlencode({**params, "timestamp": timestamp})
    sig = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return f"{query}&signature={sig}"


D = Decimal

"""`futures-actor preflight` against the fake exchange: a good account passes (exit 0); each bad condition
fails with its row named."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import trio
import trio.testing

from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.sim import SimExchange, mock_transport
from futures_actor.core.config import BotConfig, ExchangeConfig
from futures_actor.core.secrets import Secret
from futures_actor.preflight import Check, format_table, run_checks, run_preflight
from tests.sim.conftest import API_KEY, API_SECRET, make_exchange

D = Decimal
CFG = BotConfig()
UNIVERSE = ("BTCUSDT", "ETHUSDT")


class SimWallClock:
    """The local wall clock, `skew_ms` off the exchange's."""

    def __init__(self, ex: SimExchange, skew_ms: int = 0) -> None:
        self.ex, self.skew_ms = ex, skew_ms

    def now_ms(self) -> int:
        return self.ex.now_ms + self.skew_ms


@pytest.fixture
def ex(info_specs: tuple[dict[str, Any], dict[str, Any]]) -> SimExchange:
    return make_exchange(info_specs)


async def preflight(ex: SimExchange, *, secret: str = API_SECRET, skew_ms: int = 0) -> dict[str, Check]:
    cfg = ExchangeConfig()
    transport = mock_transport(ex)

    def client() -> BinanceRestClient:
        return BinanceRestClient(
            cfg=cfg,
            wall_clock=SimWallClock(ex, skew_ms),
            api_key=Secret(API_KEY),
            api_secret=Secret(secret),
            transport=transport,
            base_url="https://fapi.test",
        )

    async with client() as rest, client() as sapi:
        checks = await run_checks(rest, CFG, sapi=sapi, symbols=UNIVERSE)
    return {c.name: c for c in checks}


def failed(rows: dict[str, Check]) -> list[str]:
    return [name for name, c in rows.items() if c.status == "FAIL"]


async def market(ex: SimExchange, cid: str, side: str = "BUY") -> None:
    from tests.sim.test_sim_rest import call

    r = await call(
        ex,
        "POST",
        "/fapi/v1/order",
        {"symbol": "BTCUSDT", "side": side, "type": "MARKET", "quantity": "0.01", "newClientOrderId": cid},
    )
    assert r.status_code == 200, r.text


class TestGoodAccount:
    """A clean account on the fake passes every row."""

    async def test_all_ok(self, ex: SimExchange, autojump_clock: trio.testing.MockClock) -> None:
        rows = await preflight(ex)
        assert list(rows) == [
            "server time",
            "API key",
            "API permissions",
            "position mode",
            "multi-assets mode",
            "balance",
            "margin type / leverage",
            "leverage brackets",
            "positions / open orders",
            "rate limits",
        ]
        assert {c.status for c in rows.values()} == {"OK"}, format_table(list(rows.values()))
        assert ex.engine.account.margin_type("BTCUSDT") == "ISOLATED"  # set as the bot would
        text = format_table(list(rows.values()))
        assert text.splitlines()[-1] == "SAFE to start live trading"

    async def test_own_position_is_a_warning(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        from tests.sim.test_sim_rest import call

        await call(ex, "POST", "/fapi/v1/marginType", {"symbol": "BTCUSDT", "marginType": "ISOLATED"})
        await call(ex, "POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": 2})  # as the bot does
        await market(ex, "fa-t1-E1")
        stop = {
            "algoType": "CONDITIONAL",
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "50000",
            "quantity": "0.01",
            "reduceOnly": "true",
            "clientAlgoId": "fa-t1-S1",
        }
        assert (await call(ex, "POST", "/fapi/v1/algoOrder", stop)).status_code == 200
        rows = await preflight(ex)
        assert rows["positions / open orders"].status == "WARN"
        assert failed(rows) == []


Setup = Callable[[SimExchange], Any]


async def _bad_hedge(ex: SimExchange) -> None:
    ex.hedge_mode = True


async def _bad_multi(ex: SimExchange) -> None:
    ex.multi_assets = True


async def _bad_withdrawals(ex: SimExchange) -> None:
    ex.api_restrictions["enableWithdrawals"] = True


async def _bad_futures(ex: SimExchange) -> None:
    ex.api_restrictions["enableFutures"] = False


async def _bad_foreign_position(ex: SimExchange) -> None:
    await market(ex, "manual-buy-1")


async def _bad_foreign_order(ex: SimExchange) -> None:
    from tests.sim.test_sim_rest import call

    await call(
        ex,
        "POST",
        "/fapi/v1/order",
        {
            "symbol": "ETHUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "2000",
            "newClientOrderId": "web_abc",
        },
    )


async def _bad_weight(ex: SimExchange) -> None:
    from tests.sim.test_sim_rest import call

    await call(ex, "GET", "/fapi/v1/time", signed=False)  # opens the current minute's window
    ex.limits.used_weight = 2300  # another process on the IP used most of it


async def _bad_margin_type(ex: SimExchange) -> None:
    await market(ex, "manual-cross-1")  # a cross position: margin type cannot change (-4048)


class TestBadConditions:
    """Each bad condition fails, naming its row."""

    @pytest.mark.parametrize(
        ("setup", "row"),
        [
            (_bad_hedge, "position mode"),
            (_bad_multi, "multi-assets mode"),
            (_bad_withdrawals, "API permissions"),
            (_bad_futures, "API permissions"),
            (_bad_foreign_position, "positions / open orders"),
            (_bad_foreign_order, "positions / open orders"),
            (_bad_weight, "rate limits"),
            (_bad_margin_type, "margin type / leverage"),
        ],
    )
    async def test_row_fails(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock, setup: Setup, row: str
    ) -> None:
        await setup(ex)
        rows = await preflight(ex)
        assert rows[row].status == "FAIL", format_table(list(rows.values()))
        assert "NOT SAFE" in format_table(list(rows.values()))
        assert row in format_table(list(rows.values())).splitlines()[-1]

    async def test_wrong_secret(self, ex: SimExchange, autojump_clock: trio.testing.MockClock) -> None:
        rows = await preflight(ex, secret="not-the-secret")
        assert rows["API key"].status == "FAIL"

    async def test_clock_drift(self, ex: SimExchange, autojump_clock: trio.testing.MockClock) -> None:
        rows = await preflight(ex, skew_ms=-10_000)
        assert rows["server time"].status == "FAIL"
        assert "+10000 ms" in rows["server time"].detail

    async def test_no_balance(
        self, info_specs: tuple[dict[str, Any], dict[str, Any]], autojump_clock: trio.testing.MockClock
    ) -> None:
        ex = make_exchange(info_specs, initial_balance=D(0))
        rows = await preflight(ex)
        assert rows["balance"].status == "FAIL"

    async def test_warning_only_when_not_ip_restricted(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.api_restrictions["ipRestrict"] = False
        rows = await preflight(ex)
        assert rows["API permissions"].status == "WARN"
        assert failed(rows) == []


def test_command_without_key_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    monkeypatch.delenv("BINANCE_API_KEY", raising=False)
    monkeypatch.delenv("BINANCE_API_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_preflight([]) == 2
    assert "BINANCE_API_KEY" in capsys.readouterr().err

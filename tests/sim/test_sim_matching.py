"""The pure matching engine and account: fills along price paths, slippage, fees, funding, persistence."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from futures_actor.binance.sim import (
    Account,
    AlgoEvent,
    MatchingEngine,
    NewAlgoOrder,
    NewOrder,
    OrderEvent,
    Rejection,
)
from futures_actor.core.config import BotConfig
from futures_actor.core.types import Candle

T0 = 1_735_689_600_000
EXE = BotConfig().execution


@pytest.fixture
def eng(info_specs: tuple[dict[str, Any], dict[str, Any]]) -> MatchingEngine:
    e = MatchingEngine(
        execution=EXE, symbols=info_specs[1], account=Account(initial_balance=D(10000)), now_ms=T0
    )
    e.on_price("BTCUSDT", D(60000))
    return e


def candle(o: float, h: float, lo: float, c: float, v: float = 1000.0) -> Candle:
    return Candle(open_time_ms=T0, open=o, high=h, low=lo, close=c, volume=v)


def buy_limit(eng: MatchingEngine, price: str, qty: str = "0.01", cid: str = "e1") -> int:
    order, _ = eng.place_order(
        NewOrder(
            symbol="BTCUSDT",
            side="BUY",
            type="LIMIT",
            quantity=D(qty),
            price=D(price),
            time_in_force="GTC",
            client_order_id=cid,
        )
    )
    return order.order_id


def trades(events: list[Any]) -> list[OrderEvent]:
    return [e for e in events if isinstance(e, OrderEvent) and e.execution == "TRADE"]


class TestLimitFills:
    """A resting limit fills only when the market trades through its price, capped by volume."""

    def test_touch_does_not_fill_but_trading_through_does(self, eng: MatchingEngine) -> None:
        oid = buy_limit(eng, "59000")
        assert trades(eng.on_candle("BTCUSDT", candle(60000, 60100, 59000, 59500))) == []
        assert eng.orders[oid].status == "NEW"
        fills = trades(eng.on_candle("BTCUSDT", candle(59500, 59600, 58999.9, 59200)))
        assert len(fills) == 1
        assert fills[0].maker
        # adverse limit slippage 0.02%: 59000 * 1.0002 = 59011.8, rounded up to the 0.1 tick
        assert fills[0].last_price == D("59011.8")
        assert eng.orders[oid].status == "FILLED"

    def test_partial_fill_capped_by_volume_participation(self, eng: MatchingEngine) -> None:
        oid = buy_limit(eng, "59000", qty="0.5")
        # volume 2 BTC x participation 0.1 = 0.2 per candle
        fills = trades(eng.on_candle("BTCUSDT", candle(60000, 60000, 58000, 58500, v=2.0)))
        assert [f.last_qty for f in fills] == [D("0.200")]
        assert eng.orders[oid].status == "PARTIALLY_FILLED"
        trades(eng.on_candle("BTCUSDT", candle(58500, 58600, 58400, 58500, v=2.0)))
        trades(eng.on_candle("BTCUSDT", candle(58500, 58600, 58400, 58500, v=2.0)))
        assert eng.orders[oid].executed_qty == D("0.5")
        assert eng.orders[oid].status == "FILLED"

    def test_path_visits_nearer_extreme_first(self, eng: MatchingEngine) -> None:
        # open 60000, high 60050 (nearer), low 59000: the sell limit at 60040 fills before the buy at 59100
        eng.place_order(
            NewOrder(
                symbol="BTCUSDT",
                side="SELL",
                type="LIMIT",
                quantity=D("0.01"),
                price=D("60040"),
                time_in_force="GTC",
                client_order_id="s1",
            )
        )
        buy_limit(eng, "59100", cid="b1")
        fills = trades(eng.on_candle("BTCUSDT", candle(60000, 60050, 59000, 59500)))
        assert [f.order.client_order_id for f in fills] == ["s1", "b1"]


class TestMarketAndFees:
    """MARKET orders fill at once with adverse slippage; taker / maker fees per config."""

    def test_market_buy_and_sell_slip_against_the_trader(self, eng: MatchingEngine) -> None:
        _, ev = eng.place_order(NewOrder(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=D("0.01")))
        buy = trades(ev)[0]
        assert buy.last_price > D(60000)
        assert not buy.maker
        assert buy.commission == buy.last_price * D("0.01") * D("0.0004")
        _, ev = eng.place_order(
            NewOrder(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=D("0.01"), reduce_only=True)
        )
        assert trades(ev)[0].last_price < D(60000)
        assert eng.account.position("BTCUSDT").amount == 0

    def test_realized_pnl_and_wallet(self, eng: MatchingEngine) -> None:
        eng.place_order(NewOrder(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=D("0.1")))
        pos = eng.account.position("BTCUSDT")
        entry = pos.entry_price
        eng.on_price("BTCUSDT", D(61000))
        _, ev = eng.place_order(
            NewOrder(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=D("0.1"), reduce_only=True)
        )
        fill = trades(ev)[0]
        assert fill.realized_pnl == (fill.last_price - entry) * D("0.1")
        fees = sum(t.commission for t in eng.account.trades)
        assert eng.account.wallet_balance == D(10000) + fill.realized_pnl - fees


class TestFunding:
    """Funding = −position × mark × rate: longs pay positive rates, shorts pay negative ones."""

    @pytest.mark.parametrize(
        ("side", "rate", "sign"),
        [("BUY", "0.001", -1), ("SELL", "0.001", 1), ("BUY", "-0.002", 1), ("SELL", "-0.002", -1)],
    )
    def test_funding_sign(self, eng: MatchingEngine, side: str, rate: str, sign: int) -> None:
        eng.place_order(NewOrder(symbol="BTCUSDT", side=side, type="MARKET", quantity=D("0.1")))
        before = eng.account.wallet_balance
        events = eng.apply_funding("BTCUSDT", D(rate))
        paid = eng.account.wallet_balance - before
        assert paid == sign * D("0.1") * D(60000) * abs(D(rate))
        assert events
        assert events[0].reason == "FUNDING_FEE"

    def test_flat_account_pays_nothing(self, eng: MatchingEngine) -> None:
        assert eng.apply_funding("BTCUSDT", D("0.01")) == []


class TestConditional:
    """Stops trigger on the mark price, fill at the last price with stop slippage; closePosition expires."""

    def _long(self, eng: MatchingEngine) -> None:
        eng.place_order(NewOrder(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=D("0.1")))

    def test_mark_price_stop_triggers_on_mark_not_last(self, eng: MatchingEngine) -> None:
        self._long(eng)
        algo, _ = eng.place_algo(
            NewAlgoOrder(
                symbol="BTCUSDT",
                side="SELL",
                type="STOP_MARKET",
                trigger_price=D(59000),
                working_type="MARK_PRICE",
                close_position=True,
                client_algo_id="s1",
            )
        )
        # last trades below the stop but the mark stays above: no trigger
        eng.on_price("BTCUSDT", D(58900), mark=D(59500))
        assert algo.status == "NEW"
        events = eng.on_mark("BTCUSDT", D(58950))
        assert [e.algo.status for e in events if isinstance(e, AlgoEvent)] == [
            "TRIGGERING",
            "TRIGGERED",
            "FINISHED",
        ]
        fill = trades(events)[0]
        assert fill.order.client_order_id == "s1"
        assert fill.order.orig_type == "STOP_MARKET"
        assert fill.last_price == D("58841.1")  # last 58900 - 0.1% stop slippage, floored to the tick
        assert eng.account.position("BTCUSDT").amount == 0

    def test_stop_inside_candle_fills_at_trigger_with_slippage(self, eng: MatchingEngine) -> None:
        self._long(eng)
        eng.place_algo(
            NewAlgoOrder(
                symbol="BTCUSDT",
                side="SELL",
                type="STOP_MARKET",
                trigger_price=D(59000),
                quantity=D("0.1"),
                reduce_only=True,
                working_type="MARK_PRICE",
            )
        )
        fill = trades(eng.on_candle("BTCUSDT", candle(60000, 60100, 58000, 58500)))[0]
        assert fill.last_price == D("58941.0")

    def test_gap_through_stop_fills_at_the_gap_price(self, eng: MatchingEngine) -> None:
        self._long(eng)
        eng.place_algo(
            NewAlgoOrder(
                symbol="BTCUSDT",
                side="SELL",
                type="STOP_MARKET",
                trigger_price=D(59000),
                quantity=D("0.1"),
                reduce_only=True,
            )
        )
        fill = trades(eng.on_price("BTCUSDT", D(57000)))[0]
        assert fill.last_price == D("56943.0")

    def test_stop_that_would_trigger_immediately_is_refused(self, eng: MatchingEngine) -> None:
        self._long(eng)
        with pytest.raises(Rejection) as err:
            eng.place_algo(
                NewAlgoOrder(
                    symbol="BTCUSDT",
                    side="SELL",
                    type="STOP_MARKET",
                    trigger_price=D(60500),
                    close_position=True,
                )
            )
        assert err.value.code == -2021

    def test_close_position_stop_expires_when_position_closed(self, eng: MatchingEngine) -> None:
        self._long(eng)
        algo, _ = eng.place_algo(
            NewAlgoOrder(
                symbol="BTCUSDT", side="SELL", type="STOP_MARKET", trigger_price=D(59000), close_position=True
            )
        )
        eng.place_order(
            NewOrder(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=D("0.1"), reduce_only=True)
        )
        assert algo.status == "EXPIRED"

    def test_trailing_stop_follows_the_high(self, eng: MatchingEngine) -> None:
        self._long(eng)
        algo, _ = eng.place_algo(
            NewAlgoOrder(
                symbol="BTCUSDT",
                side="SELL",
                type="TRAILING_STOP_MARKET",
                quantity=D("0.1"),
                reduce_only=True,
                callback_rate=D("1"),
            )
        )
        eng.on_price("BTCUSDT", D(62000))
        eng.on_price("BTCUSDT", D(61500))
        assert algo.status == "NEW"
        eng.on_price("BTCUSDT", D(61300))  # <= 62000 * 0.99 = 61380
        assert algo.status == "FINISHED"


class TestValidation:
    """Filters, reduce-only, margin, client ids and leverage are enforced with Binance's codes."""

    @pytest.mark.parametrize(
        ("kw", "code"),
        [
            ({"price": D("59000.05")}, -4014),
            ({"price": D("59000.123")}, -1111),
            ({"price": D("59000.5"), "quantity": D("0.0015")}, -1111),
            ({"quantity": D("0.0001")}, -1111),
            ({"quantity": D("0.001")}, -4164),
            ({"price": D("70000")}, -4016),
            ({"side": "SELL", "reduce_only": True}, -2022),
            ({"quantity": D("100")}, -2019),
            ({"type": "STOP_MARKET"}, -4120),
            ({"time_in_force": "GTX", "price": D("60100")}, -5022),
        ],
    )
    def test_rejections(self, eng: MatchingEngine, kw: dict[str, Any], code: int) -> None:
        base: dict[str, Any] = dict(
            symbol="BTCUSDT",
            side="BUY",
            type="LIMIT",
            quantity=D("0.01"),
            price=D("59000"),
            time_in_force="GTC",
        )
        with pytest.raises(Rejection) as err:
            eng.place_order(NewOrder(**{**base, **kw}))
        assert err.value.code == code

    def test_tick_size(self, eng: MatchingEngine) -> None:
        with pytest.raises(Rejection) as err:
            eng.place_order(
                NewOrder(
                    symbol="BTCUSDT",
                    side="BUY",
                    type="LIMIT",
                    quantity=D("0.01"),
                    price=D("59000.15"),
                    time_in_force="GTC",
                )
            )
        assert err.value.code in (-1111, -4014)

    def test_duplicate_open_client_id(self, eng: MatchingEngine) -> None:
        buy_limit(eng, "59000", cid="dup")
        with pytest.raises(Rejection) as err:
            buy_limit(eng, "59000", cid="dup")
        assert err.value.code == -4116

    def test_leverage_bounded_by_bracket(self, info_specs: tuple[dict[str, Any], dict[str, Any]]) -> None:
        from futures_actor.binance.sim import load_exchange_info
        from tests.sim.conftest import EXCHANGE_INFO

        _, specs = load_exchange_info(
            EXCHANGE_INFO,
            symbols=["BTCUSDT"],
            leverage_brackets=[{"symbol": "BTCUSDT", "brackets": [{"initialLeverage": 50}]}],
        )
        e = MatchingEngine(execution=EXE, symbols=specs, account=Account(initial_balance=D(1000)))
        e.set_leverage("BTCUSDT", 50)
        with pytest.raises(Rejection) as err:
            e.set_leverage("BTCUSDT", 51)
        assert err.value.code == -4028


def test_hype_is_synthesized_from_a_similar_symbol(info_specs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    hype = info_specs[1]["HYPEUSDT"].rules
    assert hype.tick_size == D("0.001")
    assert hype.step_size == D("0.1")
    assert any(s["symbol"] == "HYPEUSDT" for s in info_specs[0]["symbols"])


def test_engine_state_round_trip(
    eng: MatchingEngine, info_specs: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    eng.place_order(NewOrder(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=D("0.1")))
    buy_limit(eng, "59000", cid="rest")
    eng.place_algo(
        NewAlgoOrder(
            symbol="BTCUSDT",
            side="SELL",
            type="STOP_MARKET",
            trigger_price=D(58000),
            close_position=True,
            client_algo_id="stop",
        )
    )
    blob = eng.to_state()
    back = MatchingEngine.from_state(blob, execution=EXE, symbols=info_specs[1])
    assert back.to_state() == blob
    assert back.account.position("BTCUSDT").amount == D("0.1")
    assert back.account.wallet_balance == eng.account.wallet_balance
    # the restored engine keeps working: the stop still triggers and ids continue
    back.on_price("BTCUSDT", D(57000))
    assert back.find_algo(algo_id=None, client_id="stop").status == "FINISHED"  # type: ignore[union-attr]
    assert back.account.position("BTCUSDT").amount == 0

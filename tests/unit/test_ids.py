"""Trade ids and deterministic client order ids (BOT_SPEC §9)."""

from __future__ import annotations

import itertools
import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from futures_actor.core.ids import (
    BINANCE_CLIENT_ID_RE,
    ClientOrderId,
    InvalidClientOrderId,
    client_order_id,
    new_trade_id,
    parse_client_order_id,
    trade_key,
)
from futures_actor.core.types import OrderRole

# Binance's documented rule for newClientOrderId, written out independently of the module's constant.
BINANCE_RULE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
TRADE = new_trade_id(symbol="BTCUSDT", strategy="trend_pullback", candle_open_time_ms=1_735_603_200_000)


class TestTradeIds:
    """Trade ids are UUIDs derived from symbol, strategy and candle."""

    def test_is_a_uuid(self) -> None:
        assert str(uuid.UUID(TRADE)) == TRADE

    def test_deterministic(self) -> None:
        again = new_trade_id(
            symbol="BTCUSDT", strategy="trend_pullback", candle_open_time_ms=1_735_603_200_000
        )
        assert again == TRADE

    def test_differs_by_each_input(self) -> None:
        others = {
            new_trade_id(symbol="ETHUSDT", strategy="trend_pullback", candle_open_time_ms=1_735_603_200_000),
            new_trade_id(symbol="BTCUSDT", strategy="trend_breakout", candle_open_time_ms=1_735_603_200_000),
            new_trade_id(symbol="BTCUSDT", strategy="trend_pullback", candle_open_time_ms=1_735_603_500_000),
            new_trade_id(
                symbol="BTCUSDT", strategy="trend_pullback", candle_open_time_ms=1_735_603_200_000, salt="2"
            ),
        }
        assert TRADE not in others
        assert len(others) == 4

    def test_trade_key_is_24_hex(self) -> None:
        key = trade_key(TRADE)
        assert re.fullmatch(r"[0-9a-f]{24}", key)
        assert TRADE.replace("-", "").startswith(key)

    def test_trade_key_refuses_non_uuid(self) -> None:
        with pytest.raises(InvalidClientOrderId, match="'nope' is not a UUID"):
            trade_key("nope")


class TestClientOrderIds:
    """Client order ids: Binance-valid, deterministic, unique, parseable."""

    def test_format_and_binance_rule(self) -> None:
        cid = client_order_id(prefix="fa", trade_id=TRADE, role=OrderRole.ENTRY, attempt=1)
        assert cid == f"fa-{trade_key(TRADE)}-E1"
        assert BINANCE_RULE.match(cid)
        assert BINANCE_CLIENT_ID_RE.pattern == BINANCE_RULE.pattern

    def test_longest_id_fits_36_chars(self) -> None:
        cid = client_order_id(prefix="abcd", trade_id=TRADE, role=OrderRole.STOP, attempt=999)
        assert len(cid) <= 36
        assert BINANCE_RULE.match(cid)

    def test_deterministic(self) -> None:
        a = client_order_id(prefix="fa", trade_id=TRADE, role=OrderRole.STOP, attempt=3)
        b = client_order_id(prefix="fa", trade_id=TRADE, role=OrderRole.STOP, attempt=3)
        assert a == b

    def test_unique_across_roles_and_attempts(self) -> None:
        ids = [
            client_order_id(prefix="fa", trade_id=TRADE, role=role, attempt=attempt)
            for role, attempt in itertools.product(OrderRole, range(1, 30))
        ]
        assert len(set(ids)) == len(ids)

    def test_unique_across_trades(self) -> None:
        trades = [
            new_trade_id(symbol="BTCUSDT", strategy="s", candle_open_time_ms=i * 300_000) for i in range(500)
        ]
        ids = {client_order_id(prefix="fa", trade_id=t, role=OrderRole.ENTRY, attempt=1) for t in trades}
        assert len(ids) == 500

    @pytest.mark.parametrize("attempt", [0, -1, 1000])
    def test_attempt_out_of_range(self, attempt: int) -> None:
        with pytest.raises(InvalidClientOrderId, match=f"attempt {attempt} is outside 1..999"):
            client_order_id(prefix="fa", trade_id=TRADE, role=OrderRole.ENTRY, attempt=attempt)

    @pytest.mark.parametrize("prefix", ["", "abcde", "f-a", "fa!"])
    def test_bad_prefix(self, prefix: str) -> None:
        with pytest.raises(InvalidClientOrderId, match="must be 1-4 letters or digits"):
            client_order_id(prefix=prefix, trade_id=TRADE, role=OrderRole.ENTRY, attempt=1)

    @given(
        symbol=st.from_regex(r"[A-Z0-9]{2,12}", fullmatch=True),
        candle=st.integers(min_value=0, max_value=2**42),
        role=st.sampled_from(list(OrderRole)),
        attempt=st.integers(min_value=1, max_value=999),
        prefix=st.from_regex(r"[A-Za-z0-9]{1,4}", fullmatch=True),
    )
    def test_round_trip(self, symbol: str, candle: int, role: OrderRole, attempt: int, prefix: str) -> None:
        trade = new_trade_id(symbol=symbol, strategy="trend_breakout", candle_open_time_ms=candle)
        cid = client_order_id(prefix=prefix, trade_id=trade, role=role, attempt=attempt)
        assert BINANCE_RULE.match(cid)
        assert len(cid) <= 36
        parsed = parse_client_order_id(cid, prefix=prefix)
        assert parsed == ClientOrderId(prefix=prefix, trade_key=trade_key(trade), role=role, attempt=attempt)


class TestForeignIds:
    """Ids that are not ours parse to None (manual orders, other bots, other prefixes)."""

    @pytest.mark.parametrize(
        "cid",
        [
            "web_AbCdEf123",
            "android_x1",
            "x-123456",
            "",
            f"fb-{'0' * 24}-E1",  # another prefix
            f"fa-{'0' * 23}-E1",  # short key
            f"fa-{'0' * 24}-Q1",  # unknown role
            f"fa-{'0' * 24}-E0",  # attempt 0
            f"fa-{'0' * 24}-E1000",  # attempt too large
            f"fa-{'A' * 24}-E1",  # upper-case hex is not ours
        ],
    )
    def test_not_ours(self, cid: str) -> None:
        assert parse_client_order_id(cid, prefix="fa") is None

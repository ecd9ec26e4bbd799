"""Issue 10 #11: the journal's validator and the performance layer agree on one trade-record schema.

Every record the journal accepts is one the performance rebuild accepts (a closed trade, or deliberately
not a strategy's trade: an unfilled entry, an adopted position), and what the performance layer would
reject the journal rejects (quarantines) too, naming the field.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from futures_actor.core.performance import TradeRecordError, closed_trade_from_record
from futures_actor.state.log_schema import validate_trade_record


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "trade_id": str(uuid.UUID(int=7)),
        "timestamp_open": "2025-03-04T00:00:00.000Z",
        "timestamp_close": "2025-03-04T01:00:00.000Z",
        "mode": "PAPER_LIVE",
        "symbol": "BTCUSDT",
        "strategy": "trend_pullback",
        "regime": "TREND",
        "direction": "LONG",
        "confidence_score": 0.7,
        "entry_order": {
            "client_order_id": "fa-x-E1",
            "type": "LIMIT",
            "requested_price": 100.0,
            "filled_avg_price": 100.0,
            "filled_qty": 1.0,
            "status": "FILLED",
        },
        "risk": {
            "equity_usd": 10_000.0,
            "risk_pct": 0.01,
            "risk_usd": 100.0,
            "stop_pct": 0.01,
            "stop_price": 99.0,
            "take_profit_price": 101.5,
            "leverage": 2.0,
            "notional_usd": 100.0,
            "margin_used_usd": 50.0,
        },
        "costs": {"fees_usd": 0.1, "funding_usd": 0.0, "slippage_pct": 0.0},
        "result": {"exit_price": 101.5, "pnl_usd": 1.4, "pnl_r_multiple": 0.014, "reason": "TP"},
        "portfolio": {
            "open_positions_count": 1.0,
            "open_risk_pct": 0.01,
            "correlation_bucket": "BTCUSDT",
            "bucket_corr_max": 0.0,
        },
    }
    out = copy.deepcopy(base)
    for path, value in changes.items():
        node = out
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return out


def test_adopted_record_with_zero_equity_is_accepted_by_both() -> None:
    # Adopted positions are nobody's strategy decision: valid in the journal, skipped by performance
    # (before: rejected by the rebuild on every start).
    adopted = record(
        strategy="ADOPTED", regime="CHOP_NO_TRADE", risk__equity_usd=0.0, result__reason="MANUAL"
    )
    assert validate_trade_record(adopted) == []
    assert closed_trade_from_record(adopted) is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"risk__equity_usd": 0.0}, "risk.equity_usd"),
        ({"risk__equity_usd": -5.0}, "risk.equity_usd"),
        ({"entry_order__filled_qty": -1.0}, "entry_order.filled_qty"),
    ],
)
def test_what_performance_rejects_the_journal_rejects(changes: dict[str, Any], field: str) -> None:
    bad = record(**changes)
    with pytest.raises(TradeRecordError) as exc:
        closed_trade_from_record(bad)
    assert exc.value.field == field
    assert [v.field for v in validate_trade_record(bad)] == [field]


@settings(max_examples=300, deadline=None)
@given(
    strategy=st.sampled_from(["trend_pullback", "trend_breakout", "range_mean_reversion", "ADOPTED"]),
    equity=st.floats(-10.0, 1e6, allow_nan=False),
    filled=st.floats(-1.0, 10.0, allow_nan=False),
    reason=st.sampled_from(["TP", "SL", "TRAIL", "KILL_SWITCH", "MANUAL", "TIMEOUT"]),
)
def test_journal_valid_implies_performance_accepts(
    strategy: str, equity: float, filled: float, reason: str
) -> None:
    r = record(
        strategy=strategy, risk__equity_usd=equity, entry_order__filled_qty=filled, result__reason=reason
    )
    if validate_trade_record(r):
        return
    closed_trade_from_record(r)  # never raises for a record the journal accepted

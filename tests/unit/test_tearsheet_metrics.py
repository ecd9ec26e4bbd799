"""The report's metrics on hand-computed examples (definitions in futures_actor.tearsheet.metrics)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from futures_actor.tearsheet.metrics import (
    average_hold_ms,
    cagr,
    calmar,
    compute_metrics,
    cost_shares,
    daily_equity,
    daily_returns,
    exposure,
    max_drawdown,
    monthly_returns,
    profit_factor,
    sharpe,
    sortino,
)

H = 3_600_000
D = 24 * H


def ms(y: int, m: int, d: int, hh: int = 0) -> int:
    return int(datetime(y, m, d, hh, tzinfo=UTC).timestamp() * 1000)


def iso(t: int) -> str:
    return datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# Three days: 100 at the start, end-of-day equities 110, 99, 108.9 -> daily returns +10 %, -10 %, +10 %.
CURVE = [
    (ms(2025, 1, 1, 0), 100.0),
    (ms(2025, 1, 1, 12), 104.0),
    (ms(2025, 1, 1, 23), 110.0),
    (ms(2025, 1, 2, 12), 99.0),
    (ms(2025, 1, 3, 12), 108.9),
]


def test_daily_equity_and_returns() -> None:
    assert [e for _d, e in daily_equity(CURVE)] == [110.0, 99.0, 108.9]
    assert daily_returns(CURVE) == pytest.approx([0.1, -0.1, 0.1])


def test_a_day_without_sample_carries_equity() -> None:
    curve = [(ms(2025, 1, 1), 100.0), (ms(2025, 1, 3), 120.0)]
    assert [e for _d, e in daily_equity(curve)] == [100.0, 100.0, 120.0]
    assert daily_returns(curve) == pytest.approx([0.0, 0.0, 0.2])


def test_sharpe_by_hand() -> None:
    # mean 0.1/3; sample stdev sqrt(((0.2/3)^2 * 2 + (0.4/3)^2) / 2) = 0.1154700538
    mean, std = 0.1 / 3, 0.1154700538379
    assert sharpe([0.1, -0.1, 0.1]) == pytest.approx(mean / std * math.sqrt(365))
    assert sharpe([0.1, -0.1, 0.1]) == pytest.approx(5.51513, abs=1e-4)


def test_sortino_by_hand() -> None:
    # downside deviation sqrt(0.1^2 / 3) = 0.0577350269
    assert sortino([0.1, -0.1, 0.1]) == pytest.approx((0.1 / 3) / 0.0577350269 * math.sqrt(365))
    assert sortino([0.1, -0.1, 0.1]) == pytest.approx(11.03026, abs=1e-4)


def test_undefined_ratios_are_none() -> None:
    assert sharpe([0.01]) is None
    assert sharpe([0.01, 0.01]) is None  # no deviation
    assert sortino([0.01, 0.02]) is None  # no losing day
    assert calmar(0.2, 0.0) is None
    assert calmar(None, 0.1) is None
    assert profit_factor([1.0, 2.0]) is None  # no loss


def test_cagr_by_hand() -> None:
    assert cagr([(0, 100.0), (365 * D, 121.0)]) == pytest.approx(0.21)
    assert cagr([(0, 100.0), (730 * D, 121.0)]) == pytest.approx(0.10)
    assert cagr([(0, 100.0), (D // 2, 121.0)]) is None  # under a day: not annualised


def test_max_drawdown_and_calmar() -> None:
    assert max_drawdown(CURVE) == pytest.approx(0.1)  # 110 -> 99
    assert max_drawdown([(0, 100.0), (1, 120.0), (2, 90.0), (3, 130.0), (4, 117.0)]) == pytest.approx(0.25)
    assert calmar(0.21, 0.1) == pytest.approx(2.1)


def test_profit_factor() -> None:
    assert profit_factor([10.0, -5.0, 20.0, -10.0]) == pytest.approx(2.0)


def trade(
    t_open: int,
    t_close: int,
    pnl: float,
    r: float,
    *,
    fees: float = 0.0,
    funding: float = 0.0,
    qty: float = 1.0,
) -> dict[str, Any]:
    return {
        "trade_id": f"t{t_open}-{t_close}",
        "timestamp_open": iso(t_open),
        "timestamp_close": iso(t_close),
        "entry_order": {"filled_qty": qty},
        "result": {"pnl_usd": pnl, "pnl_r_multiple": r, "reason": "TP"},
        "costs": {"fees_usd": fees, "funding_usd": funding},
    }


def test_exposure_is_the_union_of_open_intervals() -> None:
    t0 = ms(2025, 1, 1)
    trades = [
        trade(t0 + 10 * H, t0 + 20 * H, 1, 1),
        trade(t0 + 15 * H, t0 + 30 * H, 1, 1),
        trade(t0 + 50 * H, t0 + 60 * H, 1, 1),
    ]
    assert exposure(trades, t0, t0 + 100 * H) == pytest.approx(0.30)
    assert average_hold_ms(trades) == pytest.approx((10 + 15 + 10) / 3 * H)


def test_cost_shares_by_hand() -> None:
    t0 = ms(2025, 1, 1)
    # gross = pnl + fees - funding: 8 + 2 + 1 = 11 and -6 + 1 - 0.5 = -5.5; total 5.5
    trades = [
        trade(t0, t0 + H, 8.0, 1.0, fees=2.0, funding=-1.0),
        trade(t0, t0 + H, -6.0, -1.0, fees=1.0, funding=0.5),
    ]
    gross, fees, funding, fee_share, funding_share = cost_shares(trades)
    assert (gross, fees, funding) == pytest.approx((5.5, 3.0, -0.5))
    assert fee_share == pytest.approx(3.0 / 5.5)
    assert funding_share == pytest.approx(0.5 / 5.5)  # funding was paid: a positive cost share


def test_monthly_returns() -> None:
    curve = [(ms(2025, 1, 1), 100.0), (ms(2025, 1, 31, 12), 110.0), (ms(2025, 2, 28, 12), 99.0)]
    assert monthly_returns(curve) == pytest.approx({(2025, 1): 0.10, (2025, 2): -0.10})


def test_compute_metrics_counts_unfilled_entries_apart() -> None:
    t0 = ms(2025, 1, 1)
    records = [
        trade(t0 + H, t0 + 5 * H, 10.0, 1.0, fees=1.0),
        trade(t0 + 6 * H, t0 + 7 * H, -5.0, -0.5, fees=1.0),
        trade(t0 + 8 * H, t0 + 9 * H, 0.0, 0.0, qty=0.0),  # an entry that never filled
    ]
    m = compute_metrics(CURVE, records)
    assert (m.trades, m.unfilled_entries) == (2, 1)
    assert m.win_rate == pytest.approx(0.5)
    assert m.expectancy_r == pytest.approx(0.25)
    assert m.profit_factor == pytest.approx(2.0)
    assert m.net_pnl_usd == pytest.approx(5.0)
    assert m.total_return == pytest.approx(0.089)
    assert m.max_drawdown == pytest.approx(0.1)
    assert m.daily_returns == 3
    # Exposure over the curve's span (2.5 days): 4 h + 1 h open.
    assert m.exposure == pytest.approx(5 * H / (CURVE[-1][0] - CURVE[0][0]))


def test_compute_metrics_on_nothing() -> None:
    m = compute_metrics([], [])
    assert m.trades == 0
    assert m.cagr is None
    assert m.sharpe is None
    assert m.win_rate is None
    assert m.exposure is None

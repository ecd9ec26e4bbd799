"""core.drawdown: the one drawdown definition, on hand-computed curves; every user of it agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from futures_actor.core.drawdown import DrawdownTracker, drawdown_series, max_drawdown
from futures_actor.core.summary import DRAWDOWN_OF_CURVE, DRAWDOWN_OF_TRADES, summarize_trades
from futures_actor.tearsheet.equity import AccountView, EquityCsvWriter, read_equity_csv
from futures_actor.tearsheet.metrics import max_drawdown as metrics_max_drawdown

CURVE = [100.0, 110.0, 99.0, 105.0, 121.0, 96.8, 130.0]


def test_hand_computed() -> None:
    assert drawdown_series(CURVE) == pytest.approx([0, 0, 0.1, 11 / 110 - 6 / 110, 0, 0.2, 0])
    assert max_drawdown(CURVE) == pytest.approx(0.2)
    assert max_drawdown([]) == 0.0
    assert max_drawdown([100.0, 100.0]) == 0.0


def test_not_equity_is_skipped() -> None:
    assert drawdown_series([100.0, float("nan"), 0.0, -5.0, 90.0]) == pytest.approx([0, 0, 0, 0, 0.1])


def test_tracker_from_a_known_peak() -> None:
    t = DrawdownTracker(peak=200.0)
    assert t.drawdown_of(150.0) == pytest.approx(0.25)
    assert t.update(190.0) == pytest.approx(0.05)
    assert t.max_drawdown == pytest.approx(0.05)


def test_every_user_computes_the_same(tmp_path: Path) -> None:
    writer = EquityCsvWriter(tmp_path / "equity.csv")
    for i, e in enumerate(CURVE):
        writer.write(i * 3_600_000, AccountView(equity_usd=e, open_risk_usd=0.0, open_positions=0), "period")
    writer.close()
    rows = read_equity_csv(tmp_path / "equity.csv")
    assert [r.drawdown_pct for r in rows] == pytest.approx(drawdown_series(CURVE), abs=1e-8)
    assert metrics_max_drawdown([(r.time_ms, r.equity_usd) for r in rows]) == pytest.approx(0.2)
    day = writer.day_drawdown(2 * 3_600_000, 5 * 3_600_000)
    assert day is not None
    assert (day.equity_usd, day.peak_equity_usd) == (96.8, 121.0)
    assert day.drawdown_pct == pytest.approx(0.2)
    # Within the day: from 99 (the sample at its start) over 105, 121, 96.8.
    assert day.max_intraday_drawdown_pct == pytest.approx(max_drawdown([99.0, 105.0, 121.0, 96.8]))
    summary = summarize_trades([], start_equity_usd=100.0, equity_curve=CURVE)
    assert (summary.max_drawdown_pct, summary.max_drawdown_of) == (pytest.approx(0.2), DRAWDOWN_OF_CURVE)
    assert summarize_trades([], start_equity_usd=100.0).max_drawdown_of == DRAWDOWN_OF_TRADES

"""The metrics of report.html, defined precisely; pure functions (unit-tested on hand-computed cases).

Equity metrics use the equity curve (equity.csv, or, for a log directory without one, the curve
rebuilt from the closed trades, see `tearsheet.load`):

- daily equity: the last equity sample of each UTC calendar day from the first sample's day to the last
  sample's day; a day without a sample carries the previous day's equity (return 0);
- daily return r_d = E_d / E_(d-1) − 1, with E_0 (before the first day) = the first sample's equity;
- CAGR = (E_last / E_first) ^ (365 / days) − 1, days = (t_last − t_first) in days (crypto trades every
  day: 365 days a year); undefined for a span under one day;
- Sharpe = mean(r_d) / stdev(r_d) × √365 (sample standard deviation, n − 1; risk-free rate 0);
  undefined with fewer than 2 daily returns or a zero deviation;
- Sortino = mean(r_d) / downside deviation × √365, downside deviation = √(Σ min(r_d, 0)² / n) over all
  n daily returns (target 0); undefined when no day lost;
- max drawdown = max over samples of (peak so far − E) / peak so far (a fraction; `core.drawdown`, the
  computation behind equity.csv's column, the summary and the daily reports);
- Calmar = CAGR / max drawdown; undefined when max drawdown is 0 or CAGR is undefined.

Trade metrics use the trades (records whose entry filled; see `core.summary`):

- profit factor = Σ pnl_usd of winning trades / |Σ pnl_usd of losing trades| (net PnL; undefined without
  a losing trade);
- expectancy R = mean of `result.pnl_r_multiple`; win rate = share of trades with pnl_r_multiple > 0
  (the console summary's definition);
- exposure = the share of the run's time span with at least one position open (the union of the trades'
  [timestamp_open, timestamp_close] intervals, clipped to the span);
- average hold = mean of (timestamp_close − timestamp_open);
- gross PnL = Σ (pnl_usd + fees_usd − funding_usd), the price PnL before costs (funding_usd is signed,
  negative = paid, and pnl_usd = gross − fees + funding); fees share = Σ fees_usd / |gross PnL|;
  funding share = −Σ funding_usd / |gross PnL| (positive: funding was a cost); undefined when gross is 0.

Undefined values are None (shown as "n/a"), never NaN or infinity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec

from futures_actor.core.drawdown import max_drawdown as curve_max_drawdown
from futures_actor.core.summary import is_filled

__all__ = [
    "DAYS_PER_YEAR",
    "Metrics",
    "average_hold_ms",
    "cagr",
    "calmar",
    "compute_metrics",
    "cost_shares",
    "daily_equity",
    "daily_returns",
    "exposure",
    "max_drawdown",
    "monthly_returns",
    "parse_iso_ms",
    "profit_factor",
    "sharpe",
    "sortino",
]

DAYS_PER_YEAR = 365  # crypto markets trade every calendar day
_MS_PER_DAY = 86_400_000


class Metrics(msgspec.Struct, frozen=True, kw_only=True):
    start_ms: int | None
    end_ms: int | None
    start_equity_usd: float | None
    end_equity_usd: float | None
    total_return: float | None
    cagr: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float | None
    calmar: float | None
    trades: int
    unfilled_entries: int
    win_rate: float | None
    profit_factor: float | None
    expectancy_r: float | None
    exposure: float | None
    average_hold_ms: float | None
    net_pnl_usd: float
    gross_pnl_usd: float
    fees_usd: float
    funding_usd: float
    fees_share_of_gross: float | None
    funding_share_of_gross: float | None
    daily_returns: int


def parse_iso_ms(value: Any) -> int | None:
    """ISO 8601 with a zone (e.g. `2025-01-02T03:04:05.000Z`) as UTC ms; None if not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp() * 1000)


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


def daily_equity(points: Sequence[tuple[int, float]]) -> list[tuple[date, float]]:
    """End-of-day equity per UTC day from the first to the last point's day (gaps carried forward)."""
    if not points:
        return []
    last_of_day: dict[date, float] = {}
    for t, e in points:
        last_of_day[_day(t)] = e
    first, last = _day(points[0][0]), _day(points[-1][0])
    out: list[tuple[date, float]] = []
    current = points[0][1]
    d = first
    while d <= last:
        current = last_of_day.get(d, current)
        out.append((d, current))
        d += timedelta(days=1)
    return out


def daily_returns(points: Sequence[tuple[int, float]]) -> list[float]:
    """r_d = E_d / E_(d-1) − 1 for each day, E_0 = the first point's equity."""
    days = daily_equity(points)
    if not days:
        return []
    previous = points[0][1]
    out: list[float] = []
    for _d, e in days:
        out.append(e / previous - 1.0 if previous > 0 else 0.0)
        previous = e
    return out


def cagr(points: Sequence[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    (t0, e0), (t1, e1) = points[0], points[-1]
    days = (t1 - t0) / _MS_PER_DAY
    if days < 1 or e0 <= 0 or e1 <= 0:
        return None
    return float((e1 / e0) ** (DAYS_PER_YEAR / days) - 1.0)


def sharpe(returns: Sequence[float]) -> float | None:
    n = len(returns)
    if n < 2:
        return None
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1)
    if var <= 0:
        return None
    return mean / math.sqrt(var) * math.sqrt(DAYS_PER_YEAR)


def sortino(returns: Sequence[float]) -> float | None:
    n = len(returns)
    if n < 2:
        return None
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / n)
    if downside <= 0:
        return None
    return (sum(returns) / n) / downside * math.sqrt(DAYS_PER_YEAR)


def max_drawdown(points: Sequence[tuple[int, float]]) -> float | None:
    """`core.drawdown.max_drawdown` of the curve (the one definition); None for an empty curve."""
    if not points:
        return None
    return curve_max_drawdown(e for _t, e in points)


def calmar(cagr_value: float | None, max_dd: float | None) -> float | None:
    if cagr_value is None or max_dd is None or max_dd <= 0:
        return None
    return cagr_value / max_dd


def _num(record: Mapping[str, Any], section: str, key: str) -> float:
    part = record.get(section)
    value = part.get(key, 0.0) if isinstance(part, Mapping) else 0.0
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else 0.0


def profit_factor(pnls: Iterable[float]) -> float | None:
    wins = losses = 0.0
    for p in pnls:
        if p > 0:
            wins += p
        elif p < 0:
            losses -= p
    return wins / losses if losses > 0 else None


def _intervals(trades: Iterable[Mapping[str, Any]]) -> list[tuple[int, int]]:
    out = []
    for t in trades:
        a, b = parse_iso_ms(t.get("timestamp_open")), parse_iso_ms(t.get("timestamp_close"))
        if a is not None and b is not None and b >= a:
            out.append((a, b))
    return out


def exposure(trades: Iterable[Mapping[str, Any]], start_ms: int, end_ms: int) -> float | None:
    """Share of [start_ms, end_ms] covered by the union of the trades' open intervals."""
    if end_ms <= start_ms:
        return None
    covered = 0
    cursor = start_ms
    for a, b in sorted(_intervals(trades)):
        a, b = max(a, cursor), min(b, end_ms)
        if b > a:
            covered += b - a
            cursor = b
    return covered / (end_ms - start_ms)


def average_hold_ms(trades: Iterable[Mapping[str, Any]]) -> float | None:
    spans = [b - a for a, b in _intervals(trades)]
    return sum(spans) / len(spans) if spans else None


def cost_shares(
    trades: Iterable[Mapping[str, Any]],
) -> tuple[float, float, float, float | None, float | None]:
    """(gross PnL, fees, funding (signed), fees share of |gross|, funding cost share of |gross|)."""
    gross = fees = funding = 0.0
    for t in trades:
        f = _num(t, "costs", "fees_usd")
        u = _num(t, "costs", "funding_usd")
        gross += _num(t, "result", "pnl_usd") + f - u
        fees += f
        funding += u
    if gross == 0:
        return gross, fees, funding, None, None
    return gross, fees, funding, fees / abs(gross), -funding / abs(gross)


def monthly_returns(points: Sequence[tuple[int, float]]) -> dict[tuple[int, int], float]:
    """(year, month) -> E_end_of_month / E_end_of_previous_month − 1 (first month: vs the first point)."""
    out: dict[tuple[int, int], float] = {}
    if not points:
        return out
    previous = points[0][1]
    month_end: dict[tuple[int, int], float] = {}
    for d, e in daily_equity(points):
        month_end[(d.year, d.month)] = e
    for key in sorted(month_end):
        e = month_end[key]
        out[key] = e / previous - 1.0 if previous > 0 else 0.0
        previous = e
    return out


def compute_metrics(
    points: Sequence[tuple[int, float]],
    records: Iterable[Mapping[str, Any]],
    *,
    span: tuple[int, int] | None = None,
) -> Metrics:
    """Every metric of the report. `points` is the equity curve (time ms, equity), oldest first;
    `records` every trade record (entries not filled are counted apart); `span` the run's time span
    for exposure (default: the equity curve's first to last time)."""
    rows = list(records)
    trades = [r for r in rows if is_filled(r)]
    returns = daily_returns(points)
    c = cagr(points)
    dd = max_drawdown(points)
    if span is None and len(points) >= 2:
        span = (points[0][0], points[-1][0])
    pnls = [_num(t, "result", "pnl_usd") for t in trades]
    rs = [_num(t, "result", "pnl_r_multiple") for t in trades]
    gross, fees, funding, fee_share, funding_share = cost_shares(trades)
    return Metrics(
        start_ms=points[0][0] if points else None,
        end_ms=points[-1][0] if points else None,
        start_equity_usd=points[0][1] if points else None,
        end_equity_usd=points[-1][1] if points else None,
        total_return=points[-1][1] / points[0][1] - 1.0 if points and points[0][1] > 0 else None,
        cagr=c,
        sharpe=sharpe(returns),
        sortino=sortino(returns),
        max_drawdown=dd,
        calmar=calmar(c, dd),
        trades=len(trades),
        unfilled_entries=len(rows) - len(trades),
        win_rate=sum(1 for r in rs if r > 0) / len(rs) if rs else None,
        profit_factor=profit_factor(pnls),
        expectancy_r=sum(rs) / len(rs) if rs else None,
        exposure=exposure(trades, span[0], span[1]) if span is not None else None,
        average_hold_ms=average_hold_ms(trades),
        net_pnl_usd=sum(pnls),
        gross_pnl_usd=gross,
        fees_usd=fees,
        funding_usd=funding,
        fees_share_of_gross=fee_share,
        funding_share_of_gross=funding_share,
        daily_returns=len(returns),
    )

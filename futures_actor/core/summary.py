"""Run summary from trade records (replay's final report): pure, from trades.jsonl records.

Counts only trades whose entry filled (`entry_order.filled_qty > 0`); entries that timed out are
counted apart. Figures are net as logged. Max drawdown is the deepest fall of the equity curve built
from the starting equity plus each trade's pnl in close order (a fraction, like every `*_pct`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

__all__ = ["GroupStats", "RunSummary", "render_summary", "summarize_trades"]


class GroupStats(msgspec.Struct, kw_only=True):
    trades: int = 0
    wins: int = 0
    pnl_usd: float = 0.0
    sum_r: float = 0.0
    fees_usd: float = 0.0
    funding_usd: float = 0.0

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else 0.0

    @property
    def expectancy_r(self) -> float:
        return self.sum_r / self.trades if self.trades else 0.0

    def add(self, pnl: float, r: float, fees: float, funding: float) -> None:
        self.trades += 1
        self.wins += 1 if r > 0 else 0
        self.pnl_usd += pnl
        self.sum_r += r
        self.fees_usd += fees
        self.funding_usd += funding


class RunSummary(msgspec.Struct, kw_only=True):
    total: GroupStats
    by_strategy: dict[str, GroupStats]
    by_regime: dict[str, GroupStats]
    by_reason: dict[str, int]
    unfilled_entries: int
    max_drawdown_pct: float
    start_equity_usd: float
    end_equity_usd: float


def _num(record: Mapping[str, Any], section: str, key: str) -> float:
    value = record.get(section, {}).get(key, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def summarize_trades(records: Iterable[Mapping[str, Any]], *, start_equity_usd: float) -> RunSummary:
    rows = sorted(records, key=lambda r: (str(r.get("timestamp_close", "")), str(r.get("trade_id", ""))))
    total = GroupStats()
    by_strategy: dict[str, GroupStats] = {}
    by_regime: dict[str, GroupStats] = {}
    by_reason: dict[str, int] = {}
    unfilled = 0
    equity = peak = start_equity_usd
    max_dd = 0.0
    for rec in rows:
        reason = str(rec.get("result", {}).get("reason", "?"))
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if _num(rec, "entry_order", "filled_qty") <= 0:
            unfilled += 1
            continue
        pnl = _num(rec, "result", "pnl_usd")
        r = _num(rec, "result", "pnl_r_multiple")
        fees = _num(rec, "costs", "fees_usd")
        funding = _num(rec, "costs", "funding_usd")
        total.add(pnl, r, fees, funding)
        by_strategy.setdefault(str(rec.get("strategy", "?")), GroupStats()).add(pnl, r, fees, funding)
        by_regime.setdefault(str(rec.get("regime", "?")), GroupStats()).add(pnl, r, fees, funding)
        equity += pnl
        peak = max(peak, equity)
        if peak > 0:
            max_dd = max(max_dd, (peak - equity) / peak)
    return RunSummary(
        total=total,
        by_strategy=by_strategy,
        by_regime=by_regime,
        by_reason=by_reason,
        unfilled_entries=unfilled,
        max_drawdown_pct=max_dd,
        start_equity_usd=start_equity_usd,
        end_equity_usd=equity,
    )


def _line(name: str, g: GroupStats) -> str:
    return (
        f"  {name:<22} trades {g.trades:>5}  win rate {g.win_rate:6.1%}  expectancy {g.expectancy_r:+.3f} R"
        f"  pnl {g.pnl_usd:+12.2f}  fees {g.fees_usd:9.2f}  funding {g.funding_usd:+9.2f}"
    )


def render_summary(s: RunSummary) -> str:
    out = [
        "replay summary",
        _line("all", s.total),
        f"  max drawdown {s.max_drawdown_pct:.2%}   equity {s.start_equity_usd:.2f} -> {s.end_equity_usd:.2f}"
        f"   entries not filled {s.unfilled_entries}",
        "by strategy:",
        *(_line(k, v) for k, v in sorted(s.by_strategy.items())),
        "by regime:",
        *(_line(k, v) for k, v in sorted(s.by_regime.items())),
        "exit reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(s.by_reason.items())),
    ]
    return "\n".join(out)

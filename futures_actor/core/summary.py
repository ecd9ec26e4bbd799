"""Run summary from trade records (replay's final report): pure, from trades.jsonl records.

What is a trade: a record whose entry filled (`entry_order.filled_qty > 0`). The journal also holds a
record for every entry that never filled (its order expired or was rejected: reason TIMEOUT, qty 0);
those are "entries not filled", counted apart and never in trade counts, win rate or PnL. The replay's
progress lines and this summary both count with `count_trades`, so they agree.
Figures are net as logged. Max drawdown (`core.drawdown`, a fraction like every `*_pct`) is that of the
run's equity curve when one is given (a replay: equity.csv, marked to market at every sample: the
curve report.html plots, so the two agree); without one, that of the curve built from the starting
equity plus each trade's pnl in close order (`max_drawdown_of` says which).
The run's mode (`mode`) is REPLAY for a replay; trade records keep the log schema's PAPER_LIVE there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from futures_actor.core.drawdown import max_drawdown

__all__ = [
    "REPLAY_MODE",
    "GroupStats",
    "RunSummary",
    "TradeCounts",
    "count_trades",
    "is_filled",
    "render_summary",
    "summarize_trades",
    "summary_to_dict",
]


# The run mode a replay reports (summary.json, the console, report.html, daily reports).
REPLAY_MODE = "REPLAY"
DRAWDOWN_OF_CURVE = "the equity curve (equity.csv: marked to market at every sample)"
DRAWDOWN_OF_TRADES = "the closed trades (no equity curve: start equity plus each trade's pnl)"


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


class TradeCounts(msgspec.Struct, frozen=True, kw_only=True):
    trades: int
    unfilled_entries: int


class RunSummary(msgspec.Struct, kw_only=True):
    total: GroupStats
    by_strategy: dict[str, GroupStats]
    by_regime: dict[str, GroupStats]
    by_symbol: dict[str, GroupStats]
    by_reason: dict[str, int]
    unfilled_entries: int
    max_drawdown_pct: float
    start_equity_usd: float
    end_equity_usd: float
    max_drawdown_of: str = DRAWDOWN_OF_TRADES
    mode: str = ""


def _num(record: Mapping[str, Any], section: str, key: str) -> float:
    part = record.get(section)
    value = part.get(key, 0.0) if isinstance(part, Mapping) else 0.0
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def is_filled(record: Mapping[str, Any]) -> bool:
    """A trade (its entry filled), as opposed to an entry that never filled."""
    entry = record.get("entry_order")
    qty = entry.get("filled_qty", 0.0) if isinstance(entry, Mapping) else 0.0
    return isinstance(qty, int | float) and not isinstance(qty, bool) and qty > 0


def count_trades(records: Iterable[Mapping[str, Any]]) -> TradeCounts:
    """Trades and entries not filled, counted as the summary counts them."""
    filled = unfilled = 0
    for rec in records:
        if is_filled(rec):
            filled += 1
        else:
            unfilled += 1
    return TradeCounts(trades=filled, unfilled_entries=unfilled)


def summarize_trades(
    records: Iterable[Mapping[str, Any]],
    *,
    start_equity_usd: float,
    equity_curve: Sequence[float] | None = None,
    mode: str = "",
) -> RunSummary:
    """The summary of `records`; the max drawdown that of `equity_curve` (oldest first) when given."""
    rows = sorted(records, key=lambda r: (str(r.get("timestamp_close", "")), str(r.get("trade_id", ""))))
    total = GroupStats()
    by_strategy: dict[str, GroupStats] = {}
    by_regime: dict[str, GroupStats] = {}
    by_symbol: dict[str, GroupStats] = {}
    by_reason: dict[str, int] = {}
    unfilled = 0
    equity = start_equity_usd
    closed_curve = [equity]
    for rec in rows:
        if not is_filled(rec):
            unfilled += 1
            continue
        result = rec.get("result")
        reason = str(result.get("reason", "?")) if isinstance(result, Mapping) else "?"
        by_reason[reason] = by_reason.get(reason, 0) + 1
        pnl = _num(rec, "result", "pnl_usd")
        r = _num(rec, "result", "pnl_r_multiple")
        fees = _num(rec, "costs", "fees_usd")
        funding = _num(rec, "costs", "funding_usd")
        total.add(pnl, r, fees, funding)
        by_strategy.setdefault(str(rec.get("strategy", "?")), GroupStats()).add(pnl, r, fees, funding)
        by_regime.setdefault(str(rec.get("regime", "?")), GroupStats()).add(pnl, r, fees, funding)
        by_symbol.setdefault(str(rec.get("symbol", "?")), GroupStats()).add(pnl, r, fees, funding)
        equity += pnl
        closed_curve.append(equity)
    curve = equity_curve if equity_curve else closed_curve
    return RunSummary(
        total=total,
        by_strategy=by_strategy,
        by_regime=by_regime,
        by_symbol=by_symbol,
        by_reason=by_reason,
        unfilled_entries=unfilled,
        max_drawdown_pct=max_drawdown(curve),
        max_drawdown_of=DRAWDOWN_OF_CURVE if equity_curve else DRAWDOWN_OF_TRADES,
        start_equity_usd=start_equity_usd,
        end_equity_usd=equity,
        mode=mode,
    )


def _line(name: str, g: GroupStats) -> str:
    return (
        f"  {name:<22} trades {g.trades:>5}  win rate {g.win_rate:6.1%}  expectancy {g.expectancy_r:+.3f} R"
        f"  pnl {g.pnl_usd:+12.2f}  fees {g.fees_usd:9.2f}  funding {g.funding_usd:+9.2f}"
    )


def render_summary(s: RunSummary) -> str:
    out = [
        f"replay summary (mode {s.mode})" if s.mode else "replay summary",
        _line("all", s.total),
        f"  max drawdown {s.max_drawdown_pct:.2%}   equity {s.start_equity_usd:.2f} -> {s.end_equity_usd:.2f}"
        f"   entries not filled {s.unfilled_entries}",
        "by strategy:",
        *(_line(k, v) for k, v in sorted(s.by_strategy.items())),
        "by regime:",
        *(_line(k, v) for k, v in sorted(s.by_regime.items())),
        "exit reasons (trades): " + (", ".join(f"{k} {v}" for k, v in sorted(s.by_reason.items())) or "none"),
        "trades: records whose entry filled; entries not filled (expired or rejected, qty 0) are apart",
    ]
    return "\n".join(out)


def _group_dict(g: GroupStats) -> dict[str, Any]:
    return {
        "trades": g.trades,
        "wins": g.wins,
        "win_rate": g.win_rate,
        "expectancy_r": g.expectancy_r,
        "pnl_usd": g.pnl_usd,
        "fees_usd": g.fees_usd,
        "funding_usd": g.funding_usd,
    }


def summary_to_dict(s: RunSummary) -> dict[str, Any]:
    """The summary as plain JSON data (summary.json)."""
    return {
        **({"mode": s.mode} if s.mode else {}),
        "trades": _group_dict(s.total),
        "unfilled_entries": s.unfilled_entries,
        "start_equity_usd": s.start_equity_usd,
        "end_equity_usd": s.end_equity_usd,
        "max_drawdown_pct": s.max_drawdown_pct,
        "max_drawdown_of": s.max_drawdown_of,
        "by_strategy": {k: _group_dict(v) for k, v in sorted(s.by_strategy.items())},
        "by_regime": {k: _group_dict(v) for k, v in sorted(s.by_regime.items())},
        "by_symbol": {k: _group_dict(v) for k, v in sorted(s.by_symbol.items())},
        "exit_reasons": dict(sorted(s.by_reason.items())),
    }

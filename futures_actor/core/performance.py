"""Rolling performance of each strategy over its closed trades (BOT_SPEC §7, first half).

This module owns the statistics the strategy selector ranks on: FIFO windows of the last
`performance.window_trades` closed trades per strategy and per (strategy, regime), their stats
(N, win rate, expectancy in R, average win/loss, fees, funding, max drawdown), the score and the
confidence, and the eligibility verdict (low sample, negative expectancy).

Input is the trade log: `closed_trade_from_record()` reads one `trades.jsonl` record (the fields of
LOG_SCHEMA.json). A record whose entry never filled (`entry_order.filled_qty == 0`, e.g. a `TIMEOUT`
entry) is not a closed trade and counts nowhere. `pnl_usd` and `pnl_r_multiple` are taken as logged:
the journal writes them net of fees and funding, so expectancy is in net R. Rebuilding from the log
and feeding the same trades one by one give the same windows (tests check it); a trade id already
counted is ignored, so a closure seen both in the rebuilt log and as a live event counts once.

Drawdown: the equity curve starts at 1 and compounds each trade's `pnl_usd / equity_usd`; the largest
peak-to-trough fall is a fraction (0.05 = 5 %), like every `*_pct` in the config.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from futures_actor.core.config import PerformanceConfig
from futures_actor.core.lifecycle import ADOPTED_STRATEGY
from futures_actor.core.types import Regime

__all__ = [
    "STANDING_LOW_SAMPLE",
    "STANDING_NEGATIVE_EXPECTANCY",
    "STANDING_OK",
    "ClosedTrade",
    "PerformanceTracker",
    "RebuildReport",
    "RecordIssue",
    "StrategyStanding",
    "TradeRecordError",
    "WindowStats",
    "closed_trade_from_record",
    "compute_stats",
]

WindowName = Literal["REGIME", "GLOBAL"]

STANDING_OK = "OK"
STANDING_LOW_SAMPLE = "LOW_SAMPLE"
STANDING_NEGATIVE_EXPECTANCY = "NEGATIVE_EXPECTANCY"

_RESULT_REASONS = frozenset({"TP", "SL", "TRAIL", "KILL_SWITCH", "MANUAL", "TIMEOUT"})


class TradeRecordError(ValueError):
    """A trade-log record cannot be read as a trade. Names the field, the value and what was expected."""

    def __init__(self, *, field: str, value: object, expected: str, trade_id: str = "") -> None:
        who = f"trade {trade_id}: " if trade_id else ""
        super().__init__(f"{who}record field {field}: got {value!r}; expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected
        self.trade_id = trade_id


class ClosedTrade(msgspec.Struct, frozen=True, kw_only=True):
    """What the performance layer needs of one closed trade (net figures)."""

    trade_id: str
    strategy: str
    regime: Regime
    r_multiple: float
    pnl_usd: float
    equity_usd: float
    fees_usd: float
    funding_usd: float
    reason: str


def _get(record: Mapping[str, Any], path: str, trade_id: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise TradeRecordError(field=path, value=None, expected="present", trade_id=trade_id)
        node = node[part]
    return node


def _number(record: Mapping[str, Any], path: str, trade_id: str) -> float:
    value = _get(record, path, trade_id)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TradeRecordError(field=path, value=value, expected="a finite number", trade_id=trade_id)
    return float(value)


def _text(record: Mapping[str, Any], path: str, trade_id: str) -> str:
    value = _get(record, path, trade_id)
    if not isinstance(value, str) or not value:
        raise TradeRecordError(field=path, value=value, expected="a non-empty string", trade_id=trade_id)
    return value


def closed_trade_from_record(record: Mapping[str, Any]) -> ClosedTrade | None:
    """The closed trade in one trade-log record; None when the entry never filled (not a closed trade).

    Raises `TradeRecordError` naming the field when the record is malformed.
    """
    if not isinstance(record, Mapping):
        raise TradeRecordError(field="<record>", value=type(record).__name__, expected="a JSON object")
    raw_id = record.get("trade_id")
    trade_id = raw_id if isinstance(raw_id, str) else ""
    trade_id = _text(record, "trade_id", trade_id)
    reason = _text(record, "result.reason", trade_id)
    if reason not in _RESULT_REASONS:
        raise TradeRecordError(
            field="result.reason", value=reason, expected="|".join(sorted(_RESULT_REASONS)), trade_id=trade_id
        )
    filled = _number(record, "entry_order.filled_qty", trade_id)
    if filled < 0:
        raise TradeRecordError(
            field="entry_order.filled_qty", value=filled, expected="a quantity >= 0", trade_id=trade_id
        )
    if filled == 0:
        return None
    if record.get("strategy") == ADOPTED_STRATEGY:
        return None  # an adopted position is nobody's strategy decision: not in any window
    regime_raw = _text(record, "regime", trade_id)
    try:
        regime = Regime(regime_raw)
    except ValueError:
        raise TradeRecordError(
            field="regime", value=regime_raw, expected="|".join(r.value for r in Regime), trade_id=trade_id
        ) from None
    equity = _number(record, "risk.equity_usd", trade_id)
    if equity <= 0:
        raise TradeRecordError(
            field="risk.equity_usd", value=equity, expected="a number > 0", trade_id=trade_id
        )
    return ClosedTrade(
        trade_id=trade_id,
        strategy=_text(record, "strategy", trade_id),
        regime=regime,
        r_multiple=_number(record, "result.pnl_r_multiple", trade_id),
        pnl_usd=_number(record, "result.pnl_usd", trade_id),
        equity_usd=equity,
        fees_usd=_number(record, "costs.fees_usd", trade_id),
        funding_usd=_number(record, "costs.funding_usd", trade_id),
        reason=reason,
    )


class WindowStats(msgspec.Struct, frozen=True, kw_only=True):
    """Statistics of one FIFO window. `confidence` here is uncapped (see `StrategyStanding`)."""

    n: int
    win_rate: float
    expectancy_r: float
    avg_win_r: float
    avg_loss_r: float
    fees_total: float
    funding_total: float
    max_drawdown_pct: float
    score: float
    confidence: float


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def _max_drawdown(trades: Iterable[ClosedTrade]) -> float:
    equity = peak = 1.0
    worst = 0.0
    for t in trades:
        equity = max(0.0, equity * (1.0 + t.pnl_usd / t.equity_usd))
        peak = max(peak, equity)
        worst = max(worst, (peak - equity) / peak)
    return worst


def compute_stats(trades: Iterable[ClosedTrade], cfg: PerformanceConfig) -> WindowStats:
    """Stats, score and (uncapped) confidence of a window, oldest trade first."""
    window = list(trades)
    rs = [t.r_multiple for t in window]
    wins = [r for r in rs if r > 0]
    losses = [r for r in rs if r < 0]
    expectancy = _mean(rs)
    mdd = _max_drawdown(window)
    score = expectancy - cfg.dd_penalty_weight * mdd
    return WindowStats(
        n=len(window),
        win_rate=len(wins) / len(window) if window else 0.0,
        expectancy_r=expectancy,
        avg_win_r=_mean(wins),
        avg_loss_r=_mean(losses),
        fees_total=math.fsum(t.fees_usd for t in window),
        funding_total=math.fsum(t.funding_usd for t in window),
        max_drawdown_pct=mdd,
        score=score,
        confidence=min(1.0, max(0.0, 0.5 + score / cfg.score_scale)),
    )


class StrategyStanding(msgspec.Struct, frozen=True, kw_only=True):
    """A strategy's standing in a regime: the window used, its stats, the capped confidence, eligibility.

    `status`: OK, LOW_SAMPLE (N < min_trades_before_confidence; confidence capped) or
    NEGATIVE_EXPECTANCY (expectancy ≤ 0 on ≥ min trades; ineligible when the config says so).
    """

    strategy: str
    regime: Regime
    window: WindowName
    stats: WindowStats
    confidence: float
    low_sample: bool
    eligible: bool
    status: str


class RecordIssue(msgspec.Struct, frozen=True, kw_only=True):
    """A trade-log record that could not be counted, and why (for the event log)."""

    index: int
    trade_id: str
    message: str


class RebuildReport(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of a rebuild: records counted, not closed (no fill), duplicates, and rejected ones."""

    counted: int
    not_closed: int
    duplicates: int
    rejected: list[RecordIssue]


class PerformanceTracker:
    """FIFO windows per strategy and per (strategy, regime). Owned by one actor (PortfolioRisk)."""

    def __init__(self, *, cfg: PerformanceConfig) -> None:
        self._cfg = cfg
        self._global: dict[str, deque[ClosedTrade]] = {}
        self._by_regime: dict[tuple[str, Regime], deque[ClosedTrade]] = {}
        self._seen: set[str] = set()

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], *, cfg: PerformanceConfig
    ) -> tuple[PerformanceTracker, RebuildReport]:
        """A tracker rebuilt from trade-log records in file order (start-up)."""
        tracker = cls(cfg=cfg)
        return tracker, tracker.load_records(records)

    def load_records(self, records: Iterable[Mapping[str, Any]]) -> RebuildReport:
        """Count every closed trade of `records`; a malformed record is reported, never fatal."""
        counted = not_closed = duplicates = 0
        rejected: list[RecordIssue] = []
        for index, record in enumerate(records):
            try:
                trade = closed_trade_from_record(record)
            except TradeRecordError as exc:
                rejected.append(RecordIssue(index=index, trade_id=exc.trade_id, message=str(exc)))
                continue
            if trade is None:
                not_closed += 1
            elif self.record(trade):
                counted += 1
            else:
                duplicates += 1
        return RebuildReport(counted=counted, not_closed=not_closed, duplicates=duplicates, rejected=rejected)

    def record(self, trade: ClosedTrade) -> bool:
        """Add one closed trade (incremental update). False when this trade id was already counted."""
        if trade.trade_id in self._seen:
            return False
        self._seen.add(trade.trade_id)
        size = self._cfg.window_trades
        self._global.setdefault(trade.strategy, deque(maxlen=size)).append(trade)
        self._by_regime.setdefault((trade.strategy, trade.regime), deque(maxlen=size)).append(trade)
        return True

    def window(self, strategy: str, regime: Regime | None = None) -> tuple[ClosedTrade, ...]:
        """The trades in a window, oldest first (regime None: the strategy's global window)."""
        if regime is None:
            return tuple(self._global.get(strategy, ()))
        return tuple(self._by_regime.get((strategy, regime), ()))

    def windows(self) -> dict[str, tuple[ClosedTrade, ...]]:
        """Every window by key (`strategy` or `strategy/REGIME`), for reports and equality checks."""
        out = {name: tuple(w) for name, w in self._global.items()}
        out.update({f"{name}/{regime}": tuple(w) for (name, regime), w in self._by_regime.items()})
        return out

    def stats(self, strategy: str, regime: Regime | None = None) -> WindowStats:
        return compute_stats(self.window(strategy, regime), self._cfg)

    def standing(self, strategy: str, regime: Regime) -> StrategyStanding:
        """Regime window if it holds ≥ min trades, else the global one; confidence capped on low samples."""
        cfg = self._cfg
        regime_stats = self.stats(strategy, regime)
        if regime_stats.n >= cfg.min_trades_before_confidence:
            window: WindowName = "REGIME"
            stats = regime_stats
        else:
            window = "GLOBAL"
            stats = self.stats(strategy)
        low_sample = stats.n < cfg.min_trades_before_confidence
        confidence = min(stats.confidence, cfg.low_sample_confidence_cap) if low_sample else stats.confidence
        if low_sample:
            status, eligible = STANDING_LOW_SAMPLE, True
        elif stats.expectancy_r <= 0:
            status, eligible = STANDING_NEGATIVE_EXPECTANCY, not cfg.disable_if_expectancy_negative
        else:
            status, eligible = STANDING_OK, True
        return StrategyStanding(
            strategy=strategy,
            regime=regime,
            window=window,
            stats=stats,
            confidence=confidence,
            low_sample=low_sample,
            eligible=eligible,
            status=status,
        )

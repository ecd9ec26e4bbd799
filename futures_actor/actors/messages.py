"""In-process messages between actors (ARCHITECTURE.md "Actors").

Frozen, keyword-only msgspec Structs. Commands are imperative (`SubmitPlan`, `AmendStop`), events
past tense (`CandleClosed`, `EntryFilled`). Each actor's inbox accepts a closed union, matched
exhaustively with `match` and `assert_never`. Messages that carry a reply channel are in-process
only and never encoded.

Flow: MarketData → SymbolActor (`CandleClosed`, `BookUpdated`, `MarkUpdated`) → PortfolioRisk
(`SymbolReport` with candidate signals) → Execution (`SubmitPlan`) → PortfolioRisk / SymbolActor /
Journal (`EntryFilled`, `EntryAbandoned`, `TradeClosed`, `PositionUpdated`). SymbolActor →
Execution (`AmendStop`) for trailing. Health → PortfolioRisk (`SafeModeChanged`). Operator →
Execution and PortfolioRisk (`KillSwitch`, `Resume`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec

from futures_actor.core.models import RegimeResult, RiskRejection, Signal, TradePlan
from futures_actor.core.risk import Exposure
from futures_actor.core.types import Candle, Side, SymbolRules

__all__ = [
    "AccountUpdated",
    "AmendStop",
    "BookUpdated",
    "CandleClosed",
    "EntryAbandoned",
    "EntryFilled",
    "ExecutionSync",
    "ExecutionSynced",
    "FundingBooked",
    "KillSwitch",
    "MarkUpdated",
    "PortfolioSynced",
    "PositionUpdated",
    "RepublishPositions",
    "Resume",
    "RetryDecided",
    "RetryRequested",
    "SafeModeChanged",
    "ShadowTradeClosed",
    "StopIntake",
    "SubmitPlan",
    "SymbolReport",
    "TradeClosed",
    "UniverseChanged",
    "Verdict",
]


class _Msg(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every in-process message."""


# --- market data -------------------------------------------------------------------------------


class CandleClosed(_Msg, frozen=True):
    """A closed kline, in order and without gaps for its (symbol, interval)."""

    symbol: str
    interval: str
    candle: Candle
    source: Literal["ws", "rest", "replay"] = "ws"


class BookUpdated(_Msg, frozen=True):
    symbol: str
    bid: float
    ask: float
    ts_ms: int


class MarkUpdated(_Msg, frozen=True):
    symbol: str
    mark_price: float
    funding_rate: float
    next_funding_ms: int
    ts_ms: int


# --- symbol → risk -------------------------------------------------------------------------------


class Verdict(_Msg, frozen=True):
    """The risk actor's answer to one symbol's report for one 5m close."""

    symbol: str
    candle_open_time_ms: int
    plan: TradePlan | None
    rejection: RiskRejection | None
    explanation: str = ""


class SymbolReport(_Msg, frozen=True):
    """One symbol's outcome of one closed 5m candle: regime and the strategies' candidate signals.

    Every monitored symbol sends one per 5m close, with or without signals, so that the risk actor
    knows when a decision batch is complete.
    """

    symbol: str
    candle_open_time_ms: int
    regime: RegimeResult
    signals: tuple[Signal, ...]
    mid_price: float
    spread_pct: float | None = None
    funding_rate: float | None = None
    reply: Any = None  # trio.MemorySendChannel[Verdict] | None; in-process only


# --- risk → execution ----------------------------------------------------------------------------


class SubmitPlan(_Msg, frozen=True):
    plan: TradePlan
    mid_price: Decimal
    tick_price: Decimal | None = None


class ExecutionSync(_Msg, frozen=True):
    """Risk asks execution to answer `ExecutionSynced` once it has handled everything it received
    before this (a barrier): the decision of the batch of `candle_open_time_ms` then sees the outcome
    of every stop amendment the symbols sent before their reports (issue 12: no race between a trailed
    stop's `PositionUpdated` and the decision, whatever the runtime's scheduling)."""

    candle_open_time_ms: int


class ExecutionSynced(_Msg, frozen=True):
    """Execution's answer to `ExecutionSync`, sent after every message it sent before."""

    candle_open_time_ms: int


# --- symbol → execution ---------------------------------------------------------------------------


class AmendStop(_Msg, frozen=True):
    """Trailing: move the stop of `trade_id` toward profit (never away; execution re-checks)."""

    trade_id: str
    symbol: str
    new_stop: float
    reference_price: float
    reason: str = "TRAIL"


# --- execution → risk / symbols / journal ------------------------------------------------------


class EntryFilled(_Msg, frozen=True):
    """A (partial) entry fill changed an open position's size."""

    trade_id: str
    symbol: str
    side: Side
    filled_qty: Decimal
    avg_price: Decimal
    stop_price: Decimal
    final: bool  # no further entry fills will come (filled, or the rest cancelled)
    leverage: float = 1.0  # the plan's (unknown: 1, the whole notional counts as margin)


class EntryAbandoned(_Msg, frozen=True):
    """The entry ended with nothing filled (TTL twice, rejection): release the reservation."""

    trade_id: str
    symbol: str
    reason: str


class FundingBooked(_Msg, frozen=True):
    """Funding settled on a position (signed: negative = paid). Risk books it in the daily / weekly
    calendar when it is paid (BOT_SPEC §8.8), not when the trade closes; `trade_id` is empty for a
    position no trade owns."""

    trade_id: str
    symbol: str
    amount_usd: float
    ts_ms: int


class RetryRequested(_Msg, frozen=True):
    """Execution → risk: an entry attempt expired unfilled; re-decide the retry at `mid` (BOT_SPEC §9
    [resolved]) against the portfolio, counting `filled_qty` at `filled_avg_price` in its risk."""

    plan: TradePlan
    mid: Decimal | None
    filled_qty: Decimal
    filled_avg_price: Decimal
    shadow: bool = False  # from the shadow book: decided against no exposure, answered to the shadow book


class RetryDecided(_Msg, frozen=True):
    """Risk → execution: the retry's new plan (same trade id), or the rejection that ends the trade."""

    trade_id: str
    plan: TradePlan | None
    rejection: RiskRejection | None


class PositionUpdated(_Msg, frozen=True):
    """What a symbol actor needs to trail its position; `qty == 0` means flat."""

    trade_id: str
    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal
    stop_price: Decimal
    initial_stop_price: Decimal
    trail_atr_mult: float | None
    trail_after_r: float | None


class TradeClosed(_Msg, frozen=True):
    """A trade ended; `record` is its trades.jsonl record (LOG_SCHEMA)."""

    trade_id: str
    symbol: str
    record: dict[str, Any]
    realized_pnl_usd: float
    close_ms: int


class ShadowTradeClosed(_Msg, frozen=True):
    """LIVE during a weekly-stop pause: a trade of the shadow paper book ended (BOT_SPEC §8.9).

    `record` is its trades.jsonl record in the shadow journal; PortfolioRisk feeds it to the
    performance tracker only, never to exposure, open risk or the daily / weekly PnL."""

    record: dict[str, Any]


class AccountUpdated(_Msg, frozen=True):
    equity_usd: float
    wallet_balance_usd: float
    available_balance_usd: float
    unrealized_pnl_usd: float
    ts_ms: int


class PortfolioSynced(_Msg, frozen=True):
    """Execution's reconciled picture (start-up, reconciliation): every open position and working
    entry on the exchange, ours, adopted and foreign alike; PortfolioRisk replaces its view with it."""

    exposures: tuple[Exposure, ...]


# --- control ------------------------------------------------------------------------------------------


class SafeModeChanged(_Msg, frozen=True):
    on: bool
    reasons: tuple[str, ...] = ()


class KillSwitch(_Msg, frozen=True):
    reason: str = "OPERATOR"


class Resume(_Msg, frozen=True):
    reason: str = "OPERATOR"


class RepublishPositions(_Msg, frozen=True):
    """A symbol actor was restarted with fresh state: send it `PositionUpdated` for its open trades
    again, so that trailing resumes where the crashed incarnation left it."""

    symbol: str


class UniverseChanged(_Msg, frozen=True):
    """The daily universe refresh (BOT_SPEC §2): `tradable` may open new entries; `monitored` also
    holds symbols that left the universe but still have a position or working orders (managed, no
    new entries). `rules` carries the exchange rules of every monitored symbol."""

    tradable: tuple[str, ...]
    monitored: tuple[str, ...]
    rules: dict[str, SymbolRules]
    # The hedge rule's beta reference: the selected symbol of highest volume ("" = keep the current).
    reference_symbol: str = ""


class StopIntake(_Msg, frozen=True):
    """Shutdown phase 1: decide nothing new (trading state REDUCING)."""

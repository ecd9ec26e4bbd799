"""Daily stop, weekly stop, pause and reduced-risk windows on the UTC calendar (BOT_SPEC §8.8–8.10).

This module owns the `RiskState` record that the PortfolioRisk actor keeps, persists (SQLite, one
transaction per change) and restores after a restart. It is a frozen Struct; every function
returns a new state. The calendar is UTC: a day starts at 00:00 UTC, a week on Monday 00:00 UTC.

Policy:
- `roll(state, now_ms, equity)` starts a new day (and week) when `now_ms` has crossed the boundary:
  the start equity becomes the equity passed in and the realized PnL of the period restarts at 0.
  Call it on every decision and every realized PnL with the current equity.
- Daily stop: realized net PnL today / equity at the day start ≤ `daily_stop_pct` ⇒ no new entries
  until the next UTC day (derived, nothing to clear).
- Weekly stop: the same for the week ≤ `weekly_stop_pct` ⇒ pause for `pause_days_after_weekly_stop`
  days from the moment it is hit, then `reduced_risk_days` days at `reduced_risk_after_pause_pct`,
  then normal risk. The pause is recorded as end times, so it survives restarts and week rolls.
  A pause is never shortened or restarted while it runs.
- Start equities belong to 00:00 UTC exactly (issue 10): the equity passed to `roll` is the last one
  seen before the boundary (nothing between it and midnight changed it). The start of the day before
  is kept, so that the daily report (built at 00:05, after or before the roll) gets the day's start and
  end equity from `day_equity_bounds`.
- A start equity ≤ 0 makes the ratio undefined: entries are refused (capital protection).
- In LIVE a paused bot keeps trading on paper (`shadow_only`); in PAPER_LIVE it simply waits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

from futures_actor.core.config import RiskConfig
from futures_actor.core.types import INTERVAL_MS

__all__ = [
    "DAY_MS",
    "WEEK_MS",
    "ClosedPnl",
    "EntryGate",
    "RiskState",
    "RiskStateError",
    "apply_weekly_stop",
    "book_funding",
    "book_trade_close",
    "closed_pnl_from_records",
    "day_equity_bounds",
    "decode_risk_state",
    "derive_risk_state",
    "encode_risk_state",
    "entry_gate",
    "new_risk_state",
    "record_realized_pnl",
    "risk_pct_now",
    "roll",
    "shadow_only",
    "utc_day_start",
    "utc_week_start",
]

DAY_MS = INTERVAL_MS["1d"]
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday: day number + 3 is 0 on Mondays (mod 7).
_EPOCH_WEEKDAY_SHIFT = 3

Mode = Literal["PAPER_LIVE", "LIVE"]

# Reason codes of the gate (the risk engine reports them unchanged).
DAILY_STOP = "DAILY_STOP"
WEEKLY_STOP = "WEEKLY_STOP"


# How many recently booked trade ids the state remembers (far more than can be re-reported).
BOOKED_TRADE_IDS_KEPT = 512


class RiskStateError(ValueError):
    """Bad input to a risk-state function, or a persisted state that cannot be decoded."""

    def __init__(self, *, field: str, value: object, expected: str) -> None:
        super().__init__(f"{field}: got {value!r}, expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


def utc_day_start(ms: int) -> int:
    """00:00 UTC of the day containing `ms`."""
    return ms - ms % DAY_MS


def utc_week_start(ms: int) -> int:
    """Monday 00:00 UTC of the week containing `ms`."""
    day = ms // DAY_MS
    return (day - (day + _EPOCH_WEEKDAY_SHIFT) % 7) * DAY_MS


class RiskState(msgspec.Struct, frozen=True, kw_only=True):
    """The persisted risk calendar. Times are UTC epoch ms; 0 means "none"."""

    day_start_ms: int
    day_start_equity: float
    week_start_ms: int
    week_start_equity: float
    realized_pnl_day: float = 0.0
    realized_pnl_week: float = 0.0
    pause_until_ms: int = 0
    reduced_risk_until_ms: int = 0
    weekly_stop_hit_ms: int = 0  # when the running (or last) pause started
    # Funding booked in the calendar when it was paid, per open trade (trade id, signed USD): the
    # trade's close then books its net PnL minus this part, so nothing is counted twice.
    funding_booked: tuple[tuple[str, float], ...] = ()
    # The day before the current one: its 00:00 UTC start and start equity (0: unknown).
    prev_day_start_ms: int = 0
    prev_day_start_equity: float = 0.0
    # Trades whose pnl is already booked (most recent last): execution may report a closed trade
    # again after a crash, and a loss must never be counted twice toward the daily/weekly stops.
    booked_trade_ids: tuple[str, ...] = ()

    def already_booked(self, trade_id: str) -> bool:
        return trade_id in self.booked_trade_ids

    def with_booked(self, trade_id: str) -> RiskState:
        kept = self.booked_trade_ids[-(BOOKED_TRADE_IDS_KEPT - 1) :]
        return msgspec.structs.replace(self, booked_trade_ids=(*kept, trade_id))

    def funding_booked_for(self, trade_id: str) -> float:
        return math.fsum(amount for tid, amount in self.funding_booked if tid == trade_id)

    def paused(self, now_ms: int) -> bool:
        return now_ms < self.pause_until_ms

    def reduced_risk(self, now_ms: int) -> bool:
        return self.pause_until_ms <= now_ms < self.reduced_risk_until_ms

    def day_pnl_pct(self) -> float | None:
        if not self.day_start_equity > 0:
            return None
        return self.realized_pnl_day / self.day_start_equity

    def week_pnl_pct(self) -> float | None:
        if not self.week_start_equity > 0:
            return None
        return self.realized_pnl_week / self.week_start_equity


class EntryGate(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to "may a new entry be opened now?" with the reason and numbers when not."""

    allowed: bool
    code: str = ""
    message: str = ""
    values: dict[str, float | str] = msgspec.field(default_factory=dict)


def _check_now(now_ms: int) -> None:
    if isinstance(now_ms, bool) or not isinstance(now_ms, int) or now_ms < 0:
        raise RiskStateError(field="now_ms", value=now_ms, expected="an integer epoch time in ms >= 0")


def _check_money(value: float, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RiskStateError(field=field, value=value, expected="a finite number")


def new_risk_state(*, now_ms: int, equity_usd: float) -> RiskState:
    """A fresh calendar starting in the day and week of `now_ms` with `equity_usd` as start equity."""
    _check_now(now_ms)
    _check_money(equity_usd, "equity_usd")
    return RiskState(
        day_start_ms=utc_day_start(now_ms),
        day_start_equity=float(equity_usd),
        week_start_ms=utc_week_start(now_ms),
        week_start_equity=float(equity_usd),
    )


def roll(state: RiskState, *, now_ms: int, equity_usd: float) -> RiskState:
    """Start a new UTC day and/or week if `now_ms` is past the current one; else `state` unchanged.

    A `now_ms` earlier than the current day (a clock step back) changes nothing.
    """
    _check_now(now_ms)
    _check_money(equity_usd, "equity_usd")
    day = utc_day_start(now_ms)
    week = utc_week_start(now_ms)
    changes: dict[str, float | int] = {}
    if day > state.day_start_ms:
        if day == state.day_start_ms + DAY_MS:
            prev_ms, prev_equity = state.day_start_ms, state.day_start_equity
        else:  # quiet days in between: the day before this one started where it ended
            prev_ms, prev_equity = day - DAY_MS, float(equity_usd)
        changes.update(
            day_start_ms=day,
            day_start_equity=float(equity_usd),
            realized_pnl_day=0.0,
            prev_day_start_ms=prev_ms,
            prev_day_start_equity=prev_equity,
        )
    if week > state.week_start_ms:
        changes.update(week_start_ms=week, week_start_equity=float(equity_usd), realized_pnl_week=0.0)
    return msgspec.structs.replace(state, **changes) if changes else state


def day_equity_bounds(
    state: RiskState, *, day_start_ms: int, equity_now: float
) -> tuple[float, float] | None:
    """(equity at 00:00 UTC starting the day, equity at 00:00 UTC ending it) of the UTC day starting at
    `day_start_ms`; the end is `equity_now` while that day is still the calendar's current day (not
    rolled yet). None when the calendar no longer knows the day."""
    if day_start_ms == state.day_start_ms:
        return state.day_start_equity, float(equity_now)
    if day_start_ms == state.prev_day_start_ms and state.prev_day_start_equity > 0:
        return state.prev_day_start_equity, state.day_start_equity
    return None


def record_realized_pnl(
    state: RiskState, *, pnl_usd: float, now_ms: int, equity_usd: float, cfg: RiskConfig
) -> RiskState:
    """Add a realized net PnL (a closed trade, a fee, a funding payment) and apply the weekly stop.

    Rolls the calendar first (with `equity_usd`, the equity before this PnL). When the week's
    realized PnL reaches `weekly_stop_pct` and no pause is running, the pause starts now.
    """
    _check_money(pnl_usd, "pnl_usd")
    state = roll(state, now_ms=now_ms, equity_usd=equity_usd)
    state = msgspec.structs.replace(
        state,
        realized_pnl_day=state.realized_pnl_day + pnl_usd,
        realized_pnl_week=state.realized_pnl_week + pnl_usd,
    )
    return apply_weekly_stop(state, now_ms=now_ms, cfg=cfg)


def book_funding(
    state: RiskState, *, trade_id: str, amount_usd: float, now_ms: int, equity_usd: float, cfg: RiskConfig
) -> RiskState:
    """Funding paid now (signed) is realized PnL of today and this week; remembered per trade so that
    the trade's close books only the rest (`book_trade_close`). An empty `trade_id`: a position no
    trade owns, booked and forgotten."""
    state = record_realized_pnl(state, pnl_usd=amount_usd, now_ms=now_ms, equity_usd=equity_usd, cfg=cfg)
    if not trade_id:
        return state
    kept = state.funding_booked[-(BOOKED_TRADE_IDS_KEPT - 1) :]
    return msgspec.structs.replace(state, funding_booked=(*kept, (trade_id, float(amount_usd))))


def book_trade_close(
    state: RiskState, *, trade_id: str, pnl_usd: float, now_ms: int, equity_usd: float, cfg: RiskConfig
) -> RiskState:
    """A closed trade's net PnL (fees and funding included), less the funding already booked when it
    was paid; marks the trade booked (a re-reported close is then ignored by the caller)."""
    _check_money(pnl_usd, "pnl_usd")
    already = state.funding_booked_for(trade_id)
    state = record_realized_pnl(
        state, pnl_usd=pnl_usd - already, now_ms=now_ms, equity_usd=equity_usd, cfg=cfg
    )
    rest = tuple(item for item in state.funding_booked if item[0] != trade_id)
    return msgspec.structs.replace(state, funding_booked=rest).with_booked(trade_id)


def apply_weekly_stop(state: RiskState, *, now_ms: int, cfg: RiskConfig) -> RiskState:
    """Start the pause if this week's realized PnL is at the weekly stop and none started this week.

    `record_realized_pnl` calls it; call it also after restoring or re-deriving a state.
    """
    _check_now(now_ms)
    week_pct = state.week_pnl_pct()
    weekly_hit = week_pct is not None and week_pct <= cfg.weekly_stop_pct
    if not weekly_hit or state.paused(now_ms) or state.weekly_stop_hit_ms >= state.week_start_ms > 0:
        return state
    pause_until = now_ms + cfg.pause_days_after_weekly_stop * DAY_MS
    return msgspec.structs.replace(
        state,
        weekly_stop_hit_ms=now_ms,
        pause_until_ms=pause_until,
        reduced_risk_until_ms=pause_until + cfg.reduced_risk_days * DAY_MS,
    )


def entry_gate(state: RiskState, *, now_ms: int, cfg: RiskConfig) -> EntryGate:
    """May a new (live or primary paper) entry be opened at `now_ms`? Call after `roll`."""
    _check_now(now_ms)
    if state.paused(now_ms):
        return EntryGate(
            allowed=False,
            code=WEEKLY_STOP,
            message="paused after the weekly stop",
            values={
                "pause_until_ms": float(state.pause_until_ms),
                "weekly_stop_hit_ms": float(state.weekly_stop_hit_ms),
                "weekly_stop_pct": cfg.weekly_stop_pct,
            },
        )
    week_pct = state.week_pnl_pct()
    if week_pct is None:
        return EntryGate(
            allowed=False,
            code=WEEKLY_STOP,
            message="week start equity is not positive",
            values={"week_start_equity": state.week_start_equity},
        )
    if week_pct <= cfg.weekly_stop_pct and state.weekly_stop_hit_ms < state.week_start_ms:
        # Below the weekly stop without a pause started this week (e.g. a re-derived state).
        return EntryGate(
            allowed=False,
            code=WEEKLY_STOP,
            message="weekly stop reached",
            values={"week_pnl_pct": week_pct, "weekly_stop_pct": cfg.weekly_stop_pct},
        )
    day_pct = state.day_pnl_pct()
    if day_pct is None or day_pct <= cfg.daily_stop_pct:
        return EntryGate(
            allowed=False,
            code=DAILY_STOP,
            message="daily stop reached: no new entries until the next UTC day",
            values={
                "day_pnl_usd": state.realized_pnl_day,
                "day_start_equity": state.day_start_equity,
                "day_pnl_pct": day_pct if day_pct is not None else "undefined",
                "daily_stop_pct": cfg.daily_stop_pct,
                "resume_ms": float(state.day_start_ms + DAY_MS),
            },
        )
    return EntryGate(allowed=True)


def risk_pct_now(state: RiskState, *, now_ms: int, cfg: RiskConfig) -> float:
    """Risk per trade at `now_ms`: reduced during the reduced-risk window (and the pause), else normal."""
    _check_now(now_ms)
    if now_ms < state.reduced_risk_until_ms:
        return cfg.reduced_risk_after_pause_pct
    return cfg.risk_per_trade_pct


def shadow_only(state: RiskState, *, now_ms: int, mode: Mode) -> bool:
    """True when new entries must go to the shadow paper book: LIVE and paused."""
    return mode == "LIVE" and state.paused(now_ms)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(RiskState)


def encode_risk_state(state: RiskState) -> bytes:
    return _ENCODER.encode(state)


def decode_risk_state(data: bytes | str) -> RiskState:
    """Restore a persisted state; `RiskStateError` naming the field on a malformed record."""
    try:
        return _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise RiskStateError(
            field="risk_state", value=str(exc), expected="a valid RiskState record"
        ) from None
    except msgspec.DecodeError as exc:
        raise RiskStateError(field="risk_state", value=str(exc), expected="valid JSON") from None


class ClosedPnl(msgspec.Struct, frozen=True, kw_only=True):
    """One closed trade's booking: when it closed, its id, its net realized pnl."""

    close_ms: int
    trade_id: str
    pnl_usd: float


def closed_pnl_from_records(records: Iterable[Mapping[str, Any]]) -> list[ClosedPnl]:
    """Bookings of the trade log's records whose entry filled; malformed records are skipped."""
    out: list[ClosedPnl] = []
    for rec in records:
        try:
            if float(rec["entry_order"]["filled_qty"]) <= 0:
                continue
            close = datetime.fromisoformat(str(rec["timestamp_close"]).replace("Z", "+00:00"))
            pnl = float(rec["result"]["pnl_usd"])
            trade_id = str(rec["trade_id"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(pnl):
            out.append(ClosedPnl(close_ms=int(close.timestamp() * 1000), trade_id=trade_id, pnl_usd=pnl))
    return out


def derive_risk_state(
    closed: Iterable[ClosedPnl], *, now_ms: int, equity_usd: float, cfg: RiskConfig
) -> RiskState:
    """Rebuild the calendar from the trade log when no persisted state exists (BOT_SPEC §8, last part).

    Every trade closed since the start of the longest window that can still matter (the week before a
    pause plus the pause and the reduced-risk days) is booked again through `record_realized_pnl`, so
    the daily and weekly stops, a pause and the reduced-risk period come out as they were. The equity at
    the window start is today's equity less the pnl booked since then (unrealized pnl is not known for
    the past and is left out).
    """
    _check_now(now_ms)
    _check_money(equity_usd, "equity_usd")
    lookback_ms = (cfg.pause_days_after_weekly_stop + cfg.reduced_risk_days + 7) * DAY_MS
    start = utc_week_start(max(0, now_ms - lookback_ms))
    rows = sorted(
        (c for c in closed if start <= c.close_ms <= now_ms), key=lambda c: (c.close_ms, c.trade_id)
    )
    equity = equity_usd - sum(c.pnl_usd for c in rows)
    state = new_risk_state(now_ms=start, equity_usd=max(equity, 0.0))
    for c in rows:
        if state.already_booked(c.trade_id):
            continue
        state = record_realized_pnl(
            state, pnl_usd=c.pnl_usd, now_ms=c.close_ms, equity_usd=max(equity, 0.0), cfg=cfg
        ).with_booked(c.trade_id)
        equity += c.pnl_usd
    state = roll(state, now_ms=now_ms, equity_usd=max(equity_usd, 0.0))
    return apply_weekly_stop(state, now_ms=now_ms, cfg=cfg)

"""Fault counters and the safe-mode state machine (BOT_SPEC §12), pure: times are passed in.

This module owns the decision "is the bot in safe mode, and why". Every input carries its time in
seconds of trio time (`trio.current_time()` in the Health actor); nothing here reads a clock.

Policy:
- Counted faults (`TIMESTAMP` -1021, `RATE_LIMIT` 429/418, `SERVER_ERROR` 5xx, `BALANCE_FETCH`) are kept
  per kind within `health.fault_window_seconds`; reaching the kind's threshold enters safe mode.
  `STALE_DATA`, `UNEXPECTED_EXCEPTION` (in strategy or risk code) and `LOG_WRITE` (a full log disk)
  enter safe mode at once.
- A watched stream (symbol, stream) with no data for `health.stale_data_seconds` becomes stale (a
  `STALE_DATA` fault) and stays stale until data arrives for it again (or it is unwatched).
- The health check passes at time t when no stream is stale and no counted kind is at or over its
  threshold within the window ending at t. A counted kind that reached its threshold fails the check
  until its threshold-th most recent fault leaves the window (or a success clears the kind).
- Safe mode ends only when the check has passed continuously for `health.healthy_streak_seconds`: the
  streak starts at the latest of: the last fault of any kind (a fault below its threshold resets the
  streak too), the moment the last over-threshold counter dropped below it, the moment the last stale
  stream received data again.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import TypedDict

import msgspec

from futures_actor.core.config import HealthConfig
from futures_actor.core.types import TradingState

__all__ = [
    "NO_SYMBOLS_WARNING",
    "FaultKind",
    "HealthInputError",
    "HealthMonitor",
    "HealthReport",
    "HealthSnapshot",
    "HealthState",
    "SafeModeTransition",
    "health_report",
    "stream_key",
    "trading_state_with_kill",
]


class FaultKind(enum.StrEnum):
    TIMESTAMP = "TIMESTAMP"  # -1021 / recvWindow
    RATE_LIMIT = "RATE_LIMIT"  # HTTP 429 / 418
    SERVER_ERROR = "SERVER_ERROR"  # HTTP 5xx
    STALE_DATA = "STALE_DATA"  # a market-data stream went quiet
    BALANCE_FETCH = "BALANCE_FETCH"  # equity / balance fetch failed
    UNEXPECTED_EXCEPTION = "UNEXPECTED_EXCEPTION"  # in strategy or risk code
    LOG_WRITE = "LOG_WRITE"  # the log disk refuses writes (full): the bot stops in order


class HealthState(enum.StrEnum):
    STARTING = "STARTING"  # the Health actor has not evaluated anything yet
    HEALTHY = "HEALTHY"
    # Running, but something needs the operator: a position without a full stop (until the watchdog has
    # repaired it), or no symbol monitored at all.
    DEGRADED = "DEGRADED"
    SAFE_MODE = "SAFE_MODE"


NO_SYMBOLS_WARNING = (
    "no symbols monitored: the universe selected none, so nothing is traded and no market data is watched "
    "(check universe.* filters, whitelist and blacklist)"
)


class HealthSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the Health actor knows at `ts`: the safe-mode monitor's findings (`state` HEALTHY or SAFE_MODE,
    `reasons`), the trading state it was told (`trading_state`, before the kill switch is applied), and
    the present account view it read from the metrics (None: not known yet). `health_report` composes the
    operator's view from it."""

    ts: str
    ts_ms: int
    state: str
    trading_state: str
    safe_mode: bool
    reasons: tuple[str, ...]
    data_age_seconds: dict[str, float]
    last_data_age_seconds: float | None
    stale_streams: tuple[str, ...]
    kill_switch: bool = False
    open_positions: int | None = None
    unprotected_positions: int = 0
    symbols_monitored: int | None = None


def trading_state_with_kill(trading_state: str, kill_switch: bool) -> str:
    """While the kill switch is engaged nothing new is opened and the book is being closed: REDUCING
    (a HALTED state stays HALTED)."""
    if kill_switch and trading_state == TradingState.ACTIVE.value:
        return TradingState.REDUCING.value
    return trading_state


class HealthReport(TypedDict):
    """The operator's view (the /health body and heartbeat.json; `/health` adds `equity`)."""

    ts: str
    ts_ms: int
    state: str
    trading_state: str
    safe_mode: bool
    kill_switch: bool
    reasons: list[str]
    warnings: list[str]
    open_positions: int | None
    unprotected_positions: int
    symbols_monitored: int | None
    last_data_age_seconds: float | None
    data_age_seconds: dict[str, float]
    stale_streams: list[str]


def health_report(
    snap: HealthSnapshot,
    *,
    kill_switch: bool | None = None,
    open_positions: int | None = None,
    unprotected_positions: int | None = None,
) -> tuple[bool, HealthReport]:
    """(healthy, the operator's view as a JSON-able dict) of `snap`, with present values where the caller
    has fresher ones than the snapshot (None: the snapshot's).

    Healthy (HTTP 200) only when not in safe mode, not HALTED, the kill switch off and every position
    protected. `state` is SAFE_MODE, else DEGRADED while a position is unprotected or a warning stands
    (zero symbols monitored: a warning, not unhealthy, since a restart would not change it), else HEALTHY."""
    kill = snap.kill_switch if kill_switch is None else kill_switch
    positions = snap.open_positions if open_positions is None else open_positions
    unprotected = snap.unprotected_positions if unprotected_positions is None else unprotected_positions
    trading = trading_state_with_kill(snap.trading_state, kill)
    reasons = list(snap.reasons)
    if unprotected > 0:
        reasons.append(f"unprotected_positions={unprotected}")
    warnings = [NO_SYMBOLS_WARNING] if snap.symbols_monitored == 0 else []
    if snap.safe_mode:
        state = HealthState.SAFE_MODE
    elif unprotected > 0 or warnings:
        state = HealthState.DEGRADED
    else:
        state = HealthState.HEALTHY
    healthy = not snap.safe_mode and trading != TradingState.HALTED.value and not kill and unprotected == 0
    return healthy, {
        "ts": snap.ts,
        "ts_ms": snap.ts_ms,
        "state": state.value,
        "trading_state": trading,
        "safe_mode": snap.safe_mode,
        "kill_switch": kill,
        "reasons": reasons,
        "warnings": warnings,
        "open_positions": positions,
        "unprotected_positions": unprotected,
        "symbols_monitored": snap.symbols_monitored,
        "last_data_age_seconds": snap.last_data_age_seconds,
        "data_age_seconds": dict(snap.data_age_seconds),
        "stale_streams": list(snap.stale_streams),
    }


class HealthInputError(ValueError):
    """A fault or data report was malformed (the field, the value and what was expected are named)."""

    def __init__(self, *, field: str, value: object, expected: str) -> None:
        super().__init__(f"health input {field}={value!r}: expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


class SafeModeTransition(msgspec.Struct, frozen=True, kw_only=True):
    """Safe mode turned on or off at `at` (trio seconds); `reasons` are those that held on entry."""

    on: bool
    reasons: tuple[str, ...]
    at: float


def stream_key(symbol: str, stream: str) -> str:
    return f"{symbol}/{stream}"


def _kind(kind: FaultKind | str) -> FaultKind:
    try:
        return FaultKind(kind)
    except ValueError:
        raise HealthInputError(
            field="kind", value=kind, expected="|".join(k.value for k in FaultKind)
        ) from None


def _check_time(now: float) -> None:
    if not isinstance(now, int | float) or isinstance(now, bool) or not math.isfinite(now):
        raise HealthInputError(field="now", value=now, expected="a finite number of trio seconds")


class HealthMonitor:
    """Fault counters, stream staleness and the safe-mode state machine of the whole bot."""

    def __init__(self, cfg: HealthConfig) -> None:
        self._cfg = cfg
        self._thresholds: dict[FaultKind, int] = {
            FaultKind.TIMESTAMP: cfg.timestamp_error_threshold,
            FaultKind.RATE_LIMIT: cfg.rate_limit_error_threshold,
            FaultKind.SERVER_ERROR: cfg.server_error_threshold,
            FaultKind.BALANCE_FETCH: cfg.balance_failure_threshold,
        }
        self._faults: dict[FaultKind, deque[float]] = {kind: deque() for kind in self._thresholds}
        # Per counted kind: the time until which it fails the check (given no further fault).
        self._failing_until: dict[FaultKind, float] = {}
        self._last_data: dict[str, float] = {}  # stream key -> trio time of the last data
        self._stale: set[str] = set()
        self._streak_start: float | None = None
        self._last_fault_at: float | None = None
        self._last_recovery_at: float | None = None
        self._safe_mode = False
        self._reasons: list[str] = []
        self._unexpected: list[str] = []

    # ------------------------------------------------------------------ state

    @property
    def safe_mode(self) -> bool:
        return self._safe_mode

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why safe mode is on (empty when off): `KIND` or `KIND:detail`, in order of arrival."""
        return tuple(self._reasons)

    def fault_count(self, kind: FaultKind, now: float) -> int:
        """Faults of a counted kind within the window ending at `now`."""
        if kind not in self._faults:
            raise HealthInputError(
                field="kind", value=str(kind), expected="|".join(k.value for k in self._thresholds)
            )
        self._prune(kind, now)
        return len(self._faults[kind])

    def stale_streams(self) -> tuple[str, ...]:
        return tuple(sorted(self._stale))

    def data_ages(self, now: float) -> dict[str, float]:
        """Seconds since the last data per watched stream key (`SYMBOL/stream`)."""
        return {key: max(0.0, now - last) for key, last in sorted(self._last_data.items())}

    def symbol_data_ages(self, now: float) -> dict[str, float]:
        """Per symbol, the age of its stalest watched stream."""
        ages: dict[str, float] = {}
        for key, age in self.data_ages(now).items():
            symbol = key.split("/", 1)[0]
            ages[symbol] = max(age, ages.get(symbol, 0.0))
        return ages

    def healthy_since(self) -> float | None:
        """Start of the current healthy streak, or None while the check fails."""
        return self._streak_start

    # ------------------------------------------------------------------ inputs

    def record_fault(self, kind: FaultKind, now: float, *, detail: str = "") -> SafeModeTransition | None:
        """One fault at `now`. Returns the transition if safe mode turned on."""
        _check_time(now)
        kind = _kind(kind)
        self._streak_start = None
        self._last_fault_at = now if self._last_fault_at is None else max(now, self._last_fault_at)
        reason = f"{kind.value}:{detail}" if detail else kind.value
        if kind is FaultKind.STALE_DATA:
            if detail:
                self._stale.add(detail)
            return self._enter(reason, now)
        if kind in (FaultKind.UNEXPECTED_EXCEPTION, FaultKind.LOG_WRITE):
            return self._enter(reason, now)
        faults = self._faults[kind]
        faults.append(now)
        self._prune(kind, now)
        threshold = self._thresholds[kind]
        if len(faults) >= threshold:
            until = faults[-threshold] + self._cfg.fault_window_seconds
            self._failing_until[kind] = max(self._failing_until.get(kind, until), until)
            return self._enter(kind.value, now)
        return self.evaluate(now)

    def clear_fault(self, kind: FaultKind, now: float, *, detail: str = "") -> SafeModeTransition | None:
        """The condition behind `kind` is over: a stale stream (`detail` = its key) has data again, or a
        counted kind succeeded (its counter is reset). Does not shorten the healthy streak."""
        _check_time(now)
        kind = _kind(kind)
        if kind is FaultKind.STALE_DATA:
            if detail in self._stale:
                self._stale.discard(detail)
                self._last_recovery_at = now
                if detail in self._last_data:
                    self._last_data[detail] = now
        elif kind in self._faults:
            self._faults[kind].clear()
            if kind in self._failing_until:
                self._failing_until[kind] = min(self._failing_until[kind], now)
        return self.evaluate(now)

    def watch(self, symbol: str, stream: str, now: float) -> None:
        """Start expecting data on a stream; it goes stale if none arrives for stale_data_seconds."""
        _check_time(now)
        self._last_data.setdefault(stream_key(symbol, stream), now)

    def unwatch(self, symbol: str, stream: str | None, now: float) -> SafeModeTransition | None:
        """Stop watching one stream, or every stream of `symbol` (universe change)."""
        _check_time(now)
        for key in list(self._last_data):
            sym, _, name = key.partition("/")
            if sym == symbol and (stream is None or name == stream):
                del self._last_data[key]
                self._stale.discard(key)
        return self.evaluate(now)

    def data_received(self, symbol: str, stream: str, now: float) -> SafeModeTransition | None:
        """Data arrived on a stream (watching it if it was not yet)."""
        _check_time(now)
        if not symbol or not stream:
            raise HealthInputError(
                field="symbol/stream", value=(symbol, stream), expected="two non-empty names"
            )
        key = stream_key(symbol, stream)
        previous = self._last_data.get(key)
        if previous is None or now >= previous:
            self._last_data[key] = now
        if key in self._stale:
            self._stale.discard(key)
            self._last_recovery_at = now
            return self.evaluate(now)
        return None

    def evaluate(self, now: float) -> SafeModeTransition | None:
        """Detect stale streams and decide whether safe mode ends. Call it periodically."""
        _check_time(now)
        newly_stale = [
            key
            for key, last in self._last_data.items()
            if key not in self._stale and now - last >= self._cfg.stale_data_seconds
        ]
        transition: SafeModeTransition | None = None
        for key in sorted(newly_stale):
            entered = self.record_fault(FaultKind.STALE_DATA, now, detail=key)
            transition = transition or entered
        if transition is not None:
            return transition
        if self._stale:
            self._streak_start = None
            return None
        if any(until > now for until in self._failing_until.values()):
            self._streak_start = None
            return None
        if self._streak_start is None:
            # The check passes again: the streak starts when the last failing condition ended.
            starts = [until for until in self._failing_until.values() if until <= now]
            starts += [t for t in (self._last_fault_at, self._last_recovery_at) if t is not None]
            self._streak_start = min(now, max(starts)) if starts else now
            self._failing_until.clear()
        if self._safe_mode and now - self._streak_start >= self._cfg.healthy_streak_seconds:
            self._safe_mode = False
            reasons = tuple(self._reasons)
            self._reasons.clear()
            return SafeModeTransition(on=False, reasons=reasons, at=now)
        return None

    # ------------------------------------------------------------------ internals

    def _prune(self, kind: FaultKind, now: float) -> None:
        faults = self._faults[kind]
        while faults and faults[0] <= now - self._cfg.fault_window_seconds:
            faults.popleft()

    def _enter(self, reason: str, now: float) -> SafeModeTransition | None:
        if reason not in self._reasons:
            self._reasons.append(reason)
        if self._safe_mode:
            return None
        self._safe_mode = True
        return SafeModeTransition(on=True, reasons=tuple(self._reasons), at=now)

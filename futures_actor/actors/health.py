"""The Health actor (BOT_SPEC §12): fault reports in, safe mode out, heartbeat file and /health snapshot.

It owns a `core.health.HealthMonitor` and is the only one to touch it. Inbox: `HealthMsg`. Every
`health.heartbeat_interval_seconds` of trio time (and after every message) it evaluates staleness and the
healthy streak; every interval it writes the heartbeat file and refreshes the metrics `safe_mode` and
`data_age_seconds`; at the first beat `health.heartbeat_log_interval_seconds` after the last one it logs
a `heartbeat` line (state, trading state, kill switch, open and unprotected positions, symbols monitored;
level warning while the report is not healthy or carries a warning).

- The present, not a stale copy: the kill switch comes as `KillSwitchChanged` (the `kill_switch` gauge is
  set here), the monitored universe as `SymbolsMonitored` (gauge `symbols_monitored`; zero is logged as
  `no_symbols_monitored` and shown as a warning), open and unprotected positions are read from the metrics
  Execution keeps current (`open_positions`, `unprotected_positions`) whenever the snapshot is refreshed.

- `SafeModeChanged(on, reasons)` goes to every subscriber (send channels given at construction), awaited:
  a full subscriber inbox is back-pressure, never a dropped transition. A subscriber whose channel is
  closed is logged and forgotten.
- The heartbeat file (`health.heartbeat_file` in the state dir) is the JSON of `core.health.health_report`
  {ts, ts_ms, state, trading_state, safe_mode, kill_switch, reasons, warnings, open_positions,
  unprotected_positions, symbols_monitored, data_age_seconds (per symbol, stalest stream),
  last_data_age_seconds, stale_streams}, written to a temp file
  and renamed over the old one, so a reader never sees half a file. The write is a few hundred bytes done
  synchronously (no thread, so it stays deterministic under the mock clock). A failed write is logged,
  never fatal.
- `DataReceived.ts` and `FaultReported.ts` are trio seconds (`trio.current_time()`) at receipt; None means
  "when the Health actor handles it".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import assert_never

import msgspec
import trio

from futures_actor.actors.messages import SafeModeChanged
from futures_actor.actors.metrics import (
    DATA_AGE_SECONDS,
    KILL_SWITCH,
    OPEN_POSITIONS,
    SAFE_MODE,
    SYMBOLS_MONITORED,
    UNPROTECTED_POSITIONS,
    Metrics,
)
from futures_actor.binance import errors as bx
from futures_actor.core.clock import WallClock, iso_utc
from futures_actor.core.config import HealthConfig
from futures_actor.core.health import (
    NO_SYMBOLS_WARNING,
    FaultKind,
    HealthInputError,
    HealthMonitor,
    HealthSnapshot,
    HealthState,
    SafeModeTransition,
    health_report,
)
from futures_actor.core.types import TradingState
from futures_actor.logs import get_logger

__all__ = [
    "CLIENT_COUNTED_FAULTS",
    "HEALTH_INBOX_SIZE",
    "DataReceived",
    "FaultCleared",
    "FaultReported",
    "HealthActor",
    "HealthMsg",
    "HealthSnapshot",
    "KillSwitchChanged",
    "SymbolsMonitored",
    "Tick",
    "TradingStateChanged",
    "UnwatchSymbol",
    "WatchStream",
    "exchange_fault_kind",
    "write_json_atomic",
]

HEALTH_INBOX_SIZE = 256

# The fault kinds that are exchange error responses (BOT_SPEC §12: "thresholds count exchange errors,
# not failed operations"): where the REST client reports each response, actors do not report them again.
CLIENT_COUNTED_FAULTS = frozenset({FaultKind.TIMESTAMP, FaultKind.RATE_LIMIT, FaultKind.SERVER_ERROR})


def exchange_fault_kind(exc: BaseException) -> FaultKind | None:
    """The counted fault kind of one exchange error (None: a definite answer, not a health fault)."""
    if isinstance(exc, bx.RateLimited | bx.IpBanned):
        return FaultKind.RATE_LIMIT
    if isinstance(exc, bx.TimestampOutOfWindow):
        return FaultKind.TIMESTAMP
    if isinstance(exc, bx.ServerError | bx.UnknownOrderStatus | bx.TransportError):
        return FaultKind.SERVER_ERROR
    return None


class _Msg(msgspec.Struct, frozen=True, kw_only=True):
    pass


class FaultReported(_Msg, frozen=True):
    kind: FaultKind
    detail: str = ""
    ts: float | None = None


class FaultCleared(_Msg, frozen=True):
    """The condition is over: a counted kind succeeded again, or (STALE_DATA) stream `detail` resumed."""

    kind: FaultKind
    detail: str = ""


class DataReceived(_Msg, frozen=True):
    symbol: str
    stream: str
    ts: float | None = None


class WatchStream(_Msg, frozen=True):
    """Expect data on this stream from now on (it goes stale if none comes)."""

    symbol: str
    stream: str


class UnwatchSymbol(_Msg, frozen=True):
    """Stop watching one stream of a symbol, or all of them (`stream=None`)."""

    symbol: str
    stream: str | None = None


class TradingStateChanged(_Msg, frozen=True):
    state: TradingState


class KillSwitchChanged(_Msg, frozen=True):
    """The operator's kill switch was engaged (`on`) or released."""

    on: bool
    reason: str = ""


class SymbolsMonitored(_Msg, frozen=True):
    """The symbols the system monitors now (start-up and every universe refresh)."""

    symbols: tuple[str, ...]


class Tick(_Msg, frozen=True):
    """Evaluate now and write the heartbeat (the actor also does this on its own timer)."""


HealthMsg = (
    FaultReported
    | FaultCleared
    | DataReceived
    | WatchStream
    | UnwatchSymbol
    | TradingStateChanged
    | KillSwitchChanged
    | SymbolsMonitored
    | Tick
)


def write_json_atomic(path: Path, payload: object, *, fsync: bool = False) -> None:
    """Write JSON to `path.tmp` then rename it over `path` (readers never see a partial file)."""
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(payload, sort_keys=True, indent=None).encode()
    with open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


class HealthActor:
    """Fault counters and safe mode for the whole bot; heartbeat; the /health snapshot."""

    def __init__(
        self,
        *,
        cfg: HealthConfig,
        state_dir: Path,
        wall_clock: WallClock,
        subscribers: Sequence[trio.MemorySendChannel[SafeModeChanged]] = (),
        metrics: Metrics | None = None,
        on_safe_mode: Callable[[bool], None] | None = None,
    ) -> None:
        self._cfg = cfg
        self._on_safe_mode = on_safe_mode
        self._monitor = HealthMonitor(cfg)
        self._heartbeat_path = Path(state_dir) / cfg.heartbeat_file
        self._wall = wall_clock
        self._subscribers = list(subscribers)
        self._metrics = metrics
        self._trading_state = TradingState.ACTIVE
        self._kill_switch = False
        self._symbols_monitored: int | None = None
        self._next_log: float | None = None
        self._snapshot: HealthSnapshot | None = None
        self._log = get_logger("health")

    def snapshot(self) -> HealthSnapshot | None:
        """The latest snapshot (None until the actor has started)."""
        return self._snapshot

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[HealthMsg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        interval = self._cfg.heartbeat_interval_seconds
        now = trio.current_time()
        await self._beat(now)
        task_status.started()
        next_beat = now + interval
        while True:
            msg: HealthMsg | None = None
            with trio.move_on_at(next_beat):
                try:
                    msg = await inbox.receive()
                except trio.EndOfChannel:
                    self._log.info("health_inbox_closed")
                    return
            now = trio.current_time()
            if msg is not None:
                try:
                    transition = self._handle(msg, now)
                except HealthInputError as exc:
                    self._log.error("health_input_refused", error=str(exc), field=exc.field)
                    transition = None
                await self._publish(transition)
                if isinstance(msg, Tick):
                    await self._beat(now)
            if now >= next_beat:
                await self._beat(now)
                while next_beat <= now:
                    next_beat += interval
            else:
                self._refresh_snapshot(now)

    def _handle(self, msg: HealthMsg, now: float) -> SafeModeTransition | None:
        monitor = self._monitor
        match msg:
            case FaultReported(kind=kind, detail=detail, ts=ts):
                self._log.warning("fault_reported", kind=str(kind), detail=detail)
                return monitor.record_fault(kind, ts if ts is not None else now, detail=detail)
            case FaultCleared(kind=kind, detail=detail):
                return monitor.clear_fault(kind, now, detail=detail)
            case DataReceived(symbol=symbol, stream=stream, ts=ts):
                return monitor.data_received(symbol, stream, ts if ts is not None else now)
            case WatchStream(symbol=symbol, stream=stream):
                monitor.watch(symbol, stream, now)
                return None
            case UnwatchSymbol(symbol=symbol, stream=stream):
                if self._metrics is not None and stream is None:
                    self._metrics.remove(DATA_AGE_SECONDS, symbol=symbol)
                return monitor.unwatch(symbol, stream, now)
            case TradingStateChanged(state=state):
                self._log.info("trading_state_changed", state=state.value)
                self._trading_state = state
                return None
            case KillSwitchChanged(on=on, reason=reason):
                self._log.warning("health_kill_switch", on=on, reason=reason)
                self._kill_switch = on
                if self._metrics is not None:
                    self._metrics.set(KILL_SWITCH, 1 if on else 0)
                return None
            case SymbolsMonitored(symbols=symbols):
                if not symbols and self._symbols_monitored != 0:
                    self._log.warning("no_symbols_monitored", message=NO_SYMBOLS_WARNING)
                self._symbols_monitored = len(symbols)
                if self._metrics is not None:
                    self._metrics.set(SYMBOLS_MONITORED, len(symbols))
                return None
            case Tick():
                return monitor.evaluate(now)
            case _:
                assert_never(msg)

    async def _publish(self, transition: SafeModeTransition | None) -> None:
        if transition is None:
            return
        if transition.on:
            self._log.error("safe_mode_entered", reasons=list(transition.reasons))
        else:
            self._log.warning("safe_mode_exited", reasons_were=list(transition.reasons))
        if self._metrics is not None:
            self._metrics.set(SAFE_MODE, 1 if transition.on else 0)
        if self._on_safe_mode is not None:
            self._on_safe_mode(transition.on)
        message = SafeModeChanged(on=transition.on, reasons=transition.reasons)
        for channel in list(self._subscribers):
            try:
                await channel.send(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._log.error("safe_mode_subscriber_gone")
                self._subscribers.remove(channel)

    def _gauge(self, name: str) -> int | None:
        value = self._metrics.get(name) if self._metrics is not None else None
        return None if value is None else int(value)

    def _refresh_snapshot(self, now: float) -> HealthSnapshot:
        monitor = self._monitor
        ages = monitor.symbol_data_ages(now)
        ts_ms = self._wall.now_ms()
        snap = HealthSnapshot(
            ts=iso_utc(ts_ms),
            ts_ms=ts_ms,
            state=(HealthState.SAFE_MODE if monitor.safe_mode else HealthState.HEALTHY).value,
            trading_state=self._trading_state.value,
            safe_mode=monitor.safe_mode,
            reasons=monitor.reasons,
            data_age_seconds=ages,
            last_data_age_seconds=max(ages.values()) if ages else None,
            stale_streams=monitor.stale_streams(),
            kill_switch=self._kill_switch,
            open_positions=self._gauge(OPEN_POSITIONS),
            unprotected_positions=self._gauge(UNPROTECTED_POSITIONS) or 0,
            symbols_monitored=self._symbols_monitored,
        )
        self._snapshot = snap
        return snap

    async def _beat(self, now: float) -> None:
        await self._publish(self._monitor.evaluate(now))
        snap = self._refresh_snapshot(now)
        if self._metrics is not None:
            self._metrics.set(SAFE_MODE, 1 if snap.safe_mode else 0)
            self._metrics.set(KILL_SWITCH, 1 if snap.kill_switch else 0)
            for symbol, age in snap.data_age_seconds.items():
                self._metrics.set(DATA_AGE_SECONDS, age, symbol=symbol)
        healthy, report = health_report(snap)
        if self._next_log is None or now >= self._next_log:
            self._next_log = now + self._cfg.heartbeat_log_interval_seconds
            log = self._log.info if healthy and not report["warnings"] else self._log.warning
            log(
                "heartbeat",
                state=report["state"],
                trading_state=report["trading_state"],
                safe_mode=snap.safe_mode,
                kill_switch=snap.kill_switch,
                open_positions=snap.open_positions,
                unprotected_positions=snap.unprotected_positions,
                symbols_monitored=snap.symbols_monitored,
                stale_streams=len(snap.stale_streams),
                last_data_age_seconds=snap.last_data_age_seconds,
                reasons=report["reasons"],
            )
        try:
            write_json_atomic(self._heartbeat_path, report)
        except OSError as exc:
            self._log.error("heartbeat_write_failed", path=str(self._heartbeat_path), error=str(exc))

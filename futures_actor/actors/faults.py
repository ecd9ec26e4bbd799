"""The synchronous callbacks every actor reports through: faults and data freshness to Health, alerts to
the Reporter (BOT_SPEC §11, §12).

They never block and never raise: a full inbox drops the message with a log line (a fault that persists
is reported again; safe mode follows from the counts). An unexpected exception is also an error alert for
the operator. When the REST client reports every exchange error response itself
(`report_exchange_error`), the counted kinds an actor reports after its retries gave up are not counted a
second time.
"""

from __future__ import annotations

from typing import Literal

import trio

from futures_actor.actors.health import (
    CLIENT_COUNTED_FAULTS,
    DataReceived,
    FaultReported,
    HealthMsg,
    exchange_fault_kind,
)
from futures_actor.actors.reporter import Alert, ReporterMsg
from futures_actor.core.health import FaultKind
from futures_actor.logs import get_logger

__all__ = ["FaultReporter"]

log = get_logger("app")

# Lifecycle alert codes (core/lifecycle.py) that are errors for the operator; the rest are warnings.
_ERROR_ALERT_CODES = frozenset(
    {
        "PROTECTION_FAILED",
        "STOP_REJECTED",
        "STOP_GONE",
        "NOT_FLAT",
        "CLOSE_REJECTED",
        "OVERFILL",
        "ENTRY_REJECTED",
    }
)


class FaultReporter:
    """Faults, freshness facts and alerts of one system (see the module docstring)."""

    def __init__(
        self,
        *,
        health: trio.MemorySendChannel[HealthMsg],
        reporter: trio.MemorySendChannel[ReporterMsg],
        client_counts_errors: bool,
    ) -> None:
        self._health = health
        self._reporter = reporter
        self._client_counts_errors = client_counts_errors

    def report_fault(self, kind: str, symbol: str | None = None, detail: str = "") -> None:
        """Synchronous fault callback for every actor; never blocks, never raises."""
        try:
            fault = FaultKind(kind)
        except ValueError:
            fault = FaultKind.UNEXPECTED_EXCEPTION
        if self._client_counts_errors and fault in CLIENT_COUNTED_FAULTS:
            return  # already counted once per error response by `report_exchange_error`
        self._send_fault(fault, symbol, detail)

    def report_exchange_error(self, exc: BaseException) -> None:
        """The REST client's hook: every exchange error response counts (BOT_SPEC §12), retried or not."""
        fault = exchange_fault_kind(exc)
        if fault is not None:
            self._send_fault(fault, None, f"{type(exc).__name__}: {exc}")

    def _send_fault(self, fault: FaultKind, symbol: str | None, detail: str) -> None:
        kind = fault.value
        try:
            self._health.send_nowait(
                FaultReported(kind=fault, detail=f"{symbol or ''} {detail}".strip(), ts=None)
            )
        except trio.WouldBlock:
            log.error("health_inbox_full", kind=kind, symbol=symbol)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if fault is FaultKind.UNEXPECTED_EXCEPTION:
            # An error the operator must hear of (others show up as safe mode when they persist).
            text = f"Error: {f'{symbol} ' if symbol else ''}{detail}".strip()
            self.offer_report(Alert(kind="ERROR", text=text, level="error", symbol=symbol))

    def execution_alert(self, code: str, symbol: str, message: str) -> None:
        """A trade lifecycle alert (protection, rejection, closing): to the Reporter (log, Telegram)."""
        level: Literal["warning", "error"] = "error" if code in _ERROR_ALERT_CODES else "warning"
        self.offer_report(Alert(kind=code, text=message, level=level, symbol=symbol or None))

    def offer_report(self, msg: ReporterMsg) -> None:
        """Never blocks the caller: a full reporter inbox drops the alert with a log."""
        try:
            self._reporter.send_nowait(msg)
        except trio.WouldBlock:
            log.error("reporter_inbox_full", message=type(msg).__name__)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def report_data(self, symbol: str, stream: str, ts: float) -> None:
        """Freshness fact for the health actor (a stream delivered data)."""
        try:
            self._health.send_nowait(DataReceived(symbol=symbol, stream=stream, ts=ts))
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

"""The trade record schema (`spec/seed-data/LOG_SCHEMA.json`) as code, and its validator.

`TRADE_RECORD_SCHEMA` is the seed schema verbatim (a test asserts it equals the seed file). Its leaves
are type names: `UUID`, `ISO8601` (UTC, e.g. `2026-11-24T10:15:00.000Z`), `string`, `number` (a finite
JSON number, not a boolean), or an enumeration `A|B|C`. Every field is required and no other field is
allowed: the trade log matches the schema field for field (BOT_SPEC §11).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final, TypeGuard

import msgspec

from futures_actor.core.lifecycle import ADOPTED_STRATEGY

__all__ = ["TRADE_RECORD_SCHEMA", "SchemaViolation", "validate_trade_record"]

TRADE_RECORD_SCHEMA: Final[dict[str, Any]] = {
    "trade_id": "UUID",
    "timestamp_open": "ISO8601",
    "timestamp_close": "ISO8601",
    "mode": "PAPER_LIVE|LIVE",
    "symbol": "string",
    "strategy": "string",
    "regime": "TREND|RANGE|HIGH_VOL|CHOP_NO_TRADE",
    "direction": "LONG|SHORT",
    "confidence_score": "number",
    "entry_order": {
        "client_order_id": "string",
        "type": "LIMIT|MARKET",
        "requested_price": "number",
        "filled_avg_price": "number",
        "filled_qty": "number",
        "status": "NEW|PARTIALLY_FILLED|FILLED|CANCELED",
    },
    "risk": {
        "equity_usd": "number",
        "risk_pct": "number",
        "risk_usd": "number",
        "stop_pct": "number",
        "stop_price": "number",
        "take_profit_price": "number",
        "leverage": "number",
        "notional_usd": "number",
        "margin_used_usd": "number",
    },
    "costs": {
        "fees_usd": "number",
        "funding_usd": "number",
        "slippage_pct": "number",
    },
    "result": {
        "exit_price": "number",
        "pnl_usd": "number",
        "pnl_r_multiple": "number",
        "reason": "TP|SL|TRAIL|KILL_SWITCH|MANUAL|TIMEOUT",
    },
    "portfolio": {
        "open_positions_count": "number",
        "open_risk_pct": "number",
        "correlation_bucket": "string",
        "bucket_corr_max": "number",
    },
}

_ISO8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")

# The value of a required field that is absent.
_MISSING: Final = object()


class SchemaViolation(msgspec.Struct, frozen=True, kw_only=True):
    """One field of a trade record that does not match the schema."""

    field: str
    value: Any
    expected: str

    def describe(self) -> str:
        shown = "<missing>" if self.value is _MISSING else repr(self.value)
        return f"trade record field {self.field}: value {shown}; expected {self.expected}"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_iso8601_utc(value: Any) -> bool:
    if not isinstance(value, str) or not _ISO8601.match(value):
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.utcoffset() == timedelta(0)


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _check_leaf(path: str, value: Any, spec: str) -> SchemaViolation | None:
    if spec == "number":
        ok, expected = _is_number(value), "a finite JSON number"
    elif spec == "string":
        ok, expected = isinstance(value, str), "a string"
    elif spec == "UUID":
        ok, expected = _is_uuid(value), "a UUID string like 123e4567-e89b-12d3-a456-426614174000"
    elif spec == "ISO8601":
        ok, expected = _is_iso8601_utc(value), "an ISO 8601 UTC timestamp like 2026-11-24T10:15:00.000Z"
    else:
        allowed = spec.split("|")
        ok, expected = isinstance(value, str) and value in allowed, f"one of {', '.join(allowed)}"
    return None if ok else SchemaViolation(field=path, value=value, expected=expected)


def _check(path: str, record: Any, schema: Mapping[str, Any], out: list[SchemaViolation]) -> None:
    if not isinstance(record, Mapping):
        out.append(SchemaViolation(field=path or "(record)", value=record, expected="a JSON object"))
        return
    for key, spec in schema.items():
        field = f"{path}.{key}" if path else key
        if key not in record:
            out.append(SchemaViolation(field=field, value=_MISSING, expected="a value (field is required)"))
        elif isinstance(spec, dict):
            _check(field, record[key], spec, out)
        else:
            violation = _check_leaf(field, record[key], spec)
            if violation is not None:
                out.append(violation)
    for key in record:
        if key not in schema:
            field = f"{path}.{key}" if path else str(key)
            out.append(SchemaViolation(field=field, value=record[key], expected="no such field (unknown)"))


def _semantic_violations(record: Mapping[str, Any]) -> list[SchemaViolation]:
    """Rules beyond the field types that the performance layer relies on (one schema, issue 10 #11):
    a filled quantity is ≥ 0, and a filled trade of a strategy (not an adopted position) names the
    equity > 0 its R and drawdown are measured against."""
    out: list[SchemaViolation] = []
    entry, risk = record.get("entry_order"), record.get("risk")
    filled = entry.get("filled_qty") if isinstance(entry, Mapping) else None
    if not _is_number(filled):
        return out
    if filled < 0:
        out.append(SchemaViolation(field="entry_order.filled_qty", value=filled, expected="a quantity >= 0"))
        return out
    equity = risk.get("equity_usd") if isinstance(risk, Mapping) else None
    if filled > 0 and record.get("strategy") != ADOPTED_STRATEGY and _is_number(equity) and equity <= 0:
        out.append(SchemaViolation(field="risk.equity_usd", value=equity, expected="a number > 0"))
    return out


def validate_trade_record(record: Any) -> list[SchemaViolation]:
    """Every way `record` differs from the schema; an empty list means valid.

    A valid record is one `core.performance.closed_trade_from_record` accepts (or deliberately skips:
    an unfilled entry, an adopted position)."""
    out: list[SchemaViolation] = []
    _check("", record, TRADE_RECORD_SCHEMA, out)
    if isinstance(record, Mapping):
        out += _semantic_violations(record)
    return out

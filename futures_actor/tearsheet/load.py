"""Read a run's log directory for the report: trades, equity curve, events, daily reports, summary.

Works on a replay's run directory (one `trades.jsonl`, one `events.jsonl`, `equity.csv`) and on a live
log directory (daily `trades-YYYY-MM-DD[.N].jsonl` and `events-…` files, no equity.csv). Nothing here
raises on bad input: every unreadable file or line becomes a `problems` entry naming the file (and line),
and the report is drawn from what could be read.

Equity curve: equity.csv when present and readable; otherwise rebuilt from the trades: the starting
equity is `summary.json`'s start equity, else the first trade's `risk.equity_usd` at entry; then one
point at each trade close adding its net PnL (so open-position swings between closes are not seen).

Periods without trading: the gaps of at least `idle_min_ms` in the run's span during which no trade was
open (the union of the trades' [open, close] intervals), each with the reasons found in events.jsonl in
that gap: risk rejections by code (DAILY_STOP, WEEKLY_STOP, SAFE_MODE, KILL_SWITCH, ...), "no eligible
strategy" selections with their explanation, safe-mode, kill-switch and weekly-stop events, and the entry
signals the symbol actors logged (by regime); a gap without any signal says so.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from futures_actor.core.summary import REPLAY_MODE, is_filled
from futures_actor.logs import stream_files
from futures_actor.tearsheet.equity import EQUITY_CSV, EquityCsvError, read_equity_csv
from futures_actor.tearsheet.metrics import parse_iso_ms

__all__ = ["SUMMARY_JSON", "Block", "IdlePeriod", "RunData", "load_run"]

SUMMARY_JSON = "summary.json"
_DAILY_REPORT_GLOB = "daily-report-*.json"
# Events read for the "why" of periods without trading; other lines are skipped before JSON parsing.
_WANTED_EVENTS = (
    "risk_rejected",
    "selection_no_trade",
    "risk_safe_mode",
    "risk_kill_switch",
    "weekly_stop_hit",
    "decision",
    "replay_starting",
    "replay_done",
    "system_started",
)
_MAX_REASONS = 5
# Symbol actors log a `decision` event (INFO) only for a candle with an entry signal.
_SIGNAL_PREFIX = "entry signal, "
NO_SIGNAL = "no entry signal from any strategy"


class IdlePeriod(msgspec.Struct, frozen=True, kw_only=True):
    start_ms: int
    end_ms: int
    reasons: list[tuple[str, int]]


class Block(msgspec.Struct, frozen=True, kw_only=True):
    """A state that blocks entries: safe mode, kill switch, weekly-stop pause, a day's daily stop."""

    kind: str
    start_ms: int
    end_ms: int | None
    detail: str


class RunData(msgspec.Struct, kw_only=True):
    log_dir: str
    records: list[dict[str, Any]]
    equity: list[tuple[int, float]]
    equity_rows: list[Any]
    equity_source: str
    span: tuple[int, int] | None
    idle_periods: list[IdlePeriod]
    blocks: list[Block]
    rejections: dict[str, int]
    ineligible: dict[str, int]
    daily_reports: list[str]
    summary: dict[str, Any] | None
    # The run's mode: REPLAY for a replay (summary.json or the events say so), else PAPER_LIVE / LIVE
    # from the events or, failing those, the trade records; "" when nothing tells.
    run_mode: str = ""
    problems: list[str]
    trade_files: list[str]
    event_files: list[str]


def _read_jsonl(path: Path, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    problems.append(f"{path} line {number}: not a JSON object (skipped)")
                    continue
                if isinstance(value, dict):
                    yield number, value
                else:
                    problems.append(f"{path} line {number}: not a JSON object (skipped)")
    except OSError as exc:
        problems.append(f"{path}: cannot be read: {exc.strerror or exc}")


def _read_trades(files: list[Path], problems: list[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in files:
        for number, rec in _read_jsonl(path, problems):
            trade_id = rec.get("trade_id")
            if not isinstance(trade_id, str):
                problems.append(f"{path} line {number}: trade record without a trade_id (skipped)")
                continue
            if trade_id in seen:
                problems.append(f"{path} line {number}: trade_id {trade_id} already read (skipped)")
                continue
            if is_filled(rec) and (
                parse_iso_ms(rec.get("timestamp_open")) is None
                or parse_iso_ms(rec.get("timestamp_close")) is None
            ):
                problems.append(
                    f"{path} line {number}: trade {trade_id} has no valid open/close time (skipped)"
                )
                continue
            seen.add(trade_id)
            records.append(rec)
    records.sort(key=lambda r: (str(r.get("timestamp_close", "")), str(r.get("trade_id", ""))))
    return records


def _read_summary(log_dir: Path, problems: list[str]) -> dict[str, Any] | None:
    path = log_dir / SUMMARY_JSON
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: cannot be read as JSON ({exc}); ignored")
        return None
    if not isinstance(value, dict):
        problems.append(f"{path}: not a JSON object; ignored")
        return None
    return value


def _num(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _equity_from_trades(
    records: list[dict[str, Any]], summary: dict[str, Any] | None
) -> tuple[list[tuple[int, float]], str]:
    trades = [r for r in records if is_filled(r)]
    start = _num((summary or {}).get("start_equity_usd"))
    source = "summary.json start equity"
    if start is None and trades:
        risk = trades[0].get("risk")
        start = _num(risk.get("equity_usd")) if isinstance(risk, dict) else None
        source = "the first trade's equity at entry"
    if start is None or start <= 0 or not trades:
        return [], "none (no equity.csv and no trade to rebuild it from)"
    first_open = parse_iso_ms(trades[0].get("timestamp_open"))
    points = [(first_open if first_open is not None else 0, start)]
    equity = start
    for t in trades:
        result = t.get("result")
        pnl = _num(result.get("pnl_usd")) if isinstance(result, dict) else None
        close = parse_iso_ms(t.get("timestamp_close"))
        if pnl is None or close is None:
            continue
        equity += pnl
        points.append((max(close, points[-1][0]), equity))
    points = [(t, e) for t, e in points if e > 0]
    return points, f"rebuilt from closed trades (starting at {source}); no equity.csv"


class _EventScan(msgspec.Struct, kw_only=True):
    times: list[int]
    labels: list[str]
    blocks: list[Block]
    rejections: Counter[str]
    ineligible: Counter[str]
    first_ms: int | None = None
    last_ms: int | None = None
    # The run's mode from its events: REPLAY when `replay_starting` was logged, else `system_started`'s.
    modes: set[str] = msgspec.field(default_factory=set)


def _scan_events(files: list[Path], problems: list[str]) -> _EventScan:
    scan = _EventScan(times=[], labels=[], blocks=[], rejections=Counter(), ineligible=Counter())
    needles = tuple(f'"event":"{name}"' for name in _WANTED_EVENTS)
    open_blocks: dict[str, tuple[int, str]] = {}
    daily_stop_days: dict[str, tuple[int, int]] = {}
    for path in files:
        try:
            fh = path.open(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems.append(f"{path}: cannot be read: {exc.strerror or exc}")
            continue
        with fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                t_text = line[14:38] if line.startswith('{"timestamp":"') else None
                t_quick = parse_iso_ms(t_text.rstrip('"')) if t_text else None
                if t_quick is not None:
                    scan.first_ms = t_quick if scan.first_ms is None else min(scan.first_ms, t_quick)
                    scan.last_ms = t_quick if scan.last_ms is None else max(scan.last_ms, t_quick)
                if not any(n in line for n in needles):
                    continue
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    problems.append(f"{path} line {number}: not JSON (skipped)")
                    continue
                if not isinstance(ev, dict):
                    continue
                t = parse_iso_ms(ev.get("timestamp"))
                if t is None:
                    continue
                label = _label(ev, t, scan, open_blocks, daily_stop_days)
                if label is not None:
                    scan.times.append(t)
                    scan.labels.append(label)
    end = scan.last_ms
    for kind, (start, detail) in open_blocks.items():
        scan.blocks.append(
            Block(kind=kind, start_ms=start, end_ms=None if end is None else end, detail=detail)
        )
    for day, (first, last) in sorted(daily_stop_days.items()):
        scan.blocks.append(
            Block(
                kind="daily stop",
                start_ms=first,
                end_ms=last,
                detail=f"entries refused on {day} (DAILY_STOP)",
            )
        )
    order = sorted(range(len(scan.times)), key=lambda i: scan.times[i])
    scan.times = [scan.times[i] for i in order]
    scan.labels = [scan.labels[i] for i in order]
    scan.blocks.sort(key=lambda b: b.start_ms)
    return scan


def _label(
    ev: dict[str, Any],
    t: int,
    scan: _EventScan,
    open_blocks: dict[str, tuple[int, str]],
    daily_stop_days: dict[str, tuple[int, int]],
) -> str | None:
    name = ev.get("event")
    match name:
        case "replay_starting":
            scan.modes.add(REPLAY_MODE)
            return None
        case "system_started" if isinstance(ev.get("mode"), str):
            scan.modes.add(str(ev["mode"]))
            return None
        case "risk_rejected":
            code = str(ev.get("code", "?"))
            scan.rejections[code] += 1
            if code == "DAILY_STOP":
                day = str(ev.get("timestamp", ""))[:10]
                first, _ = daily_stop_days.get(day, (t, t))
                daily_stop_days[day] = (first, t)
            return f"entry refused by risk: {code}"
        case "selection_no_trade":
            explanation = str(ev.get("explanation") or ev.get("code") or "?")
            scan.ineligible[explanation] += 1
            return f"selection: {explanation}"
        case "risk_safe_mode" | "risk_kill_switch":
            kind = "safe mode" if name == "risk_safe_mode" else "kill switch"
            on = bool(ev.get("on"))
            detail = str(ev.get("reasons") or ev.get("reason") or "")
            if on and kind not in open_blocks:
                open_blocks[kind] = (t, detail)
            elif not on and kind in open_blocks:
                start, start_detail = open_blocks.pop(kind)
                scan.blocks.append(Block(kind=kind, start_ms=start, end_ms=t, detail=start_detail))
            return f"{kind} {'on' if on else 'off'}"
        case "weekly_stop_hit":
            until = ev.get("pause_until_ms")
            end = int(until) if isinstance(until, int | float) and not isinstance(until, bool) else None
            pct = _num(ev.get("week_pnl_pct"))
            detail = f"week PnL {pct:.2%}; entries paused" if pct is not None else "entries paused"
            scan.blocks.append(Block(kind="weekly stop", start_ms=t, end_ms=end, detail=detail))
            return "weekly stop hit"
        case "decision":
            return f"{_SIGNAL_PREFIX}{ev.get('regime', '?')} regime"
        case _:
            return None


def _idle_periods(
    records: list[dict[str, Any]], span: tuple[int, int], scan: _EventScan, idle_min_ms: int
) -> list[IdlePeriod]:
    intervals = []
    for r in records:
        if not is_filled(r):
            continue
        a, b = parse_iso_ms(r.get("timestamp_open")), parse_iso_ms(r.get("timestamp_close"))
        if a is not None and b is not None:
            intervals.append((a, b))
    intervals.sort()
    gaps: list[tuple[int, int]] = []
    cursor = span[0]
    for a, b in intervals:
        if a - cursor >= idle_min_ms:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
    if span[1] - cursor >= idle_min_ms:
        gaps.append((cursor, span[1]))
    out = []
    for start, end in gaps:
        lo = bisect.bisect_left(scan.times, start)
        hi = bisect.bisect_right(scan.times, end)
        counts = Counter(scan.labels[lo:hi])
        blocking = [(k, v) for k, v in counts.most_common() if not k.startswith(_SIGNAL_PREFIX)]
        signals = [(k, v) for k, v in counts.most_common() if k.startswith(_SIGNAL_PREFIX)]
        reasons = blocking[:_MAX_REASONS] + signals[: max(1, _MAX_REASONS - len(blocking))]
        if not signals:
            reasons.append((NO_SIGNAL, 0))
        out.append(IdlePeriod(start_ms=start, end_ms=end, reasons=reasons))
    return out


def _run_mode(summary: dict[str, Any] | None, scan: _EventScan, records: list[dict[str, Any]]) -> str:
    said = (summary or {}).get("mode")
    if said == REPLAY_MODE or REPLAY_MODE in scan.modes:
        return REPLAY_MODE
    modes = scan.modes or {str(r["mode"]) for r in records if isinstance(r.get("mode"), str)}
    return ", ".join(sorted(modes))


def load_run(log_dir: Path, *, trade_log_file: str, event_log_file: str, idle_min_ms: int) -> RunData:
    """Everything the report shows, from `log_dir`; see the module docstring. Never raises on bad data."""
    problems: list[str] = []
    trade_files = stream_files(log_dir, trade_log_file)
    if not trade_files:
        problems.append(
            f"{log_dir / trade_log_file}: no trades file (no trade in this run, or not a log directory)"
        )
    records = _read_trades(trade_files, problems)
    summary = _read_summary(log_dir, problems)
    equity_rows: list[Any] = []
    equity_path = log_dir / EQUITY_CSV
    source = ""
    if equity_path.exists():
        try:
            equity_rows = read_equity_csv(equity_path)
            source = str(EQUITY_CSV)
        except EquityCsvError as exc:
            problems.append(f"{exc}; the equity curve is rebuilt from the trades instead")
    if equity_rows:
        equity = [(r.time_ms, r.equity_usd) for r in equity_rows]
    else:
        equity, source = _equity_from_trades(records, summary)
    event_files = stream_files(log_dir, event_log_file)
    scan = _scan_events(event_files, problems)
    times = [t for t, _ in equity]
    for r in records:
        for key in ("timestamp_open", "timestamp_close"):
            t = parse_iso_ms(r.get(key))
            if t is not None:
                times.append(t)
    if scan.first_ms is not None and scan.last_ms is not None:
        times.extend((scan.first_ms, scan.last_ms))
    span = (min(times), max(times)) if times else None
    idle = _idle_periods(records, span, scan, idle_min_ms) if span is not None else []
    daily = sorted(p.name for p in log_dir.glob(_DAILY_REPORT_GLOB) if p.is_file())
    return RunData(
        run_mode=_run_mode(summary, scan, records),
        log_dir=str(log_dir),
        records=records,
        equity=equity,
        equity_rows=equity_rows,
        equity_source=source,
        span=span,
        idle_periods=idle,
        blocks=scan.blocks,
        rejections=dict(scan.rejections.most_common()),
        ineligible=dict(scan.ineligible.most_common()),
        daily_reports=daily,
        summary=summary,
        problems=problems,
        trade_files=[p.name for p in trade_files],
        event_files=[p.name for p in event_files],
    )

"""The run report: `report.html` (one self-contained page), `equity.csv` and `summary.json`.

`write_report(log_dir)` reads whatever the log directory holds (a replay's run directory or a live
log directory, see `tearsheet.load`), computes the metrics (`tearsheet.metrics`, each defined there)
and writes the page atomically (temp file, rename). `futures-actor report LOG_DIR` calls it; a replay
calls it at its end. Bad or missing files never make it fail: they are listed in `ReportResult.problems`
and at the top of the page.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from futures_actor.core.config import BotConfig
from futures_actor.core.summary import RunSummary, summarize_trades, summary_to_dict
from futures_actor.tearsheet.html import render_html
from futures_actor.tearsheet.load import SUMMARY_JSON, RunData, load_run
from futures_actor.tearsheet.metrics import Metrics, compute_metrics

__all__ = ["REPORT_HTML", "ReportResult", "build_report", "write_report", "write_summary_json"]

REPORT_HTML = "report.html"
_MS_PER_HOUR = 3_600_000


class ReportResult(msgspec.Struct, frozen=True, kw_only=True):
    path: Path
    size_bytes: int
    trades: int
    problems: list[str]
    metrics: Metrics
    summary: RunSummary


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("futures-actor")
    except Exception:
        return "unknown"


def build_report(log_dir: Path, *, cfg: BotConfig | None = None) -> tuple[RunData, Metrics, RunSummary]:
    """Read `log_dir` and compute everything the page shows."""
    cfg = cfg or BotConfig()
    data = load_run(
        log_dir,
        trade_log_file=cfg.logging.trade_log_file,
        event_log_file=cfg.logging.event_log_file,
        idle_min_ms=round(cfg.report.idle_period_min_hours * _MS_PER_HOUR),
    )
    metrics = compute_metrics(data.equity, data.records, span=data.span)
    start = data.equity[0][1] if data.equity else 0.0
    summary = summarize_trades(
        data.records,
        start_equity_usd=start,
        equity_curve=[e for _, e in data.equity] if data.equity_rows else None,
        mode=data.run_mode,
    )
    return data, metrics, summary


def write_report(log_dir: Path, *, output: Path | None = None, cfg: BotConfig | None = None) -> ReportResult:
    """Render `log_dir` into `output` (default `log_dir/report.html`)."""
    data, metrics, summary = build_report(log_dir, cfg=cfg)
    generated = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = render_html(data, metrics, summary, generated_at=generated, version=_version())
    path = output if output is not None else log_dir / REPORT_HTML
    _write_atomic(path, page)
    return ReportResult(
        path=path,
        size_bytes=path.stat().st_size,
        trades=metrics.trades,
        problems=data.problems,
        metrics=metrics,
        summary=summary,
    )


def write_summary_json(
    log_dir: Path, summary: RunSummary, metrics: Metrics | None, extra: dict[str, Any]
) -> Path:
    """summary.json: the console summary's figures, the report's metrics and the run's facts (`extra`)."""
    body: dict[str, Any] = dict(extra)
    body.update(summary_to_dict(summary))
    if metrics is not None:
        body["metrics"] = msgspec.to_builtins(metrics)
    path = log_dir / SUMMARY_JSON
    _write_atomic(path, json.dumps(body, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

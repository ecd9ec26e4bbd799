"""The answers of the operator's Telegram commands (/status, /positions, /daily, /profit, /kill, /resume).

/status composes what /health says (the same `health_report`), so the two never disagree; /positions lists
the open trades; /daily reads the latest daily report file; /profit summarizes the trade log; /kill and
/resume are the kill switch's operator callbacks (the same as `POST /kill` and `POST /resume`). The text
answers read Health's snapshot, the metrics and Execution's open trades directly, on the Telegram task.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from futures_actor.actors.health import HealthActor
from futures_actor.actors.kill_switch import OperatorKillSwitch
from futures_actor.actors.metrics import OPEN_POSITIONS, UNPROTECTED_POSITIONS, Metrics
from futures_actor.actors.telegram import CommandHandlers
from futures_actor.core.health import health_report
from futures_actor.core.lifecycle import TradeLifecycle
from futures_actor.core.summary import summarize_trades

__all__ = ["operator_commands"]


def operator_commands(
    *,
    mode: str,
    health: HealthActor,
    metrics: Metrics,
    kill_switch: OperatorKillSwitch,
    open_trades: Callable[[], list[TradeLifecycle]],
    log_dir: Path,
    trade_records: Callable[[], Iterable[Mapping[str, Any]]],
) -> CommandHandlers:
    """Telegram's commands, answered from one system (see the module docstring)."""

    def status() -> str:
        # What /health says (the same composition), so the two never disagree.
        snap = health.snapshot()
        lines = [f"mode {mode}"]
        positions = metrics.get(OPEN_POSITIONS)
        if snap is not None:
            _, view = health_report(
                snap,
                kill_switch=kill_switch.engaged,
                open_positions=None if positions is None else int(positions),
                unprotected_positions=int(metrics.get(UNPROTECTED_POSITIONS) or 0),
            )
            lines.append(
                f"health {view['state']}, trading {view['trading_state']}, safe mode {snap.safe_mode}"
            )
            lines.extend(f"- {reason}" for reason in [*view["reasons"], *view["warnings"]])
        lines.append(f"kill switch {'ENGAGED' if kill_switch.engaged else 'off'}")
        lines.append(f"open positions {0 if positions is None else int(positions)}")
        return "\n".join(lines)

    def positions() -> str:
        trades = open_trades()
        if not trades:
            return "No open positions."
        lines = []
        for t in trades:
            st = t.to_state()
            entry = st.entry_cost / st.entry_filled if st.entry_filled else st.plan.entry_price
            lines.append(
                f"{t.symbol} {t.side.value} qty {st.entry_filled - st.exit_filled} entry {entry:.6g} "
                f"stop {st.stop_price} ({t.phase.value})"
            )
        return "\n".join(lines)

    def daily() -> str:
        reports = sorted(log_dir.glob("daily-report-*.json"))
        if not reports:
            return "No daily report yet."
        r = json.loads(reports[-1].read_text(encoding="utf-8"))
        return (
            f"{r.get('day')}: realized {r.get('realized_pnl_usd', 0.0):+.2f} USDT, equity "
            f"{r.get('equity_usd', 0.0):.2f}, trades {r.get('trade_count', 0)}, win rate "
            f"{100 * r.get('win_rate', 0.0):.0f}%, fees {r.get('fees_usd', 0.0):.2f}"
        )

    def profit() -> str:
        total = summarize_trades(trade_records(), start_equity_usd=0.0).total
        return (
            f"{total.trades} closed trades, pnl {total.pnl_usd:+.2f} USDT, win rate {100 * total.win_rate:.0f}%, "
            f"expectancy {total.expectancy_r:+.3f} R, fees {total.fees_usd:.2f}, funding {total.funding_usd:+.2f}"
        )

    return CommandHandlers(
        status=status,
        positions=positions,
        daily=daily,
        profit=profit,
        kill=kill_switch.operator_kill,
        resume=kill_switch.operator_resume,
    )

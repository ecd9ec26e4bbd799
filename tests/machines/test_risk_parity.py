"""Parity: the same messages through the RiskMachine directly and through the trio PortfolioRisk shell
(mock clock) give the same observable outputs, in the same order (issue 12's replay/trio parity, for risk).

Each seed builds a random but reproducible stream (`risk_scenarios.build`): three symbols reporting on
every 5m close (some missing, so batches close on their deadline; duplicates, late and stale reports;
reply tokens that deliver, find the asker gone or its channel full), account updates (some broken),
fills, stop moves, closes (some beyond the risk, some large enough for the daily stop), funding,
abandoned entries, retries, portfolio syncs with a foreign position, safe mode, kill / resume, universe
changes and, on some seeds, `StopIntake`; odd seeds run LIVE with a shadow book (which finds every 5th
plan full and every 7th gone), some seeds with a qualifying performance record. The direct path is the
synchronous driver of `risk_scenarios` (a discrete-event runtime: timers by `at_ms`, answers fed back at
once); the trio path runs the real `PortfolioRisk` on a wall clock that follows trio's mock clock, with
recording ends: logger, state store, metrics, execution and shadow channels and the reply tokens.
Timers are compared through what they cause (a batch decided at its deadline, stamped with its time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.actors.messages import SubmitPlan, SymbolReport
from futures_actor.actors.portfolio_risk import PortfolioRisk, open_risk_inbox
from futures_actor.state.store import BlobKind

from .risk_scenarios import (
    CFG,
    RULES,
    START,
    SYMBOLS,
    Reply,
    Scenario,
    build,
    observe,
    shadow_drop,
    winning_tracker,
)

SEEDS = range(8)


class RecordingLog:
    def __init__(self, out: list[object]) -> None:
        self._out = out

    def _record(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self._out.append(("log", level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._record("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._record("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._record("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._record("error", event, kw)


class RecordingStore:
    """The state store: nothing stored at start; every write recorded."""

    def __init__(self, out: list[object]) -> None:
        self._out = out

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def load_struct(self, kind: BlobKind, name: str, typ: type) -> None:
        return None

    def save_struct(self, kind: BlobKind, name: str, value: object, *, now_ms: int) -> None:
        self._out.append(("save", "risk" if kind is BlobKind.RISK else "selection", value, now_ms))


class RecordingMetrics:
    def __init__(self, out: list[object]) -> None:
        self._out = out

    def set(self, name: str, value: float, **labels: str) -> None:
        self._out.append(("set", name, value, labels))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._out.append(("inc", name, amount, labels))


class RecordingExecution:
    def __init__(self, out: list[object]) -> None:
        self._out = out

    def send_nowait(self, msg: object) -> None:
        self._out.append(("exec", msg))

    async def send(self, msg: object) -> None:
        raise AssertionError("execution always has room here")


class RecordingShadow:
    """The shadow book's inbox: every plan offered is recorded; `shadow_drop` says which it refuses."""

    def __init__(self, out: list[object]) -> None:
        self._out = out
        self._plans = 0

    def send_nowait(self, msg: object) -> None:
        if isinstance(msg, SubmitPlan):
            self._plans += 1
            self._out.append(("shadow_offer", msg))
            match shadow_drop(self._plans):
                case "shadow inbox full":
                    raise trio.WouldBlock
                case "shadow book stopped":
                    raise trio.BrokenResourceError
                case _:
                    return
        self._out.append(("shadow", msg))

    async def send(self, msg: object) -> None:
        raise AssertionError("the shadow book always takes a retry decision here")


async def through_trio(scn: Scenario) -> list[object]:
    out: list[object] = []
    wall = TrioWallClock(START)
    t0 = trio.current_time()
    actor = PortfolioRisk(
        cfg=CFG,
        mode=scn.mode,
        execution_send=RecordingExecution(out),  # type: ignore[arg-type]
        symbols=SYMBOLS,
        rules_by_symbol=RULES,
        wall_clock=wall,
        store=RecordingStore(out),  # type: ignore[arg-type]
        tracker=winning_tracker() if scn.winning else None,
        metrics=RecordingMetrics(out),
        shadow_send=RecordingShadow(out) if scn.shadow else None,  # type: ignore[arg-type]
        log=RecordingLog(out),
    )
    inbox_send, inbox_recv = open_risk_inbox()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run, inbox_recv)
        for step in scn.steps:
            await trio.sleep_until(t0 + (step.at_ms - START) / 1000)
            msg = step.msg
            if isinstance(msg, SymbolReport) and isinstance(msg.reply, Reply):
                msg = msgspec.structs.replace(msg, reply=Reply(msg.reply.n, msg.reply.mode, sink=out))
            await inbox_send.send(msg)
            await trio.testing.wait_all_tasks_blocked()
        await trio.sleep_until(t0 + (scn.end_ms - START) / 1000)
        await inbox_send.aclose()
    return out


async def test_random_streams_give_the_same_outputs_directly_and_through_trio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Counter[str] = Counter()
    for seed in SEEDS:
        scn, driver = build(seed)
        want = observe(driver.effects)
        got = await through_trio(scn)
        assert len(got) == len(want), f"seed {seed}"
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"seed {seed}, output {n}"
        for o in want:
            assert isinstance(o, tuple)
            seen[o[2] if o[0] == "log" else o[0]] += 1
    # The streams must reach every path worth comparing, or the parity means little.
    for what in (
        "exec",
        "save",
        "verdict",
        "set",
        "inc",
        "shadow_offer",
        "shadow",
        "risk_approved",
        "risk_rejected",
        "risk_batch_incomplete",
        "verdict_undeliverable",
        "verdict_dropped",
        "shadow_entry",
        "shadow_plan_dropped",
        "retry_rejected",
        "risk_pnl_recorded",
        "risk_entry_filled",
        "risk_reservation_released",
        "risk_portfolio_synced",
        "risk_kill_switch",
        "risk_safe_mode",
        "risk_trading_state",
        "risk_universe_changed",
        "shadow_trade_recorded",
    ):
        assert seen[what] > 0, f"no {what} in {len(SEEDS)} seeded streams: {sorted(seen.items())}"

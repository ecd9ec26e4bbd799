"""Parity: the same messages through the SymbolMachine directly and through the trio SymbolActor (mock clock)
give the same effects, in the same order (the seed of issue 12's replay/trio parity test).

Each seed builds a random but reproducible live stream on the bundled real BTCUSDT klines, starting
from a warm history: closed 5m and 1h candles with duplicates, conflicting duplicates, malformed
(NaN) candles, 5m and 1h gaps (answered by history, by an empty history or by a failing fetch), on odd
seeds a book before every close (mostly fresh, some stale, wide or broken; even seeds have none), marks (some broken), positions opened, moved, closed and rejected, and
verdicts on the inbox. The direct path feeds them to a `SymbolMachine` with a synchronous driver; the
trio path runs the real `SymbolActor` whose channels, logger, history loader and fault callback record
what the shell did, turned back into effects. A report with signals gets a verdict from the recording
risk side (every other one), which the shell's verdict task logs whenever trio schedules it (the actor
loop never waits for it): those logs are compared as their own ordered stream.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from futures_actor.actors.messages import (
    AmendStop,
    BookUpdated,
    MarkUpdated,
    SymbolReport,
    Verdict,
)
from futures_actor.actors.symbol_actor import SymbolActor, open_symbol_inbox
from futures_actor.core.models import RiskRejection
from futures_actor.core.types import Candle, Side
from futures_actor.machines.effects import Log, LogLevel
from futures_actor.machines.symbol import (
    Crash,
    FetchHistory,
    HistoryFetched,
    HistoryFetchFailed,
    HistoryLoaded,
    ReportFault,
    SendAmendStop,
    SendReport,
    SymbolEffect,
    SymbolInbox,
    SymbolMachine,
)

from .scenarios import (
    CFG,
    MS_1H,
    SYMBOL,
    boom_strategies,
    c1,
    c5,
    close_ms,
    history_until,
    load,
    position,
)

SEEDS = range(8)
LIVE_CANDLES = 240
REPLY_EXPLANATION = "reply"  # verdicts sent on a report's reply channel (logged by the verdict task)


class Scenario(msgspec.Struct, kw_only=True):
    """One seeded stream: the start-up history, the inbox messages and the answers to gap fetches."""

    start: tuple[list[Candle], list[Candle]]
    msgs: list[SymbolInbox]
    gap_answers: list[tuple[list[Candle], list[Candle]] | Exception]


def build(seed: int, five: list[Candle], hour: list[Candle]) -> Scenario:
    rng = random.Random(seed)
    k = rng.randint(600, len(five) - LIVE_CANDLES - 10)
    start = history_until(five, hour, k)
    stale_ms = int(CFG.health.stale_data_seconds * 1000)
    msgs: list[SymbolInbox] = []
    answers: list[tuple[list[Candle], list[Candle]] | Exception] = []
    next_1h = next(j for j, h in enumerate(hour) if h.open_time_ms + MS_1H > close_ms(five[k - 1]))
    trade = 0
    book_feed = seed % 2 == 1  # odd seeds: a live book stream; even seeds: none (replay)
    i = k
    while i < k + LIVE_CANDLES:
        c = five[i]
        while next_1h < len(hour) and hour[next_1h].open_time_ms + MS_1H <= close_ms(c):
            if rng.random() < 0.03 and next_1h + 1 < len(hour):
                next_1h += 1  # a missing 1h candle: the next one is a gap
                answers.append(_answer(rng, five, hour, i))
            msgs.append(c1(hour[next_1h]))
            next_1h += 1
        if book_feed:  # live: a book before (nearly) every close, mostly fresh and tight
            age_ms = (
                rng.choice([200, 1000])
                if rng.random() < 0.9
                else rng.choice([stale_ms + 1000, -(stale_ms + 1000)])
            )
            spread = 1e-5 if rng.random() < 0.9 else rng.choice([2e-4, CFG.universe.max_spread_pct * 3])
            bid, ask = c.close * (1 - spread / 2), c.close * (1 + spread / 2)
            if rng.random() < 0.03:
                bid = float("nan")
            msgs.append(BookUpdated(symbol=SYMBOL, bid=bid, ask=ask, ts_ms=close_ms(c) - age_ms))
        roll = rng.random()
        if roll < 0.15:
            mark = c.close * rng.uniform(0.97, 1.01) if rng.random() > 0.05 else -1.0
            msgs.append(
                MarkUpdated(
                    symbol=SYMBOL,
                    mark_price=mark,
                    funding_rate=rng.choice([0.0001, -0.0002, 0.0]),
                    next_funding_ms=0,
                    ts_ms=close_ms(c) - rng.choice([0, 1000, stale_ms * 3]),
                )
            )
        elif roll < 0.38:
            trade += 1
            side = rng.choice([Side.LONG, Side.SHORT])
            p = position(
                c.open,
                trade_id=f"T{trade % 3}",
                side=side,
                after_r=rng.choice([0.0, 0.5]),
                qty=rng.choice(["0.01", "0"]),
            )
            if rng.random() < 0.15:  # a stop looser than the initial one: rejected
                p = msgspec.structs.replace(p, stop_price=Decimal(repr(c.open * (1 - side.sign * 0.05))))
            msgs.append(p)
        elif roll < 0.41:
            msgs.append(Verdict(symbol=SYMBOL, candle_open_time_ms=c.open_time_ms, plan=None, rejection=None))
        kind = rng.random()
        if kind < 0.03 and i + 4 < k + LIVE_CANDLES:
            skip = rng.randint(1, 3)  # a 5m gap
            i += skip
            answers.append(_answer(rng, five, hour, i))
            c = five[i]
        elif kind < 0.05:
            msgs.append(c5(msgspec.structs.replace(c, close=float("nan"))))  # malformed
        msgs.append(c5(c))
        extra = rng.random()
        if extra < 0.04:
            msgs.append(c5(c))  # exact duplicate
        elif extra < 0.06:
            msgs.append(c5(msgspec.structs.replace(c, volume=c.volume + 1.0)))  # conflicting duplicate
        i += 1
    return Scenario(start=start, msgs=msgs, gap_answers=answers)


def _answer(
    rng: random.Random, five: list[Candle], hour: list[Candle], i: int
) -> tuple[list[Candle], list[Candle]] | Exception:
    roll = rng.random()
    if roll < 0.6:
        return history_until(five, hour, i)  # REST has everything before the gapped candle
    if roll < 0.8:
        return [], []  # no history source answers
    return ConnectionError("rest down")


# --- the direct path ----------------------------------------------------------------------------


def direct(scn: Scenario, strategies: Sequence[Any] | None = None) -> list[SymbolEffect]:
    machine = SymbolMachine(symbol=SYMBOL, cfg=CFG, has_history=True, strategies=strategies)
    answers = iter(scn.gap_answers)
    effects: list[SymbolEffect] = []
    replies = 0

    def perform(batch: list[SymbolEffect]) -> bool:
        nonlocal replies
        for effect in batch:
            effects.append(effect)
            if isinstance(effect, FetchHistory):
                answer = next(answers, ([], []))
                if isinstance(answer, Exception):
                    reply: HistoryFetched | HistoryFetchFailed = HistoryFetchFailed(error=repr(answer))
                else:
                    reply = HistoryFetched(five=answer[0], hour=answer[1])
                if not perform(machine.handle(reply, now_ms=0)):
                    return False
            elif isinstance(effect, SendReport) and effect.verdict_timeout_s is not None:
                replies += 1
                if replies % 2:
                    perform(machine.handle(_reply_verdict(effect.report), now_ms=0))
            elif isinstance(effect, Crash):
                return False
        return True

    perform(machine.handle(HistoryLoaded(five=scn.start[0], hour=scn.start[1]), now_ms=0))
    for msg in scn.msgs:
        if not perform(machine.handle(msg, now_ms=0)):
            break
    return effects


def _reply_verdict(report: SymbolReport) -> Verdict:
    return Verdict(
        symbol=SYMBOL,
        candle_open_time_ms=report.candle_open_time_ms,
        plan=None,
        rejection=RiskRejection(code="MAX_POSITIONS", message="full"),
        explanation=REPLY_EXPLANATION,
    )


# --- the trio path: the real shell with recording ends --------------------------------------------


class RecordingLog:
    """A bound-logger stand-in that records every call as the `Log` effect it came from."""

    def __init__(self, effects: list[SymbolEffect]) -> None:
        self._effects = effects

    def bind(self, **_: Any) -> RecordingLog:
        return self

    def _record(self, level: LogLevel, event: str, kw: dict[str, Any]) -> None:
        self._effects.append(Log(level=level, event=event, fields=kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._record(LogLevel.DEBUG, event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._record(LogLevel.INFO, event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._record(LogLevel.WARNING, event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._record(LogLevel.ERROR, event, kw)


class RecordingRisk:
    """The risk actor's inbox: records each report; answers every other report that awaits a verdict."""

    def __init__(self, effects: list[SymbolEffect]) -> None:
        self._effects = effects
        self._replies = 0

    async def send(self, report: SymbolReport) -> None:
        awaits = report.reply is not None
        self._effects.append(
            SendReport(
                report=msgspec.structs.replace(report, reply=None),
                verdict_timeout_s=CFG.risk.verdict_timeout_seconds if awaits else None,
            )
        )
        if awaits:
            self._replies += 1
            if self._replies % 2:
                report.reply.send_nowait(_reply_verdict(report))
        await trio.lowlevel.checkpoint()


class RecordingExecution:
    def __init__(self, effects: list[SymbolEffect]) -> None:
        self._effects = effects

    async def send(self, amend: AmendStop) -> None:
        self._effects.append(SendAmendStop(amend=amend))
        await trio.lowlevel.checkpoint()


async def through_trio(scn: Scenario, strategies: Sequence[Any] | None = None) -> list[SymbolEffect]:
    effects: list[SymbolEffect] = []
    answers = iter(scn.gap_answers)
    calls = [0]

    async def history(symbol: str) -> tuple[list[Candle], list[Candle]]:
        calls[0] += 1
        await trio.lowlevel.checkpoint()
        if calls[0] == 1:
            return scn.start
        effects.append(FetchHistory(symbol=symbol))
        answer = next(answers, ([], []))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def on_fault(kind: str, symbol: str, detail: str) -> None:
        effects.append(ReportFault(kind=kind, symbol=symbol, detail=detail))

    actor = SymbolActor(
        symbol=SYMBOL,
        cfg=CFG,
        risk_send=RecordingRisk(effects),  # type: ignore[arg-type]
        execution_send=RecordingExecution(effects),  # type: ignore[arg-type]
        history=history,
        on_fault=on_fault,
        log=RecordingLog(effects),
        strategies=strategies,
    )
    inbox_send, inbox_recv = open_symbol_inbox()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run, inbox_recv)
            async with inbox_send:
                for m in scn.msgs:
                    await inbox_send.send(m)
    except Exception as exc:  # a Crash: the shell raises the machine's error unchanged
        effects.append(Crash(error=_unwrap(exc)))
    return effects


def _unwrap(exc: BaseException) -> Exception:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    assert isinstance(exc, Exception)
    return exc


# --- comparison -------------------------------------------------------------------------------------


def comparable(effects: list[SymbolEffect]) -> tuple[list[object], list[object]]:
    """(the in-order effects, the verdict-task logs), exceptions compared by type and message."""
    main: list[object] = []
    replies: list[object] = []
    for e in effects:
        if isinstance(e, Log) and e.event == "verdict" and e.fields.get("explanation") == REPLY_EXPLANATION:
            replies.append(e)
        elif isinstance(e, Crash):
            main.append(("Crash", type(e.error), str(e.error)))
        elif isinstance(e, Log) and "exc_info" in e.fields:
            exc = e.fields["exc_info"]
            main.append((e.level, e.event, {**e.fields, "exc_info": (type(exc), str(exc))}))
        else:
            main.append(e)
    return main, replies


@pytest.fixture
def candles(sample_dir: Path) -> tuple[list[Candle], list[Candle]]:
    return load(sample_dir)


async def test_random_streams_give_the_same_effects_directly_and_through_trio(
    autojump_clock: trio.testing.MockClock, candles: tuple[list[Candle], list[Candle]]
) -> None:
    five, hour = candles
    seen: Counter[str] = Counter()
    for seed in SEEDS:
        scn = build(seed, five, hour)
        want = direct(scn)
        got = await through_trio(scn)
        want_main, want_replies = comparable(want)
        got_main, got_replies = comparable(got)
        assert len(got_main) == len(want_main), f"seed {seed}"
        for n, (g, w) in enumerate(zip(got_main, want_main, strict=True)):
            assert g == w, f"seed {seed}, effect {n}"
        assert got_replies == want_replies, f"seed {seed}"
        for e in want:
            if isinstance(e, Log):
                seen[f"{e.event}/{e.fields['interval']}" if e.event == "candle_gap" else e.event] += 1
            else:
                seen[type(e).__name__] += 1
            if isinstance(e, SendReport) and e.verdict_timeout_s is not None:
                seen["report_with_signals"] += 1
    # The streams must reach every path worth comparing, or the parity means little.
    for what in (
        "SendReport",
        "report_with_signals",
        "SendAmendStop",
        "FetchHistory",
        "history_loaded",
        "history_failed",
        "candle_gap/5m",
        "candle_gap/1h",
        "candle_rejected",
        "candle_duplicate",
        "book_rejected",
        "mark_rejected",
        "trail_tracking",
        "trail_moved",
        "trail_cleared",
        "position_rejected",
        "verdict",
    ):
        assert seen[what] > 0, f"no {what} in {len(SEEDS)} seeded streams: {sorted(seen.items())}"


async def test_a_crash_gives_the_same_effects_directly_and_through_trio(
    autojump_clock: trio.testing.MockClock, candles: tuple[list[Candle], list[Candle]]
) -> None:
    five, hour = candles
    scn = build(3, five, hour)
    want = direct(scn, strategies=boom_strategies())
    got = await through_trio(scn, strategies=boom_strategies())
    assert comparable(got) == comparable(want)
    assert [type(e) for e in want[-2:]] == [ReportFault, Crash]

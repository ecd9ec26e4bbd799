"""RiskMachine scenarios as plain function calls: messages in, effects out, no trio, no clock, no logger.

Batching and the deadline timer, approvals and rejections, persist-before-send, verdict replies and the
answers a runtime feeds back, kill switch / safe mode / REDUCING, metrics as effects, the machine's own
contract (Start first, Crash), determinism.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from futures_actor.actors.messages import (
    CandleClosed,
    EntryAbandoned,
    EntryFilled,
    KillSwitch,
    Resume,
    RetryDecided,
    RetryRequested,
    SafeModeChanged,
    ShadowTradeClosed,
    StopIntake,
    SubmitPlan,
    UniverseChanged,
)
from futures_actor.actors.metrics import DECISIONS, EQUITY, OPEN_RISK_PCT, OPEN_RISK_USD, REJECTIONS
from futures_actor.core.performance import PerformanceTracker
from futures_actor.core.risk_state import DAY_MS, new_risk_state
from futures_actor.core.selector import SelectionState
from futures_actor.core.types import Candle
from futures_actor.machines.effects import Log, LogLevel
from futures_actor.machines.risk import (
    DUPLICATE_CANDLE,
    LATE,
    NO_ACCOUNT,
    SHUTTING_DOWN,
    STALE_CANDLE,
    BatchDeadline,
    CancelTimer,
    Crash,
    IncMetric,
    Persist,
    RiskMachineError,
    SendRetryDecided,
    SendShadowPlan,
    SetMetric,
    SetTimer,
    ShadowPlanAnswered,
    Start,
)

from .risk_scenarios import (
    AAA,
    BBB,
    CCC,
    CFG,
    MIN5,
    START,
    Driver,
    Reply,
    account,
    build,
    closed,
    logs,
    machine,
    observe,
    plans,
    report,
    verdicts,
    winning_tracker,
)

BATCH_MS = CFG.risk.decision_batch_ms
CANDLE = START - MIN5  # the 5m candle that closed at START
T = START + 500  # reports arrive half a second after the close


def driver(*, equity: float | None = 10_000.0, **kw: Any) -> Driver:
    d = Driver(machine(**kw), now_ms=START)
    if equity is not None:
        d.send(account(equity))
    d.at(T)
    return d


def kinds(effects: list[Any]) -> list[str]:
    return [e.event if isinstance(e, Log) else type(e).__name__ for e in effects]


def code(effects: list[Any], symbol: str = AAA) -> str | None:
    rejection = verdicts(effects)[symbol].rejection
    return None if rejection is None else rejection.code


def test_the_machine_module_imports_no_trio_and_no_logger() -> None:
    code_ = (
        "import sys; import futures_actor.machines.risk; "
        "print(sorted(m for m in sys.modules if m == 'trio' or m.startswith('trio.') "
        "or m in ('structlog', 'futures_actor.logs')))"
    )
    out = subprocess.run([sys.executable, "-c", code_], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class TestContract:
    def test_every_input_before_start_is_refused(self) -> None:
        m = machine()
        with pytest.raises(RiskMachineError, match="before Start"):
            m.handle(account(10_000.0), now_ms=START)

    def test_a_second_start_is_refused(self) -> None:
        m = machine()
        m.handle(Start(), now_ms=START)
        with pytest.raises(RiskMachineError, match="second Start"):
            m.handle(Start(), now_ms=START)

    def test_start_adopts_the_stored_state_unless_given_and_logs_started(self) -> None:
        stored = new_risk_state(now_ms=START, equity_usd=5_000.0)
        given = new_risk_state(now_ms=START, equity_usd=7_000.0)
        m = machine(persists=True)
        effects = m.handle(Start(risk_state=stored, selection_state=SelectionState()), now_ms=START)
        assert m.risk_state == stored
        assert kinds(effects) == ["risk_started"]  # adopted as stored: nothing to write
        m2 = machine(risk_state=given)
        m2.handle(Start(risk_state=stored), now_ms=START)
        assert m2.risk_state == given

    def test_a_fault_in_decision_code_ends_in_crash_and_the_machine_refuses_more(self) -> None:
        class Boom(PerformanceTracker):
            def record(self, trade: Any) -> bool:
                raise RuntimeError("tracker broke")

        d = Driver(machine(tracker=Boom(cfg=CFG.performance)), now_ms=START)
        effects = d.send(ShadowTradeClosed(record=closed("t1", AAA, 50.0, START).record))
        assert isinstance(effects[-1], Crash)
        assert str(effects[-1].error) == "tracker broke"
        with pytest.raises(RiskMachineError, match="crashed"):
            d.machine.handle(account(1.0), now_ms=START)


class TestBatching:
    def test_the_first_report_sets_the_deadline_and_a_complete_batch_is_decided_at_once(self) -> None:
        d = driver(symbols=(AAA, BBB))
        first = d.send(report(AAA, CANDLE))
        assert first == [SetTimer(candle_open_time_ms=CANDLE, at_ms=T + BATCH_MS)]
        second = d.send(report(BBB, CANDLE, signals=False, reply=None))
        assert kinds(second)[:1] == ["CancelTimer"]
        assert set(verdicts(second)) == {AAA}
        assert d.timers == {}

    def test_an_incomplete_batch_waits_for_its_deadline(self) -> None:
        d = driver(symbols=(AAA, BBB))
        d.send(report(AAA, CANDLE))
        assert d.machine.open_batches == (CANDLE,)
        effects = d.machine.handle(BatchDeadline(candle_open_time_ms=CANDLE), now_ms=T + BATCH_MS)
        assert "CancelTimer" not in kinds(effects)  # the timer fired: nothing to cancel
        incomplete = logs(effects, "risk_batch_incomplete")
        assert incomplete[0].fields == {"candle_open_time_ms": CANDLE, "missing": [BBB]}
        assert verdicts(effects)[AAA].plan is not None
        assert d.machine.open_batches == ()

    def test_a_deadline_of_a_decided_batch_is_ignored(self) -> None:
        d = driver()
        d.send(report(AAA, CANDLE))
        assert d.machine.handle(BatchDeadline(candle_open_time_ms=CANDLE), now_ms=T + BATCH_MS) == []

    def test_a_newer_candle_decides_the_older_batch_first(self) -> None:
        d = driver(symbols=(AAA, BBB))
        d.send(report(AAA, CANDLE))
        effects = d.at(T + 1000).send(report(AAA, CANDLE + MIN5))  # before the older deadline
        assert kinds(effects)[:3] == ["SetTimer", "CancelTimer", "risk_batch_incomplete"]
        assert effects[0] == SetTimer(candle_open_time_ms=CANDLE + MIN5, at_ms=T + 1000 + BATCH_MS)
        assert effects[1] == CancelTimer(candle_open_time_ms=CANDLE)
        assert d.machine.open_batches == (CANDLE + MIN5,)

    def test_inbox_closed_decides_what_is_waiting(self) -> None:
        d = driver(symbols=(AAA, BBB))
        d.send(report(AAA, CANDLE))
        effects = d.close()
        assert verdicts(effects)[AAA].plan is not None
        assert d.machine.open_batches == ()

    def test_a_batch_is_decided_by_confidence_not_arrival(self) -> None:
        d = driver(symbols=(AAA, BBB, CCC), tracker=winning_tracker(), mode="LIVE")
        d.send(report(AAA, CANDLE, conf=0.6), report(CCC, CANDLE, conf=0.95))
        effects = d.send(report(BBB, CANDLE, conf=0.8))
        order = [e.fields["symbol"] for e in logs(effects) if e.event in ("risk_approved", "risk_rejected")]
        assert order == [CCC, BBB, AAA]

    def test_late_duplicate_and_stale_reports_are_answered_at_once(self) -> None:
        d = driver(symbols=(AAA, BBB))
        d.send(report(AAA, CANDLE))
        dup = d.send(report(AAA, CANDLE, reply=Reply(2, "ok")))
        assert code(dup) == DUPLICATE_CANDLE
        d.send(report(BBB, CANDLE, signals=False, reply=None))  # completes: decided
        assert code(d.send(report(AAA, CANDLE))) == LATE
        stale = d.send(report(AAA, CANDLE - 60 * MIN5))
        assert code(stale) == STALE_CANDLE
        assert d.machine.snapshot(now_ms=T).late_reports == 2


class TestApproval:
    def test_approval_reserves_logs_persists_sends_then_answers(self) -> None:
        d = driver(persists=True)
        effects = d.send(report(AAA, CANDLE))
        assert kinds(effects) == ["SetTimer", "CancelTimer", "risk_approved", "SendPlan", "ReplyVerdict"]
        (sub,) = plans(effects)
        assert sub.mid_price == Decimal("100.0")
        assert verdicts(effects)[AAA].plan == sub.plan
        snap = d.machine.snapshot(now_ms=T)
        assert (snap.pending, snap.approvals) == (1, 1)

    def test_persist_comes_before_the_plan_it_covers(self) -> None:
        # LIVE with a qualifying record: the approval adopts the selector's new state, which must be
        # written before execution sees the plan.
        d = driver(persists=True, mode="LIVE", tracker=winning_tracker())
        effects = d.send(report(AAA, CANDLE))
        k = kinds(effects)
        assert k.index("Persist") < k.index("SendPlan") < k.index("ReplyVerdict")
        persist = next(e for e in effects if isinstance(e, Persist))
        assert persist.selection_state == d.machine.selection_state
        assert persist.now_ms == T

    def test_a_persist_that_failed_is_written_again_at_the_next_point(self) -> None:
        answers = iter(["disk full"])
        d = Driver(
            machine(persists=True, mode="LIVE", tracker=winning_tracker()),
            now_ms=START,
            persist_answer=lambda _: next(answers, None),
        )
        d.send(account(10_000.0))  # the first write (the new calendar) fails
        failed = logs(d.effects, "risk_state_persist_failed")
        assert failed[0].level is LogLevel.ERROR
        assert failed[0].fields == {"error": "disk full"}
        effects = d.at(T).send(report(AAA, CANDLE))
        persist = next(e for e in effects if isinstance(e, Persist))
        assert persist.risk_state == d.machine.risk_state  # unchanged since, but not saved yet

    def test_an_unheard_verdict_releases_nothing(self) -> None:
        d = driver()
        effects = d.send(report(AAA, CANDLE, reply=Reply(1, "closed")))
        assert kinds(effects)[-2:] == ["ReplyVerdict", "verdict_undeliverable"]
        assert len(plans(effects)) == 1
        assert d.machine.snapshot(now_ms=T).pending == 1
        full = d.at(T + MIN5).send(report(AAA, CANDLE + MIN5, reply=Reply(2, "full")))
        k = kinds(full)
        assert k[k.index("ReplyVerdict") + 1] == "verdict_dropped"

    def test_a_report_without_a_reply_gets_no_verdict(self) -> None:
        d = driver()
        effects = d.send(report(AAA, CANDLE, reply=None))
        assert verdicts(effects) == {}
        assert len(plans(effects)) == 1

    def test_a_fill_then_abandon_releases_the_reservation(self) -> None:
        d = driver()
        (sub,) = plans(d.send(report(AAA, CANDLE)))
        p = sub.plan
        d.send(
            EntryFilled(
                trade_id=p.trade_id,
                symbol=AAA,
                side=p.side,
                filled_qty=p.quantity / 2,
                avg_price=p.entry_price,
                stop_price=p.stop_price,
                final=False,
            )
        )
        assert d.machine.snapshot(now_ms=T).pending == 1
        d.send(EntryAbandoned(trade_id=p.trade_id, symbol=AAA, reason="TTL"))
        assert d.machine.exposures == ()

    def test_a_retry_decision_is_persisted_before_it_is_sent(self) -> None:
        d = driver(persists=True)
        (sub,) = plans(d.send(report(AAA, CANDLE)))
        # The next UTC day: the retry's decision rolls the calendar, which must be written first.
        effects = d.at(START + DAY_MS).send(
            RetryRequested(
                plan=sub.plan,
                mid=sub.plan.entry_price,
                filled_qty=Decimal(0),
                filled_avg_price=Decimal(0),
            )
        )
        assert [k for k in kinds(effects) if k in ("Persist", "SendRetryDecided")] == [
            "Persist",
            "SendRetryDecided",
        ]
        persist = next(e for e in effects if isinstance(e, Persist))
        assert persist.risk_state == d.machine.risk_state
        sent = next(e for e in effects if isinstance(e, SendRetryDecided))
        assert isinstance(sent.decided, RetryDecided)
        assert not sent.shadow
        assert sent.decided.trade_id == sub.plan.trade_id


class TestGates:
    def test_no_account_rejects(self) -> None:
        d = driver(equity=None)
        assert code(d.send(report(AAA, CANDLE))) == NO_ACCOUNT

    def test_kill_switch_then_resume(self) -> None:
        d = driver()
        assert kinds(d.send(KillSwitch(reason="OPERATOR"))) == ["risk_kill_switch"]
        effects = d.send(report(AAA, CANDLE))
        assert code(effects) == "KILL_SWITCH"
        assert plans(effects) == []
        d.send(Resume(reason="OPERATOR"))
        assert verdicts(d.at(T + MIN5).send(report(AAA, CANDLE + MIN5)))[AAA].plan is not None

    def test_safe_mode_rejects_until_off(self) -> None:
        d = driver()
        d.send(SafeModeChanged(on=True, reasons=("WS_STALE",)))
        assert code(d.send(report(AAA, CANDLE))) == "SAFE_MODE"
        d.send(SafeModeChanged(on=False))
        assert verdicts(d.at(T + MIN5).send(report(AAA, CANDLE + MIN5)))[AAA].plan is not None

    def test_stop_intake_rejects_every_new_entry_and_retry(self) -> None:
        d = driver()
        (sub,) = plans(d.send(report(AAA, CANDLE)))
        d.send(StopIntake())
        assert code(d.at(T + MIN5).send(report(AAA, CANDLE + MIN5))) == SHUTTING_DOWN
        retry = d.send(
            RetryRequested(
                plan=sub.plan, mid=sub.plan.entry_price, filled_qty=Decimal(0), filled_avg_price=Decimal(0)
            )
        )
        sent = next(e for e in retry if isinstance(e, SendRetryDecided))
        assert sent.decided.rejection is not None
        assert sent.decided.rejection.code == SHUTTING_DOWN

    def test_a_symbol_out_of_the_universe_is_not_traded(self) -> None:
        d = driver(symbols=(AAA, BBB))
        d.send(UniverseChanged(tradable=(BBB,), monitored=(AAA, BBB), rules={}))
        d.send(report(BBB, CANDLE, signals=False, reply=None))
        assert code(d.send(report(AAA, CANDLE))) == "NOT_IN_UNIVERSE"

    def test_the_daily_stop_rejects_after_losses(self) -> None:
        d = driver()
        (sub,) = plans(d.send(report(AAA, CANDLE)))
        d.send(closed(sub.plan.trade_id, AAA, -400.0, T))
        assert code(d.at(T + MIN5).send(report(AAA, CANDLE + MIN5))) == "DAILY_STOP"


class TestShadow:
    def test_live_lockout_goes_to_the_shadow_book_and_its_answer_is_logged(self) -> None:
        d = Driver(
            machine(mode="LIVE", has_shadow=True), now_ms=START, shadow_answer=lambda _: "shadow inbox full"
        )
        d.send(account(10_000.0))
        effects = d.at(T).send(report(AAA, CANDLE))
        k = kinds(effects)
        assert k.index("SendShadowPlan") < k.index("shadow_plan_dropped") < k.index("shadow_entry")
        offer = next(e for e in effects if isinstance(e, SendShadowPlan))
        assert isinstance(offer.submit, SubmitPlan)
        entry = logs(effects, "shadow_entry")[0]
        assert entry.fields["sent"] is False
        assert entry.fields["why"] == "LOW_SAMPLE"
        assert plans(effects) == []  # LIVE never explores: no live order
        assert d.machine.exposures == ()  # a shadow plan is never reserved

    def test_without_a_shadow_book_nothing_is_offered(self) -> None:
        d = driver(mode="LIVE")
        effects = d.send(report(AAA, CANDLE))
        assert "SendShadowPlan" not in kinds(effects)
        assert code(effects) == "NO_TRADE"

    def test_the_answer_is_logged_with_the_entry_fields(self) -> None:
        d = driver(mode="LIVE", has_shadow=True)
        offer = next(e for e in d.send(report(AAA, CANDLE)) if isinstance(e, SendShadowPlan))
        effects = d.machine.handle(ShadowPlanAnswered(effect=offer, dropped=None), now_ms=T)
        assert effects == [
            Log(level=LogLevel.INFO, event="shadow_entry", fields={**offer.entry_log, "sent": True})
        ]


class TestMetrics:
    def test_gauges_after_every_inbox_message_and_counters_per_decision(self) -> None:
        d = driver(emit_metrics=True)
        effects = d.send(report(AAA, CANDLE))
        sets = [(e.name, e.value) for e in effects if isinstance(e, SetMetric)]
        assert [n for n, _ in sets] == [OPEN_RISK_USD, EQUITY, OPEN_RISK_PCT]
        assert sets[0][1] == 0.0  # published before the batch it completed was decided
        incs = [(e.name, dict(e.labels)) for e in effects if isinstance(e, IncMetric)]
        assert incs == [(DECISIONS, {"outcome": "approved"})]
        d.send(KillSwitch())
        rejected = d.at(T + MIN5).send(report(AAA, CANDLE + MIN5))
        incs = [(e.name, dict(e.labels)) for e in rejected if isinstance(e, IncMetric)]
        assert incs == [(DECISIONS, {"outcome": "rejected"}), (REJECTIONS, {"reason": "KILL_SWITCH"})]

    def test_no_metric_effects_unless_asked(self) -> None:
        d = driver()
        effects = d.send(report(AAA, CANDLE))
        assert not any(isinstance(e, SetMetric | IncMetric) for e in effects)


class TestDeterminism:
    def test_the_same_stream_gives_the_same_effects(self) -> None:
        _, first = build(5, cycles=24)
        _, second = build(5, cycles=24)
        assert observe(first.effects) == observe(second.effects)
        assert [type(e) for e in first.effects] == [type(e) for e in second.effects]

    def test_a_broken_1h_close_is_rejected_and_a_gap_restarts_the_series(self) -> None:
        d = driver()
        hour = 3_600_000
        base = START - START % hour - 5 * hour

        def c1(open_ms: int, close: float) -> CandleClosed:
            candle = Candle(open_time_ms=open_ms, open=close, high=close, low=close, close=close, volume=1.0)
            return CandleClosed(symbol=AAA, interval="1h", candle=candle)

        assert kinds(d.send(c1(base, 100.0))) == []
        assert kinds(d.send(c1(base + hour, float("nan")))) == ["risk_candle_rejected"]
        assert kinds(d.send(c1(base + 3 * hour, 101.0))) == ["risk_hourly_gap"]
        assert kinds(d.send(c1(base + 3 * hour, 101.0))) == []  # a duplicate: already counted

"""SymbolMachine scenarios as plain function calls: messages in, effects out, no trio, no clock, no logger.

The same scenarios as `tests/actors/test_symbol_actor.py` (the trio shell), on the bundled real BTCUSDT
klines, plus the machine's own contract (history answers, crash, exhaustive effects).
"""

from __future__ import annotations

import math
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from futures_actor.actors.messages import BookUpdated, MarkUpdated, Verdict
from futures_actor.core.models import RiskRejection
from futures_actor.core.regime import REASON_SPREAD, REASON_WARMUP
from futures_actor.core.types import Regime, Side
from futures_actor.machines.effects import Log, LogLevel
from futures_actor.machines.symbol import (
    FAULT_UNEXPECTED_EXCEPTION,
    REASON_GAP,
    REASON_STALE_BOOK,
    REASON_STALE_CANDLE,
    Crash,
    FetchHistory,
    HistoryFetched,
    HistoryLoaded,
    ReportFault,
    SendAmendStop,
    SendReport,
    SymbolInput,
    SymbolMachine,
    SymbolMachineError,
    VerdictChannelClosed,
    VerdictTimedOut,
)

from .scenarios import (
    CFG,
    SYMBOL,
    Driver,
    Expected,
    amends,
    boom_strategies,
    c5,
    close_ms,
    expected_pipeline,
    first_signal_index,
    history_until,
    interleave,
    live_from,
    load,
    logs,
    position,
    reports,
    rising,
)


@pytest.fixture
def candles(sample_dir: Path) -> tuple[list[Any], list[Any]]:
    return load(sample_dir)


@pytest.fixture
def expected(sample_dir: Path) -> Expected:
    return expected_pipeline(sample_dir)


def test_the_machine_module_imports_no_trio() -> None:
    """The machine is pure: importing it (in a fresh interpreter) loads neither trio nor a logger config."""
    import subprocess

    code = (
        "import sys; import futures_actor.machines.symbol; "
        "print(sorted(m for m in sys.modules if m == 'trio' or m.startswith('trio.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class TestReports:
    """One SendReport per closed 5m candle, equal to what the pure core pipeline decides."""

    def test_one_report_per_5m_close_matching_the_core_pipeline(
        self, candles: Any, expected: Expected
    ) -> None:
        five, hour = candles
        d = Driver()
        effects = d.run(interleave(five, hour))
        assert amends(effects) == []
        sent = [e for e in effects if isinstance(e, SendReport)]
        assert [s.report.candle_open_time_ms for s in sent] == [c.open_time_ms for c in five]
        n_signals = 0
        for s, candle, (_, regime, signals) in zip(sent, five, expected, strict=True):
            r = s.report
            assert (r.symbol, r.regime, r.signals) == (SYMBOL, regime, signals)
            assert r.mid_price == candle.close  # no book in replay
            assert (r.spread_pct, r.funding_rate, r.reply) == (None, None, None)
            assert s.verdict_timeout_s == (CFG.risk.verdict_timeout_seconds if signals else None)
            n_signals += len(signals)
        assert n_signals > 0, "the slice must contain real signals for this test to mean anything"

    def test_no_signals_before_warm_up(self, candles: Any) -> None:
        five, hour = candles
        sent = reports(Driver().run(interleave(five[:300], hour)))
        assert len(sent) == 300
        assert all(r.signals == () for r in sent)
        assert {r.regime.reason for r in sent} == {REASON_WARMUP}
        assert {r.regime.regime for r in sent} == {Regime.CHOP_NO_TRADE}

    def test_history_warms_the_machine(self, candles: Any, expected: Expected) -> None:
        five, hour = candles
        k = first_signal_index(expected)
        d = Driver(history=lambda: history_until(five, hour, k))
        assert d.machine.engine.store_5m.last_open_time_ms == five[k - 1].open_time_ms
        loaded = logs(d.effects, "history_loaded")
        assert len(loaded) == 1
        assert loaded[0].fields["why"] == "start"
        assert loaded[0].fields["warm"] is True
        sent = reports(d.run(live_from(five, hour, k)))
        assert len(sent) == 1  # history candles are not decided again
        assert sent[0].signals == expected[k][2] != ()
        assert sent[0].regime == expected[k][1]

    def test_malformed_history_is_logged_and_the_engine_starts_empty(self, candles: Any) -> None:
        five, hour = candles
        bad = [five[0], five[2]]  # not contiguous
        d = Driver(history=lambda: (bad, hour[:1]))
        assert [e.event for e in logs(d.effects)] == ["history_rejected"]
        assert len(d.machine.engine.store_5m) == 0


class TestVerdicts:
    """Verdicts and their absence are only logged; the machine keeps no state for them."""

    def test_verdict_is_logged(self) -> None:
        m = SymbolMachine(symbol=SYMBOL, cfg=CFG, has_history=False)
        rejection = RiskRejection(code="MAX_POSITIONS", message="2 open")
        out = m.handle(
            Verdict(symbol=SYMBOL, candle_open_time_ms=5, plan=None, rejection=rejection, explanation="x"),
            now_ms=0,
        )
        assert out == [
            Log(
                level=LogLevel.INFO,
                event="verdict",
                fields={
                    "candle_open_time_ms": 5,
                    "approved": False,
                    "code": "MAX_POSITIONS",
                    "explanation": "x",
                },
            )
        ]

    def test_timeout_and_closed_reply_are_warnings(self) -> None:
        m = SymbolMachine(symbol=SYMBOL, cfg=CFG, has_history=False)
        out = [
            *m.handle(VerdictTimedOut(candle_open_time_ms=7, timeout_s=30.0), now_ms=0),
            *m.handle(VerdictChannelClosed(candle_open_time_ms=8), now_ms=0),
        ]
        assert [(e.level, e.event) for e in logs(out)] == [
            (LogLevel.WARNING, "verdict_timeout"),
            (LogLevel.WARNING, "verdict_channel_closed"),
        ]
        assert logs(out)[0].fields == {"candle_open_time_ms": 7, "timeout_s": 30.0}


class TestFreshness:
    """Eligibility re-checked per decision: book freshness and spread."""

    def _decide_k(self, candles: Any, expected: Expected, extra: list[SymbolInput]) -> Any:
        five, hour = candles
        k = first_signal_index(expected)
        d = Driver(history=lambda: history_until(five, hour, k))
        sent = [e for e in d.run([*extra, *live_from(five, hour, k)]) if isinstance(e, SendReport)]
        assert len(sent) == 1
        return sent[0]

    def _book(self, candles: Any, expected: Expected, *, age_s: float, spread: float = 1e-5) -> BookUpdated:
        five, _ = candles
        k = first_signal_index(expected)
        mid = five[k].close
        ts = close_ms(five[k]) - int(age_s * 1000)
        return BookUpdated(symbol=SYMBOL, bid=mid * (1 - spread / 2), ask=mid * (1 + spread / 2), ts_ms=ts)

    def test_fresh_tight_book_keeps_the_signal(self, candles: Any, expected: Expected) -> None:
        book = self._book(candles, expected, age_s=1.0)
        sent = self._decide_k(candles, expected, [book])
        assert sent.report.signals
        assert sent.verdict_timeout_s == CFG.risk.verdict_timeout_seconds
        assert sent.report.mid_price == pytest.approx((book.bid + book.ask) / 2)
        assert sent.report.spread_pct == pytest.approx(1e-5)

    def test_stale_book_means_no_signals(self, candles: Any, expected: Expected) -> None:
        stale = CFG.health.stale_data_seconds + 1
        sent = self._decide_k(candles, expected, [self._book(candles, expected, age_s=stale)])
        assert sent.report.signals == ()
        assert sent.verdict_timeout_s is None
        assert sent.report.regime.regime is Regime.CHOP_NO_TRADE
        assert sent.report.regime.reason == REASON_STALE_BOOK
        assert sent.report.regime.values["book_age_s"] == pytest.approx(stale)

    def test_candle_far_older_than_the_book_means_no_signals(self, candles: Any, expected: Expected) -> None:
        book = self._book(candles, expected, age_s=-(CFG.health.stale_data_seconds + 1))
        assert self._decide_k(candles, expected, [book]).report.regime.reason == REASON_STALE_CANDLE

    def test_wide_spread_means_no_signals(self, candles: Any, expected: Expected) -> None:
        book = self._book(candles, expected, age_s=1.0, spread=CFG.universe.max_spread_pct * 2)
        sent = self._decide_k(candles, expected, [book])
        assert sent.report.signals == ()
        assert sent.report.regime.reason == REASON_SPREAD

    def test_bad_book_is_ignored(self, candles: Any) -> None:
        five, hour = candles
        bad = BookUpdated(symbol=SYMBOL, bid=math.nan, ask=1.0, ts_ms=close_ms(five[0]))
        effects = Driver().run([bad, *interleave(five[:1], hour)])
        assert [e.event for e in logs(effects, "book_rejected")] == ["book_rejected"]
        (r,) = reports(effects)
        assert (r.spread_pct, r.mid_price) == (None, five[0].close)

    def test_an_older_book_never_replaces_a_newer_one(self, candles: Any, expected: Expected) -> None:
        fresh = self._book(candles, expected, age_s=1.0)
        older = self._book(candles, expected, age_s=CFG.health.stale_data_seconds + 1)
        sent = self._decide_k(candles, expected, [fresh, older])
        assert sent.report.signals
        assert sent.report.mid_price == pytest.approx((fresh.bid + fresh.ask) / 2)


class TestCandleHygiene:
    """Duplicates, malformed candles and gaps never crash the machine nor double-report."""

    def test_duplicate_candle_gives_no_second_report(self, candles: Any) -> None:
        five, _ = candles
        effects = Driver().run([c5(five[0]), c5(five[1]), c5(five[1]), c5(five[2])])
        assert [r.candle_open_time_ms for r in reports(effects)] == [c.open_time_ms for c in five[:3]]
        assert [e.level for e in logs(effects, "candle_duplicate")] == [LogLevel.DEBUG]

    def test_nan_candle_is_skipped_and_the_machine_lives_on(self, candles: Any) -> None:
        five, _ = candles
        bad = msgspec.structs.replace(five[1], close=math.nan)
        d = Driver()
        effects = d.run([c5(five[0]), c5(bad), c5(five[1]), c5(five[2])])
        assert [r.candle_open_time_ms for r in reports(effects)] == [c.open_time_ms for c in five[:3]]
        rejected = logs(effects, "candle_rejected")
        assert [(e.level, e.fields["field"]) for e in rejected] == [(LogLevel.WARNING, "close")]
        assert d.crashed is None
        assert not any(isinstance(e, ReportFault) for e in effects)

    def test_gap_without_history_reports_no_decision_and_restarts_the_series(self, candles: Any) -> None:
        five, _ = candles
        d = Driver()
        effects = d.run([c5(c) for c in five[:5]] + [c5(five[8]), c5(five[9])])
        sent = reports(effects)
        assert [r.candle_open_time_ms for r in sent] == [
            c.open_time_ms for c in (*five[:5], five[8], five[9])
        ]
        assert (sent[5].regime.reason, sent[5].signals) == (REASON_GAP, ())
        assert sent[5].regime.values["missing_count"] == 3
        assert sent[6].regime.reason == REASON_WARMUP
        assert not any(isinstance(e, FetchHistory) for e in effects)
        (gap,) = logs(effects, "candle_gap")
        assert gap.fields["repair"] == "reset"
        assert gap.fields["missing_count"] == 3
        store = d.machine.engine.store_5m
        assert len(store) == 2
        assert store.last_open_time_ms == five[9].open_time_ms

    def test_gap_with_history_asks_for_it_then_decides_the_next_candle_like_the_core(
        self, candles: Any, expected: Expected
    ) -> None:
        five, hour = candles
        k = first_signal_index(expected)
        # Start from history ending at k-10; the live feed then skips to candle k-1 (a gap of 8).
        m = SymbolMachine(symbol=SYMBOL, cfg=CFG, has_history=True)
        start_five, start_hour = history_until(five, hour, k - 10)
        m.handle(HistoryLoaded(five=start_five, hour=start_hour), now_ms=0)
        msgs = live_from(five, hour, k - 1, n=2)
        effects = []
        for msg in msgs[:-1]:
            effects += m.handle(msg, now_ms=0)
        # The gapped candle: a warning, then the request; no report until the answer.
        assert [type(e) for e in effects[-2:]] == [Log, FetchHistory]
        assert effects[-1] == FetchHistory(symbol=SYMBOL)
        assert logs(effects, "candle_gap")[0].fields["repair"] == "history"
        assert reports(effects) == []
        assert m.awaiting_history
        with pytest.raises(SymbolMachineError, match="FetchHistory is unanswered"):
            m.handle(msgs[-1], now_ms=0)
        rest_five, rest_hour = history_until(five, hour, k)  # REST now has everything up to k-1
        answered = m.handle(HistoryFetched(five=rest_five, hour=rest_hour), now_ms=0)
        assert [e.fields["why"] for e in logs(answered, "history_loaded")] == ["gap"]
        assert [r.regime.reason for r in reports(answered)] == [REASON_GAP]
        (nxt,) = reports(m.handle(msgs[-1], now_ms=0))
        assert nxt.candle_open_time_ms == five[k].open_time_ms
        assert nxt.regime == expected[k][1]
        assert nxt.signals == expected[k][2] != ()

    def test_failed_history_is_logged_and_the_series_restarts(self, candles: Any) -> None:
        five, _ = candles
        calls = [0]

        def history() -> Any:
            calls[0] += 1
            if calls[0] > 1:
                raise ConnectionError("rest down")
            return five[:5], []

        d = Driver(history=history)
        effects = d.run([c5(five[8])])
        assert [type(e).__name__ for e in effects] == ["Log", "FetchHistory", "Log", "Log", "SendReport"]
        assert [e.event for e in logs(effects)] == ["candle_gap", "history_failed", "decision"]
        assert logs(effects, "history_failed")[0].fields == {
            "why": "gap",
            "error": "ConnectionError('rest down')",
        }
        assert reports(effects)[0].regime.reason == REASON_GAP
        assert d.machine.engine.store_5m.last_open_time_ms == five[8].open_time_ms
        assert len(d.machine.engine.store_5m) == 1

    def test_an_answer_nobody_asked_for_is_a_runtime_bug(self) -> None:
        m = SymbolMachine(symbol=SYMBOL, cfg=CFG, has_history=True)
        with pytest.raises(SymbolMachineError, match="without a FetchHistory"):
            m.handle(HistoryFetched(five=[], hour=[]), now_ms=0)


class TestTrailing:
    """PositionUpdated starts/clears trailing; each 5m close may move the stop, only toward profit."""

    K = 700  # warm by then (1h EMA50 needs 50 h)

    def _driver(self, candles: Any, **kwargs: Any) -> Driver:
        five, hour = candles
        return Driver(history=lambda: history_until(five, hour, self.K), **kwargs)

    def test_rising_closes_send_monotone_amends_below_the_price(self, candles: Any) -> None:
        five, _ = candles
        last = five[self.K - 1]
        synthetic = rising(last, 12, dip_at=6)
        d = self._driver(candles)
        effects = d.run([position(last.close), *[c5(c) for c in synthetic]])
        assert len(reports(effects)) == len(synthetic)
        sent = amends(effects)
        assert len(sent) >= 8
        stops = [a.new_stop for a in sent]
        assert all(a.trade_id == "T1" and a.symbol == SYMBOL for a in sent)
        assert stops == sorted(stops)
        assert len(set(stops)) == len(stops)
        closes = {c.close for c in synthetic}
        assert all(a.reference_price in closes and a.new_stop < a.reference_price for a in sent)
        assert stops[0] > last.close * 0.99
        assert synthetic[6].close not in {a.reference_price for a in sent}
        state = d.machine.trailing_state("T1")
        assert state is not None
        assert state.active
        assert state.stop_price == stops[-1]
        # Protection first: each candle's amendment precedes its report.
        kinds = [type(e) for e in effects if isinstance(e, SendAmendStop | SendReport)]
        first_amend = kinds.index(SendAmendStop)
        assert kinds[first_amend + 1] is SendReport

    def test_short_position_trails_down_on_falling_closes(self, candles: Any) -> None:
        five, _ = candles
        last = five[self.K - 1]
        falling = rising(last, 8, step=-0.003)
        d = self._driver(candles)
        sent = amends(d.run([position(last.close, side=Side.SHORT), *[c5(c) for c in falling]]))
        stops = [a.new_stop for a in sent]
        assert stops
        assert stops == sorted(stops, reverse=True)
        assert all(a.new_stop > a.reference_price for a in sent)

    def test_stop_never_proposed_through_the_mark_price(self, candles: Any) -> None:
        five, _ = candles
        last = five[self.K - 1]
        msgs: list[SymbolInput] = [position(last.close)]
        for c in rising(last, 3):
            mark = MarkUpdated(
                symbol=SYMBOL,
                mark_price=c.close * 0.95,
                funding_rate=0.0001,
                next_funding_ms=0,
                ts_ms=close_ms(c),
            )
            msgs += [mark, c5(c)]
        effects = self._driver(candles).run(msgs)
        assert amends(effects) == []
        assert reports(effects)[-1].funding_rate == 0.0001

    def test_flat_position_clears_trailing(self, candles: Any) -> None:
        five, _ = candles
        last = five[self.K - 1]
        d = self._driver(candles)
        effects = d.run(
            [position(last.close), position(last.close, qty="0"), *[c5(c) for c in rising(last, 5)]]
        )
        assert amends(effects) == []
        assert [e.event for e in logs(effects) if e.event.startswith("trail_")] == [
            "trail_tracking",
            "trail_cleared",
        ]
        assert d.machine.trailing_state("T1") is None

    def test_not_active_before_after_r(self, candles: Any) -> None:
        five, _ = candles
        last = five[self.K - 1]
        effects = self._driver(candles).run(
            [position(last.close, after_r=1.0), *[c5(c) for c in rising(last, 3)]]
        )
        assert amends(effects) == []

    def test_bad_position_is_rejected_and_the_machine_lives_on(self, candles: Any) -> None:
        five, _ = candles
        last = five[self.K - 1]
        bad = msgspec.structs.replace(
            position(last.close), initial_stop_price=Decimal(repr(last.close * 1.01))
        )
        d = self._driver(candles)
        effects = d.run([bad, *[c5(c) for c in rising(last, 3)]])
        assert amends(effects) == []
        assert len(reports(effects)) == 3
        assert [e.level for e in logs(effects, "position_rejected")] == [LogLevel.ERROR]
        assert d.machine.trailing_state("T1") is None


class TestFaults:
    """A bug in decision code ends in Log, ReportFault and Crash; the machine then refuses everything."""

    def test_strategy_exception_reports_the_fault_and_crashes(self, candles: Any) -> None:
        five, _ = candles
        d = Driver(strategies=boom_strategies())
        effects = d.run([c5(c) for c in five[:3]])
        assert [type(e) for e in effects] == [Log, ReportFault, Crash]
        log, fault, crash = effects
        assert isinstance(log, Log)
        assert isinstance(fault, ReportFault)
        assert isinstance(crash, Crash)
        assert (log.level, log.event) == (LogLevel.ERROR, "decision_exception")
        assert log.fields["exc_info"] is crash.error
        assert (fault.kind, fault.symbol) == (FAULT_UNEXPECTED_EXCEPTION, SYMBOL)
        assert "ZeroDivisionError" in fault.detail
        assert str(five[0].open_time_ms) in fault.detail
        assert isinstance(crash.error, ZeroDivisionError)
        with pytest.raises(SymbolMachineError, match="crashed"):
            d.machine.handle(c5(five[1]), now_ms=0)
        # A fresh machine (the restarted actor) carries on with the rest.
        fresh = Driver()
        assert [r.candle_open_time_ms for r in reports(fresh.run([c5(c) for c in five[1:3]]))] == [
            c.open_time_ms for c in five[1:3]
        ]

    def test_stop_amendment_leaves_before_a_crashing_strategy_runs(self, candles: Any) -> None:
        five, hour = candles
        last = five[TestTrailing.K - 1]
        d = Driver(history=lambda: history_until(five, hour, TestTrailing.K), strategies=boom_strategies())
        effects = d.run([position(last.close), c5(rising(last, 1)[0])])
        kinds = [type(e).__name__ for e in effects if not isinstance(e, Log)]
        assert kinds == ["SendAmendStop", "ReportFault", "Crash"]
        assert [a.trade_id for a in amends(effects)] == ["T1"]

    def test_foreign_and_unknown_interval_messages_are_logged(self, candles: Any) -> None:
        five, _ = candles
        m = SymbolMachine(symbol=SYMBOL, cfg=CFG, has_history=False)
        foreign = msgspec.structs.replace(c5(five[0]), symbol="ETHUSDT")
        odd = msgspec.structs.replace(c5(five[0]), interval="15m")
        out = [*m.handle(foreign, now_ms=0), *m.handle(odd, now_ms=0)]
        assert [(e.event, e.level) for e in logs(out)] == [
            ("foreign_message", LogLevel.WARNING),
            ("candle_interval_ignored", LogLevel.WARNING),
        ]
        assert len(m.engine.store_5m) == 0

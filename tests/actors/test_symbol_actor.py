"""SymbolActor scenarios on real BTCUSDT klines (the bundled data/sample), under trio's autojump mock clock."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from futures_actor.actors.messages import (
    AmendStop,
    BookUpdated,
    MarkUpdated,
    SymbolReport,
    Verdict,
)
from futures_actor.actors.symbol_actor import (
    FAULT_UNEXPECTED_EXCEPTION,
    REASON_GAP,
    REASON_STALE_BOOK,
    REASON_STALE_CANDLE,
    SymbolActor,
    SymbolInbox,
    open_symbol_inbox,
)
from futures_actor.core.models import RiskRejection
from futures_actor.core.regime import REASON_SPREAD, REASON_WARMUP
from futures_actor.core.types import Candle, Regime
from tests.machines.scenarios import (
    CFG,
    SYMBOL,
    Expected,
    boom_strategies,
    c5,
    close_ms,
    expected_pipeline,
    first_signal_index,
    history_until,
    interleave,
    live_from,
    load,
    position,
    rising,
)

N_5M = 1200  # 100 hours: warm after ~50 h of 1h candles, several real signals after that
TEST_BUFFER = 10_000  # test-side collector channels: large enough to never block the actor


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def candles(sample_dir: Path) -> tuple[list[Candle], list[Candle]]:
    return load(sample_dir, N_5M)


@pytest.fixture
def expected(sample_dir: Path) -> Expected:
    return expected_pipeline(sample_dir, N_5M)


class Rig:
    """An actor wired to collector channels for its risk and execution outputs."""

    def __init__(self, **kwargs: Any) -> None:
        self.risk_send, self.risk_recv = trio.open_memory_channel[Any](TEST_BUFFER)
        self.exec_send, self.exec_recv = trio.open_memory_channel[Any](TEST_BUFFER)
        self.faults: list[tuple[str, str, str]] = []
        kwargs.setdefault("on_fault", lambda *a: self.faults.append(a))
        kwargs.setdefault("cfg", CFG)
        self.actor = SymbolActor(
            symbol=SYMBOL, risk_send=self.risk_send, execution_send=self.exec_send, **kwargs
        )
        self.inbox_send, self.inbox_recv = open_symbol_inbox()

    async def run(self, msgs: Sequence[SymbolInbox]) -> tuple[list[SymbolReport], list[AmendStop]]:
        """Start the actor, deliver `msgs`, end the inbox, wait for the actor, return its outputs."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.actor.run, self.inbox_recv)
            async with self.inbox_send:
                for m in msgs:
                    await self.inbox_send.send(m)
        return self.drain()

    def drain(self) -> tuple[list[SymbolReport], list[AmendStop]]:
        reports: list[SymbolReport] = []
        amends: list[AmendStop] = []
        for chan, sink in ((self.risk_recv, reports), (self.exec_recv, amends)):
            while True:
                try:
                    sink.append(chan.receive_nowait())
                except trio.WouldBlock:
                    break
        return reports, amends


def quiet_log() -> Any:
    """A logger filtered at INFO, like production: debug lines cost (almost) nothing."""
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        processors=[structlog.processors.JSONRenderer()],
    )


def loader(five: list[Candle], hour: list[Candle], calls: list[str] | None = None) -> Any:
    async def history(symbol: str) -> tuple[list[Candle], list[Candle]]:
        if calls is not None:
            calls.append(symbol)
        return five, hour

    return history


class TestReports:
    """One SymbolReport per closed 5m candle, equal to what the pure core pipeline decides."""

    async def test_one_report_per_5m_close_matching_the_core_pipeline(
        self, autojump_clock: trio.testing.MockClock, candles: Any, expected: Any
    ) -> None:
        five, hour = candles
        rig = Rig(log=quiet_log())
        msgs = interleave(five, hour)
        t0 = time.perf_counter()
        reports, amends = await rig.run(msgs)
        elapsed = time.perf_counter() - t0
        print(
            f"\nSymbolActor: {len(five)} 5m candles in {elapsed:.3f} s = {elapsed / len(five) * 1e6:.0f} µs/candle"
        )

        assert amends == []
        assert [r.candle_open_time_ms for r in reports] == [c.open_time_ms for c in five]
        n_signals = 0
        for report, candle, (_, regime, signals) in zip(reports, five, expected, strict=True):
            assert report.symbol == SYMBOL
            assert report.regime == regime
            assert report.signals == signals
            assert report.mid_price == candle.close  # no book in replay
            assert report.spread_pct is None
            assert report.funding_rate is None
            assert (report.reply is not None) == bool(signals)
            n_signals += len(signals)
        assert n_signals > 0, "the slice must contain real signals for this test to mean anything"

    async def test_no_signals_before_warm_up(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, hour = candles
        rig = Rig(log=quiet_log())
        reports, _ = await rig.run(interleave(five[:300], hour))
        assert len(reports) == 300
        assert all(r.signals == () for r in reports)
        assert {r.regime.reason for r in reports} == {REASON_WARMUP}
        assert {r.regime.regime for r in reports} == {Regime.CHOP_NO_TRADE}

    async def test_history_warms_the_actor_before_started(
        self, autojump_clock: trio.testing.MockClock, candles: Any, expected: Any
    ) -> None:
        five, hour = candles
        k = first_signal_index(expected)
        calls: list[str] = []
        rig = Rig(history=loader(*history_until(five, hour, k), calls=calls), log=quiet_log())
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.actor.run, rig.inbox_recv)
            assert calls == [SYMBOL]  # awaited before started()
            assert rig.actor.engine.store_5m.last_open_time_ms == five[k - 1].open_time_ms
            async with rig.inbox_send:
                for m in live_from(five, hour, k):
                    await rig.inbox_send.send(m)
        reports, _ = rig.drain()
        assert len(reports) == 1  # history candles are not decided again
        assert reports[0].signals == expected[k][2] != ()
        assert reports[0].regime == expected[k][1]


class TestVerdicts:
    """A report with signals carries a one-shot reply channel; the actor never waits on it in its loop."""

    async def _report_with_signal(
        self, rig: Rig, five: list[Candle], hour: list[Candle], k: int
    ) -> SymbolReport:
        for m in live_from(five, hour, k):
            await rig.inbox_send.send(m)
        return await rig.risk_recv.receive()  # type: ignore[no-any-return]

    async def test_verdict_is_received_and_logged(
        self, autojump_clock: trio.testing.MockClock, candles: Any, expected: Any
    ) -> None:
        five, hour = candles
        k = first_signal_index(expected)
        with capture_logs() as logs:
            rig = Rig(history=loader(*history_until(five, hour, k)))
            async with trio.open_nursery() as nursery:
                await nursery.start(rig.actor.run, rig.inbox_recv)
                report = await self._report_with_signal(rig, five, hour, k)
                assert report.signals
                rejection = RiskRejection(code="MAX_POSITIONS", message="2 open")
                report.reply.send_nowait(
                    Verdict(
                        symbol=SYMBOL,
                        candle_open_time_ms=report.candle_open_time_ms,
                        plan=None,
                        rejection=rejection,
                    )
                )
                await trio.testing.wait_all_tasks_blocked()
                await rig.inbox_send.aclose()
        verdicts = [e for e in logs if e["event"] == "verdict"]
        assert len(verdicts) == 1
        assert verdicts[0]["code"] == "MAX_POSITIONS"
        assert verdicts[0]["approved"] is False

    async def test_verdict_timeout_closes_the_reply_channel(
        self, autojump_clock: trio.testing.MockClock, candles: Any, expected: Any
    ) -> None:
        five, hour = candles
        k = first_signal_index(expected)
        with capture_logs() as logs:
            rig = Rig(history=loader(*history_until(five, hour, k)))
            async with trio.open_nursery() as nursery:
                await nursery.start(rig.actor.run, rig.inbox_recv)
                report = await self._report_with_signal(rig, five, hour, k)
                t0 = trio.current_time()
                # The actor loop stays responsive while the verdict is pending: the next close is reported.
                for m in live_from(five, hour, k + 1):
                    await rig.inbox_send.send(m)
                nxt = await rig.risk_recv.receive()
                assert nxt.candle_open_time_ms == five[k + 1].open_time_ms
                assert trio.current_time() - t0 < CFG.risk.verdict_timeout_seconds
                await trio.sleep(CFG.risk.verdict_timeout_seconds - 0.01)
                assert not any(e["event"] == "verdict_timeout" for e in logs)
                await trio.sleep(0.02)
                assert trio.current_time() - t0 >= CFG.risk.verdict_timeout_seconds
                with pytest.raises(trio.BrokenResourceError):
                    report.reply.send_nowait(
                        Verdict(symbol=SYMBOL, candle_open_time_ms=0, plan=None, rejection=None)
                    )
                await rig.inbox_send.aclose()
        timeouts = [e["candle_open_time_ms"] for e in logs if e["event"] == "verdict_timeout"]
        assert timeouts.count(report.candle_open_time_ms) == 1

    async def test_verdict_on_the_inbox_is_logged(self, autojump_clock: trio.testing.MockClock) -> None:
        with capture_logs() as logs:
            rig = Rig()
            await rig.run(
                [Verdict(symbol=SYMBOL, candle_open_time_ms=5, plan=None, rejection=None, explanation="x")]
            )
        assert [e["candle_open_time_ms"] for e in logs if e["event"] == "verdict"] == [5]


class TestFreshness:
    """Eligibility re-checked per decision: book freshness and spread."""

    async def _decide_k(self, candles: Any, expected: Any, extra: list[SymbolInbox]) -> SymbolReport:
        five, hour = candles
        k = first_signal_index(expected)
        rig = Rig(history=loader(*history_until(five, hour, k)), log=quiet_log())
        reports, _ = await rig.run([*extra, *live_from(five, hour, k)])
        assert len(reports) == 1
        return reports[0]

    def _book(self, candles: Any, expected: Any, *, age_s: float, spread: float = 1e-5) -> BookUpdated:
        five, _ = candles
        k = first_signal_index(expected)
        mid = five[k].close
        ts = close_ms(five[k]) - int(age_s * 1000)
        return BookUpdated(symbol=SYMBOL, bid=mid * (1 - spread / 2), ask=mid * (1 + spread / 2), ts_ms=ts)

    async def test_fresh_tight_book_keeps_the_signal(
        self, autojump_clock: trio.testing.MockClock, candles: Any, expected: Any
    ) -> None:
        book = self._book(candles, expected, age_s=1.0)
        report = await self._decide_k(candles, expected, [book])
        assert report.signals
        assert report.mid_price == pytest.approx((book.bid + book.ask) / 2)
        assert report.spread_pct == pytest.approx(1e-5)

    async def test_stale_book_means_no_signals(
        self, autojump_clock: trio.testing.MockClock, candles: Any, expected: Any
    ) -> None:
        book = self._book(candles, expected, age_s=CFG.health.stale_data_seconds + 1)
        report = await self._decide_k(candles, expected, [book])
        assert report.signals == ()
        assert report.reply is None
        assert report.regime.regime is Regime.CHOP_NO_TRADE
        assert report.regime.reason == REASON_STALE_BOOK
        assert report.regime.values["book_age_s"] == pytest.approx(CFG.health.stale_data_seconds + 1)

    async def test_candle_far_older_than_the_book_means_no_signals(
        self, autojump_clock: trio.testing.MockClock, candles: Any, expected: Any
    ) -> None:
        book = self._book(candles, expected, age_s=-(CFG.health.stale_data_seconds + 1))
        report = await self._decide_k(candles, expected, [book])
        assert report.signals == ()
        assert report.regime.reason == REASON_STALE_CANDLE

    async def test_wide_spread_means_no_signals(
        self, autojump_clock: trio.testing.MockClock, candles: Any, expected: Any
    ) -> None:
        wide = CFG.universe.max_spread_pct * 2
        report = await self._decide_k(
            candles, expected, [self._book(candles, expected, age_s=1.0, spread=wide)]
        )
        assert report.signals == ()
        assert report.regime.reason == REASON_SPREAD

    async def test_bad_book_is_ignored(self, autojump_clock: trio.testing.MockClock, candles: Any) -> None:
        five, hour = candles
        rig = Rig(log=quiet_log())
        bad = BookUpdated(symbol=SYMBOL, bid=math.nan, ask=1.0, ts_ms=close_ms(five[0]))
        reports, _ = await rig.run([bad, *interleave(five[:1], hour)])
        assert reports[0].spread_pct is None
        assert reports[0].mid_price == five[0].close


class TestCandleHygiene:
    """Duplicates, malformed candles and gaps never crash the actor nor double-report."""

    async def test_duplicate_candle_gives_no_second_report(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, _ = candles
        rig = Rig(log=quiet_log())
        reports, _ = await rig.run([c5(five[0]), c5(five[1]), c5(five[1]), c5(five[2])])
        assert [r.candle_open_time_ms for r in reports] == [c.open_time_ms for c in five[:3]]

    async def test_nan_candle_is_skipped_and_the_actor_lives_on(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, _ = candles
        bad = msgspec.structs.replace(five[1], close=math.nan)
        with capture_logs() as logs:
            rig = Rig()
            reports, _ = await rig.run([c5(five[0]), c5(bad), c5(five[1]), c5(five[2])])
        assert [r.candle_open_time_ms for r in reports] == [c.open_time_ms for c in five[:3]]
        rejected = [e for e in logs if e["event"] == "candle_rejected"]
        assert len(rejected) == 1
        assert rejected[0]["field"] == "close"
        assert rig.faults == []

    async def test_gap_without_history_reports_no_decision_and_restarts_the_series(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, _ = candles
        rig = Rig(log=quiet_log())
        reports, _ = await rig.run([c5(c) for c in five[:5]] + [c5(five[8]), c5(five[9])])
        assert [r.candle_open_time_ms for r in reports] == [
            c.open_time_ms for c in (*five[:5], five[8], five[9])
        ]
        assert reports[5].regime.reason == REASON_GAP
        assert reports[5].signals == ()
        assert reports[5].regime.values["missing_count"] == 3
        assert reports[6].regime.reason == REASON_WARMUP
        store = rig.actor.engine.store_5m
        assert len(store) == 2
        assert store.last_open_time_ms == five[9].open_time_ms

    async def test_gap_with_history_rebuilds_and_decides_the_next_candle_like_the_core(
        self, autojump_clock: trio.testing.MockClock, candles: Any, expected: Any
    ) -> None:
        five, hour = candles
        k = first_signal_index(expected)
        # Start from history ending at k-10; the live feed then skips to candle k-1 (a gap of 8).
        calls: list[str] = []
        state = {"hist": history_until(five, hour, k - 10)}

        async def history(symbol: str) -> tuple[list[Candle], list[Candle]]:
            calls.append(symbol)
            return state["hist"]

        rig = Rig(history=history, log=quiet_log())
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.actor.run, rig.inbox_recv)
            state["hist"] = history_until(five, hour, k)  # REST now has everything up to k-1
            async with rig.inbox_send:
                for m in live_from(five, hour, k - 1, n=2):
                    await rig.inbox_send.send(m)
        reports, _ = rig.drain()
        assert calls == [SYMBOL, SYMBOL]
        assert [r.regime.reason for r in reports][:1] == [REASON_GAP]
        assert reports[1].candle_open_time_ms == five[k].open_time_ms
        assert reports[1].regime == expected[k][1]
        assert reports[1].signals == expected[k][2] != ()


class TestTrailing:
    """PositionUpdated starts/clears trailing; each 5m close may move the stop, only toward profit."""

    K = 700  # warm by then (1h EMA50 needs 50 h)

    async def test_rising_closes_send_monotone_amends_below_the_price(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, hour = candles
        last = five[self.K - 1]
        synthetic = rising(last, 12, dip_at=6)
        rig = Rig(history=loader(*history_until(five, hour, self.K)), log=quiet_log())
        reports, amends = await rig.run([position(last.close), *[c5(c) for c in synthetic]])
        assert len(reports) == len(synthetic)
        assert len(amends) >= 8
        closes = {c.close for c in synthetic}
        stops = [a.new_stop for a in amends]
        assert all(a.trade_id == "T1" and a.symbol == SYMBOL for a in amends)
        assert stops == sorted(stops)
        assert len(set(stops)) == len(stops)
        assert all(a.reference_price in closes and a.new_stop < a.reference_price for a in amends)
        assert stops[0] > last.close * 0.99
        # The dip candle (and the one after, still below the trailed level) sends nothing.
        amended_at = {a.reference_price for a in amends}
        assert synthetic[6].close not in amended_at
        state = rig.actor.trailing_state("T1")
        assert state is not None
        assert state.active
        assert state.stop_price == stops[-1]

    async def test_stop_never_proposed_through_the_mark_price(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, hour = candles
        last = five[self.K - 1]
        synthetic = rising(last, 3)
        msgs: list[SymbolInbox] = [position(last.close)]
        for c in synthetic:
            # The mark sits far below the close: every candidate would trigger at once.
            msgs.append(
                MarkUpdated(
                    symbol=SYMBOL,
                    mark_price=c.close * 0.95,
                    funding_rate=0.0001,
                    next_funding_ms=0,
                    ts_ms=close_ms(c),
                )
            )
            msgs.append(c5(c))
        rig = Rig(history=loader(*history_until(five, hour, self.K)), log=quiet_log())
        reports, amends = await rig.run(msgs)
        assert amends == []
        assert reports[-1].funding_rate == 0.0001

    async def test_flat_position_clears_trailing(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, hour = candles
        last = five[self.K - 1]
        rig = Rig(history=loader(*history_until(five, hour, self.K)), log=quiet_log())
        _, amends = await rig.run(
            [position(last.close), position(last.close, qty="0"), *[c5(c) for c in rising(last, 5)]]
        )
        assert amends == []
        assert rig.actor.trailing_state("T1") is None

    async def test_not_active_before_after_r(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, hour = candles
        last = five[self.K - 1]
        # 1 R = 1 % of entry; three +0.3 % closes stay below 1 R.
        rig = Rig(history=loader(*history_until(five, hour, self.K)), log=quiet_log())
        _, amends = await rig.run([position(last.close, after_r=1.0), *[c5(c) for c in rising(last, 3)]])
        assert amends == []

    async def test_bad_position_is_rejected_and_the_actor_lives_on(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, hour = candles
        last = five[self.K - 1]
        bad = msgspec.structs.replace(
            position(last.close), initial_stop_price=Decimal(repr(last.close * 1.01))
        )
        with capture_logs() as logs:
            rig = Rig(history=loader(*history_until(five, hour, self.K)))
            reports, amends = await rig.run([bad, *[c5(c) for c in rising(last, 3)]])
        assert amends == []
        assert len(reports) == 3
        assert any(e["event"] == "position_rejected" for e in logs)
        assert rig.actor.trailing_state("T1") is None


class TestFaults:
    """A bug in decision code reports UNEXPECTED_EXCEPTION and propagates out of run() unwrapped."""

    async def test_strategy_exception_calls_on_fault_and_propagates(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, _ = candles
        rig = Rig(strategies=boom_strategies(), log=quiet_log())
        for c in five[:3]:
            rig.inbox_send.send_nowait(c5(c))
        with pytest.raises(ZeroDivisionError, match="strategy bug"):
            await rig.actor.run(rig.inbox_recv)
        assert len(rig.faults) == 1
        kind, symbol, detail = rig.faults[0]
        assert (kind, symbol) == (FAULT_UNEXPECTED_EXCEPTION, SYMBOL)
        assert "ZeroDivisionError" in detail
        assert str(five[0].open_time_ms) in detail
        assert rig.drain() == ([], [])  # the trade is skipped: no report for that candle

        # The inbox survives for the next incarnation (fresh state), which carries on with the rest.
        fresh = SymbolActor(
            symbol=SYMBOL, cfg=CFG, risk_send=rig.risk_send, execution_send=rig.exec_send, log=quiet_log()
        )
        rig.inbox_send.close()
        await fresh.run(rig.inbox_recv)
        reports, _ = rig.drain()
        assert [r.candle_open_time_ms for r in reports] == [c.open_time_ms for c in five[1:3]]

    async def test_failing_on_fault_does_not_mask_the_exception(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, _ = candles

        def on_fault(*_: str) -> None:
            raise RuntimeError("health is down")

        rig = Rig(strategies=boom_strategies(), on_fault=on_fault, log=quiet_log())
        rig.inbox_send.send_nowait(c5(five[0]))
        with pytest.raises(ZeroDivisionError):
            await rig.actor.run(rig.inbox_recv)

    async def test_inbox_end_returns_normally(self, autojump_clock: trio.testing.MockClock) -> None:
        rig = Rig()
        reports, amends = await rig.run([])
        assert (reports, amends) == ([], [])

    async def test_stop_amendment_leaves_before_a_crashing_strategy_runs(
        self, autojump_clock: trio.testing.MockClock, candles: Any
    ) -> None:
        five, hour = candles
        last = five[TestTrailing.K - 1]
        rig = Rig(
            history=loader(*history_until(five, hour, TestTrailing.K)),
            strategies=boom_strategies(),
            log=quiet_log(),
        )
        rig.inbox_send.send_nowait(position(last.close))
        rig.inbox_send.send_nowait(c5(rising(last, 1)[0]))
        with pytest.raises(ZeroDivisionError):
            await rig.actor.run(rig.inbox_recv)
        reports, amends = rig.drain()
        assert reports == []
        assert [a.trade_id for a in amends] == ["T1"]
        assert rig.faults[0][0] == FAULT_UNEXPECTED_EXCEPTION

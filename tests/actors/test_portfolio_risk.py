"""PortfolioRisk actor scenarios under trio's autojump mock clock (AC3, AC4, AC7, AC8, batching, state)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from futures_actor.actors.messages import (
    AccountUpdated,
    CandleClosed,
    EntryAbandoned,
    EntryFilled,
    KillSwitch,
    PortfolioSynced,
    PositionUpdated,
    Resume,
    RetryDecided,
    RetryRequested,
    SafeModeChanged,
    ShadowTradeClosed,
    StopIntake,
    SubmitPlan,
    SymbolReport,
    TradeClosed,
    UniverseChanged,
    Verdict,
)
from futures_actor.actors.metrics import DECISIONS, REJECTIONS, Metrics
from futures_actor.actors.portfolio_risk import (
    LATE,
    NO_ACCOUNT,
    RISK_INBOX_SIZE,
    SHUTTING_DOWN,
    PortfolioRisk,
    RiskInbox,
    open_risk_inbox,
)
from futures_actor.core.clock import ManualWallClock
from futures_actor.core.config import BotConfig
from futures_actor.core.correlation import HourlyCloses, aligned_log_returns, pearson
from futures_actor.core.models import RegimeResult, Signal, TradePlan
from futures_actor.core.performance import ClosedTrade, PerformanceTracker
from futures_actor.core.risk import Exposure
from futures_actor.core.risk_state import DAY_MS, ClosedPnl, RiskState
from futures_actor.core.types import Candle, Regime, Side, SymbolRules
from futures_actor.state.store import StateStore

CFG = BotConfig()
START = int(datetime(2025, 1, 8, 12, tzinfo=UTC).timestamp() * 1000)  # a Wednesday
MIN5 = 300_000
HOUR = 3_600_000
AAA, BBB, CCC = "AAAUSDT", "BBBUSDT", "CCCUSDT"
SYMBOLS = (AAA, BBB, CCC)
STRATEGY = "trend_pullback"


def _rules(symbol: str) -> SymbolRules:
    return SymbolRules(
        symbol=symbol,
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.001"),
        min_qty=Decimal("0.001"),
        max_qty=Decimal("100000"),
        min_notional=Decimal("5"),
        min_price=Decimal("0.01"),
    )


RULES = {s: _rules(s) for s in SYMBOLS}


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def cfg_with(**risk: Any) -> BotConfig:
    return msgspec.structs.replace(CFG, risk=msgspec.structs.replace(CFG.risk, **risk))


def report(
    symbol: str,
    candle: int,
    *,
    side: Side = Side.LONG,
    conf: float = 0.7,
    price: float = 100.0,
    stop_pct: float = 0.01,
    signals: bool = True,
) -> tuple[SymbolReport, trio.MemoryReceiveChannel[Verdict] | None]:
    stop = price * (1 - stop_pct) if side is Side.LONG else price * (1 + stop_pct)
    sig = Signal(
        symbol=symbol,
        strategy=STRATEGY,
        side=side,
        regime=Regime.TREND,
        regime_confidence=conf,
        candle_open_time_ms=candle,
        entry_price=price,
        stop_price=stop,
        stop_pct=stop_pct,
        target_price=price + (price - stop) * 1.5,
        leverage=2.0,
        atr=1.0,
    )
    send, recv = trio.open_memory_channel[Verdict](1) if signals else (None, None)
    rep = SymbolReport(
        symbol=symbol,
        candle_open_time_ms=candle,
        regime=RegimeResult(regime=Regime.TREND, direction=side, confidence=conf, reason="TREND"),
        signals=(sig,) if signals else (),
        mid_price=price,
        reply=send,
    )
    return rep, recv


def account(equity: float, ts: int = START) -> AccountUpdated:
    return AccountUpdated(
        equity_usd=equity,
        wallet_balance_usd=equity,
        available_balance_usd=equity,
        unrealized_pnl_usd=0.0,
        ts_ms=ts,
    )


def closed(trade_id: str, symbol: str, pnl: float, now_ms: int) -> TradeClosed:
    record = {
        "trade_id": trade_id,
        "strategy": STRATEGY,
        "regime": "TREND",
        "entry_order": {"filled_qty": 1.0},
        "risk": {"equity_usd": 10_000.0},
        "result": {"reason": "SL" if pnl < 0 else "TP", "pnl_usd": pnl, "pnl_r_multiple": pnl / 100.0},
        "costs": {"fees_usd": 0.0, "funding_usd": 0.0},
    }
    return TradeClosed(trade_id=trade_id, symbol=symbol, record=record, realized_pnl_usd=pnl, close_ms=now_ms)


def winning_tracker(n: int = 20) -> PerformanceTracker:
    """A tracker whose trend_pullback record qualifies (enough trades, positive expectancy)."""
    tracker = PerformanceTracker(cfg=CFG.performance)
    for i in range(n):
        tracker.record(
            ClosedTrade(
                trade_id=f"hist-{i}",
                strategy=STRATEGY,
                regime=Regime.TREND,
                r_multiple=1.0,
                pnl_usd=100.0,
                equity_usd=10_000.0,
                fees_usd=1.0,
                funding_usd=0.0,
                reason="TP",
            )
        )
    return tracker


def hourly_series(*, correlated_pair: bool, seed: int = 7, n: int = 80) -> dict[str, list[float]]:
    """1h closes: AAA and BBB highly correlated when asked (else independent), CCC independent."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 0.01, n)
    b_ret = base + rng.normal(0.0, 0.002, n) if correlated_pair else rng.normal(0.0, 0.01, n)
    c_ret = rng.normal(0.0, 0.01, n)
    return {s: list(100.0 * np.exp(np.cumsum(r))) for s, r in ((AAA, base), (BBB, b_ret), (CCC, c_ret))}


def hourly_messages(series: Mapping[str, list[float]]) -> list[CandleClosed]:
    first = START - START % HOUR - len(next(iter(series.values()))) * HOUR
    out: list[CandleClosed] = []
    for i in range(len(next(iter(series.values())))):
        for symbol, closes in series.items():
            c = closes[i]
            candle = Candle(open_time_ms=first + i * HOUR, open=c, high=c, low=c, close=c, volume=1.0)
            out.append(CandleClosed(symbol=symbol, interval="1h", candle=candle))
    return out


def corr(series: Mapping[str, list[float]], a: str, b: str) -> float:
    last = START - START % HOUR - HOUR
    ha = HourlyCloses(symbol=a, last_open_time_ms=last, closes=tuple(series[a]))
    hb = HourlyCloses(symbol=b, last_open_time_ms=last, closes=tuple(series[b]))
    pair = aligned_log_returns(ha, hb, CFG.timeframes.corr_lookback_hours)
    assert pair is not None
    r = pearson(*pair)
    assert r is not None
    return r


class Harness:
    """A running actor: its inbox, execution's side, the wall clock."""

    def __init__(
        self,
        actor: PortfolioRisk,
        inbox: trio.MemorySendChannel[RiskInbox],
        execution: trio.MemoryReceiveChannel[Any],
        clock: ManualWallClock,
    ) -> None:
        self.actor = actor
        self.inbox = inbox
        self.execution = execution
        self.clock = clock

    async def send(self, *msgs: RiskInbox) -> None:
        for m in msgs:
            await self.inbox.send(m)
        await trio.testing.wait_all_tasks_blocked()

    def next_candle(self, advance_ms: int = MIN5) -> int:
        """Advance the wall clock; the open time of the 5m candle that just closed."""
        self.clock.advance(advance_ms)
        now = self.clock.now_ms()
        return now - now % MIN5 - MIN5

    async def decide(
        self, *reports: tuple[SymbolReport, trio.MemoryReceiveChannel[Verdict] | None]
    ) -> dict[str, Verdict]:
        await self.send(*(r for r, _ in reports))
        out: dict[str, Verdict] = {}
        for rep, recv in reports:
            if recv is None:
                continue
            with trio.fail_after(CFG.risk.decision_batch_ms / 1000 + 1):
                out[rep.symbol] = await recv.receive()
        return out

    async def decide_one(self, symbol: str, *, advance_ms: int = MIN5, **kw: Any) -> Verdict:
        return (await self.decide(report(symbol, self.next_candle(advance_ms), **kw)))[symbol]

    def submitted(self) -> list[SubmitPlan]:
        out: list[SubmitPlan] = []
        while True:
            try:
                out.append(self.execution.receive_nowait())
            except trio.WouldBlock:
                return out

    async def fill(self, plan: SubmitPlan) -> None:
        p = plan.plan
        await self.send(
            EntryFilled(
                trade_id=p.trade_id,
                symbol=p.symbol,
                side=p.side,
                filled_qty=p.quantity,
                avg_price=p.entry_price,
                stop_price=p.stop_price,
                final=True,
            )
        )


@asynccontextmanager
async def running(
    *,
    cfg: BotConfig = CFG,
    symbols: Iterable[str] = (AAA,),
    mode: str = "PAPER_LIVE",
    equity: float | None = 10_000.0,
    clock: ManualWallClock | None = None,
    store: StateStore | None = None,
    tracker: PerformanceTracker | None = None,
    risk_state: RiskState | None = None,
    metrics: Metrics | None = None,
    hourly: Mapping[str, list[float]] | None = None,
    closed_pnl: tuple[ClosedPnl, ...] = (),
    shadow_send: trio.MemorySendChannel[Any] | None = None,
    reference_symbol: str = "",
    execution_inbox_size: int = 32,
) -> AsyncIterator[Harness]:
    wall = clock if clock is not None else ManualWallClock(START)
    inbox_send, inbox_recv = open_risk_inbox()
    exec_send, exec_recv = trio.open_memory_channel[Any](execution_inbox_size)
    actor = PortfolioRisk(
        cfg=cfg,
        mode=mode,  # type: ignore[arg-type]
        execution_send=exec_send,
        symbols=symbols,
        rules_by_symbol=RULES,
        wall_clock=wall,
        store=store,
        tracker=tracker,
        risk_state=risk_state,
        metrics=metrics,
        closed_pnl=closed_pnl,
        shadow_send=shadow_send,
        reference_symbol=reference_symbol,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run, inbox_recv)
        h = Harness(actor, inbox_send, exec_recv, wall)
        if hourly is not None:
            await h.send(*hourly_messages(hourly))
        if equity is not None:
            await h.send(account(equity, wall.now_ms()))
        yield h
        await inbox_send.aclose()


def code(v: Verdict) -> str | None:
    return v.rejection.code if v.rejection is not None else None


class TestApproval:
    """An approval is sized, reserved, sent to execution and answered."""

    async def test_approved_plan_goes_to_execution_and_reserves(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            assert v.rejection is None
            (sub,) = h.submitted()
            assert sub.plan == v.plan
            assert sub.mid_price == Decimal("100.0")
            assert v.plan.risk_pct == CFG.risk.risk_per_trade_pct
            assert v.plan.exploration  # fresh tracker in PAPER_LIVE: exploration
            assert v.plan.trail_atr_mult == CFG.strategies.trend_pullback.atr_trail_mult
            assert float(v.plan.quantity) * 1.0 <= 100.0  # loss to stop ≤ 1 % of 10 000
            snap = h.actor.snapshot()
            assert (snap.pending, snap.positions, snap.approvals) == (1, 0, 1)
            assert snap.open_risk_usd > 0

    async def test_no_account_yet_rejects(self, autojump_clock: Any) -> None:
        async with running(equity=None) as h:
            assert code(await h.decide_one(AAA)) == NO_ACCOUNT
            assert h.submitted() == []

    async def test_report_without_signals_gets_no_verdict_and_completes_the_batch(
        self, autojump_clock: Any
    ) -> None:
        async with running(symbols=(AAA, BBB), hourly=hourly_series(correlated_pair=False)) as h:
            t0 = trio.current_time()
            c = h.next_candle()
            verdicts = await h.decide(report(AAA, c), report(BBB, c, signals=False))
            assert set(verdicts) == {AAA}
            assert trio.current_time() == t0  # complete batch: decided at once, no timeout wait

    async def test_unreachable_asker_keeps_the_submitted_plan_reserved(self, autojump_clock: Any) -> None:
        async with running() as h:
            rep, recv = report(AAA, h.next_candle())
            assert recv is not None
            await recv.aclose()
            with capture_logs() as logs:
                await h.send(rep)
            assert len(h.submitted()) == 1
            assert h.actor.snapshot().pending == 1
            assert any(e["event"] == "verdict_undeliverable" for e in logs)


class TestDailyStop:
    """AC3: losses reach the daily stop ⇒ DAILY_STOP for the rest of the UTC day, entries resume the next."""

    async def test_daily_stop_and_next_day(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            await h.fill(h.submitted()[0])
            await h.send(closed(v.plan.trade_id, AAA, -400.0, h.clock.now_ms()))  # −4 % of 10 000
            with capture_logs() as logs:
                rejected = await h.decide_one(AAA)
            assert code(rejected) == "DAILY_STOP"
            assert rejected.rejection is not None
            assert rejected.rejection.values["day_pnl_pct"] == pytest.approx(-0.04)
            assert h.submitted() == []
            event = next(e for e in logs if e["event"] == "risk_rejected")
            assert event["code"] == "DAILY_STOP"
            assert event["values"]["daily_stop_pct"] == -0.04
            # Still the same UTC day at 23:50: rejected again.
            assert code(await h.decide_one(AAA, advance_ms=11 * HOUR + 40 * 60_000)) == "DAILY_STOP"
            # Next UTC day: entries resume.
            resumed = await h.decide_one(AAA, advance_ms=20 * 60_000)
            assert resumed.plan is not None
            assert h.actor.risk_state is not None
            assert h.actor.risk_state.realized_pnl_day == 0.0

    async def test_losses_short_of_the_stop_keep_trading(self, autojump_clock: Any) -> None:
        async with running() as h:
            await h.send(closed("x-1", AAA, -399.0, h.clock.now_ms()))
            assert (await h.decide_one(AAA)).plan is not None

    async def test_without_a_state_file_the_trade_log_still_holds_the_stop(self, autojump_clock: Any) -> None:
        """A lost state file: today's logged losses are re-derived, so the daily stop still holds."""
        losses = (
            ClosedPnl(close_ms=START - HOUR, trade_id="x-1", pnl_usd=-250.0),
            ClosedPnl(close_ms=START - 30 * 60_000, trade_id="x-2", pnl_usd=-160.0),
        )
        async with running(equity=9_590.0, closed_pnl=losses) as h:
            assert code(await h.decide_one(AAA)) == "DAILY_STOP"
            # A re-report of a logged trade is not booked a second time.
            await h.send(closed("x-1", AAA, -250.0, h.clock.now_ms()))
            assert h.actor.risk_state is not None
            assert h.actor.risk_state.realized_pnl_day == pytest.approx(-410.0)

    async def test_a_trade_reported_closed_twice_is_booked_once(self, autojump_clock: Any) -> None:
        """After a crash execution may re-report a closed trade: its loss counts once, not twice."""
        async with running() as h:
            await h.send(closed("x-1", AAA, -300.0, h.clock.now_ms()))
            await h.send(closed("x-1", AAA, -300.0, h.clock.now_ms()))
            assert h.actor.risk_state is not None
            assert h.actor.risk_state.realized_pnl_day == pytest.approx(-300.0)
            assert (await h.decide_one(AAA)).plan is not None


class TestWeeklyStop:
    """AC4: weekly stop ⇒ paused 7 days, then reduced risk (0.5 %) 3 days, then 1 %."""

    async def test_pause_reduced_then_normal(self, autojump_clock: Any) -> None:
        async with running() as h:
            hit = h.clock.now_ms()
            await h.send(closed("loss-1", AAA, -1000.0, hit))  # −10 % of the week
            state = h.actor.risk_state
            assert state is not None
            assert state.pause_until_ms == hit + 7 * DAY_MS
            with capture_logs() as logs:
                paused = await h.decide_one(AAA, advance_ms=DAY_MS)
            assert code(paused) == "WEEKLY_STOP"
            assert any(e["event"] == "risk_rejected" and e.get("state") == "PAUSED" for e in logs)
            assert code(await h.decide_one(AAA, advance_ms=5 * DAY_MS + 23 * HOUR)) == "WEEKLY_STOP"
            assert h.submitted() == []
            # 7 days after the hit: reduced risk.
            h.clock.set(hit + 7 * DAY_MS)
            reduced = await h.decide_one(AAA)
            assert reduced.plan is not None
            assert reduced.plan.risk_pct == CFG.risk.reduced_risk_after_pause_pct
            assert reduced.plan.risk_usd == pytest.approx(50.0)
            await h.send(EntryAbandoned(trade_id=reduced.plan.trade_id, symbol=AAA, reason="TIMEOUT"))
            still = await h.decide_one(AAA, advance_ms=2 * DAY_MS)
            assert still.plan is not None
            assert still.plan.risk_pct == CFG.risk.reduced_risk_after_pause_pct
            await h.send(EntryAbandoned(trade_id=still.plan.trade_id, symbol=AAA, reason="TIMEOUT"))
            # 10 days after the hit: normal risk.
            h.clock.set(hit + 10 * DAY_MS)
            normal = await h.decide_one(AAA)
            assert normal.plan is not None
            assert normal.plan.risk_pct == CFG.risk.risk_per_trade_pct

    async def test_live_pause_logs_shadow_entries_and_sends_nothing(self, autojump_clock: Any) -> None:
        async with running(mode="LIVE", tracker=winning_tracker()) as h:
            await h.send(closed("loss-1", AAA, -1000.0, h.clock.now_ms()))
            # The next day (the shadow book skips the pause, not the daily stop of the loss day).
            with capture_logs() as logs:
                v = await h.decide_one(AAA, advance_ms=DAY_MS)
            assert code(v) == "WEEKLY_STOP"
            assert v.rejection is not None
            assert v.rejection.values["shadow_only"] == 1.0
            assert h.submitted() == []
            assert h.actor.snapshot().pending == 0
            shadow = [e for e in logs if e["event"] == "shadow_entry"]
            assert len(shadow) == 1
            assert shadow[0]["symbol"] == AAA
            assert h.actor.snapshot().shadow_entries == 1

    async def test_live_pause_sends_plan_to_shadow_book_and_learns_only(self, autojump_clock: Any) -> None:
        """LIVE pause with a shadow book: the plan goes to `shadow_send` only, is never reserved, and
        the shadow trade's close changes the performance tracker but not the risk state."""
        shadow_send, shadow_recv = trio.open_memory_channel[Any](4)
        tracker = winning_tracker()
        async with running(mode="LIVE", tracker=tracker, shadow_send=shadow_send) as h:
            await h.send(closed("loss-1", AAA, -1000.0, h.clock.now_ms()))
            with capture_logs() as logs:
                v = await h.decide_one(AAA, advance_ms=DAY_MS)
            assert code(v) == "WEEKLY_STOP"
            assert v.plan is None
            assert h.submitted() == []  # nothing to the live execution
            assert h.actor.exposures == ()  # never reserved
            snap = h.actor.snapshot()
            assert (snap.pending, snap.positions, snap.open_risk_usd) == (0, 0, 0.0)
            sent = shadow_recv.receive_nowait()
            assert isinstance(sent, SubmitPlan)
            assert sent.plan.symbol == AAA
            assert sent.plan.quantity > 0
            with pytest.raises(trio.WouldBlock):
                shadow_recv.receive_nowait()
            entry = [e for e in logs if e["event"] == "shadow_entry"]
            assert len(entry) == 1
            assert entry[0]["trade_id"] == sent.plan.trade_id
            assert entry[0]["sent"] is True

            state_before = h.actor.risk_state
            window_before = len(tracker.window(STRATEGY))
            record = closed(sent.plan.trade_id, AAA, -500.0, h.clock.now_ms()).record
            await h.send(ShadowTradeClosed(record=record))
            assert h.actor.risk_state == state_before  # no pnl booked, pause unchanged
            assert state_before is not None
            assert not state_before.already_booked(sent.plan.trade_id)
            window = tracker.window(STRATEGY)
            assert len(window) == window_before + 1
            assert window[-1].trade_id == sent.plan.trade_id
            assert window[-1].pnl_usd == -500.0
            # A malformed shadow record is logged, never a crash, and changes nothing.
            with capture_logs() as bad_logs:
                await h.send(ShadowTradeClosed(record={"trade_id": "bad"}))
            assert any(e["event"] == "shadow_trade_record_rejected" for e in bad_logs)
            assert len(tracker.window(STRATEGY)) == window_before + 1
            assert h.actor.risk_state == state_before

    async def test_live_pause_shadow_book_gone_drops_plan_with_log(self, autojump_clock: Any) -> None:
        shadow_send, shadow_recv = trio.open_memory_channel[Any](4)
        shadow_recv.close()
        async with running(mode="LIVE", tracker=winning_tracker(), shadow_send=shadow_send) as h:
            await h.send(closed("loss-1", AAA, -1000.0, h.clock.now_ms()))
            with capture_logs() as logs:
                v = await h.decide_one(AAA, advance_ms=DAY_MS)
            assert code(v) == "WEEKLY_STOP"
            assert h.submitted() == []
            assert h.actor.exposures == ()
            dropped = [e for e in logs if e["event"] == "shadow_plan_dropped"]
            assert len(dropped) == 1
            assert [e["sent"] for e in logs if e["event"] == "shadow_entry"] == [False]


class TestCorrelation:
    """AC7: correlated pair, a long open on one ⇒ long on the other rejected; short only as a hedge."""

    async def test_same_direction_rejected_hedge_rule_applies(self, autojump_clock: Any) -> None:
        series = hourly_series(correlated_pair=True)
        assert corr(series, AAA, BBB) > CFG.risk.correlation_threshold
        async with running(symbols=(AAA, BBB), hourly=series) as h:
            c = h.next_candle()
            v = (await h.decide(report(AAA, c), report(BBB, c, signals=False)))[AAA]
            assert v.plan is not None
            await h.fill(h.submitted()[0])

            c = h.next_candle()
            long_b = (await h.decide(report(BBB, c), report(AAA, c, signals=False)))[BBB]
            assert code(long_b) == "CORRELATION"
            assert long_b.rejection is not None
            assert long_b.rejection.values["held_symbol"] == AAA
            assert float(long_b.rejection.values["corr"]) > 0.85

            # A short whose notional (tight stop ⇒ 2.5× notional) overshoots: net beta exposure grows.
            c = h.next_candle()
            big = (
                await h.decide(report(BBB, c, side=Side.SHORT, stop_pct=0.004), report(AAA, c, signals=False))
            )[BBB]
            assert code(big) == "CORRELATION"
            assert big.rejection is not None
            assert "net_beta_notional_after" in big.rejection.values

            # A short of about the same beta-weighted notional reduces it: allowed as a hedge.
            c = h.next_candle()
            hedge = (await h.decide(report(BBB, c, side=Side.SHORT), report(AAA, c, signals=False)))[BBB]
            assert hedge.plan is not None
            assert hedge.plan.side is Side.SHORT
            assert hedge.plan.bucket_corr_max > 0.85
            assert [s.plan.symbol for s in h.submitted()] == [BBB]

    async def test_missing_history_counts_as_correlated(self, autojump_clock: Any) -> None:
        async with running(symbols=(AAA, CCC)) as h:  # no 1h closes at all
            c = h.next_candle()
            assert (await h.decide(report(AAA, c), report(CCC, c, signals=False)))[AAA].plan is not None
            c = h.next_candle()
            v = (await h.decide(report(CCC, c), report(AAA, c, signals=False)))[CCC]
            assert code(v) == "CORRELATION"


class TestLimits:
    """AC8: max positions, same direction and total open risk reject with their codes."""

    async def test_max_positions_within_one_batch(self, autojump_clock: Any) -> None:
        series = hourly_series(correlated_pair=False)
        assert max(abs(corr(series, a, b)) for a, b in ((AAA, BBB), (AAA, CCC), (BBB, CCC))) < 0.6
        async with running(symbols=SYMBOLS, hourly=series) as h:
            c = h.next_candle()
            v = await h.decide(
                report(AAA, c, conf=0.9), report(BBB, c, side=Side.SHORT, conf=0.8), report(CCC, c, conf=0.7)
            )
            assert v[AAA].plan is not None
            assert v[BBB].plan is not None
            assert code(v[CCC]) == "MAX_POSITIONS"
            rejection = v[CCC].rejection
            assert rejection is not None
            assert rejection.values["open_positions"] == 2.0
            assert [s.plan.symbol for s in h.submitted()] == [AAA, BBB]

    async def test_same_direction(self, autojump_clock: Any) -> None:
        async with running(
            cfg=cfg_with(max_same_direction_positions=1),
            symbols=SYMBOLS,
            hourly=hourly_series(correlated_pair=False),
        ) as h:
            c = h.next_candle()
            v = await h.decide(
                report(AAA, c, conf=0.9), report(BBB, c, conf=0.8), report(CCC, c, signals=False)
            )
            assert v[AAA].plan is not None
            assert code(v[BBB]) == "SAME_DIRECTION"

    async def test_total_open_risk_counts_foreign_positions(self, autojump_clock: Any) -> None:
        async with running(symbols=SYMBOLS, hourly=hourly_series(correlated_pair=False)) as h:
            # A foreign CCC short without a stop: its whole notional (200) is at risk.
            foreign = Exposure(
                symbol=CCC, side=Side.SHORT, quantity=2.0, entry_price=100.0, stop_price=None, foreign=True
            )
            await h.send(PortfolioSynced(exposures=(foreign,)))
            assert h.actor.snapshot().foreign == 1
            c = h.next_candle()
            v = await h.decide(report(AAA, c), report(BBB, c, signals=False), report(CCC, c, signals=False))
            assert code(v[AAA]) == "TOTAL_OPEN_RISK"
            rejection = v[AAA].rejection
            assert rejection is not None
            assert float(rejection.values["open_risk_usd"]) == pytest.approx(200.08)
            # The foreign position is closed on the exchange: the next candle passes.
            await h.send(PortfolioSynced(exposures=()))
            c = h.next_candle()
            v = await h.decide(report(AAA, c), report(BBB, c, signals=False), report(CCC, c, signals=False))
            assert v[AAA].plan is not None

    async def test_sync_keeps_reservations_execution_has_not_seen(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            await h.send(PortfolioSynced(exposures=()))
            assert h.actor.snapshot().pending == 1
            assert code(await h.decide_one(AAA)) == "SYMBOL_BUSY"


class TestUniverse:
    """A symbol that left the universe is managed but takes no new entries; a new one may trade."""

    async def test_left_universe_rejects_new_entries(self, autojump_clock: Any) -> None:
        async with running(symbols=(AAA, BBB)) as h:
            await h.send(
                UniverseChanged(
                    tradable=(BBB,),
                    monitored=(AAA, BBB),
                    rules={AAA: _rules(AAA), BBB: _rules(BBB)},
                )
            )
            assert code(await h.decide_one(AAA)) == "NOT_IN_UNIVERSE"
            assert (await h.decide_one(BBB)).plan is not None
            assert h.submitted()[-1].plan.symbol == BBB


class TestBatching:
    """Batches are decided by confidence, not arrival order; a silent symbol costs only the timeout."""

    async def _approvals(self, order: tuple[str, ...]) -> tuple[dict[str, str | None], list[str]]:
        confs = {AAA: 0.7, BBB: 0.9, CCC: 0.9}
        async with running(symbols=SYMBOLS, hourly=hourly_series(correlated_pair=False)) as h:
            c = h.next_candle()
            v = await h.decide(*(report(s, c, conf=confs[s]) for s in order))
            return (
                {s: (x.plan.trade_id if x.plan else code(x)) for s, x in v.items()},
                [s.plan.symbol for s in h.submitted()],
            )

    async def test_arrival_order_does_not_matter(self, autojump_clock: Any) -> None:
        first = await self._approvals((AAA, BBB, CCC))
        second = await self._approvals((CCC, AAA, BBB))
        assert first == second
        verdicts, sent = first
        assert sent == [BBB, CCC]  # confidence first, ties by symbol name
        assert verdicts[AAA] == "MAX_POSITIONS"

    async def test_timeout_when_a_symbol_never_reports_then_late(self, autojump_clock: Any) -> None:
        async with running(symbols=(AAA, BBB)) as h:
            c = h.next_candle()
            rep, recv = report(AAA, c)
            assert recv is not None
            t0 = trio.current_time()
            await h.send(rep)
            with trio.move_on_after(CFG.risk.decision_batch_ms / 1000 * 0.95):
                await recv.receive()
                pytest.fail("decided before the batch timeout")
            v = await recv.receive()
            assert v.plan is not None
            assert trio.current_time() - t0 == pytest.approx(CFG.risk.decision_batch_ms / 1000)
            late = (await h.decide(report(BBB, c)))[BBB]
            assert code(late) == LATE
            assert h.actor.snapshot().late_reports == 1

    async def test_second_report_of_a_symbol_in_a_batch_is_rejected(self, autojump_clock: Any) -> None:
        async with running(symbols=(AAA, BBB)) as h:
            c = h.next_candle()
            (first, first_recv), (second, second_recv) = report(AAA, c), report(AAA, c)
            assert first_recv is not None
            assert second_recv is not None
            t0 = trio.current_time()
            await h.send(first, second)
            dup = await second_recv.receive()
            assert code(dup) == "DUPLICATE_CANDLE"
            assert trio.current_time() == t0  # answered at once
            assert (await first_recv.receive()).plan is not None
            assert len(h.submitted()) == 1

    async def test_newer_candle_flushes_the_older_batch(self, autojump_clock: Any) -> None:
        async with running(symbols=(AAA, BBB)) as h:
            c1 = h.next_candle()
            rep1, recv1 = report(AAA, c1)
            t0 = trio.current_time()
            await h.send(rep1)
            c2 = h.next_candle()
            await h.send(report(AAA, c2, signals=False)[0])
            assert recv1 is not None
            assert (await recv1.receive()).plan is not None
            assert trio.current_time() == t0


class TestReservations:
    """Approvals reserve; EntryAbandoned releases; fills and closes move the position."""

    async def test_abandoned_entry_releases_the_symbol(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            assert code(await h.decide_one(AAA)) == "SYMBOL_BUSY"
            await h.send(EntryAbandoned(trade_id=v.plan.trade_id, symbol=AAA, reason="TIMEOUT"))
            assert h.actor.snapshot().pending == 0
            assert (await h.decide_one(AAA)).plan is not None

    async def test_fill_then_close(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            await h.fill(h.submitted()[0])
            snap = h.actor.snapshot()
            assert (snap.positions, snap.pending) == (1, 0)
            await h.send(closed(v.plan.trade_id, AAA, 150.0, h.clock.now_ms()))
            snap = h.actor.snapshot()
            assert (snap.positions, snap.pending, snap.open_risk_usd) == (0, 0, 0.0)
            assert h.actor.risk_state is not None
            assert h.actor.risk_state.realized_pnl_day == 150.0
            assert (await h.decide_one(AAA)).plan is not None

    async def test_trailing_stop_move_shrinks_open_risk(self, autojump_clock: Any) -> None:
        """Open risk is the loss to the current stop: a stop trailed to break-even frees the budget."""
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            plan = v.plan
            await h.fill(h.submitted()[0])
            before = h.actor.snapshot().open_risk_usd
            assert before > 0
            await h.send(
                PositionUpdated(
                    trade_id=plan.trade_id,
                    symbol=AAA,
                    side=plan.side,
                    qty=plan.quantity,
                    entry_price=plan.entry_price,
                    stop_price=plan.entry_price,
                    initial_stop_price=plan.stop_price,
                    trail_atr_mult=None,
                    trail_after_r=None,
                )
            )
            after = h.actor.snapshot().open_risk_usd
            assert after < before * 0.2  # only the exit fee and stop slippage remain at risk

    async def test_bad_trade_record_is_logged_pnl_still_counted(self, autojump_clock: Any) -> None:
        async with running() as h:
            with capture_logs() as logs:
                await h.send(
                    TradeClosed(trade_id="t", symbol=AAA, record={}, realized_pnl_usd=-50.0, close_ms=0)
                )
            assert any(e["event"] == "risk_trade_record_rejected" for e in logs)
            assert h.actor.risk_state is not None
            assert h.actor.risk_state.realized_pnl_day == -50.0


class TestFlags:
    """Safe mode, kill switch and shutdown reject new entries; clearing them resumes."""

    async def test_safe_mode(self, autojump_clock: Any) -> None:
        async with running() as h:
            await h.send(SafeModeChanged(on=True, reasons=("STALE_DATA",)))
            assert code(await h.decide_one(AAA)) == "SAFE_MODE"
            assert h.actor.snapshot().safe_mode
            await h.send(SafeModeChanged(on=False))
            assert (await h.decide_one(AAA)).plan is not None

    async def test_kill_switch_and_resume(self, autojump_clock: Any) -> None:
        async with running() as h:
            await h.send(KillSwitch())
            assert code(await h.decide_one(AAA)) == "KILL_SWITCH"
            await h.send(Resume())
            assert (await h.decide_one(AAA)).plan is not None

    async def test_stop_intake(self, autojump_clock: Any) -> None:
        async with running() as h:
            await h.send(StopIntake())
            assert code(await h.decide_one(AAA)) == SHUTTING_DOWN
            assert h.submitted() == []

    async def test_metrics_are_updated(self, autojump_clock: Any) -> None:
        metrics = Metrics()
        async with running(metrics=metrics) as h:
            await h.send(SafeModeChanged(on=True))
            await h.decide_one(AAA)
            await h.send(SafeModeChanged(on=False))
            await h.decide_one(AAA)
            assert metrics.get(REJECTIONS, reason="SAFE_MODE") == 1.0
            assert metrics.get(DECISIONS, outcome="approved") == 1.0
            assert metrics.get("futures_actor_equity_usd") == 10_000.0


class TestPersistence:
    """Risk and selection state survive a restart; the restarted actor decides the same."""

    async def test_restart_from_the_store(self, autojump_clock: Any, tmp_path: Path) -> None:
        store = StateStore.open(tmp_path / "state.sqlite")
        clock = ManualWallClock(START)
        async with running(store=store, clock=clock, tracker=winning_tracker()) as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            assert not v.plan.exploration
            await h.send(closed(v.plan.trade_id, AAA, -1000.0, clock.now_ms()))
            c = h.next_candle()
            before = (await h.decide(report(AAA, c)))[AAA]
            saved_risk, saved_sel = h.actor.risk_state, h.actor.selection_state
        assert code(before) == "WEEKLY_STOP"
        assert saved_sel is not None
        assert saved_sel.preferred == {"TREND": STRATEGY}
        store.close()

        store = StateStore.open(tmp_path / "state.sqlite")
        async with running(store=store, clock=clock, tracker=winning_tracker()) as h2:
            assert h2.actor.risk_state == saved_risk
            assert h2.actor.selection_state == saved_sel
            after = (await h2.decide(report(AAA, c)))[AAA]
            assert after == before
        store.close()

        # Control: without the saved state the same report would be approved.
        async with running(clock=clock, tracker=winning_tracker()) as h3:
            assert (await h3.decide(report(AAA, c)))[AAA].plan is not None


class TestBadInput:
    """Bad data is rejected with a precise code; the actor stays alive."""

    async def test_nan_mid_price_is_an_input_error(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA, price=float("nan"))
            assert code(v) == "INPUT_ERROR"
            assert h.submitted() == []
            assert (await h.decide_one(AAA)).plan is not None

    async def test_gap_in_hourly_closes_restarts_the_history(self, autojump_clock: Any) -> None:
        series = hourly_series(correlated_pair=False)
        msgs = hourly_messages(series)
        gapped = [
            m
            for m in msgs
            if not (m.symbol == CCC and m.candle.open_time_ms == msgs[-1].candle.open_time_ms - HOUR)
        ]
        async with running(symbols=(AAA, CCC)) as h:
            await h.send(*gapped)
            c = h.next_candle()
            assert (await h.decide(report(AAA, c), report(CCC, c, signals=False)))[AAA].plan is not None
            c = h.next_candle()
            v = (await h.decide(report(CCC, c), report(AAA, c, signals=False)))[CCC]
            assert code(v) == "CORRELATION"  # CCC's history restarted after the gap: unknown


class TestLossBeyondRisk:
    """Issue 10 #3: a realized loss beyond the trade's all-in risk_usd is logged (a market gap)."""

    async def test_logged(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            await h.fill(h.submitted()[0])
            msg = closed(v.plan.trade_id, AAA, -130.0, h.clock.now_ms())
            msg.record["risk"]["risk_usd"] = 100.0
            with capture_logs() as logs:
                await h.send(msg)
            event = next(e for e in logs if e["event"] == "loss_beyond_risk")
            assert event["log_level"] == "warning"
            assert event["excess_usd"] == pytest.approx(30.0)
            assert event["pnl_r_multiple"] == pytest.approx(-1.3)

    async def test_not_logged_within_risk(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            await h.fill(h.submitted()[0])
            msg = closed(v.plan.trade_id, AAA, -99.0, h.clock.now_ms())
            msg.record["risk"]["risk_usd"] = 100.0
            with capture_logs() as logs:
                await h.send(msg)
            assert not any(e["event"] == "loss_beyond_risk" for e in logs)


class TestFreeMarginOnTheVenuesBalance:
    """Issue 10 #10: the free-margin rule counts the margin of every position and reservation, so an
    approval is an order the venue accepts even before the venue's next balance report."""

    async def test_second_entry_rejected_before_the_balance_report(self, autojump_clock: Any) -> None:
        cfg = cfg_with(margin_buffer_pct=0.3)
        series = hourly_series(correlated_pair=False)
        async with running(cfg=cfg, symbols=SYMBOLS, hourly=series) as h:
            first = await h.decide_one(AAA)
            assert first.plan is not None
            margin = first.plan.margin_used_usd  # ~4 242 at 2x: fits 10 000 × 0.7
            # The second needs as much: (10 000 − 4 242) × 0.7 = 4 030 does not fit it.
            assert (10_000.0 - margin) * 0.7 < margin <= 7_000.0
            await h.fill(h.submitted()[0])
            # No AccountUpdated since: the venue's last report still says 10 000 available.
            second = await h.decide_one(BBB)
            assert code(second) == "MARGIN"
            assert second.rejection is not None
            values = second.rejection.values
            assert values["venue_available_usd"] == 10_000.0
            assert values["available_usd"] == pytest.approx(10_000.0 - margin)

    async def test_enough_margin_still_approved(self, autojump_clock: Any) -> None:
        series = hourly_series(correlated_pair=False)
        async with running(symbols=SYMBOLS, hourly=series) as h:
            first = await h.decide_one(AAA)
            assert first.plan is not None
            await h.fill(h.submitted()[0])
            # 2x: ~4 237 margin each; 10 000 − 4 237 leaves 5 763 × 0.9 for the second.
            second = await h.decide_one(BBB)
            assert second.plan is not None


class TestBetaReference:
    """Issue 10 #8: the hedge rule's beta is measured against the highest-volume monitored symbol the
    universe selection computed, passed in and updated on the universe refresh."""

    async def test_passed_in_and_updated_on_refresh(self, autojump_clock: Any) -> None:
        series = hourly_series(correlated_pair=True)
        with capture_logs() as logs:
            async with running(symbols=SYMBOLS, hourly=series, reference_symbol=BBB) as h:
                started = next(e for e in logs if e["event"] == "risk_started")
                assert started["beta_reference"] == BBB
                matrix = h.actor.machine.correlations(h.clock.now_ms())
                assert matrix is not None
                assert matrix.beta_of(BBB) == pytest.approx(1.0)
                await h.send(
                    UniverseChanged(
                        tradable=SYMBOLS, monitored=SYMBOLS, rules=dict(RULES), reference_symbol=CCC
                    )
                )
                changed = next(e for e in logs if e["event"] == "risk_universe_changed")
                assert changed["beta_reference"] == CCC
                matrix = h.actor.machine.correlations(h.clock.now_ms())
                assert matrix is not None
                assert matrix.beta_of(CCC) == pytest.approx(1.0)
                assert matrix.beta_of(BBB) != pytest.approx(1.0)

    async def test_configured_reference_wins(self, autojump_clock: Any) -> None:
        with capture_logs() as logs:
            async with running(
                cfg=cfg_with(beta_reference_symbol=CCC), symbols=SYMBOLS, reference_symbol=BBB
            ):
                pass
        assert next(e for e in logs if e["event"] == "risk_started")["beta_reference"] == CCC


def losing_tracker(n: int = 20, r: float = -0.5) -> PerformanceTracker:
    """A tracker whose trend_pullback record is ineligible (enough trades, expectancy ≤ 0)."""
    tracker = PerformanceTracker(cfg=CFG.performance)
    for i in range(n):
        tracker.record(
            ClosedTrade(
                trade_id=f"loss-{i}",
                strategy=STRATEGY,
                regime=Regime.TREND,
                r_multiple=r,
                pnl_usd=r * 100.0,
                equity_usd=10_000.0,
                fees_usd=1.0,
                funding_usd=0.0,
                reason="SL",
            )
        )
    return tracker


def shadow_record(trade_id: str, r: float, close: str = "2025-01-08T13:00:00.000Z") -> dict[str, Any]:
    return {
        "trade_id": trade_id,
        "strategy": STRATEGY,
        "regime": "TREND",
        "timestamp_close": close,
        "entry_order": {"filled_qty": 1.0},
        "risk": {"equity_usd": 10_000.0, "risk_usd": 100.0},
        "result": {"reason": "TP" if r > 0 else "SL", "pnl_usd": r * 100.0, "pnl_r_multiple": r},
        "costs": {"fees_usd": 0.0, "funding_usd": 0.0},
    }


class TestIneligibleStrategiesTradeInTheShadowBook:
    """Issue 10 #6 (BOT_SPEC §7 [resolved]): an ineligible strategy's signals go to the shadow book in
    every mode, never reserved; its shadow trades feed its window until it is eligible again."""

    @pytest.mark.parametrize("mode", ["PAPER_LIVE", "LIVE"])
    async def test_ineligible_signal_goes_to_the_shadow_book(self, autojump_clock: Any, mode: str) -> None:
        shadow_send, shadow_recv = trio.open_memory_channel[Any](4)
        async with running(mode=mode, tracker=losing_tracker(), shadow_send=shadow_send) as h:
            with capture_logs() as logs:
                v = await h.decide_one(AAA)
            assert v.plan is None
            assert code(v) == "NO_TRADE"
            assert h.submitted() == []  # nothing live
            sent = shadow_recv.receive_nowait()
            assert isinstance(sent, SubmitPlan)
            assert sent.plan.strategy == STRATEGY
            snap = h.actor.snapshot()
            assert (snap.pending, snap.positions, snap.open_risk_usd) == (0, 0, 0.0)  # never reserved
            event = next(e for e in logs if e["event"] == "shadow_entry")
            assert event["why"] == "INELIGIBLE"
            since = h.actor.ineligible_strategies()
            assert set(since) == {STRATEGY}

    async def test_shadow_trades_make_it_eligible_again(self, autojump_clock: Any) -> None:
        shadow_send, _shadow_recv = trio.open_memory_channel[Any](64)
        async with running(tracker=losing_tracker(), shadow_send=shadow_send) as h:
            await h.decide_one(AAA)
            assert STRATEGY in h.actor.ineligible_strategies()
            state_before = h.actor.risk_state
            with capture_logs() as logs:
                for i in range(40):
                    await h.send(ShadowTradeClosed(record=shadow_record(f"shadow-{i}", 1.0)))
            # The window turned positive: eligible again, logged; the calendar never saw a shadow trade.
            assert STRATEGY not in h.actor.ineligible_strategies()
            assert any(e["event"] == "strategy_eligible_again" for e in logs)
            assert h.actor.risk_state == state_before
            v = await h.decide_one(AAA)
            assert v.plan is not None  # trades live again

    async def test_no_shadow_book_no_shadow_entry(self, autojump_clock: Any) -> None:
        async with running(tracker=losing_tracker()) as h:
            with capture_logs() as logs:
                v = await h.decide_one(AAA)
            assert v.plan is None
            assert not any(e["event"] == "shadow_entry" for e in logs)


class TestEntryRetryIsANewDecision:
    """Issue 10 #1: RetryRequested is decided like an entry at the new price; execution gets RetryDecided."""

    async def test_approved_retry_is_resized_and_rereserved(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            assert len(h.submitted()) == 1
            with capture_logs() as logs:
                await h.send(
                    RetryRequested(
                        plan=v.plan, mid=Decimal("101.5"), filled_qty=Decimal(0), filled_avg_price=Decimal(0)
                    )
                )
            (decided,) = h.submitted()
            assert isinstance(decided, RetryDecided)
            plan = decided.plan
            assert plan is not None
            assert plan.trade_id == v.plan.trade_id
            assert plan.entry_price == Decimal("101.50")
            assert plan.stop_price == Decimal("100.48")  # 1 % below 101.50, rounded away
            assert plan.quantity < v.plan.quantity
            (exposure,) = h.actor.exposures
            assert exposure.trade_id == plan.trade_id
            assert exposure.quantity == float(plan.quantity)
            assert exposure.stop_price == float(plan.stop_price)
            assert any(e["event"] == "retry_approved" for e in logs)

    async def test_retry_rejected_by_a_limit_releases_and_ends(self, autojump_clock: Any) -> None:
        async with running() as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            h.submitted()
            await h.send(KillSwitch(reason="TEST"))
            await h.send(
                RetryRequested(
                    plan=v.plan, mid=Decimal("101.5"), filled_qty=Decimal(0), filled_avg_price=Decimal(0)
                )
            )
            (decided,) = h.submitted()
            assert isinstance(decided, RetryDecided)
            assert decided.plan is None
            assert decided.rejection is not None
            assert decided.rejection.code == "KILL_SWITCH"
            assert h.actor.exposures == ()

    async def test_risk_keeps_serving_while_execution_is_busy(self, autojump_clock: Any) -> None:
        """The deadlock of the first retry implementation: risk awaited its send of RetryDecided into a
        full execution inbox while execution (busy, its inbox full of book prices) awaited a send into
        the full risk inbox; each waited for the other for good. Risk must never wait on execution."""
        async with running(execution_inbox_size=1) as h:
            v = await h.decide_one(AAA)  # its SubmitPlan fills execution's inbox: nobody reads it
            assert v.plan is not None
            retry = RetryRequested(
                plan=v.plan, mid=Decimal("101.5"), filled_qty=Decimal(0), filled_avg_price=Decimal(0)
            )
            with trio.fail_after(60):
                await h.send(retry)
                # Execution's own messages to risk (more than risk's inbox holds) must all get in.
                for _ in range(RISK_INBOX_SIZE + 8):
                    await h.inbox.send(account(10_000.0, h.clock.now_ms()))
                await trio.testing.wait_all_tasks_blocked()
            submitted, decided = h.submitted()  # execution reads again: nothing lost, in order
            assert isinstance(submitted, SubmitPlan)
            assert isinstance(decided, RetryDecided)
            assert decided.plan is not None
            assert decided.plan.entry_price == Decimal("101.50")


def blocked_tracker(*strategies: str) -> PerformanceTracker:
    """Eligible but performance-blocked windows (issue 10 #6): 10 wins of +1 R then 10 losses of
    -0.9 R at 1 % of equity each. Expectancy +0.05 R (> 0: eligible, not low-sample), max drawdown
    ≈ 8.6 %, score ≈ 0.05 − 0.5 × 0.086 ≈ 0.007, confidence ≈ 0.507 < threshold 0.55."""
    tracker = PerformanceTracker(cfg=CFG.performance)
    for name in strategies or (STRATEGY,):
        regime = Regime.RANGE if name == "range_mean_reversion" else Regime.TREND
        for i, r in enumerate([1.0] * 10 + [-0.9] * 10):
            tracker.record(
                ClosedTrade(
                    trade_id=f"{name}-hist-{i}",
                    strategy=name,
                    regime=regime,
                    r_multiple=r,
                    pnl_usd=r * 100.0,
                    equity_usd=10_000.0,
                    fees_usd=1.0,
                    funding_usd=0.0,
                    reason="TP" if r > 0 else "SL",
                )
            )
    return tracker


def trend_report(
    symbol: str, candle: int, strategies: tuple[str, ...], *, conf: float = 0.7, price: float = 100.0
) -> tuple[SymbolReport, trio.MemoryReceiveChannel[Verdict]]:
    """A TREND report with one long signal per named strategy (same candle, same regime confidence)."""
    base, recv = report(symbol, candle, conf=conf, price=price)
    (sig,) = base.signals
    signals = tuple(msgspec.structs.replace(sig, strategy=name) for name in strategies)
    assert recv is not None
    return msgspec.structs.replace(base, signals=signals), recv


def shadow_close(plan: TradePlan, r: float, close_ms: int) -> ShadowTradeClosed:
    """The shadow book's trade record of `plan` closed at `r` R (as the shadow journal writes it)."""
    record = shadow_record(plan.trade_id, r, close=datetime.fromtimestamp(close_ms / 1000, UTC).isoformat())
    record["strategy"] = plan.strategy
    return ShadowTradeClosed(record=record)


class TestPerformanceBlockedStrategiesTradeInTheShadowBook:
    """Issue 10 #6, second half (BOT_SPEC §7 [resolved]): an *eligible* strategy whose own confidence
    keeps the decision below `regime.confidence_threshold` (the regime's confidence is above it) gets
    no live trade, so its window never changes: locked out for ever. Its signal trades on the shadow
    book (never reserved, never in the calendar) and the shadow trades' closes bring it back."""

    async def test_below_threshold_by_performance_goes_to_the_shadow_book(self, autojump_clock: Any) -> None:
        names = ("trend_pullback", "trend_breakout")
        shadow_send, shadow_recv = trio.open_memory_channel[Any](8)
        async with running(tracker=blocked_tracker(*names), shadow_send=shadow_send) as h:
            with capture_logs() as logs:
                v = (await h.decide(trend_report(AAA, h.next_candle(), names)))[AAA]
            assert v.plan is None
            assert v.rejection is not None
            assert v.rejection.values["selection_code"] == "BELOW_THRESHOLD"
            assert v.rejection.values["regime_confidence"] >= CFG.regime.confidence_threshold
            assert h.submitted() == []  # nothing live
            sent = shadow_recv.receive_nowait()
            assert isinstance(sent, SubmitPlan)
            assert sent.plan.strategy in names
            assert sent.plan.quantity > 0
            assert sent.plan.risk_pct == CFG.risk.risk_per_trade_pct  # sized like a live entry
            with pytest.raises(trio.WouldBlock):  # one shadow plan per symbol and candle
                shadow_recv.receive_nowait()
            snap = h.actor.snapshot()
            assert (snap.pending, snap.positions, snap.open_risk_usd) == (0, 0, 0.0)  # never reserved
            assert h.actor.exposures == ()
            entry = next(e for e in logs if e["event"] == "shadow_entry")
            assert entry["why"] == "BELOW_THRESHOLD"
            assert entry["trade_id"] == sent.plan.trade_id
            blocked = h.actor.performance_blocked_strategies()
            assert set(blocked) == set(names)
            assert h.actor.ineligible_strategies() == {}
            # The next candle's shadow plan goes to the other blocked strategy (least recently shadowed).
            await h.decide(trend_report(AAA, h.next_candle(), names))
            again = shadow_recv.receive_nowait()
            assert {again.plan.strategy, sent.plan.strategy} == set(names)

    async def test_regime_below_threshold_is_not_shadowed(self, autojump_clock: Any) -> None:
        """The regime itself says no (confidence below the threshold): nothing to learn, no shadow."""
        shadow_send, shadow_recv = trio.open_memory_channel[Any](8)
        async with running(tracker=blocked_tracker(), shadow_send=shadow_send) as h:
            v = await h.decide_one(AAA, conf=0.5)
            assert v.plan is None
            with pytest.raises(trio.WouldBlock):
                shadow_recv.receive_nowait()

    async def test_shadow_trades_bring_it_back_to_live(self, autojump_clock: Any) -> None:
        """Followed through: blocked ⇒ shadow plan ⇒ its close enters the window ⇒ … ⇒ confidence
        recovers ⇒ the strategy trades live again. The risk calendar never sees a shadow trade."""
        shadow_send, shadow_recv = trio.open_memory_channel[Any](8)
        tracker = blocked_tracker()
        async with running(tracker=tracker, shadow_send=shadow_send) as h:
            state_before = h.actor.risk_state
            shadowed: list[str] = []
            live: Verdict | None = None
            with capture_logs() as logs:
                for _ in range(10):
                    v = await h.decide_one(AAA)
                    if v.plan is not None:
                        live = v
                        break
                    sent = shadow_recv.receive_nowait()
                    shadowed.append(sent.plan.trade_id)
                    await h.send(shadow_close(sent.plan, 1.0, h.clock.now_ms()))
            assert shadowed, "the blocked strategy was never shadowed"
            assert live is not None, "the strategy never came back"
            assert live.plan is not None
            assert live.plan.strategy == STRATEGY
            assert [t.trade_id for t in tracker.window(STRATEGY)][-len(shadowed) :] == shadowed
            assert h.actor.risk_state == state_before  # no shadow pnl booked
            assert STRATEGY not in h.actor.performance_blocked_strategies()
            back = [e for e in logs if e["event"] == "strategy_unblocked"]
            assert len(back) == 1
            assert back[0]["strategy"] == STRATEGY
            (sub,) = h.submitted()
            assert sub.plan == live.plan
            with pytest.raises(trio.WouldBlock):  # the live decision sends nothing to the shadow book
                shadow_recv.receive_nowait()

    async def test_live_margin_never_refuses_a_shadow_plan(self, autojump_clock: Any) -> None:
        """The shadow book is not capital: a live position holding the margin does not keep a locked-out
        strategy from its shadow trade (the full replay lost 339 shadow plans to the live MARGIN rule)."""
        shadow_send, shadow_recv = trio.open_memory_channel[Any](8)
        async with running(tracker=blocked_tracker(), shadow_send=shadow_send, equity=None) as h:
            await h.send(
                AccountUpdated(
                    equity_usd=10_000.0,
                    wallet_balance_usd=10_000.0,
                    available_balance_usd=500.0,  # a live position holds the rest
                    unrealized_pnl_usd=0.0,
                    ts_ms=h.clock.now_ms(),
                )
            )
            with capture_logs() as logs:
                v = await h.decide_one(AAA)
            assert v.plan is None
            assert not [e for e in logs if e["event"] == "shadow_rejected"]
            sent = shadow_recv.receive_nowait()
            assert sent.plan.strategy == STRATEGY
            assert h.actor.exposures == ()


class TestLowSampleInLive:
    """LIVE never explores, so a strategy with fewer than `min_trades_before_confidence` trades could
    never trade and never build its record. It trades on the (capital-neutral) shadow book instead."""

    async def test_live_low_sample_goes_to_the_shadow_book(self, autojump_clock: Any) -> None:
        shadow_send, shadow_recv = trio.open_memory_channel[Any](8)
        async with running(mode="LIVE", shadow_send=shadow_send) as h:
            with capture_logs() as logs:
                v = await h.decide_one(AAA)
            assert v.plan is None
            assert v.rejection is not None
            assert v.rejection.values["selection_code"] == "LOW_SAMPLE"
            assert h.submitted() == []
            sent = shadow_recv.receive_nowait()
            assert sent.plan.strategy == STRATEGY
            assert not sent.plan.exploration
            assert h.actor.exposures == ()
            assert next(e for e in logs if e["event"] == "shadow_entry")["why"] == "LOW_SAMPLE"

    async def test_paper_exploration_trades_live_paper_not_shadow(self, autojump_clock: Any) -> None:
        shadow_send, shadow_recv = trio.open_memory_channel[Any](8)
        async with running(mode="PAPER_LIVE", shadow_send=shadow_send) as h:
            v = await h.decide_one(AAA)
            assert v.plan is not None
            assert v.plan.exploration
            with pytest.raises(trio.WouldBlock):
                shadow_recv.receive_nowait()


class TestLockoutsAreNamedSinceWhen:
    """The summary and the daily report read `performance_blocked_strategies()` / `ineligible_strategies()`."""

    async def test_blocked_since_is_set_at_start_and_survives_a_restart(
        self, autojump_clock: Any, fast_tmp: Path
    ) -> None:
        """A record rebuilt at start-up that blocks a strategy is named at once (not only after the next
        trade), and the 'since' of a performance-blocked strategy survives a restart unchanged."""
        store = StateStore.open(fast_tmp / "state.sqlite")
        clock = ManualWallClock(START)
        async with running(store=store, clock=clock, tracker=blocked_tracker()) as h:
            assert h.actor.performance_blocked_strategies() == {STRATEGY: START}
        store.close()
        clock.advance(DAY_MS)
        store = StateStore.open(fast_tmp / "state.sqlite")
        with capture_logs() as logs:
            async with running(store=store, clock=clock, tracker=blocked_tracker()) as h2:
                assert h2.actor.performance_blocked_strategies() == {STRATEGY: START}
        store.close()
        assert not any(e["event"] == "strategy_blocked" for e in logs)  # not blocked anew

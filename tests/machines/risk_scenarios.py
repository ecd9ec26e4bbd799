"""Shared pieces of the RiskMachine tests: synthetic reports and account messages, a synchronous driver
(what a discrete-event runtime does: timers on a heap of `at_ms`, answers fed back at once) and the
seeded random message streams of the machine-vs-trio-shell parity test.

Everything is synthetic (three made-up symbols, a Wednesday noon start): no file is read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np

from futures_actor.actors.messages import (
    AccountUpdated,
    CandleClosed,
    EntryAbandoned,
    EntryFilled,
    FundingBooked,
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
from futures_actor.core.config import BotConfig
from futures_actor.core.models import RegimeResult, Signal
from futures_actor.core.performance import ClosedTrade, PerformanceTracker
from futures_actor.core.risk import Exposure
from futures_actor.core.types import Candle, Regime, Side, SymbolRules
from futures_actor.machines.effects import Log
from futures_actor.machines.risk import (
    BatchDeadline,
    CancelTimer,
    Crash,
    InboxClosed,
    IncMetric,
    Mode,
    Persist,
    PersistFailed,
    ReplyVerdict,
    RiskEffect,
    RiskInbox,
    RiskInput,
    RiskMachine,
    SendPlan,
    SendRetryDecided,
    SendShadowPlan,
    SetMetric,
    SetTimer,
    ShadowPlanAnswered,
    Start,
    VerdictUndelivered,
)

CFG = BotConfig()
START = int(datetime(2025, 1, 8, 12, tzinfo=UTC).timestamp() * 1000)  # a Wednesday, on a 5m boundary
MIN5 = 300_000
HOUR = 3_600_000
AAA, BBB, CCC = "AAAUSDT", "BBBUSDT", "CCCUSDT"
SYMBOLS = (AAA, BBB, CCC)
STRATEGY = "trend_pullback"


def rules(symbol: str) -> SymbolRules:
    return SymbolRules(
        symbol=symbol,
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.001"),
        min_qty=Decimal("0.001"),
        max_qty=Decimal("100000"),
        min_notional=Decimal("5"),
        min_price=Decimal("0.01"),
    )


RULES = {s: rules(s) for s in SYMBOLS}


def cfg_with(**risk: Any) -> BotConfig:
    return msgspec.structs.replace(CFG, risk=msgspec.structs.replace(CFG.risk, **risk))


class Reply:
    """A report's reply token. `mode` says how delivery goes: "ok", "closed" (the asker gave up) or
    "full". Equal by (n, mode), so the two paths of the parity test compare; `sink` (trio path only)
    records what the shell delivered, like the one-shot channel it stands for."""

    def __init__(self, n: int, mode: str, sink: list[object] | None = None) -> None:
        self.n = n
        self.mode = mode
        self.sink = sink

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reply) and (self.n, self.mode) == (other.n, other.mode)

    def __hash__(self) -> int:
        return hash((self.n, self.mode))

    def __repr__(self) -> str:
        return f"Reply({self.n}, {self.mode!r})"

    def send_nowait(self, verdict: Verdict) -> None:
        import trio  # only the trio path calls this

        if self.sink is not None:
            self.sink.append(("verdict", self, verdict))
        if self.mode == "closed":
            raise trio.BrokenResourceError
        if self.mode == "full":
            raise trio.WouldBlock


def report(
    symbol: str,
    candle: int,
    *,
    side: Side = Side.LONG,
    conf: float = 0.7,
    price: float = 100.0,
    stop_pct: float = 0.01,
    signals: bool = True,
    reply: object = "reply",
) -> SymbolReport:
    """A report with one trend_pullback signal (or none); `reply` is its token (None: nobody waits)."""
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
    return SymbolReport(
        symbol=symbol,
        candle_open_time_ms=candle,
        regime=RegimeResult(regime=Regime.TREND, direction=side, confidence=conf, reason="TREND"),
        signals=(sig,) if signals else (),
        mid_price=price,
        reply=reply,
    )


def account(equity: float, ts: int = START) -> AccountUpdated:
    return AccountUpdated(
        equity_usd=equity,
        wallet_balance_usd=equity,
        available_balance_usd=equity,
        unrealized_pnl_usd=0.0,
        ts_ms=ts,
    )


def record(trade_id: str, pnl: float, *, risk_usd: float = 100.0) -> dict[str, Any]:
    return {
        "trade_id": trade_id,
        "strategy": STRATEGY,
        "regime": "TREND",
        "entry_order": {"filled_qty": 1.0},
        "risk": {"equity_usd": 10_000.0, "risk_usd": risk_usd},
        "result": {"reason": "SL" if pnl < 0 else "TP", "pnl_usd": pnl, "pnl_r_multiple": pnl / risk_usd},
        "costs": {"fees_usd": 0.0, "funding_usd": 0.0},
    }


def closed(trade_id: str, symbol: str, pnl: float, now_ms: int) -> TradeClosed:
    return TradeClosed(
        trade_id=trade_id, symbol=symbol, record=record(trade_id, pnl), realized_pnl_usd=pnl, close_ms=now_ms
    )


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


def hourly_history(seed: int, *, n: int = 80, end_ms: int = START) -> list[CandleClosed]:
    """`n` 1h closes per symbol up to `end_ms`: AAA and BBB correlated, CCC independent."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 0.01, n)
    series = {
        AAA: base,
        BBB: base + rng.normal(0.0, 0.002, n),
        CCC: rng.normal(0.0, 0.01, n),
    }
    closes = {s: 100.0 * np.exp(np.cumsum(r)) for s, r in series.items()}
    first = end_ms - end_ms % HOUR - n * HOUR
    out: list[CandleClosed] = []
    for i in range(n):
        for symbol, cs in closes.items():
            c = float(cs[i])
            candle = Candle(open_time_ms=first + i * HOUR, open=c, high=c, low=c, close=c, volume=1.0)
            out.append(CandleClosed(symbol=symbol, interval="1h", candle=candle))
    return out


def machine(
    *,
    cfg: BotConfig = CFG,
    mode: Mode = "PAPER_LIVE",
    symbols: Iterable[str] = (AAA,),
    tracker: PerformanceTracker | None = None,
    has_shadow: bool = False,
    persists: bool = False,
    emit_metrics: bool = False,
    **kw: Any,
) -> RiskMachine:
    return RiskMachine(
        cfg=cfg,
        mode=mode,
        symbols=symbols,
        rules_by_symbol=RULES,
        tracker=tracker,
        has_shadow=has_shadow,
        persists=persists,
        emit_metrics=emit_metrics,
        **kw,
    )


# --- a synchronous runtime ----------------------------------------------------------------------------


ShadowAnswer = Callable[[SendShadowPlan], str | None]
PersistAnswer = Callable[[Persist], str | None]


class Driver:
    """Runs a `RiskMachine` the way a discrete-event runtime does: timers kept as `at_ms`, fired in
    (at_ms, candle) order before a later input and after an input at the same time; every answer fed
    back while performing the effect it answers. `effects` holds everything the machine returned, in
    order (the answers' effects right after the effect they answer)."""

    def __init__(
        self,
        m: RiskMachine,
        *,
        now_ms: int = START,
        start: Start | None = None,
        shadow_answer: ShadowAnswer | None = None,
        persist_answer: PersistAnswer | None = None,
    ) -> None:
        self.machine = m
        self.now_ms = now_ms
        self.timers: dict[int, int] = {}
        self.effects: list[RiskEffect] = []
        self._shadow_answer = shadow_answer
        self._persist_answer = persist_answer
        self.feed(start if start is not None else Start())

    def at(self, now_ms: int) -> Driver:
        """Move time to `now_ms`, firing the timers due strictly before it."""
        self._fire(lambda at: at < now_ms)
        self.now_ms = max(self.now_ms, now_ms)
        return self

    def send(self, *msgs: RiskInbox) -> list[RiskEffect]:
        """Deliver inbox messages at the current time; the effects of these calls (and of the timers
        due at this time)."""
        mark = len(self.effects)
        for msg in msgs:
            self.feed(msg)
            self._fire(lambda at: at <= self.now_ms)
        return self.effects[mark:]

    def close(self) -> list[RiskEffect]:
        mark = len(self.effects)
        self.feed(InboxClosed())
        return self.effects[mark:]

    def feed(self, msg: RiskInput, now_ms: int | None = None) -> None:
        now = self.now_ms if now_ms is None else now_ms
        for effect in self.machine.handle(msg, now_ms=now):
            self.effects.append(effect)
            self._perform(effect, now)

    def _perform(self, effect: RiskEffect, now: int) -> None:
        match effect:
            case SetTimer():
                self.timers[effect.candle_open_time_ms] = effect.at_ms
            case CancelTimer():
                self.timers.pop(effect.candle_open_time_ms, None)
            case ReplyVerdict():
                mode = effect.reply.mode if isinstance(effect.reply, Reply) else "ok"
                if mode in ("closed", "full"):
                    self.feed(
                        VerdictUndelivered(reply=effect.reply, verdict=effect.verdict, reason=mode), now
                    )
            case SendShadowPlan():
                dropped = self._shadow_answer(effect) if self._shadow_answer is not None else None
                self.feed(ShadowPlanAnswered(effect=effect, dropped=dropped), now)
            case Persist():
                error = self._persist_answer(effect) if self._persist_answer is not None else None
                if error is not None:
                    self.feed(PersistFailed(effect=effect, error=error), now)
            case Log() | SendPlan() | SendRetryDecided() | SetMetric() | IncMetric() | Crash():
                pass

    def _fire(self, due: Callable[[int], bool]) -> None:
        while True:
            ready = sorted((at, key) for key, at in self.timers.items() if due(at))
            if not ready:
                return
            at, key = ready[0]
            del self.timers[key]
            self.now_ms = max(self.now_ms, at)
            self.feed(BatchDeadline(candle_open_time_ms=key), at)


def logs(effects: Iterable[RiskEffect], event: str | None = None) -> list[Log]:
    return [e for e in effects if isinstance(e, Log) and (event is None or e.event == event)]


def verdicts(effects: Iterable[RiskEffect]) -> dict[str, Verdict]:
    return {e.verdict.symbol: e.verdict for e in effects if isinstance(e, ReplyVerdict)}


def plans(effects: Iterable[RiskEffect]) -> list[SubmitPlan]:
    return [e.submit for e in effects if isinstance(e, SendPlan)]


# --- seeded random streams (the parity test) --------------------------------------------------------


class Step(msgspec.Struct, frozen=True):
    """Deliver `msg` at `at_ms` (wall time; the trio path sleeps until `at_ms - START` seconds)."""

    at_ms: int
    msg: Any


class Scenario(msgspec.Struct, kw_only=True):
    mode: Mode
    shadow: bool
    winning: bool
    steps: list[Step]
    end_ms: int


def shadow_drop(n: int) -> str | None:
    """The parity test's shadow book: every 5th plan finds it full, every 7th finds it gone."""
    if n % 5 == 0:
        return "shadow inbox full"
    if n % 7 == 0:
        return "shadow book stopped"
    return None


def scenario_machine(scn: Scenario, **kw: Any) -> RiskMachine:
    return machine(
        mode=scn.mode,
        symbols=SYMBOLS,
        tracker=winning_tracker() if scn.winning else None,
        has_shadow=scn.shadow,
        **kw,
    )


def build(seed: int, *, cycles: int = 48) -> tuple[Scenario, Driver]:
    """A reproducible stream, built against a direct driver (so fills, closes and retries refer to the
    plans the machine really sent). Returns the scenario and the driver that ran it."""
    rng = random.Random(seed)
    mode: Mode = "LIVE" if seed % 2 else "PAPER_LIVE"
    scn = Scenario(mode=mode, shadow=seed % 2 == 1, winning=seed % 4 in (1, 2), steps=[], end_ms=START)
    shadow_n = [0]

    def shadow_answer(_: SendShadowPlan) -> str | None:
        shadow_n[0] += 1
        return shadow_drop(shadow_n[0])

    d = Driver(scenario_machine(scn, persists=True, emit_metrics=True), shadow_answer=shadow_answer)
    replies = [0]
    equity = [10_000.0]
    monitored = list(SYMBOLS)

    def step(at_ms: int, msg: Any) -> None:
        # Never at a batch deadline: which of the two trio wakes first would be up to the scheduler.
        at_ms = max(at_ms, d.now_ms)
        while at_ms in d.timers.values():
            at_ms += 250
        scn.steps.append(Step(at_ms, msg))
        d.at(at_ms).send(msg)

    def token() -> object:
        replies[0] += 1
        roll = rng.random()
        return Reply(replies[0], "closed" if roll < 0.06 else "full" if roll < 0.1 else "ok")

    for msg in hourly_history(seed):
        step(START, msg)
    step(START, account(equity[0]))
    for k in range(1, cycles + 1):
        close = START + k * MIN5
        candle = close - MIN5
        t = close + 500
        order = list(monitored)
        rng.shuffle(order)
        for symbol in order:
            if rng.random() < 0.12:
                continue  # missing: the batch waits for its deadline
            signals = rng.random() < 0.7
            rep = report(
                symbol,
                candle,
                side=rng.choice([Side.LONG, Side.SHORT]),
                conf=rng.choice([0.4, 0.6, 0.7, 0.9]),
                price=round(rng.uniform(50.0, 150.0), 2),
                stop_pct=rng.choice([0.005, 0.01, 0.02]),
                signals=signals,
                reply=token() if signals and rng.random() < 0.9 else None,
            )
            step(t, rep)
            if rng.random() < 0.05:
                step(t, msgspec.structs.replace(rep, reply=token()))  # a duplicate
            t += 250
        if rng.random() < 0.08:  # a late report of an older candle
            step(t, report(rng.choice(SYMBOLS), candle - MIN5 * rng.randint(1, 2), reply=token()))
        if rng.random() < 0.04:  # a stale one
            step(t, report(rng.choice(SYMBOLS), candle - 60 * MIN5, reply=token()))
        # Later in the cycle: execution, account and control traffic, at whole quarter seconds.
        times = sorted(
            close + rng.randint(12, 280) * 1000 + rng.choice([0, 250, 500]) for _ in range(rng.randint(0, 4))
        )
        for at in times:
            msg = _event(rng, d, equity, at)
            if msg is not None:
                step(at, msg)
        if rng.random() < 0.06:
            tradable = tuple(s for s in SYMBOLS if rng.random() < 0.8) or (AAA,)
            step(
                close + 290_000,
                UniverseChanged(
                    tradable=tradable,
                    monitored=SYMBOLS,
                    rules=dict(RULES),
                    reference_symbol=rng.choice(["", BBB]),
                ),
            )
        if k == cycles - 4 and seed % 3 == 0:
            step(close + 295_000, StopIntake())
    scn.end_ms = START + (cycles + 1) * MIN5
    d.at(scn.end_ms).close()
    return scn, d


def _event(rng: random.Random, d: Driver, equity: list[float], at: int) -> RiskInbox | None:
    sent = [e.submit.plan for e in d.effects if isinstance(e, SendPlan)]
    shadow = [e.submit.plan for e in d.effects if isinstance(e, SendShadowPlan)]
    roll = rng.random()
    if roll < 0.2:
        equity[0] *= rng.uniform(0.985, 1.015)
        if rng.random() < 0.03:
            return account(float("nan"), at)
        return account(round(equity[0], 2), at)
    live = {e.trade_id for e in d.machine.exposures}
    open_plans = [p for p in sent if p.trade_id in live]
    if roll < 0.5 and sent:
        p = rng.choice(open_plans if open_plans and rng.random() < 0.85 else sent)
        kind = rng.random()
        if kind < 0.35:
            return EntryFilled(
                trade_id=p.trade_id,
                symbol=p.symbol,
                side=p.side,
                filled_qty=p.quantity if rng.random() < 0.7 else p.quantity / 2,
                avg_price=p.entry_price,
                stop_price=p.stop_price,
                final=rng.random() < 0.7,
                leverage=p.leverage,
            )
        if kind < 0.5:
            return PositionUpdated(
                trade_id=p.trade_id,
                symbol=p.symbol,
                side=p.side,
                qty=p.quantity,
                entry_price=p.entry_price,
                stop_price=p.stop_price * Decimal("1.001"),
                initial_stop_price=p.stop_price,
                trail_atr_mult=None,
                trail_after_r=None,
            )
        if kind < 0.75:
            pnl = rng.choice([-150.0, -90.0, -40.0, 60.0, 140.0, -700.0])
            return closed(p.trade_id, p.symbol, pnl, at)
        if kind < 0.85:
            return EntryAbandoned(trade_id=p.trade_id, symbol=p.symbol, reason="TTL")
        if kind < 0.93:
            return FundingBooked(
                trade_id=p.trade_id, symbol=p.symbol, amount_usd=rng.choice([-1.5, 0.7]), ts_ms=at
            )
        filled = p.quantity / 4 if rng.random() < 0.3 else Decimal(0)
        return RetryRequested(
            plan=p,
            mid=p.entry_price * Decimal("1.002") if rng.random() < 0.9 else None,
            filled_qty=filled,
            filled_avg_price=p.entry_price if filled else Decimal(0),
        )
    if roll < 0.6 and shadow:
        p = rng.choice(shadow)
        if rng.random() < 0.5:
            return RetryRequested(
                plan=p, mid=p.entry_price, filled_qty=Decimal(0), filled_avg_price=Decimal(0), shadow=True
            )
        return ShadowTradeClosed(record=record(p.trade_id, rng.choice([-100.0, 150.0, -80.0])))
    if roll < 0.65:
        return SafeModeChanged(on=rng.random() < 0.3, reasons=("WS_STALE",))
    if roll < 0.7:
        return KillSwitch(reason="OPERATOR") if rng.random() < 0.25 else Resume(reason="OPERATOR")
    if roll < 0.73 and sent:
        p = rng.choice(sent)
        return PortfolioSynced(
            exposures=(
                Exposure(
                    symbol=p.symbol,
                    side=p.side,
                    quantity=float(p.quantity),
                    entry_price=float(p.entry_price),
                    stop_price=float(p.stop_price),
                    pending=False,
                    trade_id=p.trade_id,
                ),
                Exposure(
                    symbol=CCC,
                    side=Side.SHORT,
                    quantity=1.0,
                    entry_price=100.0,
                    stop_price=None,
                    pending=False,
                    trade_id="",
                    foreign=True,
                ),
            )
        )
    if roll < 0.76:
        return ShadowTradeClosed(record={"trade_id": "broken"})  # an undecodable record
    return None


def observe(effects: Iterable[RiskEffect]) -> list[object]:
    """What a trio shell makes observable of the effects: log records, store writes, messages to
    execution and the shadow book, delivered verdicts and metric updates (timers are only observable
    through the decisions they cause)."""
    out: list[object] = []
    for e in effects:
        match e:
            case Log():
                out.append(("log", e.level.value, e.event, dict(e.fields)))
            case Persist():
                if e.risk_state is not None:
                    out.append(("save", "risk", e.risk_state, e.now_ms))
                if e.selection_state is not None:
                    out.append(("save", "selection", e.selection_state, e.now_ms))
            case SendPlan():
                out.append(("exec", e.submit))
            case SendRetryDecided():
                out.append(("shadow" if e.shadow else "exec", e.decided))
            case SendShadowPlan():
                out.append(("shadow_offer", e.submit))
            case ReplyVerdict():
                out.append(("verdict", e.reply, e.verdict))
            case SetMetric():
                out.append(("set", e.name, e.value, dict(e.labels)))
            case IncMetric():
                out.append(("inc", e.name, e.amount, dict(e.labels)))
            case SetTimer() | CancelTimer():
                pass
            case Crash():
                out.append(("crash", type(e.error), str(e.error)))
    return out


__all__ = [
    "AAA",
    "BBB",
    "CCC",
    "CFG",
    "HOUR",
    "MIN5",
    "RULES",
    "START",
    "STRATEGY",
    "SYMBOLS",
    "Driver",
    "Reply",
    "RetryDecided",
    "Scenario",
    "Step",
    "account",
    "build",
    "cfg_with",
    "closed",
    "hourly_history",
    "logs",
    "machine",
    "observe",
    "plans",
    "record",
    "report",
    "scenario_machine",
    "shadow_drop",
    "verdicts",
    "winning_tracker",
]

"""Strategy selection among a symbol's candidate signals (BOT_SPEC §7, second half).

This module owns the choice of which candidate signal (if any) goes on to the risk engine, and the
small persisted state that keeps that choice stable. The rules, in order:

1. Each candidate gets its strategy's standing in the regime (`PerformanceTracker.standing`):
   regime window if it has ≥ `min_trades_before_confidence` trades, else the global one; confidence
   capped at `low_sample_confidence_cap` below that; expectancy ≤ 0 on enough trades ⇒ ineligible
   (`disable_if_expectancy_negative`).
2. A candidate qualifies when it is not low-sample, eligible, and its confidence score
   min(regime confidence, strategy confidence) ≥ `regime.confidence_threshold`.
   Qualified candidates rank by net expectancy > 0 first, then score, then strategy priority.
3. Stability: the preferred strategy of a regime (the one the selector last chose there) changes at
   most `max_strategy_switches_per_day` times per UTC day, unless it became unusable (ineligible,
   disabled, no longer configured for the regime): that switch is always allowed (and counted).
   At the limit, the preferred strategy's own qualified signal is taken; if it did not signal, NO TRADE.
4. Nothing qualifies: in PAPER_LIVE with `paper_exploration`, a low-sample candidate (fewest trades
   first) may trade as `EXPLORATION` if the regime confidence itself meets the threshold; exploration
   neither changes the preferred strategy nor counts as a switch. LIVE never explores.
5. Otherwise NO TRADE, with a code and every candidate's numbers.
6. Lock-outs (`StrategySelector.locked_out`): candidates of a decision that cannot trade live for a
   reason only their own record can lift, while the regime's confidence meets the threshold. They
   trade on the shadow paper book (BOT_SPEC §7 [resolved]), so that their windows keep learning:
   `INELIGIBLE` (expectancy ≤ 0 on enough trades), `BELOW_THRESHOLD` (eligible, enough trades, but
   the strategy's own confidence is below the threshold), and `LOW_SAMPLE` when the mode never
   explores (LIVE, or exploration switched off). Without this a window that receives no trades never
   changes and the strategy is locked out for ever.

The function is pure. The UTC day comes from the `now_ms` passed in (the 5m close time), never from a
clock. `decision.state` is the state after the decision: persist it when the selected trade is
approved by risk (a rejected trade leaves the preference as it was), or on every decision for the day
rollover alone; both are safe.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from futures_actor.core.config import BotConfig
from futures_actor.core.models import Signal
from futures_actor.core.performance import PerformanceTracker, StrategyStanding
from futures_actor.core.strategies import STRATEGY_NAMES, strategy_allows_regime
from futures_actor.core.types import INTERVAL_MS, Regime

__all__ = [
    "LOCKOUT_BELOW_THRESHOLD",
    "LOCKOUT_INELIGIBLE",
    "LOCKOUT_LOW_SAMPLE",
    "NO_TRADE_BELOW_THRESHOLD",
    "NO_TRADE_INELIGIBLE",
    "NO_TRADE_LOW_SAMPLE",
    "NO_TRADE_NO_CANDIDATES",
    "NO_TRADE_REGIME",
    "NO_TRADE_SWITCH_LIMIT",
    "SELECT_EXPLORATION",
    "SELECT_FIRST_CHOICE",
    "SELECT_KEPT_PREFERRED",
    "SELECT_PREFERRED",
    "SELECT_SWITCHED",
    "SELECT_SWITCHED_INELIGIBLE",
    "CandidateAssessment",
    "LockedOut",
    "SelectionDecision",
    "SelectionInputError",
    "SelectionState",
    "StrategySelector",
    "decode_selection_state",
    "encode_selection_state",
    "utc_day",
]

Mode = Literal["PAPER_LIVE", "LIVE"]
Outcome = Literal["SELECTED", "EXPLORATION", "NO_TRADE"]

_DAY_MS = INTERVAL_MS["1d"]

SELECT_FIRST_CHOICE = "FIRST_CHOICE"  # no preferred strategy yet for the regime
SELECT_PREFERRED = "PREFERRED"  # the best candidate is the preferred strategy
SELECT_SWITCHED = "SWITCHED"  # preference changed, within the daily switch limit
SELECT_SWITCHED_INELIGIBLE = "SWITCHED_INELIGIBLE"  # preference changed because it became unusable
SELECT_KEPT_PREFERRED = "KEPT_PREFERRED"  # a better one exists, but the switch limit is reached
SELECT_EXPLORATION = "EXPLORATION"
NO_TRADE_NO_CANDIDATES = "NO_CANDIDATES"
NO_TRADE_REGIME = "NO_TRADE_REGIME"
NO_TRADE_SWITCH_LIMIT = "SWITCH_LIMIT"
NO_TRADE_LOW_SAMPLE = "LOW_SAMPLE"
NO_TRADE_INELIGIBLE = "INELIGIBLE"
NO_TRADE_BELOW_THRESHOLD = "BELOW_THRESHOLD"

_NOT_CONFIGURED = "NOT_CONFIGURED"

# Why a candidate is locked out of live trading (and goes to the shadow book instead).
LOCKOUT_INELIGIBLE = "INELIGIBLE"
LOCKOUT_BELOW_THRESHOLD = "BELOW_THRESHOLD"
LOCKOUT_LOW_SAMPLE = "LOW_SAMPLE"


class SelectionInputError(ValueError):
    """The candidates handed to the selector are inconsistent (a caller bug, never market data)."""

    def __init__(self, *, field: str, value: object, expected: str) -> None:
        super().__init__(f"selection input {field}: got {value!r}; expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


def utc_day(ms: int) -> int:
    """Days since the Unix epoch of a UTC timestamp in ms (the switch-limit calendar)."""
    return ms // _DAY_MS


class SelectionState(msgspec.Struct, frozen=True, kw_only=True):
    """Preferred strategy per regime and the switches made on `utc_day`. Persisted by the state store."""

    utc_day: int = -1
    preferred: dict[str, str] = msgspec.field(default_factory=dict)  # regime -> strategy
    switches: dict[str, int] = msgspec.field(default_factory=dict)  # regime -> switches on utc_day
    # Strategies ineligible on their global window (expectancy ≤ 0 on enough trades) and since when
    # (UTC ms); kept by PortfolioRisk for the reports, carried unchanged by the selector.
    ineligible_since: dict[str, int] = msgspec.field(default_factory=dict)
    # Strategies eligible on enough trades whose own confidence is below `regime.confidence_threshold`
    # in a regime they are configured for (performance-blocked) and since when (UTC ms); likewise.
    blocked_since: dict[str, int] = msgspec.field(default_factory=dict)

    def switches_on(self, regime: Regime, day: int) -> int:
        return self.switches.get(regime.value, 0) if day == self.utc_day else 0


_STATE_ENCODER = msgspec.json.Encoder()
_STATE_DECODER = msgspec.json.Decoder(SelectionState)


def encode_selection_state(state: SelectionState) -> bytes:
    return _STATE_ENCODER.encode(state)


def decode_selection_state(data: bytes | str) -> SelectionState:
    """Raises `msgspec.ValidationError` / `msgspec.DecodeError` naming the bad field."""
    return _STATE_DECODER.decode(data)


class CandidateAssessment(msgspec.Struct, frozen=True, kw_only=True):
    """One candidate's numbers as the selector saw them."""

    strategy: str
    side: str
    window: str
    n: int
    expectancy_r: float
    score: float
    max_drawdown_pct: float
    strategy_confidence: float
    confidence_score: float
    status: str  # OK, LOW_SAMPLE, NEGATIVE_EXPECTANCY, NOT_CONFIGURED
    low_sample: bool
    eligible: bool
    qualified: bool


class SelectionDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The explanation of one selection: the outcome, the code and every number compared."""

    outcome: Outcome
    code: str
    message: str
    symbol: str
    regime: Regime | None
    regime_confidence: float
    threshold: float
    mode: Mode
    signal: Signal | None = None
    strategy: str | None = None
    strategy_confidence: float | None = None
    confidence_score: float | None = None
    exploration: bool = False
    preferred_before: str | None = None
    switched: bool = False
    switches_today: int = 0
    max_switches_per_day: int = 0
    candidates: list[CandidateAssessment] = msgspec.field(default_factory=list)
    state: SelectionState = msgspec.field(default_factory=SelectionState)


class LockedOut(msgspec.Struct, frozen=True, kw_only=True):
    """A candidate that cannot trade live on this decision, and why (`LOCKOUT_*`)."""

    candidate: CandidateAssessment
    why: str


class _Context(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    regime: Regime | None
    regime_confidence: float
    preferred: str | None
    switches: int


def _priority(name: str) -> int:
    return STRATEGY_NAMES.index(name) if name in STRATEGY_NAMES else len(STRATEGY_NAMES)


class StrategySelector:
    """Chooses among candidate signals. `mode` is the effective run mode (PAPER_LIVE unless LIVE is
    both configured and switched on at the command line), not necessarily `cfg.mode`."""

    def __init__(self, *, cfg: BotConfig, mode: Mode) -> None:
        if mode not in ("PAPER_LIVE", "LIVE"):
            raise SelectionInputError(field="mode", value=mode, expected="PAPER_LIVE or LIVE")
        self._cfg = cfg
        self._mode: Mode = mode

    def select(
        self,
        candidates: list[Signal],
        *,
        tracker: PerformanceTracker,
        state: SelectionState,
        now_ms: int,
    ) -> SelectionDecision:
        """Pick at most one of `candidates` (one symbol, one closed candle, one regime)."""
        perf = self._cfg.performance
        threshold = self._cfg.regime.confidence_threshold
        day = utc_day(now_ms)
        if day != state.utc_day:
            state = msgspec.structs.replace(state, utc_day=day, preferred=dict(state.preferred), switches={})
        if not candidates:
            ctx = _Context(symbol="", regime=None, regime_confidence=0.0, preferred=None, switches=0)
            return self._make(
                ctx, "NO_TRADE", NO_TRADE_NO_CANDIDATES, "no strategy produced a signal", state, []
            )
        self._check_candidates(candidates)
        first = candidates[0]
        regime, regime_conf = first.regime, first.regime_confidence
        preferred = state.preferred.get(regime.value)
        switches = state.switches_on(regime, day)
        ctx = _Context(
            symbol=first.symbol,
            regime=regime,
            regime_confidence=regime_conf,
            preferred=preferred,
            switches=switches,
        )
        if regime is Regime.CHOP_NO_TRADE:
            return self._make(
                ctx, "NO_TRADE", NO_TRADE_REGIME, "regime CHOP_NO_TRADE is never traded", state, []
            )

        assessed = [self._assess(sig, tracker, regime_conf, threshold) for sig in candidates]
        signals = {sig.strategy: sig for sig in candidates}
        ranked = sorted(
            (a for a in assessed if a.qualified),
            key=lambda a: (a.expectancy_r <= 0, -a.score, _priority(a.strategy)),
        )

        chosen: CandidateAssessment | None = None
        code = ""
        switched = False
        blocked_by_limit = False
        if ranked:
            best = ranked[0]
            kept = next((a for a in ranked if a.strategy == preferred), None)
            if preferred is None or preferred == best.strategy:
                chosen, code = best, (SELECT_FIRST_CHOICE if preferred is None else SELECT_PREFERRED)
            elif not self._usable(preferred, regime, tracker):
                chosen, code, switched = best, SELECT_SWITCHED_INELIGIBLE, True
            elif switches < perf.max_strategy_switches_per_day:
                chosen, code, switched = best, SELECT_SWITCHED, True
            elif kept is not None:
                chosen, code = kept, SELECT_KEPT_PREFERRED
            else:
                blocked_by_limit = True

        if chosen is not None:
            new_switches = switches + 1 if switched else switches
            new_state = msgspec.structs.replace(
                state,
                utc_day=day,
                preferred={**state.preferred, regime.value: chosen.strategy},
                switches={**state.switches, regime.value: new_switches},
            )
            return self._make(
                ctx,
                "SELECTED",
                code,
                self._selected_message(code, chosen, preferred),
                new_state,
                assessed,
                chosen=chosen,
                signal=signals[chosen.strategy],
                confidence_score=chosen.confidence_score,
                switched=switched,
                switches_today=new_switches,
            )

        explorer = self._explorer(assessed, regime_conf, threshold)
        if explorer is not None:
            message = (
                f"{explorer.strategy} has {explorer.n} < {perf.min_trades_before_confidence} trades; "
                "paper exploration at the regime confidence"
            )
            return self._make(
                ctx,
                "EXPLORATION",
                SELECT_EXPLORATION,
                message,
                state,
                assessed,
                chosen=explorer,
                signal=signals[explorer.strategy],
                confidence_score=regime_conf,
                exploration=True,
            )

        code, message = self._no_trade_reason(assessed, blocked_by_limit, preferred, threshold)
        return self._make(ctx, "NO_TRADE", code, message, state, assessed)

    def _make(
        self,
        ctx: _Context,
        outcome: Outcome,
        code: str,
        message: str,
        state: SelectionState,
        assessed: list[CandidateAssessment],
        *,
        chosen: CandidateAssessment | None = None,
        signal: Signal | None = None,
        confidence_score: float | None = None,
        exploration: bool = False,
        switched: bool = False,
        switches_today: int | None = None,
    ) -> SelectionDecision:
        return SelectionDecision(
            outcome=outcome,
            code=code,
            message=message,
            symbol=ctx.symbol,
            regime=ctx.regime,
            regime_confidence=ctx.regime_confidence,
            threshold=self._cfg.regime.confidence_threshold,
            mode=self._mode,
            signal=signal,
            strategy=chosen.strategy if chosen is not None else None,
            strategy_confidence=chosen.strategy_confidence if chosen is not None else None,
            confidence_score=confidence_score,
            exploration=exploration,
            preferred_before=ctx.preferred,
            switched=switched,
            switches_today=ctx.switches if switches_today is None else switches_today,
            max_switches_per_day=self._cfg.performance.max_strategy_switches_per_day,
            candidates=assessed,
            state=state,
        )

    def explores(self) -> bool:
        """Whether low-sample strategies may trade as EXPLORATION here (PAPER_LIVE with the option)."""
        return self._mode == "PAPER_LIVE" and self._cfg.performance.paper_exploration

    def locked_out(self, decision: SelectionDecision) -> list[LockedOut]:
        """The candidates of `decision` that only the shadow book can teach (see rule 6), in candidate
        order. None when the regime's own confidence is below the threshold (the regime says no trade,
        whatever the records), for CHOP_NO_TRADE, and never the selected strategy."""
        threshold = self._cfg.regime.confidence_threshold
        regime = decision.regime
        if regime is None or regime is Regime.CHOP_NO_TRADE or decision.regime_confidence < threshold:
            return []
        out: list[LockedOut] = []
        for c in decision.candidates:
            if c.strategy == decision.strategy or c.status == _NOT_CONFIGURED:
                continue
            if not c.eligible:
                out.append(LockedOut(candidate=c, why=LOCKOUT_INELIGIBLE))
            elif c.low_sample:
                if not self.explores():
                    out.append(LockedOut(candidate=c, why=LOCKOUT_LOW_SAMPLE))
            elif c.strategy_confidence < threshold:
                out.append(LockedOut(candidate=c, why=LOCKOUT_BELOW_THRESHOLD))
        return out

    # -- helpers ---------------------------------------------------------------------------------

    def _check_candidates(self, candidates: list[Signal]) -> None:
        first = candidates[0]
        seen: set[str] = set()
        for sig in candidates:
            if sig.symbol != first.symbol:
                raise SelectionInputError(field="symbol", value=sig.symbol, expected=f"{first.symbol} only")
            if sig.regime is not first.regime:
                raise SelectionInputError(
                    field="regime", value=str(sig.regime), expected=f"{first.regime} only"
                )
            if sig.regime_confidence != first.regime_confidence:
                raise SelectionInputError(
                    field="regime_confidence",
                    value=sig.regime_confidence,
                    expected=f"{first.regime_confidence}",
                )
            if sig.strategy in seen:
                raise SelectionInputError(
                    field="strategy", value=sig.strategy, expected="one candidate per strategy"
                )
            seen.add(sig.strategy)

    def _assess(
        self, sig: Signal, tracker: PerformanceTracker, regime_conf: float, threshold: float
    ) -> CandidateAssessment:
        standing: StrategyStanding = tracker.standing(sig.strategy, sig.regime)
        allowed = strategy_allows_regime(self._cfg, sig.strategy, sig.regime)
        conf_score = min(regime_conf, standing.confidence)
        eligible = standing.eligible and allowed
        return CandidateAssessment(
            strategy=sig.strategy,
            side=sig.side.value,
            window=standing.window,
            n=standing.stats.n,
            expectancy_r=standing.stats.expectancy_r,
            score=standing.stats.score,
            max_drawdown_pct=standing.stats.max_drawdown_pct,
            strategy_confidence=standing.confidence,
            confidence_score=conf_score,
            status=standing.status if allowed else _NOT_CONFIGURED,
            low_sample=standing.low_sample,
            eligible=eligible,
            qualified=eligible and not standing.low_sample and conf_score >= threshold,
        )

    def _usable(self, strategy: str, regime: Regime, tracker: PerformanceTracker) -> bool:
        """Can the preferred strategy still trade this regime (the exception to the switch limit)?"""
        if not strategy_allows_regime(self._cfg, strategy, regime):
            return False
        standing = tracker.standing(strategy, regime)
        return standing.eligible and not standing.low_sample

    def _explorer(
        self, assessed: list[CandidateAssessment], regime_conf: float, threshold: float
    ) -> CandidateAssessment | None:
        if not self.explores():
            return None
        if regime_conf < threshold:
            return None
        pool = [a for a in assessed if a.low_sample and a.eligible]
        if not pool:
            return None
        return min(pool, key=lambda a: (a.n, _priority(a.strategy)))

    def _selected_message(self, code: str, chosen: CandidateAssessment, preferred: str | None) -> str:
        head = (
            f"{chosen.strategy}: expectancy {chosen.expectancy_r:.4g} R, score {chosen.score:.4g}, "
            f"confidence {chosen.confidence_score:.4g} ({chosen.window} window, N={chosen.n})"
        )
        match code:
            case "SWITCHED":
                return f"{head}; switched from {preferred}"
            case "SWITCHED_INELIGIBLE":
                return f"{head}; switched from {preferred}, which can no longer trade this regime"
            case "KEPT_PREFERRED":
                return f"{head}; kept as preferred: daily switch limit reached"
            case _:
                return head

    def _no_trade_reason(
        self,
        assessed: list[CandidateAssessment],
        blocked_by_limit: bool,
        preferred: str | None,
        threshold: float,
    ) -> tuple[str, str]:
        if blocked_by_limit:
            return (
                NO_TRADE_SWITCH_LIMIT,
                f"preferred strategy {preferred} did not signal and the daily switch limit "
                f"({self._cfg.performance.max_strategy_switches_per_day}) is reached",
            )
        if all(not a.eligible for a in assessed):
            names = ", ".join(f"{a.strategy} ({a.status})" for a in assessed)
            return NO_TRADE_INELIGIBLE, f"no eligible strategy: {names}"
        if any(a.low_sample and a.eligible for a in assessed):
            why = "LIVE never explores" if self._mode == "LIVE" else "exploration not allowed"
            names = ", ".join(f"{a.strategy} (N={a.n})" for a in assessed if a.low_sample)
            return NO_TRADE_LOW_SAMPLE, f"only low-sample strategies: {names}; {why}"
        best = max(assessed, key=lambda a: a.confidence_score)
        return (
            NO_TRADE_BELOW_THRESHOLD,
            f"best confidence {best.confidence_score:.4g} ({best.strategy}) < threshold {threshold:g}",
        )

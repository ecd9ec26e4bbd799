"""Start-up: the universe and symbol rules gathered at the edges, the start-up retry policy, signals.

Start-up policy (BOT_SPEC §10/§12 [resolved]):
- Transient exchange errors at start-up (timeouts and connection failures, 5xx, 429, -1021, a 418 ban)
  are retried, not fatal: `StartupRetry` waits with exponential backoff (`startup.retry_wait_*`), never
  less than a 429's Retry-After, and a ban is waited out to its end without a request (the limiter
  blocks every request until then; the end is also written to `<state_dir>/exchange_ban.json` so
  that a restarted process waits too instead of hitting the ban again, which Binance escalates).
  Each wait is logged (`startup_retry`). After `startup.give_up_seconds` of failures in a row (ban
  waits excluded) the last error ends the start-up (exit 1). Anything else fails at once.
- `ShutdownSignals` watches SIGTERM and SIGINT from the moment the process starts: the first one runs
  the current orderly action (abort the start-up, or ask the running system to stop), a second one
  cancels everything at once.

BOT_SPEC §2 selection itself is pure (`core.universe.select_universe`); this module only collects its
inputs. Live and paper: exchangeInfo, 24h tickers, premium index (funding), book-ticker samples over
`universe.spread_sample_seconds` (a fresh window at start-up) and 1h klines for the ATR ratio.
Replay: the symbols found in the klines directory, filtered by the rules the data supports (ATR ratio,
24h quote volume estimated from the last day of candles, whitelist, blacklist, funding when a funding
file exists); the exchange rules come from a recorded exchangeInfo beside the data when present,
otherwise they are derived from the price magnitude (documented in `derive_rules`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import trio

from futures_actor.binance import errors as bx
from futures_actor.binance.models import ExchangeInfo, symbol_rules_from, usable_symbol_rules
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.core.clock import WallClock, iso_utc
from futures_actor.core.config import BotConfig, StartupConfig
from futures_actor.core.types import INTERVAL_MS, SymbolRules
from futures_actor.core.universe import (
    SymbolListing,
    UniverseInputs,
    UniverseSelection,
    atr_ratio,
    average_spread_pct,
    select_universe,
)
from futures_actor.data.klines_csv import read_klines
from futures_actor.logs import get_logger

__all__ = [
    "BAN_FILE",
    "ShutdownSignals",
    "StartupRetry",
    "derive_rules",
    "read_ban_until",
    "replay_rules",
    "replay_universe",
    "replay_universe_selection",
    "select_live_universe",
    "transient_exchange_error",
    "write_ban_until",
]

log = get_logger("startup")

# How many book-ticker snapshots make the start-up spread window (spread over the window's samples).
SPREAD_SAMPLES = 6
# Only the most liquid candidates get their 1h klines fetched for the ATR ratio (API weight).
ATR_CANDIDATES_FACTOR = 3
ATR_BARS = 15
_DAY_MS = 86_400_000
_MS = 1000.0
BAN_FILE = "exchange_ban.json"


def _listing(rules: SymbolRules, *, contract_type: str, status: str, quote_asset: str) -> SymbolListing:
    return SymbolListing(
        symbol=rules.symbol,
        contract_type=contract_type,
        status=status,
        quote_asset=quote_asset,
        tick_size=rules.tick_size,
    )


async def select_live_universe(
    rest: BinanceRestClient, cfg: BotConfig, *, managed: Sequence[str] = ()
) -> tuple[UniverseSelection, dict[str, SymbolRules]]:
    """Gather BOT_SPEC §2 inputs over REST and select the monitored symbols."""
    info = await rest.exchange_info()
    rules: dict[str, SymbolRules] = {}
    listings: list[SymbolListing] = []
    for s, r in usable_symbol_rules(info.symbols):
        rules[s.symbol] = r
        listings.append(
            _listing(r, contract_type=s.contract_type, status=s.status, quote_asset=s.quote_asset)
        )
    tickers = await rest.ticker_24h()
    volume = {t.symbol: float(t.quote_volume) for t in tickers}
    price = {t.symbol: float(t.last_price) for t in tickers}
    funding = {
        p.symbol: float(p.funding_rate) for p in await rest.premium_index() if p.funding_rate is not None
    }
    samples: dict[str, list[tuple[float, float]]] = {}
    pause = cfg.universe.spread_sample_seconds / max(1, SPREAD_SAMPLES - 1)
    log.info("universe_spread_sampling", seconds=cfg.universe.spread_sample_seconds, samples=SPREAD_SAMPLES)
    for i in range(SPREAD_SAMPLES):
        for b in await rest.book_ticker():
            samples.setdefault(b.symbol, []).append((float(b.bid_price), float(b.ask_price)))
        if i < SPREAD_SAMPLES - 1:
            await trio.sleep(pause)
    spreads = {s: v for s, v in ((s, average_spread_pct(x)) for s, x in samples.items()) if v is not None}
    eligible = [
        ls.symbol
        for ls in listings
        if ls.contract_type == "PERPETUAL" and ls.status == "TRADING" and ls.quote_asset == "USDT"
    ]
    if cfg.universe.whitelist:
        eligible = [s for s in eligible if s in cfg.universe.whitelist]
    top = sorted(eligible, key=lambda s: -volume.get(s, 0.0))[
        : cfg.universe.max_monitored_symbols * ATR_CANDIDATES_FACTOR
    ]
    atr: dict[str, float] = {}
    tf = cfg.universe.atr_ratio_tf
    now = rest.server_now_ms()
    for symbol in top:
        rows = await rest.klines_range(
            symbol, tf, start_ms=now - (ATR_BARS + 2) * INTERVAL_MS[tf], end_ms=now, page_limit=ATR_BARS + 2
        )
        closed = [r for r in rows if r.close_time_ms < now]
        if len(closed) > ATR_BARS:
            value = atr_ratio(
                np.array([float(r.high) for r in closed]),
                np.array([float(r.low) for r in closed]),
                np.array([float(r.close) for r in closed]),
            )
            if value is not None:
                atr[symbol] = value
    inputs = UniverseInputs(
        listings=tuple(listings),
        quote_volume_24h=volume,
        last_price=price,
        avg_spread_pct=spreads,
        funding_rate=funding,
        atr_ratio=atr,
        managed_symbols=tuple(managed),
    )
    selection = select_universe(inputs, cfg)
    log.info(
        "universe_selected",
        selected=list(selection.selected),
        excluded=len(selection.excluded),
        reference=selection.reference_symbol,
    )
    return selection, {s: rules[s] for s in rules}


def _find_exchange_info(directory: Path) -> Path | None:
    """An exchangeInfo JSON inside the klines directory or in the shared payloads beside it."""
    for candidate_dir in (directory, directory.parent / "binance-payloads" / "rest"):
        if candidate_dir.is_dir():
            found = sorted(candidate_dir.glob("exchangeInfo*mainnet*.json")) or sorted(
                candidate_dir.glob("exchangeInfo*.json")
            )
            if found:
                return found[0]
    return None


def derive_rules(symbol: str, price: float) -> SymbolRules:
    """Rules for a symbol without recorded filters, from its price magnitude.

    Tick: five significant digits of price (BTC at 90 000 → 0.1, ETH at 3 000 → 0.01, like Binance).
    Step: the power of ten nearest to 1 USDT of notional. Minimum notional 5 USDT (Binance's floor
    for most perpetuals). Used only for replay when no exchangeInfo is available.
    """
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"derive_rules({symbol}): price {price!r} must be a positive finite number")
    tick = Decimal(10) ** (math.floor(math.log10(price)) - 5)
    step = Decimal(10) ** min(3, max(-8, math.floor(math.log10(1.0 / price))))
    return SymbolRules(symbol=symbol, tick_size=tick, step_size=step, min_qty=step, min_notional=Decimal(5))


def replay_rules(
    directory: Path, symbols: Sequence[str], last_price: Mapping[str, float]
) -> dict[str, SymbolRules]:
    """Exchange rules for the replayed symbols: recorded exchangeInfo where it has them, else derived."""
    rules: dict[str, SymbolRules] = {}
    path = _find_exchange_info(directory)
    if path is not None:
        import msgspec

        info = msgspec.json.decode(path.read_bytes(), type=ExchangeInfo)
        for s in info.symbols:
            if s.symbol in symbols:
                rules[s.symbol] = symbol_rules_from(s)
        log.info("replay_rules_loaded", file=str(path), symbols=sorted(rules))
    for symbol in symbols:
        if symbol not in rules:
            rules[symbol] = derive_rules(symbol, last_price[symbol])
            log.warning("replay_rules_derived", symbol=symbol, tick=str(rules[symbol].tick_size))
    return rules


def replay_universe(
    directory: Path, symbols: Sequence[str], cfg: BotConfig, *, at_ms: int | None = None
) -> tuple[list[str], dict[str, float]]:
    """The replay universe: (selected, first close by symbol); see `replay_universe_selection`."""
    selection, price = replay_universe_selection(directory, symbols, cfg, at_ms=at_ms)
    return list(selection.selected), price


def replay_universe_selection(
    directory: Path, symbols: Sequence[str], cfg: BotConfig, *, at_ms: int | None = None
) -> tuple[UniverseSelection, dict[str, float]]:
    """The replay universe: BOT_SPEC §2 rules that recorded klines support, evaluated at the start.

    Quote volume is estimated as Σ close × volume over the first day of 5m candles; spread and funding
    count as passing (no book or funding snapshot in the klines). Returns the selection (with the beta
    reference: the selected symbol of highest quote volume) and the first close by symbol.
    """
    volume: dict[str, float] = {}
    price: dict[str, float] = {}
    atr: dict[str, float] = {}
    listings: list[SymbolListing] = []
    bars_per_day = _DAY_MS // INTERVAL_MS["5m"]
    for symbol in symbols:
        five = read_klines(directory / f"{symbol}-5m.csv.gz", interval="5m", limit=int(bars_per_day))
        hour = read_klines(directory / f"{symbol}-1h.csv.gz", interval="1h", limit=ATR_BARS * 4)
        close = float(five.close[-1]) if len(five.close) else float("nan")
        price[symbol] = close
        volume[symbol] = float(np.sum(five.close * five.volume))
        value = atr_ratio(hour.high, hour.low, hour.close) if len(hour.close) > ATR_BARS else None
        if value is not None:
            atr[symbol] = value
        listings.append(
            SymbolListing(
                symbol=symbol,
                contract_type="PERPETUAL",
                status="TRADING",
                quote_asset="USDT",
                tick_size=derive_rules(symbol, close).tick_size,
            )
        )
    # Replay runs on whatever history the user recorded: the volume floor of live selection (meant for
    # a live 24h ticker) is not applied to a day estimated from candles, the other rules are.
    inputs = UniverseInputs(
        listings=tuple(listings),
        quote_volume_24h={s: max(v, cfg.universe.min_24h_volume_usdt) for s, v in volume.items()},
        last_price=price,
        avg_spread_pct={},
        funding_rate={},
        atr_ratio=atr,
        has_book_data=False,
        has_funding_data=False,
    )
    selection = select_universe(inputs, cfg)
    for ex in selection.excluded:
        log.info("replay_symbol_excluded", symbol=ex.symbol, code=ex.code, message=ex.message)
    return selection, price


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------- start-up retry


def transient_exchange_error(exc: BaseException) -> BaseException | None:
    """The transient exchange error inside `exc` (possibly a group), or None if there is none.

    Transient: the request did not get a definite answer or was refused for now (timeouts and
    connection failures, 5xx and -1001/-1008, 429, 418, -1021, an unknown status). A definite
    rejection (bad key, bad parameter) is not: retrying it would only repeat it.
    """
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = transient_exchange_error(inner)
            if found is not None:
                return found
        return None
    transient = (
        bx.TransportError,
        bx.ServerError,
        bx.RateLimited,
        bx.IpBanned,
        bx.TimestampOutOfWindow,
        bx.UnknownOrderStatus,
        httpx.TransportError,
    )
    return exc if isinstance(exc, transient) else None


def read_ban_until(state_dir: Path) -> int:
    """The end (wall ms) of the last 418 ban recorded in the state directory, 0 if none."""
    try:
        data = json.loads((state_dir / BAN_FILE).read_text(encoding="utf-8"))
        value = data.get("until_ms") if isinstance(data, dict) else None
        return int(value) if isinstance(value, int) else 0
    except (OSError, ValueError):
        return 0


def write_ban_until(state_dir: Path, until_ms: int) -> None:
    """Record a 418 ban's end (atomically); a failure is logged, never raised (the limiter still waits)."""
    path = state_dir / BAN_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(
            json.dumps({"until_ms": until_ms, "until": iso_utc(until_ms)}) + "\n", encoding="utf-8"
        )
        os.replace(tmp, path)
    except OSError as exc:
        log.error("ban_file_write_failed", path=str(path), error=str(exc))


class StartupRetry:
    """Backoff for the start-up phases (see the module policy). One instance per process start."""

    def __init__(self, *, cfg: StartupConfig, wall_clock: WallClock) -> None:
        self._cfg = cfg
        self._clock = wall_clock
        self._delay = cfg.retry_wait_initial_seconds
        self._failing_since: float | None = None
        self.attempts = 0

    def succeeded(self) -> None:
        self._delay = self._cfg.retry_wait_initial_seconds
        self._failing_since = None

    async def wait_for_ban(self, until_ms: int, *, source: str) -> None:
        """Sleep until a ban's end without a request (no-op if it is over)."""
        wait_s = (until_ms - self._clock.now_ms()) / _MS
        if wait_s <= 0:
            return
        log.error("startup_waiting_for_ban", until=iso_utc(until_ms), wait_s=round(wait_s, 3), source=source)
        await trio.sleep(wait_s)
        self._failing_since = None

    async def after_failure(self, exc: BaseException, *, phase: str) -> None:
        """Wait before the next attempt, or re-raise `exc` when it is not transient or time is up."""
        cause = transient_exchange_error(exc)
        if cause is None:
            raise exc
        now = trio.current_time()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= self._cfg.give_up_seconds:
            log.error(
                "startup_gave_up",
                phase=phase,
                error_type=type(cause).__name__,
                error=str(cause),
                failing_seconds=round(now - self._failing_since, 3),
            )
            raise exc
        self.attempts += 1
        if isinstance(cause, bx.IpBanned):
            await self.wait_for_ban(cause.until_ms, source=phase)
            return
        wait_s = self._delay
        if isinstance(cause, bx.RateLimited):
            wait_s = max(wait_s, cause.retry_after_s)
        self._delay = min(self._delay * 2, self._cfg.retry_wait_max_seconds)
        log.warning(
            "startup_retry",
            phase=phase,
            attempt=self.attempts,
            error_type=type(cause).__name__,
            error=str(cause),
            wait_s=round(wait_s, 3),
        )
        await trio.sleep(wait_s)


# ------------------------------------------------------------------------------------------------ signals


class ShutdownSignals:
    """SIGTERM/SIGINT from process start: the first runs the current orderly action, a second cancels.

    `action` is what the first signal does now (abort the start-up; later: ask the system to stop);
    setting it after a signal already arrived runs it at once. `immediate` tells the caller that a
    second signal cut the orderly stop short.
    """

    def __init__(self) -> None:
        self.requested = trio.Event()
        self.immediate = False
        self.signal_name: str | None = None
        self.phase = "start-up"
        self._action: Callable[[], None] | None = None

    def set_action(self, action: Callable[[], None], *, phase: str) -> None:
        self._action = action
        self.phase = phase
        if self.requested.is_set():
            action()

    async def watch(
        self, cancel_all: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                if self.receive(signum, cancel_all.cancel):
                    return

    def receive(self, signum: int, stop_at_once: Callable[[], None]) -> bool:
        """One signal: the first runs the orderly action, a second calls `stop_at_once` (returns True)."""
        name = signal.Signals(signum).name
        if not self.requested.is_set():
            self.signal_name = name
            log.warning("signal_received", signal=name, action="orderly stop", phase=self.phase)
            self.requested.set()
            if self._action is not None:
                self._action()
            return False
        log.warning("signal_received", signal=name, action="immediate stop", phase=self.phase)
        self.immediate = True
        stop_at_once()
        return True

    @contextlib.contextmanager
    def handled_in_place(self) -> Iterator[None]:
        """While a long synchronous computation holds the trio thread (the replay's event loop), signals
        are handled by Python handlers in place: the first runs the orderly action; a second raises
        `StopAtOnce` out of the computation. The previous handlers are restored afterwards."""

        def handler(signum: int, _frame: object) -> None:
            self.receive(signum, _raise_stop_at_once)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


class StopAtOnce(Exception):
    """A second signal during a synchronous computation: stop now, without the orderly stop."""


def _raise_stop_at_once() -> None:
    raise StopAtOnce("second signal: stop at once")

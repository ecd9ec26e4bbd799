"""The MarketData actor (live and paper-live): REST backfill, live streams, continuity, staleness.

This module owns, per monitored symbol, the continuity of the closed-candle series that reaches the
symbol actors (BOT_SPEC §3, §12; failure-modes F6), and the `MarketRouter` that delivers market
messages to the symbol actors' inboxes and to extra taps (the paper exchange).

Policy:

- Start-up: for every symbol, `market_data.history_1h_bars` 1h then `history_5m_bars` 5m CLOSED
  candles over REST (paced by the client's weight limiter; a candle whose close time is not before
  the server time is still in progress and dropped), emitted in order as `CandleClosed(source="rest")`;
  then `task_status.started()`; then the live streams (`kline_5m`, `kline_1h`, `bookTicker`,
  `markPrice` of every symbol) through `MarketStreams`.
- Every closed kline is checked per (symbol, interval) against the last candle emitted: the same open
  time ⇒ duplicate, dropped; older ⇒ out of order, dropped and logged; malformed ⇒ dropped and logged;
  more than one interval ahead ⇒ the missing range is fetched over REST and emitted in order first,
  then the new candle. If the missing range cannot be fetched completely (REST failure after the
  client's retries, a hole in the answer, a malformed REST candle), a fault is reported and the new
  candle is held back (not emitted), so a symbol never decides on a gap; the next trigger (the next
  closed kline, or the `StreamGap` after a reconnect) retries from the last emitted candle.
- Order across timeframes: a 1h candle goes out before the 5m candle that closes with it (the symbol
  actor decides on the 5m close with the trend of the hour just closed). A live 5m candle closing on
  an hour boundary whose 1h candle has not been sent yet is held until that 1h candle is sent, at
  most `market_data.trend_close_wait_seconds`; then the 1h candle is fetched over REST and the 5m
  candle is sent in any case. Before a 5m gap is backfilled, the 1h candles closed meanwhile are.
- `StreamGap` (after every (re)connect) ⇒ backfill every kline stream of the gap from its last emitted
  candle to now. A symbol whose start-up history failed has no last candle: its history is fetched
  again at the next trigger. A REST failure never crashes the actor: it is logged with the symbol and
  reported through `on_fault(kind, symbol, detail)`.
- `StreamStale` ⇒ `on_fault("STALE_DATA", symbol, detail)`; every kline, book and mark event ⇒
  `on_data(symbol, stream, trio_seconds)` (freshness facts for the Health actor, trio time).
- Book and mark events are forwarded as `BookUpdated` / `MarkUpdated`.
- `set_symbols(new)`: the new symbols are backfilled first, then the streams are restarted with the
  new set (their `StreamGap` backfills everybody else's missed candles). Events of symbols no longer
  monitored are ignored. Routes (inboxes) are owned by whoever registers them on the router.

Only `run` touches the continuity state: `set_symbols` goes through the actor's own bounded channel.
`history(symbol)` is a read-only REST fetch usable as the SymbolActor's `HistoryLoader`.

Wiring note: the start-up backfill is sent with `await send` to the routed inboxes before
`task_status.started()`; an inbox must therefore be drained (its actor running) or big enough, or the
symbol not yet routed (a symbol without a route gets nothing and can load `history()` itself).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec
import trio

from futures_actor.actors.messages import BookUpdated, CandleClosed, MarkUpdated
from futures_actor.binance.errors import (
    BinanceError,
    IpBanned,
    RateLimited,
    ServerError,
    TimestampOutOfWindow,
)
from futures_actor.binance.market_ws import (
    BookTicker,
    KlineClosed,
    MarketEvent,
    MarketStreams,
    MarkPrice,
    StreamGap,
    StreamStale,
)
from futures_actor.binance.models import RestKline
from futures_actor.binance.urls import resolve_urls
from futures_actor.binance.ws_conn import WsConnector, default_connector
from futures_actor.core.candles import InvalidCandle, validate_candle
from futures_actor.core.config import BotConfig
from futures_actor.core.health import FaultKind
from futures_actor.core.types import INTERVAL_MS, Candle
from futures_actor.logs import get_logger

__all__ = [
    "MARKET_DATA_INBOX_SIZE",
    "DataCallback",
    "FaultCallback",
    "KlineSource",
    "MarketData",
    "MarketMsg",
    "MarketRouter",
    "kline_stream_names",
    "split_stream_name",
]

MarketMsg = CandleClosed | BookUpdated | MarkUpdated
FaultCallback = Callable[[str, str, str], None]
"""`on_fault(kind, symbol, detail)`: `kind` is a `core.health.FaultKind` value."""
DataCallback = Callable[[str, str, float], None]
"""`on_data(symbol, stream, ts)`: `stream` e.g. `kline_5m`, `bookTicker`; `ts` in trio seconds."""

# The actor's own inbox (stream events and commands). Small: a full one is back-pressure on the WS reader.
MARKET_DATA_INBOX_SIZE = 256
# An inbox at or above this fill fraction is logged (once per crossing) as back-pressure.
_HIGH_FILL_FRACTION = 0.8
_BOOK_STREAM = "bookTicker"
_MARK_STREAM = "markPrice"
_KLINE_PREFIX = "kline_"

log = get_logger("market_data")


class KlineSource(Protocol):
    """The part of `BinanceRestClient` MarketData uses (the fake exchange's client fits too)."""

    async def klines_range(
        self, symbol: str, interval: str, *, start_ms: int, end_ms: int, page_limit: int = ...
    ) -> list[RestKline]: ...

    def server_now_ms(self) -> int: ...


def kline_stream_names(symbol: str, intervals: Sequence[str]) -> list[str]:
    """The stream names of one symbol: klines of `intervals`, book ticker and mark price."""
    s = symbol.lower()
    return [*(f"{s}@{_KLINE_PREFIX}{tf}" for tf in intervals), f"{s}@{_BOOK_STREAM}", f"{s}@{_MARK_STREAM}"]


def split_stream_name(stream: str) -> tuple[str, str]:
    """`btcusdt@kline_5m` → (`BTCUSDT`, `kline_5m`)."""
    symbol, _, kind = stream.partition("@")
    return symbol.upper(), kind


def _noop_fault(kind: str, symbol: str, detail: str) -> None:
    return None


def _noop_data(symbol: str, stream: str, ts: float) -> None:
    return None


def fault_kind_for(exc: BaseException) -> FaultKind:
    """The health fault a REST failure counts as (anything else that starves a symbol is stale data)."""
    if isinstance(exc, RateLimited | IpBanned):
        return FaultKind.RATE_LIMIT
    if isinstance(exc, TimestampOutOfWindow):
        return FaultKind.TIMESTAMP
    if isinstance(exc, ServerError):
        return FaultKind.SERVER_ERROR
    return FaultKind.STALE_DATA


# --------------------------------------------------------------------------------------- router


class MarketRouter:
    """Delivers market messages: to the inbox of the message's symbol, and to every tap.

    Sends are awaited (a full inbox is back-pressure); an inbox whose fill level reaches
    `_HIGH_FILL_FRACTION` of its buffer is logged once per crossing. A closed or broken inbox is logged
    and its route removed (a restarted actor registers again with `add_symbol`); nothing else is lost.
    A symbol without a route gets nothing (taps still do).
    """

    def __init__(self) -> None:
        self._routes: dict[str, trio.abc.SendChannel[Any]] = {}
        self._taps: list[trio.abc.SendChannel[Any]] = []
        self._high: set[int] = set()

    @property
    def symbols(self) -> list[str]:
        return list(self._routes)

    def add_symbol(self, symbol: str, inbox: trio.abc.SendChannel[Any]) -> None:
        """Route `symbol`'s messages to `inbox` (replacing any earlier route)."""
        self._routes[symbol] = inbox

    def remove_symbol(self, symbol: str) -> None:
        self._routes.pop(symbol, None)

    def add_tap(self, send: trio.abc.SendChannel[Any]) -> None:
        """Also send every message (all symbols) to `send`."""
        self._taps.append(send)

    def remove_tap(self, send: trio.abc.SendChannel[Any]) -> None:
        self._taps = [t for t in self._taps if t is not send]

    async def publish(self, symbol: str, msg: MarketMsg) -> None:
        inbox = self._routes.get(symbol)
        delivered = inbox is None or await self._send(inbox, msg, symbol=symbol, target="symbol")
        if not delivered and self._routes.get(symbol) is inbox:
            del self._routes[symbol]
        for tap in list(self._taps):
            if not await self._send(tap, msg, symbol=symbol, target="tap"):
                self.remove_tap(tap)

    async def _send(self, ch: trio.abc.SendChannel[Any], msg: MarketMsg, *, symbol: str, target: str) -> bool:
        try:
            await ch.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.warning("market_route_closed", symbol=symbol, target=target, error=type(exc).__name__)
            return False
        if isinstance(ch, trio.MemorySendChannel):
            stats = ch.statistics()
            size = stats.max_buffer_size
            key = id(ch)
            if size and size != float("inf") and stats.current_buffer_used >= _HIGH_FILL_FRACTION * size:
                if key not in self._high:
                    self._high.add(key)
                    log.warning(
                        "inbox_fill_high",
                        symbol=symbol,
                        target=target,
                        used=stats.current_buffer_used,
                        size=size,
                    )
            else:
                self._high.discard(key)
        return True


# ------------------------------------------------------------------------------------ the actor


class _SetSymbols(msgspec.Struct, frozen=True, kw_only=True):
    symbols: tuple[str, ...]


class _TrendWaitOver(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    close_ms: int


_Item = MarketEvent | _SetSymbols | _TrendWaitOver


class MarketData:
    """Live market data for a set of symbols; see the module docstring for the policy."""

    def __init__(
        self,
        *,
        cfg: BotConfig,
        rest: KlineSource,
        symbols: Sequence[str],
        subscribers: MarketRouter,
        connector: WsConnector = default_connector,
        ws_base: str | None = None,
        on_fault: FaultCallback | None = None,
        on_data: DataCallback | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = cfg
        self._rest = rest
        self._symbols: list[str] = list(dict.fromkeys(symbols))
        self._router = subscribers
        self._connector = connector
        self._ws_base = ws_base or resolve_urls(cfg.exchange).ws
        self._on_fault = on_fault or _noop_fault
        self._on_data = on_data or _noop_data
        self._rng = rng or random.Random(cfg.replay.seed)
        # Trend timeframe first: at one close time the 1h candle goes out before the 5m one.
        self._signal_tf = cfg.timeframes.signal_tf
        self._trend_tf = cfg.timeframes.trend_tf
        self._intervals: tuple[str, ...] = (self._trend_tf, self._signal_tf)
        self._bars = {
            cfg.timeframes.signal_tf: cfg.market_data.history_5m_bars,
            cfg.timeframes.trend_tf: cfg.market_data.history_1h_bars,
        }
        self._last: dict[tuple[str, str], int] = {}
        # A live 5m close waiting for the 1h candle that closes at the same time (sent first).
        self._held: dict[str, CandleClosed] = {}
        self._send, self._recv = trio.open_memory_channel[_Item](MARKET_DATA_INBOX_SIZE)
        self._nursery: trio.Nursery | None = None
        self._streams_scope: trio.CancelScope | None = None
        self.streams: MarketStreams | None = None
        self.backfill_failures = 0

    # ----------------------------------------------------------------- public

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def last_open_time_ms(self, symbol: str, interval: str) -> int | None:
        """Open time of the last candle emitted for (symbol, interval), None before any."""
        return self._last.get((symbol, interval))

    async def set_symbols(self, symbols: Sequence[str]) -> None:
        """Change the monitored set: new symbols are backfilled, then the streams resubscribe."""
        await self._send.send(_SetSymbols(symbols=tuple(dict.fromkeys(symbols))))

    async def history(self, symbol: str) -> tuple[list[Candle], list[Candle]]:
        """Recent closed (5m, 1h) candles of `symbol` over REST, oldest first (a `HistoryLoader`).

        Read-only: it does not touch the actor's continuity state. REST errors propagate."""
        out: dict[str, list[Candle]] = {}
        for tf in self._intervals:
            start, end = self._history_window(tf, None)
            rows = await self._rest.klines_range(
                symbol, tf, start_ms=start, end_ms=end, page_limit=self._page_limit(start, end, tf)
            )
            out[tf] = self._closed(rows)[-self._bars[tf] :]
        return out[self._cfg.timeframes.signal_tf], out[self._cfg.timeframes.trend_tf]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for symbol in self._symbols:
            await self._backfill_symbol(symbol)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._restart_streams()
            async for item in self._recv:
                await self._handle(item)

    # ----------------------------------------------------------------- dispatch

    async def _handle(self, item: _Item) -> None:
        match item:
            case KlineClosed():
                await self._on_kline(item)
            case BookTicker():
                if item.symbol in self._symbols:
                    self._on_data(item.symbol, _BOOK_STREAM, trio.current_time())
                    msg = BookUpdated(
                        symbol=item.symbol,
                        bid=float(item.bid_price),
                        ask=float(item.ask_price),
                        ts_ms=item.event_time_ms,
                    )
                    await self._router.publish(item.symbol, msg)
            case MarkPrice():
                if item.symbol in self._symbols:
                    self._on_data(item.symbol, _MARK_STREAM, trio.current_time())
                    mark = MarkUpdated(
                        symbol=item.symbol,
                        mark_price=float(item.mark_price),
                        funding_rate=float(item.funding_rate),
                        next_funding_ms=item.next_funding_time_ms,
                        ts_ms=item.event_time_ms,
                    )
                    await self._router.publish(item.symbol, mark)
            case StreamGap():
                await self._on_gap(item)
            case StreamStale():
                symbol, kind = split_stream_name(item.stream)
                if symbol in self._symbols:
                    detail = f"stream {item.stream} silent for {item.silent_seconds:.1f}s"
                    log.warning("market_data_stale", symbol=symbol, stream=kind, silent_s=item.silent_seconds)
                    self._on_fault(FaultKind.STALE_DATA, symbol, detail)
            case _SetSymbols():
                await self._on_set_symbols(item.symbols)
            case _TrendWaitOver():
                held = self._held.get(item.symbol)
                if (
                    held is not None
                    and held.candle.open_time_ms + INTERVAL_MS[self._signal_tf] == item.close_ms
                ):
                    log.warning("trend_close_late", symbol=item.symbol, close_ms=item.close_ms)
                    await self._backfill(item.symbol, self._trend_tf, until_ms=None)
                    await self._release(item.symbol)
            case _:  # pragma: no cover - the union is closed
                log.error("market_data_unknown_item", item=repr(item))

    async def _on_kline(self, ev: KlineClosed) -> None:
        symbol, tf, candle = ev.symbol, ev.interval, ev.candle
        if symbol not in self._symbols or tf not in self._bars:
            return
        self._on_data(symbol, _KLINE_PREFIX + tf, trio.current_time())
        held = self._held.get(symbol)
        if tf == self._signal_tf and held is not None and candle.open_time_ms > held.candle.open_time_ms:
            await self._release(symbol)  # the next 5m close came first: never hold two
        step = INTERVAL_MS[tf]
        try:
            validate_candle(candle, symbol=symbol, interval=tf, interval_ms=step)
        except InvalidCandle as exc:
            log.warning("kline_rejected", symbol=symbol, interval=tf, error=str(exc))
            return
        key = (symbol, tf)
        t = candle.open_time_ms
        last = self._last.get(key)
        if last is not None and t == last:
            log.debug("kline_duplicate", symbol=symbol, interval=tf, open_time_ms=t)
            return
        if last is not None and t < last:
            log.warning(
                "kline_out_of_order", symbol=symbol, interval=tf, open_time_ms=t, last_open_time_ms=last
            )
            return
        if last is None or t > last + step:
            log.info("kline_gap", symbol=symbol, interval=tf, open_time_ms=t, last_open_time_ms=last)
            if tf == self._signal_tf:  # the 1h candles closed meanwhile go first
                await self._backfill(symbol, self._trend_tf, until_ms=None)
            ok = await self._backfill(symbol, tf, until_ms=t - step)
            after = self._last.get(key)
            if not ok or (after is not None and after != t - step):
                log.warning(
                    "kline_held_back", symbol=symbol, interval=tf, open_time_ms=t, last_open_time_ms=after
                )
                if ok:  # REST answered but lacks candles the stream already moved past
                    self._fault(
                        FaultKind.STALE_DATA, symbol, f"{tf} REST history ends at {after}, before {t}"
                    )
                return
        self._last[key] = t
        msg = CandleClosed(symbol=symbol, interval=tf, candle=candle, source="ws")
        if tf == self._signal_tf and self._trend_pending(symbol, t + step):
            assert self._nursery is not None
            self._held[symbol] = msg
            self._nursery.start_soon(self._trend_deadline, symbol, t + step)
            return
        await self._router.publish(symbol, msg)
        if tf == self._trend_tf:
            await self._release_if_trend_done(symbol)

    def _trend_pending(self, symbol: str, close_ms: int) -> bool:
        """True when a 1h candle closes at `close_ms` and has not been sent yet (1h history known)."""
        step = INTERVAL_MS[self._trend_tf]
        last = self._last.get((symbol, self._trend_tf))
        return close_ms % step == 0 and last is not None and last + step < close_ms

    async def _trend_deadline(self, symbol: str, close_ms: int) -> None:
        await trio.sleep(self._cfg.market_data.trend_close_wait_seconds)
        await self._send.send(_TrendWaitOver(symbol=symbol, close_ms=close_ms))

    async def _release(self, symbol: str) -> None:
        held = self._held.pop(symbol, None)
        if held is not None:
            await self._router.publish(symbol, held)

    async def _release_if_trend_done(self, symbol: str) -> None:
        held = self._held.get(symbol)
        if held is not None and not self._trend_pending(
            symbol, held.candle.open_time_ms + INTERVAL_MS[self._signal_tf]
        ):
            await self._release(symbol)

    async def _on_gap(self, ev: StreamGap) -> None:
        log.info("market_stream_gap", reason=ev.reason, streams=len(ev.streams))
        for stream in ev.streams:
            symbol, kind = split_stream_name(stream)
            if not kind.startswith(_KLINE_PREFIX) or symbol not in self._symbols:
                continue
            tf = kind.removeprefix(_KLINE_PREFIX)
            if tf in self._bars:
                await self._backfill(symbol, tf, until_ms=None)

    async def _on_set_symbols(self, symbols: tuple[str, ...]) -> None:
        old = set(self._symbols)
        added = [s for s in symbols if s not in old]
        removed = old - set(symbols)
        log.info("market_data_universe", added=added, removed=sorted(removed))
        for key in [k for k in self._last if k[0] in removed]:
            del self._last[key]
        for symbol in removed:
            if self._held.pop(symbol, None) is not None:
                log.info("kline_held_dropped", symbol=symbol, reason="symbol no longer monitored")
        self._symbols = list(symbols)
        for symbol in added:
            await self._backfill_symbol(symbol)
        if added or removed:
            await self._restart_streams()

    # ----------------------------------------------------------------- streams

    async def _restart_streams(self) -> None:
        assert self._nursery is not None
        if self._streams_scope is not None:
            self._streams_scope.cancel()
            self._streams_scope = None
        names = [n for s in self._symbols for n in kline_stream_names(s, self._intervals)]
        if not names:
            self.streams = None
            return
        self._streams_scope = await self._nursery.start(self._run_streams, names)

    async def _run_streams(
        self, names: list[str], *, task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            streams = MarketStreams(
                cfg=self._cfg.exchange,
                ws_base=self._ws_base,
                streams=names,
                send=self._send,  # MarketEvent is a part of _Item
                stale_after_seconds=self._cfg.health.stale_data_seconds,
                connector=self._connector,
                rng=self._rng,
            )
            self.streams = streams
            task_status.started(scope)
            await streams.run()

    # ----------------------------------------------------------------- backfill

    def _fault(self, kind: FaultKind, symbol: str, detail: str) -> None:
        self.backfill_failures += 1
        self._on_fault(kind, symbol, detail)

    def _history_window(self, tf: str, until_ms: int | None) -> tuple[int, int]:
        """Open-time window of the last `bars` candles closed by `until_ms` (inclusive) or by now."""
        step = INTERVAL_MS[tf]
        if until_ms is None:
            end = self._rest.server_now_ms()
            start = (end // step - self._bars[tf]) * step  # `bars` closed + the one in progress
        else:
            end = until_ms
            start = until_ms - (self._bars[tf] - 1) * step
        return start, end

    def _page_limit(self, start_ms: int, end_ms: int, tf: str) -> int:
        need = (end_ms - start_ms) // INTERVAL_MS[tf] + 1
        return max(1, min(self._cfg.market_data.kline_page_limit, need))

    def _closed(self, rows: list[RestKline]) -> list[Candle]:
        """Candles of `rows` that have closed by server time (an in-progress last one is dropped)."""
        now = self._rest.server_now_ms()
        return [r.to_candle() for r in rows if r.close_time_ms < now]

    async def _backfill_symbol(self, symbol: str) -> None:
        for tf in self._intervals:
            await self._backfill(symbol, tf, until_ms=None)

    async def _backfill(self, symbol: str, tf: str, *, until_ms: int | None) -> bool:
        """Fetch and emit closed candles after the last emitted one up to `until_ms` (open time,
        inclusive) or now; the last `bars` when nothing was emitted yet. True when complete."""
        if tf == self._signal_tf:
            await self._release(symbol)  # a held 5m candle precedes every later one
        key = (symbol, tf)
        step = INTERVAL_MS[tf]
        last = self._last.get(key)
        if last is None:
            start, end = self._history_window(tf, until_ms)
        else:
            start = last + step
            end = until_ms if until_ms is not None else self._rest.server_now_ms()
        if end < start:
            return True
        try:
            rows = await self._rest.klines_range(
                symbol, tf, start_ms=start, end_ms=end, page_limit=self._page_limit(start, end, tf)
            )
        except BinanceError as exc:
            log.warning(
                "kline_backfill_failed",
                symbol=symbol,
                interval=tf,
                start_ms=start,
                end_ms=end,
                error=str(exc),
            )
            self._fault(fault_kind_for(exc), symbol, f"{tf} backfill {start}..{end} failed: {exc}")
            return False
        candles = self._closed(rows)
        if last is None:
            candles = candles[-self._bars[tf] :]
        emitted = 0
        for candle in candles:
            prev = self._last.get(key)
            t = candle.open_time_ms
            if prev is not None and t <= prev:
                continue
            if prev is not None and t != prev + step:
                log.warning("kline_backfill_hole", symbol=symbol, interval=tf, after_ms=prev, next_ms=t)
                self._fault(FaultKind.STALE_DATA, symbol, f"{tf} REST history has a hole after {prev}")
                return False
            try:
                validate_candle(candle, symbol=symbol, interval=tf, interval_ms=step)
            except InvalidCandle as exc:
                log.warning("kline_backfill_rejected", symbol=symbol, interval=tf, error=str(exc))
                self._fault(FaultKind.STALE_DATA, symbol, f"{tf} REST candle rejected: {exc}")
                return False
            self._last[key] = t
            emitted += 1
            await self._router.publish(
                symbol, CandleClosed(symbol=symbol, interval=tf, candle=candle, source="rest")
            )
        if emitted:
            log.info(
                "kline_backfilled",
                symbol=symbol,
                interval=tf,
                count=emitted,
                last_open_time_ms=self._last[key],
            )
            if tf == self._trend_tf:
                await self._release_if_trend_done(symbol)
        return True

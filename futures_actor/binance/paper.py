"""`PaperExchange`: the in-process `ExchangeGateway` for PAPER_LIVE and replay (BOT_SPEC §9, §10).

Owns the simulated matching of our orders against market data and the persisted paper account
(balances and positions are kept by `binance.sim.account.Account`, shared with the fake exchange).

Market input, per symbol (all synchronous, called by the market-data side):
- `on_path(symbol, candle, interval_ms)` (replay): the candle about to form over [T, T+interval)
  becomes a timed piecewise-linear path: open at T, the extreme nearer the open at T+interval//3,
  the other extreme at T+2·interval//3, close at T+interval−1 ms; its volume is spread uniformly.
- `on_trade_price(symbol, price, ts_ms, volume=None)` (live paper: every kline update / trade):
  one more point of the path (linear from the previous one); `volume` traded since the previous call.
- `on_book(symbol, bid, ask, ts_ms)`: best bid/ask (live); market orders take the ask/bid, limits
  fill when the opposite side trades through them. Without a book (replay), mid = the path price.
- `on_mark(symbol, mark, funding_rate, next_funding_ms, ts_ms)`: mark price and funding schedule.
  The mark is the newest observation among `on_mark` and the path.
- `on_funding(symbol, funding_rate, funding_ms)` (replay): a recorded funding rate, applied at its
  time without pinning the mark.

Time: trio time mapped to wall ms by the injected clock (`now_ms`). `run()` sleeps to the next
scheduled event, computed analytically on the linear segments (a limit crossing, a knot while a
limit is still through, a stop trigger, a funding time) and applies it; every public call first
applies everything due up to now, so a 30 s TTL cancel beats a crossing that comes later.

Fill rules:
- LIMIT fills only when the price goes strictly beyond it (a touch is not a fill), at the limit moved
  adversely by `paper_slippage_limit_pct`, maker fee; the cumulative fill is capped by
  `paper_volume_participation` × the volume traded since placement (rounded down to the step; the
  rest keeps working and fills at later path points). A symbol that never reported volume is not
  capped. A limit that is marketable on arrival takes liquidity: taker fee, at the current price moved
  by `paper_slippage_market_pct` but never worse than its limit; GTX is then rejected (-5022).
- MARKET fills at once, in full, at the ask/bid (or path price) ± `paper_slippage_market_pct`, taker.
- STOP_MARKET triggers when the mark crosses the trigger (SELL when mark ≤ trigger, BUY when ≥) and
  fills at the worse of trigger and current price moved by `paper_slippage_stop_pct`, taker. It is
  reported as TRIGGERED then FILLED, with the stop's client id and `is_stop=True`.
- Reduce-only: refused at placement (-2022) when it would increase or flip the position; at fill time
  capped at the position (the rest expires).
- Isolated margin: notional / leverage is reserved from the available balance for a non-reduce-only
  order (-2019 when short) and moves into the position on fill.
- Funding at each funding time: −rate × mark × signed quantity, applied once per funding time.
- Filters (`SymbolRules`): tick, step, min/max quantity, price range (-4014/-4023/-1111), min notional
  for non-reduce-only orders (-4164); a stop that would trigger at once is refused (-2021).

Events (`OrderUpdate`, `FundingPaid`, `AccountChanged`) are queued in order and delivered by `run()`
through a bounded channel (back-pressure, never dropped). Fills are reported only by events; the state
returned by `place_order` / `place_stop` is the acceptance (status NEW), as on Binance. The account,
open orders, positions and recent closed orders are persisted (one blob) after every change and
restored at start, so a restart resumes the same account.

Deliberate simplifications: no liquidation, no PERCENT_PRICE band, MARKET orders are not volume-capped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import Literal

import msgspec
import structlog
import trio

from futures_actor.binance.errors import (
    ApiError,
    InsufficientMargin,
    MinNotional,
    PostOnlyRejected,
    Precision,
    ReduceOnlyRejected,
    WouldTriggerImmediately,
)
from futures_actor.binance.gateway import (
    AccountChanged,
    AccountState,
    FundingPaid,
    GatewayEvent,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderUpdate,
    PositionState,
    StopRequest,
)
from futures_actor.binance.sim.account import Account
from futures_actor.core.config import ExecutionConfig
from futures_actor.core.types import Candle, SymbolRules
from futures_actor.state.store import BlobKind, StateStore

__all__ = ["PAPER_EVENTS_BUFFER", "PaperExchange", "PaperInputError", "PaperOrder", "PaperSnapshot"]

log = structlog.get_logger(__name__)

PAPER_EVENTS_BUFFER = 256
CLOSED_ORDERS_KEPT = 500  # recent closed orders kept queryable (and persisted)
SNAPSHOT_VERSION = 1
PAPER_BLOB_NAME = "account"
MAX_LEVERAGE = 125  # Binance's protocol maximum
_ZERO = Decimal(0)
_MS_PER_S = 1000
_OPEN: frozenset[str] = frozenset({"NEW", "PARTIALLY_FILLED"})
_ENDPOINT_ORDER = "paper POST /fapi/v1/order"
_ENDPOINT_ALGO = "paper POST /fapi/v1/algoOrder"
_REDUCE_ONLY_REJECT = "Reduce Only reject"

# Event priorities within one millisecond: funding, then stop triggers, then limit fills.
_PRIO_FUNDING = 0
_PRIO_STOP = 1
_PRIO_LIMIT = 2


class PaperInputError(ValueError):
    """Market input the paper exchange cannot use (names the field, the value and the expectation)."""


class PaperOrder(msgspec.Struct, kw_only=True):
    """One paper order (regular or stop), mutable while open; persisted."""

    seq: int
    symbol: str
    client_id: str
    side: Literal["BUY", "SELL"]
    type: Literal["LIMIT", "MARKET", "STOP_MARKET"]
    time_in_force: str = ""
    quantity: Decimal
    price: Decimal = _ZERO
    trigger_price: Decimal = _ZERO
    reduce_only: bool = False
    is_stop: bool = False
    status: OrderStatus = "NEW"
    executed_qty: Decimal = _ZERO
    cum_quote: Decimal = _ZERO
    placed_ms: int = 0
    update_ms: int = 0
    last_event_ms: int = 0
    volume_seen: Decimal = _ZERO
    reserved_margin: Decimal = _ZERO
    # After a fill capped by traded volume: when enough further volume will have traded for the rest.
    refill_ms: int = 0

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed_qty


# A volume-capped limit is offered the volume traded since its last fill at most this often (ms of
# simulated time) while the market stays through its price: the resolution of paper partial fills.
REFILL_STEP_MS = 1_000


class PaperSnapshot(msgspec.Struct, kw_only=True):
    """Everything a restart needs: the account blob, open and recent closed orders, funding marks."""

    version: int = SNAPSHOT_VERSION
    account: msgspec.Raw
    open_orders: list[PaperOrder] = []
    closed_orders: list[PaperOrder] = []
    funding_applied_ms: dict[str, int] = {}
    next_seq: int = 1
    next_trade_id: int = 1


class _Market:
    """What the paper exchange knows of one symbol's market (not persisted: market data is re-fed)."""

    def __init__(self) -> None:
        self.anchor: tuple[int, Fraction] | None = None  # path price at the processed time
        self.path_ms = -1  # time of the newest path observation applied
        self.knots: list[tuple[int, Fraction]] = []  # future path points, sorted, t >= processed time
        self.vols: list[tuple[int, int, Decimal]] = []  # volume v spread uniformly over (start, end]
        self.has_volume = False
        self.bid: Decimal | None = None
        self.ask: Decimal | None = None
        self.book_ms = -1
        self.mark: Fraction | None = None
        self.mark_ms = -1
        self.funding_rate: Decimal | None = None
        self.next_funding_ms: int | None = None

    def last_path_point(self) -> tuple[int, Fraction] | None:
        if self.knots:
            return self.knots[-1]
        return self.anchor

    def points(self) -> Iterator[tuple[int, Fraction, int, Fraction]]:
        """The path from the processed time on, as segments (a, pa, b, pb); the first path point
        opens a zero-length segment when the price before it is unknown."""
        prev = self.anchor
        for t, p in self.knots:
            if prev is None:
                prev = (t, p)
            yield prev[0], prev[1], t, p
            prev = (t, p)

    def price_at(self, t: int) -> Fraction | None:
        prev = self.anchor
        for tk, pk in self.knots:
            if tk > t:
                if prev is None:
                    return None
                return _interp(prev[0], prev[1], tk, pk, t)
            prev = (tk, pk)
        return None if prev is None else prev[1]


def _interp(a: int, pa: Fraction, b: int, pb: Fraction, t: int) -> Fraction:
    if b == a:
        return pb
    return pa + (pb - pa) * (t - a) / (b - a)


def _first_ms(a: int, pa: Fraction, b: int, pb: Fraction, x: Fraction, *, strict: bool) -> int:
    """First integer ms in [a, b] where the segment reaches `x` (strictly passes it if `strict`).

    The caller guarantees that the condition holds at b and not at a."""
    if b == a:
        return b
    t_star = Fraction(a) + (x - pa) * (b - a) / (pb - pa)
    t = math.floor(t_star) + 1 if strict else math.ceil(t_star)
    return min(max(t, a), b)


def _dec(x: float | Decimal | int, *, field: str, symbol: str, positive: bool = True) -> Decimal:
    if isinstance(x, Decimal):
        d = x
    elif isinstance(x, bool):
        raise PaperInputError(f"{symbol}: {field}={x!r}, expected a number")
    elif isinstance(x, int):
        d = Decimal(x)
    else:
        if not math.isfinite(x):
            raise PaperInputError(f"{symbol}: {field}={x!r}, expected a finite number")
        d = Decimal(repr(x))
    if not d.is_finite() or (positive and d <= 0) or d < 0:
        want = "> 0" if positive else ">= 0"
        raise PaperInputError(f"{symbol}: {field}={x!r}, expected a finite number {want}")
    return d


def _rate(x: float | Decimal | int, *, symbol: str) -> Decimal:
    if isinstance(x, bool) or not isinstance(x, float | Decimal | int):
        raise PaperInputError(f"{symbol}: funding_rate={x!r}, expected a finite number")
    d = Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    if not d.is_finite():
        raise PaperInputError(f"{symbol}: funding_rate={x!r}, expected a finite number")
    return d


def _frac_to_dec(x: Fraction) -> Decimal:
    return Decimal(x.numerator) / Decimal(x.denominator)


def _floor_step(qty: Decimal, step: Decimal) -> Decimal:
    if step <= 0:
        return qty
    return (qty / step).to_integral_value(rounding=ROUND_FLOOR) * step


class PaperExchange:
    """Simulated venue. Build it, then `await nursery.start(paper.run)` before placing orders."""

    def __init__(
        self,
        *,
        cfg: ExecutionConfig,
        rules: dict[str, SymbolRules],
        now_ms: Callable[[], int],
        persist: Callable[[bytes], None] | None = None,
        restore: bytes | None = None,
        events_buffer: int = PAPER_EVENTS_BUFFER,
    ) -> None:
        self._cfg = cfg
        self._rules = dict(rules)
        self._now_ms = now_ms
        self._persist = persist
        self._slip_limit = Decimal(repr(cfg.paper_slippage_limit_pct))
        self._slip_market = Decimal(repr(cfg.paper_slippage_market_pct))
        self._slip_stop = Decimal(repr(cfg.paper_slippage_stop_pct))
        self._participation = Decimal(repr(cfg.paper_volume_participation))
        self._maker_fee = Decimal(repr(cfg.maker_fee_pct))
        self._taker_fee = Decimal(repr(cfg.taker_fee_pct))
        self._send, self._recv = trio.open_memory_channel[GatewayEvent](events_buffer)
        self._pending: deque[GatewayEvent] = deque()
        self._wakeup = trio.Event()
        self._markets: dict[str, _Market] = {}
        self._open: dict[str, PaperOrder] = {}  # client id → open order (regular and stops)
        self._closed: dict[str, PaperOrder] = {}  # client id → most recent closed order
        self._funding_applied: dict[str, int] = {}
        self._seq = 1
        self._trade_id = 1
        self._t = 0  # processed wall ms: everything due up to here has been applied
        self._dirty = False
        if restore is not None:
            self._restore(restore)
        else:
            self._account = Account(initial_balance=Decimal(repr(cfg.paper_initial_balance_usdt)))

    @classmethod
    def from_store(
        cls,
        store: StateStore,
        *,
        cfg: ExecutionConfig,
        rules: dict[str, SymbolRules],
        now_ms: Callable[[], int],
        name: str = PAPER_BLOB_NAME,
    ) -> PaperExchange:
        """A paper exchange persisted as the `paper` blob of the SQLite `StateStore` (resumed if present)."""
        return cls(
            cfg=cfg,
            rules=rules,
            now_ms=now_ms,
            persist=lambda blob: store.put_blob(BlobKind.PAPER, name, blob, now_ms=now_ms()),
            restore=store.get_blob(BlobKind.PAPER, name),
        )

    # ------------------------------------------------------------ persistence

    def snapshot(self) -> bytes:
        """The persisted blob (also handed to `persist` after every change)."""
        snap = PaperSnapshot(
            account=msgspec.Raw(self._account.to_state()),
            open_orders=sorted(self._open.values(), key=lambda o: o.seq),
            closed_orders=sorted(self._closed.values(), key=lambda o: o.seq),
            funding_applied_ms=dict(self._funding_applied),
            next_seq=self._seq,
            next_trade_id=self._trade_id,
        )
        return msgspec.json.encode(snap)

    def _restore(self, blob: bytes) -> None:
        try:
            snap = msgspec.json.decode(blob, type=PaperSnapshot)
            account = Account.from_state(bytes(snap.account))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PaperInputError(
                f"paper snapshot: does not decode ({exc}); expected a PaperSnapshot blob"
            ) from None
        if snap.version != SNAPSHOT_VERSION:
            raise PaperInputError(f"paper snapshot: version={snap.version}, expected {SNAPSHOT_VERSION}")
        self._account = account
        self._open = {o.client_id: o for o in snap.open_orders}
        self._closed = {o.client_id: o for o in snap.closed_orders}
        self._funding_applied = dict(snap.funding_applied_ms)
        self._seq = snap.next_seq
        self._trade_id = snap.next_trade_id
        log.info("paper_restored", open_orders=len(self._open), wallet=str(account.wallet_balance))

    def _commit(self) -> None:
        if self._dirty:
            self._dirty = False
            if self._persist is not None:
                self._persist(self.snapshot())
        self._wakeup.set()  # new input or events: `run` re-plans its next wake-up

    # ------------------------------------------------------------ event source

    def events(self) -> trio.MemoryReceiveChannel[GatewayEvent]:
        return self._recv

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued events and apply scheduled ones at their time; runs until cancelled."""
        self._sync()
        task_status.started()
        while True:
            while self._pending:
                await self._send.send(self._pending.popleft())
            self._wakeup = trio.Event()
            nxt = self._next_event_ms(horizon=None)
            if nxt is None:
                await self._wakeup.wait()
                self._sync()
                continue
            delay_s = max(0, nxt - self._now()) / _MS_PER_S
            with trio.move_on_at(trio.current_time() + delay_s) as scope:
                await self._wakeup.wait()
            if scope.cancelled_caught:
                self._advance(max(self._now(), nxt))
                self._commit()
            else:
                self._sync()

    def _now(self) -> int:
        return int(self._now_ms())

    def _sync(self) -> int:
        """Apply everything due up to now; returns the processed time."""
        self._advance(max(self._now(), self._t))
        self._commit()
        return self._t

    # ------------------------------------------------------------ market input

    def _market(self, symbol: str) -> _Market:
        m = self._markets.get(symbol)
        if m is None:
            m = _Market()
            self._markets[symbol] = m
        return m

    def on_path(self, symbol: str, candle: Candle, interval_ms: int) -> None:
        """Replay: the candle about to form over [T, T+interval) becomes the path of `symbol`."""
        if interval_ms < 3:
            raise PaperInputError(f"{symbol}: interval_ms={interval_ms}, expected >= 3")
        o = Fraction(_dec(candle.open, field="candle.open", symbol=symbol))
        h = Fraction(_dec(candle.high, field="candle.high", symbol=symbol))
        lo = Fraction(_dec(candle.low, field="candle.low", symbol=symbol))
        c = Fraction(_dec(candle.close, field="candle.close", symbol=symbol))
        vol = _dec(candle.volume, field="candle.volume", symbol=symbol, positive=False)
        if not (lo <= min(o, c) and max(o, c) <= h):
            raise PaperInputError(
                f"{symbol}: candle {candle.open_time_ms} open={candle.open} high={candle.high} "
                f"low={candle.low} close={candle.close}, expected low <= open, close <= high"
            )
        t0 = candle.open_time_ms
        up, down = h - o, o - lo
        # The extreme nearer the open comes first; a tie goes against the candle's direction first.
        high_first = up < down or (up == down and c < o)
        first, second = (h, lo) if high_first else (lo, h)
        knots = [
            (t0, o),
            (t0 + interval_ms // 3, first),
            (t0 + 2 * interval_ms // 3, second),
            (t0 + interval_ms - 1, c),
        ]
        self._sync()
        m = self._market(symbol)
        self._add_knots(symbol, m, knots)
        m.has_volume = True
        end = t0 + interval_ms - 1
        m.vols.append((t0 - 1, end, vol))
        self._commit()

    def on_trade_price(
        self, symbol: str, price: float | Decimal, ts_ms: int, *, volume: float | Decimal | None = None
    ) -> None:
        """Live paper: a traded price at `ts_ms`, with the volume traded since the previous call."""
        p = Fraction(_dec(price, field="price", symbol=symbol))
        self._sync()
        m = self._market(symbol)
        t = max(ts_ms, self._t)
        last = m.last_path_point()
        if last is not None and last[0] > t:
            log.warning("paper_trade_price_stale", symbol=symbol, ts_ms=ts_ms, path_ms=last[0])
            return
        if volume is not None:
            v = _dec(volume, field="volume", symbol=symbol, positive=False)
            m.has_volume = True
            start = last[0] if last is not None else t
            if start < t:
                m.vols.append((max(start, self._t), t, v))
            else:  # traded at the processed instant itself
                for o in self._working(symbol, stops=False):
                    o.volume_seen += v
                self._dirty = True
        m.knots.append((t, p))
        self._advance(t)
        self._commit()

    def on_book(self, symbol: str, bid: float | Decimal, ask: float | Decimal, ts_ms: int) -> None:
        """Live paper: best bid/ask. Resting limits fill when the opposite side goes through them."""
        b = _dec(bid, field="bid", symbol=symbol)
        a = _dec(ask, field="ask", symbol=symbol)
        if b > a:
            raise PaperInputError(f"{symbol}: bid={bid} ask={ask}, expected bid <= ask")
        self._sync()
        m = self._market(symbol)
        t = max(ts_ms, self._t)
        self._advance(t)
        m.bid, m.ask, m.book_ms = b, a, t
        for o in self._working(symbol, stops=False):
            through = (o.side == "BUY" and a < o.price) or (o.side == "SELL" and b > o.price)
            if through and t > o.last_event_ms:
                self._limit_opportunity(o, t)
        self._commit()

    def on_mark(
        self,
        symbol: str,
        mark: float | Decimal,
        funding_rate: float | Decimal,
        next_funding_ms: int,
        ts_ms: int,
    ) -> None:
        """Mark price and funding schedule. Stops are checked against the new mark at once."""
        mk = _dec(mark, field="mark", symbol=symbol)
        rate = _rate(funding_rate, symbol=symbol)
        self._sync()
        m = self._market(symbol)
        t = max(ts_ms, self._t)
        self._advance(t)
        m.mark, m.mark_ms = Fraction(mk), t
        m.funding_rate = rate
        if next_funding_ms > self._funding_applied.get(symbol, -1):
            m.next_funding_ms = next_funding_ms
        self._advance(t)
        self._commit()

    def on_funding(self, symbol: str, funding_rate: float | Decimal, funding_ms: int) -> None:
        """Replay: the funding rate realised at `funding_ms` (recorded funding history). Applied once,
        at that time (now if it is already past), to the position then held, at the mark of that
        moment. Unlike `on_mark` it does not pin the mark: stops keep following the candle path."""
        rate = _rate(funding_rate, symbol=symbol)
        self._sync()
        m = self._market(symbol)
        if funding_ms > self._funding_applied.get(symbol, -1):
            m.funding_rate = rate
            m.next_funding_ms = funding_ms
            self._dirty = True
        self._advance(self._t)
        self._commit()

    def _add_knots(self, symbol: str, m: _Market, knots: list[tuple[int, Fraction]]) -> None:
        last = m.last_path_point()
        kept = [(t, p) for t, p in knots if (last is None or t > last[0])]
        if len(kept) < len(knots):
            log.debug("paper_path_overlap_skipped", symbol=symbol, skipped=len(knots) - len(kept))
        past = [(t, p) for t, p in kept if t < self._t]
        if past:
            # The part of the path already in the past cannot be traded; start from the price now.
            future = [(t, p) for t, p in kept if t >= self._t]
            if future:
                a, pa = past[-1]
                b, pb = future[0]
                now_price = _interp(a, pa, b, pb, self._t)
            else:
                now_price = past[-1][1]
            m.anchor = (self._t, now_price)
            m.path_ms = self._t
            kept = future
        m.knots.extend(kept)

    # ------------------------------------------------------------ prices

    def add_rules(self, rules: Mapping[str, SymbolRules]) -> None:
        """Exchange rules of symbols that joined the universe (a daily refresh); existing ones updated."""
        self._rules.update(rules)

    def mid_price(self, symbol: str) -> Decimal | None:
        """Book mid when the book is the newest observation, else the path price."""
        m = self._markets.get(symbol)
        if m is None:
            return None
        if m.bid is not None and m.ask is not None and m.book_ms >= m.path_ms:
            return (m.bid + m.ask) / 2
        if m.anchor is not None:
            return _frac_to_dec(m.anchor[1])
        return None

    def _taker_ref(self, m: _Market, side: str) -> Decimal | None:
        if m.bid is not None and m.ask is not None and m.book_ms >= m.path_ms:
            return m.ask if side == "BUY" else m.bid
        if m.anchor is not None:
            return _frac_to_dec(m.anchor[1])
        if m.mark is not None:
            return _frac_to_dec(m.mark)
        return None

    def _mark_now(self, m: _Market) -> Fraction | None:
        if m.mark is not None and (m.anchor is None or m.mark_ms >= m.path_ms):
            return m.mark
        return None if m.anchor is None else m.anchor[1]

    # ------------------------------------------------------------ scheduling

    def _working(self, symbol: str, *, stops: bool) -> list[PaperOrder]:
        return sorted(
            (o for o in self._open.values() if o.symbol == symbol and o.is_stop == stops),
            key=lambda o: o.seq,
        )

    def _limit_event(self, o: PaperOrder, m: _Market, horizon: int | None) -> int | None:
        price = Fraction(o.price)

        def through(p: Fraction) -> bool:
            return p < price if o.side == "BUY" else p > price

        refill: int | None = None
        if o.refill_ms > o.last_event_ms:
            # A volume-capped partial fill goes on filling while the market stays through the price.
            p = m.price_at(o.refill_ms)
            if p is not None and through(p):
                refill = o.refill_ms
        for a, pa, b, pb in m.points():
            if horizon is not None and a > horizon:
                return refill
            if b <= o.last_event_ms or not through(pb):
                continue
            t = b if through(pa) else _first_ms(a, pa, b, pb, price, strict=True)
            if t <= o.last_event_ms:
                t = b
                if t <= o.last_event_ms:
                    continue
            return t if refill is None else min(t, refill)
        return refill

    def _refill_time(self, o: PaperOrder, m: _Market, t: int) -> int:
        """When the volume traded since `t` lets the cap reach the rest of `o` (0: never known)."""
        rate = sum((v / (e - s) for s, e, v in m.vols if s <= t < e and e > s), _ZERO)
        if rate <= 0:
            return 0
        step = self._rules[o.symbol].step_size
        needed = (o.quantity + step) / self._participation - o.volume_seen
        full = max(1, int((needed / rate).to_integral_value(rounding=ROUND_CEILING)))
        return t + min(full, REFILL_STEP_MS)

    def _stop_event(self, o: PaperOrder, m: _Market, horizon: int | None) -> int | None:
        trig = Fraction(o.trigger_price)

        def hit(p: Fraction) -> bool:
            return p <= trig if o.side == "SELL" else p >= trig

        mark = self._mark_now(m)
        if mark is not None and hit(mark):
            return self._t
        prev: tuple[int, Fraction] | None = None if mark is None else (self._t, mark)
        for t, p in m.knots:
            if horizon is not None and prev is not None and prev[0] > horizon:
                return None
            if hit(p):
                if prev is None:
                    return t
                return _first_ms(prev[0], prev[1], t, p, trig, strict=False)
            prev = (t, p)
        return None

    def _candidates(self, horizon: int | None) -> list[tuple[int, int, str, int, str]]:
        out: list[tuple[int, int, str, int, str]] = []
        for symbol, m in self._markets.items():
            f = m.next_funding_ms
            if f is not None and f > self._funding_applied.get(symbol, -1):
                out.append((max(f, self._t), _PRIO_FUNDING, symbol, 0, ""))
        for o in self._open.values():
            om = self._markets.get(o.symbol)
            if om is None:
                continue
            if o.is_stop:
                t = self._stop_event(o, om, horizon)
                prio = _PRIO_STOP
            elif o.type == "LIMIT":
                t = self._limit_event(o, om, horizon)
                prio = _PRIO_LIMIT
            else:
                continue
            if t is not None:
                out.append((t, prio, o.symbol, o.seq, o.client_id))
        return out

    def _next_event_ms(self, *, horizon: int | None) -> int | None:
        cands = [c for c in self._candidates(horizon) if horizon is None or c[0] <= horizon]
        return min(cands)[0] if cands else None

    def _advance(self, to: int) -> None:
        """Apply every scheduled event with time <= `to`, in time order, then move to `to`."""
        to = max(to, self._t)
        while True:
            cands = [c for c in self._candidates(to) if c[0] <= to]
            if not cands:
                break
            t, prio, symbol, _seq, cid = min(cands)
            self._move_to(t)
            if prio == _PRIO_FUNDING:
                self._apply_funding(symbol, t)
            elif prio == _PRIO_STOP:
                self._trigger_stop(self._open[cid], t)
            else:
                self._limit_opportunity(self._open[cid], t)
        self._move_to(to)

    def _move_to(self, t: int) -> None:
        """Advance the processed time: accrue traded volume to working limits, move path anchors."""
        if t < self._t:
            return
        t0 = self._t
        for symbol, m in self._markets.items():
            if t > t0 and m.vols:
                traded = _ZERO
                for s, e, v in m.vols:
                    lo, hi = max(s, t0), min(e, t)
                    if hi > lo and e > s:
                        traded += v * (hi - lo) / (e - s)
                if traded > 0:
                    for o in self._open.values():
                        if o.symbol == symbol and not o.is_stop:
                            o.volume_seen += traded
                            self._dirty = True
                m.vols = [seg for seg in m.vols if seg[1] > t]
            elif t == t0 and m.anchor is not None and m.anchor[0] == t and (not m.knots or m.knots[0][0] > t):
                continue  # performance: already anchored at `t` with nothing due (no state would change)
            price = m.price_at(t)
            popped = False
            while m.knots and m.knots[0][0] <= t:
                m.knots.pop(0)
                popped = True
            if price is not None and (popped or m.anchor is not None):
                m.anchor = (t, price)
                if popped:
                    m.path_ms = t
        self._t = t

    # ------------------------------------------------------------ applying events

    def _limit_opportunity(self, o: PaperOrder, t: int) -> None:
        o.last_event_ms = t
        self._dirty = True
        m = self._market(o.symbol)
        if m.has_volume:
            cap = _floor_step(self._participation * o.volume_seen, self._rules[o.symbol].step_size)
            qty = min(o.remaining, cap - o.executed_qty)
        else:
            qty = o.remaining
        if qty > 0:
            slip = self._slip_limit if o.side == "BUY" else -self._slip_limit
            self._fill(o, qty, o.price * (1 + slip), maker=True, t=t)
        if m.has_volume and o.client_id in self._open and o.remaining > 0:
            o.refill_ms = self._refill_time(o, m, t)

    def _trigger_stop(self, o: PaperOrder, t: int) -> None:
        m = self._market(o.symbol)
        o.status = "TRIGGERED"
        o.update_ms = o.last_event_ms = t
        self._dirty = True
        self._pending.append(OrderUpdate(order=self._state(o), ts_ms=t))
        cur = self._taker_ref(m, o.side)
        if cur is None:
            cur = o.trigger_price
        if o.side == "SELL":
            price = min(o.trigger_price, cur) * (1 - self._slip_stop)
        else:
            price = max(o.trigger_price, cur) * (1 + self._slip_stop)
        self._fill(o, o.remaining, price, maker=False, t=t)

    def _fill(self, o: PaperOrder, qty: Decimal, price: Decimal, *, maker: bool, t: int) -> None:
        """Book a fill of `qty` at `price` (reduce-only capped at the position) and report it."""
        if o.reduce_only:
            pos = self._account.position(o.symbol).amount
            closing = (pos > 0 and o.side == "SELL") or (pos < 0 and o.side == "BUY")
            qty = min(qty, abs(pos)) if closing else _ZERO
            if qty <= 0:
                self._close(o, "EXPIRED" if o.executed_qty > 0 or not o.is_stop else "REJECTED", t)
                return
        before = o.remaining
        fee = qty * price * (self._maker_fee if maker else self._taker_fee)
        trade_id = self._trade_id
        self._trade_id += 1
        realized = self._account.apply_fill(
            symbol=o.symbol,
            side=o.side,
            qty=qty,
            price=price,
            commission=fee,
            now_ms=t,
            trade_id=trade_id,
            order_id=o.seq,
            maker=maker,
        )
        if o.reserved_margin > 0:
            o.reserved_margin -= o.reserved_margin * qty / before
        o.executed_qty += qty
        o.cum_quote += qty * price
        o.update_ms = o.last_event_ms = t
        o.status = "FILLED" if o.executed_qty >= o.quantity else "PARTIALLY_FILLED"
        self._dirty = True
        if o.status == "FILLED":
            self._retire(o)
        self._pending.append(
            OrderUpdate(
                order=self._state(o),
                last_fill_qty=qty,
                last_fill_price=price,
                fee=fee,
                is_maker=maker,
                realized_pnl=realized,
                ts_ms=t,
            )
        )
        self._pending.append(AccountChanged(account=self._account_state(t)))
        if o.status == "PARTIALLY_FILLED" and (o.reduce_only or o.type == "MARKET" or o.is_stop):
            remaining_pos = self._account.position(o.symbol).amount
            if o.type == "MARKET" or o.is_stop or remaining_pos == 0:
                self._close(o, "EXPIRED", t)

    def _close(self, o: PaperOrder, status: OrderStatus, t: int, reason: str = "") -> None:
        o.status = status
        o.update_ms = o.last_event_ms = t
        self._retire(o)
        self._dirty = True
        if not reason and status in ("EXPIRED", "REJECTED") and o.reduce_only:
            reason = _REDUCE_ONLY_REJECT
        self._pending.append(OrderUpdate(order=self._state(o), ts_ms=t, reject_reason=reason))

    def _retire(self, o: PaperOrder) -> None:
        o.reserved_margin = _ZERO
        self._open.pop(o.client_id, None)
        self._closed[o.client_id] = o
        while len(self._closed) > CLOSED_ORDERS_KEPT:
            del self._closed[next(iter(self._closed))]

    def _apply_funding(self, symbol: str, t: int) -> None:
        m = self._market(symbol)
        self._funding_applied[symbol] = t if m.next_funding_ms is None else m.next_funding_ms
        m.next_funding_ms = None
        self._dirty = True
        mark = self._mark_now(m)
        if mark is None or m.funding_rate is None:
            return
        amount = self._account.apply_funding(
            symbol=symbol, rate=m.funding_rate, mark=_frac_to_dec(mark), now_ms=t
        )
        if amount != 0:
            self._pending.append(FundingPaid(symbol=symbol, amount=amount, ts_ms=t))
            self._pending.append(AccountChanged(account=self._account_state(t)))

    # ------------------------------------------------------------ views

    def _state(self, o: PaperOrder) -> OrderState:
        return OrderState(
            symbol=o.symbol,
            client_id=o.client_id,
            side=o.side,
            type=o.type,
            status=o.status,
            quantity=o.quantity,
            executed_qty=o.executed_qty,
            avg_price=o.cum_quote / o.executed_qty if o.executed_qty else _ZERO,
            price=o.price,
            trigger_price=o.trigger_price,
            reduce_only=o.reduce_only,
            is_stop=o.is_stop,
            update_ms=o.update_ms,
        )

    def _order_margin(self) -> Decimal:
        return sum((o.reserved_margin for o in self._open.values()), _ZERO)

    def _unrealized(self) -> Decimal:
        total = _ZERO
        for symbol, pos in self._account.positions().items():
            if pos.amount == 0:
                continue
            m = self._markets.get(symbol)
            mark = None if m is None else self._mark_now(m)
            if mark is not None:
                total += pos.unrealized(_frac_to_dec(mark))
        return total

    def _account_state(self, t: int) -> AccountState:
        return AccountState(
            wallet_balance=self._account.wallet_balance,
            available_balance=self._account.available_balance(self._order_margin()),
            unrealized_pnl=self._unrealized(),
            ts_ms=t,
        )

    # ------------------------------------------------------------ gateway API: configuration

    async def prepare_symbol(self, symbol: str, *, leverage: int) -> None:
        if isinstance(leverage, bool) or not isinstance(leverage, int) or not 1 <= leverage <= MAX_LEVERAGE:
            raise ApiError(
                f"leverage={leverage!r} for {symbol}, expected an integer in [1, {MAX_LEVERAGE}]",
                code=-4028,
                endpoint="paper POST /fapi/v1/leverage",
            )
        self._rules_for(symbol, endpoint="paper POST /fapi/v1/leverage", client_id=None)
        self._account.set_leverage(symbol, leverage)
        self._account.set_margin_type(symbol, "ISOLATED")
        self._dirty = True
        self._commit()

    async def check_account_mode(self) -> None:
        """The paper account is always one-way."""

    # ------------------------------------------------------------ gateway API: orders

    def _rules_for(self, symbol: str, *, endpoint: str, client_id: str | None) -> SymbolRules:
        rules = self._rules.get(symbol)
        if rules is None:
            raise ApiError(
                f"symbol={symbol!r}: no SymbolRules known, expected one of {sorted(self._rules)}",
                code=-1121,
                endpoint=endpoint,
                client_id=client_id,
            )
        return rules

    def _check_qty(self, qty: Decimal, rules: SymbolRules, *, market: bool, endpoint: str, cid: str) -> None:
        step = (rules.market_step_size if market else None) or rules.step_size
        min_qty = (rules.market_min_qty if market else None) or rules.min_qty
        max_qty = (rules.market_max_qty if market else None) or rules.max_qty
        if not qty.is_finite() or qty <= 0:
            raise Precision(f"quantity={qty}, expected > 0", code=-4003, endpoint=endpoint, client_id=cid)
        if qty % step != 0:
            raise Precision(
                f"quantity={qty}, expected a multiple of stepSize {step}",
                code=-4023,
                endpoint=endpoint,
                client_id=cid,
            )
        if qty < min_qty or qty > max_qty:
            raise Precision(
                f"quantity={qty}, expected within [{min_qty}, {max_qty}]",
                code=-1111,
                endpoint=endpoint,
                client_id=cid,
            )

    def _check_price(
        self, price: Decimal, rules: SymbolRules, *, field: str, endpoint: str, cid: str
    ) -> None:
        if not price.is_finite() or price <= 0 or price % rules.tick_size != 0:
            raise Precision(
                f"{field}={price}, expected a positive multiple of tickSize {rules.tick_size}",
                code=-4014,
                endpoint=endpoint,
                client_id=cid,
            )
        if price < rules.min_price or price > rules.max_price:
            raise Precision(
                f"{field}={price}, expected within [{rules.min_price}, {rules.max_price}]",
                code=-4014,
                endpoint=endpoint,
                client_id=cid,
            )

    def _check_reduce_only(self, symbol: str, side: str, qty: Decimal, *, endpoint: str, cid: str) -> None:
        pos = self._account.position(symbol).amount
        closing = (pos > 0 and side == "SELL") or (pos < 0 and side == "BUY")
        if not closing or qty > abs(pos):
            raise ReduceOnlyRejected(
                f"reduce-only {side} {qty} {symbol} with position {pos}: would increase or flip it",
                code=-2022,
                endpoint=endpoint,
                client_id=cid,
            )

    def _existing(self, cid: str) -> OrderState | None:
        o = self._open.get(cid)
        if o is None:
            return None
        log.info("paper_duplicate_client_id", client_id=cid)
        return self._state(o)

    def _new(self, **kw: object) -> PaperOrder:
        o = PaperOrder(seq=self._seq, placed_ms=self._t, update_ms=self._t, last_event_ms=self._t, **kw)  # type: ignore[arg-type]
        self._seq += 1
        return o

    async def place_order(self, req: OrderRequest) -> OrderState:
        """Place a LIMIT / MARKET order. A duplicate client id among open orders returns that order
        (the gateway rule; Binance's -4116 is resolved the same way by `BinanceGateway`)."""
        t = self._sync()
        endpoint, cid = _ENDPOINT_ORDER, req.client_id
        existing = self._existing(cid)
        if existing is not None:
            return existing
        rules = self._rules_for(req.symbol, endpoint=endpoint, client_id=cid)
        m = self._market(req.symbol)
        market = req.type == "MARKET"
        self._check_qty(req.quantity, rules, market=market, endpoint=endpoint, cid=cid)
        ref = self._taker_ref(m, req.side)
        if market:
            if ref is None:
                raise ApiError(
                    f"MARKET {cid}: no market price for {req.symbol} yet",
                    code=-1,
                    endpoint=endpoint,
                    client_id=cid,
                )
            limit = _ZERO
        else:
            if req.price is None:
                raise Precision(
                    "price=None, expected a price for a LIMIT order",
                    code=-1111,
                    endpoint=endpoint,
                    client_id=cid,
                )
            limit = req.price
            self._check_price(limit, rules, field="price", endpoint=endpoint, cid=cid)
        tif = req.time_in_force or ("GTC" if not market else "")
        marketable = market or (
            ref is not None
            and (
                (req.side == "BUY" and (ref <= limit if self._book_fresh(m) else ref < limit))
                or (req.side == "SELL" and (ref >= limit if self._book_fresh(m) else ref > limit))
            )
        )
        if tif == "GTX" and marketable:
            raise PostOnlyRejected(
                f"post-only {req.side} at {limit} would take liquidity (current {ref})",
                code=-5022,
                endpoint=endpoint,
                client_id=cid,
            )
        notional_price = limit if not market else (ref or _ZERO)
        if req.reduce_only:
            self._check_reduce_only(req.symbol, req.side, req.quantity, endpoint=endpoint, cid=cid)
            reserve = _ZERO
        else:
            notional = req.quantity * notional_price
            if notional < rules.min_notional:
                raise MinNotional(
                    f"notional={notional} ({req.quantity} × {notional_price}), expected >= {rules.min_notional}",
                    code=-4164,
                    endpoint=endpoint,
                    client_id=cid,
                )
            reserve = notional / self._account.leverage(req.symbol)
            available = self._account.available_balance(self._order_margin())
            if reserve > available:
                raise InsufficientMargin(
                    f"margin {reserve} needed, available balance {available}",
                    code=-2019,
                    endpoint=endpoint,
                    client_id=cid,
                )
        o = self._new(
            symbol=req.symbol,
            client_id=cid,
            side=req.side,
            type=req.type,
            time_in_force=tif,
            quantity=req.quantity,
            price=limit,
            reduce_only=req.reduce_only,
            reserved_margin=reserve,
        )
        self._open[cid] = o
        self._dirty = True
        accepted = self._state(o)
        self._pending.append(OrderUpdate(order=accepted, ts_ms=t))
        if marketable:
            assert ref is not None
            if req.side == "BUY":
                price = ref * (1 + self._slip_market)
                price = price if market else min(price, limit)
            else:
                price = ref * (1 - self._slip_market)
                price = price if market else max(price, limit)
            self._fill(o, o.quantity, price, maker=False, t=t)
        elif tif == "IOC":
            self._close(o, "EXPIRED", t)
        self._commit()
        return accepted

    def _book_fresh(self, m: _Market) -> bool:
        return m.bid is not None and m.ask is not None and m.book_ms >= m.path_ms

    async def place_stop(self, req: StopRequest) -> OrderState:
        """Place the reduce-only STOP_MARKET on the mark price (-2021 if the mark is already through)."""
        t = self._sync()
        endpoint, cid = _ENDPOINT_ALGO, req.client_id
        existing = self._existing(cid)
        if existing is not None:
            return existing
        rules = self._rules_for(req.symbol, endpoint=endpoint, client_id=cid)
        self._check_qty(req.quantity, rules, market=True, endpoint=endpoint, cid=cid)
        self._check_price(req.trigger_price, rules, field="triggerPrice", endpoint=endpoint, cid=cid)
        m = self._market(req.symbol)
        mark = self._mark_now(m)
        trig = Fraction(req.trigger_price)
        if mark is not None and (
            (req.side == "SELL" and mark <= trig) or (req.side == "BUY" and mark >= trig)
        ):
            raise WouldTriggerImmediately(
                f"{req.side} stop triggerPrice={req.trigger_price} vs mark {_frac_to_dec(mark)}: would trigger at once",
                code=-2021,
                endpoint=endpoint,
                client_id=cid,
            )
        if req.reduce_only:
            self._check_reduce_only(req.symbol, req.side, req.quantity, endpoint=endpoint, cid=cid)
        o = self._new(
            symbol=req.symbol,
            client_id=cid,
            side=req.side,
            type="STOP_MARKET",
            quantity=req.quantity,
            trigger_price=req.trigger_price,
            reduce_only=req.reduce_only,
            is_stop=True,
        )
        self._open[cid] = o
        self._dirty = True
        accepted = self._state(o)
        self._pending.append(OrderUpdate(order=accepted, ts_ms=t))
        self._commit()
        return accepted

    async def _cancel(self, symbol: str, client_id: str, *, is_stop: bool) -> OrderState | None:
        t = self._sync()
        o = self._open.get(client_id)
        if o is None or o.symbol != symbol or o.is_stop != is_stop:
            return None
        self._close(o, "CANCELED", t)
        self._commit()
        return self._state(o)

    async def cancel_order(self, symbol: str, client_id: str) -> OrderState | None:
        return await self._cancel(symbol, client_id, is_stop=False)

    async def cancel_stop(self, symbol: str, client_id: str) -> OrderState | None:
        return await self._cancel(symbol, client_id, is_stop=True)

    async def _query(self, symbol: str, client_id: str, *, is_stop: bool) -> OrderState | None:
        self._sync()
        o = self._open.get(client_id) or self._closed.get(client_id)
        if o is None or o.symbol != symbol or o.is_stop != is_stop:
            return None
        return self._state(o)

    async def query_order(self, symbol: str, client_id: str) -> OrderState | None:
        return await self._query(symbol, client_id, is_stop=False)

    async def query_stop(self, symbol: str, client_id: str) -> OrderState | None:
        return await self._query(symbol, client_id, is_stop=True)

    async def open_orders(self) -> list[OrderState]:
        self._sync()
        return [self._state(o) for o in sorted(self._open.values(), key=lambda o: o.seq)]

    # ------------------------------------------------------------ gateway API: account

    async def positions(self) -> list[PositionState]:
        self._sync()
        out: list[PositionState] = []
        for symbol, pos in sorted(self._account.positions().items()):
            if pos.amount == 0:
                continue
            m = self._markets.get(symbol)
            mark = None if m is None else self._mark_now(m)
            out.append(
                PositionState(
                    symbol=symbol,
                    side="LONG" if pos.amount > 0 else "SHORT",
                    quantity=abs(pos.amount),
                    entry_price=pos.entry_price,
                    unrealized_pnl=_ZERO if mark is None else pos.unrealized(_frac_to_dec(mark)),
                    leverage=self._account.leverage(symbol),
                    isolated_margin=pos.isolated_margin,
                )
            )
        return out

    async def account(self) -> AccountState:
        t = self._sync()
        return self._account_state(t)

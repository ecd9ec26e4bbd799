"""`PaperExchange`: the in-process `ExchangeGateway` for PAPER_LIVE and replay (BOT_SPEC §9, §10).

The orders, the fills and the account are those of the fake exchange's matching engine
(`binance.sim.matching.MatchingEngine`): every fill rule (through-the-price limits, volume caps,
slippage and its tick rounding, fees, stop triggers, reduce-only, margin and filters) lives there and
only there. This module adds what an in-process venue needs on top: time. It turns market input
into a timed price path per symbol, decides WHEN to move the engine along it, maps engine events to
gateway events, and persists the account.

Market input, per symbol (all synchronous, called by the market-data side):
- `on_path(symbol, candle, interval_ms)` (replay): the candle about to form over [T, T+interval)
  becomes a timed piecewise-linear path: open at T (reached by a gap from the previous close), the
  extreme nearer the open at T+interval//3, the other extreme at T+2·interval//3, close at
  T+interval−1 ms; its volume is spread uniformly over the candle.
- `on_trade_price(symbol, price, ts_ms, volume=None)` (live paper): a traded price at `ts_ms` (a gap
  from the previous one); `volume` traded since the previous call.
- `on_book(symbol, bid, ask, ts_ms)`: best bid/ask (live); the engine's takers meet it until the
  next trade, and resting limits fill when the opposite side goes through them.
- `on_mark(symbol, mark, funding_rate, next_funding_ms, ts_ms)`: the mark price (pinned in the engine
  until a newer path point) and the funding schedule.
- `on_funding(symbol, funding_rate, funding_ms)` (replay): a recorded funding rate, applied at its
  time without pinning the mark.

Time: trio time mapped to wall ms by the injected clock (`now_ms`). Each symbol with working orders
has one scheduled event (a heap over symbols, so the cost of a step does not grow with the number of
markets): the next path point, or earlier the first millisecond at which the path goes through a
resting limit (strictly) or reaches a stop's trigger, a volume refill (a capped limit that stays
through its price is offered the newly traded volume every `REFILL_STEP_MS`), or a funding time. At
that time the engine is moved to the path price there; a symbol without working orders is moved
lazily, when touched. `run()` sleeps to the earliest event; every public call first applies
everything due up to now, so a 30 s TTL cancel beats a crossing that comes later. Prices of the path
are floats (the times only decide when to look); the engine gets them as `Decimal`.

Events (`OrderUpdate`, `FundingPaid`, `AccountChanged`) are queued in order and delivered by `run()`
through a bounded channel (back-pressure, never dropped). Fills are reported only by events; the state
returned by `place_order` / `place_stop` is the acceptance (status NEW), as on Binance. A stop is
reported with its own client id and `is_stop=True`: NEW, TRIGGERED, then the fills of its market order
(FILLED, or REJECTED with "Reduce Only reject" when there was no position left to reduce).

Persistence: the engine state (account, open and recent closed orders) and the funding marks are one
blob. `persist_mode="every_change"` (live paper) writes it after every change, so a crash loses
nothing; `"on_close"` (replay) writes it once when `run()` ends or on `flush()`. Closed orders beyond
`CLOSED_ORDERS_KEPT` and the account's income and trade rows beyond `ACCOUNT_ROWS_KEPT` are trimmed, so
the blob stays bounded however long the account trades.

Deliberate simplifications: no liquidation; funding is applied at the engine's mark.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Literal, NamedTuple

import msgspec
import structlog
import trio

from futures_actor.binance.errors import _BY_CODE, ApiError
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
    TradeFill,
    trade_fill,
)
from futures_actor.binance.sim.account import Account
from futures_actor.binance.sim.matching import (
    ER_REDUCE_ONLY,
    AccountEvent,
    AlgoEvent,
    EngineEvent,
    MatchingEngine,
    NewAlgoOrder,
    NewOrder,
    OrderEvent,
    Rejection,
    SimAlgoOrder,
    SimOrder,
)
from futures_actor.binance.sim.symbols import SymbolSpec
from futures_actor.core.config import ExecutionConfig
from futures_actor.core.types import Candle, SymbolRules
from futures_actor.state.store import BlobKind, StateStore

__all__ = [
    "PAPER_EVENTS_BUFFER",
    "PaperExchange",
    "PaperInputError",
    "PaperSnapshot",
    "PersistMode",
]

log = structlog.get_logger(__name__)

PAPER_EVENTS_BUFFER = 256
CLOSED_ORDERS_KEPT = 500  # recent closed orders kept queryable (and persisted)
ACCOUNT_ROWS_KEPT = 500  # income and trade rows kept in the paper account (no paper API reads them)
SNAPSHOT_VERSION = 2
PAPER_BLOB_NAME = "account"
MAX_LEVERAGE = 125  # Binance's protocol maximum
# A volume-capped limit is offered the volume traded since its last fill at most this often (ms of
# simulated time) while the market stays through its price: the resolution of paper partial fills.
REFILL_STEP_MS = 1_000
# Float rounding may put the computed first crossing millisecond one or two ms early; look this far.
_CROSSING_SEARCH_MS = 8
_HEAP_SLACK = 4  # the event heap is rebuilt when stale entries outnumber live ones this many times
_ZERO = Decimal(0)
_MS_PER_S = 1000
_ENDPOINT_ORDER = "paper POST /fapi/v1/order"
_ENDPOINT_ALGO = "paper POST /fapi/v1/algoOrder"
_ENDPOINT_LEVERAGE = "paper POST /fapi/v1/leverage"
_REDUCE_ONLY_REJECT = "Reduce Only reject"

# Event priorities within one millisecond: funding before moving the price.
_PRIO_FUNDING = 0
_PRIO_MOVE = 1

PersistMode = Literal["every_change", "on_close"]


class PaperInputError(ValueError):
    """Market input the paper exchange cannot use (names the field, the value and the expectation)."""


class PaperSnapshot(msgspec.Struct, kw_only=True):
    """Everything a restart needs: the matching engine's state and the funding marks."""

    version: int = SNAPSHOT_VERSION
    engine: msgspec.Raw
    funding_applied_ms: dict[str, int] = {}
    # A readable view for people and tests, derived from `engine` and ignored on restore: the open
    # orders (regular and stops) and the recent closed ones, as the gateway reports them.
    open_orders: list[OrderState] = []
    closed_orders: list[OrderState] = []


class _Version(msgspec.Struct):
    version: int = 0


class _V1Order(msgspec.Struct, kw_only=True):
    """An open order of a version-1 snapshot (the paper exchange before it ran on the engine)."""

    symbol: str
    client_id: str
    side: str
    type: str
    time_in_force: str = ""
    quantity: Decimal
    price: Decimal = _ZERO
    trigger_price: Decimal = _ZERO
    reduce_only: bool = False
    is_stop: bool = False
    status: str = "NEW"
    executed_qty: Decimal = _ZERO
    cum_quote: Decimal = _ZERO
    placed_ms: int = 0
    update_ms: int = 0
    seq: int = 0


class _V1Snapshot(msgspec.Struct, kw_only=True):
    version: int
    account: msgspec.Raw
    open_orders: list[_V1Order] = []
    funding_applied_ms: dict[str, int] = {}


class _Knot(NamedTuple):
    t: int
    p: float
    gap: bool  # reached by a jump from the previous point (not along a line)


class _Path:
    """What the paper exchange knows of one symbol's price path (not persisted: market data is re-fed).

    The engine's last price is the path at `t` (`p`); `knots` are the future points."""

    __slots__ = ("funding_rate", "knots", "mark_ms", "next_funding_ms", "p", "t", "vols")

    def __init__(self) -> None:
        self.t = -1
        self.p: float | None = None
        self.knots: deque[_Knot] = deque()
        self.vols: deque[tuple[int, int, Decimal]] = deque()  # volume v spread uniformly over (s, e]
        self.mark_ms = -1  # time of the newest `on_mark`
        self.funding_rate: Decimal | None = None
        self.next_funding_ms: int | None = None

    def last_time(self) -> int:
        return self.knots[-1].t if self.knots else self.t

    def price_at(self, t: int) -> float | None:
        """The path price at `t` >= the current time, without moving along it."""
        if self.p is None or not self.knots or t <= self.t:
            return self.p
        prev_t, prev_p = self.t, self.p
        for k in self.knots:
            if k.t > t:
                return prev_p if k.gap else _interp(prev_t, prev_p, k.t, k.p, t)
            prev_t, prev_p = k.t, k.p
        return prev_p


def _interp(a: int, pa: float, b: int, pb: float, t: int) -> float:
    if t >= b:
        return pb
    return pa + (pb - pa) * (t - a) / (b - a)


def _first_ms(
    a: int, pa: float, b: int, pb: float, x: float, cond: Callable[[float], bool], strict: bool
) -> int:
    """First integer ms in (a, b] where the segment satisfies `cond` (reaching `x`, or strictly
    passing it). The caller guarantees that `cond` holds at b and not at a."""
    t_star = a + (x - pa) * (b - a) / (pb - pa)
    t = math.floor(t_star) + 1 if strict else math.ceil(t_star)
    t = min(max(t, a + 1), b)
    for _ in range(_CROSSING_SEARCH_MS):
        if t >= b or cond(_interp(a, pa, b, pb, t)):
            return t
        t += 1
    return b


def _crossing(x: float, *, below: bool, strict: bool) -> Callable[[float], bool]:
    """The condition "the price is through `x`" (below it or above it; strictly or reaching it)."""
    if below:
        return (lambda p: p < x) if strict else (lambda p: p <= x)
    return (lambda p: p > x) if strict else (lambda p: p >= x)


def _dec(p: float) -> Decimal:
    return Decimal(repr(p))


def _price(x: float | Decimal | int, *, field: str, symbol: str) -> float:
    """A market price as float (finite, > 0), or a `PaperInputError` naming the field."""
    if isinstance(x, bool) or not isinstance(x, float | Decimal | int):
        raise PaperInputError(f"{symbol}: {field}={x!r}, expected a number")
    f = float(x)
    if not math.isfinite(f) or f <= 0:
        raise PaperInputError(f"{symbol}: {field}={x!r}, expected a finite number > 0")
    return f


def _volume(x: float | Decimal | int, *, field: str, symbol: str) -> Decimal:
    if isinstance(x, bool) or not isinstance(x, float | Decimal | int):
        raise PaperInputError(f"{symbol}: {field}={x!r}, expected a number")
    d = Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    if not d.is_finite() or d < 0:
        raise PaperInputError(f"{symbol}: {field}={x!r}, expected a finite number >= 0")
    return d


def _rate(x: float | Decimal | int, *, symbol: str) -> Decimal:
    if isinstance(x, bool) or not isinstance(x, float | Decimal | int):
        raise PaperInputError(f"{symbol}: funding_rate={x!r}, expected a finite number")
    d = Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    if not d.is_finite():
        raise PaperInputError(f"{symbol}: funding_rate={x!r}, expected a finite number")
    return d


def _error(rej: Rejection, *, endpoint: str, client_id: str) -> ApiError:
    """The gateway error for an engine rejection (the typed class of its Binance code)."""
    cls = _BY_CODE.get(rej.code)
    if cls is None or not issubclass(cls, ApiError):
        cls = ApiError  # e.g. -1000 "no market price yet": for the paper venue a plain rejection
    message = f"{rej.msg} {rej.detail}".strip() if rej.detail else rej.msg
    return cls(message, code=rej.code, endpoint=endpoint, client_id=client_id)


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
        persist_mode: PersistMode = "every_change",
    ) -> None:
        self._cfg = cfg
        self._now_ms = now_ms
        self._persist = persist
        self._persist_mode = persist_mode
        self._send, self._recv = trio.open_memory_channel[GatewayEvent](events_buffer)
        self._pending: deque[GatewayEvent] = deque()
        self._wakeup = trio.Event()
        self._paths: dict[str, _Path] = {}
        self._funding_applied: dict[str, int] = {}
        # One scheduled event per symbol: heap of (time, priority, symbol, version); an entry whose
        # version is no longer the symbol's current one is stale and skipped.
        self._heap: list[tuple[int, int, str, int]] = []
        self._entry: dict[str, tuple[int, int, str, int]] = {}
        self._version = 0
        self._t = 0  # processed wall ms: everything due up to here has been applied
        self._dirty = False
        self._unflushed = False
        specs = {s: SymbolSpec(rules=r) for s, r in rules.items()}
        if restore is not None:
            self._engine = self._restore(restore, specs)
        else:
            balance = Decimal(repr(cfg.paper_initial_balance_usdt))
            self._engine = MatchingEngine(
                execution=cfg, symbols=specs, account=Account(initial_balance=balance)
            )

    @classmethod
    def from_store(
        cls,
        store: StateStore,
        *,
        cfg: ExecutionConfig,
        rules: dict[str, SymbolRules],
        now_ms: Callable[[], int],
        name: str = PAPER_BLOB_NAME,
        persist_mode: PersistMode = "every_change",
    ) -> PaperExchange:
        """A paper exchange persisted as the `paper` blob of the SQLite `StateStore` (resumed if present)."""
        return cls(
            cfg=cfg,
            rules=rules,
            now_ms=now_ms,
            persist=lambda blob: store.put_blob(BlobKind.PAPER, name, blob, now_ms=now_ms()),
            restore=store.get_blob(BlobKind.PAPER, name),
            persist_mode=persist_mode,
        )

    @property
    def engine(self) -> MatchingEngine:
        """The matching engine that holds the paper account (read it; drive it through this class)."""
        return self._engine

    # ------------------------------------------------------------ persistence

    def snapshot(self) -> bytes:
        """The persisted blob (also handed to `persist` per `persist_mode`); trims old records first."""
        eng = self._engine
        if len(eng.orders) > 2 * CLOSED_ORDERS_KEPT or len(eng.algos) > 2 * CLOSED_ORDERS_KEPT:
            eng.prune_closed(CLOSED_ORDERS_KEPT)
        st = eng.account.state
        if len(st.income) > 2 * ACCOUNT_ROWS_KEPT:
            del st.income[:-ACCOUNT_ROWS_KEPT]
        if len(st.trades) > 2 * ACCOUNT_ROWS_KEPT:
            del st.trades[:-ACCOUNT_ROWS_KEPT]
        open_view: list[OrderState] = []
        closed_view: list[OrderState] = []
        for o in eng.orders.values():
            if not o.algo_id:
                (open_view if o.is_open else closed_view).append(self._order_state(o))
        for a in eng.algos.values():
            (open_view if a.is_open else closed_view).append(self._algo_state(a))
        snap = PaperSnapshot(
            engine=msgspec.Raw(eng.to_state()),
            funding_applied_ms=dict(self._funding_applied),
            open_orders=open_view,
            closed_orders=closed_view,
        )
        return msgspec.json.encode(snap)

    def flush(self) -> None:
        """Persist now if anything changed since the last write (`on_close` mode writes only here)."""
        if self._unflushed and self._persist is not None:
            self._persist(self.snapshot())
        self._unflushed = False

    def _restore(self, blob: bytes, specs: dict[str, SymbolSpec]) -> MatchingEngine:
        try:
            version = msgspec.json.decode(blob, type=_Version).version
            if version == 1:
                return self._migrate_v1(msgspec.json.decode(blob, type=_V1Snapshot), specs)
            if version != SNAPSHOT_VERSION:
                raise PaperInputError(f"paper snapshot: version={version}, expected {SNAPSHOT_VERSION}")
            snap = msgspec.json.decode(blob, type=PaperSnapshot)
            engine = MatchingEngine.from_state(bytes(snap.engine), execution=self._cfg, symbols=specs)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PaperInputError(
                f"paper snapshot: does not decode ({exc}); expected a PaperSnapshot blob"
            ) from None
        self._funding_applied = dict(snap.funding_applied_ms)
        log.info(
            "paper_restored",
            open_orders=len(engine.open_orders()) + len(engine.open_algos()),
            wallet=str(engine.account.wallet_balance),
        )
        return engine

    def _migrate_v1(self, snap: _V1Snapshot, specs: dict[str, SymbolSpec]) -> MatchingEngine:
        """A version-1 paper account (before the shared engine): the account and its open orders."""
        engine = MatchingEngine(
            execution=self._cfg, symbols=specs, account=Account.from_state(bytes(snap.account))
        )
        for o in sorted(snap.open_orders, key=lambda o: o.seq):
            if o.is_stop:
                engine.adopt(
                    SimAlgoOrder(
                        algo_id=0,
                        client_algo_id=o.client_id,
                        symbol=o.symbol,
                        side=o.side,
                        order_type="STOP_MARKET",
                        time_in_force="GTC",
                        quantity=o.quantity,
                        trigger_price=o.trigger_price,
                        working_type="MARK_PRICE",
                        reduce_only=o.reduce_only,
                        create_time=o.placed_ms,
                        update_time=o.update_ms,
                    )
                )
            else:
                engine.adopt(
                    SimOrder(
                        order_id=0,
                        client_order_id=o.client_id,
                        symbol=o.symbol,
                        side=o.side,
                        type=o.type,
                        orig_type=o.type,
                        time_in_force=o.time_in_force or "GTC",
                        orig_qty=o.quantity,
                        price=o.price,
                        executed_qty=o.executed_qty,
                        cum_quote=o.cum_quote,
                        status=o.status,
                        reduce_only=o.reduce_only,
                        time=o.placed_ms,
                        update_time=o.update_ms,
                    )
                )
        self._funding_applied = dict(snap.funding_applied_ms)
        log.warning("paper_snapshot_migrated", from_version=1, to_version=SNAPSHOT_VERSION)
        return engine

    def _commit(self) -> None:
        if self._dirty:
            self._dirty = False
            if self._persist is not None and self._persist_mode == "every_change":
                self._persist(self.snapshot())
            else:
                self._unflushed = True
        self._wakeup.set()  # new input or events: `run` re-plans its next wake-up

    # ------------------------------------------------------------ event source

    def events(self) -> trio.MemoryReceiveChannel[GatewayEvent]:
        return self._recv

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued events and apply scheduled ones at their time; runs until cancelled."""
        try:
            self._sync()
            task_status.started()
            while True:
                while self._pending:
                    await self._send.send(self._pending.popleft())
                self._wakeup = trio.Event()
                nxt = self._next_time()
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
        finally:
            if self._persist_mode == "on_close":
                self.flush()

    # ------------------------------------------------------------ discrete-event runtime (no trio)

    def next_event_ms(self) -> int | None:
        """When something is next scheduled (a fill along a path, a trigger, funding); None: nothing."""
        return self._next_time()

    def advance_to(self, t_ms: int) -> None:
        """Apply everything scheduled up to `t_ms` (what `run` does when it wakes up)."""
        self._advance(max(t_ms, self._t))
        self._commit()

    def take_events(self) -> list[GatewayEvent]:
        """The events not yet delivered, oldest first (what `run` sends on `events()`); clears them."""
        out = list(self._pending)
        self._pending.clear()
        return out

    def _now(self) -> int:
        return int(self._now_ms())

    def _sync(self) -> int:
        """Apply everything due up to now; returns the processed time."""
        self._advance(max(self._now(), self._t))
        self._commit()
        return self._t

    # ------------------------------------------------------------ scheduling

    def _schedule(self, symbol: str) -> None:
        """(Re)compute the one scheduled event of `symbol`."""
        self._version += 1
        nxt = self._next_event(symbol)
        if nxt is None:
            self._entry.pop(symbol, None)
            return
        entry = (nxt[0], nxt[1], symbol, self._version)
        self._entry[symbol] = entry
        heapq.heappush(self._heap, entry)
        if len(self._heap) > _HEAP_SLACK * (len(self._entry) + 16):
            self._heap = list(self._entry.values())
            heapq.heapify(self._heap)

    def _next_time(self) -> int | None:
        heap = self._heap
        while heap and self._entry.get(heap[0][2]) != heap[0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _next_event(self, symbol: str) -> tuple[int, int] | None:
        path = self._paths.get(symbol)
        if path is None:
            return None
        best: tuple[int, int] | None = None
        f = path.next_funding_ms
        if f is not None and f > self._funding_applied.get(symbol, -1):
            best = (max(f, self._t), _PRIO_FUNDING)
        if path.knots:
            eng = self._engine
            limits = [o for o in eng.open_orders(symbol) if o.type == "LIMIT"]
            algos = eng.open_algos(symbol)
            if limits or algos:
                move = (max(self._path_event(path, limits, algos), self._t), _PRIO_MOVE)
                best = move if best is None else min(best, move)
        return best

    def _path_event(self, path: _Path, limits: list[SimOrder], algos: list[SimAlgoOrder]) -> int:
        """When the engine must next look at this symbol: the next path point, or earlier the first
        ms the current segment goes through a resting limit or reaches a trigger, or a refill."""
        k = path.knots[0]
        if path.p is None:
            return k.t
        a, pa = path.t, path.p
        t_ev = k.t
        for o in limits:
            x = float(o.price)
            if o.side == "BUY":
                through_a, through_b = pa < x, k.p < x
            else:
                through_a, through_b = pa > x, k.p > x
            if through_a:  # still through after a capped fill: offer the new volume
                t_ev = min(t_ev, a + REFILL_STEP_MS)
            elif through_b and not k.gap:
                cond = _crossing(x, below=o.side == "BUY", strict=True)
                t_ev = min(t_ev, _first_ms(a, pa, k.t, k.p, x, cond, strict=True))
        for al in algos:
            if al.order_type == "TRAILING_STOP_MARKET":
                continue  # its level moves with the price: the engine finds it along the segment
            x = float(al.trigger_price)
            wants_low = MatchingEngine.wants_low(al)
            cond = _crossing(x, below=wants_low, strict=False)
            if cond(pa):  # a newer pinned mark held it back: look again once the path is newer
                t_ev = min(t_ev, max(a, path.mark_ms) + 1)
            elif cond(k.p) and not k.gap:
                t_ev = min(t_ev, _first_ms(a, pa, k.t, k.p, x, cond, strict=False))
        return t_ev

    def _advance(self, to: int) -> None:
        """Apply every scheduled event with time <= `to`, in time order, then move to `to`."""
        to = max(to, self._t)
        heap = self._heap
        while heap and heap[0][0] <= to:
            entry = heapq.heappop(heap)
            t, prio, symbol, _ = entry
            if self._entry.get(symbol) != entry:
                continue
            del self._entry[symbol]
            self._t = max(self._t, t)
            self._move_symbol(symbol, self._t)
            if prio == _PRIO_FUNDING:
                self._apply_funding(symbol, self._t)
            self._schedule(symbol)
        self._t = to

    def _has_working(self, symbol: str) -> bool:
        return bool(self._engine.open_orders(symbol) or self._engine.open_algos(symbol))

    def _move_symbol(self, symbol: str, t: int) -> None:
        """Move `symbol`'s path (and the engine) to `t`: every path point up to `t` in order, then the
        point at `t` itself when it lies on a line. Without working orders only the end matters."""
        path = self._paths.get(symbol)
        if path is None:
            return
        working = self._has_working(symbol)
        if not working:
            last: _Knot | None = None
            while path.knots and path.knots[0].t <= t:
                last = path.knots.popleft()
            if last is not None:
                self._feed(symbol, path, last.t, last.p, continuous=False)
            elif path.vols:
                self._credit_volume(symbol, path, t)
            return
        while path.knots and path.knots[0].t <= t:
            k = path.knots.popleft()
            self._feed(symbol, path, k.t, k.p, continuous=not k.gap and path.p is not None)
        if t > path.t and path.p is not None and path.knots:
            k = path.knots[0]
            p = path.p if k.gap else _interp(path.t, path.p, k.t, k.p, t)
            self._feed(symbol, path, t, p, continuous=True)

    def _feed(self, symbol: str, path: _Path, t: int, p: float, *, continuous: bool) -> None:
        """The engine's last price of `symbol` moves to `p` at `t` (the mark follows unless a newer
        `on_mark` pinned it)."""
        self._credit_volume(symbol, path, t)
        eng = self._engine
        eng.now_ms = t
        if t > path.mark_ms:
            eng.unpin_mark(symbol)
        events = eng.move(symbol, _dec(p), continuous=continuous)
        path.t, path.p = t, p
        if events:  # a price move alone is market data, re-fed after a restart: nothing to persist
            self._emit(events, t)

    def _credit_volume(self, symbol: str, path: _Path, t: int) -> None:
        """The volume traded on `symbol` between the path's time and `t` goes to its open limits."""
        if not path.vols:
            return
        t0 = path.t
        traded = _ZERO
        for s, e, v in path.vols:
            lo, hi = max(s, t0), min(e, t)
            if hi > lo and e > s:
                traded += v * (hi - lo) / (e - s)
        while path.vols and path.vols[0][1] <= t:
            path.vols.popleft()
        if traded > 0:
            self._engine.add_volume(symbol, traded)

    # ------------------------------------------------------------ market input

    def _path(self, symbol: str) -> _Path:
        path = self._paths.get(symbol)
        if path is None:
            path = _Path()
            self._paths[symbol] = path
        return path

    def _known(self, symbol: str, field: str) -> None:
        if symbol not in self._engine.specs:
            raise PaperInputError(
                f"{field}: symbol={symbol!r} has no SymbolRules, expected one of {sorted(self._engine.specs)}"
            )

    def on_path(self, symbol: str, candle: Candle, interval_ms: int) -> None:
        """Replay: the candle about to form over [T, T+interval) becomes the path of `symbol`."""
        if interval_ms < 3:
            raise PaperInputError(f"{symbol}: interval_ms={interval_ms}, expected >= 3")
        o = _price(candle.open, field="candle.open", symbol=symbol)
        h = _price(candle.high, field="candle.high", symbol=symbol)
        lo = _price(candle.low, field="candle.low", symbol=symbol)
        c = _price(candle.close, field="candle.close", symbol=symbol)
        vol = _volume(candle.volume, field="candle.volume", symbol=symbol)
        if not (lo <= min(o, c) and max(o, c) <= h):
            raise PaperInputError(
                f"{symbol}: candle {candle.open_time_ms} open={candle.open} high={candle.high} "
                f"low={candle.low} close={candle.close}, expected low <= open, close <= high"
            )
        self._known(symbol, "on_path")
        t0 = candle.open_time_ms
        up, down = h - o, o - lo
        # The extreme nearer the open comes first; a tie goes against the candle's direction first.
        high_first = up < down or (up == down and c < o)
        first, second = (h, lo) if high_first else (lo, h)
        knots = [
            _Knot(t0, o, True),
            _Knot(t0 + interval_ms // 3, first, False),
            _Knot(t0 + 2 * interval_ms // 3, second, False),
            _Knot(t0 + interval_ms - 1, c, False),
        ]
        self._sync()
        path = self._path(symbol)
        self._add_knots(symbol, path, knots)
        self._engine.add_volume(symbol, _ZERO)  # from now on its resting fills are volume-capped
        path.vols.append((t0 - 1, t0 + interval_ms - 1, vol))
        self._move_symbol(symbol, self._t)
        self._schedule(symbol)
        self._commit()

    def _add_knots(self, symbol: str, path: _Path, knots: list[_Knot]) -> None:
        last = path.last_time()
        kept = [k for k in knots if k.t > last]
        if len(kept) < len(knots):
            log.debug("paper_path_overlap_skipped", symbol=symbol, skipped=len(knots) - len(kept))
        past = [k for k in kept if k.t < self._t]
        if past:
            # The part of the path already in the past cannot be traded: it starts at the price now.
            future = [k for k in kept if k.t >= self._t]
            now_p = (
                past[-1].p
                if not future or future[0].gap
                else _interp(past[-1].t, past[-1].p, future[0].t, future[0].p, self._t)
            )
            kept = [_Knot(self._t, now_p, True), *future] if not future or future[0].t > self._t else future
        path.knots.extend(kept)

    def on_trade_price(
        self, symbol: str, price: float | Decimal, ts_ms: int, *, volume: float | Decimal | None = None
    ) -> None:
        """Live paper: a traded price at `ts_ms`, with the volume traded since the previous call."""
        p = _price(price, field="price", symbol=symbol)
        v = None if volume is None else _volume(volume, field="volume", symbol=symbol)
        self._known(symbol, "on_trade_price")
        self._sync()
        path = self._path(symbol)
        t = max(ts_ms, self._t)
        last = path.last_time()
        if last > t:
            log.warning("paper_trade_price_stale", symbol=symbol, ts_ms=ts_ms, path_ms=last)
            return
        if v is not None:
            start = last if last >= 0 else t
            if start < t:
                path.vols.append((max(start, path.t), t, v))
                self._engine.add_volume(symbol, _ZERO)
            else:  # traded at the current instant itself
                self._engine.add_volume(symbol, v)
        if last < t or path.p is None:
            path.knots.append(_Knot(t, p, True))
        elif path.knots:  # a second price for the same ms: the newest wins
            path.knots[-1] = _Knot(t, p, True)
        else:
            self._feed(symbol, path, t, p, continuous=False)
        self._schedule(symbol)
        self._advance(t)
        self._move_symbol(symbol, t)
        self._schedule(symbol)
        self._commit()

    def on_book(self, symbol: str, bid: float | Decimal, ask: float | Decimal, ts_ms: int) -> None:
        """Live paper: best bid/ask. Resting limits fill when the opposite side goes through them."""
        b = _price(bid, field="bid", symbol=symbol)
        a = _price(ask, field="ask", symbol=symbol)
        if b > a:
            raise PaperInputError(f"{symbol}: bid={bid} ask={ask}, expected bid <= ask")
        self._known(symbol, "on_book")
        self._sync()
        t = max(ts_ms, self._t)
        self._advance(t)
        self._path(symbol)
        self._move_symbol(symbol, t)
        eng = self._engine
        eng.now_ms = t
        events = eng.on_book(symbol, _dec(b), _dec(a))
        if events:
            self._emit(events, t)
        self._schedule(symbol)
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
        mk = _price(mark, field="mark", symbol=symbol)
        rate = _rate(funding_rate, symbol=symbol)
        self._known(symbol, "on_mark")
        self._sync()
        t = max(ts_ms, self._t)
        self._advance(t)
        path = self._path(symbol)
        self._move_symbol(symbol, t)
        path.mark_ms = t
        path.funding_rate = rate
        if next_funding_ms > self._funding_applied.get(symbol, -1):
            path.next_funding_ms = next_funding_ms
        eng = self._engine
        eng.now_ms = t
        events = eng.on_mark(symbol, _dec(mk))
        if events:
            self._emit(events, t)
        self._schedule(symbol)
        self._advance(t)
        self._commit()

    def on_funding(self, symbol: str, funding_rate: float | Decimal, funding_ms: int) -> None:
        """Replay: the funding rate realised at `funding_ms` (recorded funding history). Applied once,
        at that time (now if it is already past), to the position then held, at the mark of that
        moment. Unlike `on_mark` it does not pin the mark: stops keep following the candle path."""
        rate = _rate(funding_rate, symbol=symbol)
        self._sync()
        path = self._path(symbol)
        if funding_ms > self._funding_applied.get(symbol, -1):
            path.funding_rate = rate
            path.next_funding_ms = funding_ms
            self._dirty = True
        self._schedule(symbol)
        self._advance(self._t)
        self._commit()

    # ------------------------------------------------------------ prices

    @property
    def rules(self) -> Mapping[str, SymbolRules]:
        """The exchange rules of every symbol this venue trades."""
        return {symbol: spec.rules for symbol, spec in self._engine.specs.items()}

    def add_rules(self, rules: Mapping[str, SymbolRules]) -> None:
        """Exchange rules of symbols that joined the universe (a daily refresh); existing ones updated."""
        for symbol, r in rules.items():
            old = self._engine.specs.get(symbol)
            self._engine.specs[symbol] = (
                SymbolSpec(rules=r) if old is None else msgspec.structs.replace(old, rules=r)
            )

    def mid_price(self, symbol: str) -> Decimal | None:
        """Book mid while the book is newer than the last trade, else the path price now."""
        book = self._engine.book(symbol)
        if book is not None:
            return (book[0] + book[1]) / 2
        path = self._paths.get(symbol)
        p = None if path is None else path.price_at(self._t)
        return None if p is None else _dec(p)

    def _mark_view(self, symbol: str) -> Decimal | None:
        """The mark now without moving anything: a newer pinned mark, else the path price now."""
        path = self._paths.get(symbol)
        if path is not None and path.mark_ms < self._t and path.knots and path.t < self._t:
            p = path.price_at(self._t)
            if p is not None:
                return _dec(p)
        return self._engine.mark_price(symbol)

    # ------------------------------------------------------------ engine events → gateway events

    def _emit(self, events: list[EngineEvent], t: int) -> None:
        self._dirty = True
        for ev in events:
            if isinstance(ev, OrderEvent):
                upd = self._order_update(ev)
                if upd is not None:
                    self._pending.append(upd)
            elif isinstance(ev, AlgoEvent):
                if ev.algo.status in ("TRIGGERING", "FINISHED"):
                    continue  # the triggered order's own events tell the rest
                state = self._algo_state(ev.algo, follow_child=False)
                self._pending.append(OrderUpdate(order=state, ts_ms=ev.time))
            elif isinstance(ev, AccountEvent) and ev.reason == "ORDER":
                self._pending.append(AccountChanged(account=self._account_state(t)))

    def _order_update(self, ev: OrderEvent) -> OrderUpdate | None:
        o = ev.order
        if o.algo_id:
            if ev.execution == "NEW":
                return None  # reported as the stop's TRIGGERED
            state = self._child_state(o, self._engine.algos.get(o.algo_id))
        else:
            state = self._order_state(o)
        if ev.execution == "TRADE":
            return OrderUpdate(
                order=state,
                last_fill_qty=ev.last_qty,
                last_fill_price=ev.last_price,
                fee=ev.commission,
                is_maker=ev.maker,
                realized_pnl=ev.realized_pnl,
                ts_ms=ev.time,
            )
        reason = _REDUCE_ONLY_REJECT if ev.expiry_reason == ER_REDUCE_ONLY else ""
        return OrderUpdate(order=state, ts_ms=ev.time, reject_reason=reason)

    @staticmethod
    def _order_state(o: SimOrder) -> OrderState:
        return OrderState(
            symbol=o.symbol,
            client_id=o.client_order_id,
            side="BUY" if o.side == "BUY" else "SELL",
            type=o.type,
            status=_status(o.status),
            quantity=o.orig_qty,
            executed_qty=o.executed_qty,
            avg_price=o.avg_price,
            price=o.price,
            reduce_only=o.reduce_only,
            update_ms=o.update_time,
        )

    @staticmethod
    def _child_state(child: SimOrder, algo: SimAlgoOrder | None) -> OrderState:
        """A triggered stop as the gateway reports it: the stop's id, its market order's fills."""
        if child.is_open and child.executed_qty == 0:
            status: OrderStatus = "TRIGGERED"
        elif child.status == "EXPIRED" and child.executed_qty == 0:
            status = "REJECTED"  # nothing left to reduce when it triggered
        else:
            status = _status(child.status)
        return OrderState(
            symbol=child.symbol,
            client_id=child.client_order_id,
            side="BUY" if child.side == "BUY" else "SELL",
            type=child.orig_type,
            status=status,
            quantity=algo.quantity if algo is not None and algo.quantity else child.orig_qty,
            executed_qty=child.executed_qty,
            avg_price=child.avg_price,
            trigger_price=child.stop_price,
            reduce_only=child.reduce_only,
            is_stop=True,
            update_ms=child.update_time,
        )

    def _algo_state(self, algo: SimAlgoOrder, *, follow_child: bool = True) -> OrderState:
        """A stop's state; once triggered, that of its market order (unless `follow_child` is off:
        an event reports the stop as it was then)."""
        if follow_child and algo.actual_order_id:
            child = self._engine.orders.get(algo.actual_order_id)
            if child is not None:
                return self._child_state(child, algo)
        status: OrderStatus = (
            "TRIGGERED" if algo.status in ("TRIGGERING", "TRIGGERED") else _status(algo.status)
        )
        return OrderState(
            symbol=algo.symbol,
            client_id=algo.client_algo_id,
            side="BUY" if algo.side == "BUY" else "SELL",
            type=algo.order_type,
            status=status,
            quantity=algo.quantity,
            trigger_price=algo.trigger_price,
            reduce_only=algo.reduce_only,
            is_stop=True,
            update_ms=algo.update_time,
        )

    def _unrealized(self) -> Decimal:
        total = _ZERO
        for symbol, pos in self._engine.account.positions().items():
            if pos.amount == 0:
                continue
            mark = self._mark_view(symbol)
            if mark is not None:
                total += pos.unrealized(mark)
        return total

    def _account_state(self, t: int) -> AccountState:
        eng = self._engine
        return AccountState(
            wallet_balance=eng.account.wallet_balance,
            available_balance=eng.available_balance(),
            unrealized_pnl=self._unrealized(),
            ts_ms=t,
        )

    def _apply_funding(self, symbol: str, t: int) -> None:
        path = self._path(symbol)
        self._funding_applied[symbol] = t if path.next_funding_ms is None else path.next_funding_ms
        path.next_funding_ms = None
        self._dirty = True
        if path.funding_rate is None:
            return
        eng = self._engine
        eng.now_ms = t
        before = eng.account.wallet_balance
        if eng.apply_funding(symbol, path.funding_rate):
            amount = eng.account.wallet_balance - before
            self._pending.append(FundingPaid(symbol=symbol, amount=amount, ts_ms=t))
            self._pending.append(AccountChanged(account=self._account_state(t)))

    # ------------------------------------------------------------ gateway API: configuration

    async def prepare_symbol(self, symbol: str, *, leverage: int) -> None:
        if isinstance(leverage, bool) or not isinstance(leverage, int) or not 1 <= leverage <= MAX_LEVERAGE:
            raise ApiError(
                f"leverage={leverage!r} for {symbol}, expected an integer in [1, {MAX_LEVERAGE}]",
                code=-4028,
                endpoint=_ENDPOINT_LEVERAGE,
            )
        self._rules_for(symbol, endpoint=_ENDPOINT_LEVERAGE, client_id=None)
        self._sync()
        try:
            self._engine.set_leverage(symbol, leverage)
        except Rejection as rej:
            raise _error(rej, endpoint=_ENDPOINT_LEVERAGE, client_id="") from None
        self._engine.account.set_margin_type(symbol, "ISOLATED")
        self._dirty = True
        self._commit()

    async def check_account_mode(self) -> None:
        """The paper account is always one-way."""

    # ------------------------------------------------------------ gateway API: orders

    def _rules_for(self, symbol: str, *, endpoint: str, client_id: str | None) -> None:
        if symbol not in self._engine.specs:
            raise ApiError(
                f"symbol={symbol!r}: no SymbolRules known, expected one of {sorted(self._engine.specs)}",
                code=-1121,
                endpoint=endpoint,
                client_id=client_id,
            )

    def _existing(self, cid: str) -> OrderState | None:
        """The open order (regular or stop) with client id `cid`, if any: placing it again is a no-op."""
        eng = self._engine
        algo = eng.find_algo(algo_id=None, client_id=cid)
        if algo is not None and algo.is_open:
            log.info("paper_duplicate_client_id", client_id=cid)
            return self._algo_state(algo)
        o = eng.order_by_client_id(cid)
        if o is not None and o.is_open and not o.algo_id:
            log.info("paper_duplicate_client_id", client_id=cid)
            return self._order_state(o)
        return None

    async def place_order(self, req: OrderRequest) -> OrderState:
        """Place a LIMIT / MARKET order. A duplicate client id among open orders returns that order
        (the gateway rule; Binance's -4116 is resolved the same way by `BinanceGateway`)."""
        endpoint, cid = _ENDPOINT_ORDER, req.client_id
        t, existing = self._ready_to_place(req.symbol, endpoint=endpoint, client_id=cid)
        if existing is not None:
            return existing
        tif = req.time_in_force or ("GTC" if req.type == "LIMIT" else None)
        try:
            _, events = self._engine.place_order(
                NewOrder(
                    symbol=req.symbol,
                    side=req.side,
                    type=req.type,
                    quantity=req.quantity,
                    price=req.price,
                    time_in_force=tif,
                    reduce_only=req.reduce_only,
                    client_order_id=cid,
                )
            )
        except Rejection as rej:
            raise _error(rej, endpoint=endpoint, client_id=cid) from None
        first = events[0]
        assert isinstance(first, OrderEvent)
        return self._placed(self._order_state(first.order), events, req.symbol, t)

    async def place_stop(self, req: StopRequest) -> OrderState:
        """Place the reduce-only STOP_MARKET on the mark price (-2021 if the mark is already through)."""
        endpoint, cid = _ENDPOINT_ALGO, req.client_id
        t, existing = self._ready_to_place(req.symbol, endpoint=endpoint, client_id=cid)
        if existing is not None:
            return existing
        try:
            _, events = self._engine.place_algo(
                NewAlgoOrder(
                    symbol=req.symbol,
                    side=req.side,
                    type="STOP_MARKET",
                    quantity=req.quantity,
                    trigger_price=req.trigger_price,
                    working_type=req.working_type,
                    reduce_only=req.reduce_only,
                    client_algo_id=cid,
                )
            )
        except Rejection as rej:
            raise _error(rej, endpoint=endpoint, client_id=cid) from None
        first = events[0]
        assert isinstance(first, AlgoEvent)
        return self._placed(self._algo_state(first.algo), events, req.symbol, t)

    def _ready_to_place(self, symbol: str, *, endpoint: str, client_id: str) -> tuple[int, OrderState | None]:
        """Now (every due event applied, `symbol`'s market moved up to it) and the open order that already
        holds `client_id` (placing it again returns that order), or None: the engine is ready to place."""
        t = self._sync()
        existing = self._existing(client_id)
        if existing is not None:
            return t, existing
        self._rules_for(symbol, endpoint=endpoint, client_id=client_id)
        self._path(symbol)
        self._move_symbol(symbol, t)
        self._engine.now_ms = t
        return t, None

    def _placed(self, accepted: OrderState, events: list[EngineEvent], symbol: str, t: int) -> OrderState:
        """An accepted placement: its events out, `symbol`'s next event rescheduled, the account saved."""
        self._emit(events, t)
        self._schedule(symbol)
        self._commit()
        return accepted

    async def cancel_order(self, symbol: str, client_id: str) -> OrderState | None:
        t = self._sync()
        eng = self._engine
        o = eng.find_order(symbol, order_id=None, client_id=client_id)
        if o is None or o.algo_id or not o.is_open:
            return None
        eng.now_ms = t
        order, events = eng.cancel_order(symbol, order_id=o.order_id)
        self._emit(events, t)
        self._schedule(symbol)
        self._commit()
        return self._order_state(order)

    async def cancel_stop(self, symbol: str, client_id: str) -> OrderState | None:
        t = self._sync()
        eng = self._engine
        algo = eng.find_algo(algo_id=None, client_id=client_id)
        if algo is None or algo.symbol != symbol or not algo.is_open:
            return None
        eng.now_ms = t
        algo, events = eng.cancel_algo(algo_id=algo.algo_id)
        self._emit(events, t)
        self._schedule(symbol)
        self._commit()
        return self._algo_state(algo)

    async def query_order(self, symbol: str, client_id: str) -> OrderState | None:
        self._sync()
        o = self._engine.find_order(symbol, order_id=None, client_id=client_id)
        if o is None or o.algo_id:
            return None
        return self._order_state(o)

    async def query_stop(self, symbol: str, client_id: str) -> OrderState | None:
        self._sync()
        algo = self._engine.find_algo(algo_id=None, client_id=client_id)
        if algo is None or algo.symbol != symbol:
            return None
        return self._algo_state(algo)

    async def open_orders(self) -> list[OrderState]:
        self._sync()
        eng = self._engine
        rows: list[tuple[int, int, OrderState]] = [
            (o.time, o.order_id, self._order_state(o)) for o in eng.open_orders() if not o.algo_id
        ]
        rows += [(a.create_time, a.algo_id, self._algo_state(a)) for a in eng.open_algos()]
        return [state for _, _, state in sorted(rows, key=lambda r: (r[0], r[1]))]

    # ------------------------------------------------------------ gateway API: account

    async def positions(self) -> list[PositionState]:
        self._sync()
        eng = self._engine
        out: list[PositionState] = []
        for symbol, pos in sorted(eng.account.positions().items()):
            if pos.amount == 0:
                continue
            mark = self._mark_view(symbol)
            out.append(
                PositionState(
                    symbol=symbol,
                    side="LONG" if pos.amount > 0 else "SHORT",
                    quantity=abs(pos.amount),
                    entry_price=pos.entry_price,
                    unrealized_pnl=_ZERO if mark is None else pos.unrealized(mark),
                    leverage=eng.account.leverage(symbol),
                    isolated_margin=pos.isolated_margin,
                )
            )
        return out

    async def user_trades(self, symbol: str, *, start_ms: int) -> list[TradeFill]:
        self._sync()
        return [
            trade_fill(r) for r in self._engine.account.trades if r.symbol == symbol and r.time >= start_ms
        ]

    async def account(self) -> AccountState:
        t = self._sync()
        return self._account_state(t)


_STATUSES: dict[str, OrderStatus] = {
    "NEW": "NEW",
    "PARTIALLY_FILLED": "PARTIALLY_FILLED",
    "FILLED": "FILLED",
    "CANCELED": "CANCELED",
    "EXPIRED": "EXPIRED",
    "REJECTED": "REJECTED",
    "TRIGGERED": "TRIGGERED",
}


def _status(s: str) -> OrderStatus:
    return _STATUSES.get(s, "EXPIRED")

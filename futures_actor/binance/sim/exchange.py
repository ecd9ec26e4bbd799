"""`SimExchange`: the one state machine behind every way of reaching the fake Binance USDT-M exchange.

This module owns the exchange's clock, its market data (recorded or scripted), the REST endpoint
semantics (authentication, parameters, Binance error codes and HTTP statuses), the listenKey life
cycle and the fan-out of market and user-data events to WebSocket subscribers. Matching and the
account live in the pure `matching` / `account` modules; transports (httpx.MockTransport, in-memory
WebSockets, the loopback HTTP/WS server) live in `server`. Everything is driven by the exchange
clock (`advance_to`, `step`), which only moves when told to, so tests are deterministic.

Recorded candles are replayed in one of two ways. Without a `feed` (the default, fast under a mock clock
over days of candles) a candle happens at its close: matched along its path, one closed kline frame
(`x: true`), one mark price and one book ticker. With a `feed` (`feed.MarketFeed`, what the
`sim-exchange` tool runs) the candle is traded along its path while it forms: the engine moves every
`feed.grid_ms`, kline frames of the forming candle (`x: false`) go out every `kline_ms` for every
subscribed interval, mark prices every `mark_ms` / `mark_fast_ms`, book tickers every `book_ms`, REST
`klines` ends with the forming candle, as on Binance, and the quote volume, trade count and taker-buy
volumes a recording lacks are derived from the candle (policy of the path and the volumes: `feed`).
Without a feed, klines carry the candle's own quote volume and trades and no taker-buy volume.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import trio

from futures_actor.binance.sim.account import QUOTE_ASSET, Account
from futures_actor.binance.sim.faults import (
    UNKNOWN_503_MSG,
    WS_MAX_CONNECTION_S,
    WS_SERVER_PING_S,
    Faults,
)
from futures_actor.binance.sim.feed import CandlePath, CandleStats, MarketFeed, candle_stats
from futures_actor.binance.sim.limits import VenueLimits
from futures_actor.binance.sim.matching import (
    ALGO_TYPES,
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
from futures_actor.core.types import INTERVAL_MS, Candle

__all__ = ["RecordedRequest", "ResponseLost", "SimExchange", "SimRequest", "SimResponse", "Subscriber"]

ZERO = Decimal(0)
# Protocol facts of Binance USDT-M (reference §2, §3, §7b, §8).
DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60000
TIMESTAMP_AHEAD_MS = 1000
LISTEN_KEY_TTL_MS = 60 * 60 * 1000
KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1500
FUNDING_INTERVAL_MS = 8 * 3_600_000
DEFAULT_FUNDING_RATE = Decimal("0.0001")  # Binance's baseline (interest rate, 0.01% per 8 h)
BOOK_QTY = Decimal("10")  # quantity shown at the simulated best bid and ask
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
DEPTH_DEFAULT_LIMIT = 500
FUNDING_HISTORY_DEFAULT_LIMIT = 100
FUNDING_HISTORY_MAX_LIMIT = 1000
FUNDING_HISTORY_NO_TIMES = 200  # rows returned when neither startTime nor endTime is sent
ALL_ORDERS_DEFAULT_LIMIT = 500
ALL_ORDERS_MAX_LIMIT = 1000
BATCH_MAX_ORDERS = 5
ADMIN_PREFIX = "/admin/"
# A fresh Binance account: every symbol starts in cross margin.
DEFAULT_MARGIN_TYPE = "CROSSED"
# Leverage brackets synthesized when none were recorded: (initial leverage, notional cap, maint. margin
# ratio), shaped like Binance's BTCUSDT table; floors and `cum` follow from the caps and ratios.
_BRACKET_TABLE: tuple[tuple[int, int, str], ...] = (
    (125, 50_000, "0.004"),
    (100, 600_000, "0.005"),
    (75, 3_000_000, "0.0065"),
    (50, 12_000_000, "0.01"),
    (25, 70_000_000, "0.02"),
    (20, 100_000_000, "0.025"),
    (10, 230_000_000, "0.05"),
    (5, 480_000_000, "0.1"),
    (4, 600_000_000, "0.125"),
    (3, 800_000_000, "0.15"),
    (2, 1_200_000_000, "0.25"),
    (1, 1_800_000_000, "0.5"),
)
# The API key's permissions as `GET /sapi/v1/account/apiRestrictions` reports them (a safe bot key).
DEFAULT_API_RESTRICTIONS: dict[str, Any] = {
    "ipRestrict": True,
    "createTime": 1_700_000_000_000,
    "enableReading": True,
    "enableFutures": True,
    "enableWithdrawals": False,
    "enableInternalTransfer": False,
    "permitsUniversalTransfer": False,
    "enableVanillaOptions": False,
    "enableSpotAndMarginTrading": False,
    "enableMargin": False,
    "enablePortfolioMarginTrading": False,
    "enableFixApiTrade": False,
    "enableFixReadOnly": False,
}
SUBSCRIBER_BUFFER = 4096
LISTEN_KEY_LEN = 64


class SimRequest(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    path: str
    query: bytes = b""
    body: bytes = b""
    headers: dict[str, str] = {}  # lower-case names


class SimResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: bytes
    headers: dict[str, str] = {}


class RecordedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One request as received (introspection): `client_id` is newClientOrderId / clientAlgoId."""

    time_ms: int
    method: str
    path: str
    params: dict[str, str]
    client_id: str | None
    status: int = 0


class ResponseLost(Exception):
    """The request was executed but its response must not reach the client (fault injection)."""


class Subscriber:
    """One WebSocket connection's subscription: route, stream names or listenKeys, framing."""

    def __init__(self, *, route: str, combined: bool, streams: set[str], listen_keys: set[str]) -> None:
        self.route = route
        self.combined = combined
        self.streams = streams
        self.listen_keys = listen_keys
        self.send, self.receive = trio.open_memory_channel[bytes](SUBSCRIBER_BUFFER)
        self.closed = False

    def push(self, stream: str, payload: dict[str, Any]) -> None:
        data = {"stream": stream, "data": payload} if self.combined else payload
        try:
            self.send.send_nowait(msgspec.json.encode(data))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True


def _s(d: Decimal) -> str:
    return format(d, "f")


class _Market:
    """Market data of one symbol: recorded base candles, closed history, the forming candle, funding."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.recorded: list[Candle] = []
        self.next_idx = 0
        self.history: list[Candle] = []
        self.forming: Candle | None = None
        self.funding_times: list[int] = []
        self.funding_rates: list[Decimal] = []
        self.funding_paid: list[tuple[int, Decimal, Decimal]] = []  # (time, rate, mark) as applied
        self.rate = DEFAULT_FUNDING_RATE
        self.volume_24h = 0.0
        # Intra-candle replay (with a feed): the recorded candle being traded, how far (ms after its
        # open), the base volume already added to the engine, the last exchange time played.
        self.path: CandlePath | None = None
        self.played = -1
        self.volume_added = ZERO
        self.cursor = -1
        self.forming_stats: CandleStats | None = None


class SimExchange:
    """The fake exchange. Construct with the symbol specs (see `symbols.load_exchange_info`)."""

    def __init__(
        self,
        *,
        exchange_info: Mapping[str, Any],
        specs: Mapping[str, SymbolSpec],
        execution: ExecutionConfig,
        api_key: str,
        api_secret: str,
        start_ms: int,
        base_interval: str = "5m",
        initial_balance: Decimal | None = None,
        engine_state: bytes | None = None,
        enforce_rate_limits: bool = True,
        feed: MarketFeed | None = None,
    ) -> None:
        if base_interval not in INTERVAL_MS:
            raise ValueError(f"base_interval {base_interval!r}: expected one of {list(INTERVAL_MS)}")
        self._info = dict(exchange_info)
        self._api_key = api_key
        self._api_secret = api_secret.encode()
        self._interval = base_interval
        self._interval_ms = INTERVAL_MS[base_interval]
        self.feed = feed
        if engine_state is not None:
            self.engine = MatchingEngine.from_state(engine_state, execution=execution, symbols=specs)
        else:
            balance = (
                initial_balance
                if initial_balance is not None
                else Decimal(repr(execution.paper_initial_balance_usdt))
            )
            self.engine = MatchingEngine(
                execution=execution, symbols=specs, account=Account(initial_balance=balance), now_ms=start_ms
            )
            for sym in specs:  # a fresh account: cross margin everywhere until the client changes it
                self.engine.account.set_margin_type(sym, DEFAULT_MARGIN_TYPE)
        self.now_ms = max(start_ms, self.engine.now_ms)
        self.engine.now_ms = self.now_ms
        self.faults = Faults()
        self.limits = VenueLimits(enforced=enforce_rate_limits)
        self.api_restrictions: dict[str, Any] = dict(DEFAULT_API_RESTRICTIONS)
        self.ws_pings_sent = 0
        self.admin_enabled = False  # `/admin/...` (fault injection, request log): the tool turns it on
        self.hedge_mode = False  # dualSidePosition; the fake trades one-way only, this is what it reports
        self._execution = execution
        self.markets = {s: _Market(s) for s in specs}
        self.requests: list[RecordedRequest] = []
        self.user_events: list[dict[str, Any]] = []
        self.subscribers: list[Subscriber] = []
        self.multi_assets = False  # account-wide Multi-Assets mode (isolated margin refused under it)
        self._listen_key: str | None = None
        self._listen_key_expires = 0
        self._listen_key_serial = 0
        self._next_funding = {s: self._funding_after(s, self.now_ms) for s in specs}
        self._routes: dict[tuple[str, str], tuple[str, Callable[[dict[str, str]], Any]]] = self._route_table()

    # ============================================================ data loading and scripting

    def load_candles(self, symbol: str, candles: list[Candle]) -> None:
        """Recorded base-interval candles for `symbol`, replayed as the clock passes their close."""
        m = self._market(symbol)
        m.recorded = sorted(candles, key=lambda c: c.open_time_ms)
        m.next_idx = bisect_right([c.open_time_ms + self._interval_ms - 1 for c in m.recorded], self.now_ms)
        m.history = m.recorded[: m.next_idx]
        m.path, m.played, m.volume_added, m.cursor = None, -1, ZERO, self.now_ms - 1
        if m.history:
            self.engine.on_price(symbol, Decimal(repr(m.history[-1].close)))
        if (
            self.feed is not None
            and m.next_idx < len(m.recorded)
            and m.recorded[m.next_idx].open_time_ms <= self.now_ms
        ):
            self._play(m, self.now_ms)  # the candle forming now: traded so far, served as the last REST row

    def load_funding(self, symbol: str, rows: list[tuple[int, Decimal]]) -> None:
        """Recorded funding (time ms, rate); funding then happens at exactly these times."""
        m = self._market(symbol)
        rows = sorted(rows)
        m.funding_times = [t for t, _ in rows]
        m.funding_rates = [r for _, r in rows]
        self._next_funding[symbol] = self._funding_after(symbol, self.now_ms)

    def set_funding_rate(self, symbol: str, rate: Decimal) -> None:
        """The rate applied at the next (default 8-hourly) funding times of `symbol`."""
        self._market(symbol).rate = rate

    def set_price(
        self,
        symbol: str,
        price: Decimal | str,
        *,
        mark: Decimal | str | None = None,
        volume: Decimal | None = None,
    ) -> None:
        """Trade at `price` now (a gap); `mark` pins the mark price; `volume` caps resting fills."""
        p = Decimal(price)
        m = self._market(symbol)
        self._publish(
            self.engine.on_price(symbol, p, mark=None if mark is None else Decimal(mark), volume=volume)
        )
        start = self.now_ms - self.now_ms % self._interval_ms
        f = m.forming
        pf = float(p)
        if f is None or f.open_time_ms != start:
            f = Candle(open_time_ms=start, open=pf, high=pf, low=pf, close=pf, volume=0.0)
        else:
            f = Candle(
                open_time_ms=start,
                open=f.open,
                high=max(f.high, pf),
                low=min(f.low, pf),
                close=pf,
                volume=f.volume,
            )
        m.forming = f
        self._push_market(symbol, kline=(f, False))

    def set_mark(self, symbol: str, mark: Decimal | str) -> None:
        """Move (and pin) the mark price only: MARK_PRICE stops may trigger; fills happen at the last price."""
        self._publish(self.engine.on_mark(symbol, Decimal(mark)))
        self._push_market(symbol)

    def push_candle(self, symbol: str, candle: Candle) -> None:
        """A closed candle happens now: matched along its path, stored, streamed (x=true)."""
        m = self._market(symbol)
        self._publish(self.engine.on_candle(symbol, candle))
        m.history.append(candle)
        m.forming = None
        self._push_market(symbol, kline=(candle, True))

    # ============================================================ clock

    def step(self) -> None:
        """Advance the clock by one base interval."""
        self.advance_to(self.now_ms + self._interval_ms)

    def advance_to(self, target_ms: int) -> None:
        """Move the exchange clock forward, replaying candle closes, funding and listenKey expiry in order."""
        if target_ms < self.now_ms:
            raise ValueError(
                f"advance_to({target_ms}): the exchange clock is at {self.now_ms} and never goes back"
            )
        while True:
            t, action = self._next_event(target_ms)
            if action is None:
                break
            self._set_now(t)
            action()
        self._set_now(target_ms)

    def _set_now(self, t: int) -> None:
        self.now_ms = t
        self.engine.now_ms = t

    def _next_event(self, target: int) -> tuple[int, Callable[[], None] | None]:
        best: tuple[int, int, Callable[[], None] | None] = (target + 1, 9, None)
        for sym, m in self.markets.items():
            if m.next_idx < len(m.recorded):
                c = m.recorded[m.next_idx]
                t = c.open_time_ms + self._interval_ms - 1
                if self.feed is not None:
                    g = self.feed.grid_ms
                    t = min(t, max(c.open_time_ms, (m.cursor // g + 1) * g))
                    if t <= target and (t, 0) < best[:2]:
                        best = (t, 0, functools.partial(self._play, m, t))
                elif t <= target and (t, 0) < best[:2]:
                    best = (t, 0, functools.partial(self._replay_next, m))
            if m.forming is not None and m.path is None:
                t = m.forming.open_time_ms + self._interval_ms - 1
                if t <= target and (t, 1) < best[:2]:
                    best = (t, 1, functools.partial(self._close_forming, m))
            t = self._next_funding[sym]
            if t <= target and (t, 2) < best[:2]:
                best = (t, 2, functools.partial(self._fund, sym))
        if (
            self._listen_key is not None
            and self._listen_key_expires <= target
            and (self._listen_key_expires, 3) < best[:2]
        ):
            best = (self._listen_key_expires, 3, self.expire_listen_key)
        return best[0], best[2]

    def _replay_next(self, m: _Market) -> None:
        c = m.recorded[m.next_idx]
        m.next_idx += 1
        self.push_candle(m.symbol, c)

    def _play(self, m: _Market, t: int) -> None:
        """Trade the recorded candle being formed up to exchange time `t` and publish what is due."""
        assert self.feed is not None
        feed = self.feed
        c = m.recorded[m.next_idx]
        sym = m.symbol
        if m.path is None or m.path.candle is not c:
            rules = self.engine.spec(sym).rules
            m.path = CandlePath(
                c, interval_ms=self._interval_ms, feed=feed, tick=rules.tick_size, lot=rules.step_size
            )
            m.played, m.volume_added = -1, ZERO
        path = m.path
        off = min(t - c.open_time_ms, path.duration)
        volume = path.volume_at(off)
        if volume > m.volume_added:  # traded from the step's start: the cap of every order open then
            self.engine.add_volume(sym, volume - m.volume_added)
            m.volume_added = volume
        if m.played < 0:  # the jump from the previous price to the open is a gap
            self._publish(self.engine.move(sym, path.price_at(0), continuous=False))
            m.played = 0
        for corner in path.corners_between(m.played, off):
            self._publish(self.engine.move(sym, corner, continuous=True))
        if off > m.played:
            self._publish(self.engine.move(sym, path.price_at(off), continuous=True))
        m.played, m.cursor = off, t
        if off >= path.duration:
            m.next_idx += 1
            m.path, m.forming, m.forming_stats = None, None, None
            m.history.append(c)  # the closed frame; mark and book keep their own grid
            self._push_market(sym, kline=(c, True), mark=False, mark_fast=False, book=False)
            return
        state = path.state_at(off)
        m.forming, m.forming_stats = state.candle, state.stats
        self._push_market(
            sym,
            kline=(state.candle, False) if t % feed.kline_ms == 0 else None,
            mark=t % feed.mark_ms == 0,
            mark_fast=t % feed.mark_fast_ms == 0,
            book=t % feed.book_ms == 0,
        )

    def _close_forming(self, m: _Market) -> None:
        assert m.forming is not None
        c = m.forming
        m.history.append(c)
        m.forming = None
        self._push_market(m.symbol, kline=(c, True))

    def _funding_after(self, symbol: str, t: int) -> int:
        m = self.markets[symbol]
        if m.funding_times:
            i = bisect_right(m.funding_times, t)
            return m.funding_times[i] if i < len(m.funding_times) else 2**62
        return (t // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS

    def _funding_rate_at(self, symbol: str, t: int) -> Decimal:
        m = self.markets[symbol]
        if m.funding_times:
            i = bisect_right(m.funding_times, t) - 1
            if i >= 0 and m.funding_times[i] == t:
                return m.funding_rates[i]
            j = i + 1
            return m.funding_rates[j] if j < len(m.funding_rates) else m.rate
        return m.rate

    def _fund(self, symbol: str) -> None:
        t = self._next_funding[symbol]
        rate = self._funding_rate_at(symbol, t)
        mark = self.engine.mark_price(symbol) or self.engine.last_price(symbol) or ZERO
        self.markets[symbol].funding_paid.append((t, rate, mark))
        self._publish(self.engine.apply_funding(symbol, rate))
        self._next_funding[symbol] = self._funding_after(symbol, t)

    def _market(self, symbol: str) -> _Market:
        m = self.markets.get(symbol)
        if m is None:
            raise KeyError(
                f"symbol {symbol!r} is not listed on the sim exchange; listed: {sorted(self.markets)}"
            )
        return m

    # ============================================================ introspection

    def client_ids_sent(self) -> list[str]:
        """Every newClientOrderId / clientAlgoId of every placement request received, in order."""
        return [
            r.client_id
            for r in self.requests
            if r.client_id is not None
            and r.method == "POST"
            and r.path in ("/fapi/v1/order", "/fapi/v1/algoOrder")
        ]

    def orders_by_client_id(self, client_id: str) -> list[SimOrder]:
        return [o for o in self.engine.orders.values() if o.client_order_id == client_id]

    def algo_by_client_id(self, client_id: str) -> SimAlgoOrder | None:
        return self.engine.find_algo(algo_id=None, client_id=client_id)

    def position_amount(self, symbol: str) -> Decimal:
        return self.engine.account.position(symbol).amount

    def wallet_balance(self) -> Decimal:
        return self.engine.account.wallet_balance

    def to_state(self) -> bytes:
        """The engine (account, orders, prices) as msgspec JSON; pass back as `engine_state=`."""
        return self.engine.to_state()

    # ============================================================ REST

    async def handle(self, req: SimRequest) -> SimResponse:
        """Serve one REST request (faults applied). Raises `ResponseLost` for a lost response."""
        if self.faults.latency_s > 0:
            await trio.sleep(self.faults.latency_s)
        return self.handle_now(req)

    def handle_now(self, req: SimRequest) -> SimResponse:
        params = self._params(req)
        if req.path.startswith(ADMIN_PREFIX):  # not part of the request log it serves
            status, body, headers = self._admin(req, params)
            return SimResponse(status=status, body=msgspec.json.encode(body), headers=headers)
        cid = params.get("newClientOrderId") or params.get("clientAlgoId") or params.get("origClientOrderId")
        record = RecordedRequest(
            time_ms=self.now_ms, method=req.method, path=req.path, params=params, client_id=cid
        )
        try:
            status, body, headers = self._dispatch(req, params)
        except ResponseLost:
            self.requests.append(msgspec.structs.replace(record, status=-1))
            raise
        self.requests.append(msgspec.structs.replace(record, status=status))
        return SimResponse(status=status, body=msgspec.json.encode(body), headers=headers)

    @staticmethod
    def _params(req: SimRequest) -> dict[str, str]:
        params: dict[str, str] = {}
        for raw in (req.body, req.query):  # the query string wins over the body
            for k, v in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
                params[k] = v
        return params

    def _dispatch(self, req: SimRequest, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        f = self.faults
        if f.ban_until_ms is not None:
            if self.now_ms < f.ban_until_ms:
                ban = self.limits.ban(self.now_ms, f.ban_until_ms)
                return ban.status, {"code": ban.code, "msg": ban.msg}, ban.headers
            f.ban_until_ms = None
        verdict = self.limits.admit(self.now_ms, req.method, req.path, params)
        if verdict is not None:
            return verdict.status, {"code": verdict.code, "msg": verdict.msg}, verdict.headers
        counted = self.limits.headers(req.method, req.path)
        fault = f.take_http(req.path)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s is not None else {}
            body: dict[str, Any] = {
                "code": fault.code if fault.code is not None else -1001 if fault.status >= 500 else -1000,
                "msg": fault.msg,
            }
            return fault.status, body, {**counted, **headers}
        route = self._routes.get((req.method, req.path))
        if route is None:
            known = any(p == req.path for _, p in self._routes)
            if known:
                return (
                    405,
                    {"code": -1000, "msg": f"Method {req.method} not allowed on {req.path}."},
                    counted,
                )
            return 404, {"code": -5000, "msg": f"Path {req.path}, Method {req.method} is invalid"}, counted
        security, fn = route
        try:
            if security != "NONE":
                self._authenticate(req, params, signed=security == "SIGNED")
            result = fn(params)
        except Rejection as rej:
            return rej.status, {"code": rej.code, "msg": rej.msg}, counted
        return 200, result, counted

    # ------------------------------------------------------------ admin (loopback tool only)

    def _admin(self, req: SimRequest, p: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """Fault injection, the request log and a state summary, for soak tests and users.

        `GET /admin/requests?since=N` (the log from index N), `GET /admin/state`,
        `POST /admin/faults?kind=...` (one fault, parameters as in `Faults`), `DELETE /admin/faults`,
        `POST /admin/price?symbol=&price=[&mark=]`, `POST /admin/drop_ws?route=`. Never signed: served
        only when `admin_enabled` (the `sim-exchange` tool binds 127.0.0.1).
        """
        if not self.admin_enabled:
            return 404, {"code": -5000, "msg": f"Path {req.path}, Method {req.method} is invalid"}, {}
        key = (req.method, req.path.removeprefix(ADMIN_PREFIX).rstrip("/"))
        try:
            match key:
                case ("GET", "requests"):
                    since = int(p.get("since", "0"))
                    return 200, [msgspec.to_builtins(r) for r in self.requests[since:]], {}
                case ("GET", "state"):
                    return 200, self._admin_state(), {}
                case ("POST", "faults"):
                    return 200, self._arm_fault(p), {}
                case ("DELETE", "faults"):
                    self.faults = Faults()
                    return 200, {"cleared": True}, {}
                case ("POST", "price"):
                    self.set_price(p["symbol"], p["price"], mark=p.get("mark"))
                    return 200, {"symbol": p["symbol"], "price": p["price"]}, {}
                case ("POST", "drop_ws"):
                    return 200, {"dropped": self.drop_subscribers(p.get("route") or None)}, {}
        except (KeyError, ValueError, InvalidOperation) as exc:
            return (
                400,
                {"code": -1102, "msg": f"admin {key[0]} {key[1]}: bad or missing parameter: {exc}"},
                {},
            )
        return 404, {"code": -5000, "msg": f"admin: unknown {key[0]} {req.path}"}, {}

    def _admin_state(self) -> dict[str, Any]:
        acc = self.engine.account
        return {
            "now_ms": self.now_ms,
            "used_weight_1m": self.limits.used_weight,
            "orders_10s": self.limits.orders_10s,
            "orders_1m": self.limits.orders_1m,
            "banned_until_ms": self.limits.banned_until_ms,
            "wallet_balance": _s(acc.wallet_balance),
            "positions": {s: _s(pos.amount) for s, pos in acc.positions().items() if pos.amount},
            "open_orders": len(self.engine.open_orders()),
            "open_algo_orders": len(self.engine.open_algos()),
            "requests": len(self.requests),
            "subscribers": len(self.subscribers),
            "multi_assets": self.multi_assets,
        }

    def _arm_fault(self, p: dict[str, str]) -> dict[str, Any]:
        f = self.faults
        kind = p["kind"]
        times = int(p.get("times", "1"))
        path = p.get("path") or None
        match kind:
            case "fail_next":
                f.fail_next(
                    path,
                    status=int(p.get("status", "503")),
                    times=times,
                    code=int(p["code"]) if "code" in p else None,
                    msg=p.get("msg", "Service Unavailable."),
                )
            case "rate_limit_next":
                f.rate_limit_next(path, retry_after_s=int(p.get("retry_after_s", "1")), times=times)
            case "ban_until":
                f.ban_until(int(p["until_ms"]))
            case "timestamp_errors":
                f.timestamp_errors(times)
            case "lose_response_of_next_order":
                mode = p.get("mode", "timeout")
                if mode not in ("timeout", "503"):
                    raise ValueError(f"mode={mode!r}, expected timeout or 503")
                for _ in range(times):
                    f.lose_response_of_next_order(mode)  # type: ignore[arg-type]
            case "silence_ws":
                f.silence_ws(p["route"])
            case "unsilence_ws":
                f.unsilence_ws(p["route"])
            case "latency":
                f.set_latency(float(p["seconds"]))
            case "server_pings":
                f.server_pings(float(p.get("interval_s", str(WS_SERVER_PING_S))))
            case "cut_ws_after":
                f.cut_ws_after(float(p.get("seconds", str(WS_MAX_CONNECTION_S))))
            case "drop_user_events" | "duplicate_user_events" | "reorder_user_events":
                f.user_events(kind.removesuffix("_user_events"), times=times)  # type: ignore[arg-type]
            case _:
                raise ValueError(
                    f"kind={kind!r}, expected fail_next, rate_limit_next, ban_until, timestamp_errors, "
                    "lose_response_of_next_order, silence_ws, unsilence_ws, latency, server_pings, "
                    "cut_ws_after, drop_user_events, "
                    "duplicate_user_events or reorder_user_events"
                )
        return {"armed": kind}

    def _authenticate(self, req: SimRequest, params: dict[str, str], *, signed: bool) -> None:
        key = req.headers.get("x-mbx-apikey")
        if not key:
            raise Rejection(-2014, "API-key format invalid.", status=401)
        if not hmac.compare_digest(key, self._api_key):
            raise Rejection(
                -2015, "Invalid API-key, IP, or permissions for action, request ip: 127.0.0.1", status=401
            )
        if not signed:
            return
        for name in ("timestamp", "signature"):
            if not params.get(name):
                raise Rejection(
                    -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
                )
        try:
            ts = int(params["timestamp"])
            window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW_MS))
        except ValueError:
            raise Rejection(
                -1100, "Illegal characters found in parameter 'timestamp' or 'recvWindow'."
            ) from None
        if window > MAX_RECV_WINDOW_MS or window <= 0:
            raise Rejection(-1131, "recvWindow must be less than 60000")
        if self.faults.take_timestamp_error() or not (
            ts < self.now_ms + TIMESTAMP_AHEAD_MS and self.now_ms - ts <= window
        ):
            msg = (
                "Timestamp for this request was 1000ms ahead of the server's time."
                if ts >= self.now_ms + TIMESTAMP_AHEAD_MS
                else "Timestamp for this request is outside of the recvWindow."
            )
            raise Rejection(-1021, msg)
        payload = _strip_signature(req.query) + _strip_signature(req.body)
        expected = hmac.new(self._api_secret, payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, params["signature"].lower()):
            raise Rejection(-1022, "Signature for this request is not valid.")

    def _route_table(self) -> dict[tuple[str, str], tuple[str, Callable[[dict[str, str]], Any]]]:
        n, k, s = "NONE", "KEY", "SIGNED"
        return {
            ("GET", "/fapi/v1/ping"): (n, lambda p: {}),
            ("GET", "/fapi/v1/time"): (n, lambda p: {"serverTime": self.now_ms}),
            ("GET", "/fapi/v1/exchangeInfo"): (n, self._r_exchange_info),
            ("GET", "/fapi/v1/klines"): (n, self._r_klines),
            ("GET", "/fapi/v1/ticker/24hr"): (n, lambda p: self._per_symbol(p, self._ticker24)),
            ("GET", "/fapi/v1/ticker/bookTicker"): (n, lambda p: self._per_symbol(p, self._book_rest)),
            ("GET", "/fapi/v1/premiumIndex"): (n, lambda p: self._per_symbol(p, self._premium)),
            ("GET", "/fapi/v2/ticker/price"): (n, lambda p: self._per_symbol(p, self._price_row)),
            ("GET", "/fapi/v1/depth"): (n, self._r_depth),
            ("GET", "/fapi/v1/fundingRate"): (n, self._r_funding_rate),
            ("GET", "/fapi/v1/fundingInfo"): (n, self._r_funding_info),
            ("POST", "/fapi/v1/listenKey"): (k, self._r_listen_key_post),
            ("PUT", "/fapi/v1/listenKey"): (k, self._r_listen_key_put),
            ("DELETE", "/fapi/v1/listenKey"): (k, self._r_listen_key_delete),
            ("POST", "/fapi/v1/order"): (s, self._r_new_order),
            ("GET", "/fapi/v1/order"): (s, self._r_query_order),
            ("DELETE", "/fapi/v1/order"): (s, self._r_cancel_order),
            ("PUT", "/fapi/v1/order"): (s, self._r_modify_order),
            ("GET", "/fapi/v1/openOrder"): (s, self._r_open_order),
            ("GET", "/fapi/v1/openOrders"): (s, self._r_open_orders),
            ("GET", "/fapi/v1/allOrders"): (s, self._r_all_orders),
            ("POST", "/fapi/v1/batchOrders"): (s, self._r_batch_orders),
            ("DELETE", "/fapi/v1/allOpenOrders"): (s, self._r_cancel_all),
            ("POST", "/fapi/v1/algoOrder"): (s, self._r_new_algo),
            ("GET", "/fapi/v1/algoOrder"): (s, self._r_query_algo),
            ("DELETE", "/fapi/v1/algoOrder"): (s, self._r_cancel_algo),
            ("GET", "/fapi/v1/openAlgoOrders"): (s, self._r_open_algos),
            ("GET", "/fapi/v1/allAlgoOrders"): (s, self._r_all_algos),
            ("DELETE", "/fapi/v1/algoOpenOrders"): (s, self._r_cancel_all_algos),
            ("POST", "/fapi/v1/leverage"): (s, self._r_leverage),
            ("POST", "/fapi/v1/marginType"): (s, self._r_margin_type),
            ("GET", "/fapi/v1/positionSide/dual"): (s, lambda p: {"dualSidePosition": self.hedge_mode}),
            ("POST", "/fapi/v1/positionSide/dual"): (s, self._r_position_mode),
            ("GET", "/fapi/v1/multiAssetsMargin"): (s, lambda p: {"multiAssetsMargin": self.multi_assets}),
            ("POST", "/fapi/v1/multiAssetsMargin"): (s, self._r_multi_assets),
            ("GET", "/fapi/v2/positionRisk"): (s, self._r_position_risk),
            ("GET", "/fapi/v3/positionRisk"): (s, self._r_position_risk_v3),
            ("GET", "/fapi/v2/balance"): (s, lambda p: self._balance_rows()),
            ("GET", "/fapi/v3/balance"): (s, lambda p: self._balance_rows()),
            ("GET", "/fapi/v2/account"): (s, lambda p: self._r_account(p, all_symbols=True)),
            ("GET", "/fapi/v3/account"): (s, lambda p: self._r_account(p, all_symbols=False)),
            ("GET", "/fapi/v1/leverageBracket"): (s, self._r_leverage_bracket),
            ("GET", "/fapi/v1/commissionRate"): (s, self._r_commission_rate),
            ("GET", "/fapi/v1/symbolConfig"): (s, self._r_symbol_config),
            ("GET", "/fapi/v1/accountConfig"): (s, self._r_account_config),
            ("GET", "/sapi/v1/account/apiRestrictions"): (s, lambda p: dict(self.api_restrictions)),
            ("GET", "/fapi/v1/income"): (s, self._r_income),
            ("GET", "/fapi/v1/userTrades"): (s, self._r_user_trades),
        }

    # ------------------------------------------------------------ parameter helpers

    @staticmethod
    def _req(p: dict[str, str], name: str) -> str:
        v = p.get(name)
        if v is None or v == "":
            raise Rejection(
                -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
            )
        return v

    @staticmethod
    def _dec(p: dict[str, str], name: str) -> Decimal | None:
        v = p.get(name)
        if v is None or v == "":
            return None
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise Rejection(
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.",
            ) from None
        if not d.is_finite():
            raise Rejection(-1100, f"Illegal characters found in parameter '{name}'.")
        return d

    @staticmethod
    def _bool(p: dict[str, str], name: str) -> bool:
        v = p.get(name, "false").lower()
        if v not in ("true", "false"):
            raise Rejection(
                -1130, f"Invalid data sent for a parameter: '{name}'={v!r}; expected true or false."
            )
        return v == "true"

    @staticmethod
    def _int(p: dict[str, str], name: str) -> int | None:
        v = p.get(name)
        if v is None or v == "":
            return None
        try:
            return int(v)
        except ValueError:
            raise Rejection(
                -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
            ) from None

    def _symbol(self, p: dict[str, str]) -> str:
        sym = self._req(p, "symbol")
        if sym not in self.markets:
            raise Rejection(-1121, "Invalid symbol.")
        return sym

    def _check_position_side(self, p: dict[str, str]) -> None:
        ps = p.get("positionSide", "BOTH")
        if ps != "BOTH":
            raise Rejection(-4061, "Order's position side does not match user's setting.")

    # ------------------------------------------------------------ market data

    def _r_exchange_info(self, p: dict[str, str]) -> Any:
        return {**self._info, "serverTime": self.now_ms}

    def _per_symbol(self, p: dict[str, str], row: Callable[[str], dict[str, Any]]) -> Any:
        if "symbol" in p:
            return row(self._symbol(p))
        return [row(s) for s in self.markets if self.engine.last_price(s) is not None]

    def _last(self, sym: str) -> Decimal:
        last = self.engine.last_price(sym)
        if last is None:
            raise Rejection(-1000, f"No market data for {sym} yet on the sim exchange.")
        return last

    def _closed_and_forming(self, sym: str) -> list[Candle]:
        m = self.markets[sym]
        return m.history + ([m.forming] if m.forming is not None else [])

    def _r_klines(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p)
        interval = self._req(p, "interval")
        step = INTERVAL_MS.get(interval)
        if step is None or step % self._interval_ms:
            raise Rejection(-1120, "Invalid interval.")
        limit = self._int(p, "limit") or KLINES_DEFAULT_LIMIT
        if not 1 <= limit <= KLINES_MAX_LIMIT:
            raise Rejection(
                -1130, f"Invalid data sent for a parameter: limit={limit}; expected 1..{KLINES_MAX_LIMIT}."
            )
        start, end = self._int(p, "startTime"), self._int(p, "endTime")
        base = self._closed_and_forming(sym)
        # Aggregate the base candles into `interval` buckets (no look-ahead: only what has happened).
        lo_t = (start // step * step) if start is not None else None
        buckets: dict[int, list[Candle]] = {}
        begin = 0 if lo_t is None else bisect_right([c.open_time_ms for c in base], lo_t - 1)
        for c in base[begin:]:
            t = c.open_time_ms // step * step
            if end is not None and t > end:
                break
            buckets.setdefault(t, []).append(c)
        m = self.markets[sym]
        rows = []
        for t in sorted(buckets):
            cs = buckets[t]
            agg, stats = _sum_candles(t, cs, [self._stats(m, c) for c in cs])
            rows.append(
                [
                    t,
                    repr(agg.open),
                    repr(agg.high),
                    repr(agg.low),
                    repr(agg.close),
                    repr(agg.volume),
                    t + step - 1,
                    repr(stats.quote_volume),
                    stats.trades,
                    _num(stats.taker_buy_volume),
                    _num(stats.taker_buy_quote_volume),
                    "0",
                ]
            )
        return rows[:limit] if start is not None else rows[-limit:]

    def _ticker24(self, sym: str) -> dict[str, Any]:
        last = self._last(sym)
        base = self._closed_and_forming(sym)
        day = [c for c in base if c.open_time_ms >= self.now_ms - 86_400_000]  # [openTime, now]
        open_p = Decimal(repr(day[0].open)) if day else last
        vol = sum(c.volume for c in day)
        qvol = sum(c.quote_volume or c.volume * c.close for c in day)
        return {
            "symbol": sym,
            "priceChange": _s(last - open_p),
            "priceChangePercent": _s(((last - open_p) / open_p * 100).quantize(Decimal("0.001"))),
            "weightedAvgPrice": repr(qvol / vol) if vol else _s(last),
            "lastPrice": _s(last),
            "lastQty": "0",
            "openPrice": _s(open_p),
            "highPrice": repr(max((c.high for c in day), default=float(last))),
            "lowPrice": repr(min((c.low for c in day), default=float(last))),
            "volume": repr(vol),
            "quoteVolume": repr(qvol),
            "openTime": self.now_ms - 86_400_000,
            "closeTime": self.now_ms,
            "firstId": 0,
            "lastId": 0,
            "count": sum(c.trades for c in day),
        }

    def _book(self, sym: str) -> tuple[Decimal, Decimal]:
        last = self._last(sym)
        return last, last + self.engine.spec(sym).rules.tick_size

    def _book_rest(self, sym: str) -> dict[str, Any]:
        bid, ask = self._book(sym)
        return {
            "symbol": sym,
            "bidPrice": _s(bid),
            "bidQty": _s(BOOK_QTY),
            "askPrice": _s(ask),
            "askQty": _s(BOOK_QTY),
            "time": self.now_ms,
        }

    def _price_row(self, sym: str) -> dict[str, Any]:
        return {"symbol": sym, "price": _s(self._last(sym)), "time": self.now_ms}

    def _premium(self, sym: str) -> dict[str, Any]:
        mark = self.engine.mark_price(sym) or self._last(sym)
        nxt = self._next_funding[sym]
        return {
            "symbol": sym,
            "markPrice": _s(mark),
            "indexPrice": _s(mark),
            "estimatedSettlePrice": _s(mark),
            "lastFundingRate": _s(self._funding_rate_at(sym, nxt)),
            "interestRate": "0.00010000",
            "nextFundingTime": nxt,
            "time": self.now_ms,
        }

    def _r_depth(self, p: dict[str, str]) -> Any:
        """A synthetic book around the last price: `limit` levels a tick apart, `BOOK_QTY` each."""
        sym = self._symbol(p)
        limit = self._int(p, "limit") or DEPTH_DEFAULT_LIMIT
        if limit not in DEPTH_LIMITS:
            raise Rejection(
                -1130, f"Invalid data sent for a parameter: limit={limit}; expected one of {DEPTH_LIMITS}."
            )
        bid, ask = self._book(sym)
        tick = self.engine.spec(sym).rules.tick_size
        bids = [[_s(bid - i * tick), _s(BOOK_QTY)] for i in range(limit) if bid - i * tick > 0]
        asks = [[_s(ask + i * tick), _s(BOOK_QTY)] for i in range(limit)]
        return {"lastUpdateId": self.now_ms, "E": self.now_ms, "T": self.now_ms, "bids": bids, "asks": asks}

    def _funding_rows(self, sym: str) -> list[tuple[int, Decimal, Decimal]]:
        m = self.markets[sym]
        if m.funding_times:
            mark = self.engine.mark_price(sym) or ZERO
            applied = {t: mk for t, _, mk in m.funding_paid}
            return [
                (t, r, applied.get(t, mark))
                for t, r in zip(m.funding_times, m.funding_rates)
                if t <= self.now_ms
            ]
        return list(m.funding_paid)

    def _r_funding_rate(self, p: dict[str, str]) -> Any:
        limit = self._int(p, "limit") or FUNDING_HISTORY_DEFAULT_LIMIT
        if not 1 <= limit <= FUNDING_HISTORY_MAX_LIMIT:
            raise Rejection(
                -1130,
                f"Invalid data sent for a parameter: limit={limit}; expected 1..{FUNDING_HISTORY_MAX_LIMIT}.",
            )
        start, end = self._int(p, "startTime"), self._int(p, "endTime")
        syms = [self._symbol(p)] if "symbol" in p else list(self.markets)
        rows = sorted(
            (t, sym, r, mk)
            for sym in syms
            for t, r, mk in self._funding_rows(sym)
            if (start is None or t >= start) and (end is None or t <= end)
        )
        if start is None and end is None:
            rows = rows[-FUNDING_HISTORY_NO_TIMES:]
        picked = rows[:limit] if start is not None else rows[-limit:]
        return [
            {"symbol": sym, "fundingTime": t, "fundingRate": _s(r), "markPrice": _s(mk)}
            for t, sym, r, mk in picked
        ]

    def _r_funding_info(self, p: dict[str, str]) -> Any:
        """Only symbols whose recorded funding interval differs from the default 8 h."""
        out = []
        for sym, m in self.markets.items():
            times = m.funding_times
            if len(times) < 2:
                continue
            hours = (times[-1] - times[-2]) // 3_600_000
            if hours and hours * 3_600_000 != FUNDING_INTERVAL_MS:
                out.append(
                    {
                        "symbol": sym,
                        "adjustedFundingRateCap": "0.02000000",
                        "adjustedFundingRateFloor": "-0.02000000",
                        "fundingIntervalHours": int(hours),
                        "disclaimer": False,
                    }
                )
        return out

    # ------------------------------------------------------------ listenKey

    def _r_listen_key_post(self, p: dict[str, str]) -> Any:
        if self._listen_key is None:
            self._listen_key_serial += 1
            seed = f"sim-listen-key-{self._listen_key_serial}".encode()
            self._listen_key = hashlib.sha256(seed).hexdigest()[:LISTEN_KEY_LEN]
        self._listen_key_expires = self.now_ms + LISTEN_KEY_TTL_MS
        return {"listenKey": self._listen_key}

    def _r_listen_key_put(self, p: dict[str, str]) -> Any:
        if self._listen_key is None:
            raise Rejection(-1125, "This listenKey does not exist.")
        self._listen_key_expires = self.now_ms + LISTEN_KEY_TTL_MS
        return {}

    def _r_listen_key_delete(self, p: dict[str, str]) -> Any:
        self._listen_key = None
        return {}

    @property
    def listen_key(self) -> str | None:
        return self._listen_key

    def listen_key_valid(self, key: str) -> bool:
        return key == self._listen_key

    def expire_listen_key(self) -> None:
        """The listenKey expires now: `listenKeyExpired` is pushed, then nothing more on that key."""
        key = self._listen_key
        if key is None:
            return
        self._emit_user({"e": "listenKeyExpired", "E": self.now_ms, "listenKey": key})
        self._listen_key = None

    # ------------------------------------------------------------ orders

    def _placement(self, fn: Callable[[], tuple[int, Any]]) -> Any:
        lost = self.faults.take_lost_response()
        if lost is None:
            return fn()[1]
        with contextlib.suppress(Rejection):
            fn()
        if lost == "503":
            raise Rejection(-1000, UNKNOWN_503_MSG, status=503)
        raise ResponseLost("order executed, response lost (fault injection)")

    def _r_new_order(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p)
        self._check_position_side(p)
        type_ = self._req(p, "type")
        if type_ in ALGO_TYPES:
            raise Rejection(
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            )
        side = self._req(p, "side")
        qty = self._dec(p, "quantity")
        if qty is None:
            self._req(p, "quantity")
        assert qty is not None
        if type_ == "LIMIT":
            self._req(p, "timeInForce")
            self._req(p, "price")
        req = NewOrder(
            symbol=sym,
            side=side,
            type=type_,
            quantity=qty,
            price=self._dec(p, "price"),
            time_in_force=p.get("timeInForce"),
            reduce_only=self._bool(p, "reduceOnly"),
            client_order_id=p.get("newClientOrderId"),
        )
        resp_type = p.get("newOrderRespType", "ACK")
        if resp_type not in ("ACK", "RESULT"):
            raise Rejection(-1116, f"Invalid newOrderRespType {resp_type!r}; expected ACK or RESULT.")

        def place() -> tuple[int, Any]:
            order, events = self.engine.place_order(req)
            self._publish(events)
            if resp_type == "RESULT":  # the final state (MARKET, IOC, FOK); no avgPrice since 2026-07
                return 0, _order_json(order, full=False)
            # ACK: the order as accepted, before any match; its fills arrive on the user stream.
            return 0, {**_order_json(order, full=False), "status": "NEW", "executedQty": "0", "cumQty": "0"}

        return self._placement(place)

    def _find(self, p: dict[str, str]) -> SimOrder | None:
        sym = self._symbol(p)
        oid = self._int(p, "orderId")
        cid = p.get("origClientOrderId")
        if oid is None and not cid:
            raise Rejection(-1102, "Either orderId or origClientOrderId must be sent.")
        return self.engine.find_order(sym, order_id=oid, client_id=cid)

    def _r_query_order(self, p: dict[str, str]) -> Any:
        order = self._find(p)
        if order is None:
            raise Rejection(-2013, "Order does not exist.")
        return _order_json(order, full=True)

    def _r_cancel_order(self, p: dict[str, str]) -> Any:
        order = self._find(p)
        if order is None or not order.is_open:
            raise Rejection(-2011, "Unknown order sent.")
        _, events = self.engine.cancel_order(order.symbol, order_id=order.order_id)
        self._publish(events)
        return _order_json(order, full=False)

    def _r_open_orders(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p) if "symbol" in p else None
        return [_order_json(o, full=True) for o in self.engine.open_orders(sym)]

    def _r_open_order(self, p: dict[str, str]) -> Any:
        order = self._find(p)
        if order is None or not order.is_open:
            raise Rejection(-2013, "Order does not exist.")
        return _order_json(order, full=True)

    def _r_all_orders(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p) if "symbol" in p else None
        from_id = self._int(p, "orderId")
        start, end = self._int(p, "startTime"), self._int(p, "endTime")
        limit = self._int(p, "limit") or ALL_ORDERS_DEFAULT_LIMIT
        if not 1 <= limit <= ALL_ORDERS_MAX_LIMIT:
            raise Rejection(
                -1130,
                f"Invalid data sent for a parameter: limit={limit}; expected 1..{ALL_ORDERS_MAX_LIMIT}.",
            )
        rows = [
            o
            for o in sorted(self.engine.orders.values(), key=lambda o: o.order_id)
            if (sym is None or o.symbol == sym)
            and (from_id is None or o.order_id >= from_id)
            and (start is None or o.time >= start)
            and (end is None or o.time <= end)
        ]
        picked = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [_order_json(o, full=True) for o in picked]

    def _r_batch_orders(self, p: dict[str, str]) -> Any:
        """Up to 5 orders; the answer lists, in request order, each order or its `{code, msg}`."""
        raw = self._req(p, "batchOrders")
        try:
            items = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise Rejection(-1130, "Data sent for parameter 'batchOrders' is not valid.") from None
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise Rejection(-1130, "Data sent for parameter 'batchOrders' is not valid.")
        if len(items) > BATCH_MAX_ORDERS:
            raise Rejection(
                -1130,
                f"Data sent for parameter 'batchOrders' is not valid: at most {BATCH_MAX_ORDERS} orders.",
            )
        out: list[Any] = []
        for item in items:
            one = {str(k): _param_text(v) for k, v in item.items()}
            try:
                out.append(self._r_new_order(one))
            except Rejection as rej:
                out.append({"code": rej.code, "msg": rej.msg})
        return out

    def _r_modify_order(self, p: dict[str, str]) -> Any:
        """Modify a resting LIMIT order's price and quantity: same orderId, re-queued (AMENDMENT)."""
        order = self._find(p)
        if order is None or not order.is_open:
            raise Rejection(-2013, "Order does not exist.")
        if order.type != "LIMIT":
            raise Rejection(-4076, "Only limit orders can be modified.")
        side = self._req(p, "side")
        if side != order.side:
            raise Rejection(-4077, "Side does not match the original order.")
        qty = self._dec(p, "quantity")
        price = self._dec(p, "price")
        if qty is None or price is None:
            self._req(p, "quantity")
            self._req(p, "price")
        assert qty is not None
        assert price is not None
        if qty <= order.executed_qty:
            raise Rejection(-4013, "Quantity must be greater than the executed quantity.")
        if qty == order.orig_qty and price == order.price:
            raise Rejection(-5027, "No need to modify the order.")
        spec = self.engine.spec(order.symbol)
        self.engine._check_price(spec, price, "price")
        self.engine._check_qty(spec, qty, market=False)
        order.price = price
        order.orig_qty = qty
        order.update_time = self.now_ms
        events: list[EngineEvent] = [
            OrderEvent(order=msgspec.structs.replace(order), execution="AMENDMENT", time=self.now_ms)
        ]
        # Re-queued at the new price: matched against the current price like any resting order.
        events += self.engine.on_price(order.symbol, self._last(order.symbol))
        self._publish(events)
        return _order_json(order, full=False)

    def _r_cancel_all(self, p: dict[str, str]) -> Any:
        self._publish(self.engine.cancel_all_orders(self._symbol(p)))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _r_new_algo(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p)
        self._check_position_side(p)
        algo_type = self._req(p, "algoType")
        if algo_type != "CONDITIONAL":
            raise Rejection(-1116, "Invalid algoType.")
        req = NewAlgoOrder(
            symbol=sym,
            side=self._req(p, "side"),
            type=self._req(p, "type"),
            quantity=self._dec(p, "quantity"),
            trigger_price=self._dec(p, "triggerPrice"),
            price=self._dec(p, "price"),
            working_type=p.get("workingType", "CONTRACT_PRICE"),
            time_in_force=p.get("timeInForce", "GTC"),
            close_position=self._bool(p, "closePosition"),
            reduce_only=self._bool(p, "reduceOnly"),
            price_protect=self._bool(p, "priceProtect"),
            activate_price=self._dec(p, "activatePrice"),
            callback_rate=self._dec(p, "callbackRate"),
            client_algo_id=p.get("clientAlgoId"),
        )

        def place() -> tuple[int, Any]:
            algo, events = self.engine.place_algo(req)
            self._publish(events)
            return 0, _algo_json(algo, self.engine)

        return self._placement(place)

    def _find_algo(self, p: dict[str, str]) -> SimAlgoOrder | None:
        aid = self._int(p, "algoId")
        cid = p.get("clientAlgoId")
        if aid is None and not cid:
            raise Rejection(-1102, "Either algoId or clientAlgoId must be sent.")
        return self.engine.find_algo(algo_id=aid, client_id=cid)

    def _r_query_algo(self, p: dict[str, str]) -> Any:
        algo = self._find_algo(p)
        if algo is None:
            raise Rejection(-2013, "Order does not exist.")
        return _algo_json(algo, self.engine)

    def _r_cancel_algo(self, p: dict[str, str]) -> Any:
        algo = self._find_algo(p)
        if algo is None or not algo.is_open:
            raise Rejection(-2011, "Unknown order sent.")
        _, events = self.engine.cancel_algo(algo_id=algo.algo_id)
        self._publish(events)
        return {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"}

    def _r_open_algos(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p) if "symbol" in p else None
        return [_algo_json(a, self.engine) for a in self.engine.open_algos(sym)]

    def _r_all_algos(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p)
        from_id = self._int(p, "algoId")
        start, end = self._int(p, "startTime"), self._int(p, "endTime")
        limit = self._int(p, "limit") or ALL_ORDERS_DEFAULT_LIMIT
        rows = [
            a
            for a in sorted(self.engine.algos.values(), key=lambda a: a.algo_id)
            if a.symbol == sym
            and (from_id is None or a.algo_id >= from_id)
            and (start is None or a.create_time >= start)
            and (end is None or a.create_time <= end)
        ]
        picked = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [_algo_json(a, self.engine) for a in picked]

    def _r_cancel_all_algos(self, p: dict[str, str]) -> Any:
        self._publish(self.engine.cancel_all_algos(self._symbol(p)))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    # ------------------------------------------------------------ account

    def _r_leverage(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p)
        lev = self._int(p, "leverage")
        if lev is None:
            self._req(p, "leverage")
        assert lev is not None
        self.engine.set_leverage(sym, lev)
        return {"leverage": lev, "maxNotionalValue": _s(self._max_notional(sym)), "symbol": sym}

    def _r_margin_type(self, p: dict[str, str]) -> Any:
        """Binance's rules: -4046 unchanged, -4047 open orders, -4048 a position, -4168 isolated under
        Multi-Assets mode; success answers `{"code":200,"msg":"success"}`."""
        sym = self._symbol(p)
        wanted = self._req(p, "marginType").upper()
        if wanted not in ("ISOLATED", "CROSSED"):
            raise Rejection(-1116, "Invalid marginType.")
        if self.engine.account.margin_type(sym) == wanted:
            raise Rejection(-4046, "No need to change margin type.")
        if self.engine.open_orders(sym) or self.engine.open_algos(sym):
            raise Rejection(-4047, "Margin type cannot be changed if there exists open orders.")
        if self.engine.account.position(sym).amount != 0:
            raise Rejection(-4048, "Margin type cannot be changed if there exists position.")
        if wanted == "ISOLATED" and self.multi_assets:
            raise Rejection(-4168, "Unable to adjust to isolated-margin mode under the Multi-Assets mode.")
        self.engine.account.set_margin_type(sym, wanted)
        return {"code": 200, "msg": "success"}

    def _margin_type_of(self, sym: str) -> str:
        return self.engine.account.margin_type(sym)

    def _r_multi_assets(self, p: dict[str, str]) -> Any:
        wanted = self._bool(p, "multiAssetsMargin")
        if wanted == self.multi_assets:
            raise Rejection(-4171, "Adjusted Multi-Assets mode is same as current setting.")
        if wanted and any(self._margin_type_of(s) == "ISOLATED" for s in self.markets):
            raise Rejection(
                -4167,
                "Unable to adjust to Multi-Assets mode with symbols of USDⓈ-M Futures under isolated-margin mode.",
            )
        self.multi_assets = wanted
        return {"code": 200, "msg": "success"}

    def _r_position_mode(self, p: dict[str, str]) -> Any:
        wanted = self._bool(p, "dualSidePosition")
        if wanted == self.hedge_mode:
            raise Rejection(-4059, "No need to change position side.")
        if self.engine.open_orders() or self.engine.open_algos():
            raise Rejection(-4067, "Position side cannot be changed if there exists open orders.")
        if any(pos.amount != 0 for pos in self.engine.account.positions().values()):
            raise Rejection(-4068, "Position side cannot be changed if there exists position.")
        if wanted:
            raise Rejection(
                -4067, "Position side cannot be changed: the sim exchange supports one-way mode only."
            )
        self.hedge_mode = wanted
        return {"code": 200, "msg": "success"}

    def _position_row(self, sym: str) -> dict[str, Any]:
        acc = self.engine.account
        pos = acc.position(sym)
        mark = self.engine.mark_price(sym) or ZERO
        return {
            "symbol": sym,
            "positionAmt": _s(pos.amount),
            "entryPrice": _s(pos.entry_price),
            "breakEvenPrice": _s(pos.entry_price),
            "markPrice": _s(mark),
            "unRealizedProfit": _s(pos.unrealized(mark)),
            "liquidationPrice": "0",
            "leverage": str(acc.leverage(sym)),
            "maxNotionalValue": _s(self._max_notional(sym)),
            "marginType": "isolated" if self._margin_type_of(sym) == "ISOLATED" else "cross",
            "isolatedMargin": _s(pos.isolated_margin + pos.unrealized(mark)),
            "isAutoAddMargin": "false",
            "positionSide": "BOTH",
            "notional": _s(pos.amount * mark),
            "isolatedWallet": _s(pos.isolated_margin),
            "updateTime": pos.update_time,
        }

    def _r_position_risk(self, p: dict[str, str]) -> Any:
        if "symbol" in p:
            return [self._position_row(self._symbol(p))]
        return [self._position_row(s) for s in self.markets]

    def _totals(self) -> dict[str, str]:
        acc = self.engine.account
        upnl = sum(
            (pos.unrealized(self.engine.mark_price(s) or ZERO) for s, pos in acc.positions().items()), ZERO
        )
        avail = self.engine.available_balance()
        return {
            "totalWalletBalance": _s(acc.wallet_balance),
            "totalUnrealizedProfit": _s(upnl),
            "totalMarginBalance": _s(acc.wallet_balance + upnl),
            "availableBalance": _s(avail),
            "totalInitialMargin": _s(acc.isolated_margin_total()),
            "totalMaintMargin": "0",
            "maxWithdrawAmount": _s(avail),
        }

    def _balance_rows(self) -> Any:
        t = self._totals()
        return [
            {
                "accountAlias": "SimFutures",
                "asset": QUOTE_ASSET,
                "balance": t["totalWalletBalance"],
                "crossWalletBalance": t["totalWalletBalance"],
                "crossUnPnl": "0",
                "availableBalance": t["availableBalance"],
                "maxWithdrawAmount": t["maxWithdrawAmount"],
                "marginAvailable": True,
                "updateTime": self.now_ms,
            }
        ]

    def _r_position_risk_v3(self, p: dict[str, str]) -> Any:
        """v3: only symbols with a position or open orders; no leverage and no marginType."""
        syms = [self._symbol(p)] if "symbol" in p else list(self.markets)
        return [self._position_row_v3(s) for s in syms if self._active(s)]

    def _active(self, sym: str) -> bool:
        return bool(
            self.engine.account.position(sym).amount
            or self.engine.open_orders(sym)
            or self.engine.open_algos(sym)
        )

    def _position_row_v3(self, sym: str) -> dict[str, Any]:
        pos = self.engine.account.position(sym)
        v2 = self._position_row(sym)
        mark = self.engine.mark_price(sym) or ZERO
        notional = abs(pos.amount * mark)
        return {
            "symbol": sym,
            "positionSide": "BOTH",
            "positionAmt": v2["positionAmt"],
            "entryPrice": v2["entryPrice"],
            "breakEvenPrice": v2["breakEvenPrice"],
            "markPrice": v2["markPrice"],
            "unRealizedProfit": v2["unRealizedProfit"],
            "liquidationPrice": v2["liquidationPrice"],
            "isolatedMargin": v2["isolatedMargin"],
            "notional": v2["notional"],
            "marginAsset": QUOTE_ASSET,
            "isolatedWallet": v2["isolatedWallet"],
            "initialMargin": _s(pos.isolated_margin),
            "maintMargin": _s(notional * self._maint_ratio(sym, notional)),
            "positionInitialMargin": _s(pos.isolated_margin),
            "openOrderInitialMargin": "0",
            "adl": 0,
            "bidNotional": "0",
            "askNotional": "0",
            "updateTime": pos.update_time,
        }

    def _r_account(self, p: dict[str, str], *, all_symbols: bool) -> Any:
        """v2: `positions[]` lists every symbol (flat ones too); v3: only active ones, fewer fields."""
        t = self._totals()
        positions = []
        for sym in self.markets:
            if not all_symbols and not self._active(sym):
                continue
            pos = self.engine.account.position(sym)
            row = self._position_row(sym)
            entry: dict[str, Any] = {
                "symbol": sym,
                "positionSide": "BOTH",
                "positionAmt": row["positionAmt"],
                "unrealizedProfit": row["unRealizedProfit"],
                "isolatedMargin": row["isolatedMargin"],
                "notional": row["notional"],
                "isolatedWallet": row["isolatedWallet"],
                "initialMargin": _s(pos.isolated_margin),
                "maintMargin": "0",
                "updateTime": pos.update_time,
            }
            if all_symbols:
                entry.update(
                    positionInitialMargin=_s(pos.isolated_margin),
                    openOrderInitialMargin="0",
                    leverage=row["leverage"],
                    isolated=self._margin_type_of(sym) == "ISOLATED",
                    entryPrice=row["entryPrice"],
                    breakEvenPrice=row["breakEvenPrice"],
                    maxNotional=row["maxNotionalValue"],
                    bidNotional="0",
                    askNotional="0",
                )
            positions.append(entry)
        return {
            **t,
            "feeTier": 0,
            "feeBurn": False,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": bool(self.api_restrictions.get("enableWithdrawals", False)),
            "multiAssetsMargin": self.multi_assets,
            "tradeGroupId": -1,
            "totalPositionInitialMargin": t["totalInitialMargin"],
            "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": t["totalWalletBalance"],
            "totalCrossUnPnl": "0",
            "assets": [
                {
                    "asset": QUOTE_ASSET,
                    "walletBalance": t["totalWalletBalance"],
                    "unrealizedProfit": t["totalUnrealizedProfit"],
                    "marginBalance": t["totalMarginBalance"],
                    "maintMargin": "0",
                    "initialMargin": t["totalInitialMargin"],
                    "positionInitialMargin": t["totalInitialMargin"],
                    "openOrderInitialMargin": "0",
                    "crossWalletBalance": t["totalWalletBalance"],
                    "crossUnPnl": "0",
                    "availableBalance": t["availableBalance"],
                    "maxWithdrawAmount": t["maxWithdrawAmount"],
                    "marginAvailable": True,
                    "updateTime": self.now_ms,
                }
            ],
            "positions": positions,
        }

    # ------------------------------------------------------------ account configuration reads

    def _brackets(self, sym: str) -> list[dict[str, Any]]:
        max_lev = self.engine.spec(sym).max_leverage
        rows: list[dict[str, Any]] = []
        floor, cum, prev_ratio = 0, Decimal(0), Decimal(0)
        table = [row for row in _BRACKET_TABLE if row[0] <= max_lev]
        for i, (lev, cap, ratio_s) in enumerate(table, start=1):
            ratio = Decimal(ratio_s)
            cum += floor * (ratio - prev_ratio)
            rows.append(
                {
                    "bracket": i,
                    "initialLeverage": max_lev if i == 1 else lev,
                    "notionalCap": cap,
                    "notionalFloor": floor,
                    "maintMarginRatio": float(ratio),
                    "cum": float(cum),
                }
            )
            floor, prev_ratio = cap, ratio
        return rows

    def _max_notional(self, sym: str) -> Decimal:
        lev = self.engine.account.leverage(sym)
        caps = [Decimal(b["notionalCap"]) for b in self._brackets(sym) if b["initialLeverage"] >= lev]
        return max(caps, default=Decimal(_BRACKET_TABLE[0][1]))

    def _maint_ratio(self, sym: str, notional: Decimal) -> Decimal:
        for b in self._brackets(sym):
            if notional <= b["notionalCap"]:
                return Decimal(repr(b["maintMarginRatio"]))
        return Decimal(_BRACKET_TABLE[-1][2])

    def _r_leverage_bracket(self, p: dict[str, str]) -> Any:
        if "symbol" in p:
            sym = self._symbol(p)
            return {"symbol": sym, "notionalCoef": 1.0, "brackets": self._brackets(sym)}
        return [{"symbol": s, "notionalCoef": 1.0, "brackets": self._brackets(s)} for s in self.markets]

    def _r_commission_rate(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p)
        cfg = self._execution
        return {
            "symbol": sym,
            "makerCommissionRate": _s(Decimal(repr(cfg.maker_fee_pct))),
            "takerCommissionRate": _s(Decimal(repr(cfg.taker_fee_pct))),
            "rpiCommissionRate": "0",
        }

    def _r_symbol_config(self, p: dict[str, str]) -> Any:
        syms = [self._symbol(p)] if "symbol" in p else list(self.markets)
        return [
            {
                "symbol": s,
                "marginType": self._margin_type_of(s),
                "isAutoAddMargin": False,
                "leverage": self.engine.account.leverage(s),
                "maxNotionalValue": _s(self._max_notional(s)),
            }
            for s in syms
        ]

    def _r_account_config(self, p: dict[str, str]) -> Any:
        return {
            "feeTier": 0,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": bool(self.api_restrictions.get("enableWithdrawals", False)),
            "dualSidePosition": self.hedge_mode,
            "updateTime": 0,
            "multiAssetsMargin": self.multi_assets,
            "tradeGroupId": -1,
        }

    def _r_income(self, p: dict[str, str]) -> Any:
        kind = p.get("incomeType")
        sym = p.get("symbol")
        start, end = self._int(p, "startTime"), self._int(p, "endTime")
        limit = self._int(p, "limit") or 100
        rows = [
            r
            for r in self.engine.account.income
            if (kind is None or r.income_type == kind)
            and (sym is None or r.symbol == sym)
            and (start is None or r.time >= start)
            and (end is None or r.time <= end)
        ]
        return [
            {
                "symbol": r.symbol,
                "incomeType": r.income_type,
                "income": _s(r.income),
                "asset": QUOTE_ASSET,
                "info": r.income_type,
                "time": r.time,
                "tranId": r.tran_id,
                "tradeId": r.trade_id,
            }
            for r in rows[:limit]
        ]

    def _r_user_trades(self, p: dict[str, str]) -> Any:
        sym = self._symbol(p)
        oid = self._int(p, "orderId")
        return [
            {
                "buyer": t.side == "BUY",
                "commission": _s(t.commission),
                "commissionAsset": QUOTE_ASSET,
                "id": t.id,
                "maker": t.maker,
                "orderId": t.order_id,
                "price": _s(t.price),
                "qty": _s(t.qty),
                "quoteQty": _s(t.price * t.qty),
                "realizedPnl": _s(t.realized_pnl),
                "side": t.side,
                "positionSide": "BOTH",
                "symbol": t.symbol,
                "time": t.time,
            }
            for t in self.engine.account.trades
            if t.symbol == sym and (oid is None or t.order_id == oid)
        ]

    # ============================================================ streams

    def subscribe(self, sub: Subscriber) -> None:
        self.subscribers.append(sub)

    def drop_subscribers(self, route: str | None = None) -> int:
        """Close every WebSocket on `route` (all when None), as a network drop would; returns how many."""
        dropped = [s for s in self.subscribers if route is None or s.route == route]
        for sub in dropped:
            sub.send.close()
            self.subscribers.remove(sub)
        return len(dropped)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def _emit_user(self, payload: dict[str, Any]) -> None:
        """Record and deliver one user-data event; armed faults drop, duplicate or reorder it."""
        self.user_events.append(payload)
        key = self._listen_key
        if key is None or "private" in self.faults.silent_routes:
            return
        for out in self.faults.shape_user_event(payload):
            for sub in list(self.subscribers):
                if sub.route == "private" and key in sub.listen_keys:
                    sub.push(key, out)

    def _emit_market(self, route: str, stream: str, payload: dict[str, Any]) -> None:
        if route in self.faults.silent_routes:
            return
        for sub in list(self.subscribers):
            if sub.route == route and stream in sub.streams:
                sub.push(stream, payload)

    def _push_market(
        self,
        symbol: str,
        *,
        kline: tuple[Candle, bool] | None = None,
        mark: bool = True,
        mark_fast: bool = True,
        book: bool = True,
    ) -> None:
        """Publish `symbol`'s market streams now: the kline `(candle, closed)` of the base interval and
        of every larger interval it belongs to (only the streams somebody subscribed to), the mark
        price (`@markPrice`, `@markPrice@1s`) and the book ticker, each when asked."""
        low = symbol.lower()
        now = self.now_ms
        last = self.engine.last_price(symbol)
        if last is None:
            return
        if kline is not None:
            wanted = self._market_streams()
            c, closed = kline
            for name, step in INTERVAL_MS.items():
                stream = f"{low}@kline_{name}"
                if step % self._interval_ms or stream not in wanted:
                    continue
                agg, stats = self._aggregate(symbol, c, step)
                is_closed = closed and (c.open_time_ms + self._interval_ms) % step == 0
                self._emit_market(
                    "market", stream, _kline_payload(symbol, name, step, agg, stats, now, is_closed)
                )
        if mark or mark_fast:
            mark_price = self.engine.mark_price(symbol) or last
            nxt = self._next_funding[symbol]
            mark_payload = {
                "e": "markPriceUpdate",
                "E": now,
                "s": symbol,
                "p": _s(mark_price),
                "ap": _s(mark_price),
                "i": _s(mark_price),
                "P": _s(mark_price),
                "r": _s(self._funding_rate_at(symbol, nxt)),
                "T": nxt,
            }
            if mark:
                self._emit_market("market", f"{low}@markPrice", mark_payload)
            if mark_fast:
                self._emit_market("market", f"{low}@markPrice@1s", mark_payload)
        if book:
            bid, ask = self._book(symbol)
            self._emit_market(
                "public",
                f"{low}@bookTicker",
                {
                    "e": "bookTicker",
                    "u": now,
                    "E": now,
                    "T": now,
                    "s": symbol,
                    "b": _s(bid),
                    "B": _s(BOOK_QTY),
                    "a": _s(ask),
                    "A": _s(BOOK_QTY),
                },
            )

    def _market_streams(self) -> set[str]:
        """Every stream name some market WebSocket subscribed to."""
        out: set[str] = set()
        for sub in self.subscribers:
            if sub.route == "market":
                out |= sub.streams
        return out

    def _stats(self, m: _Market, c: Candle) -> CandleStats:
        """The volumes of base candle `c` of `m`: with a feed, the running ones of the forming candle, else
        derived where the recording lacks them (`feed.candle_stats`); without one, the candle's own."""
        if c is m.forming and m.forming_stats is not None:
            return m.forming_stats
        if self.feed is None:
            return CandleStats(
                quote_volume=c.quote_volume, trades=c.trades, taker_buy_volume=0.0, taker_buy_quote_volume=0.0
            )
        return candle_stats(c, self.feed)

    def _aggregate(self, symbol: str, c: Candle, step: int) -> tuple[Candle, CandleStats]:
        """The `step` candle that base candle `c` (the newest, closed or forming) belongs to."""
        m = self._market(symbol)
        if step == self._interval_ms:
            return c, self._stats(m, c)
        t0 = c.open_time_ms // step * step
        begin = bisect_left(m.history, t0, key=lambda x: x.open_time_ms)
        cs = [x for x in m.history[begin:] if x.open_time_ms < c.open_time_ms] + [c]
        return _sum_candles(t0, cs, [self._stats(m, x) for x in cs])

    def _publish(self, events: list[EngineEvent]) -> None:
        for ev in events:
            match ev:
                case OrderEvent():
                    self._emit_user(_order_update(ev))
                    if ev.execution == "TRADE":
                        o = ev.order
                        self._emit_user(
                            {
                                "e": "TRADE_LITE",
                                "E": ev.time,
                                "T": ev.time,
                                "s": o.symbol,
                                "q": _s(o.orig_qty),
                                "p": _s(o.price),
                                "m": ev.maker,
                                "c": o.client_order_id,
                                "S": o.side,
                                "L": _s(ev.last_price),
                                "l": _s(ev.last_qty),
                                "t": ev.trade_id,
                                "i": o.order_id,
                            }
                        )
                case AlgoEvent():
                    self._emit_user(_algo_update(ev))
                case AccountEvent():
                    self._emit_user(self._account_update(ev))
                    if ev.reason == "ORDER":
                        self._push_market(ev.symbols[0])

    def _account_update(self, ev: AccountEvent) -> dict[str, Any]:
        acc = self.engine.account
        positions = []
        for sym in ev.symbols:
            pos = acc.position(sym)
            mark = self.engine.mark_price(sym) or ZERO
            positions.append(
                {
                    "s": sym,
                    "pa": _s(pos.amount),
                    "ep": _s(pos.entry_price),
                    "bep": _s(pos.entry_price),
                    "cr": _s(pos.realized_pnl),
                    "up": _s(pos.unrealized(mark)),
                    "mt": "isolated",
                    "iw": _s(pos.isolated_margin),
                    "ps": "BOTH",
                }
            )
        a: dict[str, Any] = {
            "m": ev.reason,
            "B": [{"a": QUOTE_ASSET, "wb": _s(acc.wallet_balance), "cw": _s(acc.wallet_balance), "bc": "0"}],
            "P": positions,
        }
        if ev.funding_symbol:
            a["S"] = ev.funding_symbol
        return {"e": "ACCOUNT_UPDATE", "E": ev.time, "T": ev.time, "a": a}


def _sum_candles(t0: int, cs: list[Candle], stats: list[CandleStats]) -> tuple[Candle, CandleStats]:
    """Base candles `cs` (in order) as one candle opening at `t0`, and their summed volumes."""
    agg = Candle(
        open_time_ms=t0,
        open=cs[0].open,
        high=max(x.high for x in cs),
        low=min(x.low for x in cs),
        close=cs[-1].close,
        volume=sum(x.volume for x in cs),
        quote_volume=sum(s.quote_volume for s in stats),
        trades=sum(s.trades for s in stats),
    )
    total = CandleStats(
        quote_volume=agg.quote_volume,
        trades=agg.trades,
        taker_buy_volume=sum(s.taker_buy_volume for s in stats),
        taker_buy_quote_volume=sum(s.taker_buy_quote_volume for s in stats),
    )
    return agg, total


def _num(x: float) -> str:
    return "0" if x == 0 else repr(x)


def _kline_payload(
    symbol: str, name: str, step: int, c: Candle, stats: CandleStats, now: int, closed: bool
) -> dict[str, Any]:
    """A `<symbol>@kline_<name>` event as Binance sends it."""
    return {
        "e": "kline",
        "E": now,
        "s": symbol,
        "k": {
            "t": c.open_time_ms,
            "T": c.open_time_ms + step - 1,
            "s": symbol,
            "i": name,
            "f": 0,
            "L": 0,
            "o": repr(c.open),
            "c": repr(c.close),
            "h": repr(c.high),
            "l": repr(c.low),
            "v": repr(c.volume),
            "n": stats.trades,
            "x": closed,
            "q": repr(stats.quote_volume),
            "V": _num(stats.taker_buy_volume),
            "Q": _num(stats.taker_buy_quote_volume),
            "B": "0",
        },
    }


def _param_text(value: Any) -> str:
    """A batchOrders item value as a request parameter (JSON booleans as "true"/"false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _strip_signature(raw: bytes) -> bytes:
    """`raw` without its `signature=...` parameter (which Binance requires to be last)."""
    if raw.startswith(b"signature="):
        return b""
    i = raw.find(b"&signature=")
    return raw if i < 0 else raw[:i]


def _order_json(o: SimOrder, *, full: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_order_id,
        "price": _s(o.price),
        "origQty": _s(o.orig_qty),
        "executedQty": _s(o.executed_qty),
        "cumQty": _s(o.executed_qty),
        "timeInForce": o.time_in_force,
        "type": o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": o.close_position,
        "side": o.side,
        "positionSide": "BOTH",
        "stopPrice": _s(o.stop_price),
        "workingType": o.working_type,
        "priceProtect": o.price_protect,
        "origType": o.orig_type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE",
        "goodTillDate": 0,
        "updateTime": o.update_time,
    }
    if full:
        d.update(avgPrice=_s(o.avg_price), cumQuote=_s(o.cum_quote), time=o.time)
    return d


def _algo_json(a: SimAlgoOrder, engine: MatchingEngine) -> dict[str, Any]:
    child = engine.orders.get(a.actual_order_id) if a.actual_order_id else None
    return {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.order_type,
        "symbol": a.symbol,
        "side": a.side,
        "positionSide": "BOTH",
        "timeInForce": a.time_in_force,
        "quantity": _s(a.quantity),
        "algoStatus": a.status,
        "triggerPrice": _s(a.trigger_price),
        "price": _s(a.price),
        "icebergQuantity": None,
        "selfTradePreventionMode": "NONE",
        "workingType": a.working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only,
        "activatePrice": _s(a.activate_price) if a.activate_price is not None else "",
        "callbackRate": _s(a.callback_rate) if a.callback_rate is not None else "",
        "createTime": a.create_time,
        "updateTime": a.update_time,
        "triggerTime": a.trigger_time,
        "goodTillDate": 0,
        "actualOrderId": str(a.actual_order_id) if a.actual_order_id else "",
        "actualPrice": _s(child.avg_price) if child else "",
        "actualQty": _s(child.executed_qty) if child else "",
        "actualType": child.type if child else "",
    }


def _order_update(ev: OrderEvent) -> dict[str, Any]:
    o = ev.order
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": ev.time,
        "T": ev.time,
        "o": {
            "s": o.symbol,
            "c": o.client_order_id,
            "S": o.side,
            "o": o.orig_type,
            "f": o.time_in_force,
            "q": _s(o.orig_qty),
            "p": _s(o.price),
            "ap": _s(o.avg_price),
            "sp": _s(o.stop_price),
            "x": ev.execution,
            "X": o.status,
            "i": o.order_id,
            "l": _s(ev.last_qty),
            "z": _s(o.executed_qty),
            "L": _s(ev.last_price),
            "N": QUOTE_ASSET,
            "n": _s(ev.commission),
            "T": ev.time,
            "t": ev.trade_id,
            "b": "0",
            "a": "0",
            "m": ev.maker,
            "R": o.reduce_only,
            "wt": o.working_type,
            "ot": o.orig_type,
            "ps": "BOTH",
            "cp": o.close_position,
            "rp": _s(ev.realized_pnl),
            "pP": o.price_protect,
            "si": 0,
            "ss": 0,
            "V": "NONE",
            "pm": "NONE",
            "gtd": 0,
            "er": str(ev.expiry_reason),
        },
    }


def _algo_update(ev: AlgoEvent) -> dict[str, Any]:
    a = ev.algo
    return {
        "e": "ALGO_UPDATE",
        "T": ev.time,
        "E": ev.time,
        "o": {
            "caid": a.client_algo_id,
            "aid": a.algo_id,
            "at": "CONDITIONAL",
            "o": a.order_type,
            "s": a.symbol,
            "S": a.side,
            "ps": "BOTH",
            "f": a.time_in_force,
            "q": _s(a.quantity),
            "X": a.status,
            "ai": str(a.actual_order_id) if a.actual_order_id else "",
            "ap": _s(ev.avg_price),
            "aq": _s(ev.executed_qty),
            "act": ("MARKET" if a.order_type.endswith("_MARKET") else "LIMIT") if a.actual_order_id else "0",
            "tp": _s(a.trigger_price),
            "p": _s(a.price),
            "V": "NONE",
            "wt": a.working_type,
            "pm": "NONE",
            "cp": a.close_position,
            "pP": a.price_protect,
            "R": a.reduce_only,
            "tt": a.trigger_time,
            "gtd": 0,
            "rm": a.reject_reason,
        },
    }


def read_funding_csv(path: str | Path) -> list[tuple[int, Decimal]]:
    """Rows of a `shared/data/funding/<SYMBOL>.csv` file: (funding_time_ms, funding_rate)."""
    rows: list[tuple[int, Decimal]] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        try:
            rows.append((int(parts[0]), Decimal(parts[2])))
        except (IndexError, ValueError, InvalidOperation):
            raise ValueError(
                f"{path} line {lineno}: {line!r}; expected funding_time_ms,symbol,funding_rate,..."
            ) from None
    return rows

"""`SimExchange`: the one state machine behind every way of reaching the fake Binance USDT-M exchange.

This module owns the exchange's clock, its market data (recorded or scripted), the REST endpoint
semantics (authentication, parameters, Binance error codes and HTTP statuses), the listenKey life
cycle and the fan-out of market and user-data events to WebSocket subscribers. Matching and the
account live in the pure `matching` / `account` modules; transports (httpx.MockTransport, in-memory
WebSockets, the loopback HTTP/WS server) live in `server`. Everything is driven by the exchange
clock (`advance_to`, `step`), which only moves when told to, so tests are deterministic.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
from bisect import bisect_right
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import trio

from futures_actor.binance.sim.account import QUOTE_ASSET, Account
from futures_actor.binance.sim.faults import UNKNOWN_503_MSG, Faults
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
        self.rate = DEFAULT_FUNDING_RATE
        self.volume_24h = 0.0


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
    ) -> None:
        if base_interval not in INTERVAL_MS:
            raise ValueError(f"base_interval {base_interval!r}: expected one of {list(INTERVAL_MS)}")
        self._info = dict(exchange_info)
        self._api_key = api_key
        self._api_secret = api_secret.encode()
        self._interval = base_interval
        self._interval_ms = INTERVAL_MS[base_interval]
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
        self.now_ms = max(start_ms, self.engine.now_ms)
        self.engine.now_ms = self.now_ms
        self.faults = Faults()
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
        if m.history:
            self.engine.on_price(symbol, Decimal(repr(m.history[-1].close)))

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
                if t <= target and (t, 0) < best[:2]:
                    best = (t, 0, lambda m=m: self._replay_next(m))
            if m.forming is not None:
                t = m.forming.open_time_ms + self._interval_ms - 1
                if t <= target and (t, 1) < best[:2]:
                    best = (t, 1, lambda m=m: self._close_forming(m))
            t = self._next_funding[sym]
            if t <= target and (t, 2) < best[:2]:
                best = (t, 2, lambda sym=sym: self._fund(sym))
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
                wait = math.ceil((f.ban_until_ms - self.now_ms) / 1000)
                return (
                    418,
                    {
                        "code": -1003,
                        "msg": f"Way too many requests; IP(127.0.0.1) banned until {f.ban_until_ms}. "
                        "Please use the websocket for live updates to avoid bans.",
                    },
                    {"Retry-After": str(wait)},
                )
            f.ban_until_ms = None
        fault = f.take_http(req.path)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s is not None else {}
            body: dict[str, Any] = {
                "code": fault.code if fault.code is not None else -1001 if fault.status >= 500 else -1000,
                "msg": fault.msg,
            }
            return fault.status, body, headers
        route = self._routes.get((req.method, req.path))
        if route is None:
            known = any(p == req.path for _, p in self._routes)
            if known:
                return 405, {"code": -1000, "msg": f"Method {req.method} not allowed on {req.path}."}, {}
            return 404, {"code": -5000, "msg": f"Path {req.path}, Method {req.method} is invalid"}, {}
        security, fn = route
        try:
            if security != "NONE":
                self._authenticate(req, params, signed=security == "SIGNED")
            result = fn(params)
        except Rejection as rej:
            return rej.status, {"code": rej.code, "msg": rej.msg}, {}
        return 200, result, {}

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
            ("POST", "/fapi/v1/listenKey"): (k, self._r_listen_key_post),
            ("PUT", "/fapi/v1/listenKey"): (k, self._r_listen_key_put),
            ("DELETE", "/fapi/v1/listenKey"): (k, self._r_listen_key_delete),
            ("POST", "/fapi/v1/order"): (s, self._r_new_order),
            ("GET", "/fapi/v1/order"): (s, self._r_query_order),
            ("DELETE", "/fapi/v1/order"): (s, self._r_cancel_order),
            ("GET", "/fapi/v1/openOrders"): (s, self._r_open_orders),
            ("DELETE", "/fapi/v1/allOpenOrders"): (s, self._r_cancel_all),
            ("POST", "/fapi/v1/algoOrder"): (s, self._r_new_algo),
            ("GET", "/fapi/v1/algoOrder"): (s, self._r_query_algo),
            ("DELETE", "/fapi/v1/algoOrder"): (s, self._r_cancel_algo),
            ("GET", "/fapi/v1/openAlgoOrders"): (s, self._r_open_algos),
            ("DELETE", "/fapi/v1/algoOpenOrders"): (s, self._r_cancel_all_algos),
            ("POST", "/fapi/v1/leverage"): (s, self._r_leverage),
            ("POST", "/fapi/v1/marginType"): (s, self._r_margin_type),
            ("GET", "/fapi/v1/positionSide/dual"): (s, lambda p: {"dualSidePosition": False}),
            ("POST", "/fapi/v1/positionSide/dual"): (s, self._r_position_mode),
            ("GET", "/fapi/v1/multiAssetsMargin"): (s, lambda p: {"multiAssetsMargin": self.multi_assets}),
            ("GET", "/fapi/v2/positionRisk"): (s, self._r_position_risk),
            ("GET", "/fapi/v3/positionRisk"): (s, self._r_position_risk),
            ("GET", "/fapi/v2/balance"): (s, lambda p: self._balance_rows()),
            ("GET", "/fapi/v3/balance"): (s, lambda p: self._balance_rows()),
            ("GET", "/fapi/v2/account"): (s, self._r_account),
            ("GET", "/fapi/v3/account"): (s, self._r_account),
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
        rows = []
        for t in sorted(buckets):
            cs = buckets[t]
            v = sum(c.volume for c in cs)
            rows.append(
                [
                    t,
                    repr(cs[0].open),
                    repr(max(c.high for c in cs)),
                    repr(min(c.low for c in cs)),
                    repr(cs[-1].close),
                    repr(v),
                    t + step - 1,
                    repr(sum(c.quote_volume for c in cs)),
                    sum(c.trades for c in cs),
                    "0",
                    "0",
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

        def place() -> tuple[int, Any]:
            order, events = self.engine.place_order(req)
            self._publish(events)
            return 0, _order_json(order, full=resp_type == "RESULT")

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
        return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": sym}

    def _r_margin_type(self, p: dict[str, str]) -> Any:
        self.engine.set_margin_type(self._symbol(p), self._req(p, "marginType"))
        return {"code": 200, "msg": "success"}

    def _r_position_mode(self, p: dict[str, str]) -> Any:
        if self._bool(p, "dualSidePosition"):
            raise Rejection(
                -4067, "Position side cannot be changed: the sim exchange supports one-way mode only."
            )
        raise Rejection(-4059, "No need to change position side.")

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
            "maxNotionalValue": "1000000",
            "marginType": "isolated",
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

    def _r_account(self, p: dict[str, str]) -> Any:
        t = self._totals()
        acc = self.engine.account
        positions = []
        for sym, pos in acc.positions().items():
            if pos.amount or self.engine.open_orders(sym):
                row = self._position_row(sym)
                positions.append(
                    {
                        "symbol": sym,
                        "positionSide": "BOTH",
                        "positionAmt": row["positionAmt"],
                        "unrealizedProfit": row["unRealizedProfit"],
                        "isolatedMargin": row["isolatedMargin"],
                        "notional": row["notional"],
                        "isolatedWallet": row["isolatedWallet"],
                        "entryPrice": row["entryPrice"],
                        "leverage": row["leverage"],
                        "isolated": True,
                        "initialMargin": _s(pos.isolated_margin),
                        "maintMargin": "0",
                        "updateTime": pos.update_time,
                    }
                )
        return {
            **t,
            "feeTier": 0,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": True,
            "multiAssetsMargin": self.multi_assets,
            "tradeGroupId": -1,
            "assets": [
                {
                    "asset": QUOTE_ASSET,
                    "walletBalance": t["totalWalletBalance"],
                    "unrealizedProfit": t["totalUnrealizedProfit"],
                    "marginBalance": t["totalMarginBalance"],
                    "availableBalance": t["availableBalance"],
                    "maxWithdrawAmount": t["maxWithdrawAmount"],
                    "updateTime": self.now_ms,
                }
            ],
            "positions": positions,
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
        self.user_events.append(payload)
        key = self._listen_key
        if key is None or "private" in self.faults.silent_routes:
            return
        for sub in list(self.subscribers):
            if sub.route == "private" and key in sub.listen_keys:
                sub.push(key, payload)

    def _emit_market(self, route: str, stream: str, payload: dict[str, Any]) -> None:
        if route in self.faults.silent_routes:
            return
        for sub in list(self.subscribers):
            if sub.route == route and stream in sub.streams:
                sub.push(stream, payload)

    def _push_market(self, symbol: str, *, kline: tuple[Candle, bool] | None = None) -> None:
        low = symbol.lower()
        now = self.now_ms
        last = self.engine.last_price(symbol)
        if last is None:
            return
        if kline is not None:
            c, closed = kline
            for name, step in INTERVAL_MS.items():
                if step % self._interval_ms:
                    continue
                if step == self._interval_ms:
                    agg = c
                else:
                    t0 = c.open_time_ms // step * step
                    cs = [x for x in self._closed_and_forming(symbol) if x.open_time_ms >= t0]
                    if not cs:
                        continue
                    agg = Candle(
                        open_time_ms=t0,
                        open=cs[0].open,
                        high=max(x.high for x in cs),
                        low=min(x.low for x in cs),
                        close=cs[-1].close,
                        volume=sum(x.volume for x in cs),
                    )
                is_closed = closed and (c.open_time_ms + self._interval_ms) % step == 0
                self._emit_market(
                    "market",
                    f"{low}@kline_{name}",
                    {
                        "e": "kline",
                        "E": now,
                        "s": symbol,
                        "k": {
                            "t": agg.open_time_ms,
                            "T": agg.open_time_ms + step - 1,
                            "s": symbol,
                            "i": name,
                            "f": 0,
                            "L": 0,
                            "o": repr(agg.open),
                            "c": repr(agg.close),
                            "h": repr(agg.high),
                            "l": repr(agg.low),
                            "v": repr(agg.volume),
                            "n": agg.trades,
                            "x": is_closed,
                            "q": repr(agg.quote_volume),
                            "V": "0",
                            "Q": "0",
                            "B": "0",
                        },
                    },
                )
        mark = self.engine.mark_price(symbol) or last
        nxt = self._next_funding[symbol]
        mark_payload = {
            "e": "markPriceUpdate",
            "E": now,
            "s": symbol,
            "p": _s(mark),
            "ap": _s(mark),
            "i": _s(mark),
            "P": _s(mark),
            "r": _s(self._funding_rate_at(symbol, nxt)),
            "T": nxt,
        }
        self._emit_market("market", f"{low}@markPrice", mark_payload)
        self._emit_market("market", f"{low}@markPrice@1s", mark_payload)
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

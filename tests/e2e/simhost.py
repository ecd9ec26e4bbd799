"""The fake Binance exchange on loopback, hosted in a thread of the test process (real clock).

The bot under test runs as a real subprocess (`python -m futures_actor --live`) against it. Hosting the
exchange here (instead of `futures-actor sim-exchange` in its own process) gives the test the same
`SimExchange` to inject faults into (`call`), while the bot only ever sees real sockets. Manual trades
"by hand on the account" go over the same REST API, signed like any client (`Account`).

Everything here is synthetic (no data beside the repository): `exchange_info` builds the listing, `random_walk`
the candles.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import trio

from futures_actor.binance.sim import SimExchange, load_exchange_info, serve_http, serve_ws
from futures_actor.core.config import default_config
from futures_actor.core.types import Candle

__all__ = ["API_KEY", "API_SECRET", "Account", "SimHost", "exchange_info", "random_walk"]

API_KEY = "e2e-sim-api-key-0123456789abcdef"
API_SECRET = "e2e-sim-api-secret-0123456789abcdef"
FIVE_MIN_MS = 300_000
HOUR_MS = 3_600_000
_TICK_S = 0.1
_UP_S = 20.0
T = TypeVar("T")


def _symbol(symbol: str, tick: str, step: str, min_notional: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": symbol.removesuffix("USDT"),
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 4,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "10000000", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "100000", "stepSize": step},
            {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "100000", "stepSize": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": min_notional},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


def exchange_info(specs: dict[str, tuple[str, str, str]]) -> dict[str, Any]:
    """A minimal exchangeInfo payload: symbol -> (tick size, step size, min notional)."""
    return {
        "timezone": "UTC",
        "serverTime": 0,
        "futuresType": "U_MARGINED",
        "rateLimits": [],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "0"}],
        "symbols": [_symbol(s, *v) for s, v in specs.items()],
    }


def random_walk(price: float, *, start_ms: int, bars: int, interval_ms: int, seed: int) -> list[Candle]:
    """Seeded random-walk candles (volatile enough for the strategies' ATR filters)."""
    rng = random.Random(seed)
    out: list[Candle] = []
    p = price
    for i in range(bars):
        o = p
        p = max(o * (1 + rng.gauss(0.0, 0.003)), price * 0.2)
        hi = max(o, p) * (1 + abs(rng.gauss(0.0, 0.001)))
        lo = min(o, p) * (1 - abs(rng.gauss(0.0, 0.001)))
        out.append(
            Candle(open_time_ms=start_ms + i * interval_ms, open=o, high=hi, low=lo, close=p, volume=1000.0)
        )
    return out


class SimHost:
    """A `SimExchange` served on 127.0.0.1 from a background thread; its clock follows real time."""

    def __init__(self, *, info: dict[str, Any], candles: dict[str, list[Candle]], start_ms: int) -> None:
        payload, specs = load_exchange_info(info, symbols=sorted(candles), synthesize={})
        self.ex = SimExchange(
            exchange_info=payload,
            specs=specs,
            execution=default_config().execution,
            api_key=API_KEY,
            api_secret=API_SECRET,
            start_ms=start_ms,
        )
        for symbol, rows in candles.items():
            self.ex.load_candles(symbol, rows)
        # The bot and the test's own polling share one IP here; the venue's weight limits (429, then
        # escalating 418 bans) are injected explicitly where a test wants them, never by the polling.
        self.ex.limits.enforced = False
        self._start_ms = start_ms
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.rest_url = ""
        self.ws_url = ""

    def __enter__(self) -> SimHost:
        self._thread = threading.Thread(target=self._run, name="sim-exchange", daemon=True)
        self._thread.start()
        if not self._ready.wait(_UP_S) or self._error is not None:
            raise RuntimeError(f"sim exchange did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._scope is not None:
            scope = self._scope
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(scope.cancel, trio_token=self._token)
        if self._thread is not None:
            self._thread.join(_UP_S)

    def _run(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                http_port = await nursery.start(
                    lambda task_status: serve_http(self.ex, port=0, task_status=task_status)
                )
                ws_port = await nursery.start(
                    lambda task_status: serve_ws(self.ex, port=0, task_status=task_status)
                )
                self.rest_url = f"http://127.0.0.1:{http_port}"
                self.ws_url = f"ws://127.0.0.1:{ws_port}"
                self._ready.set()
                t0 = trio.current_time()
                while True:
                    await trio.sleep(_TICK_S)
                    target = self._start_ms + int((trio.current_time() - t0) * 1000)
                    self.ex.advance_to(max(self.ex.now_ms, target))

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the exchange's thread (fault injection, inspection)."""
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)


class Account:
    """Signed REST access to the fake exchange, as an operator trading by hand would have."""

    def __init__(self, rest_url: str) -> None:
        self._http = httpx.Client(base_url=rest_url, timeout=10.0, headers={"X-MBX-APIKEY": API_KEY})

    def close(self) -> None:
        self._http.close()

    def _signed(self, method: str, path: str, **params: Any) -> Any:
        clock = self._http.get("/fapi/v1/time")
        if clock.status_code != 200:
            raise RuntimeError(f"GET /fapi/v1/time: HTTP {clock.status_code} {clock.text}")
        server = clock.json()["serverTime"]
        query = urlencode({**{k: str(v) for k, v in params.items()}, "timestamp": server, "recvWindow": 5000})
        signature = hmac.new(API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
        resp = self._http.request(method, f"{path}?{query}&signature={signature}")
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path} {params}: HTTP {resp.status_code} {resp.text}")
        return resp.json()

    def market(self, symbol: str, side: str, qty: Decimal, *, reduce_only: bool = False, cid: str) -> Any:
        params: dict[str, Any] = {"symbol": symbol, "side": side, "type": "MARKET", "quantity": qty}
        if reduce_only:
            params["reduceOnly"] = "true"
        return self._signed("POST", "/fapi/v1/order", newClientOrderId=cid, **params)

    def positions(self) -> dict[str, Decimal]:
        rows = self._signed("GET", "/fapi/v2/positionRisk")
        return {r["symbol"]: Decimal(r["positionAmt"]) for r in rows if Decimal(r["positionAmt"]) != 0}

    def open_orders(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._signed("GET", "/fapi/v1/openOrders")
        return rows

    def open_algo_orders(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._signed("GET", "/fapi/v1/openAlgoOrders")
        return rows

    def close_all(self, *, cid_prefix: str) -> None:
        for n, (symbol, amount) in enumerate(sorted(self.positions().items())):
            side = "SELL" if amount > 0 else "BUY"
            self.market(symbol, side, abs(amount), reduce_only=True, cid=f"{cid_prefix}{n}")

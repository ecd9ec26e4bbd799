"""The real `BinanceRestClient` against the fake exchange (`binance.sim`) under a mock clock: every REST
endpoint the client has, and every fault the sim can inject (latency, 5xx, 429, 418, -1021 bursts, an
order accepted but its response lost)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import stamina
import trio
import trio.testing

from futures_actor.binance.errors import (
    ApiError,
    IpBanned,
    ListenKeyExpired,
    OrderTypeNotSupported,
    ServerError,
    UnknownOrder,
)
from futures_actor.binance.models import ExchangeInfo, decode_payload, symbol_rules_from
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.sim import SimExchange, SymbolSpec, load_exchange_info, mock_transport
from futures_actor.core.config import BotConfig, ExchangeConfig
from futures_actor.core.secrets import Secret
from futures_actor.core.types import Candle
from futures_actor.data.klines_csv import read_klines_candles

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"  # bundled recorded data
EXCHANGE_INFO = SAMPLE / "exchangeInfo_mainnet_2024-10-02.json"
KLINES_5M = SAMPLE / "BTCUSDT-5m.csv.gz"
API_KEY = "vs-sim-key"
API_SECRET = "vs-sim-secret-0123456789"
FIVE_MIN_MS = 300_000
N_CANDLES = 600
FIRST_OPEN_MS = 1_735_603_200_000  # 2024-12-31 00:00 UTC, the first row of the recorded file
START_MS = FIRST_OPEN_MS + N_CANDLES * FIVE_MIN_MS  # the exchange opens just after the 600th close
CFG = ExchangeConfig()
D = Decimal


class TrioWallClock:
    """Wall time that follows trio's (mock) clock from `START_MS`, optionally skewed."""

    def __init__(self, skew_ms: int = 0) -> None:
        self.skew_ms = skew_ms

    def now_ms(self) -> int:
        return START_MS + self.skew_ms + int(trio.current_time() * 1000)


class FollowingTransport(httpx.AsyncBaseTransport):
    """The sim's `mock_transport`, with the exchange clock moved up to trio time before each request
    (so a ban, a Retry-After or a recvWindow is judged on the same time line as the client's)."""

    def __init__(self, ex: SimExchange) -> None:
        self._ex = ex
        self._inner = mock_transport(ex)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = START_MS + int(trio.current_time() * 1000)
        if target > self._ex.now_ms:
            self._ex.advance_to(target)
        return await self._inner.handle_async_request(request)


@pytest.fixture(scope="session")
def info_specs() -> tuple[dict[str, Any], dict[str, SymbolSpec]]:
    return load_exchange_info(EXCHANGE_INFO, symbols=["BTCUSDT", "ETHUSDT"])


@pytest.fixture(scope="session")
def candles() -> list[Candle]:
    rows = read_klines_candles(KLINES_5M, interval="5m", limit=N_CANDLES)
    assert rows[0].open_time_ms == FIRST_OPEN_MS
    assert rows[-1].open_time_ms == START_MS - FIVE_MIN_MS
    return rows


@pytest.fixture
def ex(info_specs: tuple[dict[str, Any], dict[str, SymbolSpec]], candles: list[Candle]) -> SimExchange:
    info, specs = info_specs
    exchange = SimExchange(
        exchange_info=info,
        specs=specs,
        execution=BotConfig().execution,
        api_key=API_KEY,
        api_secret=API_SECRET,
        start_ms=START_MS,
    )
    exchange.load_candles("BTCUSDT", candles)  # 600 recorded BTCUSDT candles, all closed
    exchange.set_price("ETHUSDT", "3000")
    return exchange


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(autouse=True)
def _stamina_no_waits() -> Iterator[None]:
    """No backoff sleeps, but the configured attempt counts (cap): waits seen are the limiter's."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


def make_client(
    ex: SimExchange, *, skew_ms: int = 0, on_ban: Any = None, cfg: ExchangeConfig = CFG
) -> BinanceRestClient:
    return BinanceRestClient(
        cfg=cfg,
        wall_clock=TrioWallClock(skew_ms),
        api_key=Secret(API_KEY),
        api_secret=Secret(API_SECRET),
        transport=FollowingTransport(ex),
        base_url="https://fapi.binance.com",
        on_ban=on_ban,
    )


def last_price(ex: SimExchange, symbol: str = "BTCUSDT") -> Decimal:
    price = ex.engine.last_price(symbol)
    assert price is not None
    return price


def below(ex: SimExchange, pct: int) -> Decimal:
    """A BTCUSDT price `pct`% under the last trade, on the 0.10 tick."""
    return (last_price(ex) * (100 - pct) / 100).quantize(D("0.1"))


def statuses(ex: SimExchange, method: str, path: str) -> list[int]:
    return [r.status for r in ex.requests if r.method == method and r.path == path]


async def place_limit(c: BinanceRestClient, ex: SimExchange, cid: str, *, pct: int = 10) -> Any:
    return await c.place_order(
        symbol="BTCUSDT",
        side="BUY",
        order_type="LIMIT",
        client_order_id=cid,
        quantity=D("0.010"),
        price=below(ex, pct),
        time_in_force="GTC",
    )


async def place_stop(c: BinanceRestClient, ex: SimExchange, cid: str, *, pct: int = 5) -> Any:
    return await c.place_algo_order(
        symbol="BTCUSDT",
        side="SELL",
        order_type="STOP_MARKET",
        client_algo_id=cid,
        trigger_price=below(ex, pct),
        quantity=D("0.010"),
        working_type="MARK_PRICE",
    )


class TestEndpoints:
    """Every REST endpoint of the client, served by the sim, decodes into its typed model."""

    async def test_server_time_and_offset(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The local clock is 2.5 s behind the exchange: sync measures +2500 ms and signed calls work."""
        async with make_client(ex, skew_ms=-2500) as c:
            assert await c.server_time() == ex.now_ms
            assert await c.sync_time() == 2500
            assert c.server_now_ms() == ex.now_ms
            assert (await c.balance())[0].asset == "USDT"

    async def test_exchange_info_rules_equal_the_recorded_payload(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The sim serves the recorded exchangeInfo; its rules equal those parsed from the file itself."""
        recorded: ExchangeInfo = decode_payload(
            ExchangeInfo, EXCHANGE_INFO.read_bytes(), endpoint="recorded file"
        )
        async with make_client(ex) as c:
            rules = await c.symbol_rules()
        assert {"BTCUSDT", "ETHUSDT"} <= set(rules)
        for sym in ("BTCUSDT", "ETHUSDT"):
            direct = symbol_rules_from(next(s for s in recorded.symbols if s.symbol == sym))
            assert rules[sym] == direct
        assert rules["BTCUSDT"].tick_size == D("0.10")
        assert rules["BTCUSDT"].step_size == D("0.001")

    async def test_klines_paged_over_a_span(
        self, ex: SimExchange, candles: list[Candle], autojump_clock: trio.testing.MockClock
    ) -> None:
        """600 recorded 5m candles come back in pages of 250 (3 requests), contiguous and exact;
        1h klines (a 4th request) are aggregated from them."""
        end = FIRST_OPEN_MS + (N_CANDLES - 1) * FIVE_MIN_MS
        async with make_client(ex) as c:
            got = await c.klines_range("BTCUSDT", "5m", start_ms=FIRST_OPEN_MS, end_ms=end, page_limit=250)
            hourly = await c.klines("BTCUSDT", "1h", start_ms=FIRST_OPEN_MS, limit=10)
        assert statuses(ex, "GET", "/fapi/v1/klines") == [200, 200, 200, 200]
        assert [k.open_time_ms for k in got] == [row.open_time_ms for row in candles]
        for k, row in zip(got, candles, strict=True):
            assert (float(k.open), float(k.high), float(k.low), float(k.close)) == (
                row.open,
                row.high,
                row.low,
                row.close,
            )
            assert k.close_time_ms == row.open_time_ms + FIVE_MIN_MS - 1
        assert len(hourly) == 10
        first_hour = candles[:12]
        assert hourly[0].open_time_ms == FIRST_OPEN_MS
        assert float(hourly[0].open) == first_hour[0].open
        assert float(hourly[0].high) == max(c.high for c in first_hour)
        assert float(hourly[0].low) == min(c.low for c in first_hour)
        assert float(hourly[0].close) == first_hour[-1].close

    async def test_tickers_book_and_premium_index(
        self, ex: SimExchange, candles: list[Candle], autojump_clock: trio.testing.MockClock
    ) -> None:
        last = last_price(ex)
        assert float(last) == candles[-1].close
        async with make_client(ex) as c:
            (one,) = await c.ticker_24h("BTCUSDT")
            every = await c.ticker_24h()
            (book,) = await c.book_ticker("BTCUSDT")
            books = await c.book_ticker()
            (prem,) = await c.premium_index("BTCUSDT")
            prems = await c.premium_index()
        assert one.last_price == last
        assert float(one.open_price) == candles[-288].open  # the last 24 h of 5m candles
        assert float(one.volume) == pytest.approx(sum(c.volume for c in candles[-288:]))
        assert {t.symbol for t in every} == {"BTCUSDT", "ETHUSDT"}
        assert (book.bid_price, book.ask_price) == (last, last + D("0.10"))
        assert {b.symbol for b in books} == {"BTCUSDT", "ETHUSDT"}
        assert prem.mark_price == last
        assert prem.next_funding_time == (START_MS // 28_800_000 + 1) * 28_800_000  # next 8 h boundary
        assert D(prem.last_funding_rate) == D("0.0001")
        assert {p.symbol for p in prems} == {"BTCUSDT", "ETHUSDT"}

    async def test_account_balance_positions_and_modes(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with make_client(ex) as c:
            acct = await c.account()
            (bal,) = await c.balance()
            rows = await c.position_risk()
            assert await c.position_mode() is False
            await c.set_position_mode(hedge=False)  # -4059 "No need to change" is success
            with pytest.raises(ApiError) as hedge:
                await c.set_position_mode(hedge=True)
            lev = await c.set_leverage("BTCUSDT", 3)
            (fresh,) = await c.position_risk("BTCUSDT")
            await c.set_margin_type("BTCUSDT", "ISOLATED")  # a fresh account is cross: changed
            await c.set_margin_type("BTCUSDT", "ISOLATED")  # already isolated: -4046 is success
            ex.multi_assets = True
            with pytest.raises(ApiError) as crossed:
                await c.set_margin_type("ETHUSDT", "ISOLATED")
            (btc,) = await c.position_risk("BTCUSDT")
        assert acct.total_wallet_balance == ex.wallet_balance()
        assert acct.assets[0].asset == "USDT"
        assert (bal.asset, bal.balance) == ("USDT", ex.wallet_balance())
        assert {r.symbol for r in rows} == {"BTCUSDT", "ETHUSDT"}
        assert all(r.position_amt == 0 for r in rows)
        assert hedge.value.code == -4067
        assert (lev.symbol, lev.leverage) == ("BTCUSDT", 3)
        assert btc.leverage == 3
        assert (fresh.margin_type, btc.margin_type) == ("cross", "isolated")
        assert crossed.value.code == -4168  # isolated is refused under Multi-Assets mode
        assert statuses(ex, "POST", "/fapi/v1/positionSide/dual") == [400, 400]
        assert statuses(ex, "POST", "/fapi/v1/marginType") == [200, 400, 400]  # ok, -4046, -4168

    async def test_fills_show_in_user_trades_and_income(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with make_client(ex) as c:
            order = await c.place_order(
                symbol="BTCUSDT",
                side="BUY",
                order_type="MARKET",
                client_order_id="vs-mkt-1",
                quantity=D("0.010"),
                resp_type="RESULT",
            )
            # A place response carries no avgPrice since 2026-07: the query has it.
            queried = await c.query_order("BTCUSDT", orig_client_order_id="vs-mkt-1")
            trades = await c.user_trades("BTCUSDT")
            by_order = await c.user_trades("BTCUSDT", order_id=order.order_id)
            fees = await c.income(income_type="COMMISSION")
            everything = await c.income(symbol="BTCUSDT")
            (pos,) = await c.position_risk("BTCUSDT")
        assert order.status == "FILLED"
        assert order.executed_qty == D("0.010")
        assert order.avg_price is None
        taker = last_price(ex)  # no live book: a taker meets the last price (matching engine policy)
        slip = D(repr(BotConfig().execution.paper_slippage_market_pct))
        assert queried.avg_price == (taker * (1 + slip)).quantize(D("0.1"), rounding=ROUND_CEILING)
        assert trades[0].price == queried.avg_price
        assert len(trades) == 1
        assert trades == by_order
        assert (trades[0].order_id, trades[0].qty, trades[0].side) == (order.order_id, D("0.010"), "BUY")
        assert len(fees) == 1
        assert fees[0].income == -trades[0].commission
        assert fees[0].income < 0
        assert {r.income_type for r in everything} == {"COMMISSION"}
        assert pos.position_amt == D("0.010")

    async def test_regular_order_life_cycle(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with make_client(ex) as c:
            placed = await place_limit(c, ex, "vs-lim-1")
            queried = await c.query_order("BTCUSDT", orig_client_order_id="vs-lim-1")
            by_id = await c.query_order("BTCUSDT", order_id=placed.order_id)
            (listed,) = await c.open_orders("BTCUSDT")
            cancelled = await c.cancel_order("BTCUSDT", orig_client_order_id="vs-lim-1")
            again = await c.cancel_order("BTCUSDT", orig_client_order_id="vs-lim-1")
            with pytest.raises(UnknownOrder) as missing:
                await c.query_order("BTCUSDT", orig_client_order_id="vs-never")
            await place_limit(c, ex, "vs-lim-2")
            await place_limit(c, ex, "vs-lim-3", pct=12)
            assert len(await c.open_orders()) == 2
            await c.cancel_all_orders("BTCUSDT")
            remaining = await c.open_orders()
        assert (placed.status, placed.client_order_id, placed.price) == ("NEW", "vs-lim-1", below(ex, 10))
        assert queried.order_id == by_id.order_id == listed.order_id == placed.order_id
        assert queried.status == "NEW"
        assert cancelled is not None
        assert cancelled.status == "CANCELED"
        assert again is None  # already gone (-2011): a success
        assert missing.value.code == -2013
        assert remaining == []
        assert all(o.status == "CANCELED" for o in ex.engine.orders.values())

    async def test_algo_order_life_cycle(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with make_client(ex) as c:
            placed = await place_stop(c, ex, "vs-stop-1")
            by_cid = await c.query_algo_order(client_algo_id="vs-stop-1")
            by_id = await c.query_algo_order(algo_id=placed.algo_id)
            (listed,) = await c.open_algo_orders("BTCUSDT")
            cancelled = await c.cancel_algo_order(client_algo_id="vs-stop-1")
            again = await c.cancel_algo_order(client_algo_id="vs-stop-1")
            after = await c.query_algo_order(client_algo_id="vs-stop-1")
            await place_stop(c, ex, "vs-stop-2")
            await place_stop(c, ex, "vs-stop-3", pct=6)
            assert len(await c.open_algo_orders()) == 2
            await c.cancel_all_algo_orders("BTCUSDT")
            remaining = await c.open_algo_orders()
        assert (placed.algo_status, placed.order_type, placed.working_type) == (
            "NEW",
            "STOP_MARKET",
            "MARK_PRICE",
        )
        assert placed.trigger_price == below(ex, 5)
        assert by_cid.algo_id == by_id.algo_id == listed.algo_id == placed.algo_id
        assert cancelled is not None
        assert (cancelled.algo_id, cancelled.client_algo_id) == (placed.algo_id, "vs-stop-1")
        assert again is None
        assert after.algo_status == "CANCELED"
        assert remaining == []

    async def test_listen_key_create_keepalive_close(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with make_client(ex) as c:
            key = await c.create_listen_key()
            await c.keepalive_listen_key()
            assert await c.create_listen_key() == key  # Binance returns the live key again
            await c.close_listen_key()
            assert ex.listen_key is None
            with pytest.raises(ListenKeyExpired):
                await c.keepalive_listen_key()
            await c.close_listen_key()  # closing a closed key is quiet
            fresh = await c.create_listen_key()
        assert len(key) == 64
        assert fresh != key
        assert ex.listen_key == fresh

    async def test_conditional_type_on_the_regular_endpoint_is_4120(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The client never does this; the low-level path shows the sim refuses it like Binance."""
        params = {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "stopPrice": str(below(ex, 5)),
            "quantity": "0.010",
            "newClientOrderId": "vs-bad-1",
        }
        async with make_client(ex) as c:
            with pytest.raises(OrderTypeNotSupported) as exc:
                await c._request("POST", "/fapi/v1/order", params, security="SIGNED", client_id="vs-bad-1")
        assert exc.value.code == -4120
        assert exc.value.client_id == "vs-bad-1"
        assert ex.engine.orders == {}
        assert ex.algo_by_client_id("vs-bad-1") is None


class TestFaults:
    """Each fault the sim injects, and the client's answer to it."""

    async def test_5xx_on_a_get_is_retried(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.fail_next("/fapi/v3/balance", status=503, times=2)
        ex.faults.fail_next("/fapi/v1/openOrders", status=500, times=1)
        async with make_client(ex) as c:
            (bal,) = await c.balance()
            assert await c.open_orders() == []
        assert bal.balance == ex.wallet_balance()
        assert statuses(ex, "GET", "/fapi/v3/balance") == [503, 503, 200]
        assert statuses(ex, "GET", "/fapi/v1/openOrders") == [500, 200]

    async def test_5xx_beyond_the_attempt_bound_raises(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.fail_next("/fapi/v3/balance", status=502, times=10, msg="Bad Gateway")
        async with make_client(ex) as c:
            with pytest.raises(ServerError) as exc:
                await c.balance()
        assert exc.value.http_status == 502
        assert statuses(ex, "GET", "/fapi/v3/balance") == [502] * CFG.max_retry_attempts

    async def test_5xx_on_a_placement_is_resolved_before_resending(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        """503 "Service Unavailable" (not executed): the id is queried (absent), then sent again, once."""
        ex.faults.fail_next("/fapi/v1/order", status=503, times=1)
        async with make_client(ex) as c:
            order = await c.place_order_resolved(
                symbol="BTCUSDT",
                side="BUY",
                order_type="LIMIT",
                client_order_id="vs-5xx-1",
                quantity=D("0.010"),
                price=below(ex, 10),
                time_in_force="GTC",
            )
        assert (order.client_order_id, order.status) == ("vs-5xx-1", "NEW")
        on_path = [(r.method, r.status) for r in ex.requests if r.path == "/fapi/v1/order"]
        assert on_path == [("POST", 503), ("GET", 400), ("POST", 200)]
        assert len(ex.orders_by_client_id("vs-5xx-1")) == 1

    async def test_429_waits_retry_after(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.rate_limit_next("/fapi/v1/klines", retry_after_s=3)
        async with make_client(ex) as c:
            t0 = trio.current_time()
            rows = await c.klines("BTCUSDT", "5m", limit=5)
            elapsed = trio.current_time() - t0
        assert len(rows) == 5
        assert 3.0 <= elapsed < 3.1
        times = [r.time_ms for r in ex.requests if r.path == "/fapi/v1/klines"]
        assert statuses(ex, "GET", "/fapi/v1/klines") == [429, 200]
        assert times[1] - times[0] >= 3000

    async def test_429_on_a_placement_waits_then_places_once(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.rate_limit_next("/fapi/v1/order", retry_after_s=2)
        async with make_client(ex) as c:
            t0 = trio.current_time()
            order = await place_limit(c, ex, "vs-429-1")
            elapsed = trio.current_time() - t0
        assert order.status == "NEW"
        assert elapsed >= 2.0
        assert statuses(ex, "POST", "/fapi/v1/order") == [429, 200]
        assert len(ex.orders_by_client_id("vs-429-1")) == 1

    async def test_418_blocks_every_request_until_the_ban_ends(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        bans: list[int] = []
        ban_end = ex.now_ms + 120_000
        ex.faults.ban_until(ban_end)
        async with make_client(ex, on_ban=bans.append) as c:
            with pytest.raises(IpBanned) as exc:
                await c.balance()
            assert bans == [ban_end]
            assert exc.value.until_ms == ban_end
            assert c.limiter.banned_until_ms == ban_end
            t0 = trio.current_time()
            done: list[float] = []

            async def call(fn: Any) -> None:
                await fn()
                done.append(trio.current_time() - t0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, c.server_time)
                nursery.start_soon(call, c.balance)
                nursery.start_soon(call, c.open_orders)
        assert len(done) == 3
        assert all(120.0 <= d < 121.0 for d in done)
        assert [r.status for r in ex.requests].count(418) == 1  # nothing else was sent during the ban
        assert all(r.time_ms >= ban_end for r in ex.requests if r.status == 200)

    async def test_1021_burst_resyncs_and_succeeds(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.timestamp_errors(3)
        async with make_client(ex) as c:
            (bal,) = await c.balance()
        assert bal.asset == "USDT"
        assert statuses(ex, "GET", "/fapi/v3/balance") == [400, 400, 400, 200]
        assert len(statuses(ex, "GET", "/fapi/v1/time")) == 3  # one resync per -1021

    async def test_real_skew_is_corrected_after_one_1021(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The local clock runs 3 s ahead of the exchange and was never synced: one -1021, a resync,
        then every signed request (a placement included) is accepted."""
        async with make_client(ex, skew_ms=3000) as c:
            await c.balance()
            assert c.offset_ms == -3000
            order = await place_limit(c, ex, "vs-skew-1")
        assert statuses(ex, "GET", "/fapi/v3/balance") == [400, 200]
        assert statuses(ex, "POST", "/fapi/v1/order") == [200]
        assert order.status == "NEW"

    async def test_1021_on_a_placement_is_sent_again_once(
        self, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.timestamp_errors(1)
        async with make_client(ex) as c:
            order = await place_limit(c, ex, "vs-1021-1")
        assert order.status == "NEW"
        assert statuses(ex, "POST", "/fapi/v1/order") == [400, 200]
        assert len(ex.orders_by_client_id("vs-1021-1")) == 1

    async def test_latency(self, ex: SimExchange, autojump_clock: trio.testing.MockClock) -> None:
        """2 s per response: the time sync halves the round trip, signed requests still pass."""
        ex.faults.set_latency(2.0)
        async with make_client(ex) as c:
            t0 = trio.current_time()
            offset = await c.sync_time()
            assert trio.current_time() - t0 == pytest.approx(2.0)
            assert offset == -1000  # the server stamped on arrival; midpoint of a 2 s round trip
            t1 = trio.current_time()
            order = await place_limit(c, ex, "vs-lat-1")
            assert trio.current_time() - t1 == pytest.approx(2.0)
        assert order.status == "NEW"

    @pytest.mark.parametrize("mode", ["timeout", "503"])
    async def test_lost_order_response_is_resolved_without_a_duplicate(
        self, mode: Any, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.lose_response_of_next_order(mode)
        async with make_client(ex) as c:
            t0 = trio.current_time()
            order = await c.place_order_resolved(
                symbol="BTCUSDT",
                side="BUY",
                order_type="LIMIT",
                client_order_id="vs-lost-1",
                quantity=D("0.010"),
                price=below(ex, 10),
                time_in_force="GTC",
            )
            elapsed = trio.current_time() - t0
        assert (order.client_order_id, order.status, order.price) == ("vs-lost-1", "NEW", below(ex, 10))
        assert ex.client_ids_sent() == ["vs-lost-1"]  # exactly ONE placement reached the exchange
        assert len(ex.orders_by_client_id("vs-lost-1")) == 1
        assert statuses(ex, "GET", "/fapi/v1/order") == [200]
        assert elapsed >= CFG.recv_window_ms / 1000  # queried only once a late copy would be refused

    @pytest.mark.parametrize("mode", ["timeout", "503"])
    async def test_lost_algo_response_is_resolved_without_a_duplicate(
        self, mode: Any, ex: SimExchange, autojump_clock: trio.testing.MockClock
    ) -> None:
        ex.faults.lose_response_of_next_order(mode)
        async with make_client(ex) as c:
            algo = await c.place_algo_order_resolved(
                symbol="BTCUSDT",
                side="SELL",
                order_type="STOP_MARKET",
                client_algo_id="vs-lost-s1",
                trigger_price=below(ex, 5),
                quantity=D("0.010"),
                working_type="MARK_PRICE",
            )
            (listed,) = await c.open_algo_orders()
        assert (algo.client_algo_id, algo.algo_status) == ("vs-lost-s1", "NEW")
        assert listed.algo_id == algo.algo_id
        assert ex.client_ids_sent() == ["vs-lost-s1"]
        assert statuses(ex, "GET", "/fapi/v1/algoOrder") == [200]

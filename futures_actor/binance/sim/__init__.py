"""A fake Binance USDT-M futures exchange for tests and offline use (one state machine, many transports).

Public API (what the client, execution and paper engineers call):

    from futures_actor.binance.sim import (
        SimExchange, load_exchange_info, mock_transport, memory_connector, serve_http, serve_ws,
        MatchingEngine, Account, Rejection,
    )

    info, specs = load_exchange_info(path_or_dict, symbols=["BTCUSDT"])   # HYPEUSDT synthesized from INJUSDT
    ex = SimExchange(exchange_info=info, specs=specs, execution=BotConfig().execution,
                     api_key="k", api_secret="s", start_ms=T0, base_interval="5m",
                     engine_state=None,                                   # or bytes from ex.to_state()
                     feed=None)        # MarketFeed(): recorded candles traded while they form (intra-candle
                                       # kline frames every 250 ms, mark 3 s / 1 s, book tickers); None:
                                       # one closed frame per candle (fast under a mock clock)
    # market data
    ex.load_candles("BTCUSDT", candles)       # recorded base-interval Candles, replayed by the clock
    ex.load_funding("BTCUSDT", [(t_ms, Decimal(rate)), ...]);  ex.set_funding_rate(sym, Decimal("-0.001"))
    ex.set_price("BTCUSDT", "60000", mark=None, volume=None)   # a trade now (a gap); mark pins the mark price
    ex.set_mark("BTCUSDT", "59000")           # mark only: MARK_PRICE stops trigger, fills at the last price
    ex.push_candle("BTCUSDT", candle)         # a closed candle now: path open→near extreme→far extreme→close
    ex.advance_to(ms); ex.step()              # the exchange clock: candles, funding (8 h grid or recorded
                                              # times), listenKey expiry (60 min) happen in time order
    # transports
    httpx.AsyncClient(base_url="https://fapi.binance.com", transport=mock_transport(ex))
    connect = memory_connector(ex, nursery)   # connect(url) -> async cm yielding a trio_websocket client
    port = await nursery.start(serve_http, ex); ws_port = await nursery.start(serve_ws, ex)  # 127.0.0.1
    # WS routes: /market/ws/<s>, /market/stream?streams=a/b (kline_<i>, markPrice[@1s]),
    #   /public/... (bookTicker), /private/ws/<listenKey> or /private/ws?listenKey=k (user data);
    #   SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS control messages; wrong-route streams stay silent.
    # faults (ex.faults)
    ex.faults.fail_next(path=None, status=503, times=1, code=None, msg="Service Unavailable.")
    ex.faults.rate_limit_next(path, retry_after_s=1); ex.faults.ban_until(until_ms)   # 429 / 418
    ex.faults.timestamp_errors(n)             # -1021 burst
    ex.faults.lose_response_of_next_order("timeout" | "503")   # executed, answer lost
    ex.faults.set_latency(s); ex.faults.silence_ws("private"); ex.expire_listen_key()
    ex.faults.user_events("drop" | "duplicate" | "reorder", times=1)   # user-data stream faults
    ex.faults.server_pings(180.0); ex.faults.cut_ws_after(86_400.0)   # Binance's pings and 24 h cut
    ex.admin_enabled = True   # /admin/faults, /admin/requests, /admin/state, /admin/price (the tool)
    # WebSocket drop: cancel the nursery serving it, or `ex.drop_subscribers(route)`.
    # introspection
    ex.requests (RecordedRequest: time_ms, method, path, params, client_id, status), ex.client_ids_sent(),
    ex.orders_by_client_id(cid), ex.algo_by_client_id(cid), ex.position_amount(sym), ex.wallet_balance(),
    ex.user_events (every user-data payload pushed, in order), ex.engine (orders, algos, account)

REST endpoints: time, ping, exchangeInfo, klines (any interval that is a multiple of the base one,
aggregated without look-ahead; the last row is the forming candle (with a feed, or after set_price); with a feed, quote volume, trades and taker-buy
volumes derived from the candle where the recording lacks them, see `feed`), ticker/24hr, ticker/bookTicker, premiumIndex, v2 ticker/price, depth
(synthetic levels a tick apart), fundingRate, fundingInfo; listenKey POST/PUT/DELETE (API key only);
SIGNED: order POST (newOrderRespType ACK answers NEW, RESULT the final state) / GET / DELETE / PUT
(modify a resting LIMIT: same orderId, AMENDMENT event), openOrder, openOrders, allOrders, batchOrders
(at most 5, per-item errors), allOpenOrders, algoOrder POST/GET/DELETE, openAlgoOrders, allAlgoOrders,
algoOpenOrders, leverage, marginType (a fresh account is CROSSED; -4046/-4047/-4048/-4168),
positionSide/dual (one-way only), multiAssetsMargin GET/POST, positionRisk v2 (every symbol) / v3 (active
symbols, no leverage or marginType), balance v2/v3, account v2 (every symbol) / v3 (active symbols),
leverageBracket (synthesized from the maximum leverage), commissionRate, symbolConfig, accountConfig,
sapi apiRestrictions, income, userTrades. Weight and order counts per `limits` (headers, 429, 418 bans).
Signed requests: HMAC-SHA256 over query + body (signature last), timestamp / recvWindow checked on the
exchange clock (-1021), -1022, -2014/-2015 (HTTP 401), errors as {"code", "msg"}.

Not simulated: hedge mode, cross-margin accounting (cross is reported, margin is computed isolated),
liquidation, GTD, priceMatch, STP, priceProtect. The pure matching engine (`matching`, `account`) is
reused by the paper exchange.
"""

from __future__ import annotations

from futures_actor.binance.sim.account import Account, Position
from futures_actor.binance.sim.exchange import (
    RecordedRequest,
    ResponseLost,
    SimExchange,
    SimRequest,
    SimResponse,
    read_funding_csv,
)
from futures_actor.binance.sim.faults import Faults
from futures_actor.binance.sim.feed import CandlePath, MarketFeed, candle_stats
from futures_actor.binance.sim.matching import (
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
from futures_actor.binance.sim.server import memory_connector, mock_transport, serve_http, serve_ws
from futures_actor.binance.sim.symbols import SymbolSpec, load_exchange_info

__all__ = [
    "Account",
    "AccountEvent",
    "AlgoEvent",
    "CandlePath",
    "EngineEvent",
    "Faults",
    "MarketFeed",
    "MatchingEngine",
    "NewAlgoOrder",
    "NewOrder",
    "OrderEvent",
    "Position",
    "RecordedRequest",
    "Rejection",
    "ResponseLost",
    "SimAlgoOrder",
    "SimExchange",
    "SimOrder",
    "SimRequest",
    "SimResponse",
    "SymbolSpec",
    "candle_stats",
    "load_exchange_info",
    "memory_connector",
    "mock_transport",
    "read_funding_csv",
    "serve_http",
    "serve_ws",
]

"""`BinanceGateway`: the `ExchangeGateway` for LIVE (and for the fake Binance exchange in tests).

Owns the translation between Binance wire models and the venue-neutral gateway Structs, and the
conversion of the user-data stream into gateway events. It holds no order state of its own: Binance
(REST + user stream) is the source of truth.

Policies (BOT_SPEC §9, failure-modes F1, F2, F8, F13, F14):
- Regular orders go to `/fapi/v1/order` through `place_order_resolved`; the protective stop goes to
  the algo service (`algoType=CONDITIONAL`, `STOP_MARKET`, `workingType=MARK_PRICE`,
  `reduceOnly=true`) through `place_algo_order_resolved`, so -4120 cannot happen. An unknown
  placement outcome is resolved by client id before any re-send (inside the REST client).
- Cancels and queries that find no order (-2011 / -2013) return `None`.
- `open_orders` = `openOrders` + `openAlgoOrders`; a triggered stop's live child (found by the
  algo's `actualOrderId`, or by the algo client id Binance appears to reuse) replaces its parent row
  and carries the stop's client id.
- A stop is cancelled on the algo service while untriggered. While it is triggering (-4117, or
  TRIGGERING without a child yet) the cancel is retried after `retry_wait_initial_seconds`, bounded by
  `max_retry_attempts`; once the child is in the matching engine it is cancelled by its `orderId`
  (`actualOrderId`), never by assuming the child reuses the algo client id (undocumented).
- Events: fills come only from `ORDER_TRADE_UPDATE` (never from `ALGO_UPDATE` or `TRADE_LITE`), so a
  fill is reported exactly once. A child order of a triggered stop reports `is_stop=True` with the
  stop's client id (mapped through the `ai` of its ALGO_UPDATE when its own client id differs). `ACCOUNT_UPDATE` with reason `FUNDING_FEE` yields `FundingPaid` (the USDT
  balance change); every `ACCOUNT_UPDATE` yields `AccountChanged`. Each stream (re)connect yields
  `ResyncNeeded`. An order status this module does not know yields `ResyncNeeded` (logged), never
  a crash or a silent drop.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

import msgspec
import structlog
import trio

from futures_actor.binance.errors import BinanceError, StopTriggering, UnknownOrder, UnknownOrderStatus
from futures_actor.binance.gateway import (
    AccountChanged,
    AccountState,
    FundingPaid,
    GatewayEvent,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderUpdate,
    PositionChanged,
    PositionState,
    ResyncNeeded,
    StopRequest,
    TradeFill,
    trade_fill,
)
from futures_actor.binance.models import (
    AccountUpdate,
    AlgoOrder,
    AlgoUpdate,
    ListenKeyExpiredEvent,
    MarginCall,
    Order,
    OrderTradeUpdate,
    TradeLite,
)
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.binance.user_stream import ResyncNeeded as StreamResync
from futures_actor.binance.user_stream import UserStream, UserStreamEvent
from futures_actor.binance.ws_conn import WsConnector, default_connector
from futures_actor.core.config import ExchangeConfig

__all__ = [
    "EVENTS_BUFFER",
    "BinanceGateway",
    "HedgeModeEnabled",
    "MultiAssetsModeEnabled",
    "StreamRunner",
    "UserStreamFactory",
    "algo_order_state",
    "order_state",
    "user_stream_factory",
]

log = structlog.get_logger(__name__)

EVENTS_BUFFER = 256  # gateway → Execution; a full channel is back-pressure on the user stream
_STREAM_BUFFER = 64
ACCOUNT_ASSET = "USDT"
FUNDING_FEE_REASON = "FUNDING_FEE"
ONE_WAY_POSITION_SIDE = "BOTH"  # the bot runs in one-way mode (checked at start)
CONDITIONAL_TYPES = frozenset(
    {"STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"}
)

_ORDER_STATUS: dict[str, OrderStatus] = {
    "NEW": "NEW",
    "PARTIALLY_FILLED": "PARTIALLY_FILLED",
    "FILLED": "FILLED",
    "CANCELED": "CANCELED",
    "EXPIRED": "EXPIRED",
    "EXPIRED_IN_MATCH": "EXPIRED",
    "REJECTED": "REJECTED",
}
_ALGO_STATUS: dict[str, OrderStatus] = {
    "NEW": "NEW",
    "TRIGGERING": "TRIGGERED",
    "TRIGGERED": "TRIGGERED",
    "CANCELED": "CANCELED",
    "REJECTED": "REJECTED",
    "EXPIRED": "EXPIRED",
    # FINISHED is resolved from the executed quantity, see `_algo_status`.
}
_ALGO_DONE = frozenset({"CANCELED", "REJECTED", "EXPIRED", "FINISHED"})
_ALGO_IN_ME = frozenset({"TRIGGERING", "TRIGGERED"})


class HedgeModeEnabled(BinanceError):
    """The account is in hedge (dual-side) position mode; the bot trades one-way only (BOT_SPEC §1)."""


class MultiAssetsModeEnabled(BinanceError):
    """The account is in Multi-Assets mode, under which isolated margin is refused (-4168)."""


class StreamRunner(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...


UserStreamFactory = Callable[[trio.MemorySendChannel[UserStreamEvent]], StreamRunner]


def user_stream_factory(
    *, cfg: ExchangeConfig, rest: BinanceRestClient, ws_base: str, connector: WsConnector = default_connector
) -> UserStreamFactory:
    """The production factory: a `UserStream` on `ws_base` with the REST client's listenKey calls."""

    def make(send: trio.MemorySendChannel[UserStreamEvent]) -> StreamRunner:
        return UserStream(cfg=cfg, rest=rest, ws_base=ws_base, send=send, connector=connector)

    return make


def _side(value: str, *, what: str) -> str:
    if value not in ("BUY", "SELL"):
        raise ValueError(f"{what}: side={value!r}, expected 'BUY' or 'SELL'")
    return value


def _order_status(raw: str) -> OrderStatus | None:
    return _ORDER_STATUS.get(raw)


def _algo_status(raw: str, *, quantity: Decimal, executed: Decimal) -> OrderStatus | None:
    if raw == "FINISHED":
        if executed > 0 and executed >= quantity:
            return "FILLED"
        return "EXPIRED"
    return _ALGO_STATUS.get(raw)


def order_state(o: Order) -> OrderState:
    """A regular order (or a triggered stop's child) as an `OrderState`."""
    status = _order_status(o.status)
    if status is None:
        raise ValueError(
            f"order {o.client_order_id}: status={o.status!r}, expected one of {list(_ORDER_STATUS)}"
        )
    is_stop = o.type in CONDITIONAL_TYPES or o.orig_type in CONDITIONAL_TYPES
    return OrderState(
        symbol=o.symbol,
        client_id=o.client_order_id,
        side=_side(o.side, what=f"order {o.client_order_id}"),  # type: ignore[arg-type]
        type=o.orig_type if is_stop and o.orig_type else o.type,
        status=status,
        quantity=o.orig_qty,
        executed_qty=o.executed_qty,
        avg_price=o.avg_price or Decimal(0),
        price=o.price,
        trigger_price=o.stop_price,
        reduce_only=o.reduce_only,
        is_stop=is_stop,
        update_ms=o.update_time or o.time,
    )


def algo_order_state(a: AlgoOrder) -> OrderState:
    """A conditional (algo) order as an `OrderState` with `is_stop=True`."""
    status = _algo_status(a.algo_status, quantity=a.quantity, executed=Decimal(0))
    if status is None:
        raise ValueError(f"algo order {a.client_algo_id}: algoStatus={a.algo_status!r} unknown")
    return OrderState(
        symbol=a.symbol,
        client_id=a.client_algo_id,
        side=_side(a.side, what=f"algo order {a.client_algo_id}"),  # type: ignore[arg-type]
        type=a.order_type,
        status=status,
        quantity=a.quantity,
        price=a.price,
        trigger_price=a.trigger_price,
        reduce_only=a.reduce_only,
        is_stop=True,
        update_ms=a.update_time or a.create_time,
    )


class BinanceGateway:
    """`ExchangeGateway` over `BinanceRestClient` and the user-data stream."""

    def __init__(
        self,
        *,
        rest: BinanceRestClient,
        user_stream: UserStreamFactory,
        events_buffer: int = EVENTS_BUFFER,
    ) -> None:
        self._rest = rest
        self._make_stream = user_stream
        self._send, self._recv = trio.open_memory_channel[GatewayEvent](events_buffer)
        self._account: AccountState | None = None
        self._upnl: dict[str, Decimal] = {}
        self._stop_of_child: dict[int, str] = {}  # matching-engine orderId → the stop's client id

    def events(self) -> trio.MemoryReceiveChannel[GatewayEvent]:
        return self._recv

    # ------------------------------------------------------------ event source

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the user stream; `started()` once its first socket is open. Runs until cancelled."""
        stream_send, stream_recv = trio.open_memory_channel[UserStreamEvent](_STREAM_BUFFER)
        stream = self._make_stream(stream_send)
        async with trio.open_nursery() as nursery:
            await nursery.start(stream.run)
            task_status.started()
            async with stream_recv:
                async for raw in stream_recv:
                    for event in self.convert(raw):
                        await self._send.send(event)

    def convert(self, raw: UserStreamEvent) -> list[GatewayEvent]:
        """One user-stream event → zero or more gateway events (pure apart from the balance cache)."""
        match raw:
            case StreamResync(reason=reason):
                return [ResyncNeeded(reason=reason)]
            case OrderTradeUpdate():
                return [self._order_update(raw)]
            case AlgoUpdate():
                return [self._algo_update(raw)]
            case AccountUpdate():
                return self._account_update(raw)
            case TradeLite():
                return []  # duplicated by ORDER_TRADE_UPDATE, which carries fee and realized PnL
            case MarginCall():
                log.warning("binance_margin_call", positions=[p.symbol for p in raw.positions])
                return [ResyncNeeded(reason="margin_call")]
            case ListenKeyExpiredEvent():
                return []  # the stream renews the key and sends ResyncNeeded after reconnecting
            case _:
                log.warning("binance_user_event_unhandled", event_type=type(raw).__name__)
                return []

    def _order_update(self, ev: OrderTradeUpdate) -> GatewayEvent:
        o = ev.order
        status = _order_status(o.status)
        if status is None:
            log.warning("binance_order_status_unknown", client_id=o.client_order_id, status=o.status)
            return ResyncNeeded(reason=f"unknown order status {o.status!r} for {o.client_order_id}")
        if o.side not in ("BUY", "SELL"):
            log.warning("binance_order_side_unknown", client_id=o.client_order_id, side=o.side)
            return ResyncNeeded(reason=f"unknown order side {o.side!r} for {o.client_order_id}")
        is_stop = o.order_type in CONDITIONAL_TYPES or o.orig_type in CONDITIONAL_TYPES
        stop_cid = self._stop_of_child.get(o.order_id)
        if stop_cid is not None:
            is_stop = True
        ts = o.trade_time_ms or ev.transaction_time_ms or ev.event_time_ms
        state = OrderState(
            symbol=o.symbol,
            client_id=stop_cid or o.client_order_id,
            side=o.side,  # type: ignore[arg-type]
            type=o.orig_type if is_stop and o.orig_type else o.order_type,
            status=status,
            quantity=o.orig_qty,
            executed_qty=o.cum_filled_qty,
            avg_price=o.avg_price,
            price=o.price,
            trigger_price=o.stop_price,
            reduce_only=o.reduce_only,
            is_stop=is_stop,
            update_ms=ts,
        )
        if o.execution_type == "TRADE" and o.last_filled_qty > 0:
            return OrderUpdate(
                order=state,
                last_fill_qty=o.last_filled_qty,
                last_fill_price=o.last_filled_price,
                fee=o.commission,
                is_maker=o.maker,
                realized_pnl=o.realized_pnl,
                ts_ms=ts,
            )
        return OrderUpdate(order=state, ts_ms=ts)

    def _algo_update(self, ev: AlgoUpdate) -> GatewayEvent:
        o = ev.order
        status = _algo_status(o.status, quantity=o.quantity, executed=o.actual_qty)
        if status is None or o.side not in ("BUY", "SELL"):
            log.warning(
                "binance_algo_status_unknown", client_id=o.client_algo_id, status=o.status, side=o.side
            )
            return ResyncNeeded(reason=f"unknown algo status {o.status!r} for {o.client_algo_id}")
        ts = ev.event_time_ms
        child = o.actual_order_id
        if child is not None:
            self._stop_of_child[child] = o.client_algo_id
        state = OrderState(
            symbol=o.symbol,
            client_id=o.client_algo_id,
            side=o.side,  # type: ignore[arg-type]
            type=o.order_type,
            status=status,
            quantity=o.quantity,
            executed_qty=o.actual_qty,
            avg_price=o.actual_avg_price,
            price=o.price,
            trigger_price=o.trigger_price,
            reduce_only=o.reduce_only,
            is_stop=True,
            update_ms=ts,
        )
        # No fill fields: the child's ORDER_TRADE_UPDATE reports the fill (exactly once).
        return OrderUpdate(order=state, ts_ms=ts, reject_reason=o.reject_reason)

    def _account_update(self, ev: AccountUpdate) -> list[GatewayEvent]:
        a = ev.account
        ts = ev.event_time_ms
        out: list[GatewayEvent] = []
        usdt = [b for b in a.balances if b.asset == ACCOUNT_ASSET]
        if a.reason == FUNDING_FEE_REASON:
            symbol = a.symbol or (a.positions[0].symbol if len(a.positions) == 1 else "")
            for b in usdt:
                out.append(FundingPaid(symbol=symbol, amount=b.balance_change, ts_ms=ts))
            if not symbol:
                log.warning("binance_funding_without_symbol", amount=[str(b.balance_change) for b in usdt])
        for p in a.positions:
            self._upnl[p.symbol] = p.unrealized_pnl
            if p.position_side == ONE_WAY_POSITION_SIDE:
                out.append(PositionChanged(symbol=p.symbol, amount=p.position_amt, ts_ms=ts))
        if usdt:
            wallet = usdt[-1].wallet_balance
            prev = self._account
            available = wallet if prev is None else prev.available_balance + (wallet - prev.wallet_balance)
            acct = AccountState(
                wallet_balance=wallet,
                available_balance=available,
                unrealized_pnl=sum(self._upnl.values(), Decimal(0)),
                ts_ms=ts,
            )
            self._account = acct
            out.append(AccountChanged(account=acct))
        return out

    # ------------------------------------------------------------ configuration

    async def prepare_symbol(self, symbol: str, *, leverage: int) -> None:
        await self._rest.set_margin_type(symbol, "ISOLATED")
        await self._rest.set_leverage(symbol, leverage)

    async def check_account_mode(self) -> None:
        """One-way position mode and single-asset margin, or refuse to start (BOT_SPEC §1)."""
        if await self._rest.position_mode():
            raise HedgeModeEnabled(
                "dualSidePosition=true: the account is in hedge mode; expected one-way mode (false)",
                endpoint="GET /fapi/v1/positionSide/dual",
            )
        if await self._rest.multi_assets_mode():
            raise MultiAssetsModeEnabled(
                "multiAssetsMargin=true: the account is in Multi-Assets mode, which refuses isolated "
                "margin (-4168); expected single-asset mode (false)",
                endpoint="GET /fapi/v1/multiAssetsMargin",
            )

    # ------------------------------------------------------------ orders

    async def place_order(self, req: OrderRequest) -> OrderState:
        tif = req.time_in_force or ("GTC" if req.type == "LIMIT" else None)
        order = await self._rest.place_order_resolved(
            symbol=req.symbol,
            side=req.side,
            order_type=req.type,
            client_order_id=req.client_id,
            quantity=req.quantity,
            price=req.price if req.type == "LIMIT" else None,
            time_in_force=tif,
            reduce_only=True if req.reduce_only else None,
        )
        return order_state(await self._priced(order))

    async def place_stop(self, req: StopRequest) -> OrderState:
        algo = await self._rest.place_algo_order_resolved(
            symbol=req.symbol,
            side=req.side,
            order_type="STOP_MARKET",
            client_algo_id=req.client_id,
            trigger_price=req.trigger_price,
            quantity=req.quantity,
            working_type=req.working_type,
            reduce_only=True if req.reduce_only else None,
        )
        return algo_order_state(algo)

    async def cancel_order(self, symbol: str, client_id: str) -> OrderState | None:
        order = await self._rest.cancel_order(symbol, orig_client_order_id=client_id)
        return None if order is None else order_state(await self._priced(order))

    async def _priced(self, order: Order) -> Order:
        """Place and cancel responses carry no `avgPrice` (since 2026-07): an order that already
        executed something is re-read by client id, so its fills are never priced at 0."""
        if order.executed_qty > 0 and not order.avg_price:
            return await self._rest.query_order(order.symbol, orig_client_order_id=order.client_order_id)
        return order

    async def cancel_stop(self, symbol: str, client_id: str) -> OrderState | None:
        """Cancel a stop. Gone or already finished: `None`. Untriggered: on the algo service.
        Triggering (-4117, or no child yet): asked again after a short wait, bounded. Triggered: its
        child is cancelled in the matching engine by `actualOrderId`."""
        attempts = self._rest.max_retry_attempts
        for attempt in range(1, attempts + 1):
            try:
                algo = await self._rest.query_algo_order(client_algo_id=client_id)
            except UnknownOrder:
                return None
            if algo.algo_status in _ALGO_DONE:
                return None
            child = algo.actual_order_id
            if algo.algo_status in _ALGO_IN_ME and child is not None:
                return await self._cancel_child(symbol, client_id, child)
            if algo.algo_status == "TRIGGERED":
                # In the matching engine but no `actualOrderId` given: fall back to the client id the
                # child appears to reuse (inferred, not documented); absent there, ask again.
                log.warning("binance_stop_triggered_without_child_id", client_id=client_id)
                order = await self._rest.cancel_order(symbol, orig_client_order_id=client_id)
                if order is not None:
                    return msgspec.structs.replace(order_state(order), client_id=client_id, is_stop=True)
            else:
                current = algo_order_state(algo)
                try:
                    result = await self._rest.cancel_algo_order(client_algo_id=client_id)
                except StopTriggering:
                    log.info("binance_stop_triggering_retry", client_id=client_id, attempt=attempt)
                else:
                    if result is not None:
                        return msgspec.structs.replace(
                            current, status="CANCELED", update_ms=self._rest.server_now_ms()
                        )
                    # Gone between the query and the cancel: finished, cancelled, or just triggered
                    # (its child then lives in the matching engine). The next query tells which.
                    continue
            await trio.sleep(self._rest.retry_wait_seconds)
        raise UnknownOrderStatus(
            f"stop still triggering after {attempts} attempts; its child order is not known yet",
            endpoint="DELETE /fapi/v1/algoOrder",
            client_id=client_id,
        )

    async def _cancel_child(self, symbol: str, client_id: str, order_id: int) -> OrderState | None:
        self._stop_of_child[order_id] = client_id
        order = await self._rest.cancel_order(symbol, order_id=order_id)
        if order is None:
            return None
        if order.executed_qty > 0 and not order.avg_price:
            order = await self._rest.query_order(order.symbol, order_id=order.order_id)
        return msgspec.structs.replace(order_state(order), client_id=client_id, is_stop=True)

    async def query_order(self, symbol: str, client_id: str) -> OrderState | None:
        try:
            order = await self._rest.query_order(symbol, orig_client_order_id=client_id)
        except UnknownOrder:
            return None
        return order_state(order)

    async def query_stop(self, symbol: str, client_id: str) -> OrderState | None:
        try:
            algo = await self._rest.query_algo_order(client_algo_id=client_id)
        except UnknownOrder:
            return None
        if algo.symbol != symbol:
            log.warning("binance_stop_symbol_mismatch", client_id=client_id, expected=symbol, got=algo.symbol)
            return None
        return algo_order_state(algo)

    async def open_orders(self) -> list[OrderState]:
        orders = await self._rest.open_orders()
        algos = await self._rest.open_algo_orders()
        stop_of = {a.actual_order_id: a.client_algo_id for a in algos if a.actual_order_id is not None}
        self._stop_of_child.update(stop_of)
        regular: list[OrderState] = []
        for o in orders:
            state = order_state(o)
            stop_cid = self._stop_of_child.get(o.order_id)
            if stop_cid is not None:
                state = msgspec.structs.replace(state, client_id=stop_cid, is_stop=True)
            regular.append(state)
        seen = {o.client_id for o in regular}
        return regular + [algo_order_state(a) for a in algos if a.client_algo_id not in seen]

    # ------------------------------------------------------------ account

    async def positions(self) -> list[PositionState]:
        out: list[PositionState] = []
        for p in await self._rest.position_risk():
            if p.position_amt == 0:
                continue
            out.append(
                PositionState(
                    symbol=p.symbol,
                    side="LONG" if p.position_amt > 0 else "SHORT",
                    quantity=abs(p.position_amt),
                    entry_price=p.entry_price,
                    unrealized_pnl=p.un_realized_profit,
                    leverage=p.leverage or 1,
                    isolated_margin=p.isolated_margin,
                )
            )
        return out

    async def user_trades(self, symbol: str, *, start_ms: int) -> list[TradeFill]:
        rows = await self._rest.user_trades(symbol, start_ms=start_ms)
        return [trade_fill(r) for r in sorted(rows, key=lambda r: (r.time, r.id))]

    async def account(self) -> AccountState:
        info = await self._rest.account()
        ts = self._rest.server_now_ms()
        row = next((a for a in info.assets if a.asset == ACCOUNT_ASSET), None)
        if row is not None:
            acct = AccountState(
                wallet_balance=row.wallet_balance,
                available_balance=row.available_balance,
                unrealized_pnl=row.unrealized_profit,
                ts_ms=ts,
            )
        else:
            acct = AccountState(
                wallet_balance=info.total_wallet_balance,
                available_balance=info.available_balance,
                unrealized_pnl=info.total_unrealized_profit,
                ts_ms=ts,
            )
        self._account = acct
        return acct

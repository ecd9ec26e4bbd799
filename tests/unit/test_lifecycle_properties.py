"""Properties of the order lifecycle over random exchange behaviour (hypothesis).

A random "exchange" answers the lifecycle's orders: acks, rejects, unknown outcomes and their resolution,
partial and full fills, cancels, expiries, TTLs, trailing amendments, a kill. After every step the
lifecycle is also round-tripped through its persisted snapshot, as the actor does after each transition.
"""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from futures_actor.core.config import ExecutionConfig
from futures_actor.core.lifecycle import (
    AmendStop,
    CancelOrder,
    Command,
    EmitTradeClosed,
    Event,
    Kill,
    MidPrice,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderFound,
    OrderNotFound,
    OrderRejected,
    OrderStatus,
    OrderStatusUnknown,
    Phase,
    PlaceAlgoOrder,
    PlaceOrder,
    TradeLifecycle,
    TtlExpired,
    decode_state,
    encode_state,
)
from futures_actor.core.models import TradePlan
from futures_actor.core.types import OrderRole, Regime, Side, SymbolRules

D = Decimal
T0 = 1_767_225_600_000
CFG = ExecutionConfig()
RULES = SymbolRules(
    symbol="ETHUSDT",
    tick_size=D("0.01"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
    multiplier_up=D("1.05"),
    multiplier_down=D("0.95"),
)
PROPS = settings(
    max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

_ACK = st.tuples(st.just("ack"), st.integers(0, 7))
_FILL = st.tuples(st.just("fill"), st.integers(0, 7), st.sampled_from([1, 2, 3, 4]))
ACTIONS = st.lists(
    st.one_of(
        _ACK,
        _ACK,
        _FILL,
        _FILL,
        st.tuples(st.just("reject"), st.integers(0, 7), st.sampled_from([-2021, -4131, -1001, -4116])),
        st.tuples(st.just("unknown"), st.integers(0, 7)),
        st.tuples(st.just("resolve"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("cancel_ack"), st.integers(0, 7)),
        st.tuples(st.just("expire"), st.integers(0, 7)),
        st.tuples(st.just("ttl"), st.integers(0, 7)),
        st.tuples(st.just("amend"), st.integers(-50, 150)),
        st.tuples(st.just("mid"), st.integers(-200, 200)),
        st.tuples(st.just("kill"), st.integers(0, 5)),  # a kill for 0 only: rare, so trades get to live
    ),
    min_size=20,
    max_size=60,
)


def make_plan(side: Side, with_target: bool) -> TradePlan:
    sign = side.sign
    return TradePlan(
        trade_id="5d1c2b3a-0000-4000-8000-000000000000",
        symbol="ETHUSDT",
        strategy="breakout",
        side=side,
        regime=Regime.HIGH_VOL,
        confidence_score=0.6,
        candle_open_time_ms=T0,
        created_ms=T0,
        entry_price=D("2000.00"),
        quantity=D("0.100"),
        stop_price=D("2000.00") - sign * D("20.00"),
        target_price=(D("2000.00") + sign * D("40.00")) if with_target else None,
        leverage=5.0,
        equity_usd=10_000.0,
        risk_pct=0.002,
        risk_usd=2.0,
        stop_pct=0.01,
        notional_usd=200.0,
        margin_used_usd=40.0,
    )


def pick(orders: list, i: int):  # type: ignore[no-untyped-def,type-arg]
    return orders[i % len(orders)] if orders else None


def event_for(lc: TradeLifecycle, action: tuple, now: int) -> Event | None:  # type: ignore[type-arg]
    kind = action[0]
    live = sorted(lc.live_orders(), key=lambda o: o.cid)
    if kind == "ack":
        o = pick([o for o in live if o.status is OrderStatus.SENT], action[1])
        return None if o is None else OrderAccepted(cid=o.cid)
    if kind == "reject":
        o = pick([o for o in live if o.status is OrderStatus.SENT], action[1])
        return None if o is None else OrderRejected(cid=o.cid, code=action[2], message="random")
    if kind == "unknown":
        o = pick([o for o in live if o.status is OrderStatus.SENT], action[1])
        return None if o is None else OrderStatusUnknown(cid=o.cid)
    if kind == "resolve":
        o = pick([o for o in live if o.status is OrderStatus.UNKNOWN], action[1])
        if o is None:
            return None
        return OrderFound(cid=o.cid, status="NEW") if action[2] else OrderNotFound(cid=o.cid)
    if kind == "fill":
        o = pick([o for o in live if (o.status is OrderStatus.WORKING and o.order_type != "STOP_MARKET")
                  or (o.status is OrderStatus.WORKING and o.role is OrderRole.STOP)], action[1])  # fmt: skip
        if o is None:
            return None
        remaining = o.qty - o.filled_qty
        if o.role is not OrderRole.ENTRY:  # reduce-only: never more than the position
            remaining = min(remaining, lc.position_qty)
        step = (remaining * action[2] / 4).quantize(D("0.001"))
        if step <= 0:
            return None
        px = o.price if o.price is not None else D("2000.00")
        return OrderFilled(cid=o.cid, qty=step, cum_qty=o.filled_qty + step, price=px, fee=0.01, is_maker=False,
                           ts_ms=now)  # fmt: skip
    if kind == "cancel_ack":
        o = pick([o for o in live if o.cancel_requested], action[1])
        return None if o is None else OrderCanceled(cid=o.cid)
    if kind == "expire":
        o = pick(
            [o for o in live if o.role in (OrderRole.KILL, OrderRole.EXIT) and o.order_type == "LIMIT"],
            action[1],
        )
        return None if o is None else OrderExpired(cid=o.cid)
    if kind == "ttl":
        o = pick([o for o in lc.orders.values() if o.role is OrderRole.ENTRY], action[1])
        return None if o is None else TtlExpired(cid=o.cid)
    if kind == "amend":
        return AmendStop(new_price=lc.stop_price + D(action[1]) / 10)
    if kind == "mid":
        return MidPrice(mid=D("2000.00") + D(action[1]) / 10)
    return Kill() if action[1] == 0 else None


def check_protected(lc: TradeLifecycle) -> None:
    """While holding a position outside a closing loop: a stop for the position, or a replacement in flight."""
    pos = lc.position_qty
    if pos <= 0 or lc.phase not in (Phase.ENTRY_WORKING, Phase.ENTRY_CANCELING, Phase.OPEN):
        return
    if lc._s.sync_needed:
        return  # a stop vanished: the exchange position is read before re-protecting (BOT_SPEC §10)
    stops = [o for o in lc.live_orders(OrderRole.STOP) if not o.cancel_requested]
    assert stops, "position without any stop"
    in_flight = any(o.status is not OrderStatus.WORKING for o in stops)
    # A stop larger than the position protects all of it (a coalesced resize, BOT_SPEC §9).
    assert in_flight or any(o.qty - o.filled_qty >= pos for o in stops), (pos, stops)


@PROPS
@given(side=st.sampled_from([Side.LONG, Side.SHORT]), with_target=st.booleans(), actions=ACTIONS)
def test_random_exchange_behaviour_keeps_the_invariants(side: Side, with_target: bool, actions: list) -> None:  # type: ignore[type-arg]
    run_and_check(side, with_target, actions)


# Weighted long runs: mostly acks and fills, so that trades live long enough to trail, resize and exit.
_WEIGHTS = {"ack": 6, "fill": 5, "amend": 3, "mid": 2, "unknown": 1, "resolve": 2, "reject": 1, "cancel_ack": 3,
            "expire": 1, "ttl": 2, "kill": 1}  # fmt: skip


@PROPS
@given(
    side=st.sampled_from([Side.LONG, Side.SHORT]), with_target=st.booleans(), seed=st.integers(0, 2**32 - 1)
)
def test_long_weighted_runs_keep_the_invariants(side: Side, with_target: bool, seed: int) -> None:
    rng = random.Random(seed)
    kinds = rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()), k=80)
    codes = [-2021, -4131, -1001, -4116]
    actions = [
        (k, rng.randrange(8), rng.choice(codes) if k == "reject" else rng.choice([True, False]))
        if k in ("reject", "resolve")
        else (k, rng.randrange(-50, 150)) if k in ("amend", "mid")
        else (k, rng.randrange(8), rng.randint(1, 4)) if k == "fill"
        else (k, rng.randrange(2 if k == "kill" else 8))
        for k in kinds
    ]  # fmt: skip
    run_and_check(side, with_target, actions)


def run_and_check(side: Side, with_target: bool, actions: list) -> None:  # type: ignore[type-arg]
    lc = TradeLifecycle(plan=make_plan(side, with_target), rules=RULES, config=CFG, prefix="fa", mode="LIVE")
    now = T0
    log: list[Command] = list(lc.start(now_ms=now))
    for action in actions:
        now += 1000
        event = event_for(lc, action, now)
        if event is None:
            continue
        cmds = lc.handle(event, now_ms=now)
        log += cmds
        stop_cancels = [c for c in cmds if isinstance(c, CancelOrder) and c.is_algo]
        if (
            stop_cancels
            and lc.position_qty > 0
            and lc.phase not in (Phase.KILLING, Phase.EXITING, Phase.CLOSED)
        ):
            # An old stop is retired only while its accepted replacement stands.
            standing = [o for o in lc.live_orders(OrderRole.STOP) if not o.cancel_requested]
            assert any(
                o.status is OrderStatus.WORKING and o.qty - o.filled_qty == lc.position_qty for o in standing
            )
        lc = TradeLifecycle.from_state(decode_state(encode_state(lc.to_state())), config=CFG)
        check_protected(lc)
        assert lc.position_qty >= 0

    placed = [c for c in log if isinstance(c, PlaceOrder | PlaceAlgoOrder)]
    cids = [c.cid for c in placed]
    assert len(cids) == len(set(cids)), "a client id was placed twice"
    entries = [c for c in placed if c.role is OrderRole.ENTRY]
    assert len(entries) <= 1 + CFG.limit_retry_count
    assert all(isinstance(c, PlaceOrder) and c.order_type == "LIMIT" and not c.reduce_only for c in entries)
    assert all(c.reduce_only for c in placed if c.role is not OrderRole.ENTRY)
    closes = [i for i, c in enumerate(log) if isinstance(c, EmitTradeClosed)]
    assert len(closes) <= 1
    if closes:
        assert not [c for c in log[closes[0] :] if isinstance(c, PlaceOrder | PlaceAlgoOrder)]
        assert lc.phase is Phase.CLOSED
    # A cancel is only ever sent for one of our own, previously placed orders.
    assert {c.cid for c in log if isinstance(c, CancelOrder)} <= set(cids)

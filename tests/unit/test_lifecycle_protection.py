"""Stop amendments coalesced and client-id exhaustion (issue 9 #12, BOT_SPEC §9 [resolved])."""

from __future__ import annotations

from decimal import Decimal

from test_lifecycle import Harness, make_plan

from futures_actor.core.ids import MAX_ATTEMPT
from futures_actor.core.lifecycle import (
    Alert,
    CancelOrder,
    Command,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    Phase,
    PlaceAlgoOrder,
    PlaceOrder,
    StartTimer,
    TtlExpired,
)
from futures_actor.core.types import OrderRole

D = Decimal


def _ack_all(h: Harness, cmds: list[Command], now: int) -> list[Command]:
    """The venue: accepts every placement and confirms every cancel at once (paper/replay speed)."""
    out = list(cmds)
    queue = list(cmds)
    while queue:
        c = queue.pop(0)
        if isinstance(c, PlaceOrder | PlaceAlgoOrder) and c.role is not OrderRole.EXIT:
            more = h.lc.handle(OrderAccepted(cid=c.cid), now_ms=now)
        elif isinstance(c, CancelOrder):
            more = h.lc.handle(OrderCanceled(cid=c.cid), now_ms=now)
        else:
            continue
        out += more
        queue += more
    return out


def _open(qty: str) -> Harness:
    h = Harness(plan=make_plan(qty=qty))
    (entry, _t) = h.start()
    h.ev(OrderAccepted(cid=entry.cid))
    _ack_all(h, h.fill(entry.cid, qty, "100.0"), h.now)
    return h


class TestCoalescedStopResize:
    def test_target_filled_in_a_thousand_slivers_costs_a_handful_of_replacements(self) -> None:
        h = _open("1.000")
        target = next(o for o in h.lc.live_orders(OrderRole.TARGET))
        stop_versions = sum(1 for o in h.lc.orders.values() if o.role is OrderRole.STOP)
        now = h.now
        placed: list[PlaceAlgoOrder] = []
        timers: list[tuple[int, str]] = []  # the actor's timer heap: (due ms, cid)
        for i in range(1, 1000):  # 999 slivers of 0.001; every 50 ms
            now += 50
            cmds: list[Command] = []
            for due, tcid in [t for t in timers if t[0] <= now]:
                timers.remove((due, tcid))
                cmds += _ack_all(h, h.lc.handle(TtlExpired(cid=tcid), now_ms=now), now)
            ev = OrderFilled(
                cid=target.cid, qty=D("0.001"), cum_qty=D("0.001") * i, price=D("104.0"), fee=0.0,
                is_maker=True, ts_ms=now,
            )  # fmt: skip
            cmds += _ack_all(h, h.lc.handle(ev, now_ms=now), now)
            timers += [(now + int(c.seconds * 1000), c.cid) for c in cmds if isinstance(c, StartTimer)]
            placed += [c for c in cmds if isinstance(c, PlaceAlgoOrder)]
            # Always protected in full: a working stop at least as large as the position.
            stops = [o for o in h.lc.live_orders(OrderRole.STOP) if not o.cancel_requested]
            assert any(o.qty >= h.lc.position_qty for o in stops)
        assert len(placed) <= 3, [p.qty for p in placed]  # 999 slivers over 50 s, resize window 30 s
        assert h.lc.position_qty == D("0.001")
        now += 40_000
        cmds = _ack_all(
            h, h.lc.handle(TtlExpired(cid=placed[-1].cid if placed else target.cid), now_ms=now), now
        )
        [stop] = [o for o in h.lc.live_orders(OrderRole.STOP) if not o.cancel_requested]
        assert stop.qty == D("0.001"), "the latest quantity wins once the window has passed"
        assert sum(1 for o in h.lc.orders.values() if o.role is OrderRole.STOP) <= stop_versions + 4

    def test_a_growing_position_gets_its_bigger_stop_at_once(self) -> None:
        from futures_actor.core.lifecycle import PositionSnapshot
        from futures_actor.core.types import Side

        h = _open("0.010")
        cmds = h.ev(PositionSnapshot(side=Side.LONG, qty=D("0.020"), entry_price=D("100.0"), confirmed=True))
        [stop] = [c for c in cmds if isinstance(c, PlaceAlgoOrder)]
        assert stop.qty == D("0.020")


class TestClientIdExhaustion:
    def test_exhausted_stop_ids_never_crash_and_keep_the_covering_stop(self) -> None:
        h = _open("1.000")
        h.lc._s.attempts[OrderRole.STOP.value] = MAX_ATTEMPT
        target = next(o for o in h.lc.live_orders(OrderRole.TARGET))
        h.lc._s.shrink_since_ms = 1  # the coalescing window is long over
        cmds = h.fill(target.cid, "0.500", "104.0")
        assert [c.code for c in cmds if isinstance(c, Alert)] == ["IDS_EXHAUSTED"]
        assert [c for c in cmds if isinstance(c, PlaceAlgoOrder)] == []
        assert any(o.qty >= D("0.500") for o in h.lc.live_orders(OrderRole.STOP))
        assert h.lc.phase is Phase.OPEN

    def test_exhausted_stop_ids_with_an_uncovered_position_close_it(self) -> None:
        from futures_actor.core.lifecycle import PositionSnapshot
        from futures_actor.core.types import Side

        h = _open("0.010")
        h.lc._s.attempts[OrderRole.STOP.value] = MAX_ATTEMPT
        cmds = h.ev(PositionSnapshot(side=Side.LONG, qty=D("0.020"), entry_price=D("100.0"), confirmed=True))
        assert "IDS_EXHAUSTED" in [c.code for c in cmds if isinstance(c, Alert)]
        [close] = [c for c in cmds if isinstance(c, PlaceOrder) and c.role is OrderRole.EXIT]
        assert (close.order_type, close.reduce_only, close.qty) == ("MARKET", True, D("0.020"))
        assert h.lc.phase is Phase.EXITING


class TestShortfallIsOursFirst:
    """A bare position read that finds less than the trade holds: our own stop, target or exit may have filled
    with its event still on the way (an ACK placement, a lagging user stream). Each is asked for by client id
    before the shortfall is booked as a close outside the bot."""

    def test_flat_read_queries_our_orders_and_books_the_target_fill_as_tp(self) -> None:
        from futures_actor.core.lifecycle import OrderFound, PositionSnapshot, QueryOrder

        h = _open("0.010")
        target = next(o for o in h.lc.live_orders(OrderRole.TARGET))
        cmds = h.ev(PositionSnapshot(side=None, qty=D("0")))
        queried = {c.cid for c in cmds if isinstance(c, QueryOrder)}
        assert target.cid in queried
        assert not h.lc.closed, "not booked MANUAL before our orders are resolved"
        for c in sorted(queried):
            found = "FILLED" if c == target.cid else "NEW"
            h.ev(OrderFound(cid=c, status=found, executed_qty=D("0.010") if found == "FILLED" else D("0"),
                            avg_price=D("101.5") if found == "FILLED" else D("0")))  # fmt: skip
        assert h.lc.closed
        assert h.record()["result"]["reason"] == "TP"

    def test_orders_still_working_then_the_close_was_outside(self) -> None:
        from futures_actor.core.lifecycle import OrderFound, PositionSnapshot, QueryOrder

        h = _open("0.010")
        cmds = h.ev(PositionSnapshot(side=None, qty=D("0")))
        for c in [c for c in cmds if isinstance(c, QueryOrder)]:
            h.ev(OrderFound(cid=c.cid, status="NEW", executed_qty=D("0"), avg_price=D("0")))
        cmds = h.ev(PositionSnapshot(side=None, qty=D("0")))
        assert not [c for c in cmds if isinstance(c, QueryOrder)], "asked once per shortfall, not forever"
        assert h.record()["result"]["reason"] == "MANUAL"

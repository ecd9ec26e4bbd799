"""`/health` and `/metrics` show the present (issue 13 "operator comforts", issue 9 #15), end to end.

The whole LIVE system runs against the fake exchange under trio's mock clock (`ScriptedRig` with a
`SimExchange`); a person trades on the same account by hand through their own REST client. `/health` and
`/metrics` are asked through the system's own HTTP app (`System.http_app`: the wiring the socket serves),
so what is checked is what an operator's `curl` would read.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio
import trio.testing

from futures_actor.actors.clock import TrioWallClock
from futures_actor.binance.rest import BinanceRestClient
from futures_actor.core.config import default_config
from futures_actor.core.secrets import Secret
from tests.acceptance.harness import (
    SIM_API_KEY,
    SIM_API_SECRET,
    SIM_REST_BASE,
    ScriptedRig,
    _FollowingTransport,
    make_sim_exchange,
)

START_MS = 1_735_725_600_000  # 2025-01-01 10:00 UTC
PRICES = {"BTCUSDT": Decimal("60000.0"), "ETHUSDT": Decimal("3000.00")}
RECONCILE_S = 30.0
SETTLE_S = 5.0
WAIT_S = 300.0


class Hand:
    """A person trading on the bot's account: their own REST client, client ids without our prefix."""

    def __init__(self, sim: Any, clock: TrioWallClock) -> None:
        self._n = itertools.count(1)
        self.rest = BinanceRestClient(
            cfg=default_config().exchange,
            wall_clock=clock,
            api_key=Secret(SIM_API_KEY),
            api_secret=Secret(SIM_API_SECRET),
            transport=_FollowingTransport(sim, clock),  # type: ignore[arg-type]
            base_url=SIM_REST_BASE,
        )

    async def market(self, symbol: str, side: Literal["BUY", "SELL"], qty: str) -> None:
        await self.rest.place_order(
            symbol=symbol,
            side=side,
            order_type="MARKET",
            client_order_id=f"hand{next(self._n)}",
            quantity=Decimal(qty),
        )

    async def stop(self, symbol: str, side: Literal["BUY", "SELL"], qty: str, trigger: str) -> None:
        await self.rest.place_algo_order(
            symbol=symbol,
            side=side,
            order_type="STOP_MARKET",
            client_algo_id=f"handstop{next(self._n)}",
            trigger_price=Decimal(trigger),
            quantity=Decimal(qty),
            reduce_only=True,
            working_type="MARK_PRICE",
        )


def rig_for(tmp_path: Path) -> tuple[ScriptedRig, Any]:
    base = default_config()
    cfg = msgspec.structs.replace(
        base, execution=msgspec.structs.replace(base.execution, reconcile_interval_seconds=RECONCILE_S)
    )
    sim = make_sim_exchange(cfg, list(PRICES), start_ms=START_MS)
    rig = ScriptedRig(
        root=tmp_path, cfg=cfg, symbols=list(PRICES), prices=dict(PRICES), epoch_ms=START_MS, sim=sim
    )
    return rig, sim


async def get(system: Any, path: str) -> tuple[int, Any]:
    from futures_actor.actors.http_health import HttpRequest

    resp = await system.http_app().handle(HttpRequest(method="GET", target=path))
    body = json.loads(resp.body) if path == "/health" else resp.body.decode()
    return resp.status, body


def sample(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in a Prometheus text exposition (None if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_health_and_metrics_follow_the_account_and_the_kill_switch(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Two positions opened by hand while the bot runs: BTCUSDT without a stop (the bot adopts and
    protects it) and ETHUSDT short with the person's own stop (protected: not adopted). After a
    reconcile `/health` counts both; the kill switch flattens the account and `/health` says so at once:
    kill switch on, trading REDUCING, no open position; resume brings ACTIVE back."""
    rig, sim = rig_for(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            assert rig.clock is not None
            hand = Hand(sim, rig.clock)
            await trio.sleep(SETTLE_S)
            status, body = await get(system, "/health")
            assert (status, body["open_positions"], body["kill_switch"]) == (200, 0, False)
            await hand.market("BTCUSDT", "BUY", "0.010")
            await hand.market("ETHUSDT", "SELL", "0.100")
            await hand.stop("ETHUSDT", "BUY", "0.100", "3100.00")
            await trio.sleep(RECONCILE_S + SETTLE_S)
            status, body = await get(system, "/health")
            assert (status, body["open_positions"], body["unprotected_positions"]) == (200, 2, 0), body
            _, text = await get(system, "/metrics")
            assert sample(text, "futures_actor_open_positions") == 2
            assert sample(text, "futures_actor_kill_switch") == 0
            assert "open positions 2" in system._telegram_handlers().status()  # Telegram's /status agrees

            await system.engage_kill("TEST")
            await rig.wait_until(
                lambda: (
                    all(sim.position_amount(s) == 0 for s in PRICES) and not system.execution.open_trades()
                ),
                timeout=WAIT_S,
            )
            status, body = await get(system, "/health")
            assert status == 503
            assert (body["kill_switch"], body["trading_state"], body["open_positions"]) == (
                True,
                "REDUCING",
                0,
            )
            _, text = await get(system, "/metrics")
            assert (
                sample(text, "futures_actor_kill_switch"),
                sample(text, "futures_actor_open_positions"),
            ) == (1, 0)
            # Stays true for a while (no stale writer puts the count back).
            await trio.sleep(RECONCILE_S + SETTLE_S)
            status, body = await get(system, "/health")
            assert (body["open_positions"], body["trading_state"]) == (0, "REDUCING")
            status_text = system._telegram_handlers().status()
            assert "trading REDUCING" in status_text, status_text
            assert "open positions 0" in status_text, status_text
            beat = json.loads((rig.state_dir / rig.cfg.health.heartbeat_file).read_text())
            assert (beat["kill_switch"], beat["trading_state"], beat["open_positions"]) == (
                True,
                "REDUCING",
                0,
            )

            await system.resume("TEST")
            await trio.sleep(SETTLE_S)
            status, body = await get(system, "/health")
            assert (status, body["kill_switch"], body["trading_state"]) == (200, False, "ACTIVE")
            _, text = await get(system, "/metrics")
            assert sample(text, "futures_actor_kill_switch") == 0
            nursery.cancel_scope.cancel()
    finally:
        rig.close()


async def test_a_system_with_no_symbol_to_monitor_says_so(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A universe that selected nothing: `/health` says DEGRADED with a warning (not a plain HEALTHY), the
    gauge says 0, and the log carries a warning."""
    base = default_config()
    sim = make_sim_exchange(base, list(PRICES), start_ms=START_MS)
    rig = ScriptedRig(root=tmp_path, cfg=base, symbols=[], prices={}, epoch_ms=START_MS, sim=sim)
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            await trio.sleep(SETTLE_S)
            status, body = await get(system, "/health")
            _, text = await get(system, "/metrics")
            nursery.cancel_scope.cancel()
        assert status == 200  # a restart would not fix it: the container stays up, the operator is told
        assert body["state"] == "DEGRADED"
        assert body["symbols_monitored"] == 0
        assert any("no symbols monitored" in w for w in body["warnings"]), body
        assert sample(text, "futures_actor_symbols_monitored") == 0
        assert rig.events("no_symbols_monitored")
    finally:
        rig.close()

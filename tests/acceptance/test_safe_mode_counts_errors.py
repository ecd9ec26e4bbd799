"""Issue 9 #9: safe mode counts exchange errors, not failed operations (BOT_SPEC §12 [resolved]).

End to end in LIVE against the fake exchange: a burst of error responses while the bot runs — 8 × -1021,
8 × 429 or 15 × 5xx in a row — reaches safe mode (thresholds 3 / 3 / 5), although the REST client's
retries let most operations succeed in the end (each error response counts, retried or not).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from futures_actor.core.config import default_config

from .harness import ScriptedRig, make_sim_exchange

START_MS = 1_735_725_600_000  # 2025-01-01 10:00 UTC
PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000")}
SETTLE_S = 5.0
# The only REST traffic here is Execution's reconcile; every RECONCILE_S the burst is consumed by a few
# reconciles well inside the fault window (each one retried `exchange.max_retry_attempts` times).
RECONCILE_S = 20.0
WAIT_S = 600.0

BURSTS: dict[str, tuple[Callable[[Any], None], int]] = {
    "TIMESTAMP": (lambda sim: sim.faults.timestamp_errors(8), 8),
    "RATE_LIMIT": (lambda sim: sim.faults.rate_limit_next(retry_after_s=1, times=8), 8),
    "SERVER_ERROR": (lambda sim: sim.faults.fail_next(status=503, times=15), 15),
}


@pytest.mark.parametrize("kind", sorted(BURSTS))
async def test_a_burst_of_error_responses_reaches_safe_mode(
    kind: str, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    base = default_config()
    cfg = msgspec.structs.replace(
        base, execution=msgspec.structs.replace(base.execution, reconcile_interval_seconds=RECONCILE_S)
    )
    sim = make_sim_exchange(cfg, list(PRICES), start_ms=START_MS)
    rig = ScriptedRig(
        root=tmp_path, cfg=cfg, symbols=list(PRICES), prices=dict(PRICES), epoch_ms=START_MS, sim=sim
    )
    arm, count = BURSTS[kind]
    try:
        async with trio.open_nursery() as nursery:
            system = await rig.start(nursery)
            await trio.sleep(SETTLE_S)
            assert not system.risk.snapshot().safe_mode
            before = len(sim.requests)
            arm(sim)
            await rig.wait_until(lambda: system.risk.snapshot().safe_mode, timeout=WAIT_S, poll=1.0)
            failed = [r for r in sim.requests[before:] if r.status >= 400]
            system.stop_requested.set()
            await system.stopped.wait()
            nursery.cancel_scope.cancel()
        assert len(failed) <= count
        faults = [e for e in rig.events("fault_reported") if e["kind"] == kind]
        threshold = {
            "TIMESTAMP": cfg.health.timestamp_error_threshold,
            "RATE_LIMIT": cfg.health.rate_limit_error_threshold,
            "SERVER_ERROR": cfg.health.server_error_threshold,
        }[kind]
        assert len(faults) >= threshold
        (entered,) = rig.events("safe_mode_entered")
        assert kind in entered["reasons"]
    finally:
        rig.close()

"""BOT_SPEC §2: the universe is re-selected daily at 00:00 UTC; symbols that leave it without a position
are retired, new ones get a symbol actor, and a symbol that left but still holds a position stays managed
with no new entries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio
import trio.testing

from futures_actor.core.types import SymbolRules
from futures_actor.startup import derive_rules

from .harness import Harness, copy_real_klines

PRICES = {"BTCUSDT": 90_000.0, "ETHUSDT": 3_300.0, "SOLUSDT": 190.0}


async def test_daily_refresh_adds_and_retires_symbol_actors(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[tuple[str, ...]] = []

    async def refresh(managed: Sequence[str]) -> tuple[list[str], dict[str, SymbolRules]]:
        calls.append(tuple(managed))
        selected = ["BTCUSDT", "SOLUSDT"]
        return selected, {s: derive_rules(s, PRICES[s]) for s in selected}

    h = Harness.create(tmp_path, symbols=["BTCUSDT", "ETHUSDT"], prices=PRICES)
    h.refresh_universe = refresh
    for s in h.symbols:
        copy_real_klines(h.klines_dir, s, days=2)
    async with trio.open_nursery() as nursery:
        system = await h.start(nursery)
        assert system.supervisor.children() == ("BTCUSDT", "ETHUSDT")
        assert h.feed is not None
        # The feed starts at 2024-12-31 00:00 UTC: the scheduler's first refresh is 2025-01-01 00:00.
        await h.wait_until(lambda: bool(calls), timeout=2 * 86_400)
        await trio.testing.wait_all_tasks_blocked()
        managed = {lc.symbol for lc in system.execution.open_trades()}
        expected = {"BTCUSDT", "SOLUSDT"} | managed
        eth_held = "ETHUSDT" in managed
        assert set(system.supervisor.children()) == expected
        assert set(system.router.symbols) == expected
        assert system.risk.snapshot() is not None
        assert system.active_symbols == expected
        # The paper exchange knows the new symbol's rules: it can take orders for it.
        assert h.paper is not None
        assert h.paper.mid_price("SOLUSDT") is None  # no market data for it in this run
        assert "SOLUSDT" in h.paper.rules
        await h.feed.done.wait()
        code = await h.stop()
    h.close()
    assert code == 0
    refreshed = h.events("universe_refreshed")
    assert refreshed
    assert refreshed[0]["tradable"] == ["BTCUSDT", "SOLUSDT"]
    assert "SOLUSDT" in refreshed[0]["added"]
    # ETH left the universe: retired unless it still held a position (then managed, no new entries).
    assert ("ETHUSDT" in refreshed[0]["retired"]) is not eth_held
    assert ("ETHUSDT" in refreshed[0]["managed_only"]) is eth_held
    assert refreshed[0]["timestamp"].startswith("2025-01-01T00:00")
    assert not [e for e in h.events() if e["level"] in ("error", "critical")]

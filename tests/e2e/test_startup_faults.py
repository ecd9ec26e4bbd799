"""Issue 9 #4 and #10: the LIVE bot, a real process, starts through transient exchange errors and
handles SIGTERM/SIGINT from the moment it starts (bounded real-clock tests on loopback)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from futures_actor.binance.sim import SimExchange

from .botproc import BotProcess, live_config
from .conftest import SYMBOLS
from .simhost import SimHost

pytestmark = pytest.mark.realclock
UP_S = 90.0
EXIT_S = 20.0


def _bot(tmp_path: Path, sim: SimHost, **sections: dict[str, Any]) -> BotProcess:
    return BotProcess(tmp_path, live_config(sim, list(SYMBOLS), **sections))


def _stop(bot: BotProcess) -> int:
    bot.signal(signal.SIGTERM)
    try:
        return bot.wait(EXIT_S)
    finally:
        bot.kill()


class TestTransientErrorsAtStartup:
    """One transient error at start-up is waited out and retried; the bot comes up (it used to exit 1)."""

    @pytest.mark.parametrize(
        "arm",
        [
            pytest.param(lambda ex: ex.faults.fail_next("/fapi/v1/time", status=503), id="503-on-time"),
            pytest.param(
                lambda ex: ex.faults.rate_limit_next("/fapi/v1/exchangeInfo", retry_after_s=2), id="429"
            ),
            pytest.param(lambda ex: ex.faults.timestamp_errors(8), id="1021-burst"),
        ],
    )
    def test_comes_up(self, tmp_path: Path, sim: SimHost, arm: Any) -> None:
        sim.call(arm, sim.ex)
        bot = _bot(tmp_path, sim)
        bot.start()
        try:
            bot.wait_event("system_started", timeout=UP_S)
        finally:
            code = _stop(bot)
        assert code == 0, bot.output()[-2000:]
        assert bot.events("startup_retry") or bot.events("binance_rate_limited"), "the error was not seen"
        assert not bot.events("exchange_error_at_startup")

    def test_a_ban_is_waited_out_without_a_request_also_across_a_restart(
        self, tmp_path: Path, sim: SimHost
    ) -> None:
        ban_ms = 30_000  # long enough that a restart under load still lands inside it

        def ban(ex: SimExchange) -> None:
            ex.faults.ban_until(ex.now_ms + ban_ms)

        sim.call(ban, sim.ex)
        bot = _bot(tmp_path, sim)
        bot.start()
        try:
            bot.wait_event("startup_waiting_for_ban", timeout=UP_S)
        finally:
            bot.kill()  # SIGKILL during the ban wait: the restart must not ask again before its end
        bot.start()
        try:
            waiting = bot.wait_event("startup_waiting_for_ban", timeout=UP_S, count=2)
            assert waiting["source"] == "exchange_ban.json"
            bot.wait_event("system_started", timeout=UP_S)
        finally:
            code = _stop(bot)
        assert code == 0, bot.output()[-2000:]
        banned = sim.call(lambda: [r for r in sim.ex.requests if r.status == 418])
        assert len(banned) == 1, f"{len(banned)} requests during the ban"


class TestSignalsFromProcessStart:
    """SIGTERM/SIGINT during start-up: an orderly exit 0 with a log line; a second signal exits at once."""

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_during_the_spread_sampling(self, tmp_path: Path, sim: SimHost, signum: signal.Signals) -> None:
        bot = _bot(tmp_path, sim, universe={"spread_sample_seconds": 60.0})
        bot.start()
        try:
            bot.wait_event("universe_spread_sampling", timeout=UP_S)
            t0 = time.monotonic()
            bot.signal(signum)
            code = bot.wait(EXIT_S)
            elapsed = time.monotonic() - t0
        finally:
            bot.kill()
        assert code == 0, bot.output()[-2000:]
        assert elapsed < EXIT_S
        (received,) = bot.events("signal_received")
        assert (received["signal"], received["phase"]) == (signum.name, "start-up")
        assert bot.events("startup_aborted")
        assert not bot.events("system_started")

    def test_during_a_ban_wait_and_a_second_signal(self, tmp_path: Path, sim: SimHost) -> None:
        sim.call(lambda: sim.ex.faults.ban_until(sim.ex.now_ms + 600_000))
        bot = _bot(tmp_path, sim)
        bot.start()
        try:
            bot.wait_event("startup_waiting_for_ban", timeout=UP_S)
            bot.signal(signal.SIGTERM)
            assert bot.wait(EXIT_S) == 0
        finally:
            bot.kill()
        assert bot.events("startup_aborted")

        # Running: the first signal starts the orderly stop, a second one cuts it short (exit 1).
        def lift_ban(ex: SimExchange) -> None:
            ex.faults.ban_until_ms = None
            ex.limits.banned_until_ms = 0

        sim.call(lift_ban, sim.ex)
        (tmp_path / "state" / "exchange_ban.json").unlink()
        bot.start()
        try:
            bot.wait_event("system_started", timeout=UP_S)
            bot.signal(signal.SIGTERM)
            bot.signal(signal.SIGTERM)
            code = bot.wait(EXIT_S)
        finally:
            bot.kill()
        received = [e["action"] for e in bot.events("signal_received")]
        # Both signals reached the bot: the orderly stop was cut short (exit 1), logged as such. (If
        # the orderly stop finished before the second signal was read, it exited 0 after it.)
        if code == 1:
            assert received[-2:] == ["orderly stop", "immediate stop"]
            assert bot.events("stopped_immediately")
        else:
            assert code == 0
            assert bot.events("shutdown_done")


class TestProtectionFirst:
    """A position that needs protection is protected before the universe selection and the backfill."""

    def test_a_naked_position_gets_its_stop_before_the_spread_sampling(
        self, tmp_path: Path, sim: SimHost
    ) -> None:
        from decimal import Decimal

        from .simhost import Account

        account = Account(sim.rest_url)
        try:
            account.market("BTCUSDT", "BUY", Decimal("0.002"), cid="manual-naked-1")
            bot = _bot(tmp_path, sim, universe={"spread_sample_seconds": 60.0})
            bot.start()
            try:
                bot.wait_event("universe_spread_sampling", timeout=UP_S)
                stops = [
                    a
                    for a in account.open_algo_orders()
                    if a["symbol"] == "BTCUSDT" and a["orderType"] == "STOP_MARKET" and a["side"] == "SELL"
                ]
                assert not bot.events("system_started")
            finally:
                code = _stop(bot)
        finally:
            account.close()
        assert code == 0, bot.output()[-2000:]
        assert [Decimal(a["quantity"]) for a in stops] == [Decimal("0.002")]
        assert bot.events("startup_protection_done")


class TestStateLossLive:
    """LIVE: a deleted state directory while the exchange holds our orders is refused (issue 9 #6)."""

    def test_deleted_state_dir_is_refused_then_accepted_with_fresh_state(
        self, tmp_path: Path, sim: SimHost
    ) -> None:
        import shutil
        from decimal import Decimal

        from .simhost import Account

        account = Account(sim.rest_url)
        try:
            account.market("BTCUSDT", "BUY", Decimal("0.002"), cid="manual-adopt-1")
            bot = _bot(tmp_path, sim)
            bot.start()
            try:
                bot.wait_event("system_started", timeout=UP_S)
            finally:
                assert _stop(bot) == 0
            ours = [a["clientAlgoId"] for a in account.open_algo_orders()]
            assert ours, "the adopted position has our stop"
            shutil.rmtree(tmp_path / "state")
            shutil.rmtree(tmp_path / "logs")  # the journal is gone too: only the exchange knows
            bot.start()
            code = bot.wait(UP_S)
            output = bot.output()
            assert code == 2, output[-2000:]
            assert "state.sqlite is missing or empty" in output
            assert "open order(s) with our client-id prefix" in output
            assert "--fresh-state" in output
            assert not (tmp_path / "state" / "state.sqlite").exists()
            assert [a["clientAlgoId"] for a in account.open_algo_orders()] == ours  # nothing sent
            bot.start("--fresh-state")
            try:
                bot.wait_event("system_started", timeout=UP_S)
            finally:
                assert _stop(bot) == 0
            assert bot.events("state_started_afresh")
        finally:
            account.close()

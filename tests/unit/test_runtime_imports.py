"""Run-time imports: the bot does not pull in test tooling (importing `trio.testing` imports pytest,
~120 ms and a test framework in a trading process)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "futures_actor.app",
    "futures_actor.replay_run",
    "futures_actor.live_run",
    "futures_actor.cli",
    "futures_actor.binance.ws_conn",
    "futures_actor.binance.sim.server",
    "futures_actor.binance.paper",
]


def test_importing_the_bot_does_not_import_pytest_or_trio_testing() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "bad = sorted(m for m in ('pytest', '_pytest', 'trio.testing') if m in sys.modules)\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == ""


def test_the_replay_clock_is_trios_mock_clock() -> None:
    """The clock the replay runs under is trio's own MockClock (imported without `trio.testing`)."""
    import trio.testing

    from futures_actor.cli import replay_clock

    clock = replay_clock()
    assert isinstance(clock, trio.testing.MockClock)
    assert clock.autojump_threshold == 0


def test_app_does_not_import_the_command_line() -> None:
    """No app <-> cli import circle: exit codes and the kill-file path live in `control`."""
    code = "import sys\nimport futures_actor.app\nprint('futures_actor.cli' in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"
